"""One entry point for gradients of losses on ODE trajectories, whatever the method.

``trajectory_gradient(field, y0, params, t_obs, y_bars, gradient=...)`` returns the gradient of
``L = sum_k <y_bars[k], y(t_obs[k])>`` with respect to ``y0`` and ``params`` by

* ``"discrete"``: the exact gradient of the discrete map (:mod:`.discrete`): ``steps`` equal
  steps of any stepper, every observation time a grid point, under a checkpoint ``schedule``;
  or, with ``steps=None``, the frozen accepted grid of an adaptive solve (one observation
  time, the end of the span);
* ``"backsolve"``: the continuous adjoint, the state reconstructed backwards (Chen et al.);
* ``"interpolated"``: the continuous adjoint reading ``y(t)`` from the forward dense output.

Losses usually depend on the states, so the work is split in two:
:func:`begin_trajectory_gradient` solves forward and returns a :class:`TrajectorySweep` with the
states at ``t_obs`` (``sweep.ys``); ``sweep.gradient(y_bars)`` then runs the backward phase on
what the forward phase kept (snapshots, tapes, the dense output), never solving forward again
(except a checkpoint schedule's recomputations). :class:`~nets.ODEBlock`, the experiments'
training loops and NODE-EW's Algorithm 1 all go through it.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

import solvers
from solvers import Solution, Work

from ..backend import Array
from ..checkpointing import Schedule
from ..errors import check_array
from ._cotangents import check_cotangents
from ._discrete_inputs import check_differentiable_field
from .continuous import ADJOINT_OPTIONS, ContinuousGradient, _check_times, continuous_adjoint
from .discrete import (
    DiscreteGradient,
    DiscreteSweep,
    Recording,
    checked_sweep,
    obs_steps_on_grid,
)

__all__ = ["GRADIENTS", "TrajectoryGradient", "TrajectorySweep", "begin_trajectory_gradient",
           "check_gradient_options", "trajectory_gradient"]

GRADIENTS = ("discrete", "backsolve", "interpolated")


class TrajectoryGradient(NamedTuple):
    """Result of :func:`trajectory_gradient` / :meth:`TrajectorySweep.gradient`.

    Attributes
    ----------
    y0_bar : array, shape of ``y0``
    params_bar : array, shape (n_params,), or None (``need_params=False`` or no parameters)
    method_bar : dict
        Gradients with respect to method parameters (discrete gradient of the ``"lm"`` step:
        ``{"k": ...}``); empty otherwise.
    stats : solvers.Work
        The work of the forward and backward phases together (``forward_nfe``,
        ``backward_nfe``, ``vjps``, steps, checkpoint counters, dense-output reads).
    y0_reconstructed : array or None
        Backsolve only: the state the backward solve reconstructed at ``t0``.
    """

    y0_bar: Array
    params_bar: Array | None
    method_bar: dict[str, Any]
    stats: Work
    y0_reconstructed: Array | None = None


class TrajectorySweep:
    """The forward phase of a trajectory gradient, waiting for the cotangents.

    Made by :func:`begin_trajectory_gradient`. Holds what the backward phase needs: the
    discrete adjoint's suspended sweep (snapshots or tapes), or the forward solution (states at
    ``t_obs``; the dense output for ``"interpolated"``).

    Attributes
    ----------
    ys : array, shape ``(K, *y0.shape)``
        States at ``t_obs``.
    t_obs : ndarray, shape (K,)
    t0 : float
    grid : ndarray, shape (n + 1,)
        The forward step grid (fixed, or the accepted grid of an adaptive solve).
    stats : solvers.Work
        Work of the forward phase.
    solution : solvers.Solution or None
        The forward solve (continuous gradients and adaptive discrete ones).
    """

    def __init__(self, y0: Array, params: Array | None, t0: float, t_obs: NDArray[np.float64],
                 options: dict[str, Any], ys: Array, grid: NDArray[np.float64], stats: Work,
                 solution: Solution | None = None, discrete: DiscreteSweep | None = None) -> None:
        self.ys, self.t0, self.t_obs, self.grid = ys, t0, t_obs, grid
        self.stats, self.solution = stats, solution
        self._y0, self._params, self._options, self._discrete = y0, params, options, discrete

    def gradient(self, y_bars: Array, need_params: bool = True) -> TrajectoryGradient:
        """Backward phase for ``L = sum_k <y_bars[k], y(t_obs[k])>``.

        Parameters
        ----------
        y_bars : array, shape ``(K, *y0.shape)``
            Cotangents of the states ``ys``; same backend as ``y0``.
        need_params : bool
            False skips ``params_bar`` (discrete gradient; continuous adjoints integrate it
            anyway and return None).

        Returns
        -------
        TrajectoryGradient
        """
        g: DiscreteGradient | ContinuousGradient
        y0, opts = self._y0, self._options
        if self._discrete is not None:
            g = self._discrete.gradient(y_bars, need_params=need_params)
            stats = g.stats
            if self.solution is not None:        # adaptive: the solve was the forward phase
                solve = self.solution.stats
                stats = stats.replace(forward_nfe=stats.forward_nfe + solve.nfe,
                                      n_rejected=solve.n_rejected, dense_evals=solve.dense_evals)
            return TrajectoryGradient(g.y0_bar, g.params_bar, g.method_bar, stats)
        y_bars = check_cotangents("y_bars", y_bars, y0, (self.t_obs.size, *y0.shape),
                                  fix="Stack one cotangent per observation time.")
        g = continuous_adjoint(opts["field"], y0, self._params, self.t_obs, y_bars, t0=self.t0,
                               variant=opts["gradient"], method=opts["method"],
                               rtol=opts["rtol"], atol=opts["atol"], steps=opts["steps"],
                               max_steps=opts["max_steps"], forward_solution=self.solution,
                               **opts["adjoint_options"])
        return TrajectoryGradient(g.y0_bar, g.params_bar if need_params else None, {}, g.stats,
                                  g.y0_reconstructed)


def check_gradient_options(gradient: str, method: str, steps: int | None, *, n_obs: int = 1,
                           schedule: Schedule | None = None,
                           method_options: dict[str, Any] | None = None,
                           adjoint_options: dict[str, Any] | None = None) -> None:
    """Raise, naming the option, unless the options of a trajectory gradient fit together.

    Run before any compute by :func:`begin_trajectory_gradient` and by
    :class:`~nets.ODEBlock`'s constructor: ``gradient`` in :data:`GRADIENTS`; ``schedule`` and
    ``method_options`` only with the discrete gradient, ``adjoint_options`` (keys in
    ``ADJOINT_OPTIONS``) only with the continuous ones; an adaptive solve (``steps=None``)
    needs a method with an error estimate, and its discrete gradient one observation time
    (``n_obs``). Unknown method names and bad method options raise from
    :func:`solvers.get_stepper`.

    Raises
    ------
    ValueError, TypeError
    """
    if gradient not in GRADIENTS:
        raise ValueError(f"`gradient` must be one of {GRADIENTS}, got {gradient!r}.")
    discrete = gradient == "discrete"
    for name, value in (("method_options", method_options), ("schedule", schedule)) \
            if not discrete else (("adjoint_options", adjoint_options),):
        if value:
            owner = "continuous" if discrete else "discrete"
            raise ValueError(f"`{name}`={value!r} applies to the {owner} gradient only, but "
                             f"gradient={gradient!r}; drop it or change `gradient`.")
    unknown = set(adjoint_options or {}) - set(ADJOINT_OPTIONS)
    if unknown:
        raise ValueError(f"`adjoint_options` keys {sorted(unknown)} are not options of the "
                         f"backward solve; allowed: {ADJOINT_OPTIONS} (forward settings are "
                         f"given directly).")
    if schedule is not None and not callable(getattr(schedule, "plan", None)):
        raise TypeError(f"`schedule` must be a checkpoint schedule (StoreAll(), Uniform(k), "
                        f"Revolve(s), Online(s)) or None, got {schedule!r}.")
    solvers.get_stepper(method, **(method_options or {}))
    tab = solvers.TABLEAUX.get(method) if isinstance(method, str) else None
    if steps is None and (tab is None or tab.b_err is None):   # not an adaptive_methods() name
        raise ValueError(f"an adaptive solve (steps=None) needs a Runge-Kutta method with an "
                         f"error estimate {solvers.adaptive_methods()}, got method={method!r}; "
                         f"pass steps=N for fixed steps (multistep methods always need them).")
    if discrete and steps is None and n_obs > 1:
        raise ValueError(f"the discrete gradient of an adaptive solve (steps=None) observes the "
                         f"end of the span only, got {n_obs} observation times; pass steps=N "
                         f"(every time in `t_obs` a grid point) or a continuous `gradient`.")


def begin_trajectory_gradient(field: Any, y0: Array, params: Array | None, t_obs: ArrayLike, *,
                              t0: float | None = None, gradient: str = "discrete",
                              method: str = "dopri5", steps: int | None = None, rtol: Any = None,
                              atol: Any = None, schedule: Schedule | None = None,
                              method_options: dict[str, Any] | None = None,
                              adjoint_options: dict[str, Any] | None = None,
                              max_steps: int = 10_000) -> TrajectorySweep:
    """Forward phase of :func:`trajectory_gradient`: solve, keep what the gradient needs.

    Parameters
    ----------
    field : vector field
        ``forward(t, y, params) -> (dy, cache)`` and ``vjp(cache, dy_bar, need_params)``
        (a layer goes in as :class:`~adjointcore.fields.LayerField`).
    y0 : array, any shape
        Initial state at ``t0``.
    params : array, shape (n_params,), or None
    t_obs : array_like, shape (K,)
        Strictly monotone observation times; the last one ends the trajectory.
    t0 : float, optional
        Start time; defaults to ``t_obs[0]``.
    gradient : {"discrete", "backsolve", "interpolated"}
    method : str
        Any ``solvers`` method (multistep methods need ``steps``; adaptive solves a pair with
        an error estimate).
    steps : int, optional
        Equal fixed steps over ``[t0, t_obs[-1]]`` (discrete: every ``t_obs`` must be a grid
        point); None for an adaptive solve with ``rtol``/``atol``.
    rtol, atol : float, optional
        Tolerances of the adaptive solves (forward, and the backward ones of continuous
        adjoints unless ``adjoint_options`` says otherwise); defaults 1e-6 and 1e-9.
    schedule : checkpoint schedule, optional
        Discrete gradient: ``None`` (taped store-all), ``StoreAll()``, ``Uniform``, ``Revolve``,
        ``Online``.
    method_options : dict, optional
        Discrete gradient: stepper options (``{"k": -0.1}`` for ``"lm"``).
    adjoint_options : dict, optional
        Continuous adjoints: ``adjoint_method``, ``adjoint_rtol``, ``adjoint_atol``,
        ``adjoint_steps``, ``seminorm``, ``reset_state`` (:func:`continuous_adjoint`).
    max_steps : int

    Returns
    -------
    TrajectorySweep

    Raises
    ------
    ValueError, TypeError
        Bad options (naming them), before any compute.
    solvers.SolveError
        The forward solve failed (its partial solution in ``.result``).
    """
    check_differentiable_field(field)
    check_array("y0", y0)
    start, times = _check_times(t_obs, t0)
    check_gradient_options(gradient, method, steps, n_obs=times.size, schedule=schedule,
                           method_options=method_options, adjoint_options=adjoint_options)
    if params is not None:
        check_array("params", params, ndim=1, fix="Pass the flat parameter vector (layer.init).")
    options = {"field": field, "gradient": gradient, "method": method, "steps": steps,
               "rtol": rtol, "atol": atol, "max_steps": max_steps,
               "adjoint_options": dict(adjoint_options or {})}
    tolerances = {"rtol": rtol, "atol": atol}          # None: the solvers' defaults
    if gradient == "discrete" and steps is not None:
        # a linspace grid (uniform, strictly monotone) and the indices of t_obs on it
        grid = np.linspace(start, float(times[-1]), int(steps) + 1)
        sweep = checked_sweep(field, y0, params, grid,
                              solvers.get_stepper(method, **(method_options or {})), schedule,
                              None, obs_steps_on_grid(grid, times))
        stats = Work(forward_nfe=sweep.forward_nfe, n_accepted=grid.size - 1)
        return TrajectorySweep(y0, params, start, times, options, sweep.observed, grid, stats,
                               discrete=sweep)
    if gradient == "discrete":
        # The adjoint of the frozen accepted grid. With the default schedule and an FSAL pair
        # the solve keeps its stages and the adjoint reuses them (no replay); otherwise the
        # sweep replays the grid now.
        keep = schedule is None and solvers.get_tableau(method).fsal
        kernel = solvers.FieldKernel(field)
        sol = solvers.solve(kernel, y0, (start, float(times[-1])), params, method=method,
                            max_steps=max_steps, dense_output=False, keep_stages=keep,
                            **tolerances)
        taped = None if sol.stages is None else Recording(
            sol.grid, [(y,) for y in sol.ys], list(sol.stages), 0, method)
        # the solve's own grid, recorded for this method: nothing left to check; its stages'
        # VJPs go through the field as the solve bound it
        sweep = checked_sweep(field, y0, params, sol.grid, solvers.get_stepper(method),
                              schedule, taped, np.array([sol.grid.size - 1], dtype=np.int64),
                              None if taped is None else kernel.bound_field(params))
        stats = sol.stats if not sweep.forward_nfe else \
            sol.stats + Work(forward_nfe=sweep.forward_nfe)     # replayed: its evaluations too
        return TrajectorySweep(y0, params, start, times, options, sweep.observed, sol.grid,
                               stats, solution=sol, discrete=sweep)
    # Backsolve needs the states at t_obs only: no dense output, so the forward solve keeps no
    # trajectory (memory independent of the number of steps).
    sol = solvers.solve(field, y0, (start, float(times[-1])), params, method=method,
                        t_eval=times, max_steps=max_steps,
                        dense_output=gradient == "interpolated",
                        **({"steps": steps} if steps is not None else tolerances))
    return TrajectorySweep(y0, params, start, times, options, sol.ys, sol.grid, sol.stats,
                           solution=sol)


def trajectory_gradient(field: Any, y0: Array, params: Array | None, t_obs: ArrayLike,
                        y_bars: Array, *, need_params: bool = True,
                        **options: Any) -> TrajectoryGradient:
    """Gradient of ``L = sum_k <y_bars[k], y(t_obs[k])>`` by the chosen ``gradient`` method.

    Parameters
    ----------
    field, y0, params, t_obs
        As :func:`begin_trajectory_gradient`.
    y_bars : array, shape ``(K, *y0.shape)``
        Cotangents ``dl_k/dy(t_obs[k])`` (known before the solve; when they depend on the
        states, call :func:`begin_trajectory_gradient` and then ``sweep.gradient(y_bars)``).
    need_params : bool
    **options
        ``t0``, ``gradient``, ``method``, ``steps``, ``rtol``, ``atol``, ``schedule``,
        ``method_options``, ``adjoint_options``, ``max_steps``
        (:func:`begin_trajectory_gradient`).

    Returns
    -------
    TrajectoryGradient
    """
    start, times = _check_times(t_obs, options.get("t0"))
    check_array("y0", y0)
    y_bars = check_cotangents("y_bars", y_bars, y0, (times.size, *y0.shape),
                              fix="Stack one cotangent dl_k/dy per observation time.")
    sweep = begin_trajectory_gradient(field, y0, params, t_obs, **options)
    return sweep.gradient(y_bars, need_params=need_params)
