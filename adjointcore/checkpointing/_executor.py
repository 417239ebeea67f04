"""Executor: runs a schedule's actions against user callbacks, validating every action.

The same state machine runs real adjoints (:func:`run_adjoint`) and symbolic replays
(:func:`replay`, no callbacks, O(1) per action), so a schedule that passes the replay is
exactly what the executor will accept.

Driving protocol
----------------
``schedule.plan(n_steps)`` returns a generator of actions. After every action the executor
resumes it with ``generator.send(reply)``; the reply is ``None`` except after a ``Forward`` of
the first sweep, where it is ``True`` when the state just reached is the final one and
``False`` otherwise. Offline schedules ignore the replies (their plan may be any iterable of
actions); :class:`Online` relies on them.
"""
from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from solvers import Work

from ..errors import check_positive_int
from ._actions import EndForward, EndReverse, Forward, Free, Restore, Reverse, Store
from ._schedules import Schedule
from ._store import CheckpointError, SnapshotStore

__all__ = ["checkpoint_work", "run_adjoint", "replay"]


def checkpoint_work(n_steps: int, forward_steps: int, reverse_steps: int, snapshots_written: int,
                    max_live_snapshots: int) -> Work:
    """The :class:`solvers.Work` record of a checkpointed sweep of ``n_steps`` steps
    (``n_accepted = n_steps``; ``recomputed_steps = forward_steps - n_steps``)."""
    return Work(n_accepted=n_steps, forward_steps=forward_steps,
                recomputed_steps=forward_steps - n_steps, reverse_steps=reverse_steps,
                snapshots_written=snapshots_written, max_live_snapshots=max_live_snapshots)


def run_adjoint(schedule: Schedule, n_steps: int | None, *, state0: Any,
                forward_step: Callable[[int, Any], Any],
                reverse_step: Callable[[int, Any, Any], Any], final_bar: Callable[[Any], Any],
                stop: Callable[[int, Any], bool] | None = None,
                max_steps: int | None = None) -> tuple[Any, Work]:
    """Reverse-mode sweep of ``x_{i+1} = forward_step(i, x_i)`` under a checkpoint schedule.

    Parameters
    ----------
    schedule : StoreAll, Uniform, Revolve or Online
        Planner; ``schedule.plan(n_steps)`` yields the actions.
    n_steps : int or None
        Number of steps ``n >= 1``; ``None`` when the end is decided by ``stop`` (only for
        schedules with ``online = True``).
    state0 : object
        Initial state ``x_0`` (opaque; by convention immutable, e.g. a tuple of arrays).
    forward_step : callable ``(i, x_i) -> x_{i+1}``
        Must be deterministic: recomputations must reproduce the first sweep bit for bit.
    reverse_step : callable ``(i, x_i, x_{i+1}_bar) -> x_i_bar``
        Adjoint of step ``i``; called once per step for ``i = n-1, ..., 0``. Loss
        contributions at intermediate states and parameter gradients are the caller's
        business (accumulate them inside this callback).
    final_bar : callable ``(x_n) -> x_n_bar``
        Cotangent of the final state, called once when the forward sweep ends.
    stop : callable ``(i, x_i) -> bool``, optional
        With ``n_steps=None``: called after every first-sweep step with the new state ``x_i``
        (``i >= 1``); ``True`` ends the forward sweep with ``n = i``.
    max_steps : int, optional
        With ``stop``: raise if the forward sweep reaches this many steps without stopping.

    Returns
    -------
    x0_bar : object
        What the last ``reverse_step`` (step 0) returned.
    stats : solvers.Work
        Checkpoint counters: ``forward_steps``, ``recomputed_steps``, ``reverse_steps``,
        ``snapshots_written``, ``max_live_snapshots``, ``n_steps`` and ``taped_steps``.

    Raises
    ------
    CheckpointError
        If the schedule issues an invalid action (see :mod:`._actions`) or exceeds its budget.
    ValueError
        If neither or both of ``n_steps`` and ``stop`` are given, or ``n_steps`` is invalid.
    """
    pending = begin_adjoint(schedule, n_steps, state0=state0, forward_step=forward_step,
                            reverse_step=reverse_step, stop=stop, max_steps=max_steps)
    return pending.finish(final_bar(pending.final_state))


class PendingAdjoint:
    """A checkpointed sweep suspended after its forward sweep (see :func:`begin_adjoint`).

    Attributes
    ----------
    final_state : object
        ``x_n``, reached by the forward sweep.
    n_steps : int
        ``n`` (decided by ``stop`` for online schedules).
    """

    def __init__(self, sweep: Generator[tuple[Any, int], Any, tuple[Any, Work]]) -> None:
        self._sweep: Generator[tuple[Any, int], Any, tuple[Any, Work]] | None = sweep
        self.final_state, self.n_steps = next(sweep)

    @property
    def finished(self) -> bool:
        """True once :meth:`finish` has run (a sweep reverses once)."""
        return self._sweep is None

    def finish(self, final_bar: Any) -> tuple[Any, Work]:
        """Run the reverse sweep from the cotangent ``final_bar`` of ``x_n``.

        Returns
        -------
        x0_bar : object
        stats : solvers.Work
            Checkpoint counters, as :func:`run_adjoint` returns them.

        Raises
        ------
        CheckpointError
            On a second call (the snapshots and tapes have been consumed).
        """
        if self._sweep is None:
            raise CheckpointError("this sweep has already been reversed; its snapshots are "
                                  "gone. Run the forward sweep again (begin_adjoint).")
        sweep, self._sweep = self._sweep, None
        try:
            sweep.send(final_bar)
        except StopIteration as done:
            return done.value
        raise CheckpointError("the checkpoint sweep did not end after its reverse sweep.")


def begin_adjoint(schedule: Schedule, n_steps: int | None, *, state0: Any,
                  forward_step: Callable[[int, Any], Any],
                  reverse_step: Callable[[int, Any, Any], Any],
                  stop: Callable[[int, Any], bool] | None = None,
                  max_steps: int | None = None) -> PendingAdjoint:
    """Run the forward sweep of :func:`run_adjoint` now and the reverse sweep later.

    Same arguments as :func:`run_adjoint` less ``final_bar``: the cotangent of ``x_n`` is
    passed to :meth:`PendingAdjoint.finish` once known. This lets a layer keep its forward
    call's snapshots (or tapes) until its VJP is called, so that the forward sweep runs once.

    Returns
    -------
    PendingAdjoint
    """
    if (n_steps is None) == (stop is None):
        raise ValueError(f"Pass exactly one of `n_steps` (known number of steps) and `stop` "
                         f"(end decided during the forward sweep); got n_steps={n_steps!r} "
                         f"and stop={stop!r}.")
    if n_steps is not None:
        n_steps = check_positive_int("n_steps", n_steps)
    elif not getattr(schedule, "online", False):
        raise ValueError(f"{schedule!r} needs a known number of steps; pass n_steps=..., or "
                         f"use Online(snapshots=...) with `stop`.")
    if max_steps is not None:
        max_steps = check_positive_int("max_steps", max_steps)
    callbacks = (forward_step, reverse_step, stop, max_steps)
    return PendingAdjoint(_sweep(schedule, n_steps, state0, callbacks))


def replay(schedule: Schedule, n_steps: int) -> Work:
    """Run ``schedule`` for ``n_steps`` symbolically and return its counters.

    No state is computed; every action is checked exactly as :func:`run_adjoint` checks it.
    An online schedule is told the end when its forward sweep reaches ``n_steps``.

    Raises
    ------
    CheckpointError
        On the first invalid action.
    """
    n_steps = check_positive_int("n_steps", n_steps)
    sweep = _sweep(schedule, n_steps, None, None)
    next(sweep)
    try:
        sweep.send(None)
    except StopIteration as done:
        return done.value[1]
    raise CheckpointError(f"{schedule!r}: the symbolic sweep did not end.")  # pragma: no cover


def _advance(n0: int, n1: int, x: Any, forward_step: Callable[[int, Any], Any],
             stop: Callable[[int, Any], bool] | None,
             max_steps: int | None) -> tuple[Any, Any, int | None]:
    """Run steps ``n0 .. n1-1``; return ``(x_{n1-1}, x_{n1}, i_stop)``.

    ``i_stop`` is the first index ``i`` with ``stop(i, x_i)`` true, or ``None``.
    """
    prev = None
    for i in range(n0, n1):
        prev = x
        x = forward_step(i, prev)
        if stop is not None:
            if stop(i + 1, x):
                return prev, x, i + 1
            if max_steps is not None and i + 1 >= max_steps:
                raise CheckpointError(f"`stop` did not end the forward sweep within "
                                      f"max_steps={max_steps} steps; check the stop criterion "
                                      f"or raise max_steps.")
    return prev, x, None


def _sweep(schedule: Schedule, n_steps: int | None, state0: Any,
           callbacks: tuple[Any, ...] | None) -> Generator[tuple[Any, int], Any, tuple[Any, Work]]:  # noqa: C901 - one match over 7 actions
    """The state machine shared by :func:`begin_adjoint` and :func:`replay`, as a generator.

    It yields once, at ``EndForward``, the pair ``(x_n, n)``, and is resumed with the
    cotangent of ``x_n`` (``send``); it returns ``(x0_bar, stats)``. ``callbacks`` is ``None``
    for a symbolic replay of ``n_steps`` steps.
    """
    symbolic = callbacks is None
    forward_step, reverse_step, stop, max_steps = callbacks or (None,) * 4
    store = SnapshotStore(getattr(schedule, "snapshots", None))
    n = n_steps                  # final index, once known
    at: int | None
    at, x, prev = 0, state0, None  # current index (None: no current state), state, x_{at-1}
    has_prev = False
    ended, r, bar = False, None, None   # forward sweep over; next step to reverse; its cotangent
    n_fwd = n_rev = 0
    gen = iter(schedule.plan(None if schedule.online else n_steps))
    resume = gen.send if hasattr(gen, "send") else (lambda _reply: next(gen))
    reply = None
    while True:
        try:
            action = resume(reply)
        except StopIteration:
            raise CheckpointError(f"{schedule!r} ended without EndReverse (next step to "
                                  f"reverse: {r}).") from None
        reply = None
        match action:
            case Forward(n0=n0, n1=n1):
                if at != n0 or n1 <= n0:
                    raise CheckpointError(f"{action}: the current state is x_{at}; a Forward "
                                          f"must start there and advance at least one step.")
                limit = r if ended else n
                if limit is not None and n1 > limit:
                    what = "the adjoint position" if ended else "the final step"
                    raise CheckpointError(f"{action} advances past {what} ({limit}).")
                prev, i_stop = None, None     # never hold x_{n1-1} through the advance
                if not symbolic:
                    prev, x, i_stop = _advance(n0, n1, x, forward_step,
                                               None if ended else stop, max_steps)
                n_fwd += n1 - n0
                at, has_prev = n1, not ended
                if ended:
                    prev = None               # only the first sweep hands x_{n-1} over
                if not ended:
                    if i_stop is not None and i_stop != n1:
                        raise CheckpointError(f"{action}: `stop` ended the forward sweep at "
                                              f"step {i_stop}, inside the advance.")
                    if i_stop is not None:
                        n = i_stop
                    reply = n1 == n
            case Store(n=k):
                if at != k:
                    raise CheckpointError(f"{action}: the current state is x_{at}, not x_{k}.")
                store.put(k, x)
            case Restore(n=k):
                x, at, prev, has_prev = store.get(k), k, None, False
            case Free(n=k):
                store.drop(k)
            case EndForward(n=k):
                if ended or not has_prev or at != k or k != n:
                    raise CheckpointError(f"{action}: the forward sweep must end right after "
                                          f"the Forward that reaches the final step (current "
                                          f"x_{at}, final step {n}, ended={ended}).")
                bar = yield x, n
                ended, r, at, x, prev, has_prev = True, k - 1, k - 1, prev, None, False
            case Reverse(n=i):
                if not ended:
                    raise CheckpointError(f"{action} before EndForward.")
                if i != r or at != i:
                    raise CheckpointError(f"{action}: expected Reverse({r}) with the current "
                                          f"state x_{r}; current is x_{at}.")
                bar = None if symbolic else reverse_step(i, x, bar)
                n_rev, r, at, x = n_rev + 1, r - 1, None, None
            case EndReverse():
                if not ended or r != -1 or len(store):
                    raise CheckpointError(f"{action}: steps 0..{r} not reversed or snapshots "
                                          f"{store.keys()} still live.")
                break
            case _:
                raise TypeError(f"Unexpected checkpointing action {action!r} from {schedule!r}.")
    if next(gen, None) is not None:
        raise CheckpointError(f"{schedule!r} yielded actions after EndReverse.")
    # n is known once the sweep ended
    return bar, checkpoint_work(n, n_fwd, n_rev, store.written, store.max_live)  # type: ignore[arg-type]
