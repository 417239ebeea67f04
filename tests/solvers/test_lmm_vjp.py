"""Discrete adjoints of the linear multistep steppers, checked against finite differences.

Everything is float64. The reference is always the central difference of the *same* discrete map
(steps, start-up steps and history included), so the tolerances measure FD error only. The
FD is the fourth-order central stencil with eps = 1e-3 along unit directions: truncation
~eps^4 |L^(5)| / 30 ~ 1e-13, round-off ~1e-16 |L| / eps ~ 1e-13 for the O(1) losses used here.
Mismatches are divided by the norm of the gradient block (the largest directional derivative
over unit directions), so a direction nearly orthogonal to the gradient cannot inflate them;
1e-8 then leaves a margin of > 1e3.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from solvers._lmm import LMM_STEPPERS, LMStepper, get_lmm_stepper

FD_EPS = 1e-3
FD_RTOL = 1e-8
T0, H = 0.1, 0.1
METHODS = sorted(LMM_STEPPERS)


class TanhField:
    """``f(t, y) = tanh(y W^T + b) + t c`` on ``y`` of shape ``(B, d)``; params ``[W, b, c]``
    flat."""

    def __init__(self, d):
        self.d = d
        self.n_params = d * d + 2 * d

    def init(self, rng):
        d = self.d
        return np.concatenate([rng.standard_normal(d * d) * 0.8 / np.sqrt(d),
                               0.3 * rng.standard_normal(d), 0.5 * rng.standard_normal(d)])

    def _unpack(self, params):
        d = self.d
        return params[:d * d].reshape(d, d), params[d * d:d * d + d], params[d * d + d:]

    def forward(self, t, y, params):
        w, b, c = self._unpack(params)
        a = np.tanh(y @ w.T + b)
        return a + t * c, (y, w, a, t)

    def vjp(self, cache, dy_bar, need_params=True):
        y, w, a, t = cache
        dz = dy_bar * (1.0 - a * a)
        y_bar = dz @ w
        if not need_params:
            return y_bar, None, None
        return y_bar, np.concatenate([(dz.T @ y).ravel(), dz.sum(0), t * dy_bar.sum(0)]), None


class CountingField(TanhField):
    """TanhField that counts forward and VJP calls (on a mutable dict, not per call on self)."""

    def __init__(self, d):
        super().__init__(d)
        self.count = {"forward": 0, "vjp": 0}

    def forward(self, t, y, params):
        self.count["forward"] += 1
        return super().forward(t, y, params)

    def vjp(self, cache, dy_bar, need_params=True):
        self.count["vjp"] += 1
        return super().vjp(cache, dy_bar, need_params)


def make_stepper(method, k):
    return LMStepper(k) if method == "lm" else get_lmm_stepper(method)


def forward_states(stepper, field, y0, params, n_steps):
    states = [stepper.init(field, T0, y0, params)]
    for n in range(n_steps):
        states.append(stepper.step(field, n, T0 + n * H, H, states[-1], params)[0])
    return states


def loss(states, weights):
    """``L = sum_n <w_n, y_n> + 0.5 |y_N|^2`` over the observed steps ``weights = {n: w_n}``."""
    y_final = states[-1][0]
    return sum(float(np.sum(w * states[n][0])) for n, w in weights.items()) \
        + 0.5 * float(np.sum(y_final * y_final))


def loss_of(method, field, y0, params, k, n_steps, weights):
    stepper = make_stepper(method, k)
    return loss(forward_states(stepper, field, y0, params, n_steps), weights)


def discrete_gradient(stepper, field, y0, params, n_steps, weights):
    """Chain ``step_vjp`` backwards; returns ``(y0_bar, params_bar, extra_bar)``."""
    states = forward_states(stepper, field, y0, params, n_steps)
    bar = [np.zeros_like(s) for s in states[-1]]
    bar[0] = states[-1][0] + weights.get(n_steps, 0.0)
    bar = tuple(bar)
    params_bar = np.zeros_like(params)
    extra = {name: 0.0 for name in stepper.method_params}
    for n in range(n_steps - 1, -1, -1):
        bar, p_bar, e_bar = stepper.step_vjp(field, n, T0 + n * H, H, states[n], params, bar)
        assert set(e_bar) == set(extra)
        params_bar = params_bar + p_bar
        extra = {name: extra[name] + e_bar[name] for name in extra}
        if n in weights:
            bar = (bar[0] + weights[n],) + tuple(bar[1:])
    y0_bar, p_bar = stepper.init_vjp(field, T0, y0, params, bar)
    assert p_bar is None  # init does not use params
    return y0_bar, params_bar, extra


def central_fd(fun, eps=FD_EPS):
    """Fourth-order central difference ``d fun / d e`` at 0."""
    return (8 * (fun(eps) - fun(-eps)) - (fun(2 * eps) - fun(-2 * eps))) / (12 * eps)


def unit(rng, shape):
    v = rng.standard_normal(shape)
    return v / np.linalg.norm(v)


def setup(seed, method, d, batch, n_steps, observe):
    rng = np.random.default_rng(seed)
    field = TanhField(d)
    params = field.init(rng)
    y0 = rng.standard_normal((batch, d))
    k = float(rng.uniform(-0.6, 0.0))
    obs = {n_steps} if observe == "final" else set(range(0, n_steps + 1, 2)) | {n_steps}
    weights = {n: rng.standard_normal((batch, d)) for n in sorted(obs)}
    return rng, field, params, y0, k, weights


def directional_checks(method, field, y0, params, k, n_steps, weights, grads, rng):
    """Relative mismatch of ``<grad, v>`` against central FD per block (y0, params, k)."""
    y0_bar, params_bar, extra = grads

    v_y, v_p = unit(rng, y0.shape), unit(rng, params.shape)
    checks = {
        "y0": (float(np.sum(y0_bar * v_y)), np.linalg.norm(y0_bar),
               central_fd(lambda e: loss_of(method, field, y0 + e * v_y, params, k, n_steps,
                                            weights))),
        "params": (float(params_bar @ v_p), np.linalg.norm(params_bar),
                   central_fd(lambda e: loss_of(method, field, y0, params + e * v_p, k, n_steps,
                                                weights))),
    }
    if method == "lm":
        checks["k"] = (extra["k"], abs(extra["k"]),
                       central_fd(lambda e: loss_of(method, field, y0, params, k + e, n_steps,
                                                    weights)))
    return {name: abs(ad - fdv) / max(norm, abs(fdv), 1e-300)
            for name, (ad, norm, fdv) in checks.items()}, checks


@settings(deadline=None, max_examples=60)
@given(method=st.sampled_from(METHODS), d=st.integers(1, 4), batch=st.integers(1, 3),
       n_steps=st.integers(1, 12), observe=st.sampled_from(["final", "several"]),
       seed=st.integers(0, 2**32 - 1))
def test_gradient_matches_central_fd(method, d, batch, n_steps, observe, seed):
    rng, field, params, y0, k, weights = setup(seed, method, d, batch, n_steps, observe)
    grads = discrete_gradient(make_stepper(method, k), field, y0, params, n_steps, weights)
    rel, checks = directional_checks(method, field, y0, params, k, n_steps, weights, grads, rng)
    assert max(rel.values()) <= FD_RTOL, (rel, checks)


@settings(deadline=None, max_examples=40)
@given(method=st.sampled_from(METHODS), d=st.integers(1, 4), batch=st.integers(1, 3),
       n=st.integers(0, 6), seed=st.integers(0, 2**32 - 1))
def test_single_step_vjp_on_full_state(method, d, batch, n, seed):
    # Random values in *every* state slot (placeholders too): step_vjp is the transpose of the
    # whole state map, for start-up (n < n_startup) and main steps alike.
    rng = np.random.default_rng(seed)
    field = TanhField(d)
    params = field.init(rng)
    k = float(rng.uniform(-0.6, 0.0))
    stepper = make_stepper(method, k)
    n_slots = len(stepper.init(field, T0, np.zeros((batch, d)), params))
    state = tuple(rng.standard_normal((batch, d)) for _ in range(n_slots))
    bar = tuple(rng.standard_normal((batch, d)) for _ in range(n_slots))
    v = tuple(unit(rng, (batch, d)) for _ in range(n_slots))
    v_p = unit(rng, params.shape)
    bar_copy = tuple(b.copy() for b in bar)
    state_bar, params_bar, _ = stepper.step_vjp(field, n, T0, H, state, params, bar)
    for b, b0 in zip(bar, bar_copy, strict=True):  # inputs are never modified in place
        np.testing.assert_array_equal(b, b0)

    def pairing(eps_state, eps_params):
        moved = tuple(s + eps_state * vi for s, vi in zip(state, v, strict=True))
        nxt, _ = stepper.step(field, n, T0, H, moved, params + eps_params * v_p)
        return sum(float(np.sum(b * x)) for b, x in zip(bar, nxt, strict=True))

    fd_state = central_fd(lambda e: pairing(e, 0.0))
    ad_state = sum(float(np.sum(sb * vi)) for sb, vi in zip(state_bar, v, strict=True))
    fd_params = central_fd(lambda e: pairing(0.0, e))
    ad_params = float(params_bar @ v_p)
    state_norm = np.sqrt(sum(float(np.sum(sb * sb)) for sb in state_bar))
    assert abs(ad_state - fd_state) <= FD_RTOL * state_norm
    assert abs(ad_params - fd_params) <= FD_RTOL * np.linalg.norm(params_bar)
    no_params = stepper.step_vjp(field, n, T0, H, state, params, bar, need_params=False)
    assert no_params[1] is None
    for a, b in zip(no_params[0], state_bar, strict=True):
        np.testing.assert_array_equal(a, b)


TAYLOR_EPS = 1e-2 * 0.5 ** np.arange(5)


@pytest.mark.parametrize("method", METHODS)
def test_taylor_remainder_second_order(method):
    rng, field, params, y0, k, weights = setup(7, method, 3, 2, 7, "several")
    stepper = make_stepper(method, k)
    y0_bar, params_bar, extra = discrete_gradient(stepper, field, y0, params, 7, weights)
    v_y, v_p = unit(rng, y0.shape), unit(rng, params.shape)
    v_k = 0.5 if method == "lm" else 0.0
    slope0 = float(np.sum(y0_bar * v_y) + params_bar @ v_p + v_k * extra.get("k", 0.0))
    base = loss_of(method, field, y0, params, k, 7, weights)
    remainders = np.array([
        abs(loss_of(method, field, y0 + e * v_y, params + e * v_p, k + e * v_k, 7, weights)
            - base - e * slope0) for e in TAYLOR_EPS])
    rates = np.diff(np.log(remainders)) / np.diff(np.log(TAYLOR_EPS))
    assert np.all(np.abs(rates - 2.0) <= 0.05), rates  # brief: 2.00 +- 0.05


@pytest.mark.parametrize("method", METHODS)
def test_one_field_vjp_per_field_evaluation(method):
    rng = np.random.default_rng(3)
    field = CountingField(2)
    params = field.init(rng)
    stepper = make_stepper(method, -0.2)
    state = stepper.init(field, T0, rng.standard_normal((2, 2)), params)
    states, nfe = [state], 0
    for n in range(7):
        state, step_nfe = stepper.step(field, n, T0 + n * H, H, state, params)
        states.append(state)
        nfe += step_nfe
    bar = tuple(np.ones_like(s) for s in state)
    field.count["vjp"] = 0
    for n in range(6, -1, -1):
        bar, _, _ = stepper.step_vjp(field, n, T0 + n * H, H, states[n], params, bar)
    assert field.count["vjp"] == nfe


# --------------------------------------------------------------------------------------------
# Mutation tests: deliberately wrong adjoints must fail the same FD comparison.
# --------------------------------------------------------------------------------------------
class MutantStepper:
    """Wraps a correct stepper and corrupts its ``step_vjp`` in one way (``kind``)."""

    def __init__(self, base, kind):
        self.base, self.kind = base, kind

    def __getattr__(self, name):
        return getattr(self.base, name)

    def step_vjp(self, field, n, t, h, state, params, state_next_bar, need_params=True):
        base = self.base
        if self.kind == "startup_as_main" and n < base.n_startup:
            n = base.n_startup  # adjoint of a main multistep step instead of the RK start-up
        if self.kind == "skip_startup" and n < base.n_startup:
            zeros = tuple(np.zeros_like(s) for s in state[1:])
            return ((state_next_bar[0],) + zeros, np.zeros_like(params),
                    {name: 0.0 for name in base.method_params})
        state_bar, params_bar, extra = base.step_vjp(field, n, t, h, state, params,
                                                     state_next_bar, need_params)
        if self.kind == "history_sign":
            state_bar = (state_bar[0], -state_bar[1]) + tuple(state_bar[2:])
        if self.kind == "k_sign":
            extra = {"k": -extra["k"]}
        if self.kind == "k_missing_term" and n >= base.n_startup:
            y, y_prev = state
            extra = {"k": float(np.sum(state_next_bar[0] * y_prev))}  # drops the -u_n part
        return state_bar, params_bar, extra


MUTANTS = [("ab3", "startup_as_main"), ("abm4", "startup_as_main"),
           ("leapfrog", "startup_as_main"), ("lm", "startup_as_main"),
           ("ab4", "skip_startup"), ("abm2", "skip_startup"), ("leapfrog", "skip_startup"),
           ("ab2", "history_sign"), ("ab5", "history_sign"), ("abm3", "history_sign"),
           ("leapfrog", "history_sign"), ("lm", "history_sign"),
           ("lm", "k_sign"), ("lm", "k_missing_term")]


@pytest.mark.parametrize("method, kind", MUTANTS, ids=[f"{m}-{k}" for m, k in MUTANTS])
def test_mutant_adjoint_is_caught(method, kind):
    rng, field, params, y0, k, weights = setup(11, method, 3, 2, 8, "several")
    k = -0.3
    stepper = MutantStepper(make_stepper(method, k), kind)
    grads = discrete_gradient(stepper, field, y0, params, 8, weights)
    rel, checks = directional_checks(method, field, y0, params, k, 8, weights, grads, rng)
    assert max(rel.values()) > 1e-3, (rel, checks)  # correct adjoints reach <= 1e-8


def test_correct_adjoint_passes_same_setup_as_mutants():
    # Control for the mutation tests: identical setup, unmutated stepper.
    for method in ("ab3", "abm4", "leapfrog", "lm"):
        rng, field, params, y0, _, weights = setup(11, method, 3, 2, 8, "several")
        grads = discrete_gradient(make_stepper(method, -0.3), field, y0, params, 8, weights)
        rel, _ = directional_checks(method, field, y0, params, -0.3, 8, weights, grads, rng)
        assert max(rel.values()) <= FD_RTOL, (method, rel)
