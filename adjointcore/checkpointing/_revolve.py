"""Binomial checkpointing (Revolve): optimal counts, the split rule and the shared planners.

Convention
----------
``s`` snapshots *include* the one that holds the initial state ``x_0`` (as in Griewank &
Walther and ``checkpoint_schedules``). With ``beta(s, t) = C(s + t, s)`` and ``t`` the
repetition number, ``beta(s, t-1) < n <= beta(s, t)``, the minimal number of extra forward
advances is (Griewank 1992, Griewank & Walther 2000, eq. (2))::

    m(n, s) = t * n - beta(s + 1, t - 1)      # = min_i [i + m(i, s) + m(n - i, s - 1)]

and the published total of forward-step executions, the "taping" run of every step before its
reversal included, is ``n + m(n, s)`` (:func:`optimal_forward_steps`; e.g. 4636 for
``n = 1000, s = 10`` and 416 for ``n = 100, s = 5``).

In this package a reverse step recomputes its step's internals from ``x_i`` itself, so no
separate taping run exists: the executor calls ``forward_step`` exactly ``m(n, s) + 1`` times
under :class:`Revolve` (the ``+ 1`` is the last step, which Griewank & Walther fold into its
taping run). Hence ``forward_steps + reverse_steps - 1 == n + m(n, s)`` exactly, and both
counts are optimal for their model.

References
----------
A. Griewank (1992), Achieving logarithmic growth of temporal and spatial complexity in reverse
automatic differentiation, Optim. Methods Softw. 1:35-54.
A. Griewank, A. Walther (2000), Algorithm 799: Revolve, ACM TOMS 26(1):19-45.
"""
from __future__ import annotations

from collections.abc import Generator, Sequence
from functools import lru_cache
from math import comb
from typing import Any

from ..errors import check_positive_int
from ._actions import Action, EndForward, EndReverse, Forward, Free, Restore, Reverse, Store

__all__ = ["beta", "repetition_number", "optimal_extra_steps", "optimal_forward_steps",
           "Revolve"]

_STORED, _UNSTORED = "stored", "unstored"


def beta(s: int, t: int) -> int:
    """``C(s + t, s)``: most steps ``s`` snapshots reverse with ``t`` repetitions (0 if t < 0)."""
    return comb(s + t, s) if t >= 0 else 0


def repetition_number(n: int, s: int) -> int:
    """Smallest ``t`` with ``beta(s, t) >= n`` (0 for ``n <= 1``)."""
    t, b = 0, 1
    while b < n:
        t += 1
        b = b * (s + t) // t
    return t


def optimal_extra_steps(n: int, s: int) -> int:
    """Minimal extra forward advances ``m(n, s) = t n - beta(s+1, t-1)`` (see module notes)."""
    n = check_positive_int("n", n)
    s = check_positive_int("s", s)
    t = repetition_number(n, s)
    return t * n - beta(s + 1, t - 1)


def optimal_forward_steps(n: int, s: int) -> int:
    """Published binomial optimum ``n + m(n, s)`` (taping runs included).

    Examples
    --------
    >>> optimal_forward_steps(1000, 10), optimal_forward_steps(100, 5)
    (4636, 416)
    """
    return n + optimal_extra_steps(n, s)


@lru_cache(maxsize=1 << 16)
def advance(length: int, s: int) -> int:
    """Optimal first advance for reversing ``length >= 2`` steps with ``s >= 2`` snapshots.

    Any ``i`` with ``i + m(i, s) + m(length - i, s - 1) == m(length, s)`` is optimal; since
    ``m(., s)`` is convex and piecewise linear with slope ``t`` on
    ``(beta(s, t-1), beta(s, t)]``, the optimal ``i`` are those with ``m(i, s)`` of slope
    ``t - 1`` and ``m(length - i, s - 1)`` of slope ``t``. This returns the largest such ``i``
    (the latest snapshot position).
    """
    t = repetition_number(length, s)
    return min(beta(s, t - 1), length - beta(s - 1, t - 1))


def forward_sweep(positions: Sequence[int], n: int) -> Generator[Action, Any, None]:
    """Actions of a first sweep to ``x_n`` storing the given ascending ``positions`` (< n)."""
    at = 0
    for p in positions:
        if p > at:
            yield Forward(at, p)
            at = p
        yield Store(p)
    yield Forward(at, n)
    yield EndForward(n)


def reversal(positions: Sequence[int], n: int,
             slots: Sequence[int]) -> Generator[Action, Any, None]:
    """Actions after ``EndForward(n)`` down to ``EndReverse``, given snapshots at ``positions``.

    Segment ``j`` runs from ``positions[j]`` to the next position (the last one to ``n - 1``,
    since ``x_{n-1}`` is current after ``EndForward``) and is reversed, last segment first,
    with ``slots[j]`` snapshots (its own included) by the binomial rule of :func:`advance`,
    costing ``m(length, slots[j])`` forward steps; then its snapshot is freed.

    With ``L`` steps and ``s`` slots from a stored ``x_a``: ``s == 1`` re-advances from ``x_a``
    for every step; otherwise advance ``i = advance(L, s)`` steps, reverse the tail from
    ``x_{a+i}`` with ``s - 1`` slots, restore ``x_a`` and reverse the head with ``s`` slots.
    One explicit stack (no recursion), so every action costs O(1) whatever the depth.
    """
    ends = list(positions[1:]) + [n - 1]
    stack: list[Action | tuple[str, int, int, int]] = [EndReverse()]
    # strict=False: no positions (nothing stored) leaves `ends == [n - 1]` unpaired, as intended
    for j, (p, b) in enumerate(zip(positions, ends, strict=False)):
        stack.append(Free(p))
        if b > p:
            stack.extend(((_STORED, p, b, slots[j]), Restore(p)))
    stack.append(Reverse(n - 1))
    while stack:
        item = stack.pop()
        if not isinstance(item, tuple):
            yield item
            continue
        kind, a, b, s = item
        if b - a == 1:
            yield Reverse(a)
        elif kind is _UNSTORED:
            yield Store(a)
            stack.extend((Free(a), (_STORED, a, b, s)))
        elif s == 1:
            for j in range(b - 1, a, -1):
                yield Forward(a, j)
                yield Reverse(j)
                yield Restore(a)
            yield Reverse(a)
        else:
            k = a + advance(b - a, s)
            yield Forward(a, k)
            stack.extend(((_STORED, a, k, s), Restore(a), (_UNSTORED, k, b, s - 1)))


def offline_plan(positions: Sequence[int], n: int,
                 slots: Sequence[int]) -> Generator[Action, Any, None]:
    """Complete plan: :func:`forward_sweep` then :func:`reversal`."""
    yield from forward_sweep(positions, n)
    yield from reversal(positions, n, slots)


def sweep_cost(positions: Sequence[int], n: int, slots: Sequence[int]) -> int:
    """Forward steps of :func:`offline_plan` (closed form, O(len(positions)))."""
    ends = list(positions[1:]) + [n - 1]
    return n + sum(optimal_extra_steps(b - p, slots[j])
                   for j, (p, b) in enumerate(zip(positions, ends, strict=False)) if b > p)


def check_n_steps(n_steps: int | None, schedule: str) -> int:
    """Validate the ``n_steps`` of an offline schedule."""
    if n_steps is None:
        raise ValueError(f"{schedule}.plan needs the number of steps, got n_steps=None; use "
                         f"Online(snapshots=...) when the number of steps is not known.")
    return check_positive_int("n_steps", n_steps)


class Revolve:
    """Binomial checkpointing, optimal for a known number of steps.

    Parameters
    ----------
    snapshots : int
        Snapshot budget ``s >= 1``, the one holding ``x_0`` included.

    Notes
    -----
    The first sweep stores ``x_0`` and then, with ``r`` snapshots left and ``L`` steps to go,
    the state :func:`advance` ``(L, r)`` steps further on, until one snapshot is left. Each
    segment between snapshots is then reversed, last first, by the same binomial rule with
    every snapshot not held by an earlier segment. ``forward_step`` runs exactly
    ``m(n, s) + 1`` times (module notes); at most ``s`` snapshots are live.
    """

    online = False

    def __init__(self, snapshots: int) -> None:
        self.snapshots = check_positive_int("snapshots", snapshots)

    def __repr__(self) -> str:
        return f"Revolve(snapshots={self.snapshots})"

    def positions(self, n_steps: int | None) -> list[int]:
        """Snapshot positions of the first sweep."""
        n = check_n_steps(n_steps, "Revolve")
        out, p, left = [], 0, self.snapshots
        while n - p >= 2 and left >= 1:
            out.append(p)
            if left == 1:
                break
            p += advance(n - p, left)
            left -= 1
        return out

    def plan(self, n_steps: int | None) -> Generator[Action, Any, None]:
        """Generator of the actions for ``n_steps`` steps (ends with ``EndReverse``)."""
        positions = self.positions(n_steps)
        slots = [self.snapshots - j for j in range(len(positions))]
        # an int: positions() checked it
        return offline_plan(positions, n_steps, slots)  # type: ignore[arg-type]
