"""The one entry point for trajectory gradients and the one work record (issue 9, points 1, 3)."""
import dataclasses

import numpy as np
import pytest

import solvers
from adjointcore.checkpointing import Revolve, StoreAll, replay
from adjointcore.fields import LayerField
from adjointcore.gradcheck import central_difference, relative_error
from adjointcore.layers import Linear, Sequential, Tanh
from adjointcore.sensitivity import (
    begin_trajectory_gradient,
    continuous_adjoint,
    discrete_adjoint,
    grid_forward,
    trajectory_gradient,
)
from solvers import Work

# Central differences of smooth float64 maps reach ~1e-10; 1e-8 is the project's bound for
# gradients of discrete maps (DESIGN.md 5.2).
FD_TOL = 1e-8
T_OBS = np.array([0.25, 0.5, 1.0])


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    layer = Sequential(Linear(2, 6), Tanh(), Linear(6, 2))
    params = layer.init(rng)
    y0 = rng.standard_normal((3, 2))
    y_bars = rng.standard_normal((T_OBS.size, 3, 2))
    return LayerField(layer), y0, params, y_bars


@pytest.mark.parametrize("method, schedule", [("rk4", None), ("rk4", Revolve(snapshots=2)),
                                              ("ab3", None), ("euler", None)])
def test_discrete_equals_discrete_adjoint_bitwise(method, schedule):
    field, y0, params, y_bars = _problem()
    g = trajectory_gradient(field, y0, params, T_OBS, y_bars, t0=0.0, method=method, steps=8,
                            schedule=schedule)
    grid = np.linspace(0.0, 1.0, 9)
    ref = discrete_adjoint(field, y0, params, grid, y_bars, method=method, obs_steps=[2, 4, 8],
                           schedule=schedule)
    assert np.array_equal(g.y0_bar, ref.y0_bar) and np.array_equal(g.params_bar, ref.params_bar)
    # The forward phase's states are those the map reaches at t_obs.
    sweep = begin_trajectory_gradient(field, y0, params, T_OBS, t0=0.0, method=method, steps=8)
    ys, _ = grid_forward(field, y0, params, grid, method, obs_steps=[2, 4, 8])
    assert np.array_equal(sweep.ys, ys)
    assert isinstance(g.stats, Work) and g.stats.n_accepted == 8


@pytest.mark.parametrize("variant", ["backsolve", "interpolated"])
def test_continuous_equals_continuous_adjoint_bitwise(variant):
    field, y0, params, y_bars = _problem(1)
    g = trajectory_gradient(field, y0, params, T_OBS, y_bars, t0=0.0, gradient=variant,
                            rtol=1e-8, atol=1e-10)
    ref = continuous_adjoint(field, y0, params, T_OBS, y_bars, t0=0.0, variant=variant,
                             rtol=1e-8, atol=1e-10)
    assert np.array_equal(g.y0_bar, ref.y0_bar) and np.array_equal(g.params_bar, ref.params_bar)
    assert g.stats.backward_nfe == ref.stats.backward_nfe > 0
    assert g.stats.n_intervals == T_OBS.size


def test_adaptive_discrete_gradient_is_exact_on_the_frozen_grid():
    """steps=None: the adjoint of the accepted grid, taped from the solve (no replay)."""
    field, y0, params, y_bars = _problem(2)
    sweep = begin_trajectory_gradient(field, y0, params, [1.0], t0=0.0, rtol=1e-5)
    g = sweep.gradient(y_bars[-1:])
    grid = sweep.grid
    v = np.random.default_rng(3).standard_normal(params.shape)

    def loss(p):
        return float(np.sum(grid_forward(field, y0, p, grid, "dopri5")[0][-1] * y_bars[-1]))
    assert relative_error(g.params_bar @ v, central_difference(loss, params, v)) <= FD_TOL
    assert g.stats.backward_nfe == 0 and g.stats.vjps == 6 * (grid.size - 1)
    assert g.stats.forward_nfe == sweep.solution.stats.nfe


def test_mutated_vjp_is_caught_through_the_entry_point():
    """A field whose VJP halves the state cotangent is caught by finite differences."""
    field, y0, params, y_bars = _problem(4)

    class Broken(LayerField):
        def vjp_into(self, cache, dy_bar, params_bar=None):
            return 0.5 * super().vjp_into(cache, dy_bar, params_bar)

    broken = Broken(field.layer)
    v = np.random.default_rng(5).standard_normal(y0.shape)
    grid = np.linspace(0.0, 1.0, 9)

    def loss(z):
        ys, _ = grid_forward(field, z, params, grid, "rk4", obs_steps=[2, 4, 8])
        return float(np.sum(ys * y_bars))
    fd = central_difference(loss, y0, v)
    good = trajectory_gradient(field, y0, params, T_OBS, y_bars, t0=0.0, method="rk4", steps=8)
    bad = trajectory_gradient(broken, y0, params, T_OBS, y_bars, t0=0.0, method="rk4", steps=8)
    assert relative_error(np.sum(good.y0_bar * v), fd) <= FD_TOL
    assert relative_error(np.sum(bad.y0_bar * v), fd) > 1e-3


@pytest.mark.parametrize("kwargs, match", [
    ({"gradient": "adjoint"}, "`gradient`"),
    ({"gradient": "backsolve", "schedule": Revolve(2)}, "`schedule`"),
    ({"gradient": "discrete", "adjoint_options": {"seminorm": True}}, "`adjoint_options`"),
    ({"gradient": "backsolve", "adjoint_options": {"rtol": 1.0}}, "`adjoint_options`"),
    ({"gradient": "discrete"}, "end of the span only"),
    ({"gradient": "backsolve", "method": "rk4"}, "error estimate"),
    ({"gradient": "discrete", "method": "ab3", "steps": 7}, "t_obs"),
])
def test_bad_options_fail_before_compute(kwargs, match):
    field, y0, params, y_bars = _problem()

    class Counting(LayerField):
        calls = 0

        def forward(self, t, y, p):
            Counting.calls += 1
            return super().forward(t, y, p)
    with pytest.raises((ValueError, TypeError), match=match):
        trajectory_gradient(Counting(field.layer), y0, params, T_OBS, y_bars, t0=0.0, **kwargs)
    assert Counting.calls == 0


def test_plain_callable_is_refused_by_name():
    _, y0, params, y_bars = _problem()
    with pytest.raises(TypeError, match="`field`"):
        trajectory_gradient(lambda t, y, p: -y, y0, params, T_OBS, y_bars, t0=0.0, steps=4,
                            method="rk4")


# -- the one work record -----------------------------------------------------------------------
def test_every_entry_point_reports_work():
    field, y0, params, y_bars = _problem(6)
    sol = solvers.solve(field, y0, (0.0, 1.0), params, rtol=1e-6)
    grid = np.linspace(0.0, 1.0, 5)
    disc = discrete_adjoint(field, y0, params, grid, y_bars[-1], method="rk4")
    cont = continuous_adjoint(field, y0, params, T_OBS, y_bars, t0=0.0)
    for work in (sol.stats, disc.stats, cont.stats, replay(Revolve(2), 6)):
        assert isinstance(work, Work)
    assert sol.stats.nfe == sol.stats.forward_nfe and sol.stats.backward_nfe == 0
    assert disc.stats.checkpoint_part() == replay(StoreAll(), 4)
    assert (disc.stats.forward_nfe, disc.stats.vjps) == (16, 16)
    # Interpolated adjoint: the forward solve's outputs at t_obs, then one dense-output read of
    # y(t) per backward evaluation.
    assert cont.stats.dense_evals == T_OBS.size + cont.stats.backward_nfe


def test_work_adds_field_by_field_and_keeps_the_peak_memory():
    a = Work(forward_nfe=3, vjps=2, max_live_snapshots=4, n_accepted=1)
    b = Work(backward_nfe=5, vjps=1, max_live_snapshots=2, n_rejected=2)
    total = a + b
    assert (total.forward_nfe, total.backward_nfe, total.vjps, total.nfe) == (3, 5, 3, 8)
    assert total.max_live_snapshots == 4 and total.n_steps == 3
    back = Work(forward_nfe=7, n_accepted=2, n_rejected=1).as_backward()
    assert (back.backward_nfe, back.vjps, back.backward_accepted, back.backward_rejected,
            back.forward_nfe, back.n_intervals) == (7, 7, 2, 1, 0, 1)
    assert "forward_nfe=3" in a.summary() and "backward_nfe" not in a.summary()
    assert dataclasses.replace(a, forward_nfe=0).nfe == 0
