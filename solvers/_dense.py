"""Dense output: a piecewise polynomial through the accepted steps.

On step ``n`` (from ``grid[n]`` with size ``h_n``) the interpolant is

    y(grid[n] + theta h_n) = ys[n] + h_n sum_{q=1..m} theta**q coeffs[n, q-1],   0 <= theta <= 1

which covers both a tableau's continuous extension (``coeffs = dense.T @ k``; Dopri5 and
Tsit5, order 4) and the cubic Hermite interpolant from ``(y0, y1, f0, f1)`` (order 3).

References
----------
Hairer, Norsett & Wanner, *Solving ODEs I*, sec. II.6 (continuous Runge-Kutta methods, Hermite
interpolation); Shampine, "Interpolation for Runge-Kutta methods", SIAM J. Numer. Anal. 22
(1985) 1014-1027.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from ._tableau import ButcherTableau
from ._xp import Array, get_array_module, real_dtype, to_host_float64


def tableau_coefficients(tab: ButcherTableau, h: float, k: Array) -> Array:
    """Interpolation coefficients of one step from a tableau's ``dense`` matrix.

    Parameters
    ----------
    tab : ButcherTableau with ``dense`` of shape (s, m)
    h : float
    k : array, shape ``(s, *y.shape)``

    Returns
    -------
    array, shape (m, *y.shape)
    """
    xp = get_array_module(k)
    return xp.tensordot(_dense_matrix(tab, xp, real_dtype(k.dtype)), k, axes=1)


@lru_cache(maxsize=64)
def _dense_matrix(tab: ButcherTableau, xp: Any, dtype: DTypeLike) -> Array:
    """``tab.dense.T`` as an ``xp`` array of ``dtype``, cast once per module/dtype (no host to
    device copy per step)."""
    # called for tableaux with `dense` only
    return xp.asarray(tab.dense.T, dtype=dtype)  # type: ignore[union-attr]


def hermite_coefficients(h: float, y0: Array, y1: Array, f0: Array, f1: Array) -> Array:
    """Cubic Hermite coefficients (powers theta^1..theta^3), shape (3, *y.shape).

    Matches ``y0, y1`` and the slopes ``f0, f1`` at the two ends of a step of size ``h``.
    """
    xp = get_array_module(y0)
    slope = (y1 - y0) / h
    return xp.stack([f0, 3.0 * slope - 2.0 * f0 - f1, f0 + f1 - 2.0 * slope])


@dataclass(frozen=True, eq=False)
class DenseOutput:
    """Evaluate a solve anywhere in its span: ``sol(t)``.

    Attributes
    ----------
    grid : ndarray, shape (n + 1,), float64 host
        Accepted step times (monotone; decreasing for backward solves).
    h : ndarray, shape (n,), float64 host
        Step sizes used (``grid[i] + h[i] == grid[i + 1]`` up to rounding).
    ys : array, shape ``(n + 1, *y.shape)``
        States on the grid.
    coeffs : array, shape ``(n, m, *y.shape)``
        Per-step polynomial coefficients (see module docstring).
    """

    grid: NDArray[np.float64]
    h: NDArray[np.float64]
    ys: Array
    coeffs: Array

    def __call__(self, t: Any) -> Array:
        """Interpolated state at ``t`` (scalar -> ``y.shape``; 1-D -> ``(len(t), *y.shape)``).

        Raises
        ------
        ValueError
            If some ``t`` lies outside ``[grid[0], grid[-1]]``.
        """
        try:
            t_arr = to_host_float64(t)
        except (TypeError, ValueError):
            raise TypeError(f"sol(t): `t` must be a real scalar or 1-D array of times, got "
                            f"{t!r}") from None
        times = np.atleast_1d(t_arr)
        if times.ndim != 1:
            raise ValueError(f"sol(t): `t` must be a scalar or 1-D, got shape {t_arr.shape}")
        sign = 1.0 if self.grid[-1] >= self.grid[0] else -1.0
        g, tt = sign * self.grid, sign * times
        if np.any(~np.isfinite(tt)) or np.any(tt < g[0]) or np.any(tt > g[-1]):
            raise ValueError(f"sol(t): `t` must lie in the solved span [{self.grid[0]!r}, "
                             f"{self.grid[-1]!r}]; got values in [{times.min()!r}, "
                             f"{times.max()!r}]")
        out = self._evaluate(g, tt, times)
        return out[0] if t_arr.ndim == 0 else out

    def _evaluate(self, g: NDArray[np.float64], tt: NDArray[np.float64],
                  times: NDArray[np.float64]) -> Array:
        xp = get_array_module(self.ys)
        n = len(self.h)
        hit = np.searchsorted(g, tt, side="left")
        on_grid = (hit < len(g)) & (g[np.minimum(hit, len(g) - 1)] == tt)
        if n == 0:
            return self.ys[xp.zeros(len(tt), dtype=xp.int64)]
        idx = np.clip(np.searchsorted(g, tt, side="right") - 1, 0, n - 1)
        theta = (times - self.grid[idx]) / self.h[idx]
        m = self.coeffs.shape[1]
        weights = self.h[idx, None] * theta[:, None] ** np.arange(1, m + 1)      # (T, m)
        if len(tt) == 1 and xp is not np:
            return self._evaluate_one(int(hit[0]) if on_grid[0] else None, int(idx[0]),
                                      weights[0])[None]
        w = xp.asarray(weights, dtype=real_dtype(self.ys.dtype))
        w = w.reshape(w.shape + (1,) * (self.ys.ndim - 1))
        idx_x = xp.asarray(idx)
        out = self.ys[idx_x] + (w * self.coeffs[idx_x]).sum(axis=1)
        if np.any(on_grid):
            rows = np.nonzero(on_grid)[0]
            out[xp.asarray(rows)] = self.ys[xp.asarray(hit[rows])]
        return out

    def _evaluate_one(self, grid_index: int | None, step: int,
                      weights: NDArray[np.float64]) -> Array:
        """One time on a device (the interpolated adjoint reads one ``y(t)`` per stage): host
        scalars and Python indices only, so nothing is copied host to device. The same
        products and left-to-right sum over the coefficients as the batched path."""
        if grid_index is not None:
            return self.ys[grid_index]
        scalar = real_dtype(self.ys.dtype).type
        coeffs = self.coeffs[step]
        acc = scalar(weights[0]) * coeffs[0]
        for j in range(1, coeffs.shape[0]):
            acc = acc + scalar(weights[j]) * coeffs[j]
        return self.ys[step] + acc
