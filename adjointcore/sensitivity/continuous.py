"""Continuous (optimise-then-discretise) adjoint gradients of a trajectory loss.

For ``y' = f(t, y, params)``, ``y(t0) = y0`` and a loss on the whole trajectory
``L = sum_k l_k(y(t_k))`` at observation times ``t_obs``, the adjoint ``a(t) = dL/dy(t)`` solves
``a' = -(df/dy)^T a`` backwards and jumps by ``dl_k/dy(t_k)`` at each ``t_k`` (the loss term
``l_k`` is a point source in the Lagrangian). The backward solve therefore runs interval by
interval, from the last observation time down to ``t0``:

    a(t_K) = y_bars[K-1];  on (t_{k-1}, t_k): augmented system of :mod:`._augmented`;
    a(t_{k-1}) += y_bars[k-1];   dL/dy0 = a(t0),  dL/dparams = a_params(t0).

The result approximates the gradient of the *exact* ODE solution's loss; it is not the gradient
of the discrete forward map (that is the discrete adjoint) and its error shrinks only as both the
forward and the adjoint tolerances tighten. Backsolve can be unstable for contracting dynamics,
where reconstructing ``y`` backwards amplifies the forward error (Gholami, Keutzer & Biros 2019);
the interpolated variant avoids it.

References
----------
R. T. Q. Chen et al., "Neural ordinary differential equations", NeurIPS 2018.
A. Gholami, K. Keutzer, G. Biros, "ANODE: unconditionally accurate memory-efficient gradients for
neural ODEs", IJCAI 2019, arXiv:1902.10298.
P. Kidger, R. T. Q. Chen, T. Lyons, "'Hey, that's not an ODE'", ICML 2021, arXiv:2009.09457.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

import solvers
from solvers import Work

from ..backend import Array, get_array_module, to_host
from ..errors import ShapeError, check_array
from ._augmented import (
    VARIANTS,
    AugmentedField,
    AugmentedLayout,
    SemiNorm,
    augmented_layout,
    pack_augmented,
    unpack_augmented,
)
from ._cotangents import check_cotangents

__all__ = ["ADJOINT_OPTIONS", "ContinuousGradient", "continuous_adjoint"]

#: Keywords of :func:`continuous_adjoint` that set the backward solve.
ADJOINT_OPTIONS = ("adjoint_method", "adjoint_rtol", "adjoint_atol", "adjoint_steps", "seminorm",
                   "reset_state")


class ContinuousGradient(NamedTuple):
    """Result of :func:`continuous_adjoint`.

    Attributes
    ----------
    y0_bar : ndarray, shape of ``y0``
        ``dL/dy0``.
    params_bar : ndarray, shape (n_params,)
        ``dL/dparams`` (length 0 for a parameter-free field).
    stats : solvers.Work
        ``forward_nfe``, ``n_accepted``, ``n_rejected`` of the forward solve (that of
        ``forward_solution`` if given); ``backward_nfe`` (= ``vjps``: each evaluation of the
        augmented system is one field evaluation and one VJP), ``backward_accepted``,
        ``backward_rejected`` and ``n_intervals`` of the backward solves; ``dense_evals``: the
        interpolated variant's reads of the forward dense output (one per evaluation).
    y0_reconstructed : ndarray or None
        Backsolve only: the state the backward solve reconstructed at ``t0`` (compare with
        ``y0`` to measure the reconstruction error); None for the interpolated variant.
    """

    y0_bar: Array
    params_bar: Array
    stats: Work
    y0_reconstructed: Array | None = None


def _forward_work(solution: Any) -> Work:
    """The forward solve's work (a duck-typed solution's stats may be a mapping)."""
    stats = solution.stats
    if isinstance(stats, Work):
        return stats
    get = stats.get if isinstance(stats, dict) else lambda k, d: getattr(stats, k, d)
    return Work(forward_nfe=int(get("nfe", 0)), n_accepted=int(get("n_accepted", 0)),
                n_rejected=int(get("n_rejected", 0)))


def _check_times(t_obs: ArrayLike, t0: float | None) -> tuple[float, NDArray[np.float64]]:
    """Validate ``t_obs`` (strictly monotone 1-D) and ``t0``; return host float64 knots."""
    if (isinstance(t_obs, (list, tuple)) and len(t_obs) == 1 and type(t_obs[0]) is float
            and type(t0) is float):         # one end time after t0 (an ODE block): no arrays
        end = t_obs[0]
        if math.isfinite(end) and math.isfinite(t0) and end != t0:
            return t0, np.array(t_obs, dtype=np.float64)
    times = np.asarray(to_host(t_obs), dtype=np.float64)
    if times.ndim != 1 or times.size == 0:
        raise ShapeError(f"`t_obs` must be a non-empty 1-D array of observation times, got shape "
                         f"{times.shape}; pass e.g. np.linspace(t0, t1, K).")
    if not np.all(np.isfinite(times)):
        raise ValueError(f"`t_obs` must be finite, got {times}.")
    steps = np.diff(times)
    if times.size > 1 and not (np.all(steps > 0) or np.all(steps < 0)):
        raise ValueError(f"`t_obs` must be strictly monotone (all increasing or all decreasing), "
                         f"got {times}; sort it and merge repeated times by summing their y_bars.")
    start = times[0] if t0 is None else float(t0)
    if t0 is not None and times[0] != start:
        direction = np.sign(times[-1] - start)
        if np.any(np.sign(times - start) != direction):
            raise ValueError(f"`t0`={t0!r} must lie before all of `t_obs` in the direction of "
                             f"integration, got t_obs={times}; observations at t0 go into "
                             f"t_obs[0] == t0.")
    if times[-1] == start:
        raise ValueError(f"the trajectory from t0={start!r} to t_obs[-1]={times[-1]!r} has zero "
                         f"length; pass `t0` or more observation times.")
    return start, times


def _step_options(steps: int | None, rtol: Any, atol: Any, norm: Callable[[Array], Any] | None,
                  prefix: str = "") -> dict[str, Any]:
    """Keywords for :func:`solvers.solve`: fixed ``steps`` or adaptive tolerances and norm."""
    if steps is not None:
        given = [f"`{prefix}{n}`" for n, v in (("rtol", rtol), ("atol", atol)) if v is not None]
        if norm is not None:
            given.append("`seminorm=True`")
        if given:
            raise ValueError(f"{', '.join(given)} only apply to adaptive solves but fixed "
                             f"`{prefix}steps`={steps!r} was given; drop one of them.")
        return dict(steps=steps)
    return dict(rtol=1e-6 if rtol is None else rtol, atol=1e-9 if atol is None else atol,
                norm=norm)


def _check_covers(solution: Any, start: float, end: float) -> None:
    """Raise unless the forward ``solution`` spans ``[start, end]`` (either direction)."""
    grid = getattr(solution, "grid", None)
    if grid is None:           # duck-typed solution without its step grid: nothing to check
        return
    grid = np.asarray(grid, dtype=np.float64)
    lo, hi = min(grid[0], grid[-1]), max(grid[0], grid[-1])
    if not (lo <= min(start, end) and max(start, end) <= hi):
        raise ValueError(f"`forward_solution` spans [{float(grid[0])!r}, {float(grid[-1])!r}] "
                         f"but the adjoint needs [{start!r}, {end!r}] (t0 to the last "
                         f"observation time); solve over that span or leave forward_solution=None.")


def _adjoint_atol(adjoint_atol: Any, atol: Any, layout: AugmentedLayout) -> Any:
    """Absolute tolerance of adaptive backward solves: ``adjoint_atol``, else the forward ``atol``.

    An array tolerance must match the flat augmented state; a forward ``atol`` array (shaped
    like ``y``) cannot be inherited, since the backward state has other blocks.
    """
    if adjoint_atol is None and atol is not None and np.ndim(atol) > 0:
        raise ValueError(f"the forward `atol` is an array of shape {np.shape(atol)} and cannot "
                         f"be reused for the backward state of {layout.size} entries; pass "
                         f"`adjoint_atol` (a float, or solvers.block_tolerance([...], [...]) over "
                         f"the blocks of AugmentedLayout {layout}).")
    if adjoint_atol is not None and np.ndim(adjoint_atol) > 0 and \
            np.shape(adjoint_atol) != (layout.size,):
        raise ValueError(f"`adjoint_atol` must be a float or an array of shape ({layout.size},) "
                         f"(the flat augmented state: {'y, ' if layout.with_state else ''}a, "
                         f"a_params), got shape {np.shape(adjoint_atol)}; build it with "
                         f"solvers.block_tolerance.")
    return adjoint_atol if adjoint_atol is not None else atol


def _trajectory(solution: Any) -> Callable[[float], Array]:
    """``t -> y(t)`` from ``solution.sol``, tolerant of rounding at the ends of the span.

    Fixed-step backward solves place their last stage at ``t_k + n h``, which may overshoot
    ``t_k`` by an ulp or so; such times are moved onto the end of the forward span (the dense
    output rejects anything outside it). Anything further out is passed on and rejected.
    """
    grid = getattr(solution, "grid", None)
    if grid is None:
        return solution.sol
    lo, hi = float(min(grid[0], grid[-1])), float(max(grid[0], grid[-1]))
    slack = 64 * np.finfo(np.float64).eps * max(abs(lo), abs(hi), hi - lo)

    def y_at(t: float) -> Array:
        t = float(t)
        if lo - slack <= t < lo:
            t = lo
        elif hi < t <= hi + slack:
            t = hi
        return solution.sol(t)
    return y_at


def _sampled_at(solution: Any, times: NDArray[np.float64]) -> bool:
    """True when ``solution.ts`` are exactly ``times`` (its ``ys`` are the states there)."""
    ts = getattr(solution, "ts", None)
    if ts is None:
        return False
    ts = np.asarray(to_host(ts))
    return ts.shape == times.shape and bool(np.array_equal(ts, times))


def _states_at(solution: Any, times: NDArray[np.float64],
               y_shape: Sequence[int]) -> Sequence[Array]:
    """Forward states at ``times``: ``solution.ys`` when it was sampled there, else ``sol(t)``."""
    if _sampled_at(solution, times):
        return [solution.ys[k] for k in range(times.size)]
    return [solution.sol(float(t)).reshape(y_shape) for t in times]


def continuous_adjoint(field: Any, y0: Array, params: Array | None, t_obs: ArrayLike, y_bars: Array,
                       *, t0: float | None = None, variant: str = "interpolated",
                       method: str = "dopri5", rtol: Any = None, atol: Any = None,
                       adjoint_method: str | None = None, adjoint_rtol: Any = None,
                       adjoint_atol: Any = None, seminorm: bool = False, reset_state: bool = True,
                       forward_solution: Any = None, steps: int | None = None,
                       adjoint_steps: int | None = None,
                       max_steps: int = 10_000) -> ContinuousGradient:
    """Gradient of ``L = sum_k l_k(y(t_obs[k]))`` by the continuous adjoint.

    Parameters
    ----------
    field : vector field
        ``forward(t, y, params) -> (dy, cache)``, ``vjp(cache, dy_bar, need_params) -> (y_bar,
        params_bar, t_bar)``.
    y0 : ndarray, any shape (e.g. ``(d,)`` or ``(N, d)``)
        Initial state at ``t0``.
    params : ndarray, shape (n_params,), or None
        Flat parameters of ``field``.
    t_obs : array_like, shape (K,)
        Strictly monotone observation times; the last one is the end of the trajectory.
    y_bars : ndarray, shape ``(K, *y0.shape)``
        Cotangents ``dl_k/dy(t_obs[k])``; same backend as ``y0``, cast to ``y0.dtype``.
    t0 : float, optional
        Start time; defaults to ``t_obs[0]`` (then ``y_bars[0]`` is the cotangent of ``y0``).
    variant : {"interpolated", "backsolve"}
        Where the backward solve gets ``y(t)``: the forward dense output, or a backwards
        reconstruction (Chen et al.).
    method, rtol, atol, steps, max_steps
        Forward solve (passed to :func:`solvers.solve`). ``rtol``/``atol`` default to 1e-6/1e-9
        and apply only to adaptive solves; ``steps`` (int) asks for that many equal fixed steps.
    adjoint_method, adjoint_rtol, adjoint_atol, adjoint_steps
        Backward solve of *each* interval; default to the forward ones (``adjoint_steps`` fixed
        steps per interval; the forward ``steps`` are inherited only when ``adjoint_method`` is
        None, the forward tolerances only by an adaptive backward solve). ``adjoint_atol`` may
        be an array of the flat augmented state's length (see :class:`AugmentedLayout` and
        :func:`solvers.block_tolerance`) to weight the blocks differently; a forward ``atol``
        array is not inherited (give ``adjoint_atol``).
    seminorm : bool
        Leave the ``a_params`` channels out of the backward error norm (Kidger et al. 2021);
        adaptive backward solves only.
    reset_state : bool
        Backsolve only: at each interior observation time restart the reconstructed ``y`` from the
        stored forward value (as torchdiffeq does). ``False`` reconstructs ``y`` purely backwards
        over the whole trajectory.
    forward_solution : Solution, optional
        A forward solve already done (must provide ``sol(t)`` dense output and cover
        ``[t0, t_obs[-1]]``); otherwise it is computed here with ``t_eval=t_obs``.

    Returns
    -------
    ContinuousGradient
        ``(y0_bar, params_bar, stats, y0_reconstructed)``.

    Raises
    ------
    ValueError, ShapeError
        Unknown ``variant``, non-monotone ``t_obs``, ``y_bars`` of the wrong shape.
    solvers.SolveError
        A forward or backward solve failed.
    """
    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {VARIANTS}, got {variant!r}.")
    check_array("y0", y0)
    xp = get_array_module(y0)
    start, times = _check_times(t_obs, t0)
    n_obs = times.size
    y_bars = check_cotangents(
        "y_bars", y_bars, y0, (n_obs, *y0.shape),
        fix=f"Stack one cotangent dl_k/dy per observation time: shape ({n_obs}, "
            f"{', '.join(map(str, y0.shape))}).")
    if params is not None:
        check_array("params", params, ndim=1, fix="Pass the flat parameter vector (layer.init).")
    n_params = 0 if params is None else int(params.shape[0])

    backsolve = variant == "backsolve"
    if forward_solution is None:
        # Backsolve needs the states at t_obs only: no dense output, so the forward solve keeps
        # no trajectory (memory independent of the number of steps).
        forward_solution = solvers.solve(field, y0, (start, float(times[-1])), params,
                                         method=method, t_eval=times, max_steps=max_steps,
                                         dense_output=not backsolve,
                                         **_step_options(steps, rtol, atol, None))
    elif backsolve and _sampled_at(forward_solution, times):
        pass
    elif not callable(getattr(forward_solution, "sol", None)):
        raise TypeError("`forward_solution` must be a solvers.Solution with dense output `sol`; "
                        f"got {type(forward_solution).__name__}.")
    else:
        _check_covers(forward_solution, start, float(times[-1]))
    y_obs = _states_at(forward_solution, times, y0.shape)

    layout = augmented_layout(y0.shape, n_params, variant)
    aug = AugmentedField(field, layout,
                         None if layout.with_state else _trajectory(forward_solution))
    # Fixed steps are inherited only with the method; forward tolerances only by adaptive solves.
    if adjoint_steps is None and adjoint_method is None:
        adjoint_steps = steps
    adaptive = adjoint_steps is None
    options = _step_options(adjoint_steps,
                            adjoint_rtol if adjoint_rtol is not None or not adaptive else rtol,
                            adjoint_atol if not adaptive else
                            _adjoint_atol(adjoint_atol, atol, layout),
                            SemiNorm(layout.n_error) if seminorm else None, prefix="adjoint_")

    # Knots of the backward sweep: t0 first when it is not an observation time (zero cotangent).
    knots = list(times) if times[0] == start else [start, *times]
    cotangents = list(y_bars) if times[0] == start else [None, *y_bars]
    y = y_obs[-1]
    a = xp.array(y_bars[-1], copy=True)
    a_params = xp.zeros(n_params, dtype=y0.dtype)
    work = _forward_work(forward_solution)
    for k in range(len(knots) - 1, 0, -1):
        z1 = pack_augmented(layout, y, a, a_params)
        # Only the end state is kept (t_eval at the knot, no dense output): memory does not
        # grow with the number of backward steps.
        back = solvers.solve(aug, z1, (float(knots[k]), float(knots[k - 1])), params,
                             method=adjoint_method or method, max_steps=max_steps,
                             t_eval=np.array([float(knots[k - 1])]), dense_output=False,
                             **options)
        work = work + _forward_work(back).as_backward()
        y, a, a_params = unpack_augmented(layout, back.ys[-1])
        if cotangents[k - 1] is not None:
            a = a + cotangents[k - 1]
        if layout.with_state and reset_state and k - 1 > 0:
            y = y_obs[k - 1 - (len(knots) - n_obs)]

    # Dense-output reads: the states at t_obs when the forward solve did not sample them, and
    # (interpolated) one y(t) per augmented evaluation.
    reads = (0 if _sampled_at(forward_solution, times) else n_obs) + \
        (0 if layout.with_state else work.backward_nfe)
    work = work.replace(dense_evals=work.dense_evals + reads)
    params_bar = xp.array(a_params, copy=True)
    return ContinuousGradient(xp.array(a, copy=True), params_bar, work,
                              xp.array(y, copy=True) if layout.with_state else None)
