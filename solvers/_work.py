"""``Work``: the one record of what a solve, an adjoint, a checkpointed sweep or a block did.

Every entry point that integrates or differentiates reports its work in this record, with the
counters that do not apply left at 0, so work from different methods can be compared field by
field and summed (``+``; ``max_live_snapshots`` takes the maximum).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

__all__ = ["Work"]


@dataclass(frozen=True)
class Work:
    """Work counters of one solve, adjoint, checkpointed sweep or block call.

    Attributes
    ----------
    forward_nfe : int
        Field evaluations of the forward solve (for a discrete adjoint: of its first forward
        sweep), every ``field.forward`` counted.
    n_accepted, n_rejected : int
        Accepted and rejected steps of the forward solve (a fixed grid of ``n`` steps: ``n``
        and 0).
    backward_nfe : int
        Field evaluations of the backward phase: steps and stages recomputed by a discrete
        adjoint (checkpointing, stage recomputation), or the augmented backward system's
        evaluations of a continuous adjoint (each one field evaluation and one VJP).
    vjps : int
        Field VJPs.
    backward_accepted, backward_rejected : int
        Accepted and rejected steps of the backward solves (continuous adjoints).
    n_intervals : int
        Backward solves (one per observation interval) of a continuous adjoint.
    dense_evals : int
        Points at which a dense-output interpolant was evaluated: ``t_eval`` outputs between
        grid points, and the interpolated adjoint's reads of ``y(t)``. Not field evaluations.
    forward_steps : int
        Forward steps run by a checkpointed sweep: the first sweep plus recomputations.
    recomputed_steps : int
        ``forward_steps - n_steps``: steps run again because their state was not stored.
    reverse_steps : int
        Step VJPs of a checkpointed sweep (always ``n_steps``).
    snapshots_written : int
        States stored by the checkpoint schedule.
    max_live_snapshots : int
        Largest number of states stored at once (the schedule's memory).
    """

    forward_nfe: int = 0
    n_accepted: int = 0
    n_rejected: int = 0
    backward_nfe: int = 0
    vjps: int = 0
    backward_accepted: int = 0
    backward_rejected: int = 0
    n_intervals: int = 0
    dense_evals: int = 0
    forward_steps: int = 0
    recomputed_steps: int = 0
    reverse_steps: int = 0
    snapshots_written: int = 0
    max_live_snapshots: int = 0

    @property
    def nfe(self) -> int:
        """All field evaluations, ``forward_nfe + backward_nfe``."""
        return self.forward_nfe + self.backward_nfe

    @property
    def n_steps(self) -> int:
        """Attempted forward steps, ``n_accepted + n_rejected``."""
        return self.n_accepted + self.n_rejected

    @property
    def taped_steps(self) -> int:
        """Forward-step executions of a checkpointed sweep counted as Griewank & Walther do.

        Their model re-runs each step once in "taping" mode right before its reversal, the last
        step's taping being the forward sweep's final step; here the reverse step does that
        re-run itself, so the count is ``forward_steps + reverse_steps - 1``. Under ``Revolve``
        this equals ``optimal_forward_steps(n, s)`` exactly.
        """
        return self.forward_steps + self.reverse_steps - 1

    def __add__(self, other: "Work") -> "Work":
        """Field-wise sum (``max_live_snapshots``: the maximum), e.g. forward + backward."""
        if not isinstance(other, Work):
            return NotImplemented
        mine, theirs = self.__dict__, other.__dict__
        values = {name: mine[name] + theirs[name] for name in _COUNTERS}
        values["max_live_snapshots"] = max(self.max_live_snapshots, other.max_live_snapshots)
        return Work(**values)

    def replace(self, **changes: int) -> "Work":
        """This work with the given counters replaced (``dataclasses.replace`` without its
        per-call field introspection)."""
        return Work(**{**self.__dict__, **changes})

    def as_backward(self) -> "Work":
        """This work (a solve of a backward system) counted as the backward phase of an
        adjoint: its evaluations become ``backward_nfe`` and ``vjps`` (each evaluation of the
        augmented system is one field evaluation and one VJP), its steps backward steps."""
        return Work(backward_nfe=self.forward_nfe, vjps=self.forward_nfe,
                    backward_accepted=self.n_accepted, backward_rejected=self.n_rejected,
                    n_intervals=1, dense_evals=self.dense_evals)

    def checkpoint_part(self) -> "Work":
        """Only the checkpoint counters (and ``n_accepted``, the swept steps): what a
        checkpoint schedule decides, e.g. to compare with ``checkpointing.replay``."""
        return Work(n_accepted=self.n_accepted, forward_steps=self.forward_steps,
                    recomputed_steps=self.recomputed_steps, reverse_steps=self.reverse_steps,
                    snapshots_written=self.snapshots_written,
                    max_live_snapshots=self.max_live_snapshots)

    def summary(self) -> str:
        """The non-zero counters, e.g. ``"forward_nfe=25 n_accepted=4 vjps=24"``."""
        return " ".join(f"{f.name}={getattr(self, f.name)}" for f in dataclasses.fields(self)
                        if getattr(self, f.name))


#: The counters' names in field order (what ``+`` sums).
_COUNTERS = tuple(f.name for f in dataclasses.fields(Work))
