"""Checkpointing actions: the vocabulary a schedule speaks to an executor.

Model
-----
A forward computation of ``n`` steps ``x_{i+1} = F_i(x_i)``, ``i = 0 .. n-1``, and a reverse
sweep that runs the adjoint of step ``i`` for ``i = n-1, ..., 0``. The adjoint of step ``i``
needs only ``x_i`` (the step VJP recomputes the step's internals from it). Steps are integers;
"state ``k``" means ``x_k``, the state at the *start* of step ``k``.

An executor holds one *current state* (its index is known to it) and a set of snapshots.
Each action states its precondition on that model; :func:`adjointcore.checkpointing.replay`
checks every one of them symbolically.

========================  ===================================================================
action                    meaning (precondition -> effect)
========================  ===================================================================
``Forward(n0, n1)``       current is ``x_{n0}``, ``n0 < n1`` -> advance over steps
                          ``n0 .. n1-1``; current is ``x_{n1}``. In the first sweep the input of
                          the last step, ``x_{n1-1}``, is kept until the next action.
``Store(n)``              current is ``x_n`` and ``n`` is not stored -> snapshot ``n`` holds it.
``Restore(n)``            snapshot ``n`` exists -> current is ``x_n`` (the snapshot is kept).
``Free(n)``               snapshot ``n`` exists -> it is dropped.
``Reverse(n)``            forward sweep ended, steps ``> n`` reversed, current is ``x_n`` -> the
                          adjoint of step ``n`` runs; there is no current state afterwards.
``EndForward(n)``         the forward sweep just reached ``x_n`` (the last action was a
                          ``Forward`` ending at ``n``) -> the final cotangent is seeded from
                          ``x_n``, and the current state becomes ``x_{n-1}``, the input of
                          that last step (so ``Reverse(n-1)`` needs no snapshot or recompute).
``EndReverse()``          every step reversed, no snapshot left -> done.
========================  ===================================================================

The ``EndForward`` hand-over is the only place an executor holds two states between actions;
it mirrors the "taping" of the last step in Griewank & Walther's model (see
:mod:`adjointcore.checkpointing._revolve`).

References
----------
A. Griewank, A. Walther (2000), Algorithm 799: Revolve, ACM TOMS 26(1):19-45.
The action names follow the spirit of ``checkpoint_schedules`` (firedrakeproject).
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Action", "Forward", "Store", "Restore", "Free", "Reverse", "EndForward",
           "EndReverse"]


@dataclass(frozen=True, slots=True)
class Action:
    """Base class of all checkpointing actions (never yielded itself)."""


@dataclass(frozen=True, slots=True)
class Forward(Action):
    """Advance from the start of step ``n0`` to the start of step ``n1`` (steps n0..n1-1).

    Example: ``Forward(10, 25)`` runs steps 10 to 24 inclusive and leaves ``x_25`` current.
    """

    n0: int
    n1: int


@dataclass(frozen=True, slots=True)
class Store(Action):
    """Keep the current state ``x_n`` as snapshot ``n``."""

    n: int


@dataclass(frozen=True, slots=True)
class Restore(Action):
    """Make snapshot ``n`` the current state (the snapshot stays stored)."""

    n: int


@dataclass(frozen=True, slots=True)
class Free(Action):
    """Drop snapshot ``n``."""

    n: int


@dataclass(frozen=True, slots=True)
class Reverse(Action):
    """Run the adjoint of step ``n``; the current state must be ``x_n``."""

    n: int


@dataclass(frozen=True, slots=True)
class EndForward(Action):
    """The forward sweep ends at ``x_n``: seed the final cotangent; ``x_{n-1}`` becomes current."""

    n: int


@dataclass(frozen=True, slots=True)
class EndReverse(Action):
    """The reverse sweep is complete."""
