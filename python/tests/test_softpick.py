"""The Python package against numpy float64 references, the golden model and training cases, every
error path, lifetimes, threads and a leak check. Needs a Vulkan device (lavapipe will do); under
CI a missing device fails the tests instead of skipping them."""
import gc
import json
import os
import struct
import threading

import numpy as np
import pytest

import softpick

GOLDEN = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "golden")


@pytest.fixture(scope="module")
def ctx():
    try:
        c = softpick.Context()
    except softpick.Error as e:
        if os.environ.get("CI"):
            raise
        pytest.skip("no Vulkan device: %s" % e)
    yield c
    c.close()


def rel_error(got, want):
    want = np.asarray(want, dtype=np.float64)
    return np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30)


def read_safetensors(path):
    """A minimal F32 safetensors reader for the golden files (the library's own is tested in C)."""
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    body = data[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        begin, end = t["data_offsets"]
        assert t["dtype"] == "F32"
        out[name] = np.frombuffer(body[begin:end], dtype="<f4").reshape(t["shape"])
    return out


# ---- the ops ---------------------------------------------------------------------------------

def ref_softpick(x, axis):
    x = np.asarray(x, dtype=np.float64)
    return x / (1 + np.abs(x).sum(axis=axis, keepdims=True))


def ref_gelu(x):
    from math import erf, sqrt
    return 0.5 * x * (1 + np.vectorize(erf)(x / sqrt(2)))


def test_devices_describe_the_context(ctx):
    listed = softpick.devices()
    assert listed, "the context's device is not listed"
    mine = ctx.device
    assert mine == listed[mine["index"]]  # the same description, from the context's own info
    assert mine["usable"] and mine["subgroup_size"] >= 1 and mine["type"] and mine["name"]


def test_softpick_every_axis(ctx):
    rng = np.random.default_rng(1)
    for shape in [(7,), (3, 33), (2, 5, 257), (4097, 2)]:
        x = rng.standard_normal(shape) * 3
        for axis in range(-len(shape), len(shape)):
            y = ctx.softpick(x, axis=axis)
            assert y.dtype == np.float32 and y.shape == x.shape
            assert rel_error(y, ref_softpick(x, axis)) <= 1e-5


def ref_normalize(x, axis, kind):
    """float64 rectified softpick or softmax along `axis` (-inf masked)."""
    x = np.moveaxis(np.asarray(x, np.float64), axis, -1)
    m = x.max(axis=-1, keepdims=True)
    if kind == "softmax":
        e = np.exp(x - m)
        y = e / e.sum(axis=-1, keepdims=True)
    else:
        u = np.where(np.isfinite(x), np.exp(-m) * np.expm1(x), 0.0)
        y = np.where(m > 0, np.maximum(u, 0) / (np.abs(u).sum(axis=-1, keepdims=True) + 1e-6), 0.0)
    return np.moveaxis(y, -1, axis)


def test_normalizers(ctx):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((3, 40, 7)) * 3).astype(np.float32)
    x[:, 5, :] = -np.inf
    for kind in ("rectified-softpick", "softmax"):
        for axis in (1, 2):
            y = ctx.softpick(x[:, :, :] if axis == 1 else x[:, :6, :].transpose(0, 2, 1).copy(), axis=axis, kind=kind)
            xa = x if axis == 1 else x[:, :6, :].transpose(0, 2, 1)
            assert rel_error(y, ref_normalize(xa, axis, kind)) <= 1e-5
    with pytest.raises(ValueError, match="kind"):
        ctx.softpick(x, kind="rectified")
    q, k, v = (rng.standard_normal((2, 9, 8)).astype(np.float32) for _ in range(3))
    for kind in ("rectified-softpick", "softmax"):
        want = np.zeros((2, 9, 8))
        for b in range(2):
            for h in range(2):
                sl = slice(4 * h, 4 * h + 4)
                s = q[b, :, sl].astype(np.float64) @ k[b, :, sl].T / 2.0
                s[np.triu_indices(9, 1)] = -np.inf
                want[b, :, sl] = ref_normalize(s, -1, kind) @ v[b, :, sl]
        assert rel_error(ctx.attention(q, k, v, 2, attention=kind), want) <= 1e-5


def test_normalizer_backward(ctx):
    """dL/dx against central differences of the float64 forward (L = sum dy * y)."""
    rng = np.random.default_rng(9)
    x = (rng.standard_normal((4, 9)) * 2).astype(np.float64)
    dy = rng.standard_normal((4, 9))
    forward = {"softpick": lambda a: ref_softpick(a, -1)}
    for kind in ("softpick", "rectified-softpick", "softmax"):
        f = forward.get(kind, lambda a, kind=kind: ref_normalize(a, -1, kind))
        got = ctx.softpick_backward(x.astype(np.float32), dy.astype(np.float32), axis=-1, kind=kind)
        want = np.zeros_like(x)
        for i in np.ndindex(x.shape):
            up, down = x.copy(), x.copy()
            up[i] += 1e-6
            down[i] -= 1e-6
            want[i] = ((f(up) - f(down)) * dy).sum() / 2e-6
        assert rel_error(got, want) <= 1e-4, kind
    with pytest.raises(ValueError, match="kind"):
        ctx.softpick_backward(x, dy, kind="relu")


def test_matmul_epilogues_and_batches(ctx):
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((2, 7, 33)), rng.standard_normal((33, 65))
    bias, res = rng.standard_normal(65), rng.standard_normal((2, 7, 65))
    a32, b32 = a.astype(np.float32).astype(np.float64), b.astype(np.float32).astype(np.float64)
    assert rel_error(ctx.matmul(a, b), a32 @ b32) <= 1e-5
    want = ref_gelu(a32 @ b32 + bias.astype(np.float32)) + res.astype(np.float32)
    assert rel_error(ctx.matmul(a, b, bias=bias, gelu=True, residual=res), want) <= 1e-5
    bb = rng.standard_normal((2, 33, 5))  # batched B
    assert rel_error(ctx.matmul(a, bb), a32 @ bb.astype(np.float32)) <= 1e-5


def test_layer_norm(ctx):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 257)) + 1e4
    g, b = 1 + 0.2 * rng.standard_normal(257), 0.1 * rng.standard_normal(257)
    xs = x.astype(np.float32).astype(np.float64)
    mean, var = xs.mean(-1, keepdims=True), xs.var(-1, keepdims=True)
    want = (xs - mean) / np.sqrt(var + 1e-3) * g.astype(np.float32) + b.astype(np.float32)
    assert rel_error(ctx.layer_norm(x, g, b, eps=1e-3), want) <= 1e-5


def test_attention(ctx):
    rng = np.random.default_rng(4)
    batch, seq, heads, d = 2, 17, 3, 8
    q, k, v = (rng.standard_normal((batch, seq, heads * d)).astype(np.float32) for _ in range(3))
    for causal in (True, False):
        want = np.zeros((batch, seq, heads * d))
        for bi in range(batch):
            for h in range(heads):
                sl = slice(h * d, (h + 1) * d)
                s = q[bi, :, sl].astype(np.float64) @ k[bi, :, sl].T / np.sqrt(d)
                if causal:
                    s = np.tril(s)
                want[bi, :, sl] = ref_softpick(s, -1) @ v[bi, :, sl]
        assert rel_error(ctx.attention(q, k, v, heads, causal=causal), want) <= 1e-5


def test_device_tensors_chain(ctx):
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((4, 16)), rng.standard_normal((16, 8))
    tx, tw = ctx.tensor(x), ctx.tensor(w)
    ty = ctx.matmul(tx, tw)  # stays on the device
    assert isinstance(ty, softpick.Tensor) and ty.shape == (4, 8)
    tz = ctx.softpick(ty)
    want = ref_softpick(x.astype(np.float32).astype(np.float64) @ w.astype(np.float32), -1)
    assert rel_error(tz.numpy(), want) <= 1e-5
    half = ctx.tensor(x, dtype="f16")
    assert half.dtype == "f16" and np.allclose(half.numpy(), x.astype(np.float16), rtol=0, atol=0)
    for t in (tx, tw, ty, tz, half):
        t.close()


def test_float64_and_strided_inputs(ctx):
    x = np.arange(60, dtype=np.float64).reshape(6, 10)[:, ::2] - 20  # non-contiguous float64
    assert rel_error(ctx.softpick(x), ref_softpick(x, -1)) <= 1e-5
    ints = np.arange(12).reshape(3, 4)
    assert rel_error(ctx.softpick(ints), ref_softpick(ints, -1)) <= 1e-5


# ---- the model -------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["model-e20-h32-n4-l2", "model-e48-h48-n3-l3"])
def test_golden_model(ctx, case):
    d = os.path.join(GOLDEN, case)
    model = softpick.Model.from_safetensors(ctx, os.path.join(d, "weights.safetensors"))
    x, want = np.load(os.path.join(d, "input.npy")), np.load(os.path.join(d, "expected.npy"))
    assert rel_error(model(x), want) <= 1e-3
    assert rel_error(model(x[0]), want[:1]) <= 1e-3  # one sequence, [seq_len, embed_dim]
    model.output_mode = "all"
    assert model(x).shape == x.shape[:2] + (want.shape[-1],)
    half = softpick.Model.from_safetensors(ctx, os.path.join(d, "weights.safetensors"), weights_dtype="f16")
    assert half.memory["weights"] < model.memory["weights"] * 0.6
    assert rel_error(half(x), want) <= 1e-2
    model.close(), half.close()


@pytest.mark.parametrize("case,attention", [("model-e20-h32-n4-l2-rectified", "rectified-softpick"),
                                            ("model-e24-h32-n2-l2-softmax-large-scores", "softmax")])
def test_golden_normalizers(ctx, case, attention):
    d = os.path.join(GOLDEN, case)
    model = softpick.Model.from_safetensors(ctx, os.path.join(d, "weights.safetensors"))
    assert model.config["attention"] == attention  # from the file's metadata
    x, want = np.load(os.path.join(d, "input.npy")), np.load(os.path.join(d, "expected.npy"))
    assert rel_error(model(x), want) <= 1e-3
    model.close()
    m = softpick.Model(ctx, 8, hidden_size=8, num_heads=2, num_layers=1, window_size=4, attention=attention)
    assert m.config["attention"] == attention
    m.close()
    with pytest.raises(ValueError, match="attention"):
        softpick.Model(ctx, 8, hidden_size=8, num_heads=2, num_layers=1, attention="rectified")


def ref_layer_norm(x, gamma, beta):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(((x - mean) ** 2).mean(-1, keepdims=True) + 1e-5) * gamma + beta


def ref_analyze(w, x, heads, attention):
    """The paper's measurements in float64 from a numpy forward over the file's weights."""
    dense = lambda a, n: a @ w[n + ".kernel"].astype(np.float64) + w[n + ".bias"]
    x = np.asarray(x, np.float64)
    if "input_projection.kernel" in w:
        x = dense(x, "input_projection")
    batch, seq, hidden = x.shape
    hd, out, l = hidden // heads, {k: [] for k in ("sink_rate", "sparsity", "row_abs_sum", "kurtosis", "max_abs")}, 1
    while "softpick_block_%d_attn_norm.gamma" % l in w:
        p = "softpick_block_%d_" % l
        a = ref_layer_norm(x, w[p + "attn_norm.gamma"], w[p + "attn_norm.beta"])
        q, k, v = (dense(a, p + "attn_%s_proj" % n).reshape(batch, seq, heads, hd).transpose(0, 2, 1, 3) for n in "qkv")
        s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
        future = np.triu(np.ones((seq, seq), bool), 1)
        if attention == "softpick":
            s[..., future] = 0
            p_ = s / (1 + np.abs(s).sum(-1, keepdims=True))
        else:
            s[..., future] = -np.inf
            p_ = ref_normalize(s, -1, attention)
        live = ~future
        out["sink_rate"].append((p_[..., 0].mean(-1) > 0.3).mean(0))
        out["sparsity"].append(((p_ == 0) & live).sum((0, 2, 3)) / (batch * live.sum()))
        out["row_abs_sum"].append(np.abs(p_).sum(-1).mean((0, 2)))
        o = (p_ @ v).transpose(0, 2, 1, 3).reshape(batch, seq, hidden)
        x = x + dense(o, p + "attn_out_proj")
        f = ref_gelu(dense(ref_layer_norm(x, w[p + "ffn_norm.gamma"], w[p + "ffn_norm.beta"]), p + "ffn_up"))
        x = x + dense(f, p + "ffn_down")
        c = x - x.mean()
        out["kurtosis"].append((c ** 4).mean() / (c ** 2).mean() ** 2)
        out["max_abs"].append(np.abs(x).max())
        l += 1
    return {k: np.array(v) for k, v in out.items()}


@pytest.mark.parametrize("case,attention", [("model-e20-h32-n4-l2", "softpick"),
                                            ("model-e20-h32-n4-l2-rectified", "rectified-softpick"),
                                            ("model-e48-h48-n3-l3-softmax", "softmax")])
def test_analyze(ctx, case, attention):
    d = os.path.join(GOLDEN, case)
    model = softpick.Model.from_safetensors(ctx, os.path.join(d, "weights.safetensors"))
    x = np.load(os.path.join(d, "input.npy"))
    got, want = model.analyze(x), ref_analyze(read_safetensors(os.path.join(d, "weights.safetensors")), x,
                                              model.config["num_heads"], attention)
    layers, heads = model.config["num_layers"], model.config["num_heads"]
    assert got["sink_rate"].shape == (layers, heads) and got["kurtosis"].shape == (layers,)
    np.testing.assert_array_equal(got["sink_rate"], want["sink_rate"])
    np.testing.assert_allclose(got["sparsity"], want["sparsity"], atol=1.0 / (x.shape[0] * x.shape[1] ** 2))
    for name in ("row_abs_sum", "kurtosis", "max_abs"):
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4)
    assert (got["sparsity"] > 0.3).all() if attention == "rectified-softpick" else (got["sparsity"] == 0).all()
    with pytest.raises(ValueError, match="input"):
        model.analyze(x[..., :3])
    model.close()


def test_model_save_and_reload(ctx, tmp_path):
    m = softpick.Model(ctx, 12, hidden_size=16, num_heads=2, num_layers=1, window_size=5, num_outputs=3, seed=7)
    x = np.random.default_rng(6).standard_normal((2, 5, 12))
    path = tmp_path / "w.safetensors"
    m.save(path)
    again = softpick.Model.from_safetensors(ctx, path)
    assert again.config["num_outputs"] == 3
    np.testing.assert_array_equal(m(x), again(x))
    assert m.parameter("output_head.kernel").shape == (16, 3)
    m.close(), again.close()


@pytest.mark.parametrize("case,loss,mode", [("train-e12-h16-n2-l2-o3-xent-last", "cross-entropy", "last"),
                                            ("train-e20-h20-n4-l1-mse-all", "mse", "all")])
def test_golden_training(ctx, case, loss, mode):
    d = os.path.join(GOLDEN, case)
    x, target = np.load(os.path.join(d, "input.npy")), np.load(os.path.join(d, "target.npy"))
    model = softpick.Model.from_safetensors(ctx, os.path.join(d, "weights.safetensors"), output_mode=mode)
    value, grads = model.grad(x, target, loss=loss)
    assert abs(value - float(np.load(os.path.join(d, "expected_loss.npy")))) <= 1e-4 * abs(value)
    want = read_safetensors(os.path.join(d, "expected_gradients.safetensors"))
    assert set(grads) == set(want)
    for name, g in want.items():
        assert rel_error(grads[name], g) <= 1e-4, name
    # Three full-batch AdamW steps at lr 1e-2: the losses and the weights after them.
    losses = model.fit(x, target, steps=3, lr=1e-2, loss=loss, progress=False)
    np.testing.assert_allclose(losses, np.load(os.path.join(d, "expected_adamw_3_losses.npy")), rtol=1e-4)
    for name, w in read_safetensors(os.path.join(d, "expected_adamw_3_steps.safetensors")).items():
        assert rel_error(model.parameter(name), w) <= 1e-4, name
    model.close()


def test_fit_resumes_exactly(ctx, tmp_path):
    """Six steps in one run equal three, a save of weights and optimizer state, and three more
    from a new model resumed from them (the batch order continues from the saved step count)."""
    rng = np.random.default_rng(9)
    x, target = rng.standard_normal((10, 4, 6)), rng.standard_normal((10, 8))
    kw = dict(batch_size=4, lr=1e-2, loss="mse", dropout=0.0, shuffle=True, seed=3, progress=False)
    a = softpick.Model(ctx, 6, hidden_size=8, num_heads=2, num_layers=1, window_size=4, seed=5)
    whole = a.fit(x, target, steps=6, **kw)
    b = softpick.Model(ctx, 6, hidden_size=8, num_heads=2, num_layers=1, window_size=4, seed=5)
    first = b.fit(x, target, steps=3, state=tmp_path / "s.safetensors", **kw)
    b.save(tmp_path / "w.safetensors")
    c = softpick.Model.from_safetensors(ctx, tmp_path / "w.safetensors")
    rest = c.fit(x, target, steps=3, resume=tmp_path / "s.safetensors", **kw)
    np.testing.assert_array_equal(whole, first + rest)
    for name in a.parameter_names:
        np.testing.assert_array_equal(a.parameter(name), c.parameter(name))
    a.close(), b.close(), c.close()


def test_fit_learns(ctx):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((64, 6, 8))
    target = (x[:, -1, 0] > 0).astype(np.float32)  # class 1 where the last position's feature 0 is positive
    m = softpick.Model(ctx, 8, hidden_size=16, num_heads=2, num_layers=1, window_size=6, num_outputs=2, seed=1)
    losses = m.fit(x, target, steps=60, batch_size=16, lr=1e-2, loss="cross-entropy", dropout=0.0, shuffle=True,
                   progress=False)
    assert len(losses) == 60 and np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])
    m.close()


# ---- errors and lifetimes --------------------------------------------------------------------

def test_errors(ctx):
    with pytest.raises(softpick.Error) as e:
        ctx.softpick(np.zeros((2, 3)), axis=5)
    assert e.value.status == "SPK_ERROR_INVALID_ARGUMENT" and "axis 5" in str(e.value)
    with pytest.raises(softpick.Error) as e:
        ctx.matmul(np.zeros((2, 3)), np.zeros((4, 5)))
    assert e.value.status == "SPK_ERROR_SHAPE"
    with pytest.raises(softpick.Error) as e:
        ctx.attention(np.zeros((1, 4, 6)), np.zeros((1, 4, 6)), np.zeros((1, 4, 6)), 4)
    assert "not divisible" in str(e.value)
    with pytest.raises(TypeError):
        ctx.softpick(np.array(["a", "b"]))
    with pytest.raises(TypeError):
        ctx.softpick(np.zeros(3), axis=0.5)
    with pytest.raises(ValueError):
        ctx.layer_norm(np.zeros((2, 3)), np.ones(3), np.zeros(3), eps=-1)
    with pytest.raises(softpick.Error) as e:
        softpick.Model.from_safetensors(ctx, "/nonexistent.safetensors")
    assert e.value.status == "SPK_ERROR_IO"
    with pytest.raises(TypeError):
        softpick.Model.from_safetensors(ctx, "x", heads=3)
    with pytest.raises(softpick.Error) as e:
        softpick.Model(ctx, 8, hidden_size=10, num_heads=3)
    assert e.value.status == "SPK_ERROR_INVALID_ARGUMENT"
    m = softpick.Model(ctx, 8, hidden_size=16, num_heads=2, num_layers=1, window_size=4)
    with pytest.raises(ValueError):
        m(np.zeros(8))
    with pytest.raises(ValueError):
        m(np.zeros((1, 4, 9)))  # embed_dim 8
    with pytest.raises(ValueError):
        m.output_mode = "first"
    with pytest.raises(ValueError):
        m.grad(np.zeros((2, 4, 8)), np.zeros((3, 16)))
    with pytest.raises(softpick.Error) as e:
        m.grad(np.zeros((2, 4, 8)), [0, 99], loss="cross-entropy")  # no head: 16 outputs, class 99
    assert e.value.status == "SPK_ERROR_INVALID_ARGUMENT"
    m.close()
    with pytest.raises(softpick.Error):
        softpick.Context(device="no such device")


def test_missing_library_is_a_clear_import_error(tmp_path):
    import subprocess
    import sys
    env = dict(os.environ, SOFTPICK_LIBRARY=str(tmp_path / "libsoftpick.so.0"),
               PYTHONPATH=os.path.join(os.path.dirname(__file__), ".."))
    r = subprocess.run([sys.executable, "-c", "import softpick"], env=env, capture_output=True, text=True)
    assert r.returncode != 0
    assert "ImportError" in r.stderr and str(tmp_path / "libsoftpick.so.0") in r.stderr


def test_lifetimes():
    c = softpick.Context()
    t = c.tensor(np.ones(4))
    m = softpick.Model(c, 4, hidden_size=8, num_heads=2, num_layers=1, window_size=3)
    c.close()
    c.close()  # twice is fine
    assert c.closed
    with pytest.raises(ValueError):
        t.numpy()
    with pytest.raises(ValueError):
        m(np.zeros((1, 3, 4)))
    with pytest.raises(ValueError):
        c.softpick(np.zeros(3))
    t.close(), m.close()
    # Garbage collection in any order: objects dropped before and after their context.
    for order in range(2):
        c = softpick.Context()
        objs = [c.tensor(np.ones(3)), softpick.Model(c, 4, hidden_size=8, num_heads=2, num_layers=1, window_size=3)]
        if order:
            del c
            gc.collect()
            del objs
        else:
            del objs
            gc.collect()
            del c
        gc.collect()


def test_two_threads_two_contexts():
    errors = []

    def work(seed):
        try:
            with softpick.Context() as c:
                x = np.random.default_rng(seed).standard_normal((16, 100))
                for _ in range(20):
                    assert rel_error(c.softpick(x), ref_softpick(x, -1)) <= 1e-5
        except Exception as e:  # reported in the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def test_no_leak_over_many_cycles():
    def cycle():
        with softpick.Context() as c:
            t = c.tensor(np.ones((64, 64)))
            c.softpick(t).close()
            softpick.Model(c, 8, hidden_size=16, num_heads=2, num_layers=1, window_size=4)(np.ones((1, 4, 8)))

    for _ in range(5):
        cycle()  # warm: the driver's one-time allocations
    gc.collect()
    before = rss_kib()
    for _ in range(40):
        cycle()
    gc.collect()
    grown = rss_kib() - before
    assert grown < 20 * 1024, "resident memory grew by %d KiB over 40 context cycles" % grown
