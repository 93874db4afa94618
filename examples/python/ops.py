"""The ops from Python against numpy: softpick along an axis, a matmul with its fused epilogue,
layer norm and causal softpick attention, and a chain of ops on device-resident tensors."""
import numpy as np

import softpick

rng = np.random.default_rng(0)
with softpick.Context() as ctx:
    print("device:", ctx.device["name"])
    x = rng.standard_normal((4, 1000))
    y = ctx.softpick(x, axis=-1)
    print("softpick  max |error| vs numpy: %.2e" % np.abs(y - x / (1 + np.abs(x).sum(-1, keepdims=True))).max())

    a, b, bias = rng.standard_normal((60, 256)), rng.standard_normal((256, 64)), rng.standard_normal(64)
    c = ctx.matmul(a, b, bias=bias)
    print("matmul    max |error| vs numpy: %.2e" % np.abs(c - (a @ b + bias)).max())

    g, beta = np.ones(64), np.zeros(64)
    n = ctx.layer_norm(c, g, beta)
    print("layernorm max |error| vs numpy: %.2e" % np.abs(n - (c - c.mean(-1, keepdims=True)) / np.sqrt(c.var(-1, keepdims=True) + 1e-5)).max())

    q = k = v = rng.standard_normal((1, 8, 64))
    o = ctx.attention(q, k, v, num_heads=4, causal=True)
    print("attention output", o.shape)

    # Device-resident: upload once, chain, download once.
    t = ctx.softpick(ctx.matmul(ctx.tensor(a), ctx.tensor(b)))
    print("chained on the device:", t, "->", t.numpy().shape)
