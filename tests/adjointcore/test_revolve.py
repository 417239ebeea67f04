"""Revolve: exact binomial counts (integers, no tolerances) and snapshot budgets."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adjointcore.checkpointing import (
    Forward,
    Free,
    Revolve,
    Store,
    beta,
    optimal_extra_steps,
    optimal_forward_steps,
    repetition_number,
    replay,
)
from adjointcore.checkpointing._revolve import advance, sweep_cost

N_MAX = 200


def _recursion_table(n_max, s_max):
    """m[n, s] by the Griewank-Walther recursion m(n,s) = min_i [i + m(i,s) + m(n-i,s-1)]."""
    m = np.zeros((n_max + 1, s_max + 1), dtype=np.int64)
    n = np.arange(n_max + 1)
    m[:, 1] = n * (n - 1) // 2
    for s in range(2, s_max + 1):
        for length in range(2, n_max + 1):
            i = np.arange(1, length)
            m[length, s] = np.min(i + m[i, s] + m[length - i, s - 1])
    return m


def _stream_counts(plan):
    """(forward steps, max live snapshots) of an action stream, counting only what matters."""
    fwd = live = peak = 0
    for a in plan:
        kind = type(a)
        if kind is Forward:
            fwd += a.n1 - a.n0
        elif kind is Store:
            live += 1
            peak = max(peak, live)
        elif kind is Free:
            live -= 1
    return fwd, peak


def test_published_examples():
    # Totals in Griewank & Walther's convention (taping runs included) and the executor's count.
    assert optimal_forward_steps(1000, 10) == 4636
    assert optimal_forward_steps(100, 5) == 416
    for n, s, total in ((1000, 10, 4636), (100, 5, 416)):
        stats = replay(Revolve(s), n)
        assert stats.taped_steps == total
        assert stats.forward_steps == total - (n - 1)
        assert stats.max_live_snapshots == s and stats.reverse_steps == n


@pytest.mark.parametrize("n, s, t, m", [
    (100, 5, 4, 316), (100, 10, 3, 222), (1000, 5, 8, 6284), (1000, 10, 4, 3636),
    (1000, 20, 3, 2747), (10000, 10, 7, 57624), (10000, 50, 3, 28622)])
def test_table_of_the_notes(n, s, t, m):
    assert repetition_number(n, s) == t
    assert optimal_extra_steps(n, s) == m


def test_repetition_boundary():
    assert beta(10, 3) == 286
    assert repetition_number(286, 10) == 3 and repetition_number(287, 10) == 4


def test_closed_form_equals_recursion():
    table = _recursion_table(N_MAX, N_MAX - 1)
    closed = np.array([[optimal_extra_steps(n, s) if n >= 1 else 0 for s in range(1, N_MAX)]
                       for n in range(N_MAX + 1)])
    assert np.array_equal(table[1:, 1:], closed[1:])


def test_split_rule_is_optimal_for_all_pairs():
    for length in range(2, N_MAX + 1):
        for s in range(2, length + 1):
            i = advance(length, s)
            assert 1 <= i < length
            assert (i + optimal_extra_steps(i, s) + optimal_extra_steps(length - i, s - 1)
                    == optimal_extra_steps(length, s)), (length, s, i)


def test_action_stream_count_all_pairs():
    # The acceptance criterion: the planner's own action stream, every 1 <= s < n <= 200.
    for n in range(2, N_MAX + 1):
        for s in range(1, n):
            fwd, peak = _stream_counts(Revolve(s).plan(n))
            assert fwd == optimal_extra_steps(n, s) + 1, (n, s)
            assert fwd + n - 1 == optimal_forward_steps(n, s)
            assert peak <= s


def test_closed_form_cost_of_first_sweep_positions():
    # sweep_cost (used for quick estimates) agrees with the stream on a few large cases.
    for n, s in ((1000, 10), (5000, 7), (100000, 20)):
        positions = Revolve(s).positions(n)
        slots = [s - j for j in range(len(positions))]
        assert sweep_cost(positions, n, slots) == optimal_extra_steps(n, s) + 1


@settings(deadline=None, max_examples=60)
@given(n=st.integers(1, 400), s=st.integers(1, 40))
def test_replay_counts_and_budget(n, s):
    stats = replay(Revolve(s), n)
    assert stats.forward_steps == optimal_extra_steps(n, s) + 1
    assert stats.recomputed_steps == optimal_extra_steps(n, s) + 1 - n
    assert stats.max_live_snapshots <= s
    assert stats.reverse_steps == n


def test_enough_snapshots_means_no_recomputation():
    for n in range(1, 30):
        stats = replay(Revolve(n), n)
        assert stats.recomputed_steps == 0 and stats.max_live_snapshots == n - 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="snapshots"):
        Revolve(0)
    with pytest.raises(ValueError, match="Online"):
        Revolve(3).plan(None)
    with pytest.raises(ValueError, match="n_steps"):
        Revolve(3).plan(0)
