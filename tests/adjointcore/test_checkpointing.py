"""Checkpoint executor: symbolic validity, bitwise identity with store-all, mutation tests."""
import numpy as np
import pytest

from adjointcore.checkpointing import (
    CheckpointError,
    EndForward,
    Forward,
    Free,
    Online,
    Restore,
    Reverse,
    Revolve,
    SnapshotStore,
    Store,
    StoreAll,
    Uniform,
    replay,
    run_adjoint,
)


def _schedules(n):
    """Every schedule family over its interesting parameters for ``n`` steps."""
    out = [StoreAll()]
    out += [Uniform(k) for k in (1, 2, 3, 5, n + 1)]
    out += [Revolve(s) for s in sorted({1, 2, 3, n // 2 + 1, n - 1, n, n + 3} - {0})]
    out += [Online(s) for s in (1, 2, 3, 5, n + 1)]
    return out


def _tracking_run(schedule, n):
    """Run with integer states: x_i is i, so a wrong current state cannot go unnoticed."""
    calls = []

    def forward_step(i, x):
        assert x == i, f"forward_step({i}) got x_{x}"
        return i + 1

    def reverse_step(i, x, x_next_bar):
        assert x == i and x_next_bar == ("bar", i + 1), (i, x, x_next_bar)
        calls.append(i)
        return ("bar", i)

    def final_bar(x):
        assert x == n
        return ("bar", n)

    x0_bar, stats = run_adjoint(schedule, n, state0=0, forward_step=forward_step,
                                reverse_step=reverse_step, final_bar=final_bar)
    assert calls == list(range(n - 1, -1, -1)) and x0_bar == ("bar", 0)
    return stats


@pytest.mark.parametrize("n", [1, 2, 3, 4, 7, 16, 33])
def test_every_schedule_replays_validly(n):
    for schedule in _schedules(n):
        stats = _tracking_run(schedule, n)
        assert stats == replay(schedule, n), schedule
        assert stats.reverse_steps == n and stats.forward_steps >= n
        if schedule.snapshots is not None:
            assert stats.max_live_snapshots <= schedule.snapshots


@pytest.mark.parametrize("n, k", [(10, 3), (37, 4), (64, 8), (100, 10)])
def test_uniform_counts(n, k):
    stats = replay(Uniform(k), n)
    assert stats.forward_steps <= 2 * n
    assert stats.max_live_snapshots <= -(-n // k) + k - 1


def test_store_all_counts():
    stats = replay(StoreAll(), 50)
    assert stats.recomputed_steps == 0 and stats.max_live_snapshots == 49


# --- bitwise identity on a real nonlinear step -------------------------------------------

def _problem(n, dim=6, seed=3):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    b = rng.standard_normal(dim) * 0.1
    x0 = rng.standard_normal(dim)
    h = 1.0 / n
    observed = set(range(0, n + 1, 3))      # loss 0.5 |x_i|^2 at every third state
    return W, b, x0, h, observed


def _gradients(schedule, n, W, b, x0, h, observed):
    """(x0_bar, W_bar, b_bar) of L = sum_{i observed} 0.5 |x_i|^2 for x -> x + h tanh(W x + b)."""
    grads = {"W": np.zeros_like(W), "b": np.zeros_like(b)}

    def forward_step(i, state):
        (x,) = state
        return (x + h * np.tanh(W @ x + b),)

    def reverse_step(i, state, state_next_bar):
        (x,), (y_bar,) = state, state_next_bar
        z = np.tanh(W @ x + b)                  # recompute the step's internals from x_i
        u_bar = h * y_bar * (1.0 - z * z)
        grads["W"] += np.outer(u_bar, x)
        grads["b"] += u_bar
        x_bar = y_bar + W.T @ u_bar
        if i in observed:
            x_bar = x_bar + x
        return (x_bar,)

    def final_bar(state):
        (x,) = state
        return (x.copy() if n in observed else np.zeros_like(x),)

    (x0_bar,), stats = run_adjoint(schedule, n, state0=(x0,), forward_step=forward_step,
                                   reverse_step=reverse_step, final_bar=final_bar)
    return x0_bar, grads["W"], grads["b"], stats


def _loss(n, W, b, x0, h, observed):
    x, total = x0, 0.0
    for i in range(n + 1):
        if i in observed:
            total += 0.5 * float(x @ x)
        if i < n:
            x = x + h * np.tanh(W @ x + b)
    return total


def test_store_all_gradient_matches_central_differences():
    n = 24
    W, b, x0, h, observed = _problem(n)
    x0_bar, W_bar, _, _ = _gradients(StoreAll(), n, W, b, x0, h, observed)
    rng = np.random.default_rng(7)
    for value, grad, which in ((x0, x0_bar, "x0"), (W, W_bar, "W")):
        v = rng.standard_normal(value.shape)
        eps = 1e-6

        def loss_at(delta, which=which):
            args = {"W": W, "x0": x0} | {which: (x0 if which == "x0" else W) + delta}
            return _loss(n, args["W"], b, args["x0"], h, observed)

        fd = (loss_at(eps * v) - loss_at(-eps * v)) / (2 * eps)
        # central difference: truncation O(eps^2) ~ 1e-12, rounding ~ 1e-16/eps ~ 1e-10
        assert abs(fd - np.sum(grad * v)) <= 1e-8 * max(1.0, abs(fd))


@pytest.mark.parametrize("n", [1, 2, 9, 24])
def test_checkpointed_gradients_are_bitwise_store_all(n):
    W, b, x0, h, observed = _problem(n)
    ref = _gradients(StoreAll(), n, W, b, x0, h, observed)
    for schedule in _schedules(n):
        got = _gradients(schedule, n, W, b, x0, h, observed)
        for r, g in zip(ref[:3], got[:3], strict=True):
            assert np.array_equal(r, g), schedule


# --- mutation tests: broken planners must be rejected ---------------------------------------

class _Mutant:
    """An offline schedule whose action list is edited by ``mutate(list) -> list``."""

    online = False

    def __init__(self, base, mutate, snapshots="base"):
        self.base, self.mutate = base, mutate
        self.snapshots = base.snapshots if snapshots == "base" else snapshots

    def plan(self, n_steps):
        return iter(self.mutate(list(self.base.plan(n_steps))))


def _first(actions, kind, where=lambda a: True):
    return next(i for i, a in enumerate(actions) if type(a) is kind and where(a))


def _off_by_one_restore(actions):
    i = _first(actions, Restore, lambda a: a.n > 0)
    actions[i] = Restore(actions[i].n - 1)
    return actions


def _restore_wrong_snapshot(actions):
    i = _first(actions, Restore, lambda a: a.n > 0)
    actions[i] = Restore(0)
    return actions


def _forward_one_too_far(actions):
    i = _first(actions, Forward, lambda a: a.n0 > 0 or a.n1 > 1)
    actions[i] = Forward(actions[i].n0, actions[i].n1 + 1)
    return actions


def _recompute_one_short(actions):
    end = _first(actions, EndForward)
    i = _first(actions[end:], Forward) + end
    actions[i] = Forward(actions[i].n0, actions[i].n1 - 1)
    return actions


def _recompute_past_adjoint(actions):
    end = _first(actions, EndForward)
    i = end + _first(actions[end:], Forward)
    actions[i] = Forward(actions[i].n0, actions[i].n1 + 2)
    return actions


def _drop_a_reverse(actions):
    del actions[_first(actions, Reverse, lambda a: a.n == 5)]
    return actions


def _swap_two_reverses(actions):
    i = _first(actions, Reverse, lambda a: a.n == 5)
    j = _first(actions, Reverse, lambda a: a.n == 4)
    actions[i], actions[j] = actions[j], actions[i]
    return actions


def _leak_a_snapshot(actions):
    del actions[_first(actions, Free, lambda a: a.n > 0)]
    return actions


def _free_too_early(actions):
    i = _first(actions, Free, lambda a: a.n == 0)
    actions.insert(_first(actions, EndForward) + 1, actions.pop(i))
    return actions


def _store_wrong_index(actions):
    i = _first(actions, Store, lambda a: a.n > 0)
    actions[i] = Store(actions[i].n + 1)
    return actions


def _no_end_forward(actions):
    del actions[_first(actions, EndForward)]
    return actions


def _truncated(actions):
    return actions[:-1]


@pytest.mark.parametrize("mutate", [
    _off_by_one_restore, _restore_wrong_snapshot, _forward_one_too_far, _recompute_one_short,
    _recompute_past_adjoint,
    _drop_a_reverse, _swap_two_reverses, _leak_a_snapshot, _free_too_early, _store_wrong_index,
    _no_end_forward, _truncated])
def test_mutated_plans_are_rejected(mutate):
    base = Revolve(3)
    assert replay(_Mutant(base, lambda a: a), 20) == replay(base, 20)     # the wrapper is inert
    with pytest.raises(CheckpointError):
        replay(_Mutant(base, mutate), 20)


def test_budget_is_enforced():
    with pytest.raises(CheckpointError, match="budget of 2"):
        replay(_Mutant(Revolve(3), lambda a: a, snapshots=2), 20)


def test_snapshot_store_errors():
    store = SnapshotStore(budget=1)
    store.put(0, "x0")
    with pytest.raises(CheckpointError, match="already stored"):
        store.put(0, "x0")
    with pytest.raises(CheckpointError, match="budget"):
        store.put(1, "x1")
    with pytest.raises(CheckpointError, match="no snapshot 3"):
        store.get(3)
    with pytest.raises(CheckpointError, match="no snapshot 3"):
        store.drop(3)
    store.drop(0)
    assert len(store) == 0 and store.max_live == 1 and store.written == 1


def test_run_adjoint_argument_errors():
    kw = dict(state0=0, forward_step=lambda i, x: x, reverse_step=lambda i, x, b: b,
              final_bar=lambda x: x)
    with pytest.raises(ValueError, match="exactly one"):
        run_adjoint(Revolve(2), None, **kw)
    with pytest.raises(ValueError, match="exactly one"):
        run_adjoint(Online(2), 5, stop=lambda i, x: True, **kw)
    with pytest.raises(ValueError, match="known number of steps"):
        run_adjoint(Revolve(2), None, stop=lambda i, x: True, **kw)
    with pytest.raises(ValueError, match="n_steps"):
        run_adjoint(StoreAll(), 0, **kw)
    with pytest.raises(ValueError, match="every"):
        Uniform(0)


@pytest.mark.parametrize("n", [1, 5, 16])
def test_begin_adjoint_suspends_after_the_forward_sweep(n):
    """``begin_adjoint`` runs exactly the forward sweep; ``finish`` the reverse sweep, once."""
    from adjointcore.checkpointing import begin_adjoint
    for schedule in _schedules(n):
        log = []

        def forward_step(i, x, log=log):
            log.append(("f", i))
            return i + 1

        def reverse_step(i, x, x_next_bar, log=log):
            assert x == i and x_next_bar == ("bar", i + 1)
            log.append(("r", i))
            return ("bar", i)

        pending = begin_adjoint(schedule, n, state0=0, forward_step=forward_step,
                                reverse_step=reverse_step)
        assert pending.final_state == n and pending.n_steps == n and not pending.finished
        assert [e for e in log if e[0] == "r"] == []
        n_first = len(log)
        x0_bar, stats = pending.finish(("bar", n))
        assert x0_bar == ("bar", 0) and pending.finished
        assert stats == replay(schedule, n)
        assert stats.forward_steps == n + sum(1 for e in log[n_first:] if e[0] == "f")
        with pytest.raises(CheckpointError, match="already been reversed"):
            pending.finish(("bar", n))
