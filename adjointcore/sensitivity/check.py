"""Gradient check for solves: finite differences on a *frozen* step sequence.

Perturbing the input of an adaptive solve changes its accepted grid, so a finite difference of
``solve`` itself mixes the derivative with jumps of the controller. This check solves once,
freezes the accepted grid, and compares the discrete adjoint with central differences and a
Taylor test of the replayed discrete map on that grid (DESIGN.md section 4).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

import solvers

from ..backend import Array
from ..errors import check_positive_int
from ..gradcheck import central_difference, relative_error, taylor_test
from ._discrete_inputs import check_differentiable_field
from .discrete import discrete_adjoint, grid_forward

__all__ = ["SolveGradientReport", "check_solve_gradient"]


class SolveGradientReport(NamedTuple):
    """Outcome of :func:`check_solve_gradient`.

    Attributes
    ----------
    passed : bool
    figures : dict
        ``fd_y0``, ``fd_params`` (relative errors of the adjoint against central differences),
        ``taylor_min_rate`` (first-order remainder rate on a joint direction).
    tolerances : dict
    grid : ndarray
        The frozen grid the check used.
    """

    passed: bool
    figures: dict[str, float]
    tolerances: dict[str, float]
    grid: NDArray[np.float64]


def check_solve_gradient(field: Any, y0: Array, params: Array | None, t_span: tuple[float, float],
                         *, method: str = "dopri5", rtol: float = 1e-6, atol: float = 1e-9,
                         steps: int | None = None, method_options: dict[str, Any] | None = None,
                         seed: int = 0, fd_tol: float = 1e-8,
                         rate_tol: float = 1.9) -> SolveGradientReport:
    """Check the discrete adjoint of a solve of ``field`` against FD on the frozen grid.

    Parameters
    ----------
    field : vector field with ``forward``/``vjp``
    y0 : ndarray
    params : ndarray or None
    t_span : (float, float)
    method, rtol, atol, steps, method_options
        As for :func:`solvers.solve` (``steps`` for fixed-step and multistep methods).
    seed : int
        Seeds the cotangent and the directions.
    fd_tol : float
        Relative tolerance for the FD comparison (float64: 1e-8; central differences reach
        ~1e-10 at the automatic step, so 1e-8 leaves two digits for conditioning).
    rate_tol : float
        Minimal Taylor rate.

    Returns
    -------
    SolveGradientReport
    """
    check_differentiable_field(field)
    if steps is None:
        grid = solvers.solve(field, y0, t_span, params=params, method=method, rtol=rtol,
                             atol=atol).grid
    else:
        steps = check_positive_int("steps", steps)
        grid = np.linspace(float(t_span[0]), float(t_span[1]), steps + 1)
    rng = np.random.default_rng(seed)
    y_bar = rng.standard_normal(y0.shape).astype(y0.dtype)

    def loss(y0_: Array, params_: Array | None) -> float:
        y1 = grid_forward(field, y0_, params_, grid, method, method_options)[0][-1]
        return float(np.sum(y_bar * y1))

    g = discrete_adjoint(field, y0, params, grid, y_bar, method=method,
                         method_options=method_options)
    figures = {}
    u = rng.standard_normal(y0.shape)
    fd = central_difference(lambda z: loss(z, params), y0, u)
    figures["fd_y0"] = relative_error(float(np.sum(g.y0_bar * u)), fd)
    if params is not None and params.size:
        v = rng.standard_normal(params.shape)
        fd = central_difference(lambda p: loss(y0, p), params, v)
        figures["fd_params"] = relative_error(float(g.params_bar @ v), fd)
        joint = np.concatenate([y0.ravel(), params])
        d_joint = np.concatenate([u.ravel(), v])
        grad = np.concatenate([np.ravel(g.y0_bar), g.params_bar])
        n_y = y0.size

        def joint_loss(z: Array) -> float:
            return loss(z[:n_y].reshape(y0.shape), z[n_y:])
        figures["taylor_min_rate"] = taylor_test(joint_loss, grad, joint, d_joint).min_rate
    else:
        figures["taylor_min_rate"] = taylor_test(lambda z: loss(z, params), g.y0_bar, y0,
                                                 u).min_rate
    tolerances = {"fd_y0": fd_tol, "fd_params": fd_tol, "taylor_min_rate": rate_tol}
    passed = all(figures[k] <= fd_tol for k in ("fd_y0", "fd_params") if k in figures) and \
        figures["taylor_min_rate"] >= rate_tol
    return SolveGradientReport(bool(passed), figures, tolerances, grid)
