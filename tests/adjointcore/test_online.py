"""Online checkpointing: budget for long unknown-length runs, validity, cost against Revolve."""
import numpy as np
import pytest

from adjointcore.checkpointing import (
    CheckpointError,
    Online,
    StoreAll,
    online_ratio,
    replay,
    run_adjoint,
)


@pytest.mark.parametrize("n, s", [(100_000, 10), (100_000, 20), (20_000, 2), (3000, 1)])
def test_budget_never_exceeded_on_long_runs(n, s):
    stats = replay(Online(s), n)
    assert stats.max_live_snapshots <= s
    assert stats.reverse_steps == n and stats.n_steps == n


def _tracking_run(s, n):
    """Integer states (x_i is i); the end is revealed by ``stop`` only."""
    reversed_steps = []

    def reverse_step(i, x, x_next_bar):
        assert x == i and x_next_bar == -(i + 1)
        reversed_steps.append(i)
        return -i

    def forward_step(i, x):
        assert x == i
        return i + 1

    x0_bar, stats = run_adjoint(Online(s), None, state0=0, forward_step=forward_step,
                                reverse_step=reverse_step, final_bar=lambda x: -x,
                                stop=lambda i, x: i == n)
    assert x0_bar == 0 and reversed_steps == list(range(n - 1, -1, -1))
    return stats


@pytest.mark.parametrize("s", [1, 2, 3, 4, 6, 9])
def test_valid_replay_with_stop_callback(s):
    for n in range(1, 60):
        stats = _tracking_run(s, n)
        assert stats == replay(Online(s), n)
        assert stats.max_live_snapshots <= s


def test_no_recomputation_while_budget_suffices():
    for s in (2, 5, 10):
        for n in range(1, s + 1):
            assert replay(Online(s), n).recomputed_steps == 0


@pytest.mark.parametrize("n", [100, 1000, 10_000])
@pytest.mark.parametrize("s", [10, 20])
def test_cost_relative_to_revolve(n, s):
    # Revolve is optimal, so the ratio is >= 1; the measured worst case here is 1.198
    # (n = 10^4, s = 20), hence the bound 1.2.
    ratio = online_ratio(n, s)
    assert 1.0 <= ratio <= 1.2


def test_gradients_bitwise_equal_store_all_with_adaptive_end():
    rng = np.random.default_rng(11)
    W = rng.standard_normal((5, 5)) / np.sqrt(5)
    x0 = rng.standard_normal(5)
    t1 = 1.0

    def h_of(i):
        return 0.01 * (1.0 + 0.5 * np.sin(i))    # a step-size sequence known only on the fly

    def forward_step(i, state):
        x, t = state
        return x + h_of(i) * np.tanh(W @ x), t + h_of(i)

    def reverse_step(i, state, state_next_bar):
        (x, _), (y_bar, _) = state, state_next_bar
        z = np.tanh(W @ x)
        return y_bar + W.T @ (h_of(i) * y_bar * (1.0 - z * z)), 0.0

    def final_bar(state):
        return state[0].copy(), 0.0

    (x0_bar, _), stats = run_adjoint(Online(4), None, state0=(x0, 0.0),
                                     forward_step=forward_step, reverse_step=reverse_step,
                                     final_bar=final_bar, stop=lambda i, state: state[1] >= t1)
    assert stats.n_steps > 50 and stats.max_live_snapshots <= 4
    (ref, _), _ = run_adjoint(StoreAll(), stats.n_steps, state0=(x0, 0.0),
                              forward_step=forward_step, reverse_step=reverse_step,
                              final_bar=final_bar)
    assert np.array_equal(x0_bar, ref)


def test_max_steps_and_bad_arguments():
    with pytest.raises(CheckpointError, match="max_steps=50"):
        run_adjoint(Online(3), None, state0=0, forward_step=lambda i, x: x + 1,
                    reverse_step=lambda i, x, b: b, final_bar=lambda x: x,
                    stop=lambda i, x: False, max_steps=50)
    with pytest.raises(ValueError, match="n_steps=None"):
        next(Online(3).plan(10))
    with pytest.raises(ValueError, match="snapshots"):
        Online(0)
