"""Array backend: NumPy or CuPy, chosen from the arrays themselves.

Every kernel starts with ``xp = get_array_module(x)`` and allocates with ``xp``.
Importing this module never imports CuPy unless it is installed, and never fails
without it.

Dtype policy
------------
float64 is the default (gradient verification); float32 is supported everywhere.
complex64/complex128 are accepted by layers whose forward is analytic, for the
complex-step derivative (see :mod:`adjointcore.gradcheck`).
"""
from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

# The annotation for a NumPy, CuPy or emulated-device array, ``Any``: the array libraries' stubs
# disagree and the code is backend-generic (``xp = get_array_module(x)``). Defined once, in
# ``solvers`` (the bottom of the package DAG, which imports nothing from this repository), and
# re-exported here for adjointcore, nets and user layers: ``from adjointcore.backend import Array``.
from solvers import Array as Array

__all__ = [
    "FLOAT_DTYPES", "COMPLEX_DTYPES", "DEFAULT_DTYPE",
    "cupy_available", "gpu_available", "get_array_module", "is_cupy_array",
    "to_device", "to_host", "as_dtype", "real_dtype",
]

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
COMPLEX_DTYPES = (np.dtype(np.complex64), np.dtype(np.complex128))
DEFAULT_DTYPE = np.dtype(np.float64)


def cupy_available() -> bool:
    """True when the ``cupy`` package can be imported (a GPU may still be absent)."""
    return importlib.util.find_spec("cupy") is not None


def gpu_available() -> bool:
    """True when CuPy imports and at least one CUDA device answers."""
    if not cupy_available():
        return False
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 - any CUDA/driver failure means "no GPU"
        return False


def is_cupy_array(x: object) -> bool:
    """True when ``x`` is a ``cupy.ndarray`` (checked without importing CuPy)."""
    return type(x).__module__.split(".")[0] == "cupy"


def get_array_module(*arrays: Any) -> Any:
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``.

    An array type may name its module in the class attribute ``__xp__`` (the device emulation
    of :mod:`adjointcore.device_emulation` does); it is returned for such arrays.

    Parameters
    ----------
    *arrays : array_like or None
        Arrays (``None`` entries are ignored).

    Returns
    -------
    module
        ``numpy`` or ``cupy``.
    """
    if len(arrays) == 1 and type(arrays[0]) is np.ndarray:   # the common case, no probing
        return np
    for x in arrays:
        if x is None:
            continue
        module = getattr(type(x), "__xp__", None)     # an array type naming its module
        if module is not None:
            return module
        if is_cupy_array(x):
            import cupy
            return cupy
    return np


def to_device(x: Any, device: str = "gpu") -> Any:
    """Move an array (or a tuple/list/dict of arrays) to ``device`` ("gpu" or "cpu").

    Raises
    ------
    ValueError
        If ``device`` is not "gpu"/"cuda"/"cpu"/"host".
    RuntimeError
        If ``device == "gpu"`` and CuPy is not installed.
    """
    if isinstance(x, dict):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(to_device(v, device) for v in x)
    if x is None:
        return None
    if device in ("cpu", "host"):
        return to_host(x)
    if device not in ("gpu", "cuda"):
        raise ValueError(f"`device` must be 'gpu' or 'cpu', got {device!r}.")
    if not cupy_available():
        raise RuntimeError(
            "`device='gpu'` needs CuPy; install it with `pip install adjointcore[gpu]` "
            "(cupy-cuda12x) on a machine with a CUDA GPU.")
    import cupy
    return cupy.asarray(x)


def to_host(x: Any) -> Any:
    """Return a NumPy copy/view of ``x`` (CuPy arrays are copied to the host)."""
    if isinstance(x, dict):
        return {k: to_host(v) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        return type(x)(to_host(v) for v in x)
    if x is None:
        return None
    if is_cupy_array(x) or hasattr(type(x), "__xp__"):
        return x.get()
    return np.asarray(x)


def as_dtype(dtype: DTypeLike) -> np.dtype:
    """Validate and normalise a floating dtype (float32/float64; complex for complex step).

    Raises
    ------
    TypeError
        Naming the dtype and listing the supported ones.
    """
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"`dtype` must be a NumPy dtype, got {dtype!r}; use np.float64 or "
                        f"np.float32.") from exc
    if dt not in FLOAT_DTYPES + COMPLEX_DTYPES:
        raise TypeError(f"`dtype` must be float32 or float64 (complex64/complex128 for the "
                        f"complex step), got {dt}; cast with x.astype(np.float64).")
    return dt


def real_dtype(dtype: DTypeLike) -> np.dtype:
    """Real counterpart of a (possibly complex) dtype: complex128 -> float64."""
    return np.empty(0, dtype=dtype).real.dtype
