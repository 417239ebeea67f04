"""Array-module lookup for ``solvers`` (kept local: ``solvers`` imports nothing from this repo)."""
from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

#: Annotation for a NumPy, CuPy or emulated-device array (``Any``: backend-generic code).
Array = Any


def get_array_module(*arrays: Any) -> Any:
    """Return ``cupy`` if any argument is a CuPy array, the module an array type names in its
    class attribute ``__xp__`` (a device emulation), else ``numpy``."""
    if len(arrays) == 1 and type(arrays[0]) is np.ndarray:   # the common case, no probing
        return np
    for x in arrays:
        if x is None:
            continue
        module = getattr(type(x), "__xp__", None)
        if module is not None:
            return module
        if type(x).__module__.split(".")[0] == "cupy":
            import cupy
            return cupy
    return np


def real_dtype(dtype: DTypeLike) -> np.dtype[Any]:
    """Real counterpart of ``dtype`` (float32 for complex64, ...); a host-side lookup that
    allocates nothing on the device (NumPy and CuPy share dtype objects)."""
    dtype = np.dtype(dtype)
    return _REAL.get(dtype, dtype)


_REAL: dict[np.dtype[Any], np.dtype[Any]] = {np.dtype(np.complex64): np.dtype(np.float32),
         np.dtype(np.complex128): np.dtype(np.float64)}


def to_host_float64(values: Any) -> NDArray[np.float64]:
    """``values`` (scalar, sequence, NumPy or CuPy array) as a float64 NumPy array.

    Used for time arguments (``t_eval``, ``sol(t)``), which live on the host.
    """
    return np.asarray(values.get() if hasattr(values, "get") else values, dtype=np.float64)


def stack(xp: Any, arrays: list[Array]) -> Array:
    """``xp.stack(arrays)`` (equal shapes, at least one array); on the host
    ``numpy.array(arrays)``: the same values, shape and promoted dtype without ``stack``'s
    per-array bookkeeping (a solve's states, once per solve)."""
    return np.array(arrays) if xp is np else xp.stack(arrays)
