"""A model loaded from safetensors: one of the project's golden cases (weights made by an independent
float64 implementation), run and compared with its expected output; then again with 16-bit weights."""
import os
import sys

import numpy as np

import softpick

case = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "golden", "model-e20-h32-n4-l2")
weights = sys.argv[1] if len(sys.argv) > 1 else os.path.join(case, "weights.safetensors")
with softpick.Context() as ctx:
    model = softpick.Model.from_safetensors(ctx, weights)
    print("model:", model.config)
    x = np.load(os.path.join(case, "input.npy"))
    y = model(x)
    expected = np.load(os.path.join(case, "expected.npy"))
    print("output", y.shape, "max |error| vs the float64 reference: %.2e" % np.abs(y - expected).max())
    half = softpick.Model.from_safetensors(ctx, weights, weights_dtype="f16")
    print("f16 weights: %d bytes instead of %d, max |difference| %.2e"
          % (half.memory["weights"], model.memory["weights"], np.abs(half(x) - y).max()))
