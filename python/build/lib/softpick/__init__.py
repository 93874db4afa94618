"""softpick: the softpick-vk library (softpick ops and the softpick transformer on any Vulkan
device) from Python, with numpy arrays in and out.

    import numpy as np, softpick
    with softpick.Context() as ctx:
        y = ctx.softpick(np.random.randn(4, 1000), axis=-1)

A pure-Python layer over libsoftpick.so through ctypes: the C library is the single
implementation. Errors raise softpick.Error (its `status` is the status name, e.g.
"SPK_ERROR_SHAPE"); Python-level misuse raises TypeError or ValueError.
"""
from ._lib import Error
from ._core import Context, Tensor, devices
from ._model import Model

__all__ = ["Context", "Tensor", "Model", "Error", "devices"]
