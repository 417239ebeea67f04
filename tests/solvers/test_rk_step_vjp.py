"""The RK step VJP is the exact discrete adjoint: central FD of the same discrete map, Taylor
remainder rates, multi-step chains through ``RKStepper``, and mutants that must be caught."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import solvers
from solvers import TABLEAUX, RKStepper, get_stepper, rk_step, rk_step_vjp

#: FD agreement (float64). Central differences with eps = 1e-5 have truncation ~eps^2 = 1e-10
#: and rounding ~1e-16 / eps = 1e-11; errors are measured relative to ||g|| ||v|| (the largest the
#: directional derivative <g, v> can be), so a direction nearly orthogonal to g cannot inflate
#: them. Measured worst case over all tableaux and 10 seeds: 1.3e-10; 1e-8 is the DESIGN.md bar.
FD_RTOL = 1e-8
FD_EPS = 1e-5
METHODS = sorted(TABLEAUX)


class TanhField:
    """``f(t, y, p) = tanh(y W^T + b + t u)`` with hand-written VJP; ``y`` shape ``(d,)`` or
    ``(n, d)``; ``p = concat(W.ravel(), b, u)`` of length ``d^2 + 2d``. Time-dependent, so the
    stage times ``t + c_i h`` matter."""

    def __init__(self, d):
        self.d = d

    def n_params(self):
        return self.d * self.d + 2 * self.d

    def _unpack(self, p):
        d = self.d
        return p[:d * d].reshape(d, d), p[d * d:d * d + d], p[d * d + d:]

    def forward(self, t, y, p):
        w, b, u = self._unpack(p)
        a = np.tanh(y @ w.T + b + t * u)
        return a, (t, y, a, p)

    def vjp(self, cache, dy_bar, need_params=True):
        t, y, a, p = cache
        w, _, u = self._unpack(p)
        dz = dy_bar * (1.0 - a * a)
        y_bar = dz @ w
        t_bar = float((dz * u).sum())
        if not need_params:
            return y_bar, None, t_bar
        dz2, y2 = dz.reshape(-1, self.d), y.reshape(-1, self.d)
        b_bar = dz2.sum(axis=0)
        return y_bar, np.concatenate([(dz2.T @ y2).ravel(), b_bar, t * b_bar]), t_bar


class CountingField:
    """Wraps a field and records how many forward / vjp calls it receives (test-only)."""

    def __init__(self, field):
        self.field, self.n_forward, self.n_vjp = field, 0, 0

    def forward(self, t, y, p):
        self.n_forward += 1
        return self.field.forward(t, y, p)

    def vjp(self, cache, dy_bar, need_params=True):
        self.n_vjp += 1
        return self.field.vjp(cache, dy_bar, need_params)


def make_case(seed, d=3, batch=2):
    rng = np.random.default_rng(seed)
    field = TanhField(d)
    shape = (d,) if batch is None else (batch, d)
    p = 0.8 * rng.standard_normal(field.n_params())
    y = rng.standard_normal(shape)
    w = rng.standard_normal(shape)           # loss J = <w, y_final>
    v = rng.standard_normal(shape)           # FD direction in y
    q = rng.standard_normal(p.shape)         # FD direction in p
    return field, y, p, w, v, q


def central_fd(fun, x, direction, eps=FD_EPS):
    return (fun(x + eps * direction) - fun(x - eps * direction)) / (2 * eps)


def rel_err(ad, fd, grad, direction):
    """|ad - fd| / (||grad|| ||direction||)."""
    return abs(ad - fd) / (np.linalg.norm(grad) * np.linalg.norm(direction))


# ------------------------------------------------------------------------------------------
# Single step
# ------------------------------------------------------------------------------------------
def test_tanh_field_vjp_matches_fd():
    field, y, p, w, v, q = make_case(0)
    y_bar, p_bar, t_bar = field.vjp(field.forward(0.3, y, p)[1], w)
    fd_y = central_fd(lambda x: np.vdot(w, field.forward(0.3, x, p)[0]), y, v)
    fd_p = central_fd(lambda x: np.vdot(w, field.forward(0.3, y, x)[0]), p, q)
    fd_t = central_fd(lambda s: np.vdot(w, field.forward(s, y, p)[0]), 0.3, 1.0)
    assert rel_err(np.vdot(y_bar, v), fd_y, y_bar, v) < FD_RTOL
    assert rel_err(np.vdot(p_bar, q), fd_p, p_bar, q) < FD_RTOL
    assert rel_err(t_bar, fd_t, t_bar, 1.0) < FD_RTOL


def step_gradients(vjp_fn, method, seed, t=0.2, h=0.3, batch=2):
    """Errors of the directional derivatives of J = <w, y1> along v (state) and q (params),
    as ``(rel_err_state, rel_err_params)``."""
    field, y, p, w, v, q = make_case(seed, batch=batch)
    tab = TABLEAUX[method]
    _, _, stages = rk_step(field, tab, t, y, h, p)
    y_bar, p_bar = vjp_fn(field, tab, stages, w)
    fd_y = central_fd(lambda x: np.vdot(w, rk_step(field, tab, t, x, h, p)[0]), y, v)
    fd_p = central_fd(lambda x: np.vdot(w, rk_step(field, tab, t, y, h, x)[0]), p, q)
    return (rel_err(np.vdot(y_bar, v), fd_y, y_bar, v), rel_err(np.vdot(p_bar, q), fd_p, p_bar, q))


@pytest.mark.parametrize("method", METHODS)
def test_step_vjp_matches_fd(method):
    errors = step_gradients(rk_step_vjp, method, seed=1)
    assert max(errors) < FD_RTOL, (method, errors)


@pytest.mark.parametrize("method", METHODS)
def test_one_field_vjp_per_live_stage(method):
    tab = TABLEAUX[method]
    field, y, p, w, _, _ = make_case(2)
    counted = CountingField(field)
    _, _, stages = rk_step(counted, tab, 0.0, y, 0.1, p)
    assert counted.n_forward == tab.n_stages
    rk_step_vjp(counted, tab, stages, w)
    assert counted.n_vjp == tab.n_live          # the FSAL stage (b_s = 0) gets no VJP


def test_need_params_false_and_missing_cache():
    field, y, p, w, _, _ = make_case(3)
    tab = TABLEAUX["rk4"]
    _, _, stages = rk_step(field, tab, 0.0, y, 0.1, p)
    y_bar, p_bar = rk_step_vjp(field, tab, stages, w, need_params=False)
    assert p_bar is None
    np.testing.assert_array_equal(y_bar, rk_step_vjp(field, tab, stages, w)[0])
    _, _, stages_f0 = rk_step(field, tab, 0.0, y, 0.1, p, f0=field.forward(0.0, y, p)[0])
    with pytest.raises(ValueError, match="no field cache"):
        rk_step_vjp(field, tab, stages_f0, w)
    _, _, stages_pair = rk_step(field, tab, 0.0, y, 0.1, p, f0=field.forward(0.0, y, p))
    np.testing.assert_array_equal(rk_step_vjp(field, tab, stages_pair, w)[0], y_bar)


# ------------------------------------------------------------------------------------------
# Multi-step chains through the stepper (hypothesis over sizes, steps, methods)
# ------------------------------------------------------------------------------------------
def chain_forward(stepper, field, y0, p, t0, h, n_steps):
    states = [stepper.init(field, t0, y0, p)]
    for n in range(n_steps):
        states.append(stepper.step(field, n, t0 + n * h, h, states[-1], p)[0])
    return states


def chain_gradient(stepper, field, y0, p, w, t0, h, n_steps):
    states = chain_forward(stepper, field, y0, p, t0, h, n_steps)
    state_bar, p_bar = (w,), np.zeros_like(p)
    for n in range(n_steps - 1, -1, -1):
        state_bar, g, extra = stepper.step_vjp(field, n, t0 + n * h, h, states[n], p, state_bar)
        assert extra == {}
        p_bar = p_bar + g
    y0_bar, init_p_bar = stepper.init_vjp(field, t0, y0, p, state_bar)
    assert init_p_bar is None
    return y0_bar, p_bar


@settings(deadline=None, max_examples=25, derandomize=True)
@given(method=st.sampled_from(METHODS), d=st.integers(1, 4),
       batch=st.one_of(st.none(), st.integers(1, 3)), n_steps=st.integers(1, 4),
       h=st.floats(-0.4, 0.4).filter(lambda x: abs(x) > 0.02), seed=st.integers(0, 2**16))
def test_stepper_chain_matches_fd(method, d, batch, n_steps, h, seed):
    field, y0, p, w, v, q = make_case(seed, d=d, batch=batch)
    stepper = get_stepper(method)
    t0 = 0.1

    def loss(y, params):
        return np.vdot(w, chain_forward(stepper, field, y, params, t0, h, n_steps)[-1][0])

    y0_bar, p_bar = chain_gradient(stepper, field, y0, p, w, t0, h, n_steps)
    fd_y, fd_p = central_fd(lambda x: loss(x, p), y0, v), central_fd(lambda x: loss(y0, x), p, q)
    assert rel_err(np.vdot(y0_bar, v), fd_y, y0_bar, v) < FD_RTOL
    assert rel_err(np.vdot(p_bar, q), fd_p, p_bar, q) < FD_RTOL


@pytest.mark.parametrize("method", METHODS)
def test_taylor_remainder_rate(method):
    """R(eps) = |J(m + eps dm) - J(m) - eps <g, dm>| falls like eps^2 (rate 2.00 +- 0.05)."""
    field, y0, p, w, v, q = make_case(7)
    stepper, t0, h, n_steps = get_stepper(method), 0.0, 0.25, 3

    def loss(y, params):
        return np.vdot(w, chain_forward(stepper, field, y, params, t0, h, n_steps)[-1][0])

    y0_bar, p_bar = chain_gradient(stepper, field, y0, p, w, t0, h, n_steps)
    j0, slope = loss(y0, p), np.vdot(y0_bar, v) + np.vdot(p_bar, q)
    eps = 1e-2 * 0.5 ** np.arange(5)
    r = np.array([abs(loss(y0 + e * v, p + e * q) - j0 - e * slope) for e in eps])
    rates = np.log2(r[:-1] / r[1:])
    assert np.all(np.abs(rates - 2.0) <= 0.05), rates


def test_stepper_protocol_basics():
    field, y, p, _, _, _ = make_case(4)
    stepper = get_stepper("dopri5")
    assert isinstance(stepper, RKStepper) and stepper.method_params == {}
    state = stepper.init(field, 0.0, y, p)
    assert len(state) == 1 and state[0] is y
    (y1,), nfe = stepper.step(field, 0, 0.0, 0.1, state, p)
    assert nfe == 6                                   # Dopri5's FSAL stage is skipped
    np.testing.assert_array_equal(y1, rk_step(field, TABLEAUX["dopri5"], 0.0, y, 0.1, p)[0])
    with pytest.raises(TypeError, match="takes no options"):
        get_stepper("rk4", k=1)
    with pytest.raises(ValueError, match="unknown method"):
        get_stepper("rk5")


# ------------------------------------------------------------------------------------------
# Mutants: modified copies of the adjoint loop; each bug must be caught by the FD check.
# ------------------------------------------------------------------------------------------
def mutant_vjp(field, tab, stages, y1_bar, bug=None):
    """Copy of ``rk_step_vjp`` written as a plain loop, with one optional injected bug:
    "sign" (flip one stage VJP), "missing_a" (drop the sum_j a_ji w_j term), "transposed_a"
    (forward-order loop with a_ij instead of a_ji), "fsal_twice" (also back-propagate through
    the FSAL stage as if it were the next step's first stage)."""
    n, h, a, b = len(stages.caches), stages.h, tab.a, tab.b
    w = [np.zeros_like(y1_bar) for _ in range(n)]
    p_bar = 0.0
    flip = int(np.nonzero(tab.live)[0][len(np.nonzero(tab.live)[0]) // 2])
    order = range(n) if bug == "transposed_a" else range(n - 1, -1, -1)
    for i in order:
        if not tab.live[i]:
            if bug == "fsal_twice":
                w_i, g_i, _ = field.vjp(stages.caches[i], h * b[0] * y1_bar)
                w[i], p_bar = w_i, p_bar + g_i
            continue
        kappa = b[i] * y1_bar
        if bug == "transposed_a":
            kappa = kappa + sum(a[i, j] * w[j] for j in range(i))
        elif bug != "missing_a":
            kappa = kappa + sum(a[j, i] * w[j] for j in range(i + 1, n))
        w_i, g_i, _ = field.vjp(stages.caches[i], h * kappa)
        if bug == "sign" and i == flip:
            w_i, g_i = -w_i, -g_i
        w[i], p_bar = w_i, p_bar + g_i
    return y1_bar + sum(w), p_bar


MUTANT_CASES = [(bug, m) for bug in ("sign", "missing_a", "transposed_a") for m in METHODS
                if TABLEAUX[m].n_stages > 1 or bug == "sign"]
MUTANT_CASES += [("fsal_twice", m) for m in METHODS if TABLEAUX[m].fsal]


@pytest.mark.parametrize("method", METHODS)
def test_mutant_copy_without_bug_is_faithful(method):
    field, y, p, w, _, _ = make_case(5)
    tab = TABLEAUX[method]
    _, _, stages = rk_step(field, tab, 0.1, y, 0.2, p)
    ref_y, ref_p = rk_step_vjp(field, tab, stages, w)
    got_y, got_p = mutant_vjp(field, tab, stages, w)
    np.testing.assert_allclose(got_y, ref_y, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(got_p, ref_p, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("bug, method", MUTANT_CASES)
def test_mutant_is_caught(bug, method):
    """Each bug moves the gradient far outside the FD tolerance (> 1e-4, four orders above it),
    in the state or the parameter direction."""
    errors = step_gradients(lambda *a: mutant_vjp(*a, bug=bug), method, seed=6)
    assert max(errors) > 1e-4, (bug, method, errors)


def test_solve_trajectory_replays_bitwise_with_stepper():
    """An adaptive Dopri5 solve with a time-dependent field is reproduced bitwise by the
    stepper on the frozen grid (what discrete adjoints and checkpointing rely on)."""
    field, y0, p, _, _, _ = make_case(8)
    res = solvers.solve(field, y0, (0.0, 2.0), params=p, rtol=1e-8, atol=1e-10)
    stepper, state = get_stepper("dopri5"), (y0,)
    for n, (t, h) in enumerate(zip(res.grid[:-1], res.step_sizes, strict=True)):
        state, _ = stepper.step(field, n, t, h, state, p)
        assert np.array_equal(state[0], res.ys[n + 1]), n
    assert res.stats.n_accepted > 5
