"""Argument checks of the discrete adjoint and its grid replays (private; one owner per rule).

Everything here runs once per public call, before any field evaluation: the time grid, the
observation indices and cotangents, the stepper and whether it accepts the grid, and whether
the field can be differentiated at all.
"""
from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from solvers import get_stepper

from ..backend import Array, to_host
from ..errors import ShapeError
from ._cotangents import check_cotangents

__all__ = ["check_grid", "obs_steps_on_grid", "check_differentiable_field", "stepper_for",
           "check_uniform", "check_obs_steps", "cotangents_at", "UNIFORM_RTOL"]


def check_grid(grid: ArrayLike) -> np.ndarray:
    """Validate a time grid: 1-D float64 host array, >= 2 points, strictly monotone."""
    grid = np.asarray(grid, dtype=np.float64)
    if grid.ndim != 1 or grid.size < 2:
        raise ShapeError(f"`grid` must be a 1-D array of at least 2 times, got shape {grid.shape}; "
                         f"use np.linspace(t0, t1, steps + 1) or Solution.grid.")
    if not np.isfinite(grid).all():
        raise ValueError(f"`grid` contains non-finite times: {grid}.")
    d = grid[1:] - grid[:-1]
    if not ((d > 0).all() or (d < 0).all()):
        raise ValueError(f"`grid` must be strictly increasing or strictly decreasing; got steps "
                         f"with signs {np.unique(np.sign(d))}. Sort it or drop repeated times.")
    return grid


def obs_steps_on_grid(grid: ArrayLike, t_obs: ArrayLike, rtol: float = 1e-12) -> np.ndarray:
    """Indices of the observation times ``t_obs`` in ``grid`` (each must be a grid point)."""
    grid = check_grid(grid)
    t_obs = np.atleast_1d(np.asarray(t_obs, dtype=np.float64))
    scale = rtol * max(1.0, float(np.max(np.abs(grid))))
    idx = np.searchsorted(grid, t_obs) if grid[1] > grid[0] else \
        grid.size - 1 - np.searchsorted(grid[::-1], t_obs)
    idx = np.clip(idx, 0, grid.size - 1)
    for j, i in enumerate(idx):
        near = [k for k in (i - 1, i, i + 1) if 0 <= k < grid.size]
        best = min(near, key=lambda k: abs(grid[k] - t_obs[j]))
        if not abs(grid[best] - t_obs[j]) <= scale:     # also rejects NaN
            raise ValueError(f"`t_obs[{j}]` = {t_obs[j]!r} is not a point of the grid; choose "
                             f"`steps` so that every observation time is a grid point, or solve "
                             f"interval by interval.")
        idx[j] = best
    return idx.astype(np.int64)


def check_differentiable_field(field: Any) -> None:
    """Raise before any compute unless ``field`` has a ``vjp`` (a plain callable has none)."""
    if not callable(getattr(field, "vjp", None)):
        raise TypeError(f"`field` must be a vector field with forward(t, y, params) and "
                        f"vjp(cache, dy_bar, need_params), got {type(field).__name__} (a plain "
                        f"callable has no hand-written VJP); pass a field object, e.g. "
                        f"adjointcore.fields.LayerField(layer).")


def stepper_for(method: Any, method_options: dict[str, Any] | None) -> Any:
    return method if hasattr(method, "step_vjp") else get_stepper(method, **(method_options or {}))


#: Relative spread of the step sizes above which a grid is not uniform (linspace grids spread
#: by ~1e-13 of a step from rounding; adaptive grids by O(1)).
UNIFORM_RTOL = 1e-9
#: Plus this many ulps of the largest time: differences of linspace points far from 0 (e.g.
#: t0 = 1e6, h = 1e-3) carry the rounding of the times themselves.
UNIFORM_ULPS = 16


def check_uniform(stepper: Any, grid: NDArray[np.float64], method: Any) -> None:
    """Steppers with ``uniform_grid = True`` (the multistep methods) assume one step size:
    refuse a non-uniform grid (their result on it would be silently wrong) with a ValueError
    naming ``grid``. Allowed spread: ``UNIFORM_RTOL |h|`` plus ``UNIFORM_ULPS`` ulps of
    ``max |t|`` (what ``np.linspace`` rounds to)."""
    if not getattr(stepper, "uniform_grid", False):
        return
    d = np.diff(grid)
    spread = float(np.max(np.abs(d - d[0])))
    allowed = UNIFORM_RTOL * abs(float(d[0])) + \
        UNIFORM_ULPS * np.finfo(np.float64).eps * float(np.max(np.abs(grid)))
    if spread > allowed:
        raise ValueError(f"`grid` is not uniform (step sizes from {float(d.min())!r} to "
                         f"{float(d.max())!r}) but method {method!r} is a multistep method, "
                         f"which assumes equal steps; use np.linspace(t0, t1, steps + 1), or a "
                         f"Runge-Kutta method for an adaptive grid.")


def check_obs_steps(obs_steps: Any, n: int) -> np.ndarray:
    """``obs_steps`` as a 1-D int64 host array of grid indices in ``[0, n]`` (default ``[n]``).

    Raises
    ------
    TypeError
        Non-integer indices (a float index would be truncated silently).
    ValueError
        Indices outside ``[0, n]`` (negative indices do not count from the end).
    """
    if obs_steps is None:
        return np.array([n], dtype=np.int64)
    if isinstance(obs_steps, np.ndarray) and obs_steps.dtype == np.int64 \
            and obs_steps.ndim == 1:
        obs = obs_steps.copy()                          # nothing to convert (a checked one)
    elif type(obs_steps) is list and all(type(i) is int for i in obs_steps):
        obs = np.array(obs_steps, dtype=np.int64)       # plain ints: nothing to convert
    else:
        raw = np.asarray(to_host(obs_steps))
        if raw.size and not (np.issubdtype(raw.dtype, np.integer) or
                             (np.issubdtype(raw.dtype, np.floating) and
                              np.all(raw == np.round(raw)))):
            raise TypeError(f"`obs_steps` must be integer grid indices, got {raw.tolist()!r}; "
                            f"map observation times to indices with obs_steps_on_grid(grid, "
                            f"t_obs).")
        obs = raw.astype(np.int64).reshape(-1)
    if obs.size and (obs.min() < 0 or obs.max() > n):
        raise ValueError(f"`obs_steps` must lie in [0, {n}] (the grid has {n} steps), got "
                         f"{obs.tolist()}; negative indices are not supported, use {n} for "
                         f"the final state.")
    return obs


def cotangents_at(y_bars: Array, obs_steps: Any, y0: Array, n: int,
                  obs_checked: bool = False) -> dict[int, Array]:
    """``{grid index: summed cotangent}`` from validated ``y_bars``/``obs_steps`` (repeats add);
    ``obs_checked``: ``obs_steps`` is already :func:`check_obs_steps`' result (a sweep's own)."""
    obs = obs_steps if obs_checked else check_obs_steps(obs_steps, n)
    if obs_steps is None:
        y_bars = check_cotangents("y_bars", y_bars, y0, tuple(y0.shape),
                                  fix="Without obs_steps, pass the final state's cotangent.")[None]
    else:
        y_bars = check_cotangents("y_bars", y_bars, y0, (obs.size,) + tuple(y0.shape),
                                  fix="Pass one cotangent per observation step.")
    bar_at: dict[int, Array] = {}
    for j, i in enumerate(obs.tolist()):
        bar_at[i] = y_bars[j] if i not in bar_at else bar_at[i] + y_bars[j]
    return bar_at
