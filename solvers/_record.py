"""The record of one solve: accepted steps, streamed outputs, device finiteness checks, and
the :class:`~solvers.Solution` made from them (private to :mod:`solvers._solve`).

Every loop of ``solve`` (``_rk_loop``, ``_fixed_rk_forward``, ``_stepper_loop``) fills one
``_Record``; ``_solution`` turns it into the returned ``Solution``.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._dense import DenseOutput
from ._result import MESSAGES, Solution, Status
from ._rk import RKStages
from ._work import Work
from ._xp import Array, get_array_module, stack


class _Record:
    """Accepted-step trajectory of one solve (a local accumulator, never stored).

    With ``stream`` (the ``t_eval`` times of a solve without ``dense_output``), each accepted
    step's interpolant is evaluated at the output times it covers and then dropped, and only
    the latest state is kept: memory is that of the outputs, not of the trajectory. The values
    are those :class:`DenseOutput` gives (the same arithmetic, one step at a time).
    """

    grid: list[float]
    ys: list[Array]
    hs: list[float]
    coeffs: list[Array]
    out: list[Array]
    stream: NDArray[np.float64] | None
    stages: list[RKStages] | None

    def __init__(self, t0: float, y0: Array, stream: NDArray[np.float64] | None = None) -> None:
        self.grid, self.ys, self.hs, self.coeffs = [t0], [y0], [], []
        self.nfe, self.n_rejected, self.status, self.detail = 0, 0, Status.SUCCESS, ""
        self.dense_evals = 0
        self.stream, self.out = stream, []
        self.stages = None          # list of accepted steps' RKStages with keep_stages
        #: An array whose leading rows are ``ys`` (a loop that writes its states in place);
        #: then the solution's states are its first ``len(ys)`` rows, with no stacking copy.
        self.ys_rows: Array | None = None

    def keep(self, stages: RKStages, n_live: int) -> None:
        """Keep an accepted step's live stages and caches (``keep_stages=True``)."""
        # keep() is called with keep_stages only
        self.stages.append(RKStages(stages.t, stages.y, stages.h, stages.k[:n_live],  # type: ignore[union-attr]
                                    stages.caches[:n_live]))

    def accept(self, t_new: float, y_new: Array, h: float, coeffs: Array | None) -> None:
        self.grid.append(t_new)
        self.hs.append(h)
        if self.stream is None:
            self.ys.append(y_new)
            if coeffs is not None:
                self.coeffs.append(coeffs)
            return
        t, y = self.grid[-2], self.ys[-1]
        sign = 1.0 if t_new >= t else -1.0
        todo = self.stream[len(self.out):]
        todo = todo[sign * todo <= sign * t_new]
        if todo.size and coeffs is None:          # all on the grid (see `interior_pending`)
            self.out.extend(y if tt == t else y_new for tt in todo)
        elif todo.size:
            xp = get_array_module(y)
            step = DenseOutput(np.array([t, t_new]), np.array([h]), xp.stack([y, y_new]),
                               # not None: the branch above took None
                               coeffs[None])  # type: ignore[index]
            self.out.extend(step(todo))
            self.dense_evals += todo.size
        self.ys[-1] = y_new

    def truncate(self, n_good: int, last_state: Array | None, direction: float) -> None:
        """Keep the first ``n_good`` accepted steps (a device solve found a later one
        non-finite): ``last_state`` is the state after them when streaming (only the latest is
        kept then), and streamed outputs past the new end are dropped."""
        del self.grid[n_good + 1:], self.hs[n_good:], self.coeffs[n_good:]
        if self.stream is None:
            del self.ys[n_good + 1:]
            return
        self.ys[-1] = last_state
        reached = int(np.sum(direction * self.stream <= direction * self.grid[-1]))
        del self.out[reached:]

    def interior_pending(self, t: float, t_new: float) -> bool:
        """Streaming: whether an output time lies strictly inside the step ``(t, t_new)``, so
        the step's interpolant is needed (times on the grid take the states themselves)."""
        sign = 1.0 if t_new >= t else -1.0
        # called when streaming only
        todo = sign * self.stream[len(self.out):]  # type: ignore[index]
        return bool(np.any((todo > sign * t) & (todo < sign * t_new)))


def _finite(x: Array) -> bool:
    return bool(get_array_module(x).isfinite(x).all())


def _finite_muted(x: Array) -> bool:
    """:func:`_finite` for callers that have muted NumPy's overflow and invalid warnings (the
    step loops): a real host array is summed first, and a finite sum settles it in one pass (an
    inf or nan entry makes the sum non-finite); a non-finite sum, also the overflow of finite
    entries, is decided entry by entry."""
    if type(x) is np.ndarray and x.dtype.kind == "f" and math.isfinite(np.add.reduce(x, None)):
        return True
    return _finite(x)


#: Streaming device solves read the finiteness of their fixed steps back once per this many
#: steps (they keep only the states of the window); others once, at the end.
FINITE_CHECK_EVERY = 16


class _FiniteWatch:
    """Finiteness of a device solve's fixed steps, computed on the device each step and read
    back once at the end of the solve (one synchronisation; streaming solves, which keep no
    trajectory, once per ``FINITE_CHECK_EVERY`` steps). A local accumulator, never stored. On
    failure the first non-finite step is found (one more read) and the record is cut there, so
    the partial trajectory ends at the last finite state, as a host solve's does."""

    flags: list[Array]
    states: list[Array]

    def __init__(self, xp: Any, stream: bool, y0: Array) -> None:
        self.xp, self.stream, self.flags, self.states, self.before = xp, stream, [], [], y0

    def add(self, y1: Array) -> None:
        self.flags.append(self.xp.isfinite(y1).all())
        if self.stream:
            self.states.append(y1)

    def due(self, done: bool) -> bool:
        return bool(self.flags) and (done or (self.stream and
                                              len(self.flags) >= FINITE_CHECK_EVERY))

    def first_bad(self) -> int | None:
        """Index in the window of the first non-finite step; None (window cleared) if none."""
        ok = self.xp.stack(self.flags)
        if bool(ok.all()):
            if self.stream:
                self.before = self.states[-1]
            self.flags, self.states = [], []
            return None
        return int(np.argmin(ok.get()))

    def cut(self, rec: _Record, n_acc: int, bad: int, direction: float) -> None:
        """Cut ``rec`` (``n_acc`` steps accepted) before the window's step ``bad``."""
        n_good = n_acc - len(self.flags) + bad
        last = None if not self.stream else (self.states[bad - 1] if bad else self.before)
        rec.truncate(n_good, last, direction)
        rec.status, rec.n_rejected = Status.NON_FINITE, 1


def _solution(rec: _Record, name: str, t_eval: NDArray[np.float64] | None,
              dense_output: bool | None, dense: bool, y0: Array) -> Solution:
    xp = get_array_module(y0)
    grid = np.asarray(rec.grid, dtype=np.float64)
    if rec.stream is not None:
        hs = np.asarray(rec.hs, dtype=np.float64)
        sign = 1.0 if grid[-1] >= grid[0] else -1.0
        # streaming implies t_eval
        ts = t_eval[sign * t_eval <= sign * grid[-1]]  # type: ignore[index,operator]
        if len(rec.out) < len(ts):          # no step taken: the outputs at t0 are y0
            rec.out.extend([y0] * (len(ts) - len(rec.out)))
        out = (stack(xp, rec.out) if rec.out
               else xp.zeros((0,) + tuple(y0.shape), dtype=y0.dtype))
        return Solution(ts, out, grid, rec.status, MESSAGES[rec.status] + rec.detail,
                        _work(rec), name, None,
                        None if rec.stages is None else tuple(rec.stages), hs)
    ys = stack(xp, rec.ys) if rec.ys_rows is None else rec.ys_rows[:len(rec.ys)]
    hs = np.asarray(rec.hs, dtype=np.float64)
    sol = None
    if dense:
        coeffs = (stack(xp, rec.coeffs) if rec.coeffs
                  else xp.zeros((0, 1) + tuple(y0.shape), dtype=y0.dtype))
        sol = DenseOutput(grid, hs, ys, coeffs)
    if t_eval is None:
        ts, out = grid, ys
    else:
        sign = 1.0 if grid[-1] >= grid[0] else -1.0
        ts = t_eval[sign * t_eval <= sign * grid[-1]]
        # t_eval makes `dense` true
        out = sol(ts) if len(ts) else xp.zeros((0,) + tuple(y0.shape), dtype=y0.dtype)  # type: ignore[misc]
        rec.dense_evals += len(ts)
    return Solution(ts, out, grid, rec.status, MESSAGES[rec.status] + rec.detail, _work(rec),
                    name, sol if dense_output else None,
                    None if rec.stages is None else tuple(rec.stages), hs)


def _work(rec: _Record) -> Work:
    return Work(forward_nfe=rec.nfe, n_accepted=len(rec.hs), n_rejected=rec.n_rejected,
                dense_evals=rec.dense_evals)
