"""A short training run on the device: a small model learns which sign the last position's first
feature has (two classes), with AdamW, from the per-step losses fit() returns."""
import numpy as np

import softpick

rng = np.random.default_rng(0)
x = rng.standard_normal((256, 8, 16))
labels = (x[:, -1, 0] > 0).astype(np.float32)
with softpick.Context() as ctx:
    model = softpick.Model(ctx, 16, hidden_size=32, num_heads=2, num_layers=2, window_size=8, num_outputs=2, seed=1)
    losses = model.fit(x, labels, steps=150, batch_size=32, lr=3e-3, loss="cross-entropy", dropout=0.0, shuffle=True)
    accuracy = np.mean(model(x).argmax(-1) == labels)
    print("loss %.3f -> %.3f over %d steps; accuracy %.0f%% on the training data"
          % (np.mean(losses[:10]), np.mean(losses[-10:]), len(losses), 100 * accuracy))
