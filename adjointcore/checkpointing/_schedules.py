"""The schedule interface and the two simple offline schedules, StoreAll and Uniform."""
from __future__ import annotations

from typing import Generator, Protocol

from ..errors import check_positive_int
from ._actions import Action
from ._revolve import check_n_steps, offline_plan

__all__ = ["Schedule", "StoreAll", "Uniform"]


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

    snapshots: int | None
    online: bool

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

    def plan(self, n_steps: int):
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

    def __init__(self, every: int):
        self.every = check_positive_int("every", every)

    def __repr__(self) -> str:
        return f"Uniform(every={self.every})"

    def plan(self, n_steps: int):
        """Generator of the actions for ``n_steps`` steps."""
        n = check_n_steps(n_steps, "Uniform")
        k = self.every
        positions = list(range(0, n - 1, k))
        # k slots per segment: the segment's own snapshot plus its k - 1 interior states, so
        # the binomial reversal degenerates to "store every state" (repetition number 1).
        return offline_plan(positions, n, [k] * len(positions))
