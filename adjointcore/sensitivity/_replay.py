"""Forward replays of a discrete map on a grid (private to :mod:`.discrete`, which re-exports
them): the states at chosen grid indices (:func:`grid_forward`) and a taped store-all sweep
(:func:`record_forward`, its :class:`Recording`) that a discrete adjoint reverses without
recomputation.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from solvers import field_kernel

from ..backend import Array, get_array_module
from ._discrete_inputs import check_grid, check_obs_steps, check_uniform, stepper_for

__all__ = ["Recording", "grid_forward", "record_forward"]


def grid_forward(field: Any, y0: Array, params: Array | None, grid: ArrayLike, method: Any = "rk4",
                 method_options: dict[str, Any] | None = None,
                 obs_steps: Any = None) -> tuple[Array, int]:
    """Replay the discrete map on ``grid``; return the states at ``obs_steps`` and the NFE.

    Parameters
    ----------
    field : vector field (``forward(t, y, params)``)
    y0 : array
    params : array or None
    grid : array_like, shape (n + 1,)
    method : str or stepper
    method_options : dict, optional
        E.g. ``{"k": -0.1}`` for ``"lm"``.
    obs_steps : array of int, optional
        Grid indices in ``[0, n]`` to return, in the given order (repeats allowed; default:
        the last point only).

    Returns
    -------
    ys : array, shape ``(len(obs_steps), *y0.shape)``
    nfe : int
    """
    grid = check_grid(grid)
    stepper = stepper_for(method, method_options)
    check_uniform(stepper, grid, method)
    obs = check_obs_steps(obs_steps, grid.size - 1)
    slots: dict[int, list[int]] = {}    # grid index -> output rows (repeats allowed)
    for j, i in enumerate(obs.tolist()):
        slots.setdefault(i, []).append(j)
    xp = get_array_module(y0)
    ys = xp.empty((obs.size,) + tuple(y0.shape), dtype=y0.dtype)
    field = field_kernel(field)
    state, nfe = stepper.init(field, grid[0], y0, params), 0
    for j in slots.get(0, ()):
        ys[j] = state[0]
    for i in range(grid.size - 1):
        state, n_i = stepper.step(field, i, grid[i], grid[i + 1] - grid[i], state, params)
        nfe += n_i
        for j in slots.get(i + 1, ()):
            ys[j] = state[0]
    return ys, nfe


class Recording(NamedTuple):
    """A taped forward sweep (store-all): every state and every step's tape.

    Attributes
    ----------
    grid : ndarray, shape (n + 1,)
    states : list of n + 1 stepper states
    tapes : list of n step tapes (the stages and field caches of each step)
    nfe : int
        Field evaluations of the sweep.
    method : str or stepper
        The ``method`` it was recorded with (checked by :func:`discrete_adjoint`).
    """

    grid: NDArray[np.float64]
    states: list[tuple[Array, ...]]
    tapes: list[Any]
    nfe: int
    method: Any = None


def record_forward(field: Any, y0: Array, params: Array | None, grid: ArrayLike,
                   method: Any = "rk4", method_options: dict[str, Any] | None = None) -> Recording:
    """Forward sweep that keeps each step's stages, for a store-all adjoint without recomputation.

    Only steppers with ``step_taped`` (Runge-Kutta methods) can record; memory is that of
    backpropagation through the solver (all stages and field caches).

    Returns
    -------
    Recording
        ``recording.states[-1][0]`` is the final state.
    """
    grid = check_grid(grid)
    stepper = stepper_for(method, method_options)
    if not hasattr(stepper, "step_taped"):
        raise TypeError(f"method {method!r} cannot record a taped forward sweep (no step_taped); "
                        f"use discrete_adjoint's schedules instead.")
    field = field_kernel(field)
    states, tapes, nfe = [stepper.init(field, grid[0], y0, params)], [], 0
    for i in range(grid.size - 1):
        state, n_i, tape = stepper.step_taped(field, i, grid[i], grid[i + 1] - grid[i],
                                              states[-1], params)
        states.append(state)
        tapes.append(tape)
        nfe += n_i
    return Recording(grid, states, tapes, nfe, method)
