"""The seed's comparison of softpick with softmax, measured: the same small transformer trained with
each attention normalizer (softpick, rectified-softpick, softmax) on Fashion-MNIST (Debian's
dataset-fashion-mnist: each 28x28 image a sequence of 28 rows of 28 pixels, 10 classes), with the
same seeds, data order and steps, on whatever device the context picks (lavapipe will do: a few
minutes). Prints, per normalizer, the held-out accuracy, the loss curve's ends, the softpick paper's
measurements of the trained model on held-out images (Model.analyze: attention sink rate, sparsity,
row sums of |weights|, hidden states' kurtosis and largest |activation|), the attention weights'
range and signs, and the gradient's norm through the normalizer as its scores grow (scores z scaled
by 1, 10, 100, 1000 against a fixed upstream gradient: the seed's "non-saturating" claim); plots
the loss curves, the measurements and the gradient norms to a PNG (python3-matplotlib).

    python3 examples/python/compare_normalizers.py [--steps 1200] [--plot compare_normalizers.png]
"""
import argparse
import gzip
import os
import time

import numpy as np

import softpick

DATA = "/usr/share/datasets/fashion-mnist"
NORMALIZERS = ("softpick", "rectified-softpick", "softmax")
SCALES = (1, 10, 100, 1000)


def load(split):
    """Images [n, 28, 28] (pixels scaled to mean 0, std 1 over the training set's) and labels."""
    with gzip.open(os.path.join(DATA, "%s-images-idx3-ubyte.gz" % split)) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28).astype(np.float32) / 255.0
    with gzip.open(os.path.join(DATA, "%s-labels-idx1-ubyte.gz" % split)) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.float32)
    return (images - 0.2860) / 0.3530, labels


def attention_weights(ctx, model, x, kind):
    """The first layer's causal attention weights on x, recomputed on the device from q and k (the
    layer's input norm and q/k projections applied here, the normalizer by the library's op)."""
    p = {n: model.parameter(n) for n in model.parameter_names}
    h = p["softpick_block_1_attn_norm.gamma"].size
    heads = model.config["num_heads"]
    a = x.astype(np.float64) @ p["input_projection.kernel"] + p["input_projection.bias"]
    a = (a - a.mean(-1, keepdims=True)) / np.sqrt(a.var(-1, keepdims=True) + 1e-5)
    a = a * p["softpick_block_1_attn_norm.gamma"] + p["softpick_block_1_attn_norm.beta"]
    q, k = (a @ p["softpick_block_1_attn_%s_proj.kernel" % n] + p["softpick_block_1_attn_%s_proj.bias" % n]
            for n in "qk")
    split = lambda t: t.reshape(t.shape[0], t.shape[1], heads, h // heads).transpose(0, 2, 1, 3)
    s = split(q) @ split(k).transpose(0, 1, 3, 2) / np.sqrt(h // heads)
    future = np.triu(np.ones(s.shape[-2:], bool), 1)
    s[..., future] = 0.0 if kind == "softpick" else -np.inf  # the model's masks (SPEC.md section 2)
    w = ctx.softpick(s.astype(np.float32), axis=-1, kind=kind)
    return w[..., ~future]


def gradient_norms(ctx, kind):
    """Per score scale: the median over rows of |dL/ds| at scores s = scale * z for a fixed upstream
    gradient dL/dy, and the share of rows whose |dL/ds| is below 1e-6 (saturated: no signal)."""
    rng = np.random.default_rng(3)
    z = rng.standard_normal((256, 32)).astype(np.float32)
    dy = rng.standard_normal((256, 32)).astype(np.float32)
    out = []
    for scale in SCALES:
        rows = np.linalg.norm(ctx.softpick_backward(z * scale, dy, axis=-1, kind=kind).astype(np.float64), axis=-1)
        out.append((float(np.median(rows)), float(np.mean(rows < 1e-6))))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--plot", default="compare_normalizers.png")
    args = ap.parse_args()
    if not os.path.isdir(DATA):
        raise SystemExit("Fashion-MNIST not found in %s: apt-get install dataset-fashion-mnist" % DATA)
    x_train, y_train = load("train")
    x_test, y_test = load("t10k")
    results = {}
    with softpick.Context() as ctx:
        print("device: %s (%s); Fashion-MNIST: %d training and %d held-out images as 28 steps of 28 pixels"
              % (ctx.device["name"], ctx.device["type"], len(x_train), len(x_test)))
        print("model: hidden 64, 4 heads, 2 layers, mean-pooled, 10 classes; AdamW lr %g, batch %d, %d steps, "
              "shuffled, seed %d, no dropout" % (args.lr, args.batch_size, args.steps, args.seed))
        for kind in NORMALIZERS:
            model = softpick.Model(ctx, 28, hidden_size=64, num_heads=4, num_layers=2, window_size=28,
                                   output_mode="mean", num_outputs=10, dropout=0.0, seed=args.seed, attention=kind)
            start = time.time()
            losses = model.fit(x_train, y_train, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                               loss="cross-entropy", shuffle=True, seed=args.seed, progress=False)
            seconds = time.time() - start
            logits = np.concatenate([model(x_test[i:i + 1000]) for i in range(0, len(x_test), 1000)])
            w = attention_weights(ctx, model, x_test[:256], kind)
            results[kind] = dict(losses=np.array(losses), seconds=seconds,
                                 accuracy=float(np.mean(logits.argmax(-1) == y_test)),
                                 analysis=model.analyze(x_test[:512]), grads=gradient_norms(ctx, kind),
                                 w_min=float(w.min()), w_max=float(w.max()), w_negative=float(np.mean(w < 0)))
            r = results[kind]
            print("%-18s trained in %5.1f s: loss %.3f -> %.3f, held-out accuracy %.2f%%"
                  % (kind, seconds, np.mean(losses[:20]), np.mean(losses[-100:]), 100 * r["accuracy"]))
            model.close()
        report(results)
        plot(results, args.plot)


def report(results):
    print("\nheld-out measurements (512 test images; per-head figures averaged over layers and heads):")
    print("%-18s %8s %9s %9s %10s %11s %10s %13s %s" % ("normalizer", "accuracy", "sink rate", "sparsity",
                                                         "row sum|w|", "weights in", "negative", "kurtosis (max)",
                                                         "max |hidden|"))
    for kind, r in results.items():
        a = r["analysis"]
        print("%-18s %7.2f%% %9.3f %9.3f %10.3f [%+.2f,%.2f] %9.1f%% %13.2f %12.2f"
              % (kind, 100 * r["accuracy"], a["sink_rate"].mean(), a["sparsity"].mean(), a["row_abs_sum"].mean(),
                 r["w_min"], r["w_max"], 100 * r["w_negative"], a["kurtosis"].max(), a["max_abs"].max()))
    print("\nthe gradient through the normalizer at scores s = scale * z (256 rows of 32, a fixed upstream "
          "gradient):\nmedian |dL/ds| over rows (share of rows with |dL/ds| < 1e-6)")
    print("%-18s" % "normalizer" + "".join("%20s" % ("scale %d" % s) for s in SCALES))
    for kind, r in results.items():
        print("%-18s" % kind + "".join("%20s" % ("%.3g (%.0f%%)" % (g, 100 * dead)) for g, dead in r["grads"]))


def plot(results, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for kind, r in results.items():
        smooth = np.convolve(r["losses"], np.ones(50) / 50, mode="valid")
        axes[0].plot(smooth, label="%s (%.1f%%)" % (kind, 100 * r["accuracy"]))
        axes[2].loglog(SCALES, [max(g, 1e-30) for g, _ in r["grads"]], marker="o", label=kind)
    axes[0].set(title="training loss (mean of 50 steps)", xlabel="step", ylabel="cross-entropy")
    axes[0].legend()
    names = ("sink_rate", "sparsity", "row_abs_sum")
    width = 0.25
    for i, (kind, r) in enumerate(results.items()):
        axes[1].bar(np.arange(len(names)) + (i - 1) * width, [r["analysis"][n].mean() for n in names], width,
                    label=kind)
    axes[1].set_xticks(np.arange(len(names)), ["sink rate", "sparsity", "row sum |w|"])
    axes[1].set(title="attention on held-out images (mean over heads)")
    axes[1].legend()
    axes[2].set(title="gradient through the normalizer", xlabel="score scale", ylabel="median |dL/ds| over rows")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    print("\nplot: %s" % path)


if __name__ == "__main__":
    main()
