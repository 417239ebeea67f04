"""Observed convergence order of every fixed-step RK method on closed-form problems, and the
basic contracts of ``rk_step`` (FSAL / ``full`` / ``f0`` consistency, dtype, embedded estimate)."""
import numpy as np
import pytest

import solvers
from adjointcore.backend import get_array_module
from solvers import TABLEAUX, as_field, rk_step

from .problems import PROBLEMS

# Step counts in the asymptotic regime: successive errors fall by ~2^p, and the finest-grid
# error stays >= ERROR_FLOOR, well above accumulated rounding (N * eps ~ 1e-13).
STEPS = {1: (100, 200, 400, 800), 2: (50, 100, 200, 400), 3: (40, 80, 160, 320),
         4: (40, 80, 160, 320), 5: (64, 128, 256)}
ERROR_FLOOR = 2e-13
ORDER_PROBLEMS = ("rotation_decay", "linear4", "logistic", "riccati", "nonautonomous")
# A case whose default range is not asymptotic, with the range that is (local slopes measured
# between successive halvings of h): rk38 on Riccati, whose error changes sign near N = 40
# (local slopes 6.4, 7.0, 2.2, 3.7 for N = 8..128), then 3.88, 3.95 for N = 128..512.
STEPS_FOR = {("rk38", "riccati"): (128, 256, 512)}
# Left out (measured): the order-5 pairs whose local slopes still exceed ~5.1 when the error
# reaches the rounding floor, so no range is both asymptotic and above it:
# dopri5 and tsit5 on Riccati (local slopes 5.69, 5.42, 5.23 for N = 64..512; the error
# expansion has a large h^6 term), dopri5 on logistic (5.21, 5.12, 5.07 for N = 32..256, the
# last error 1.4e-13), tsit5 on logistic (5.19, 5.10 at errors 3e-11 .. 2e-14) and on
# nonautonomous (5.28, 5.18 at errors 2e-10 .. 2e-13); Tsitouras minimises the principal error
# coefficient by design, so the h^6 term dominates longer. Cash-Karp likewise on logistic
# (5.48, 5.33, 4.99 for N = 32..256, the last error 1.9e-14) and on Riccati, where the slope
# climbs from below (4.61, 4.84, 4.93 for N = 32..256, the last error 1.1e-13).
EXCLUDED = {("dopri5", "riccati"), ("tsit5", "riccati"), ("dopri5", "logistic"),
            ("tsit5", "logistic"), ("tsit5", "nonautonomous"), ("cash_karp", "logistic"),
            ("cash_karp", "riccati")}
CASES = [(m, p) for m in sorted(TABLEAUX) for p in ORDER_PROBLEMS if (m, p) not in EXCLUDED]
#: Band from the task statement (measured worst case: Tsit5 on linear4, +0.10).
ORDER_BAND = 0.15


def observed_order(method, problem, steps):
    """Slope of log(max trajectory error) against log(h) over ``steps``."""
    errors = []
    for n in steps:
        res = solvers.solve(problem.f, problem.y0, problem.t_span, method=method, steps=n,
                            dense_output=False)
        errors.append(np.abs(res.ys - problem.exact(res.ts)).max())
    h = (problem.t_span[1] - problem.t_span[0]) / np.asarray(steps, dtype=float)
    return np.polyfit(np.log(h), np.log(errors), 1)[0], errors


@pytest.mark.parametrize("method, problem", CASES)
def test_observed_order(method, problem):
    tab = TABLEAUX[method]
    steps = STEPS_FOR.get((method, problem), STEPS[tab.order])
    slope, errors = observed_order(method, PROBLEMS[problem], steps)
    assert min(errors) > ERROR_FLOOR, "finest grid too close to rounding: choose fewer steps"
    assert abs(slope - tab.order) <= ORDER_BAND, f"{method} on {problem}: slope {slope:.3f}"


@pytest.mark.parametrize("method", ["bosh3", "dopri5", "tsit5", "cash_karp"])
def test_embedded_estimate_has_its_order(method):
    """One step from the exact solution: |y_err| = O(h^(err_order+1)) (slope within 0.15)."""
    tab, prob = TABLEAUX[method], PROBLEMS["rotation_decay"]
    field, t, y = as_field(prob.f), 0.7, prob.exact(0.7)
    hs = np.array([0.2, 0.1, 0.05, 0.025])
    est = [np.abs(rk_step(field, tab, t, y, h, None)[1]).max() for h in hs]
    slope = np.polyfit(np.log(hs), np.log(est), 1)[0]
    assert abs(slope - (tab.err_order + 1)) <= 0.15, slope


@pytest.mark.parametrize("method", sorted(TABLEAUX))
def test_full_and_f0_do_not_change_y1(method):
    """``full=False`` and a given ``f0`` leave ``y1`` bitwise unchanged; FSAL stage = f(t+h, y1)."""
    tab, prob = TABLEAUX[method], PROBLEMS["nonautonomous"]
    field, t, y, h = as_field(prob.f), 0.3, np.array([0.9, -1.2]), 0.17
    y1, y_err, stages = rk_step(field, tab, t, y, h, None)
    y1_live, err_live, st_live = rk_step(field, tab, t, y, h, None, full=False)
    y1_f0, _, st_f0 = rk_step(field, tab, t, y, h, None, f0=prob.f(t, y))
    assert np.array_equal(y1, y1_live) and np.array_equal(y1, y1_f0)
    assert err_live is None and (y_err is None) == (tab.b_err is None)
    assert len(stages.k) == tab.n_stages and len(st_live.k) == tab.n_live
    assert st_f0.caches[0] is None and stages.h == h and stages.t == t and stages.y is y
    if tab.fsal:
        assert np.array_equal(stages.k[-1], prob.f(t + h, y1))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128])
def test_dtype_preserved(dtype):
    y = np.array([1.0, -0.5], dtype=dtype)
    field = as_field(lambda t, y: -0.5 * y + y[::-1])           # keeps the dtype of y
    y1, y_err, stages = rk_step(field, TABLEAUX["dopri5"], 0.0, y, 0.1, None)
    assert y1.dtype == y_err.dtype == stages.k.dtype == dtype


def test_batched_state_matches_per_sample():
    """A (batch, d) state is stepped like each row separately (no loop over the batch)."""
    prob = PROBLEMS["linear4"]
    rng = np.random.default_rng(1)
    ys = rng.standard_normal((3, 4))

    def f(t, y):
        return y @ (prob.f(0.0, np.eye(4)).T)     # rows are states: y_i' = A y_i

    batch = rk_step(as_field(f), TABLEAUX["rk4"], 0.0, ys, 0.1, None)[0]
    rows = [rk_step(as_field(prob.f), TABLEAUX["rk4"], 0.0, y, 0.1, None)[0] for y in ys]
    np.testing.assert_allclose(batch, np.stack(rows), rtol=1e-14, atol=1e-15)


def test_cupy_step_matches_numpy(xp):
    prob = PROBLEMS["rotation_decay"]
    y1 = rk_step(as_field(prob.f), TABLEAUX["tsit5"], 0.0, xp.asarray(prob.y0), 0.1, None)[0]
    ref = rk_step(as_field(prob.f), TABLEAUX["tsit5"], 0.0, prob.y0, 0.1, None)[0]
    assert get_array_module(y1) is xp
    np.testing.assert_allclose(y1.get() if hasattr(y1, "get") else y1, ref, rtol=1e-14)
