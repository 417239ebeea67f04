"""What a solve returns: ``Solution``, its ``Status`` and ``SolveError``; its work is a
:class:`~solvers.Work` record."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from ._work import Work
from ._xp import Array

if TYPE_CHECKING:
    from ._dense import DenseOutput
    from ._rk import RKStages


class Status(enum.Enum):
    """Outcome of a solve."""

    SUCCESS = 0
    MAX_STEPS = 1
    STEP_UNDERFLOW = 2
    NON_FINITE = 3


#: What each status means and what to try.
MESSAGES = {
    Status.SUCCESS: "The solver reached the end of the span.",
    Status.MAX_STEPS: ("Stopped after `max_steps` attempted steps before reaching the end of the "
                       "span. Raise `max_steps`, loosen `rtol`/`atol`, or use fewer fixed `steps`; "
                       "many rejected steps suggest a stiff problem."),
    Status.STEP_UNDERFLOW: ("The step size fell below the floating-point resolution of t: the "
                            "solution is probably singular (blows up) near the last time reached, "
                            "or the tolerances are unattainable. Loosen `rtol`/`atol` or shorten "
                            "the span."),
    Status.NON_FINITE: ("The state became non-finite (inf/NaN). With fixed `steps` the step is "
                        "probably outside the method's stability region (use more steps); "
                        "otherwise the solution may blow up."),
}


@dataclass(frozen=True, eq=False)
class Solution:
    """Result of :func:`solvers.solve`.

    Attributes
    ----------
    ts : ndarray, shape (T,), float64 host
        Output times: ``t_eval`` (those reached), else ``grid``.
    ys : array, shape ``(T, *y0.shape)``
        States at ``ts`` (first axis time), on the array module of ``y0``.
    grid : ndarray, shape (n + 1,), float64 host
        Accepted step times including ``t0`` (and ``t1`` on success).
    status : Status
    message : str
    stats : Work
        Work of the solve: ``forward_nfe`` (every ``field.forward`` call; also ``stats.nfe``),
        ``n_accepted``, ``n_rejected`` and ``dense_evals`` (points interpolated for
        ``t_eval``); the other counters are 0.
    method : str
    sol : DenseOutput or None
        Dense output ``sol(t)`` over ``[grid[0], grid[-1]]`` (None with ``dense_output=False``).
    stages : tuple of RKStages or None
        With ``solve(..., keep_stages=True)`` (adaptive RK): each accepted step's live stages
        and field caches, what a taped discrete adjoint of the frozen grid needs (bitwise the
        stages a replay of ``grid`` would compute).
    step_sizes : ndarray, shape (n_accepted,), float64 host
        Signed size of each accepted step; ``grid[i + 1] == grid[i] + step_sizes[i]`` except
        possibly the final point, which is set to ``t1`` exactly.
    """

    ts: NDArray[np.float64]
    ys: Array
    grid: NDArray[np.float64]
    status: Status
    message: str
    stats: Work
    method: str
    sol: DenseOutput | None = None
    stages: tuple[RKStages, ...] | None = None
    step_sizes: NDArray[np.float64] | None = None

    @property
    def success(self) -> bool:
        """True iff ``status is Status.SUCCESS``."""
        return self.status is Status.SUCCESS


class SolveError(RuntimeError):
    """A solve failed; ``.result`` holds the partial :class:`Solution`."""

    def __init__(self, result: Solution) -> None:
        self.result = result
        super().__init__(f"solve ({result.method}) failed with status {result.status.name} at "
                         f"t = {result.grid[-1]!r} after {result.stats.n_accepted} accepted and "
                         f"{result.stats.n_rejected} rejected steps: {result.message}")
