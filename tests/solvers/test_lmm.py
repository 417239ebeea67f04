"""Linear multistep methods: exact coefficients, observed convergence orders, stepper protocol.

Trajectories come from ``solvers.solve(..., method=name, steps=N)``; only the LM step with
``k != 0`` is driven through the stepper protocol, since ``solve`` builds its stepper without
options.
"""
import math
from fractions import Fraction as Fr

import numpy as np
import pytest

import solvers
from solvers._lmm import LMM_STEPPERS, AdamsStepper, LMStepper, get_lmm_stepper
from solvers._lmm_coeffs import adams_bashforth, adams_moulton, lmm_error_constants
from tests.solvers.problems import PROBLEMS


class CallableField:
    """Forward-only field around a problem's ``f(t, y)`` that counts evaluations."""

    def __init__(self, f):
        self.f = f
        self.calls = 0

    def forward(self, t, y, params):
        self.calls += 1
        return self.f(t, y), None


# --------------------------------------------------------------------------------------------
# Coefficients
# --------------------------------------------------------------------------------------------
# Textbook values (Hairer-Norsett-Wanner I, Tables III.1.1 and III.1.2).
AB_TEXTBOOK = {
    1: [Fr(1)],
    2: [Fr(3, 2), Fr(-1, 2)],
    3: [Fr(23, 12), Fr(-16, 12), Fr(5, 12)],
    4: [Fr(55, 24), Fr(-59, 24), Fr(37, 24), Fr(-9, 24)],
    5: [Fr(1901, 720), Fr(-2774, 720), Fr(2616, 720), Fr(-1274, 720), Fr(251, 720)],
}
AM_TEXTBOOK = {
    2: [Fr(1, 2), Fr(1, 2)],
    3: [Fr(5, 12), Fr(8, 12), Fr(-1, 12)],
    4: [Fr(9, 24), Fr(19, 24), Fr(-5, 24), Fr(1, 24)],
    5: [Fr(251, 720), Fr(646, 720), Fr(-264, 720), Fr(106, 720), Fr(-19, 720)],
}
# Error constants C_{p+1} (sigma(1) = 1 for Adams methods).
AB_ERROR_CONSTANT = {1: Fr(1, 2), 2: Fr(5, 12), 3: Fr(3, 8), 4: Fr(251, 720), 5: Fr(95, 288)}
AM_ERROR_CONSTANT = {2: Fr(-1, 12), 3: Fr(-1, 24), 4: Fr(-19, 720), 5: Fr(-3, 160)}


@pytest.mark.parametrize("order", sorted(AB_TEXTBOOK))
def test_adams_bashforth_matches_textbook(order):
    beta = adams_bashforth(order)
    assert all(isinstance(b, Fr) for b in beta)
    assert list(beta) == AB_TEXTBOOK[order]
    alpha = [Fr(1), Fr(-1)] + [Fr(0)] * (order - 1)
    consts = lmm_error_constants(alpha, [Fr(0)] + list(beta), order + 2)
    assert consts[:order + 1] == [0] * (order + 1)
    assert consts[order + 1] == AB_ERROR_CONSTANT[order]


@pytest.mark.parametrize("order", sorted(AM_TEXTBOOK))
def test_adams_moulton_matches_textbook(order):
    beta = adams_moulton(order)
    assert list(beta) == AM_TEXTBOOK[order]
    alpha = [Fr(1), Fr(-1)] + [Fr(0)] * (order - 2)
    consts = lmm_error_constants(alpha, list(beta), order + 2)
    assert consts[:order + 1] == [0] * (order + 1)
    assert consts[order + 1] == AM_ERROR_CONSTANT[order]


def test_lm_step_local_error_derivation():
    # alpha = (1, -(1-k), -k); beta = (0, 1+k, 0) for the rescaled ODE v' = f/(1+k).
    for k in (Fr(0), Fr(-3, 10), Fr(1, 2)):
        consts = lmm_error_constants([Fr(1), -(1 - k), -k], [Fr(0), 1 + k, Fr(0)], 3)
        assert consts[:2] == [0, 0]
        assert consts[2] / (1 + k) == (1 - k) / (2 * (1 + k))  # order exactly 1
        # For the unscaled ODE u' = f (beta = (0, 1, 0)) consistency (C_1 = 0) needs k = 0.
        assert (lmm_error_constants([Fr(1), -(1 - k), -k], [Fr(0), Fr(1), Fr(0)], 2)[1] == 0) \
            == (k == 0)


def test_coefficient_orders_rejected():
    with pytest.raises(ValueError, match="order must be an int"):
        adams_bashforth(6)
    with pytest.raises(ValueError, match="order must be an int"):
        adams_moulton(0)


# --------------------------------------------------------------------------------------------
# Convergence orders
# --------------------------------------------------------------------------------------------
# (method, options, problem, N0): errors at T on grids N0 * (1, 2, 4), slope of log(err) vs
# log(h). N0 puts each fit in the asymptotic regime with errors above ~1e-12 (round-off), found
# by scanning N0 (the slopes drift towards the nominal order as N0 grows, none overshoots).
ORDER_CASES = [
    ("ab1", {}, "linear4", 320), ("ab1", {}, "logistic", 160),
    ("ab2", {}, "linear4", 160), ("ab2", {}, "logistic", 160), ("ab2", {}, "nonautonomous", 320),
    ("ab3", {}, "linear4", 160), ("ab3", {}, "logistic", 160), ("ab3", {}, "nonautonomous", 160),
    ("ab4", {}, "linear4", 160), ("ab4", {}, "logistic", 80), ("ab4", {}, "nonautonomous", 160),
    ("ab5", {}, "linear4", 60), ("ab5", {}, "logistic", 60), ("ab5", {}, "nonautonomous", 60),
    ("abm2", {}, "linear4", 160), ("abm2", {}, "logistic", 160),
    ("abm2", {}, "nonautonomous", 320),
    ("abm3", {}, "linear4", 160), ("abm3", {}, "logistic", 160),
    ("abm3", {}, "nonautonomous", 160),
    ("abm4", {}, "linear4", 200), ("abm4", {}, "logistic", 100),
    ("abm4", {}, "nonautonomous", 200),
    ("abm5", {}, "linear4", 200), ("abm5", {}, "riccati", 100),
    ("leapfrog", {}, "linear4", 160), ("leapfrog", {}, "logistic", 320),
    ("leapfrog", {}, "nonautonomous", 320),
    ("lm", {}, "linear4", 320), ("lm", {}, "logistic", 160), ("lm", {}, "nonautonomous", 160),
    ("lm", {"k": -0.3}, "linear4", 320), ("lm", {"k": -0.3}, "logistic", 160),
    ("lm", {"k": -0.3}, "riccati", 160),
]
ORDER_TOL = 0.15  # brief: observed order within +-0.15 of nominal


def _solve(method, problem, n):
    """``solvers.solve`` of ``problem`` with ``n`` equal steps of ``method``."""
    return solvers.solve(problem.f, problem.y0, problem.t_span, method=method, steps=n)


def _lm_final_state(k, problem, n):
    """``y_N`` of ``n`` LM steps with coefficient ``k``, on the times ``solve`` uses.

    ``solve(method="lm")`` has ``k = 0`` only (it takes no method options), so the stepper is
    driven here through its protocol.
    """
    stepper, field = LMStepper(k), CallableField(problem.f)
    t0, t1 = problem.t_span
    h = (t1 - t0) / n
    state, t = stepper.init(field, t0, problem.y0, None), t0
    for i in range(n):
        state, _ = stepper.step(field, i, t, h, state, None)
        t = t + h
    return state[0]


def _final_state(method, options, problem, n):
    if options:
        return _lm_final_state(options["k"], problem, n)
    return _solve(method, problem, n).ys[-1]


def _final_errors(method, options, problem, ns):
    """Max-norm errors at t1 against the solution of ``y' = rhs_scale * f`` (autonomous if != 1)."""
    t0, t1 = problem.t_span
    scale = getattr(get_lmm_stepper(method, **options), "rhs_scale", 1.0)
    target = problem.exact(t0 + (t1 - t0) * scale)
    return np.array([float(np.max(np.abs(_final_state(method, options, problem, n) - target)))
                     for n in ns])


def observed_order(method, options, problem, n0):
    ns = np.array([n0, 2 * n0, 4 * n0])
    errs = _final_errors(method, options, problem, ns)
    h = (problem.t_span[1] - problem.t_span[0]) / ns
    return float(np.polyfit(np.log(h), np.log(errs), 1)[0]), errs


@pytest.mark.parametrize("method, options, problem, n0", ORDER_CASES,
                         ids=[f"{m}{o.get('k', '')}-{p}" for m, o, p, _ in ORDER_CASES])
def test_observed_order(method, options, problem, n0):
    slope, errs = observed_order(method, options, PROBLEMS[problem], n0)
    order = get_lmm_stepper(method, **options).order
    assert abs(slope - order) <= ORDER_TOL, (method, problem, slope, errs)


def test_lm_with_nonzero_k_does_not_solve_the_unscaled_ode():
    # For k != 0 the LM step converges to v' = f/(1+k), so the error against y' = f stays O(1).
    problem = PROBLEMS["logistic"]
    t0, t1 = problem.t_span
    gap = float(np.max(np.abs(problem.exact(t1) - problem.exact(t0 + (t1 - t0) / 0.7))))
    for n in (200, 800):
        err = float(np.max(np.abs(_lm_final_state(-0.3, problem, n) - problem.exact(t1))))
        assert abs(err - gap) < 0.05 * gap  # the O(h) distance to v is < 5% of the gap here


def test_lm_k0_is_forward_euler_and_ab1_bitwise():
    problem = PROBLEMS["nonautonomous"]
    ys_lm, ys_ab = _solve("lm", problem, 32).ys, _solve("ab1", problem, 32).ys
    t0, t1 = problem.t_span
    h = (t1 - t0) / 32
    t, y = t0, problem.y0
    for _ in range(3):
        y = y + h * problem.f(t, y)
        t = t + h
    np.testing.assert_allclose(ys_lm[3], y, rtol=1e-15, atol=0)  # same operations up to rounding
    np.testing.assert_array_equal(ys_lm, ys_ab)
    np.testing.assert_array_equal(_lm_final_state(0.0, problem, 32), ys_lm[-1])  # same loop


# --------------------------------------------------------------------------------------------
# Protocol: state layout, NFE, restart from a stored state, dtype, errors
# --------------------------------------------------------------------------------------------
# NFE per step after start-up; start-up NFE = stages of the start-up RK method.
NFE = {"ab1": (1, 1), "ab2": (1, 2), "ab3": (1, 3), "ab4": (1, 4), "ab5": (1, 4),
       "abm2": (2, 2), "abm3": (2, 3), "abm4": (2, 4), "abm5": (2, 4),
       "leapfrog": (1, 2), "lm": (1, 1)}


@pytest.mark.parametrize("method", sorted(LMM_STEPPERS))
def test_state_layout_nfe_and_restart(method):
    problem = PROBLEMS["linear4"]
    stepper = get_lmm_stepper(method)
    field = CallableField(problem.f)
    h, n_steps = 0.05, 9
    state = stepper.init(field, 0.0, problem.y0, None)
    assert state[0] is problem.y0 and all(np.all(s == 0) for s in state[1:])
    expected_len = len(state)
    assert expected_len == {"leapfrog": 2, "lm": 2}.get(method, stepper.order)
    states, total = [state], 0
    for n in range(n_steps):
        state, nfe = stepper.step(field, n, n * h, h, state, None)
        assert len(state) == expected_len
        assert all(s.shape == problem.y0.shape for s in state)
        main, startup = NFE[method]
        assert nfe == (startup if n < stepper.n_startup else main)
        states.append(state)
        total += nfe
    assert field.calls == total
    # Restart from a stored (copied) state: bitwise the same continuation.
    restart = tuple(s.copy() for s in states[4])
    for n in range(4, n_steps):
        restart, _ = stepper.step(field, n, n * h, h, restart, None)
    for a, b in zip(restart, states[-1], strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("method", ["ab3", "abm4", "leapfrog", "lm"])
def test_float32_stays_float32(method):
    res = solvers.solve(lambda t, y: -0.5 * y + math.cos(t),  # Python scalars keep float32
                        np.ones(3, dtype=np.float32), (0.0, 1.0), method=method, steps=10)
    assert res.ys.dtype == np.float32


def test_history_placeholders_shift_out():
    # After n_startup steps every history slot holds a real f value (no zero placeholder left).
    problem = PROBLEMS["linear4"]
    stepper = get_lmm_stepper("ab5")
    field = CallableField(problem.f)
    state = stepper.init(field, 0.0, problem.y0, None)
    for n in range(stepper.n_startup):
        state, _ = stepper.step(field, n, 0.1 * n, 0.1, state, None)
    # state = (y_4, f_3, f_2, f_1, f_0); f_0 = f(y0).
    np.testing.assert_array_equal(state[-1], problem.f(0.0, problem.y0))
    assert all(np.all(s != 0) for s in state)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="not zero-stable"):
        LMStepper(k=-1.0)
    with pytest.raises(ValueError, match="not zero-stable"):
        LMStepper(k=1.5)
    with pytest.raises(ValueError, match="not zero-stable"):
        LMStepper(k=float("nan"))
    with pytest.raises(TypeError, match="k must be a real number"):
        LMStepper(k="big")
    with pytest.raises(ValueError, match="unknown method 'ab6'"):
        get_lmm_stepper("ab6")
    with pytest.raises(TypeError, match="'ab3' takes no options, got \\['k'\\]"):
        get_lmm_stepper("ab3", k=0.1)
    with pytest.raises(TypeError, match="unexpected keyword"):
        get_lmm_stepper("lm", kappa=0.1)
    with pytest.raises(ValueError, match=r"order must be an int in \[2, 5\]"):
        AdamsStepper(1, corrector=True)
    problem = PROBLEMS["linear4"]
    with pytest.raises(ValueError, match="non-negative int"):
        get_lmm_stepper("ab2").step(CallableField(problem.f), -1, 0.0, 0.1,
                                    (problem.y0, problem.y0), None)


def test_replayed_grid_must_be_uniform_up_to_linspace_roundoff():
    """Multistep steps assume a constant h: a replayed grid must be uniform (linspace roundoff
    and decreasing grids are fine), checked by the discrete-adjoint drivers."""
    from adjointcore.sensitivity import grid_forward
    problem = PROBLEMS["linear4"]
    field = CallableField(problem.f)
    for grid in (np.linspace(1e6, 1e6 + 1.0, 1001), np.linspace(1.0, 0.0, 5)):
        grid_forward(field, problem.y0, None, grid, "ab3")
    with pytest.raises(ValueError, match="`grid` is not uniform"):
        grid_forward(field, problem.y0, None, np.array([0.0, 0.1, 0.3, 0.4]), "ab3")


def test_lm_method_params_and_scale():
    stepper = get_lmm_stepper("lm", k=-0.05)
    assert stepper.method_params == {"k": -0.05}
    assert stepper.rhs_scale == pytest.approx(1 / 0.95, rel=1e-15)
    assert get_lmm_stepper("abm3").method_params == {}


def test_cupy_matches_numpy(xp):
    problem = PROBLEMS["linear4"]
    for method in ("ab4", "abm3", "leapfrog"):
        ys_np, ys_xp = (solvers.solve(problem.f, y0, (0.0, 1.0), method=method, steps=8).ys
                        for y0 in (problem.y0, xp.asarray(problem.y0)))
        assert type(ys_xp) is type(xp.asarray(problem.y0))
        # Same operations in float64 on both devices; differences are reduction-order rounding.
        np.testing.assert_allclose(xp.asnumpy(ys_xp) if xp is not np else ys_xp, ys_np,
                                   rtol=1e-13, atol=1e-14)
