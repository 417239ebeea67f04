"""Checkpointed discrete adjoints are bitwise identical to store-all, with the advertised work.

Every schedule re-runs deterministic steps from stored states, so the gradient must not change
by a single bit (``np.array_equal``), for one-step and multistep methods and for Dopri5 on a
frozen adaptive grid. The statistics must match the schedule's symbolic replay: live snapshots
``<= s`` (Revolve, Online), the binomial optimum for Revolve, and exact NFE bookkeeping.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adjointcore.checkpointing import (
    Online,
    Revolve,
    StoreAll,
    Uniform,
    optimal_forward_steps,
    replay,
)
from adjointcore.sensitivity.discrete import discrete_adjoint, grid_forward, record_forward
from tests.adjointcore.test_discrete_adjoint import adaptive_problem, make_problem

#: (id, method, options); "dopri5-adaptive": the accepted grid (21 steps) of an rtol=1e-6 solve.
METHODS = [("rk4", "rk4", {}), ("dopri5-adaptive", "dopri5", {}), ("ab3", "ab3", {}),
           ("abm4", "abm4", {}), ("leapfrog", "leapfrog", {}), ("lm", "lm", {"k": -0.05})]
SCHEDULES = [Uniform(1), Uniform(3), Uniform(7), Revolve(1), Revolve(2), Revolve(3), Revolve(5),
             Online(2), Online(3), Online(6)]
N_FIXED = 23


def problem(case):
    name, method, options = case
    if name == "dopri5-adaptive":
        return adaptive_problem(3, rtol=1e-6, n_obs=4, t1=6.0)[0]
    return make_problem(29, method, N_FIXED, n_obs=4, options=options, hidden=5)


def assert_bitwise(got, ref):
    assert np.array_equal(got.y0_bar, ref.y0_bar)
    assert np.array_equal(got.params_bar, ref.params_bar)
    assert got.method_bar.keys() == ref.method_bar.keys()
    for key in ref.method_bar:
        assert np.array_equal(got.method_bar[key], ref.method_bar[key])


def check_stats(stats, schedule, n):
    """Checkpoint counters equal the schedule's symbolic replay and its budget."""
    ck = stats.checkpoint_part()
    assert ck == replay(schedule, n)
    assert ck.n_steps == n and ck.reverse_steps == n
    budget = getattr(schedule, "snapshots", None)
    if budget is not None:
        assert ck.max_live_snapshots <= budget
    if isinstance(schedule, Revolve):
        assert ck.taped_steps == optimal_forward_steps(n, schedule.snapshots)
    if isinstance(schedule, Uniform):
        k = schedule.every
        assert ck.max_live_snapshots <= -(-n // k) + k - 1
        assert ck.recomputed_steps <= n
    if budget is not None and budget < n - 1:
        assert ck.recomputed_steps > 0


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
@pytest.mark.parametrize("case", METHODS, ids=[c[0] for c in METHODS])
def test_checkpointed_gradient_is_bitwise_store_all(case, schedule):
    prob = problem(case)
    n = prob.grid.size - 1
    assert n >= 10      # enough steps for every schedule to recompute
    ref = prob.gradient(schedule=StoreAll())
    got = prob.gradient(schedule=schedule)
    assert_bitwise(got, ref)
    check_stats(got.stats, schedule, n)
    # The first forward sweep is the same work for every schedule.
    assert got.stats.forward_nfe == ref.stats.forward_nfe


@pytest.mark.parametrize("schedule", [Uniform(4), Revolve(3), Online(4)], ids=repr)
@pytest.mark.parametrize("method, live", [("rk4", 4), ("dopri5", 6), ("bosh3", 3)])
def test_rk_work_counters_are_exact(method, live, schedule):
    """RK steps cost ``live`` field evaluations; a checkpointed reverse step recomputes its
    stages (``live`` NFE) and makes ``live`` VJPs; recomputed steps cost ``live`` each."""
    prob = make_problem(31, method, 17, n_obs=2)
    n = 17
    st_ = prob.gradient(schedule=schedule).stats
    assert st_.forward_nfe == live * n
    assert st_.vjps == live * n
    assert st_.backward_nfe == live * (st_.recomputed_steps + n)


def test_store_all_keeps_every_state_and_recomputes_no_step():
    prob = make_problem(37, "rk4", 12, n_obs=3)
    st_ = prob.gradient(schedule=StoreAll()).stats
    ck = st_
    assert ck.recomputed_steps == 0 and ck.forward_steps == 12
    assert ck.max_live_snapshots == 11     # x_0 .. x_{n-2}; x_{n-1} is handed over
    # StoreAll() keeps states only: each step's 4 stages are recomputed once in reverse.
    assert (st_.forward_nfe, st_.backward_nfe, st_.vjps) == (48, 48, 48)
    # schedule=None tapes the stages: no field evaluation after the forward sweep.
    taped = prob.gradient(schedule=None).stats
    assert (taped.forward_nfe, taped.backward_nfe, taped.vjps) == (48, 0, 48)


@pytest.mark.parametrize("case", [("rk4", "rk4", {}), ("dopri5-adaptive", "dopri5", {}),
                                  ("bosh3", "bosh3", {})], ids=lambda c: c[0])
def test_recorded_sweep_gives_the_store_all_gradient_bitwise(case):
    """``record_forward`` + ``discrete_adjoint(recording=...)`` (loss evaluated between the sweep
    and the adjoint) is bitwise the store-all and the Revolve gradient, with no forward NFE in
    the adjoint."""
    prob = problem(case) if case[0] != "bosh3" else make_problem(41, "bosh3", 15, n_obs=3)
    rec = record_forward(prob.field, prob.y0, prob.params, prob.grid, prob.method)
    ys, nfe = grid_forward(prob.field, prob.y0, prob.params, prob.grid, prob.method,
                           obs_steps=prob.obs_steps)
    assert np.array_equal(rec.states[-1][0], ys[-1]) and rec.nfe == nfe
    got = discrete_adjoint(prob.field, prob.y0, prob.params, prob.grid, prob.weights,
                           method=prob.method, obs_steps=prob.obs_steps, recording=rec)
    assert_bitwise(got, prob.gradient(schedule=StoreAll()))
    assert_bitwise(got, prob.gradient(schedule=Revolve(3)))
    assert got.stats.backward_nfe == 0 and got.stats.forward_nfe == nfe


@settings(max_examples=15, deadline=None)
@given(method=st.sampled_from(["euler", "midpoint", "rk4", "dopri5", "ab2", "ab4", "abm3",
                               "leapfrog", "lm"]),
       n_steps=st.integers(2, 40), snapshots=st.integers(1, 8), kind=st.sampled_from(
           ["uniform", "revolve", "online"]), n_obs=st.integers(1, 4),
       seed=st.integers(0, 2**32 - 1))
def test_checkpointing_bitwise_property(method, n_steps, snapshots, kind, n_obs, seed):
    """Any method, step count, budget and observation pattern: bitwise equal to store-all."""
    schedule = {"uniform": Uniform, "revolve": Revolve, "online": Online}[kind](snapshots)
    options = {"k": -0.1} if method == "lm" else {}
    prob = make_problem(seed, method, n_steps, n_obs=n_obs, options=options, batch=1, d=2,
                        hidden=3)
    got = prob.gradient(schedule=schedule)
    assert_bitwise(got, prob.gradient(schedule=StoreAll()))
    check_stats(got.stats, schedule, n_steps)
