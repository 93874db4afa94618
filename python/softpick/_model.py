"""The softpick transformer from Python: inference, gradients and training (internal: import from
`softpick`)."""
import ctypes
import sys
import time

import numpy as np

from . import _lib
from ._core import Context, as_f32
from ._lib import lib


def _config(embed_dim=None, hidden_size=None, num_heads=None, num_layers=None, window_size=None, dropout=None,
            output_mode=None, num_outputs=None, weights_dtype=None, activation_dtype=None, attention=None, base=None):
    """A ModelConfig: `base` (or zeros: the library's 'keep the file's' for overrides) with the
    given fields set, names checked here."""
    c = base if base is not None else _lib.ModelConfig()
    for name, value in (("embed_dim", embed_dim), ("hidden_size", hidden_size), ("num_heads", num_heads),
                        ("num_layers", num_layers), ("window_size", window_size), ("num_outputs", num_outputs)):
        if value is not None:
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise TypeError("%s must be an integer" % name)
            setattr(c, name, int(value))
    if dropout is not None:
        c.dropout = float(dropout)
    for name, value, table in (("output_mode", output_mode, _lib.OUTPUT_MODES),
                               ("weights_dtype", weights_dtype, _lib.DTYPES),
                               ("activation_dtype", activation_dtype, _lib.DTYPES),
                               ("attention", attention, _lib.ATTENTIONS)):
        if value is not None:
            if value not in table:
                raise ValueError("%s must be one of %s, got %r" % (name, ", ".join(table), value))
            setattr(c, name, table[value])
    return c


class Model:
    """The softpick transformer (SPEC.md section 2) on a context's device.

    Model(ctx, embed_dim, hidden_size=256, num_heads=4, num_layers=6, window_size=60, dropout=0.1,
    output_mode="last", num_outputs=0, weights_dtype="f32", activation_dtype="f32", seed=0,
    attention="softpick") makes one
    with Glorot-uniform weights from `seed`; Model.from_safetensors(ctx, path, **overrides) loads a
    weights file. model(x) runs it on x [batch, seq_len, embed_dim] (or [seq_len, embed_dim]).
    """

    def __init__(self, ctx, embed_dim, hidden_size=256, num_heads=4, num_layers=6, window_size=60, dropout=0.1,
                 output_mode="last", num_outputs=0, weights_dtype="f32", activation_dtype="f32", seed=0,
                 attention="softpick"):
        if not isinstance(ctx, Context):
            raise TypeError("the first argument must be a softpick.Context")
        if not isinstance(embed_dim, (int, np.integer)):
            raise TypeError("embed_dim must be an integer")
        c = _config(embed_dim, hidden_size, num_heads, num_layers, window_size, dropout, output_mode, num_outputs,
                    weights_dtype, activation_dtype, attention, base=lib.spk_model_config_default(int(embed_dim)))
        self._open(ctx, lambda out: lib.spk_model_create(ctx._live(), ctypes.byref(c), out), "creating a model")
        self._ctx._check(lib.spk_model_init_random(self._handle, int(seed) & (2**64 - 1)), "initializing the model")

    @classmethod
    def from_safetensors(cls, ctx, path, **overrides):
        """A model whose configuration comes from the file's metadata (and shapes), with keyword
        overrides (hidden_size=..., output_mode="all", weights_dtype="f16", ...), its weights loaded."""
        if not isinstance(ctx, Context):
            raise TypeError("the first argument must be a softpick.Context")
        unknown = set(overrides) - {"embed_dim", "hidden_size", "num_heads", "num_layers", "window_size", "dropout",
                                    "output_mode", "num_outputs", "weights_dtype", "activation_dtype", "attention"}
        if unknown:
            raise TypeError("unknown configuration %s" % ", ".join(sorted(unknown)))
        c = _config(**overrides)
        self = cls.__new__(cls)
        self._open(ctx, lambda out: lib.spk_model_create_from_safetensors(ctx._live(), str(path).encode(),
                                                                          ctypes.byref(c), out), str(path))
        return self

    def _open(self, ctx, create, what):
        self._ctx, self._handle = ctx, None
        out = _lib.handle()
        ctx._check(create(ctypes.byref(out)), what)
        self._handle = out.value
        ctx._adopt(self)

    # ---- lifetime ---------------------------------------------------------------------------

    def close(self):
        """Frees the model's device memory. May be called more than once (the context's close does)."""
        if getattr(self, "_handle", None) is not None and not self._ctx.closed:
            lib.spk_model_destroy(self._handle)
        self._handle = None

    def __del__(self):
        try:
            if getattr(self, "_handle", None) is not None and not self._ctx.closed:
                with self._ctx._lock:
                    self.close()
        except Exception:
            pass

    def _live(self):
        if getattr(self, "_handle", None) is None or self._ctx.closed:
            raise ValueError("the model is closed (or its context is)")
        return self._handle

    # ---- configuration ----------------------------------------------------------------------

    @property
    def config(self):
        """The configuration as a dict."""
        c = lib.spk_model_get_config(self._live()).contents
        modes = {v: k for k, v in _lib.OUTPUT_MODES.items()}
        dtypes = {v: k for k, v in _lib.DTYPES.items()}
        return {"embed_dim": c.embed_dim, "hidden_size": c.hidden_size, "num_heads": c.num_heads,
                "num_layers": c.num_layers, "window_size": c.window_size, "dropout": round(c.dropout, 6),
                "output_mode": modes[c.output_mode], "num_outputs": c.num_outputs,
                "weights_dtype": dtypes[c.weights_dtype], "activation_dtype": dtypes[c.activation_dtype],
                "attention": {v: k for k, v in _lib.ATTENTIONS.items()}[c.attention]}

    @property
    def output_mode(self):
        """"last" ([batch, out]), "all" ([batch, seq_len, out]) or "mean" ([batch, out])."""
        return self.config["output_mode"]

    @output_mode.setter
    def output_mode(self, mode):
        if mode not in _lib.OUTPUT_MODES:
            raise ValueError("output_mode must be last, all or mean, got %r" % (mode,))
        self._ctx._check(lib.spk_model_set_output_mode(self._live(), _lib.OUTPUT_MODES[mode]))

    @property
    def memory(self):
        """Device bytes the model holds: weights, activations, training state."""
        m = _lib.ModelMemory()
        self._ctx._check(lib.spk_model_memory(self._live(), ctypes.byref(m)))
        return {"weights": m.weights, "activations": m.activations, "training": m.training}

    @property
    def parameter_names(self):
        """Every parameter's name (SPEC.md section 3), in the file's order."""
        return [name for name, _ in self._parameters()]

    def _parameters(self):
        h = self._live()
        name = ctypes.create_string_buffer(128)
        ndim, shape = ctypes.c_int(), (ctypes.c_int64 * 2)()
        out = []
        for i in range(lib.spk_model_parameter_count(h)):
            self._ctx._check(lib.spk_model_parameter_info(h, i, name, 128, ctypes.byref(ndim), shape))
            out.append((name.value.decode(), tuple(shape[:ndim.value])))
        return out

    def parameter(self, name):
        """The parameter `name` as a float32 array."""
        shape = dict(self._parameters()).get(name)
        if shape is None:
            raise KeyError(name)
        out = np.empty(shape, dtype=np.float32)
        self._ctx._check(lib.spk_model_get_parameter(self._live(), name.encode(), _lib.floats(out), out.size))
        return out

    def save(self, path):
        """Writes the weights as safetensors (loadable by Model.from_safetensors and softpick run)."""
        self._ctx._check(lib.spk_model_save_safetensors(self._live(), str(path).encode()), str(path))

    def save_state(self, path):
        """Writes the optimizer state (moments and step count, SPEC.md section 6) as safetensors."""
        self._ctx._check(lib.spk_model_save_state(self._live(), str(path).encode()), str(path))

    def load_state(self, path):
        """Loads an optimizer state written by save_state (or softpick train --state): with the
        weights saved at the same step, training resumes exactly."""
        self._ctx._check(lib.spk_model_load_state(self._live(), str(path).encode()), str(path))

    # ---- running ----------------------------------------------------------------------------

    def _input(self, x):
        a = as_f32(x, "model input")
        if a.ndim == 2:
            a = a[None]
        embed = lib.spk_model_get_config(self._live()).contents.embed_dim
        if a.ndim != 3 or a.shape[2] != embed:
            raise ValueError("the input must be [batch, seq_len, %d] or [seq_len, %d] (embed_dim %d), got shape %s"
                             % (embed, embed, embed, np.shape(x)))
        return np.ascontiguousarray(a)

    def _output_shape(self, batch, seq):
        ndim, shape = ctypes.c_int(), (ctypes.c_int64 * 3)()
        n = lib.spk_model_output_shape(self._live(), batch, seq, ctypes.byref(ndim), shape)
        if n <= 0:
            raise ValueError("the input is empty")
        return tuple(shape[:ndim.value])

    def __call__(self, x):
        """The forward (no dropout) on x [batch, seq_len, embed_dim]; the output as a numpy array."""
        a = self._input(x)
        out = np.empty(self._output_shape(a.shape[0], a.shape[1]), dtype=np.float32)
        self._ctx._check(lib.spk_model_forward(self._live(), _lib.floats(a), a.shape[0], a.shape[1], _lib.floats(out)),
                         "forward")
        return out

    def analyze(self, x):
        """The softpick paper's measurements (Zuhri et al. 2025) of the forward on x, computed on the
        device: a dict of numpy arrays, per layer and head ([num_layers, num_heads]): "sink_rate" (the
        share of samples whose mean weight on the first key, over queries, exceeds 0.3), "sparsity"
        (the share of exact zeros among the causal weights), "row_abs_sum" (the mean over queries of
        sum |w|), "first_key_weight"; per layer ([num_layers]): "kurtosis" (mu4 / mu2^2 of the
        block's output, not excess) and "max_abs" (its largest |value|)."""
        a = self._input(x)
        c = lib.spk_model_get_config(self._live()).contents
        layers, heads = c.num_layers, c.num_heads
        head_out = (_lib.HeadAnalysis * (layers * heads))()
        layer_out = (_lib.LayerAnalysis * layers)()
        self._ctx._check(lib.spk_model_analyze(self._live(), _lib.floats(a), a.shape[0], a.shape[1], head_out,
                                               layer_out), "analyze")
        result = {}
        for name, _ in _lib.HeadAnalysis._fields_:
            result[name] = np.array([getattr(h, name) for h in head_out]).reshape(layers, heads)
        for name, _ in _lib.LayerAnalysis._fields_:
            result[name] = np.array([getattr(l, name) for l in layer_out])
        return result

    def _targets(self, target, loss, rows_shape):
        if loss not in _lib.LOSSES:
            raise ValueError("loss must be mse or cross-entropy, got %r" % (loss,))
        t = as_f32(target, "target")
        want = rows_shape if loss == "mse" else rows_shape[:-1]
        if t.shape != tuple(want) and t.size != int(np.prod(want)):
            raise ValueError("the target has shape %s; %s needs %s" % (t.shape, loss, tuple(want)))
        return np.ascontiguousarray(t.reshape(want))

    def grad(self, x, target, loss="mse"):
        """The loss of the model's output on x against `target` (mse: the output's shape;
        cross-entropy: one class index per output row) and every parameter's gradient, with dropout
        off: (loss, {name: gradient array}). The gradients start from zero."""
        a = self._input(x)
        t = self._targets(target, loss, self._output_shape(a.shape[0], a.shape[1]))
        h = self._live()
        self._ctx._check(lib.spk_model_zero_grad(h), "zeroing the gradients")
        value = ctypes.c_float()
        self._ctx._check(lib.spk_model_grad(h, _lib.floats(a), a.shape[0], a.shape[1], _lib.LOSSES[loss],
                                            _lib.floats(t), ctypes.byref(value)), "grad")
        grads = {}
        for name, shape in self._parameters():
            g = np.empty(shape, dtype=np.float32)
            self._ctx._check(lib.spk_model_get_gradient(h, name.encode(), _lib.floats(g), g.size), name)
            grads[name] = g
        return float(value.value), grads

    def fit(self, x, target, steps=100, batch_size=None, lr=1e-3, loss="mse", optimizer="adamw", weight_decay=None,
            beta1=0.9, beta2=0.999, eps=1e-8, clip_norm=0.0, dropout=None, seed=0, shuffle=False, resume=None,
            state=None, progress=None, comm=None):
        """Trains on the device as `softpick train` does (SPEC.md section 6): step i takes samples
        (i * B + j) mod n (with shuffle, each epoch's seeded permutation), one recorded command
        buffer per step. resume: an optimizer state file to start from (its step count continues
        the batch order); state: where to write the optimizer state at the end. Returns the list of
        per-step losses (before each update). progress: a bar on stderr (default: when stderr is a
        terminal). comm: an mpi4py communicator for data-parallel training (run under mpirun, every
        rank with the same arguments and data): each rank trains on its rows of every step's global
        batch of batch_size samples and the gradients and loss are summed over the ranks before the
        optimizer, so every rank keeps the same weights (as `softpick train` under mpirun); only
        rank 0 shows progress and writes `state`."""
        a = self._input(x)
        n = a.shape[0]
        batch = n if batch_size is None else int(batch_size)
        if batch < 1 or int(steps) < 0:
            raise ValueError("batch_size must be >= 1 and steps >= 0")
        if optimizer not in _lib.OPTIMIZERS:
            raise ValueError("optimizer must be adamw or sgd, got %r" % (optimizer,))
        out_shape = self._output_shape(n, a.shape[1])
        t = self._targets(target, loss, out_shape)
        opt = lib.spk_optimizer_defaults(_lib.OPTIMIZERS[optimizer])
        opt.lr, opt.beta1, opt.beta2, opt.eps, opt.clip_norm = lr, beta1, beta2, eps, clip_norm
        if weight_decay is not None:
            opt.weight_decay = weight_decay
        h = self._live()
        rate = self.config["dropout"] if dropout is None else float(dropout)
        self._ctx._check(lib.spk_model_set_dropout(h, rate, int(seed) & (2**64 - 1)), "dropout")
        if resume is not None:
            self.load_state(resume)
        first = ctypes.c_int64(0)
        self._ctx._check(lib.spk_model_get_step(h, ctypes.byref(first)), "the step count")
        show = sys.stderr.isatty() if progress is None else bool(progress)
        rank, ranks = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
        if batch < ranks:
            raise ValueError("batch_size %d is smaller than the %d ranks" % (batch, ranks))
        mine, end = rank * batch // ranks, (rank + 1) * batch // ranks
        show = show and rank == 0
        keep = self._data_parallel(comm, batch, mine) if comm is not None else None
        losses, order, start = [], _BatchOrder(n, shuffle, int(seed)), time.time()
        value = ctypes.c_float()
        try:
            for step in range(int(steps)):
                idx = order.indices(first.value + step, batch)[mine:end]
                xb, tb = np.ascontiguousarray(a[idx]), np.ascontiguousarray(t[idx])
                self._ctx._check(lib.spk_model_train_step(h, _lib.floats(xb), len(idx), a.shape[1], _lib.LOSSES[loss],
                                                          _lib.floats(tb), ctypes.byref(opt), ctypes.byref(value)),
                                 "training step %d" % step)
                losses.append(float(value.value))
                if show:
                    done = (step + 1) / int(steps)
                    sys.stderr.write("\r[%-30s] %d/%d  loss %.5f  %.1f s" % ("#" * int(30 * done), step + 1,
                                                                          int(steps), losses[-1], time.time() - start))
                    sys.stderr.flush()
        finally:
            if keep is not None:
                self._ctx._check(lib.spk_model_set_data_parallel(h, None), "data-parallel")
        if show and steps:
            sys.stderr.write("\n")
        if state is not None and rank == 0:
            self.save_state(state)
        return losses

    def _data_parallel(self, comm, batch, first):
        """Sets the model's data-parallel reduction to an MPI all-reduce over comm; returns what
        must stay alive while it is set."""
        from mpi4py import MPI

        def reduce(user, data, count):
            try:
                comm.Allreduce(MPI.IN_PLACE, [np.ctypeslib.as_array(data, shape=(count,)), MPI.FLOAT], op=MPI.SUM)
                return 0
            except Exception:  # noqa: BLE001 - any failure ends the step with the library's I/O error
                return -10

        fn = _lib.REDUCE_FN(reduce)
        dp = _lib.DataParallel(batch, first, fn, _lib.WAIT_FN(), None)
        self._ctx._check(lib.spk_model_set_data_parallel(self._live(), ctypes.byref(dp)), "data-parallel")
        return fn, dp


class _BatchOrder:
    """The samples of each step: (i * B + j) mod n, or with shuffling the epoch's permutation
    (Fisher-Yates from splitmix64 of the seed and the epoch), as tools/train.c draws them."""

    MASK = 2**64 - 1

    def __init__(self, n, shuffle, seed):
        self.n, self.shuffle, self.seed, self.epoch, self.perm = n, shuffle, seed & self.MASK, -1, None

    def _mix(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & self.MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & self.MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & self.MASK
        return z ^ (z >> 31)

    def indices(self, step, batch):
        out = []
        for j in range(batch):
            k = step * batch + j
            epoch, pos = divmod(k, self.n)
            if self.shuffle and epoch != self.epoch:
                self.state = self.seed ^ ((0xD1B54A32D192ED03 * (epoch + 1)) & self.MASK)
                perm = list(range(self.n))
                for i in range(self.n - 1, 0, -1):
                    r = self._mix() % (i + 1)
                    perm[i], perm[r] = perm[r], perm[i]
                self.epoch, self.perm = epoch, perm
            out.append(self.perm[pos] if self.shuffle else pos)
        return out
