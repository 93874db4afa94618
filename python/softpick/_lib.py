"""Loading libsoftpick.so and declaring its C API for ctypes (internal).

The library is found, in order: through the SOFTPICK_LIBRARY environment variable (a file), next
to this package (where `cmake --install` puts a copy), in the build tree of a source checkout
(build/release, build/debug), and by the system's search (ldconfig's paths). A missing library is
an ImportError naming every place looked at.
"""
import ctypes
import ctypes.util
import os

_HERE = os.path.dirname(os.path.abspath(__file__))
_NAMES = ("libsoftpick.so.0", "libsoftpick.so")


def _candidates():
    env = os.environ.get("SOFTPICK_LIBRARY")
    if env:
        yield env
        return
    for name in _NAMES:
        yield os.path.join(_HERE, name)
    root = os.path.dirname(os.path.dirname(_HERE))  # python/softpick -> the checkout
    for preset in ("release", "debug"):
        for name in _NAMES:
            yield os.path.join(root, "build", preset, name)
    found = ctypes.util.find_library("softpick")
    if found:
        yield found


def _load():
    tried = []
    for path in _candidates():
        tried.append(path)
        if os.path.sep in path and not os.path.exists(path):
            continue
        try:
            return ctypes.CDLL(path)
        except OSError as e:
            tried[-1] = "%s (%s)" % (path, e)
    raise ImportError(
        "softpick: libsoftpick.so not found; looked at: %s. Build the library (scripts/quickstart.sh or "
        "cmake --build --preset release), install it (cmake --install), or set SOFTPICK_LIBRARY to its path."
        % ", ".join(tried or ["(nothing)"]))


lib = _load()

# ---- types --------------------------------------------------------------------------------------

c_status = ctypes.c_int
handle = ctypes.c_void_p
LOG_FN = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
DTYPES = {"f32": 0, "f16": 1, "bf16": 2}
OUTPUT_MODES = {"last": 0, "all": 1, "mean": 2}
ATTENTIONS = {"softpick": 0, "rectified-softpick": 1, "softmax": 2}
LOSSES = {"mse": 0, "cross-entropy": 1}
OPTIMIZERS = {"adamw": 0, "sgd": 1}


class DeviceInfo(ctypes.Structure):
    _fields_ = [("index", ctypes.c_uint32), ("name", ctypes.c_char * 256), ("driver", ctypes.c_char * 256),
                ("type", ctypes.c_int), ("vendor_id", ctypes.c_uint32), ("device_id", ctypes.c_uint32),
                ("api_version", ctypes.c_uint32), ("subgroup_size", ctypes.c_uint32),
                ("subgroup_arithmetic", ctypes.c_bool), ("usable", ctypes.c_bool),
                ("max_storage_buffer_range", ctypes.c_uint64), ("storage_16bit", ctypes.c_bool),
                ("texel_f16", ctypes.c_bool), ("texel_bf16", ctypes.c_bool)]


class ContextDesc(ctypes.Structure):
    _fields_ = [("device", ctypes.c_char_p), ("pipeline_cache_path", ctypes.c_char_p),
                ("validation", ctypes.c_bool), ("reduction", ctypes.c_int), ("half_storage", ctypes.c_int),
                ("log", LOG_FN), ("log_user_data", ctypes.c_void_p), ("tuning_path", ctypes.c_char_p)]


class MatmulDesc(ctypes.Structure):
    _fields_ = [("bias", handle), ("activation", ctypes.c_int), ("residual", handle), ("pre_activation", handle)]


class LayerNormDesc(ctypes.Structure):
    _fields_ = [("epsilon", ctypes.c_float), ("stats", handle)]


class AttentionDesc(ctypes.Structure):
    _fields_ = [("num_heads", ctypes.c_int), ("causal", ctypes.c_bool), ("normalizer", ctypes.c_int)]


class ModelConfig(ctypes.Structure):
    _fields_ = [("embed_dim", ctypes.c_int), ("hidden_size", ctypes.c_int), ("num_heads", ctypes.c_int),
                ("num_layers", ctypes.c_int), ("dropout", ctypes.c_float), ("window_size", ctypes.c_int),
                ("output_mode", ctypes.c_int), ("num_outputs", ctypes.c_int), ("weights_dtype", ctypes.c_int),
                ("activation_dtype", ctypes.c_int), ("attention", ctypes.c_int)]


class ModelMemory(ctypes.Structure):
    _fields_ = [("weights", ctypes.c_uint64), ("activations", ctypes.c_uint64), ("training", ctypes.c_uint64)]


class HeadAnalysis(ctypes.Structure):
    _fields_ = [("sink_rate", ctypes.c_double), ("sparsity", ctypes.c_double), ("row_abs_sum", ctypes.c_double),
                ("first_key_weight", ctypes.c_double)]


class LayerAnalysis(ctypes.Structure):
    _fields_ = [("kurtosis", ctypes.c_double), ("max_abs", ctypes.c_double)]


REDUCE_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_size_t)
WAIT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p)


class DataParallel(ctypes.Structure):
    _fields_ = [("global_batch", ctypes.c_int64), ("first_sample", ctypes.c_int64), ("reduce", REDUCE_FN),
                ("wait", WAIT_FN), ("user", ctypes.c_void_p), ("bucket_bytes", ctypes.c_size_t)]


class OptimizerDesc(ctypes.Structure):
    _fields_ = [("kind", ctypes.c_int), ("lr", ctypes.c_float), ("beta1", ctypes.c_float), ("beta2", ctypes.c_float),
                ("eps", ctypes.c_float), ("weight_decay", ctypes.c_float), ("clip_norm", ctypes.c_float)]


_f32p = ctypes.POINTER(ctypes.c_float)
_i64p = ctypes.POINTER(ctypes.c_int64)
_PROTOTYPES = {
    "spk_status_name": (ctypes.c_char_p, [c_status]),
    "spk_status_string": (ctypes.c_char_p, [c_status]),
    "spk_device_type_string": (ctypes.c_char_p, [ctypes.c_int]),
    "spk_list_devices": (c_status, [ctypes.POINTER(DeviceInfo), ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32)]),
    "spk_context_create": (c_status, [ctypes.POINTER(ContextDesc), ctypes.POINTER(handle)]),
    "spk_context_destroy": (None, [handle]),
    "spk_context_last_error": (ctypes.c_char_p, [handle]),
    "spk_context_device_info": (c_status, [handle, ctypes.POINTER(DeviceInfo)]),
    "spk_tensor_create_typed": (c_status, [handle, ctypes.c_int, ctypes.c_int, _i64p, ctypes.POINTER(handle)]),
    "spk_tensor_destroy": (None, [handle]),
    "spk_tensor_upload": (c_status, [handle, _f32p, ctypes.c_int64]),
    "spk_tensor_download": (c_status, [handle, _f32p, ctypes.c_int64]),
    "spk_softpick": (c_status, [handle, handle, ctypes.c_int, handle]),
    "spk_normalize": (c_status, [handle, handle, ctypes.c_int, ctypes.c_int, handle]),
    "spk_normalize_backward": (c_status, [handle, handle, handle, ctypes.c_int, ctypes.c_int, handle]),
    "spk_matmul": (c_status, [handle, handle, handle, ctypes.POINTER(MatmulDesc), handle]),
    "spk_layer_norm": (c_status, [handle, handle, handle, handle, ctypes.POINTER(LayerNormDesc), handle]),
    "spk_softpick_attention": (c_status, [handle, handle, handle, handle, ctypes.c_int, ctypes.c_bool, handle]),
    "spk_attention": (c_status, [handle, ctypes.POINTER(AttentionDesc), handle, handle, handle, handle]),
    "spk_model_config_default": (ModelConfig, [ctypes.c_int]),
    "spk_model_create": (c_status, [handle, ctypes.POINTER(ModelConfig), ctypes.POINTER(handle)]),
    "spk_model_create_from_safetensors": (c_status, [handle, ctypes.c_char_p, ctypes.POINTER(ModelConfig),
                                                     ctypes.POINTER(handle)]),
    "spk_model_destroy": (None, [handle]),
    "spk_model_get_config": (ctypes.POINTER(ModelConfig), [handle]),
    "spk_model_set_output_mode": (c_status, [handle, ctypes.c_int]),
    "spk_model_init_random": (c_status, [handle, ctypes.c_uint64]),
    "spk_model_output_shape": (ctypes.c_int64, [handle, ctypes.c_int64, ctypes.c_int64, ctypes.POINTER(ctypes.c_int),
                                                _i64p]),
    "spk_model_forward": (c_status, [handle, _f32p, ctypes.c_int64, ctypes.c_int64, _f32p]),
    "spk_model_analyze": (c_status, [handle, _f32p, ctypes.c_int64, ctypes.c_int64, ctypes.POINTER(HeadAnalysis),
                                     ctypes.POINTER(LayerAnalysis)]),
    "spk_model_set_data_parallel": (c_status, [handle, ctypes.POINTER(DataParallel)]),
    "spk_model_memory": (c_status, [handle, ctypes.POINTER(ModelMemory)]),
    "spk_model_save_safetensors": (c_status, [handle, ctypes.c_char_p]),
    "spk_model_save_state": (c_status, [handle, ctypes.c_char_p]),
    "spk_model_load_state": (c_status, [handle, ctypes.c_char_p]),
    "spk_model_zero_grad": (c_status, [handle]),
    "spk_model_grad": (c_status, [handle, _f32p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int, _f32p, _f32p]),
    "spk_model_get_gradient": (c_status, [handle, ctypes.c_char_p, _f32p, ctypes.c_int64]),
    "spk_model_get_parameter": (c_status, [handle, ctypes.c_char_p, _f32p, ctypes.c_int64]),
    "spk_model_parameter_count": (ctypes.c_int, [handle]),
    "spk_model_parameter_info": (c_status, [handle, ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t,
                                            ctypes.POINTER(ctypes.c_int), _i64p]),
    "spk_optimizer_defaults": (OptimizerDesc, [ctypes.c_int]),
    "spk_model_set_dropout": (c_status, [handle, ctypes.c_float, ctypes.c_uint64]),
    "spk_model_get_step": (c_status, [handle, ctypes.POINTER(ctypes.c_int64)]),
    "spk_model_train_step": (c_status, [handle, _f32p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int, _f32p,
                                        ctypes.POINTER(OptimizerDesc), _f32p]),
}
for _name, (_restype, _argtypes) in _PROTOTYPES.items():
    _fn = getattr(lib, _name)
    _fn.restype, _fn.argtypes = _restype, _argtypes


class Error(Exception):
    """A call into the library failed. `status` is the status's name (e.g. "SPK_ERROR_SHAPE"), the
    message the library's own."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def check(status, ctx_handle=None, what=""):
    """Raises Error for a status other than SPK_OK, with the context's last message when there is one."""
    if status == 0:
        return
    name = lib.spk_status_name(status).decode()
    message = lib.spk_context_last_error(ctx_handle).decode() if ctx_handle else ""
    if not message:
        message = lib.spk_status_string(status).decode()
    raise Error(name, "%s%s" % (what + ": " if what else "", message))


def floats(array):
    """A C float pointer to a contiguous float32 numpy array (which the caller keeps alive)."""
    return array.ctypes.data_as(_f32p)
