#!/usr/bin/env python3
"""The softpick transformer (SPEC.md section 2) in float32 with numpy and, when installed, PyTorch,
timed in-process beside `softpick bench model` in the same run, so the gap is visible.

    /usr/bin/python3 bench/reference.py [path/to/softpick] [--repeats N] [--train]

With --train: PyTorch's float32 CPU training step instead (SPEC.md section 6: the same model with a
4-class head, batch 32, cross-entropy, AdamW, dropout 0.1), beside `softpick bench train`.
Needs Debian's python3-numpy (and python3-torch for the PyTorch column and --train). Debian's torch
calls the generic libblas.so.3: install libopenblas0-pthread too, or it runs on the reference BLAS
(about 17x slower here).
"""
import subprocess
import sys
import time

import numpy as np
from math import sqrt

EMBED, HIDDEN, HEADS, LAYERS, SEQ = 256, 256, 4, 6, 60


def weights(rng):
    def glorot(i, o):
        limit = np.sqrt(6.0 / (i + o))
        return rng.uniform(-limit, limit, (i, o)).astype(np.float32)
    h = HIDDEN
    layers = []
    for _ in range(LAYERS):
        layers.append(dict(q=glorot(h, h), k=glorot(h, h), v=glorot(h, h), o=glorot(h, h),
                           up=glorot(h, 4 * h), down=glorot(4 * h, h),
                           bq=np.zeros(h, np.float32), bk=np.zeros(h, np.float32), bv=np.zeros(h, np.float32),
                           bo=np.zeros(h, np.float32), bup=np.zeros(4 * h, np.float32), bdown=np.zeros(h, np.float32),
                           g1=np.ones(h, np.float32), b1=np.zeros(h, np.float32),
                           g2=np.ones(h, np.float32), b2=np.zeros(h, np.float32)))
    return layers


def layer_norm(x, g, b):
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + 1e-5) * g + b


def _erf(x):
    """erf, vectorized (Abramowitz and Stegun 7.1.26, |error| < 1.5e-7: enough for timing)."""
    t = 1.0 / (1.0 + 0.3275911 * np.abs(x))
    y = 1.0 - (((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t * np.exp(-x * x)
    return np.sign(x) * y


def gelu(x):
    return 0.5 * x * (1.0 + _erf(x / np.float32(sqrt(2.0))))


def forward_numpy(x, layers):
    bsz, seq, h = x.shape
    d = h // HEADS
    mask = np.tril(np.ones((seq, seq), np.float32))
    for p in layers:
        a = layer_norm(x, p["g1"], p["b1"])
        q = (a @ p["q"] + p["bq"]).reshape(bsz, seq, HEADS, d).transpose(0, 2, 1, 3)
        k = (a @ p["k"] + p["bk"]).reshape(bsz, seq, HEADS, d).transpose(0, 2, 1, 3)
        v = (a @ p["v"] + p["bv"]).reshape(bsz, seq, HEADS, d).transpose(0, 2, 1, 3)
        s = (q @ k.transpose(0, 1, 3, 2)) / np.float32(np.sqrt(d)) * mask
        w = s / (1.0 + np.abs(s).sum(-1, keepdims=True))
        o = (w @ v).transpose(0, 2, 1, 3).reshape(bsz, seq, h)
        x = x + o @ p["o"] + p["bo"]
        f = layer_norm(x, p["g2"], p["b2"])
        x = x + gelu(f @ p["up"] + p["bup"]) @ p["down"] + p["bdown"]
    return layer_norm(x, np.ones(h, np.float32), np.zeros(h, np.float32))[:, -1, :]


def forward_torch(torch, x, layers):
    bsz, seq, h = x.shape
    d = h // HEADS
    mask = torch.tril(torch.ones(seq, seq))
    ln = torch.nn.functional.layer_norm
    for p in layers:
        a = ln(x, (h,), p["g1"], p["b1"], 1e-5)
        q = (a @ p["q"] + p["bq"]).view(bsz, seq, HEADS, d).transpose(1, 2)
        k = (a @ p["k"] + p["bk"]).view(bsz, seq, HEADS, d).transpose(1, 2)
        v = (a @ p["v"] + p["bv"]).view(bsz, seq, HEADS, d).transpose(1, 2)
        s = (q @ k.transpose(-1, -2)) / d ** 0.5 * mask
        w = s / (1.0 + s.abs().sum(-1, keepdim=True))
        o = (w @ v).transpose(1, 2).reshape(bsz, seq, h)
        x = x + o @ p["o"] + p["bo"]
        f = ln(x, (h,), p["g2"], p["b2"], 1e-5)
        x = x + torch.nn.functional.gelu(f @ p["up"] + p["bup"]) @ p["down"] + p["bdown"]
    return ln(x, (h,), None, None, 1e-5)[:, -1, :]


def train_step_torch(torch, batch, repeats):
    """Median ms of one training step (zero_grad, forward, loss, backward, AdamW) in float32."""
    h, d, classes = HIDDEN, HIDDEN // HEADS, 4
    nn, F = torch.nn, torch.nn.functional

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.n1, self.n2 = nn.LayerNorm(h), nn.LayerNorm(h)
            self.qkv, self.out = nn.Linear(h, 3 * h), nn.Linear(h, h)
            self.up, self.down = nn.Linear(h, 4 * h), nn.Linear(4 * h, h)
            self.drop = nn.Dropout(0.1)

        def forward(self, x):
            bsz, seq, _ = x.shape
            q, k, v = self.qkv(self.n1(x)).view(bsz, seq, 3, HEADS, d).permute(2, 0, 3, 1, 4)
            s = (q @ k.transpose(-1, -2)) / d ** 0.5 * torch.tril(torch.ones(seq, seq))
            w = s / (1.0 + s.abs().sum(-1, keepdim=True))
            x = x + self.drop(self.out((w @ v).transpose(1, 2).reshape(bsz, seq, h)))
            return x + self.drop(self.down(F.gelu(self.up(self.n2(x)))))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
            self.norm, self.head = nn.LayerNorm(h), nn.Linear(h, classes)

        def forward(self, x):
            for b in self.blocks:
                x = b(x)
            return self.head(self.norm(x)[:, -1, :])

    torch.manual_seed(1)
    model = Model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.rand(batch, SEQ, EMBED) * 2 - 1
    t = torch.arange(batch) % classes

    def step():
        opt.zero_grad()
        F.cross_entropy(model(x), t).backward()
        opt.step()
    return median_ms(step, repeats)


def main_train(binary, repeats):
    import torch
    print(f"reference: PyTorch {torch.__version__} float32 CPU training step ({torch.get_num_threads()} threads): embed "
          f"{EMBED}, hidden {HIDDEN}, {HEADS} heads, {LAYERS} layers, seq {SEQ}, a 4-class head, batch 32, "
          f"cross-entropy, AdamW, dropout 0.1; median of {repeats}")
    ms = train_step_torch(torch, 32, repeats)
    print(f"torch step {ms:.1f} ms, {32e3 / ms:.1f} sequences/s")
    sys.stdout.flush()
    print()
    subprocess.run([binary, "bench", "train", "--repeats", str(repeats)], check=True)


def median_ms(fn, repeats):
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[len(times) // 2]


def main():
    args = sys.argv[1:]
    repeats = 7
    if "--repeats" in args:
        i = args.index("--repeats")
        repeats = int(args[i + 1])
        del args[i:i + 2]
    train = "--train" in args
    args = [a for a in args if a != "--train"]
    binary = args[0] if args else "build/release/tools/softpick"
    if train:
        return main_train(binary, repeats)
    rng = np.random.default_rng(1)
    layers = weights(rng)
    print(f"reference: embed {EMBED}, hidden {HIDDEN}, {HEADS} heads, {LAYERS} layers, seq {SEQ}, float32, "
          f"median of {repeats} in-process forwards")
    print(f"{'batch':<6} {'numpy ms':>10} {'torch ms':>10}")
    try:
        import torch
        torch.set_grad_enabled(False)
        tlayers = [{k: torch.from_numpy(v) for k, v in p.items()} for p in layers]
    except ImportError:
        torch = None
    for batch in (1, 32):
        x = rng.uniform(-1, 1, (batch, SEQ, EMBED)).astype(np.float32)
        np_ms = median_ms(lambda: forward_numpy(x, layers), repeats)
        t_ms = float("nan")
        if torch is not None:
            tx = torch.from_numpy(x)
            t_ms = median_ms(lambda: forward_torch(torch, tx, tlayers), repeats)
        print(f"{batch:<6} {np_ms:>10.2f} {t_ms:>10.2f}" + ("" if torch else "   (python3-torch not installed)"))
    sys.stdout.flush()
    print()
    subprocess.run([binary, "bench", "model", "--repeats", str(repeats)], check=True)


if __name__ == "__main__":
    main()
