"""Checkpointing for discrete adjoints: pure planners, an executor and an instrumented store.

A schedule only *plans*: ``schedule.plan(n_steps)`` yields small action objects
(:class:`Forward`, :class:`Store`, :class:`Restore`, :class:`Free`, :class:`Reverse`,
:class:`EndForward`, :class:`EndReverse`) and never touches arrays. :func:`run_adjoint`
executes them against ``forward_step`` / ``reverse_step`` callbacks; :func:`replay` checks and
counts them symbolically.

Schedules: :class:`StoreAll`, :class:`Uniform` (every k-th state), :class:`Revolve` (binomial,
optimal for known ``n``), :class:`Online` (unknown ``n``). Snapshot budgets count the snapshot
of ``x_0``. See :mod:`._revolve` for the exact counting convention.
"""
from ._actions import Action, EndForward, EndReverse, Forward, Free, Restore, Reverse, Store
from ._executor import PendingAdjoint, begin_adjoint, checkpoint_work, replay, run_adjoint
from ._online import Online, online_ratio
from ._revolve import Revolve, beta, optimal_extra_steps, optimal_forward_steps, repetition_number
from ._schedules import DEFAULT_TAPE_BYTES, Schedule, StoreAll, Taped, Uniform
from ._store import CheckpointError, SnapshotStore

__all__ = [
    "Action", "Forward", "Store", "Restore", "Free", "Reverse", "EndForward", "EndReverse",
    "Schedule", "StoreAll", "Uniform", "Taped", "DEFAULT_TAPE_BYTES", "Revolve", "Online",
    "run_adjoint", "begin_adjoint", "PendingAdjoint", "replay", "checkpoint_work",
    "CheckpointError", "SnapshotStore",
    "beta", "repetition_number", "optimal_extra_steps", "optimal_forward_steps", "online_ratio",
]
