"""Complex-step directional derivative.

For ``f`` real-analytic, ``f(x + i h v) = f(x) + i h J v - h**2 J'' [v, v] / 2 + O(h**3)``, so
``Im f(x + i h v) / h = J v + O(h**2)``. There is no subtraction, hence no cancellation: with
``h = 1e-30`` the result is exact to roundoff (relative error ~ eps_mach).

The forward must be implemented with complex-safe primitives: ``abs``, ``sign``, comparisons and
conjugating dot products (``vdot``) break it silently. Layers declare ``analytic = True`` when
they are.

References
----------
W. Squire and G. Trapp, "Using complex variables to estimate derivatives of real functions",
SIAM Review 40(1):110-112, 1998.
J. R. R. A. Martins, P. Sturdza and J. J. Alonso, "The complex-step derivative approximation",
ACM TOMS 29(3):245-262, 2003.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from ..backend import Array, get_array_module

__all__ = ["complex_step", "complex_dtype"]


def complex_dtype(dtype: DTypeLike) -> np.dtype:
    """Complex dtype of matching precision (float32 -> complex64, float64 -> complex128)."""
    return np.result_type(dtype, np.complex64)


def complex_step(fun: Callable[[Array], Any], x: Array, v: Array, h: float = 1e-30) -> Any:
    """Directional derivative ``Im(fun(x + i h v)) / h`` of a real-analytic ``fun``.

    Parameters
    ----------
    fun : callable
        ``fun(z) -> array or scalar``; must accept complex ``z`` and propagate the imaginary
        part (no ``abs``/``sign``/``vdot``).
    x : ndarray
        Real point of differentiation.
    v : ndarray, shape of ``x``
        Real direction.
    h : float
        Imaginary step; any tiny positive value works (1e-30 keeps ``h**2`` below every
        representable float64 relative change).

    Returns
    -------
    ndarray or float
        ``J(x) v`` with the shape of ``fun(x)``, real.

    Raises
    ------
    ValueError
        If ``v`` has the wrong shape or ``h`` is not positive.
    TypeError
        If ``fun`` returns a real array (it discarded the imaginary part, so the layer is not
        complex-safe: check ``abs``, ``sign``, ``astype(float)``).
    """
    if not hasattr(v, "shape") or tuple(v.shape) != tuple(x.shape):
        raise ValueError(f"direction `v` must have the shape of `x` {tuple(x.shape)}, got "
                         f"{getattr(v, 'shape', type(v).__name__)}.")
    if not np.isfinite(h) or h <= 0:
        raise ValueError(f"`h` must be a tiny positive step such as 1e-30, got {h!r}.")
    xp = get_array_module(x, v)
    cdt = complex_dtype(x.dtype)
    z = x.astype(cdt) + (1j * h) * v.astype(cdt)
    out = fun(z)
    if not xp.iscomplexobj(out):
        raise TypeError(f"`fun` returned a real {getattr(out, 'dtype', type(out).__name__)} "
                        f"value for complex input, so the complex step cannot see its "
                        f"derivative; make the forward complex-safe or use central_difference.")
    return xp.imag(out) / h
