"""Branches of ``adjointcore.sensitivity`` that the scenario tests do not reach (issue 14):
input validation with its messages, parameter-free fields, duck-typed forward solutions, the
dense-output clamp at the ends of the span, repeated reverse sweeps and tape accounting.

Every test asserts behaviour (a value, an equality with an independent computation, or the
error type and what its message names), not only that a line ran.
"""
import numpy as np
import pytest
from scipy.linalg import expm

import solvers
from adjointcore.device_emulation import to_device
from adjointcore.errors import ShapeError
from adjointcore.sensitivity import (
    AugmentedField,
    CountingField,
    SemiNorm,
    augmented_layout,
    check_cotangents,
    check_grid,
    check_solve_gradient,
    continuous_adjoint,
    discrete_adjoint,
    pack_augmented,
    record_forward,
    trajectory_gradient,
    unpack_augmented,
)
from adjointcore.sensitivity import continuous as _continuous
from adjointcore.sensitivity.discrete import begin_discrete_adjoint, tape_bytes

A = np.array([[-0.5, 1.0], [-1.0, -0.3]])


class FixedLinear:
    """``f = A y`` with no parameters (``params`` is None)."""

    n_params = 0

    def forward(self, t, y, params):
        return A @ y, y

    def vjp(self, cache, dy_bar, need_params=True):
        return A.T @ dy_bar, None, None


class ScaledLinear:
    """``f = theta A y``; params ``[theta]``."""

    n_params = 1

    def forward(self, t, y, params):
        Ay = A @ y
        return params[0] * Ay, (params, Ay)

    def vjp(self, cache, dy_bar, need_params=True):
        params, Ay = cache
        p_bar = np.array([dy_bar @ Ay]) if need_params else None
        return params[0] * (A.T @ dy_bar), p_bar, None


Y0 = np.array([1.0, -0.5])
Y_BAR = np.array([0.3, 0.7])


def exact_y0_bar(t1, theta=1.0):
    """``dL/dy0`` of ``L = <y_bar, y(t1)>`` for ``y' = theta A y``: ``expm(theta A t1)^T y_bar``."""
    return expm(theta * A * t1).T @ Y_BAR


# --------------------------------------------------------------------------- augmented system
def test_augmented_layout_rejects_unknown_variant_and_negative_n_params():
    with pytest.raises(ValueError, match="variant"):
        augmented_layout((2,), 1, "forwardsolve")
    with pytest.raises(ValueError, match="n_params"):
        augmented_layout((2,), -1, "backsolve")


def test_augmented_field_checks_its_inputs_and_has_no_vjp():
    layout = augmented_layout((2,), 0, "interpolated")
    with pytest.raises(ValueError, match="trajectory"):
        AugmentedField(FixedLinear(), layout)

    class NoVJP:
        def forward(self, t, y, params):
            return y, None
    with pytest.raises(TypeError, match="vjp"):
        AugmentedField(NoVJP(), augmented_layout((2,), 0, "backsolve"))
    aug = AugmentedField(FixedLinear(), augmented_layout((2,), 0, "backsolve"))
    assert aug.variant == "backsolve" and "backsolve" in repr(aug)
    with pytest.raises(NotImplementedError, match="second-order"):
        aug.vjp(None, np.zeros(4))


def test_parameter_free_backsolve_dynamics_are_minus_the_transposed_jacobian():
    """Without parameters (no ``a_params`` block): ``dz = [f(y), -A^T a]``."""
    layout = augmented_layout((2,), 0, "backsolve")
    aug = AugmentedField(FixedLinear(), layout)
    a = np.array([0.2, -1.5])
    z = pack_augmented(layout, Y0, a, None)
    dz, cache = aug.forward(0.0, z, None)
    parts = unpack_augmented(layout, dz)
    assert cache is None
    np.testing.assert_allclose(parts.y, A @ Y0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(parts.a, -A.T @ a, rtol=0, atol=1e-15)


def test_seminorm_measures_only_the_leading_entries():
    with pytest.raises(ValueError, match="n_error"):
        SemiNorm(0)
    norm = SemiNorm(2)
    err = np.array([3.0, 4.0, 1e6, -1e6])
    expected = np.sqrt((9.0 + 16.0) / 2)
    assert norm(err) == pytest.approx(expected, rel=1e-15)
    err[2:] = 0.0                                   # the unmeasured tail does not matter
    assert norm(err) == pytest.approx(expected, rel=1e-15)
    assert float(norm.on_device(err)) == pytest.approx(expected, rel=1e-15)
    assert repr(norm) == "SemiNorm(n_error=2)"


def test_check_cotangents_refuses_cotangents_on_another_backend():
    bars = to_device(np.zeros((1, 2)))
    with pytest.raises(TypeError, match="to_device"):
        check_cotangents("y_bars", bars, Y0, (1, 2))


# --------------------------------------------------------------------------- grids
@pytest.mark.parametrize("grid, error, words", [
    (np.zeros((2, 2)), ShapeError, "1-D"),
    ([0.0], ShapeError, "at least 2"),
    ([0.0, np.inf], ValueError, "non-finite"),
    ([0.0, 1.0, 0.5], ValueError, "strictly"),
])
def test_check_grid_rejects_bad_grids(grid, error, words):
    with pytest.raises(error, match=words):
        check_grid(grid)


def test_check_grid_accepts_decreasing_grids_as_float64():
    g = check_grid([1, 0.5, 0])
    assert g.dtype == np.float64 and np.array_equal(g, [1.0, 0.5, 0.0])


# --------------------------------------------------------------------------- continuous adjoint
def test_continuous_adjoint_of_a_parameter_free_field_is_exact():
    t_obs = np.array([1.0])
    for variant in ("interpolated", "backsolve"):
        g = continuous_adjoint(FixedLinear(), Y0, None, t_obs, Y_BAR[None], t0=0.0,
                               variant=variant, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(g.y0_bar, exact_y0_bar(1.0), rtol=1e-7)
        assert g.params_bar is None or g.params_bar.size == 0


def test_continuous_adjoint_rejects_non_finite_observation_times():
    with pytest.raises(ValueError, match="finite"):
        continuous_adjoint(ScaledLinear(), Y0, np.ones(1), np.array([0.5, np.nan]),
                           np.zeros((2, 2)), t0=0.0)


class DuckSolution:
    """A forward solution with only ``sol`` and mapping ``stats`` (no ``grid``, no ``ts``)."""

    def __init__(self, solution):
        self.sol = solution.sol
        self.stats = {"nfe": 7, "n_accepted": 3, "n_rejected": 1}


class StatsObject:
    nfe, n_accepted = 11, 5      # n_rejected missing: defaults to 0


def test_duck_typed_forward_solution_gives_the_same_gradient_and_its_work():
    field, params, t_obs = ScaledLinear(), np.array([0.8]), np.array([1.0])
    real = solvers.solve(field, Y0, (0.0, 1.0), params, method="dopri5", rtol=1e-10,
                         atol=1e-12, dense_output=True)
    ref = continuous_adjoint(field, Y0, params, t_obs, Y_BAR[None], t0=0.0, rtol=1e-10,
                             atol=1e-12, forward_solution=real)
    duck = DuckSolution(real)
    got = continuous_adjoint(field, Y0, params, t_obs, Y_BAR[None], t0=0.0, rtol=1e-10,
                             atol=1e-12, forward_solution=duck)
    np.testing.assert_array_equal(got.y0_bar, ref.y0_bar)
    np.testing.assert_array_equal(got.params_bar, ref.params_bar)
    assert (got.stats.forward_nfe, got.stats.n_accepted, got.stats.n_rejected) == (7, 3, 1)
    duck.stats = StatsObject()
    got = continuous_adjoint(field, Y0, params, t_obs, Y_BAR[None], t0=0.0, rtol=1e-10,
                             atol=1e-12, forward_solution=duck)
    assert (got.stats.forward_nfe, got.stats.n_accepted, got.stats.n_rejected) == (11, 5, 0)
    np.testing.assert_allclose(got.y0_bar, exact_y0_bar(1.0, 0.8), rtol=1e-7)


def test_backsolve_needs_a_dense_solution_unless_sampled_at_the_observations():
    class NoDense:
        stats = {}
    with pytest.raises(TypeError, match="dense output"):
        continuous_adjoint(ScaledLinear(), Y0, np.ones(1), np.array([1.0]), Y_BAR[None],
                           t0=0.0, variant="backsolve", forward_solution=NoDense())


def test_trajectory_clamps_roundoff_overshoot_onto_the_span_only():
    asked = []

    class Recorder:
        grid = np.array([0.0, 0.5, 2.0])

        def sol(self, t):
            asked.append(t)
            return t

    y_at = _continuous._trajectory(Recorder())
    eps = np.finfo(np.float64).eps
    y_at(-eps)               # within the slack below: moved to the start
    y_at(2.0 + 4 * eps)      # within the slack above: moved to the end
    y_at(1.25)               # inside: unchanged
    y_at(2.5)                # far outside: passed on for the dense output to reject
    assert asked == [0.0, 2.0, 1.25, 2.5]

    class NoGrid:
        sol = staticmethod(np.cos)
    assert _continuous._trajectory(NoGrid()) is np.cos


# --------------------------------------------------------------------------- discrete adjoint
def test_counting_field_wraps_a_plain_callable_and_counts_evaluations():
    counted = CountingField(lambda t, y: -y)
    dy, _ = counted.forward(0.0, Y0, None)
    np.testing.assert_array_equal(dy, -Y0)
    counted.forward(0.1, Y0, None)
    assert counted.nfe == 2 and counted.nfe_first is None
    counted.end_forward()
    counted.forward(0.2, Y0, None)
    counted.end_forward()                 # only the first end counts
    assert counted.nfe_first == 2 and counted.nfe == 3


def test_record_forward_refuses_methods_without_a_taped_step():
    with pytest.raises(TypeError, match="step_taped"):
        record_forward(ScaledLinear(), Y0, np.ones(1), np.linspace(0, 1, 5), method="ab2")


def test_begin_discrete_adjoint_rejects_a_non_schedule():
    with pytest.raises(TypeError, match="checkpoint schedule"):
        begin_discrete_adjoint(ScaledLinear(), Y0, np.ones(1), np.linspace(0, 1, 5),
                               schedule="revolve")


def test_a_second_reverse_sweep_repeats_the_forward_sweep_and_the_gradient():
    grid = np.linspace(0.0, 1.0, 9)
    params = np.array([0.9])
    ref = discrete_adjoint(ScaledLinear(), Y0, params, grid, Y_BAR, method="rk4")
    sweep = begin_discrete_adjoint(ScaledLinear(), Y0, params, grid, method="rk4",
                                   obs_steps=[8])
    first = sweep.gradient(Y_BAR[None])
    second = sweep.gradient(Y_BAR[None], obs_steps=[8])
    for g in (first, second):
        np.testing.assert_array_equal(g.y0_bar, ref.y0_bar)
        np.testing.assert_array_equal(g.params_bar, ref.params_bar)
    # The second call re-ran the 8-step RK4 forward sweep (32 evaluations) before reversing.
    assert second.stats.backward_nfe == first.stats.backward_nfe + 32


def test_tape_bytes_counts_each_array_once_through_containers():
    a, b = np.zeros(10), np.ones(3, dtype=np.float32)
    assert tape_bytes([a, (a, b), {"k": a, "j": [b, None, 1.0]}]) == a.nbytes + b.nbytes
    assert tape_bytes(a[:4]) == 32                 # a view counts its own size
    assert tape_bytes(()) == 0


def test_check_solve_gradient_without_parameters_checks_y0_only():
    report = check_solve_gradient(FixedLinear(), Y0, None, (0.0, 1.0), method="rk4", steps=10)
    assert report.passed, report
    assert set(report.figures) == {"fd_y0", "taylor_min_rate"}
    assert report.figures["fd_y0"] < 1e-8


def test_trajectory_gradient_without_parameters():
    t_obs = np.array([0.5, 1.0])
    y_bars = np.stack([np.zeros(2), Y_BAR])
    g = trajectory_gradient(FixedLinear(), Y0, None, t_obs, y_bars, t0=0.0,
                            gradient="discrete", method="rk4", steps=50)
    assert g.params_bar is None or g.params_bar.size == 0    # nothing to differentiate
    np.testing.assert_allclose(g.y0_bar, exact_y0_bar(1.0), rtol=1e-7)
