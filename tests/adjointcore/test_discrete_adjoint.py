"""The discrete adjoint through whole solves equals the gradient of the same discrete map.

Everything is float64. The reference is a central difference of ``grid_forward`` (the replay of
the *same* steps, start-up steps and history included, on the same - possibly frozen adaptive -
grid), so mismatches measure FD error only. Loss ``L = sum_k <w_k, y_{obs_k}>`` on the final state
or on several grid states; fields are smooth tanh/softplus MLPs (``LayerField``), optionally
time-dependent (``ConcatLinear``), so stage times matter.

FD reference: the fourth-order central stencil (``gradcheck.richardson_difference``) with
eps = 5e-4 along unit directions: truncation ~eps^4 |L^(5)| / 30 and rounding ~1e-16 |L| / eps
~ 1e-12 |L|. Errors are taken relative to ``|g| |v|`` (the largest ``<g, v>`` can be), so a
direction nearly orthogonal to ``g`` cannot inflate them; for the scalar ``k`` relative to
``|dL/dk|``. (The second-order stencil, eps ~ 6e-6, left errors up to 9e-9 on ``dL/dk`` when it
is small by cancellation.) Measured worst case over 1500 random problems of the hypothesis
distributions: 8.5e-11 (``dL/dk``), 3.7e-11 (frozen adaptive Dopri5), <= 4e-12 otherwise; 1e-8
(the DESIGN.md bar) leaves a margin of > 100.

Trajectory-level mutants (a broken stepper run through the full driver) must be caught by the
same comparison; step-level mutants live in tests/solvers/test_rk_step_vjp.py and test_lmm_vjp.py.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import solvers
from adjointcore.fields import LayerField
from adjointcore.gradcheck import richardson_difference, taylor_test
from adjointcore.layers import ConcatLinear, Linear, Sequential, Softplus, Tanh
from adjointcore.sensitivity.discrete import discrete_adjoint, grid_forward, obs_steps_on_grid
from solvers import TABLEAUX, get_stepper, rk_step, rk_step_vjp

FD_RTOL = 1e-8
FD_EPS = 5e-4
#: A mutant counts as caught when its FD mismatch exceeds this (1e4 times the acceptance bar).
CAUGHT = 1e-4
RK_METHODS = sorted(TABLEAUX)
LMM_METHODS = ["ab1", "ab2", "ab3", "ab4", "ab5", "abm2", "abm3", "abm4", "abm5", "leapfrog", "lm"]


# -- problems --------------------------------------------------------------------------------------
class Problem:
    """A small smooth neural-ODE problem: field, ``y0``, ``params``, grid, observations, weights."""

    def __init__(self, field, y0, params, grid, obs_steps, weights, method, options):
        self.field, self.y0, self.params, self.grid = field, y0, params, grid
        self.obs_steps, self.weights = obs_steps, weights
        self.method, self.options = method, dict(options)

    def loss(self, y0=None, params=None, method=None, options=None):
        """``L = sum_k <w_k, y_{obs_k}>`` of the replayed discrete map (any argument replaced)."""
        ys, _ = grid_forward(self.field, self.y0 if y0 is None else y0,
                             self.params if params is None else params, self.grid,
                             self.method if method is None else method,
                             self.options if options is None else options, self.obs_steps)
        return float(np.sum(self.weights * ys))

    def gradient(self, method=None, schedule=None):
        """``discrete_adjoint`` of :meth:`loss` (``method`` may be a stepper object)."""
        method = self.method if method is None else method
        opts = None if not isinstance(method, str) else self.options
        return discrete_adjoint(self.field, self.y0, self.params, self.grid, self.weights,
                                method=method, method_options=opts, obs_steps=self.obs_steps,
                                schedule=schedule)


def mlp_field(rng, d, hidden, activation="tanh", time_dependent=False, scale=1.0):
    """``LayerField`` of ``Linear|ConcatLinear(d, hidden) -> act -> Linear(hidden, d)``."""
    act = {"tanh": Tanh, "softplus": Softplus}[activation]()
    first = ConcatLinear(d, hidden) if time_dependent else Linear(d, hidden)
    layer = Sequential(first, act, Linear(hidden, d))
    return LayerField(layer), scale * layer.init(rng)


def make_problem(seed, method, n_steps=6, *, batch=2, d=3, hidden=4, activation="tanh",
                 time_dependent=True, t0=0.0, t1=1.0, uniform=True, n_obs=1, options=None):
    """Problem on a fixed grid (uniform, or jittered for one-step methods)."""
    rng = np.random.default_rng(seed)
    field, params = mlp_field(rng, d, hidden, activation, time_dependent)
    y0 = rng.standard_normal((batch, d))
    if uniform:
        grid = np.linspace(t0, t1, n_steps + 1)
    else:
        widths = rng.uniform(0.5, 1.5, n_steps)
        grid = t0 + (t1 - t0) * np.concatenate([[0.0], np.cumsum(widths) / widths.sum()])
    obs = pick_obs(rng, n_steps, n_obs)
    weights = rng.standard_normal((obs.size, batch, d))
    return Problem(field, y0, params, grid, obs, weights, method, options or {})


def pick_obs(rng, n_steps, n_obs):
    """``n_obs`` distinct observation steps, always including the final one (0 may occur)."""
    if n_obs <= 1:
        return np.array([n_steps])
    inner = rng.choice(n_steps, size=min(n_obs - 1, n_steps), replace=False)
    return np.sort(np.concatenate([inner, [n_steps]]))


def adaptive_problem(seed, rtol=1e-6, n_obs=3, t1=2.0, scale=2.0):
    """Dopri5 on the frozen accepted grid of ``solvers.solve(..., rtol=rtol)``."""
    rng = np.random.default_rng(seed)
    field, params = mlp_field(rng, 3, 5, "tanh", time_dependent=True, scale=scale)
    y0 = rng.standard_normal((2, 3))
    sol = solvers.solve(field, y0, (0.0, t1), params=params, method="dopri5", rtol=rtol)
    grid = sol.grid
    n = grid.size - 1
    obs = obs_steps_on_grid(grid, grid[pick_obs(rng, n, n_obs)])
    weights = rng.standard_normal((obs.size,) + y0.shape)
    return Problem(field, y0, params, grid, obs, weights, "dopri5", {}), sol


# -- FD and Taylor checks -----------------------------------------------------------------------
def unit(rng, shape):
    v = rng.standard_normal(shape)
    return v / np.linalg.norm(v)


def fd_mismatches(prob, grad, rng):
    """Relative FD mismatch ``|<g, v> - FD_v L| / (|g| |v|)`` per input block (unit ``v``)."""
    out = {}
    v = unit(rng, prob.y0.shape)
    fd = richardson_difference(lambda y: prob.loss(y0=y), prob.y0, v, eps=FD_EPS)
    out["y0"] = abs(fd - float(np.sum(grad.y0_bar * v))) / max(np.linalg.norm(grad.y0_bar), 1e-300)
    v = unit(rng, prob.params.shape)
    fd = richardson_difference(lambda p: prob.loss(params=p), prob.params, v, eps=FD_EPS)
    g = grad.params_bar
    out["params"] = abs(fd - float(g @ v)) / max(np.linalg.norm(g), 1e-300)
    if prob.method == "lm":
        k = np.array([prob.options["k"]])
        fd = richardson_difference(lambda kk: prob.loss(options={"k": float(kk[0])}), k,
                                   np.ones(1), eps=FD_EPS)
        g_k = grad.method_bar["k"]
        out["k"] = abs(fd - g_k) / max(abs(g_k), 1e-300)
    return out


def max_fd_mismatch(prob, grad, seed=0):
    return max(fd_mismatches(prob, grad, np.random.default_rng(seed)).values())


def taylor_on_all_inputs(prob, grad, seed):
    """Taylor test of ``L`` along a joint random direction in ``(y0, params[, k])``."""
    with_k = prob.method == "lm"
    sizes = (prob.y0.size, prob.params.size)

    def unpack(m):
        y0 = m[:sizes[0]].reshape(prob.y0.shape)
        params = m[sizes[0]:sizes[0] + sizes[1]]
        opts = {"k": float(m[-1])} if with_k else None
        return y0, params, opts

    m = np.concatenate([prob.y0.ravel(), prob.params] + ([[prob.options["k"]]] if with_k else []))
    g = np.concatenate([grad.y0_bar.ravel(), grad.params_bar]
                       + ([[grad.method_bar["k"]]] if with_k else []))
    dm = np.random.default_rng(seed).standard_normal(m.shape)
    dm /= np.max(np.abs(dm))

    def fun(mm):
        y0, params, opts = unpack(mm)
        return prob.loss(y0=y0, params=params, options=opts)

    # eps0 = 1e-3 (no coordinate moves by more than 1e-3): the default 1e-2 start leaves a visible
    # eps^3 term in R1 (slopes ~1.985); from 1e-3 the halvings sit in the asymptotic regime.
    return taylor_test(fun, g, m, dm, eps0=1e-3)


# -- acceptance 1: adjoint == FD of the discrete map (hypothesis) --------------------------------
sizes = st.fixed_dictionaries({
    "batch": st.integers(1, 3), "d": st.integers(1, 4), "hidden": st.integers(1, 5),
    "activation": st.sampled_from(["tanh", "softplus"]), "time_dependent": st.booleans(),
    "n_obs": st.integers(1, 4)})


@settings(max_examples=30, deadline=None)
@given(method=st.sampled_from(RK_METHODS), n_steps=st.integers(1, 8), uniform=st.booleans(),
       backwards=st.booleans(), size=sizes, seed=st.integers(0, 2**32 - 1))
@example(method="dopri5", n_steps=5, uniform=False, backwards=False,
         size={"batch": 2, "d": 3, "hidden": 4, "activation": "tanh", "time_dependent": True,
               "n_obs": 3}, seed=1)
def test_rk_adjoint_matches_fd(method, n_steps, uniform, backwards, size, seed):
    """Every RK tableau, uniform or jittered grids, forwards or backwards in time."""
    t0, t1 = (1.0, -0.2) if backwards else (0.0, 1.2)
    prob = make_problem(seed, method, n_steps, uniform=uniform, t0=t0, t1=t1, **size)
    err = fd_mismatches(prob, prob.gradient(), np.random.default_rng(seed + 1))
    assert max(err.values()) <= FD_RTOL, err


@settings(max_examples=30, deadline=None)
@given(method=st.sampled_from(LMM_METHODS), n_steps=st.integers(1, 9), size=sizes,
       k=st.floats(-0.5, 0.5, allow_subnormal=False), seed=st.integers(0, 2**32 - 1))
@example(method="ab4", n_steps=9, size={"batch": 2, "d": 3, "hidden": 4, "activation": "tanh",
                                         "time_dependent": True, "n_obs": 4}, k=0.0, seed=2)
@example(method="lm", n_steps=6, size={"batch": 1, "d": 2, "hidden": 3, "activation": "softplus",
                                        "time_dependent": False, "n_obs": 2}, k=-0.3, seed=3)
def test_lmm_adjoint_matches_fd(method, n_steps, size, k, seed):
    """Adams (start-up included), ABM, leapfrog and LM (with ``dL/dk``) on uniform grids."""
    options = {"k": k} if method == "lm" else {}
    prob = make_problem(seed, method, n_steps, options=options, **size)
    err = fd_mismatches(prob, prob.gradient(), np.random.default_rng(seed + 1))
    assert max(err.values()) <= FD_RTOL, err


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), rtol=st.sampled_from([1e-3, 1e-5, 1e-6]),
       n_obs=st.integers(1, 4))
def test_dopri5_frozen_adaptive_grid_matches_fd(seed, rtol, n_obs):
    """Dopri5 on the accepted grid of an adaptive solve (FD replays the frozen grid)."""
    prob, _ = adaptive_problem(seed, rtol=rtol, n_obs=n_obs)
    err = fd_mismatches(prob, prob.gradient(), np.random.default_rng(seed + 1))
    assert max(err.values()) <= FD_RTOL, err


def test_frozen_grid_replays_the_adaptive_solve():
    """The replay on ``Solution.grid`` reproduces the adaptive solve's final state (the frozen
    grid is the map whose gradient we take). Tolerance 1e-13: the replay's step ``grid[i+1] -
    grid[i]`` may differ from the solver's ``h`` in the last bit."""
    prob, sol = adaptive_problem(7, rtol=1e-6, n_obs=1)
    assert prob.grid.size > 5
    ys, nfe = grid_forward(prob.field, prob.y0, prob.params, prob.grid, "dopri5")
    np.testing.assert_allclose(ys[-1], sol.ys[-1], rtol=0, atol=1e-13)
    assert nfe == 6 * (prob.grid.size - 1)


# -- acceptance 1: Taylor remainder slope 2.00 +- 0.05 -------------------------------------------
TAYLOR_CASES = ["euler", "midpoint", "rk4", "rk38", "bosh3", "dopri5", "dopri5-adaptive",
                "ab2", "ab3", "ab4", "abm2", "abm3", "abm4", "leapfrog", "lm"]


@pytest.mark.parametrize("case", TAYLOR_CASES)
def test_taylor_remainder_slope_is_two(case):
    """Least-squares slope of ``R1`` is 2.00 +- 0.05 along a joint (y0, params[, k]) direction."""
    if case == "dopri5-adaptive":
        prob, _ = adaptive_problem(11, rtol=1e-6, n_obs=3)
    else:
        options = {"k": -0.2} if case == "lm" else {}
        prob = make_problem(5, case, 8, n_obs=3, options=options)
    res = taylor_on_all_inputs(prob, prob.gradient(), seed=13)
    assert res.converged, res
    assert abs(res.slope1 - 2.0) <= 0.05, (res.slope1, res.rates1)
    assert res.min_rate >= 1.9, res.rates1
    assert abs(res.slope0 - 1.0) <= 0.05, res.slope0


# -- acceptance 4: trajectory-level mutants through the full driver ------------------------------
class MutantStepper:
    """Wraps a real stepper; ``step_vjp`` is replaced by ``bug(base, field, n, t, h, state, params,
    state_next_bar, need_params)``. No ``step_taped``: the driver takes the ``step_vjp`` path."""

    def __init__(self, base, bug):
        self.base, self.bug = base, bug

    @property
    def method_params(self):
        return self.base.method_params

    def init(self, field, t0, y0, params):
        return self.base.init(field, t0, y0, params)

    def step(self, field, n, t, h, state, params):
        return self.base.step(field, n, t, h, state, params)

    def init_vjp(self, field, t0, y0, params, state_bar):
        return self.base.init_vjp(field, t0, y0, params, state_bar)

    def step_vjp(self, field, n, t, h, state, params, state_next_bar, need_params=True):
        return self.bug(self.base, field, n, t, h, state, params, state_next_bar, need_params)


class ScaledVJPField:
    """Field whose ``vjp`` call number ``index`` (0-based, in call order within one step VJP) has
    its outputs multiplied by ``factor``; ``index=None`` scales every call. Built per step."""

    def __init__(self, field, factor, index=None):
        self.field, self.factor, self.index, self.calls = field, factor, index, 0

    def forward(self, t, y, params):
        return self.field.forward(t, y, params)

    def vjp(self, cache, dy_bar, need_params=True):
        y_bar, p_bar, t_bar = self.field.vjp(cache, dy_bar, need_params=need_params)
        hit = self.index is None or self.calls == self.index
        self.calls += 1
        if not hit:
            return y_bar, p_bar, t_bar
        return self.factor * y_bar, None if p_bar is None else self.factor * p_bar, t_bar


def scaled_stage_bug(factor, index=None, from_step=0):
    """Scale one (or every) field VJP of each step ``n >= from_step``."""
    def bug(base, field, n, t, h, state, params, state_next_bar, need_params):
        if n >= from_step:
            field = ScaledVJPField(field, factor, index)
        return base.step_vjp(field, n, t, h, state, params, state_next_bar, need_params)
    return bug


def dropped_startup_bug(base, field, n, t, h, state, params, state_next_bar, need_params):
    """Start-up steps pass ``y_bar`` straight through: their VJP is dropped."""
    if n >= base.n_startup:
        return base.step_vjp(field, n, t, h, state, params, state_next_bar, need_params)
    zeros = tuple(np.zeros_like(s) for s in state[1:])
    return (state_next_bar[0],) + zeros, None, {k: 0.0 for k in base.method_params}


def flipped_k_bug(base, field, n, t, h, state, params, state_next_bar, need_params):
    state_bar, p_bar, extra = base.step_vjp(field, n, t, h, state, params, state_next_bar,
                                            need_params)
    return state_bar, p_bar, {key: -v for key, v in extra.items()}


class AdjointTableau:
    """Duck-typed stand-in for a tableau seen by ``rk_step_vjp`` only, with ``a`` transposed
    (``ButcherTableau`` itself rejects a non-lower-triangular ``a``)."""

    def __init__(self, tab, transpose=True):
        self.a = tab.a.T.copy() if transpose else tab.a
        self.b, self.b_err, self.c, self.live = tab.b, tab.b_err, tab.c, tab.live


def rk_adjoint_tableau_bug(transpose):
    """Step VJP through ``rk_step_vjp`` with an adjoint-only tableau (``a`` transposed or not)."""
    shims = {}

    def bug(base, field, n, t, h, state, params, state_next_bar, need_params):
        shim = shims.setdefault(id(base.tab), AdjointTableau(base.tab, transpose))
        _, _, stages = rk_step(field, base.tab, t, state[0], h, params, full=False)
        y_bar, p_bar = rk_step_vjp(field, shim, stages, state_next_bar[0],
                                   need_params=need_params)
        return (y_bar,), p_bar, {}
    return bug


def identity_bug(base, field, n, t, h, state, params, state_next_bar, need_params):
    return base.step_vjp(field, n, t, h, state, params, state_next_bar, need_params)


# (name, method, options, bug, adaptive grid)
MUTANTS = [
    ("sign flip of every stage VJP", "rk4", {}, scaled_stage_bug(-1.0), False),
    ("sign flip of every field VJP", "ab3", {}, scaled_stage_bug(-1.0), False),
    ("sign flip of every stage VJP", "dopri5", {}, scaled_stage_bug(-1.0), True),
    ("missing stage term (rk4 stage 2)", "rk4", {}, scaled_stage_bug(0.0, index=2), False),
    ("dropped start-up step VJP", "ab3", {}, dropped_startup_bug, False),
    ("dropped start-up step VJP", "abm4", {}, dropped_startup_bug, False),
    ("dropped start-up step VJP", "ab2", {}, dropped_startup_bug, False),
    ("dropped start-up step VJP", "leapfrog", {}, dropped_startup_bug, False),
    ("dropped start-up step VJP", "lm", {"k": -0.1}, dropped_startup_bug, False),
    # Dopri5's k_1 of step n is the FSAL stage k_7 of step n-1: counting it in both steps adds
    # its VJP twice (index 5 = stage 1, the last of the six VJP calls in reverse stage order).
    ("FSAL stage counted twice (k_1 = previous k_7)", "dopri5", {},
     scaled_stage_bug(2.0, index=5, from_step=1), False),
    ("FSAL stage counted twice (k_1 = previous k_7)", "dopri5", {},
     scaled_stage_bug(2.0, index=5, from_step=1), True),
    ("last live stage VJP added twice", "dopri5", {}, scaled_stage_bug(2.0, index=0), True),
    ("a transposed in the adjoint", "rk4", {}, rk_adjoint_tableau_bug(True), False),
    ("a transposed in the adjoint", "dopri5", {}, rk_adjoint_tableau_bug(True), True),
    ("a transposed in the adjoint", "bosh3", {}, rk_adjoint_tableau_bug(True), False),
    ("sign flip of dL/dk", "lm", {"k": -0.1}, flipped_k_bug, False),
]
CONTROLS = [
    ("identity wrapper", "rk4", {}, identity_bug, False),
    ("identity wrapper", "abm4", {}, identity_bug, False),
    ("identity wrapper", "lm", {"k": -0.1}, identity_bug, False),
    ("scale 1", "dopri5", {}, scaled_stage_bug(1.0, index=5, from_step=1), True),
    ("a not transposed", "dopri5", {}, rk_adjoint_tableau_bug(False), True),
    ("a not transposed", "rk4", {}, rk_adjoint_tableau_bug(False), False),
]


def mutant_problem(method, options, adaptive):
    if adaptive:
        return adaptive_problem(17, rtol=1e-5, n_obs=3)[0]
    return make_problem(19, method, 8, n_obs=3, options=options, hidden=5)


def _ids(cases):
    return [f"{name}-{method}{'-adaptive' if adaptive else ''}"
            for name, method, _, _, adaptive in cases]


@pytest.mark.parametrize("name, method, options, bug, adaptive", MUTANTS, ids=_ids(MUTANTS))
def test_trajectory_mutant_is_caught(name, method, options, bug, adaptive):
    """The corrupted adjoint disagrees with FD of the true discrete map by far more than 1e-8."""
    prob = mutant_problem(method, options, adaptive)
    grad = prob.gradient(method=MutantStepper(get_stepper(method, **options), bug))
    assert max_fd_mismatch(prob, grad) > CAUGHT, name


@pytest.mark.parametrize("name, method, options, bug, adaptive", CONTROLS, ids=_ids(CONTROLS))
def test_mutant_harness_without_bug_passes(name, method, options, bug, adaptive):
    """The wrappers themselves are faithful: without the corruption the FD check passes and the
    gradient is bitwise the driver's own."""
    prob = mutant_problem(method, options, adaptive)
    grad = prob.gradient(method=MutantStepper(get_stepper(method, **options), bug))
    assert max_fd_mismatch(prob, grad) <= FD_RTOL
    ref = prob.gradient()
    assert np.array_equal(grad.y0_bar, ref.y0_bar)
    assert np.array_equal(grad.params_bar, ref.params_bar)
    assert grad.method_bar == ref.method_bar


def test_taylor_test_flags_a_mutant():
    """A wrong gradient leaves an ``eps <g_true - g, dm>`` term in R1: its slope drops to 1."""
    prob = make_problem(5, "rk4", 8, n_obs=3)
    wrong = prob.gradient(method=MutantStepper(get_stepper("rk4"), scaled_stage_bug(0.0, 2)))
    res = taylor_on_all_inputs(prob, wrong, seed=13)
    assert abs(res.slope1 - 1.0) <= 0.05, res.slope1


# -- observation indices, cotangent dtype, recordings, work counters -----------------------------
def test_repeated_and_initial_obs_steps():
    """``obs_steps`` may repeat an index (cotangents add) and contain 0 (``y0`` itself): the
    gradient is the sum of single-observation gradients and matches FD of the replay whose rows
    come back in the given order. Bitwise sums are not expected (different summation order):
    1e-14 relative is a few ulps of accumulated float64 rounding."""
    prob = make_problem(23, "rk4", 5, n_obs=1)
    rng = np.random.default_rng(4)
    obs = np.array([3, 0, 3, 5])
    w = rng.standard_normal((4,) + prob.y0.shape)
    ys, _ = grid_forward(prob.field, prob.y0, prob.params, prob.grid, "rk4", obs_steps=obs)
    assert np.array_equal(ys[1], prob.y0) and np.array_equal(ys[0], ys[2])
    got = discrete_adjoint(prob.field, prob.y0, prob.params, prob.grid, w, method="rk4",
                           obs_steps=obs)
    parts = [discrete_adjoint(prob.field, prob.y0, prob.params, prob.grid, w[j:j + 1],
                              method="rk4", obs_steps=obs[j:j + 1]) for j in range(4)]
    y0_sum = sum(p.y0_bar for p in parts)
    p_sum = sum(p.params_bar for p in parts)
    assert np.abs(got.y0_bar - y0_sum).max() <= 1e-14 * np.abs(y0_sum).max()
    assert np.abs(got.params_bar - p_sum).max() <= 1e-14 * np.abs(p_sum).max()
    # y0 observed directly: its cotangent passes straight into y0_bar and adds no parameter term
    assert np.array_equal(parts[1].y0_bar, w[1]) and not np.any(parts[1].params_bar)
    prob.obs_steps, prob.weights = obs, w
    err = fd_mismatches(prob, got, np.random.default_rng(5))
    assert max(err.values()) <= FD_RTOL, err


@pytest.mark.parametrize("bad, error, match", [
    ([7], ValueError, r"`obs_steps` must lie in \[0, 4\].*\[7\]"),
    ([-1], ValueError, r"negative indices"),
    ([2.5], TypeError, r"`obs_steps` must be integer"),
    (np.array([7]), ValueError, r"`obs_steps` must lie in \[0, 4\].*\[7\]"),
    (np.array([-1]), ValueError, r"negative indices"),
    ([True], TypeError, r"`obs_steps` must be integer"),
])
def test_bad_obs_steps_are_rejected(bad, error, match):
    """Out-of-range indices made ``grid_forward`` return uninitialised rows (``xp.empty``); a
    fractional index was truncated. Both entry points now raise."""
    prob = make_problem(3, "rk4", 4)
    with pytest.raises(error, match=match):
        grid_forward(prob.field, prob.y0, prob.params, prob.grid, "rk4", obs_steps=bad)
    with pytest.raises(error, match=match):
        discrete_adjoint(prob.field, prob.y0, prob.params, prob.grid,
                         np.ones((1,) + prob.y0.shape), method="rk4", obs_steps=bad)


def test_checked_obs_steps_are_a_copy_in_int64():
    """Plain ints, int64 arrays and integral floats come back as a new 1-D int64 array: a
    later change to the caller's array does not move a sweep's observation points."""
    from adjointcore.sensitivity._discrete_inputs import check_obs_steps

    for steps in ([1, 4], np.array([1, 4]), np.array([[1], [4]]), np.array([1.0, 4.0]), (1, 4)):
        got = check_obs_steps(steps, 4)
        assert got.dtype == np.int64 and got.tolist() == [1, 4] and got is not steps
        if isinstance(steps, np.ndarray):
            steps[...] = 0
            assert got.tolist() == [1, 4]


def test_obs_steps_on_grid_rejects_nan():
    """``abs(nan) > tol`` is False: a NaN time used to be matched to the last grid point."""
    with pytest.raises(ValueError, match=r"`t_obs\[1\]`"):
        obs_steps_on_grid(np.linspace(0.0, 1.0, 5), [0.5, np.nan])


@pytest.mark.parametrize("schedule", [None, "store-all"])
def test_float64_cotangents_of_float32_state_give_float32_gradients(schedule):
    """The gradients take the state's dtype (they were promoted to float64 by the cotangent)."""
    from adjointcore.checkpointing import StoreAll
    prob = make_problem(8, "rk4", 4)
    y0, params = prob.y0.astype(np.float32), prob.params.astype(np.float32)
    g = discrete_adjoint(prob.field, y0, params, prob.grid, np.ones(y0.shape), method="rk4",
                         schedule=None if schedule is None else StoreAll())
    assert g.y0_bar.dtype == np.float32 and g.params_bar.dtype == np.float32
    with pytest.raises(TypeError, match="real cotangents"):
        discrete_adjoint(prob.field, y0, params, prob.grid, np.ones(y0.shape, complex),
                         method="rk4")


def test_recording_of_another_method_is_rejected():
    """A taped sweep of one tableau fed to another's adjoint gave a silently wrong gradient."""
    from adjointcore.sensitivity.discrete import record_forward
    prob = make_problem(9, "rk4", 4)
    rec = record_forward(prob.field, prob.y0, prob.params, prob.grid, "rk4")
    with pytest.raises(ValueError, match="`recording`.*'midpoint'.*'rk4'"):
        discrete_adjoint(prob.field, prob.y0, prob.params, prob.grid, np.ones(prob.y0.shape),
                         method="midpoint", recording=rec)


class EvaluatingInitStepper(MutantStepper):
    """A stepper whose ``init`` evaluates the field once (allowed by the stepper protocol)."""

    def init(self, field, t0, y0, params):
        field.forward(t0, y0, params)
        return self.base.init(field, t0, y0, params)


def test_init_evaluations_are_counted():
    """``forward_nfe`` includes the stepper's ``init`` (it used to see the uncounted field)."""
    prob = make_problem(12, "ab3", 6)
    base = get_stepper("ab3")
    plain = prob.gradient(method=MutantStepper(base, identity_bug)).stats
    extra = prob.gradient(method=EvaluatingInitStepper(base, identity_bug)).stats
    assert extra.forward_nfe == plain.forward_nfe + 1
    assert extra.backward_nfe == plain.backward_nfe


@pytest.mark.parametrize("method", ["ab3", "abm4", "leapfrog", "lm"])
def test_multistep_methods_refuse_a_non_uniform_grid(method):
    """A multistep method on a non-uniform grid used to return a silently wrong result (issue 9:
    end-state error 1.6e-3 against 1.8e-4 on the uniform grid); now both drivers refuse it."""
    layer = Sequential(Linear(2, 4), Tanh(), Linear(4, 2))
    field, params = LayerField(layer), layer.init(np.random.default_rng(0))
    y0 = np.ones((3, 2))
    options = {"k": -0.1} if method == "lm" else None
    bent = np.array([0.0, 0.1, 0.25, 0.3, 0.5, 0.6, 0.8, 1.0])
    with pytest.raises(ValueError, match="`grid` is not uniform"):
        grid_forward(field, y0, params, bent, method, options)
    with pytest.raises(ValueError, match="`grid` is not uniform"):
        discrete_adjoint(field, y0, params, bent, y0, method=method, method_options=options)
    even = np.linspace(0.0, 1.0, 1001)                   # rounding spread only: accepted
    grid_forward(field, y0, params, even, method, options)


def test_plain_callable_and_bad_steps_are_refused_before_compute():
    """Issue 9: a plain callable given to the gradient drivers, and a non-positive ``steps``
    given to check_solve_gradient, fail with the project's own message before any solve."""
    from adjointcore.sensitivity import check_solve_gradient
    calls = []

    def f(t, y):
        calls.append(t)
        return -y

    y0 = np.ones((2, 2))
    with pytest.raises(TypeError, match="plain callable has no hand-written VJP"):
        discrete_adjoint(f, y0, None, np.linspace(0, 1, 5), y0)
    with pytest.raises(TypeError, match="plain callable has no hand-written VJP"):
        check_solve_gradient(f, y0, None, (0.0, 1.0), method="rk4", steps=4)
    assert calls == []
    layer = Sequential(Linear(2, 3), Tanh(), Linear(3, 2))
    for steps in (-3, 0, 2.5):
        with pytest.raises(ValueError, match="`steps` must be an integer >= 1"):
            check_solve_gradient(LayerField(layer), y0, layer.init(np.random.default_rng(0)),
                                 (0.0, 1.0), method="rk4", steps=steps)
