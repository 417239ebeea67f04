"""Online checkpointing: a snapshot budget for a number of steps known only at the end.

The forward sweep places snapshots by the dynamic rule of Wang, Moin & Iaccarino (2009):
every snapshot carries a *level*; a snapshot is *dispensable* when a later snapshot has a
higher level. Each new state is stored; when the budget is full, the most recent dispensable
snapshot is dropped (the new one gets level 0), or, if there is none, the most recent
snapshot is dropped and the new one gets that snapshot's level plus one. ``x_0`` has an
infinite level and is never dropped. Once the end ``n`` is known, the segments between the
snapshots are reversed with the binomial rule, last first, each with every snapshot not held
by an earlier segment (as :class:`Revolve` does after its first sweep).

References
----------
Q. Wang, P. Moin, G. Iaccarino (2009), Minimal repetition dynamic checkpointing algorithm for
unsteady adjoint calculation, SIAM J. Sci. Comput. 31(4):2549-2567.
P. Stumm, A. Walther (2010), New algorithms for optimal online checkpointing, SIAM J. Sci.
Comput. 32(2):836-854 (an alternative placement with offline-optimal counts for
``n <= beta(s, 2)``; not implemented here).
"""
from __future__ import annotations

from collections.abc import Generator, Sequence
from math import inf

from ..errors import check_positive_int
from ._actions import Action, EndForward, Forward, Free, Store
from ._executor import replay
from ._revolve import Revolve, reversal

__all__ = ["Online", "online_ratio"]


class Online:
    """Online checkpointing with at most ``snapshots`` live snapshots, ``x_0``'s included.

    Parameters
    ----------
    snapshots : int
        Snapshot budget ``s >= 1``.

    Notes
    -----
    ``plan(None)`` advances one step per ``Forward`` and reads the executor's reply (``True``
    when the state reached is final), so it must be driven by
    :func:`~adjointcore.checkpointing.run_adjoint` or :func:`~adjointcore.checkpointing.replay`,
    not iterated directly. Its forward-step count relative to :class:`Revolve` for the same
    ``n`` is :func:`online_ratio`.
    """

    online = True

    def __init__(self, snapshots: int) -> None:
        self.snapshots = check_positive_int("snapshots", snapshots)

    def __repr__(self) -> str:
        return f"Online(snapshots={self.snapshots})"

    def plan(self, n_steps: int | None = None) -> Generator[Action, bool | None, None]:
        """Generator of actions for a forward sweep whose end is sent in by the executor.

        Parameters
        ----------
        n_steps : None
            Must be ``None``: the end is only learnt from the executor's replies.
        """
        if n_steps is not None:
            raise ValueError(f"Online.plan takes n_steps=None (the end comes from the "
                             f"executor), got {n_steps!r}; run_adjoint handles this.")
        s = self.snapshots
        level: float
        positions, levels = [0], [inf]
        yield Store(0)
        m = 0
        while not (yield Forward(m, m + 1)):
            m += 1
            if s == 1:
                continue
            if len(positions) < s:
                level = 0
            else:
                k = _most_recent_dispensable(levels)
                level = 0 if k is not None else levels[-1] + 1
                k = len(positions) - 1 if k is None else k
                yield Free(positions.pop(k))
                levels.pop(k)
            yield Store(m)
            positions.append(m)
            levels.append(level)
        n = m + 1
        yield EndForward(n)
        yield from reversal(positions, n, [s - j for j in range(len(positions))])


def _most_recent_dispensable(levels: Sequence[float]) -> int | None:
    """Index of the latest snapshot with a higher-level snapshot after it, or ``None``."""
    highest_later: float = -1
    for k in range(len(levels) - 1, 0, -1):
        if levels[k] < highest_later:
            return k
        highest_later = max(highest_later, levels[k])
    return None


def online_ratio(n_steps: int, snapshots: int) -> float:
    """Forward steps of :class:`Online` over those of :class:`Revolve` (offline optimum).

    Both counts come from a symbolic :func:`~adjointcore.checkpointing.replay` of
    ``n_steps`` steps with the same snapshot budget.
    """
    online = replay(Online(snapshots), n_steps).forward_steps
    return online / replay(Revolve(snapshots), n_steps).forward_steps
