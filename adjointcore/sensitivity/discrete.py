"""Discrete adjoint (discretize-then-optimize) of a solve on a fixed or frozen grid.

The forward map is the sequence of stepper steps ``x_{i+1} = step(i, x_i)`` on ``grid``
(a uniform fixed-step grid, or the accepted grid of an adaptive solve, replayed without the
controller). Its exact gradient is accumulated backwards with one ``step_vjp`` per step under
a checkpoint schedule; losses on several grid states enter as cotangents at their step indices.

References
----------
Griewank & Walther, *Evaluating Derivatives*, 2nd ed., SIAM 2008, ch. 12 (checkpointing);
Hager, Numer. Math. 87 (2000) 247-282 (RK discrete adjoints);
Sandu, ICCS 2006 (discrete adjoints of linear multistep methods).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, NDArray

from solvers import FieldKernel, Work, as_field

from ..backend import Array, get_array_module
from ..checkpointing import PendingAdjoint, Schedule, Taped, begin_adjoint, checkpoint_work
from ..errors import check_array
from ._discrete_inputs import (
    check_differentiable_field,
    check_grid,
    check_obs_steps,
    check_uniform,
    cotangents_at,
    obs_steps_on_grid,
    stepper_for,
)
from ._replay import Recording, grid_forward, record_forward

__all__ = ["CountingField", "DiscreteGradient", "DiscreteSweep", "Recording",
           "record_forward", "check_grid", "grid_forward", "discrete_adjoint",
           "begin_discrete_adjoint", "obs_steps_on_grid", "check_differentiable_field"]


class DiscreteGradient(NamedTuple):
    """Result of :func:`discrete_adjoint`.

    Attributes
    ----------
    y0_bar : array, shape ``y0.shape``
    params_bar : array, shape ``params.shape`` (None when not requested or no parameters)
    method_bar : dict
        Gradients with respect to method parameters (``{"k": ...}`` for the LM step).
    stats : solvers.Work
        ``forward_nfe`` (the first forward sweep), ``backward_nfe`` (evaluations recomputing
        steps and stages in reverse, plus a repeated forward sweep), ``vjps`` (one per live
        stage per step), ``n_accepted`` (grid steps) and the checkpoint counters
        (``forward_steps``, ``recomputed_steps``, ``snapshots_written``,
        ``max_live_snapshots``, ...).
    """

    y0_bar: Array
    params_bar: Array | None
    method_bar: dict[str, Any]
    stats: Work


class CountingField(FieldKernel):
    """Wraps a vector field for one gradient computation: exact work counters (``nfe``,
    ``n_vjp``), the first evaluation checked and the rest unchecked, reusable parameter
    buffers (:class:`solvers.FieldKernel`); never stored on the user's field."""

    def __init__(self, field: Any) -> None:
        super().__init__(field if callable(getattr(field, "forward", None)) else as_field(field))
        self.nfe_first: int | None = None

    def end_forward(self) -> None:
        """Mark the end of the first forward sweep (later evaluations are recomputations)."""
        if self.nfe_first is None:
            self.nfe_first = self.nfe


def discrete_adjoint(field: Any, y0: Array, params: Array | None, grid: ArrayLike, y_bars: Array, *,
                     method: Any = "rk4", method_options: dict[str, Any] | None = None,
                     obs_steps: Any = None, schedule: Schedule | None = None,
                     need_params: bool = True,
                     recording: Recording | None = None) -> DiscreteGradient:
    """Exact gradient of ``L = sum_k <y_bars[k], y_{obs_steps[k]}>`` through the discrete map.

    Parameters
    ----------
    field : vector field with ``forward`` and ``vjp``
    y0 : array
        Initial state.
    params : array or None
        Field parameters.
    grid : array_like, shape (n + 1,)
        Step times (uniform for multistep methods; ``Solution.grid`` for a frozen adaptive grid).
    y_bars : array, shape ``(K, *y0.shape)`` or ``y0.shape``
        Cotangents of the observed states; a single array (``obs_steps=None``) is the cotangent
        of the final state. Same backend as ``y0``; cast to ``y0.dtype``.
    method : str or stepper
        Any name accepted by ``solvers.get_stepper`` (``"rk4"``, ``"dopri5"``, ``"ab3"``, ...).
    method_options : dict, optional
    obs_steps : array of int, shape (K,), optional
        Grid indices in ``[0, n]`` of the observations (see :func:`obs_steps_on_grid`); an index
        may repeat (its cotangents add up) and ``0`` is ``y0`` itself.
    schedule : checkpoint schedule, optional
        ``None`` (default) is ``Taped()``: backpropagation through the solver - every state
        *and* every step's stages and field caches are kept (Runge-Kutta methods; others fall
        back to ``StoreAll()``), so the reverse sweep evaluates the field only through VJPs;
        about ``n_stages`` times the memory of ``StoreAll()``, capped at ``Taped.max_bytes``
        (512 MiB by default; later steps recompute their stages). ``StoreAll()`` keeps the states
        only and recomputes each step's stages in reverse; ``Uniform``, ``Revolve`` and
        ``Online`` trade recomputation for memory. Gradients are bitwise identical for every
        choice.
    need_params : bool
    recording : Recording, optional
        A taped forward sweep of the same map (:func:`record_forward`); the adjoint then reuses
        its stages and evaluates the field only through VJPs (``schedule=None`` or ``Taped``).

    Returns
    -------
    DiscreteGradient
    """
    grid = check_grid(grid)
    check_array("y0", y0)
    bar_at = cotangents_at(y_bars, obs_steps, y0, grid.size - 1)   # fails before any compute
    sweep = begin_discrete_adjoint(field, y0, params, grid, method=method,
                                   method_options=method_options, schedule=schedule,
                                   recording=recording)
    return sweep.reverse(bar_at, need_params)


class DiscreteSweep:
    """The forward sweep of a discrete adjoint, suspended until the cotangents are known.

    Made by :func:`begin_discrete_adjoint`; :meth:`gradient` runs the reverse sweep. Between
    the two the sweep holds what its schedule keeps (snapshots, or every step's tape for the
    taped store-all default), so a layer can run the forward sweep in its ``forward`` call and
    reverse it in its ``vjp`` without a second forward sweep. A second :meth:`gradient` call
    (e.g. several cotangents for one forward) runs the forward sweep again, with the same bits.

    Attributes
    ----------
    grid : ndarray, shape (n + 1,)
    final_state : tuple
        The stepper state at ``grid[-1]``; ``final_state[0]`` is ``y(grid[-1])``.
    forward_nfe : int
        Field evaluations of the forward sweep.
    obs_steps : ndarray of int or None
        The grid indices given to :func:`begin_discrete_adjoint`.
    observed : array, shape ``(len(obs_steps), *y0.shape)``, or None
        The states at ``obs_steps``, kept from the forward sweep (None without ``obs_steps``).
    """

    # set by _begin (each forward sweep)
    _pending: _TapedSweep | PendingAdjoint
    _bar_at: dict[int, Array]
    _acc: dict[str, Any]

    def __init__(self, field: Any, y0: Array, params: Array | None, grid: NDArray[np.float64],
                 stepper: Any, schedule: Schedule, taped: bool, recording: Recording | None,
                 obs_steps: NDArray[np.int64] | None = None, bound: Any = None) -> None:
        self.grid = grid
        self.obs_steps = obs_steps
        self._args = (field, y0, params, stepper, schedule, taped, recording)
        self._bound = bound             # the field bound to params by the recording's solve
        self._begin()

    def _begin(self) -> None:
        field, y0, params, stepper, schedule, taped, recording = self._args
        grid, n = self.grid, self.grid.size - 1
        counted = CountingField(field)
        tapes = {}
        watch = set() if self.obs_steps is None else set(self.obs_steps.tolist())
        seen = {}                    # grid index -> y there (first sweep; a recomputation agrees)
        self._counted, self._bar_at, self._need_params = counted, {}, True
        self._acc = {"params": None, "method": {k: 0.0 for k in stepper.method_params}}
        # `taped`: a Taped schedule
        budget: dict[str, Any] = {"left": schedule.max_bytes if taped else 0, "per_step": None}  # type: ignore[attr-defined]

        def forward_step(i: int, state: tuple[Array, ...]) -> tuple[Array, ...]:
            nxt = advance(i, state)
            if i + 1 in watch and i + 1 not in seen:
                seen[i + 1] = nxt[0]
            return nxt

        def advance(i: int, state: tuple[Array, ...]) -> tuple[Array, ...]:
            h = grid[i + 1] - grid[i]
            if recording is not None:
                tapes[i] = recording.tapes[i]
                return recording.states[i + 1]
            if taped and budget["left"] > 0:
                nxt, _, tape = stepper.step_taped(counted, i, grid[i], h, state, params)
                if budget["per_step"] is None:
                    budget["per_step"] = max(1, tape_bytes(tape))
                if budget["per_step"] <= budget["left"]:
                    tapes[i] = tape
                budget["left"] -= budget["per_step"]
                return nxt
            return stepper.step(counted, i, grid[i], h, state, params)[0]

        def reverse_step(i: int, state: tuple[Array, ...],
                         state_next_bar: tuple[Array, ...]) -> tuple[Array, ...]:
            state_next_bar = self._with_obs(i + 1, state_next_bar) if i + 1 < n \
                else state_next_bar
            tape = tapes.pop(i, None)
            if tape is not None:
                state_bar, p_bar, m_bar = stepper.vjp_taped(counted, tape, params,
                                                            state_next_bar,
                                                            need_params=self._need_params)
            else:
                state_bar, p_bar, m_bar = stepper.step_vjp(
                    counted, i, grid[i], grid[i + 1] - grid[i], state, params, state_next_bar,
                    need_params=self._need_params)
            acc = self._acc
            if p_bar is not None:       # p_bar may be the kernel's step buffer: copy or add now
                if acc["params"] is None:
                    acc["params"] = p_bar.copy()
                else:
                    acc["params"] += p_bar
            for k, v in m_bar.items():
                acc["method"][k] = acc["method"][k] + v
            return state_bar

        state0 = stepper.init(counted, grid[0], y0, params)
        seen[0] = state0[0]
        if taped:
            self._pending = _TapedSweep(n, state0, forward_step, reverse_step)
        else:
            self._pending = begin_adjoint(schedule, n, state0=state0, forward_step=forward_step,
                                          reverse_step=reverse_step)
        counted.end_forward()
        self.final_state = self._pending.final_state
        self.observed = None
        if self.obs_steps is not None:
            xp, kept = get_array_module(y0), [seen[i] for i in self.obs_steps.tolist()]
            self.observed = np.array(kept) if xp is np else xp.stack(kept)  # host: no stack()
        # set by end_forward() above
        self.forward_nfe = counted.nfe_first + (recording.nfe if recording is not None else 0)  # type: ignore[operator]

    def _with_obs(self, i: int, state_bar: tuple[Array, ...]) -> tuple[Array, ...]:
        if i not in self._bar_at:
            return state_bar
        return (state_bar[0] + self._bar_at[i],) + tuple(state_bar[1:])

    def gradient(self, y_bars: Array, obs_steps: Any = None,
                 need_params: bool = True) -> DiscreteGradient:
        """Reverse sweep for ``L = sum_k <y_bars[k], y_{obs_steps[k]}>``.

        Parameters and checks as :func:`discrete_adjoint` (``y_bars``, ``obs_steps``,
        ``need_params``).

        Returns
        -------
        DiscreteGradient
            ``stats.forward_nfe`` is the forward sweep's; ``backward_nfe`` what the reverse
            sweep evaluated (plus a repeated forward sweep on a second call).
        """
        own = obs_steps is None and self.obs_steps is not None      # checked when the sweep began
        if own:
            obs_steps = self.obs_steps
        return self.reverse(cotangents_at(y_bars, obs_steps, self._args[1], self.grid.size - 1,
                                          obs_checked=own), need_params)

    def reverse(self, bar_at: dict[int, Array], need_params: bool = True) -> DiscreteGradient:
        """:meth:`gradient` from already checked cotangents ``{grid index: cotangent}``."""
        field, y0, params, stepper, *_ = self._args
        n = self.grid.size - 1
        nfe_before = 0
        if self._pending.finished:
            self._begin()
            nfe_before = self._counted.nfe
        counted = self._counted
        if params is not None:        # the stages may come from a solve's own (checked) kernel
            counted.bind_vjp(params, self._bound)
        xp = get_array_module(y0)
        self._bar_at, self._need_params = bar_at, need_params
        final = self._with_obs(n, tuple([xp.zeros(s.shape, dtype=s.dtype)
                                         for s in self.final_state]))
        state0_bar, ck = self._pending.finish(final)
        state0_bar = self._with_obs(0, state0_bar)
        y0_bar, p_init = stepper.init_vjp(counted, self.grid[0], y0, params, state0_bar)
        params_bar = self._acc["params"]
        if p_init is not None:
            params_bar = p_init if params_bar is None else params_bar + p_init
        if need_params and params_bar is None and params is not None:
            params_bar = xp.zeros_like(params)
        stats = ck + Work(forward_nfe=self.forward_nfe,
                          # set by end_forward()
                          backward_nfe=counted.nfe - counted.nfe_first + nfe_before,  # type: ignore[operator]
                          vjps=counted.n_vjp)
        return DiscreteGradient(y0_bar, params_bar if need_params else None,
                                self._acc["method"], stats)


def tape_bytes(tape: Any) -> int:
    """Bytes of the distinct arrays reachable from ``tape`` through tuples, lists and dicts
    (a step's stages and field caches; views count their own size)."""
    seen, total, todo = set(), 0, [tape]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if hasattr(obj, "nbytes") and hasattr(obj, "dtype"):
            total += int(obj.nbytes)
        elif isinstance(obj, (tuple, list)):
            todo.extend(obj)
        elif isinstance(obj, dict):
            todo.extend(obj.values())
    return total


class _TapedSweep:
    """The :class:`~adjointcore.checkpointing.Taped` sweep as two plain loops.

    Every state is kept, and every step's tape while the budget lasts (``forward_step``
    decides; later steps recompute their stages in ``reverse_step``), so the reverse sweep is
    ``reverse_step(n-1), ..., reverse_step(0)``. Running it without the checkpoint executor's
    action stream saves its per-step bookkeeping; the counters are those of ``StoreAll()``
    (``replay(StoreAll(), n)``: the states ``x_0 .. x_{n-2}`` count as snapshots).
    """

    def __init__(self, n: int, state0: tuple[Array, ...], forward_step: Callable[[int, Any], Any],
                 reverse_step: Callable[[int, Any, Any], Any]) -> None:
        self._reverse_step, self._n = reverse_step, n
        self._states: list[Any] | None = [state0]
        for i in range(n):
            self._states.append(forward_step(i, self._states[-1]))
        self.final_state = self._states[-1]

    @property
    def finished(self) -> bool:
        return self._states is None

    def finish(self, final_bar: Any) -> tuple[Any, Work]:
        states, self._states = self._states, None
        bar = final_bar
        for i in range(self._n - 1, -1, -1):
            # finish() runs once: states is the list
            bar = self._reverse_step(i, states[i], bar)  # type: ignore[index]
            states[i + 1] = None  # type: ignore[index]  # finish() runs once: states is the list
        n = self._n
        return bar, checkpoint_work(n, n, n, n - 1, n - 1)


def begin_discrete_adjoint(field: Any, y0: Array, params: Array | None, grid: ArrayLike, *,
                           method: Any = "rk4", method_options: dict[str, Any] | None = None,
                           schedule: Schedule | None = None, recording: Recording | None = None,
                           obs_steps: Any = None) -> DiscreteSweep:
    """Run the forward sweep of :func:`discrete_adjoint` now, its reverse sweep later.

    Parameters as :func:`discrete_adjoint` (less the cotangents and ``need_params``, which
    :meth:`DiscreteSweep.gradient` takes). With ``obs_steps`` the sweep keeps the states at
    those grid indices (``DiscreteSweep.observed``, e.g. to evaluate a loss on them) and
    :meth:`DiscreteSweep.gradient` takes their cotangents by default.

    Returns
    -------
    DiscreteSweep
    """
    check_differentiable_field(field)
    grid = check_grid(grid)
    n = grid.size - 1
    stepper = stepper_for(method, method_options)
    check_uniform(stepper, grid, method)
    if schedule is not None and not callable(getattr(schedule, "plan", None)):
        raise TypeError(f"`schedule` must be a checkpoint schedule (StoreAll(), Uniform(k), "
                        f"Revolve(s), Online(s)) or None, got {schedule!r}.")
    check_array("y0", y0)
    if recording is not None:
        same_grid = recording.grid is grid or (recording.grid.shape == grid.shape
                                               and np.array_equal(recording.grid, grid))
        if not _is_taped(schedule, stepper) or not same_grid or len(recording.tapes) != n or \
                (recording.method is not None and recording.method != method):
            raise ValueError(f"`recording` must come from record_forward on the same grid "
                             f"({n} steps) and method ({method!r}; recorded: "
                             f"{recording.method!r}), and needs schedule=None or Taped() "
                             f"(taped store-all).")
    obs = None if obs_steps is None else check_obs_steps(obs_steps, n)
    return checked_sweep(field, y0, params, grid, stepper, schedule, recording, obs)


def _is_taped(schedule: Schedule | None, stepper: Any) -> bool:
    """Whether the sweep keeps every step's tape: the default or a ``Taped`` schedule, and a
    stepper with ``step_taped``."""
    return (schedule is None or isinstance(schedule, Taped)) and hasattr(stepper, "step_taped")


def checked_sweep(field: Any, y0: Array, params: Array | None, grid: NDArray[np.float64],
                  stepper: Any, schedule: Schedule | None, recording: Recording | None,
                  obs_steps: NDArray[np.int64] | None, bound: Any = None) -> DiscreteSweep:
    """:func:`begin_discrete_adjoint` for callers that checked every argument themselves
    (:func:`~adjointcore.sensitivity.trajectory.begin_trajectory_gradient`): a differentiable
    field, a checked ``y0``, a strictly monotone float64 ``grid`` that ``stepper`` accepts, a
    schedule or None, a recording of this grid and method (taped schedule only), checked int64
    ``obs_steps``; ``bound``, the field as the recording's solve bound it to ``params``
    (:meth:`solvers.FieldKernel.bound_field`), serves the reverse sweep's VJPs."""
    return DiscreteSweep(field, y0, params, grid, stepper,
                         Taped() if schedule is None else schedule, _is_taped(schedule, stepper),
                         recording, obs_steps, bound)
