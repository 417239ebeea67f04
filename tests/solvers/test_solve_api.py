"""The public surface of ``solve``: argument validation (clear errors naming the argument),
result fields, plain callables vs fields, multistep dispatch, CuPy."""
import numpy as np
import pytest

import solvers
from adjointcore.backend import get_array_module
from solvers import Solution, SolveError, Status, Work, as_field, solve

from .problems import PROBLEMS

PROB = PROBLEMS["rotation_decay"]


def run(**kw):
    args = dict(field=PROB.f, y0=PROB.y0, t_span=PROB.t_span)
    args.update(kw)
    return solve(**args)


BAD_INPUTS = [
    (dict(rtol=0.0), ValueError, "`rtol`"),
    (dict(rtol=-1e-3), ValueError, "`rtol`"),
    (dict(rtol=1e-17), ValueError, "100 eps"),
    (dict(atol=-1.0), ValueError, "`atol`"),
    (dict(atol=np.ones(3)), ValueError, "`atol` with shape \\(3,\\)"),
    (dict(t_span=(1.0, 1.0)), ValueError, "`t_span`"),
    (dict(t_span=(0.0, np.inf)), ValueError, "`t_span`"),
    (dict(t_span=(0.0,)), ValueError, "`t_span` must be a pair"),
    (dict(y0=np.array([1.0, np.nan])), ValueError, "`y0` must be finite"),
    (dict(y0=np.array([])), ValueError, "`y0` is empty"),
    (dict(y0=np.array(["a"])), TypeError, "`y0`"),
    (dict(method="rk5"), ValueError, "unknown method 'rk5'.*dopri5.*ab3"),
    (dict(method="rk4"), ValueError, "no embedded error estimate.*steps=N"),
    (dict(method="ab3"), ValueError, "pass steps=N"),
    (dict(steps=0), ValueError, "`steps` must be a positive int"),
    (dict(steps=2.5), ValueError, "`steps`"),
    (dict(steps=10, rtol=1e-3), ValueError, r"\['rtol'\] only apply to adaptive"),
    (dict(max_steps=0), ValueError, "`max_steps`"),
    (dict(first_step=-0.1), ValueError, "`first_step` must be positive"),
    (dict(first_step=100.0), ValueError, "at most"),
    (dict(t_eval=[0.0, 9.0]), ValueError, "`t_eval` must lie within"),
    (dict(t_eval=[2.0, 1.0]), ValueError, "`t_eval` must be sorted"),
    (dict(controller=solvers.PIController(), rtol=1e-3), ValueError, "not both"),
    (dict(controller="pi"), TypeError, "`controller`"),
    (dict(norm="rms"), TypeError, "`norm`"),
    (dict(field=3.0), TypeError, "`field`"),
]


@pytest.mark.parametrize("kwargs, exc, match", BAD_INPUTS, ids=[str(b[0])[:40] for b in BAD_INPUTS])
def test_bad_inputs_raise_clear_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        run(**kwargs)


def test_unknown_keyword_is_a_type_error():
    with pytest.raises(TypeError, match="rtoll"):
        run(rtoll=1e-3)


def test_solution_fields():
    res = run()
    assert isinstance(res, Solution) and isinstance(res.stats, Work)
    assert res.success and res.status is Status.SUCCESS and res.method == "dopri5"
    assert res.message == solvers.MESSAGES[Status.SUCCESS]
    assert res.ts.dtype == res.grid.dtype == np.float64 and np.array_equal(res.ts, res.grid)
    assert res.grid[0] == PROB.t_span[0] and res.grid[-1] == PROB.t_span[1]
    assert res.ys.shape == (len(res.grid), 2) and np.array_equal(res.ys[0], PROB.y0)
    st = res.stats
    assert st.n_steps == st.n_accepted + st.n_rejected
    np.testing.assert_allclose(res.step_sizes.sum(), PROB.t_span[1] - PROB.t_span[0], rtol=1e-14)


def test_integer_y0_and_tableau_object_and_time_reversed_t_eval():
    res = solve(lambda t, y: -y, [1, 2], (1.0, 0.0), method=solvers.TABLEAUX["tsit5"],
                t_eval=[1.0, 0.5, 0.0], rtol=1e-9, atol=1e-12)
    assert res.method == "tsit5" and res.ys.dtype == np.float64
    np.testing.assert_allclose(res.ys[-1], np.array([1.0, 2.0]) * np.e, rtol=1e-8)


def test_params_are_passed_to_callables():
    res = solve(lambda t, y, k: -k * y, np.array([1.0]), (0.0, 1.0), params=2.0, rtol=1e-9,
                atol=1e-12)
    np.testing.assert_allclose(res.ys[-1], np.exp(-2.0), rtol=1e-8)


def test_as_field():
    field = as_field(lambda t, y: 2 * y)
    dy, cache = field.forward(0.0, np.ones(2), None)
    assert np.array_equal(dy, 2 * np.ones(2)) and cache is None
    with pytest.raises(NotImplementedError, match="plain callables have no VJP"):
        field.vjp(cache, dy)
    assert as_field(field) is field and solvers.is_field(field)
    with pytest.raises(TypeError, match="forward/vjp"):
        as_field(None)


def test_failure_raises_with_result():
    with pytest.raises(SolveError) as info:
        run(max_steps=3)
    err = info.value
    assert isinstance(err, RuntimeError) and err.result.status is Status.MAX_STEPS
    assert "MAX_STEPS" in str(err) and "max_steps" in str(err)


def test_t_eval_partial_on_failure():
    res = run(max_steps=4, t_eval=np.linspace(0, 5, 51), raise_on_failure=False)
    assert not res.success and 0 < len(res.ts) < 51
    assert res.ts[-1] <= res.grid[-1]
    np.testing.assert_allclose(res.ys, PROB.exact(res.ts), atol=1e-6)


@pytest.mark.parametrize("method", ["ab3", "abm4", "leapfrog"])
def test_multistep_methods_run_through_solve(method):
    res = run(method=method, steps=200)
    field, stepper = solvers.field_kernel(as_field(PROB.f)), solvers.get_stepper(method)
    t0, t1 = PROB.t_span
    h = (t1 - t0) / 200                                # multistep solves take equal steps
    state, ys = stepper.init(field, t0, PROB.y0, None), [PROB.y0]
    for i in range(200):
        state, _ = stepper.step(field, i, t0 + i * h, h, state, None)
        ys.append(state[0])
    # Autonomous field: the time values (accumulated there, multiplied here) do not enter, and
    # the arithmetic is the same, so the trajectories agree bitwise.
    np.testing.assert_array_equal(res.ys, np.stack(ys))
    assert res.stats.nfe == field.nfe                  # no dense output for fixed steps
    assert np.abs(res.ys[-1] - PROB.exact(PROB.t_span[1])).max() < 1e-3


def test_fixed_step_grid():
    res = run(method="rk4", steps=7)
    h = (PROB.t_span[1] - PROB.t_span[0]) / 7
    assert len(res.grid) == 8 and np.allclose(np.diff(res.grid), h, rtol=1e-14)
    # step sizes are the differences of the (linspace) grid points: equal to h up to rounding
    assert np.array_equal(res.step_sizes, np.diff(res.grid))
    np.testing.assert_allclose(res.step_sizes, h, rtol=4 * np.finfo(float).eps)


def test_cupy_solve_matches_numpy(xp):
    res = solve(PROB.f, xp.asarray(PROB.y0), PROB.t_span, t_eval=np.linspace(0, 5, 6))
    ref = solve(PROB.f, PROB.y0, PROB.t_span, t_eval=np.linspace(0, 5, 6))
    assert get_array_module(res.ys) is xp
    ys = res.ys.get() if hasattr(res.ys, "get") else res.ys
    np.testing.assert_allclose(ys, ref.ys, rtol=1e-12, atol=1e-14)
    assert np.array_equal(res.grid, ref.grid)


def test_t_eval_of_non_numbers_names_the_argument():
    with pytest.raises(TypeError, match="`t_eval`"):
        run(t_eval=["a", "b"])


def test_cupy_array_tolerances_and_t_eval(xp):
    """Array tolerances (NumPy, moved to the device once) and a device t_eval on CuPy."""
    atol = np.array([1e-9, 1e-12])
    res = solve(PROB.f, xp.asarray(PROB.y0), PROB.t_span, atol=atol,
                t_eval=xp.asarray(np.linspace(0, 5, 6)))
    ref = solve(PROB.f, PROB.y0, PROB.t_span, atol=atol, t_eval=np.linspace(0, 5, 6))
    ys = res.ys.get() if hasattr(res.ys, "get") else res.ys
    np.testing.assert_allclose(ys, ref.ys, rtol=1e-12, atol=1e-14)
    sol_t = res.sol(xp.asarray([0.5, 1.5]))
    assert sol_t.shape == (2, 2)


@pytest.mark.parametrize("t_span,steps", [((0.0, 1.0), 50), ((1.0, 0.0), 50),
                                          ((0.3, -2.7), 37), ((-1.0, 1.0), 33)])
@pytest.mark.parametrize("method", ["euler", "rk4", "dopri5"])
def test_fixed_grid_is_linspace_and_replays_bitwise(method, t_span, steps):
    """Fixed steps use np.linspace's points (no accumulated drift, t1 exact), so replaying the
    grid with the stepper reproduces the solve bit for bit (what discrete adjoints rely on)."""
    prob = PROBLEMS["linear4"]
    res = solvers.solve(prob.f, prob.y0, t_span, method=method, steps=steps, dense_output=True)
    grid = np.linspace(*t_span, steps + 1)
    assert np.array_equal(res.grid, grid)
    field, stepper = solvers.as_field(prob.f), solvers.get_stepper(method)
    state = stepper.init(field, grid[0], prob.y0, None)
    for i in range(steps):
        state, _ = stepper.step(field, i, grid[i], grid[i + 1] - grid[i], state, None)
    assert np.array_equal(state[0], res.ys[-1])
    assert np.array_equal(res.sol(t_span[1]), res.ys[-1])
