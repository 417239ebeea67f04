"""Instrumented snapshot store: holds state references and counts what a schedule does."""
from __future__ import annotations

from typing import Any

__all__ = ["CheckpointError", "SnapshotStore"]


class CheckpointError(RuntimeError):
    """A schedule issued an action that is invalid in the current checkpointing state."""


class SnapshotStore:
    """Snapshots keyed by step index, with a hard budget and usage counters.

    States are stored by reference (states are immutable by convention: a forward step
    returns new arrays), so a snapshot costs one state's memory only while nothing else
    holds it.

    Parameters
    ----------
    budget : int or None
        Largest number of simultaneously live snapshots; ``None`` for unbounded.

    Attributes
    ----------
    max_live : int
        Largest number of simultaneously live snapshots seen so far.
    written : int
        Number of ``put`` calls.

    Notes
    -----
    The store is the one piece of mutable bookkeeping of an adjoint run; it lives for one
    :func:`~adjointcore.checkpointing.run_adjoint` call and is owned by it.
    """

    __slots__ = ("budget", "_data", "max_live", "written")

    def __init__(self, budget: int | None = None) -> None:
        self.budget = budget
        self._data: dict[int, object] = {}
        self.max_live = 0
        self.written = 0

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, n: int) -> bool:
        return n in self._data

    def keys(self) -> list[int]:
        """Stored step indices, ascending."""
        return sorted(self._data)

    def put(self, n: int, state: Any) -> None:
        """Store ``state`` as snapshot ``n``.

        Raises
        ------
        CheckpointError
            If ``n`` is already stored or the budget would be exceeded.
        """
        if n in self._data:
            raise CheckpointError(f"Store({n}): snapshot {n} is already stored; a schedule "
                                  f"must Free({n}) before storing it again.")
        if self.budget is not None and len(self._data) >= self.budget:
            raise CheckpointError(
                f"Store({n}): the snapshot budget of {self.budget} is exhausted (live: "
                f"{self.keys()}); the schedule must Free a snapshot first.")
        self._data[n] = state
        self.written += 1
        self.max_live = max(self.max_live, len(self._data))

    def get(self, n: int) -> Any:
        """Return snapshot ``n`` (kept in the store)."""
        try:
            return self._data[n]
        except KeyError:
            raise CheckpointError(f"Restore({n}): no snapshot {n} (live: {self.keys()}).") \
                from None

    def drop(self, n: int) -> None:
        """Remove snapshot ``n``."""
        if self._data.pop(n, _MISSING) is _MISSING:
            raise CheckpointError(f"Free({n}): no snapshot {n} (live: {self.keys()}).")


_MISSING = object()
