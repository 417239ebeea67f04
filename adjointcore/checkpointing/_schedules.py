"""The schedule interface and the two simple offline schedules, StoreAll and Uniform."""
from __future__ import annotations

from typing import Any, Generator, Protocol

from ..errors import check_positive_int
from ._actions import Action
from ._revolve import check_n_steps, offline_plan

__all__ = ["Schedule", "StoreAll", "Uniform", "Taped", "DEFAULT_TAPE_BYTES"]


class Schedule(Protocol):
    """What the executor needs from a checkpoint schedule.

    1. ``plan(n_steps)`` returns a generator of :mod:`actions <._actions>` that never touches
       arrays; it ends with ``EndReverse()``.
    2. ``snapshots`` is the snapshot budget (``None``: unbounded); the executor's store
       raises :class:`CheckpointError` if the plan exceeds it.
    3. ``online`` is ``True`` when ``plan(None)`` works without knowing the number of steps;
       such a plan reads the executor's reply to each first-sweep ``Forward`` (``True`` when
       the state reached is final).
    """

    online: bool

    @property
    def snapshots(self) -> int | None: ...

    def plan(self, n_steps: int | None) -> Generator[Action, bool | None, None]: ...


class StoreAll:
    """Store every state of the forward sweep; no recomputation.

    Keeps ``x_0 .. x_{n-2}`` (``x_{n-1}`` is handed over by ``EndForward``): ``n - 1``
    snapshots, ``n`` forward steps.
    """

    online = False
    snapshots = None

    def __repr__(self) -> str:
        return "StoreAll()"

    def plan(self, n_steps: int | None) -> Generator[Action, Any, None]:
        """Generator of the actions for ``n_steps`` steps."""
        n = check_n_steps(n_steps, "StoreAll")
        return offline_plan(list(range(n - 1)), n, [1] * (n - 1))


class Uniform:
    """Store every ``every``-th state; recompute each segment once, storing its states.

    Parameters
    ----------
    every : int
        Snapshot spacing ``k >= 1`` of the forward sweep.

    Notes
    -----
    The forward sweep keeps ``x_0, x_k, x_{2k}, ...``; the reverse sweep re-runs each segment
    once from its snapshot, storing its ``k - 1`` interior states, and reverses them. Forward
    steps are at most ``2n``; live snapshots at most ``ceil(n / k) + k - 1``.
    """

    online = False
    snapshots = None

    def __init__(self, every: int) -> None:
        self.every = check_positive_int("every", every)

    def __repr__(self) -> str:
        return f"Uniform(every={self.every})"

    def plan(self, n_steps: int | None) -> Generator[Action, Any, None]:
        """Generator of the actions for ``n_steps`` steps."""
        n = check_n_steps(n_steps, "Uniform")
        k = self.every
        positions = list(range(0, n - 1, k))
        # k slots per segment: the segment's own snapshot plus its k - 1 interior states, so
        # the binomial reversal degenerates to "store every state" (repetition number 1).
        return offline_plan(positions, n, [k] * len(positions))


#: Default tape budget of :class:`Taped` (bytes).
DEFAULT_TAPE_BYTES = 1 << 29


class Taped:
    """Backpropagation through the solver: every step keeps its stages and field caches (its
    *tape*), so the reverse sweep evaluates the field only through VJPs; the default of the
    discrete adjoint (``schedule=None``).

    Parameters
    ----------
    max_bytes : int
        Budget for the tapes (default :data:`DEFAULT_TAPE_BYTES`, 512 MiB). The first step's tape
        is measured (array bytes reachable from it); steps beyond the budget keep their states
        only and recompute their stages in the reverse sweep, as :class:`StoreAll` does.
        Gradients are bitwise the same either way.

    Notes
    -----
    Why a budget: a full tape is ``n_stages`` times the memory of ``StoreAll()`` and grows with
    the number of steps (3.7 GB for the (1024, 128, 512) MLP field over 100 RK4 steps in
    float64), while recomputing a step's stages costs one forward step. On the 2-core benchmark
    machine, whose fresh memory is slow and erratic to fault in, that problem's forward +
    gradient took 6.0-14.9 s fully taped, 6.9-9.2 s with the default budget and 8.7-9.6 s with
    no tape at all (two runs each); the (256, 32, 128) field (264 MB of tapes) stays fully
    taped and is faster taped (161 ms) than with ``StoreAll()`` (198 ms). For methods without
    tapes (linear multistep) this schedule is ``StoreAll()``.
    """

    online = False
    snapshots = None

    def __init__(self, max_bytes: int = DEFAULT_TAPE_BYTES) -> None:
        self.max_bytes = check_positive_int("max_bytes", max_bytes, minimum=0)

    def __repr__(self) -> str:
        return f"Taped(max_bytes={self.max_bytes})"

    def plan(self, n_steps: int | None) -> Generator[Action, Any, None]:
        """The action stream of :class:`StoreAll` (what the executor runs when this schedule
        is used without tapes)."""
        return StoreAll().plan(n_steps)
