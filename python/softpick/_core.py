"""Devices, contexts, device-resident tensors and the ops (internal: import from `softpick`)."""
import ctypes
import threading
import weakref

import numpy as np

from . import _lib
from ._lib import Error, check, floats, lib


def _describe(d):
    """A DeviceInfo as a dict (devices() and Context.device)."""
    return {"index": d.index, "name": d.name.decode(), "driver": d.driver.decode(),
            "type": lib.spk_device_type_string(d.type).decode(),
            "api_version": "%d.%d" % (d.api_version >> 22, (d.api_version >> 12) & 0x3FF),
            "subgroup_size": d.subgroup_size, "usable": bool(d.usable), "storage_16bit": bool(d.storage_16bit)}


def devices():
    """The Vulkan devices the system's loader lists, as dicts: index, name, driver, type,
    subgroup_size, usable, storage_16bit (and the API version). Raises Error without a loader."""
    count = ctypes.c_uint32(0)
    status = lib.spk_list_devices(None, 0, ctypes.byref(count))
    if status != 0 and lib.spk_status_name(status) == b"SPK_ERROR_NO_DEVICE":
        return []
    check(status, what="listing devices")
    infos = (_lib.DeviceInfo * max(count.value, 1))()
    check(lib.spk_list_devices(infos, count.value, ctypes.byref(count)), what="listing devices")
    return [_describe(d) for d in infos[:count.value]]


def as_f32(array, what):
    """`array` as a contiguous float32 numpy array (float64 and strided input copied)."""
    if isinstance(array, Tensor):
        raise TypeError("%s: expected a numpy array here, got a softpick.Tensor" % what)
    a = np.asarray(array)
    if a.dtype.kind not in "fiub":
        raise TypeError("%s: expected numbers, got dtype %s" % (what, a.dtype))
    return np.ascontiguousarray(a, dtype=np.float32)


class Context:
    """A Vulkan device and everything made on it: `with softpick.Context() as ctx: ...`.

    device: None (the first GPU, else a CPU driver; or SOFTPICK_DEVICE), an index from devices(),
    or a substring of the device name. validation: the Khronos validation layer (messages raise no
    error; they go to stderr). Close with close() (twice is fine) or the with block; tensors and
    models made on it are closed with it."""

    def __init__(self, device=None, validation=False):
        self._handle = None
        self._lock = threading.RLock()  # garbage collection may close a tensor inside close()
        self._children = weakref.WeakSet()
        desc = _lib.ContextDesc()
        desc.device = None if device is None else str(device).encode()
        desc.validation = bool(validation)
        out = _lib.handle()
        check(lib.spk_context_create(ctypes.byref(desc), ctypes.byref(out)), what="creating a context")
        self._handle = out.value

    # ---- lifetime ---------------------------------------------------------------------------

    @property
    def closed(self):
        return self._handle is None

    def close(self):
        """Frees the device and every tensor and model made on it. May be called more than once."""
        with self._lock:
            if self._handle is None:
                return
            for child in list(self._children):
                child.close()
            lib.spk_context_destroy(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to free
            pass

    def _live(self):
        if self._handle is None:
            raise ValueError("the softpick context is closed")
        return self._handle

    def _adopt(self, child):
        self._children.add(child)

    def _check(self, status, what=""):
        check(status, self._handle, what)

    @property
    def device(self):
        """This context's device, as devices() describes it."""
        info = _lib.DeviceInfo()
        self._check(lib.spk_context_device_info(self._live(), ctypes.byref(info)))
        return _describe(info)

    # ---- tensors ----------------------------------------------------------------------------

    def tensor(self, array, dtype="f32"):
        """A device-resident copy of `array` (float32; dtype "f16" or "bf16" stores 16 bits,
        rounded to nearest even) for chains of ops without host copies."""
        a = as_f32(array, "tensor")
        t = Tensor(self, a.shape, dtype)
        t.upload(a)
        return t

    def empty(self, shape, dtype="f32"):
        """An uninitialized device tensor of this shape."""
        return Tensor(self, tuple(int(d) for d in shape), dtype)

    # ---- ops --------------------------------------------------------------------------------

    def _inputs(self, arrays, names):
        """Device tensors for the inputs (numpy arrays uploaded, Tensors used as they are), whether
        any was a Tensor (the result then stays on the device), and the temporaries to free."""
        tensors, temps, device = [], [], False
        for a, name in zip(arrays, names):
            if a is None:
                tensors.append(None)
            elif isinstance(a, Tensor):
                if a._ctx is not self:
                    raise ValueError("%s belongs to another context" % name)
                a._live()
                tensors.append(a)
                device = True
            else:
                t = self.tensor(as_f32(a, name))
                tensors.append(t)
                temps.append(t)
        return tensors, device, temps

    def _run(self, arrays, names, out_shape, call):
        tensors, device, temps = self._inputs(arrays, names)
        out = self.empty(out_shape)
        try:
            self._check(call(*[t._handle if t is not None else None for t in tensors], out._handle))
            return out if device else out.numpy()
        finally:
            for t in temps:
                t.close()
            if not device:
                out.close()

    def softpick(self, x, axis=-1, kind="softpick"):
        """softpick(x)_i = x_i / (1 + sum_j |x_j|) along `axis` (negative counts from the end), or with
        kind "rectified-softpick" or "softmax" that normalizer (-inf elements masked)."""
        shape = _shape_of(x)
        if not isinstance(axis, (int, np.integer)):
            raise TypeError("axis must be an integer")
        norm = _normalizer(kind, "kind")
        return self._run([x], ["softpick x"], shape,
                         lambda xh, yh: lib.spk_normalize(self._live(), xh, int(axis), norm, yh))

    def softpick_backward(self, x, dy, axis=-1, kind="softpick"):
        """dL/dx of softpick (or `kind`) along `axis` at x, from the upstream gradient dy = dL/dy (for
        the exponential forms the row's maximum held constant, as the attention backward does)."""
        shape = _shape_of(x)
        if not isinstance(axis, (int, np.integer)):
            raise TypeError("axis must be an integer")
        norm = _normalizer(kind, "kind")
        return self._run([x, dy], ["softpick x", "softpick dy"], shape,
                         lambda xh, dyh, dxh: lib.spk_normalize_backward(self._live(), xh, dyh, int(axis), norm, dxh))

    def matmul(self, a, b, bias=None, gelu=False, residual=None):
        """C = gelu?(A B + bias) + residual: A [..., M, K], B [K, N] (or with A's batches), bias [N],
        residual C's shape. Products and sums in float32."""
        sa, sb = _shape_of(a), _shape_of(b)
        if len(sa) < 2 or len(sb) < 2:
            raise ValueError("matmul needs A [..., M, K] and B [K, N]")
        out_shape = tuple(sa[:-1]) + (sb[-1],)

        def call(ah, bh, biash, resh, ch):
            desc = _lib.MatmulDesc(bias=biash, activation=1 if gelu else 0, residual=resh, pre_activation=None)
            return lib.spk_matmul(self._live(), ah, bh, ctypes.byref(desc), ch)

        return self._run([a, b, bias, residual], ["matmul A", "matmul B", "matmul bias", "matmul residual"],
                         out_shape, call)

    def layer_norm(self, x, gamma, beta, eps=1e-5):
        """(x - mean) / sqrt(var + eps) * gamma + beta over the last axis (biased variance)."""
        if not (isinstance(eps, (int, float)) and 0 < eps < float("inf")):
            raise ValueError("eps must be a positive number")

        def call(xh, gh, bh, yh):
            desc = _lib.LayerNormDesc(epsilon=float(eps), stats=None)
            return lib.spk_layer_norm(self._live(), xh, gh, bh, ctypes.byref(desc), yh)

        return self._run([x, gamma, beta], ["layer norm x", "layer norm gamma", "layer norm beta"], _shape_of(x), call)

    def attention(self, q, k, v, num_heads, causal=True, attention="softpick"):
        """Multi-head attention: q, k, v [batch, seq, hidden], hidden = num_heads * head_dim, normalized
        by `attention` ("softpick", "rectified-softpick" or "softmax")."""
        if not isinstance(num_heads, (int, np.integer)):
            raise TypeError("num_heads must be an integer")
        desc = _lib.AttentionDesc(num_heads=int(num_heads), causal=bool(causal),
                                  normalizer=_normalizer(attention, "attention"))
        return self._run([q, k, v], ["attention q", "attention k", "attention v"], _shape_of(q),
                         lambda qh, kh, vh, oh: lib.spk_attention(self._live(), ctypes.byref(desc), qh, kh, vh, oh))


def _normalizer(name, what):
    if name not in _lib.ATTENTIONS:
        raise ValueError("%s must be one of %s, got %r" % (what, ", ".join(_lib.ATTENTIONS), name))
    return _lib.ATTENTIONS[name]


def _shape_of(x):
    if isinstance(x, Tensor):
        return x.shape
    return np.shape(x)


class Tensor:
    """A tensor in the context's device memory (ctx.tensor(array), ctx.empty(shape)). numpy() copies
    it back; close() frees it (also done by the context's close and at garbage collection)."""

    def __init__(self, ctx, shape, dtype="f32"):
        if dtype not in _lib.DTYPES:
            raise ValueError("dtype must be one of %s, got %r" % (", ".join(_lib.DTYPES), dtype))
        shape = tuple(int(d) for d in shape)
        if not 1 <= len(shape) <= 8:
            raise ValueError("a tensor has 1 to 8 dimensions, got %d" % len(shape))
        self._ctx, self._handle, self.shape, self.dtype = ctx, None, shape, dtype
        dims = (ctypes.c_int64 * len(shape))(*shape)
        out = _lib.handle()
        ctx._check(lib.spk_tensor_create_typed(ctx._live(), _lib.DTYPES[dtype], len(shape), dims, ctypes.byref(out)),
                   "creating a tensor")
        self._handle = out.value
        ctx._adopt(self)

    def _live(self):
        if self._handle is None:
            raise ValueError("the tensor is closed (or its context is)")
        return self._handle

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    def upload(self, array):
        """Copies a numpy array of this tensor's element count in (converted to float32)."""
        a = as_f32(array, "upload")
        if a.size != self.size:
            raise ValueError("upload of %d values into a tensor of %d" % (a.size, self.size))
        self._ctx._check(lib.spk_tensor_upload(self._live(), floats(a), a.size), "upload")

    def numpy(self):
        """The tensor's values as a new float32 numpy array of its shape."""
        out = np.empty(self.shape, dtype=np.float32)
        self._ctx._check(lib.spk_tensor_download(self._live(), floats(out), out.size), "download")
        return out

    def close(self):
        """Frees the tensor's device memory. May be called more than once."""
        if self._handle is not None and not self._ctx.closed:
            lib.spk_tensor_destroy(self._handle)
        self._handle = None

    def __del__(self):
        try:
            if self._handle is not None and not self._ctx.closed:
                with self._ctx._lock:
                    self.close()
        except Exception:
            pass

    def __repr__(self):
        return "softpick.Tensor(shape=%s, dtype=%s%s)" % (self.shape, self.dtype, ", closed" if self._handle is None else "")


__all__ = ["Context", "Tensor", "Error", "devices"]
