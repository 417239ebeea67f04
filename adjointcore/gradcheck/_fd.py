"""Finite-difference directional derivatives and the relative-error measure used by gradcheck.

The central difference ``(f(x + eps v) - f(x - eps v)) / (2 eps)`` has truncation error
``O(eps**2 |f'''|)`` and roundoff error ``O(eps_mach |f| / eps)``; balancing them gives
``eps ~ eps_mach**(1/3)`` in the units of ``x`` (about 6e-6 in float64, 5e-3 in float32) and a
best attainable relative error of about ``eps_mach**(2/3)`` (1e-11 / 2e-5).

The fourth-order (Richardson) difference

    (8 [f(x + h v) - f(x - h v)] - [f(x + 2h v) - f(x - 2h v)]) / (12 h)

has truncation error ``O(h**4)`` and is balanced at ``h ~ eps_mach**(1/5)`` (7e-4 in float64),
reaching about ``eps_mach**(4/5)`` (3e-13). It serves as the Jacobian-vector product of the
dot-product test for layers whose forward is not analytic (no complex step).

References
----------
J. Nocedal and S. J. Wright, *Numerical Optimization*, 2nd ed., Springer, 2006, sec. 8.1.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from ..backend import Array, get_array_module, real_dtype
from ._dot import _norm

__all__ = ["auto_step", "central_difference", "richardson_difference", "relative_error",
           "machine_eps"]


def machine_eps(dtype: DTypeLike) -> float:
    """Machine epsilon of the real counterpart of ``dtype`` (float32: 1.2e-7, float64: 2.2e-16)."""
    return float(np.finfo(real_dtype(dtype)).eps)


def _inf_norm(a: Array) -> float:
    xp = get_array_module(a)
    return float(xp.max(xp.abs(a))) if a.size else 0.0


def _check_direction(x: Array, v: Array) -> None:
    if not hasattr(v, "shape") or tuple(v.shape) != tuple(x.shape):
        raise ValueError(f"direction `v` must have the shape of `x` {tuple(x.shape)}, got "
                         f"{getattr(v, 'shape', type(v).__name__)}; draw it with "
                         f"rng.standard_normal(x.shape).")
    if _inf_norm(v) == 0.0:
        raise ValueError("direction `v` is zero; a directional derivative needs a nonzero "
                         "direction (normalise a random draw: v = g / np.linalg.norm(g)).")


def auto_step(x: Array, v: Array, dtype: DTypeLike | None = None, *,
              power: float = 1.0 / 3.0) -> float:
    """Step size for a central difference of ``f`` at ``x`` along ``v``.

    ``eps = eps_mach**power * max(1, |x|_inf) / |v|_inf``, so that the largest coordinate
    moves by ``eps_mach**power * max(1, |x|_inf)``.

    Parameters
    ----------
    x : ndarray
        Point of differentiation (any shape).
    v : ndarray, shape of ``x``
        Nonzero direction.
    dtype : dtype, optional
        Precision the function is evaluated in (default: ``x.dtype``).
    power : float
        ``1/3`` for second-order central differences, ``1/5`` for the fourth-order formula.

    Returns
    -------
    float
        About 6e-6 (float64) or 5e-3 (float32) for ``|x|_inf <= 1`` and ``|v|_inf = 1``.
    """
    _check_direction(x, v)
    eps_mach = machine_eps(x.dtype if dtype is None else dtype)
    return eps_mach ** power * max(1.0, _inf_norm(x)) / _inf_norm(v)


def central_difference(fun: Callable[[Array], Any], x: Array, v: Array,
                       eps: float | None = None) -> Any:
    """Directional derivative ``(fun(x + eps v) - fun(x - eps v)) / (2 eps)``.

    Parameters
    ----------
    fun : callable
        ``fun(x) -> array or scalar``.
    x : ndarray
        Point of differentiation.
    v : ndarray, shape of ``x``
        Direction (need not be normalised).
    eps : float, optional
        Step; default :func:`auto_step` ``(x, v)``.

    Returns
    -------
    ndarray or float
        Approximation of ``J(x) v`` with the shape of ``fun(x)``; error
        ``O(eps**2) + O(eps_mach / eps)``.
    """
    eps = auto_step(x, v) if eps is None else _check_eps(eps)
    _check_direction(x, v)
    return (fun(x + eps * v) - fun(x - eps * v)) / (2.0 * eps)


def richardson_difference(fun: Callable[[Array], Any], x: Array, v: Array,
                          eps: float | None = None) -> Any:
    """Fourth-order directional derivative (Richardson-extrapolated central differences).

    ``(8 [f(x+eps v) - f(x-eps v)] - [f(x+2 eps v) - f(x-2 eps v)]) / (12 eps)``; the
    default step is :func:`auto_step` with ``power=1/5`` (about 7e-4 in float64). Four
    evaluations of ``fun``; the largest coordinate moves by ``2 eps |v|_inf``.
    """
    eps = auto_step(x, v, power=0.2) if eps is None else _check_eps(eps)
    _check_direction(x, v)
    near = fun(x + eps * v) - fun(x - eps * v)
    far = fun(x + 2.0 * eps * v) - fun(x - 2.0 * eps * v)
    return (8.0 * near - far) / (12.0 * eps)


def _check_eps(eps: float) -> float:
    if not np.isfinite(eps) or eps <= 0:
        raise ValueError(f"`eps` must be a positive finite step, got {eps!r}; leave it None for "
                         f"auto_step(x, v).")
    return float(eps)


def relative_error(a: Any, b: Any, scale: float = 0.0) -> float:
    """Robust relative difference ``|a - b| / max(|a|, |b|, scale)`` of two scalars or arrays.

    Norms are Euclidean. ``scale`` is a magnitude the difference should be judged against when
    both values may be tiny through cancellation; :func:`check_layer` passes
    ``max(|y_bar| |J u|, |x_bar| |u|)``, the Cauchy-Schwarz bounds of the two inner products
    compared. Returns 0.0 when all three are zero. Norms are computed without underflow.
    """
    xp = get_array_module(a, b)
    a, b = xp.asarray(a), xp.asarray(b)
    diff = _norm(a - b)
    denom = max(_norm(a), _norm(b), float(scale))
    if denom == 0.0:
        return 0.0 if diff == 0.0 else float("inf")
    return diff / denom
