"""Stochastic depth and shake-shake (nets._stochastic, nets.lm_resnet) as SDE discretisations.

Monte Carlo tolerances are 5 standard errors per component (two-sided normal tail 5.7e-7 per
component, so a handful of components cannot fail by chance); all seeds are fixed, so the tests
are deterministic. Each MC test also shows that a wrong rule would be rejected by the same bound.
"""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adjointcore.layers import Linear, Sequential, Tanh
from nets._stochastic import draw_gates, linear_survival, resolve_survival
from nets.lm_resnet import LMStack, ResNetStack, ShakeShake
from tests.nets.test_lm_resnet import (
    FD_TOL,
    GROSS,
    gradient_errors,
    make_params,
    smooth_block,
    vjp_vs_fd,
)

N_SIGMA = 5.0


# -- schedule -------------------------------------------------------------------------------------
def test_linear_survival_values():
    np.testing.assert_array_equal(linear_survival(4, 0.5), [0.875, 0.75, 0.625, 0.5])
    p = linear_survival(54, 0.5)      # LM-ResNet110: 54 residual blocks, p_L = 0.5
    assert p[0] == pytest.approx(1 - 0.5 / 54, abs=1e-16) and p[-1] == 0.5
    np.testing.assert_allclose(np.diff(p), -0.5 / 54, rtol=1e-12)     # linear in depth
    np.testing.assert_allclose(1 - linear_survival(27, 0.8), np.arange(1, 28) / 27 * 0.2,
                               rtol=1e-12)                     # drop prob l/L (1 - p_L), Lu et al.
    np.testing.assert_array_equal(linear_survival(3, 1.0), [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(resolve_survival(0.5, 4), linear_survival(4, 0.5))
    assert ResNetStack([smooth_block(2)] * 4, survival=0.5).survival.tolist() == \
        [0.875, 0.75, 0.625, 0.5]


@pytest.mark.parametrize("survival", [0.0, 1.5, -0.1, True, [0.5, 0.5], [0.5, 0.0, 1.0], "0.5"])
def test_bad_survival_raises(survival):
    with pytest.raises(ValueError, match="survival|p_last"):
        ResNetStack([smooth_block(2)] * 3, survival=survival)


def test_gate_frequencies():
    """Per-sample gates: frequency of eta_n = 1 within 5 binomial standard errors of p_n."""
    p, m = linear_survival(5, 0.5), 40_000
    gates = draw_gates(np.random.default_rng(0), p, m, "sample")
    assert gates.shape == (5, m) and set(np.unique(gates)) == {0.0, 1.0}
    se = np.sqrt(p * (1 - p) / m)
    assert np.all(np.abs(gates.mean(1) - p) <= N_SIGMA * se)
    assert draw_gates(np.random.default_rng(0), p, 7, "batch").shape == (5,)


# -- train / eval behaviour -----------------------------------------------------------------------
@pytest.mark.parametrize("cls", [ResNetStack, LMStack])
def test_eval_mode_deterministic_without_rng(cls):
    blocks = [ShakeShake(smooth_block(3, 0), smooth_block(3, 1), mode="eval") for _ in range(3)]
    stack = cls(blocks, survival=0.5, mode="eval")
    assert not stack.needs_rng
    params, x = make_params(stack, 1), np.random.default_rng(2).standard_normal((4, 3))
    y1, c1 = stack.forward(params, x)
    y2, _ = stack.forward(params, x)
    assert np.array_equal(y1, y2) and c1.gates is None
    assert c1.scales == tuple(stack.survival.tolist()[:2]) + (0.5,)


def reference_scaled(stack, params, x, scales):
    """Plain loop of the (LM) recurrence with f_n multiplied by ``scales[n]``."""
    k = stack.views(params)["k"] if stack.n_k else None
    f = [lambda u, b=b, p=p: b.forward(p, u)[0]
         for b, p in zip(stack.blocks, stack.block_params(params), strict=True)]
    u_prev, u = x, x + scales[0] * f[0](x)
    for n in range(1, len(f)):
        step = u if k is None else (1 - k[n - 1]) * u + k[n - 1] * u_prev
        u_prev, u = u, step + scales[n] * f[n](u)
    return u


@pytest.mark.parametrize("cls", [ResNetStack, LMStack])
def test_eval_scales_residual_by_survival(cls):
    stack = cls([smooth_block(3, i) for i in range(4)], survival=0.6, mode="eval")
    params, x = make_params(stack, 3), np.random.default_rng(4).standard_normal((2, 3))
    ref = reference_scaled(stack, params, x, stack.survival)
    np.testing.assert_allclose(stack.forward(params, x)[0], ref, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("cls", [ResNetStack, LMStack])
def test_train_gates_in_cache_and_reproducible(cls):
    stack = cls([smooth_block(3, i) for i in range(6)], survival=0.5)
    params, x = make_params(stack, 5), np.random.default_rng(6).standard_normal((2, 3))
    y1, c1 = stack.forward(params, x, rng=np.random.default_rng(7))
    y2, c2 = stack.forward(params, x, rng=np.random.default_rng(7))
    assert np.array_equal(y1, y2) and np.array_equal(c1.gates, c2.gates)
    assert c1.gates.shape == (6,) and 0 < c1.gates.sum() < 6      # seed 7: mixed pattern
    dropped = np.flatnonzero(c1.gates == 0)
    assert all(c1.block_caches[n] is None for n in dropped)
    np.testing.assert_allclose(y1, reference_scaled(stack, params, x, c1.gates), rtol=1e-14,
                               atol=1e-14)
    _, p_bar = stack.vjp(params, c1, np.ones_like(y1))
    for n in dropped:                         # a dropped block gets an exactly zero gradient
        assert not np.any(p_bar[stack._offsets[n]:stack._offsets[n + 1]])


def test_survival_one_equals_plain_stack():
    blocks = [smooth_block(3, i) for i in range(3)]
    plain, sd = LMStack(blocks), LMStack(blocks, survival=1.0, gate_level="sample")
    params, x = make_params(plain, 1), np.random.default_rng(2).standard_normal((2, 3))
    assert np.array_equal(plain.forward(params, x)[0],
                          sd.forward(params, x, rng=np.random.default_rng(0))[0])


# -- expectation of train mode vs eval mode -------------------------------------------------------
def affine_blocks(d, n):
    return [Linear(d, d) for _ in range(n)]


def pattern_output(stack, params, x, gates):
    """Train-mode output for a given gate pattern: dropped blocks get zero parameters (f = 0)."""
    plain = type(stack)(stack.blocks)
    q = params.copy()
    for n, g in enumerate(gates):
        if g == 0:
            q[stack._offsets[n]:stack._offsets[n + 1]] = 0.0
    return plain.forward(q, x)[0]


def exact_expectation(stack, params, x):
    """Sum over all 2^N gate patterns weighted by their probabilities (no sampling)."""
    p = stack.survival
    total = 0.0
    for gates in itertools.product((0.0, 1.0), repeat=len(p)):
        g = np.array(gates)
        weight = np.prod(np.where(g == 1, p, 1 - p))
        total = total + weight * pattern_output(stack, params, x, g)
    return total


@pytest.mark.parametrize("cls", [ResNetStack, LMStack])
def test_pattern_output_reproduces_train_forward(cls):
    stack = cls([smooth_block(3, i) for i in range(4)], survival=0.5)
    params, x = make_params(stack, 8), np.random.default_rng(9).standard_normal((2, 3))
    for seed in range(4):
        y, cache = stack.forward(params, x, rng=np.random.default_rng(seed))
        np.testing.assert_array_equal(pattern_output(stack, params, x, cache.gates), y)


@pytest.mark.parametrize("cls", [ResNetStack, LMStack])
def test_expectation_equals_eval_exactly_for_affine_blocks(cls):
    """E[train output] = eval output when the blocks are affine (gates independent of u_n)."""
    stack = cls(affine_blocks(3, 4), survival=0.5)
    params, x = make_params(stack, 10, k_range=0.5), np.random.default_rng(11).normal(size=(2, 3))
    evaluated = type(stack)(stack.blocks, survival=0.5, mode="eval").forward(params, x)[0]
    np.testing.assert_allclose(exact_expectation(stack, params, x), evaluated, rtol=1e-13,
                               atol=1e-13)          # 16-term weighted sum: roundoff only


def test_expectation_differs_from_eval_for_nonlinear_blocks():
    """Documented: for tanh blocks the eval rule is only the first-moment approximation."""
    stack = LMStack([smooth_block(3, 0) for _ in range(4)], survival=0.5)
    params, x = make_params(stack, 12, k_range=0.5), np.random.default_rng(13).normal(size=(2, 3))
    evaluated = LMStack(stack.blocks, survival=0.5, mode="eval").forward(params, x)[0]
    gap = np.max(np.abs(exact_expectation(stack, params, x) - evaluated))
    assert gap > 1e-3, gap


@pytest.mark.parametrize("cls", [ResNetStack, LMStack])
def test_monte_carlo_sample_gates_mean_equals_eval(cls):
    m, d = 20_000, 3
    stack = cls(affine_blocks(d, 4), survival=0.5, gate_level="sample")
    params = make_params(stack, 14, k_range=0.5)
    x0 = np.random.default_rng(15).normal(size=(1, d))
    y = stack.forward(params, np.repeat(x0, m, axis=0), rng=np.random.default_rng(16))[0]
    mean, se = y.mean(0), y.std(0, ddof=1) / np.sqrt(m)
    evaluated = type(stack)(stack.blocks, survival=0.5, mode="eval").forward(params, x0)[0][0]
    assert np.all(np.abs(mean - evaluated) <= N_SIGMA * se), (mean, evaluated, se)
    unscaled = type(stack)(stack.blocks).forward(params, x0)[0][0]     # a wrong test-time rule
    assert np.any(np.abs(mean - unscaled) > N_SIGMA * se)


def test_monte_carlo_batch_gates_mean_equals_eval():
    m, d = 3000, 2
    stack = LMStack(affine_blocks(d, 3), survival=0.6)
    params = make_params(stack, 17, k_range=0.5)
    x = np.random.default_rng(18).normal(size=(2, d))
    rng = np.random.default_rng(19)                    # one Generator: fresh gates every call
    ys = np.stack([stack.forward(params, x, rng=rng)[0] for _ in range(m)])
    mean, se = ys.mean(0), ys.std(0, ddof=1) / np.sqrt(m)
    evaluated = LMStack(stack.blocks, survival=0.6, mode="eval").forward(params, x)[0]
    assert np.all(np.abs(mean - evaluated) <= N_SIGMA * se)


# -- shake-shake ----------------------------------------------------------------------------------
def shake_branches(d):
    return smooth_block(d, 0), Sequential(Linear(d, d), Tanh())


@settings(max_examples=25, deadline=None)
@given(depth=st.integers(1, 3), d=st.integers(1, 3), batch=st.integers(1, 3),
       seed=st.integers(0, 2**31), dt=st.sampled_from([1.0, 0.25]),
       level=st.sampled_from(["sample", "batch"]), lm_stack=st.booleans(),
       survival=st.sampled_from([None, 0.5]))
def test_shake_shake_gradients_match_fd(depth, d, batch, seed, dt, level, lm_stack, survival):
    cls = LMStack if lm_stack else ResNetStack
    stack = cls([ShakeShake(*shake_branches(d), dt=dt, level=level) for _ in range(depth)],
                survival=survival, gate_level="sample")
    params = make_params(stack, seed)
    x = np.random.default_rng(seed + 1).uniform(-1.5, 1.5, (batch, d))
    errors = gradient_errors(stack, params, x, seed + 2)
    assert max(errors.values()) <= FD_TOL, errors


@pytest.mark.parametrize("dt", [1.0, 0.3])
def test_shake_shake_forward_formula(dt):
    d = 3
    layer = ShakeShake(*shake_branches(d), dt=dt)
    params, x = layer.init(np.random.default_rng(0)), np.random.default_rng(1).normal(size=(5, d))
    y, cache = layer.forward(params, x, rng=np.random.default_rng(2))
    f1 = layer.branches[0].forward(params[:layer._offsets[1]], x)[0]
    f2 = layer.branches[1].forward(params[layer._offsets[1]:], x)[0]
    a = cache.alpha[:, None]
    assert cache.alpha.shape == (5,) and np.all((0 <= a) & (a < 1))
    np.testing.assert_allclose(cache.c1 + cache.c2, dt, rtol=1e-15)
    expected = (dt / 2 + np.sqrt(dt) * (a - 0.5)) * f1 + (dt / 2 - np.sqrt(dt) * (a - 0.5)) * f2
    np.testing.assert_allclose(y, expected, rtol=1e-14, atol=1e-15)
    if dt == 1.0:                                          # Gastaldi: alpha f1 + (1 - alpha) f2
        np.testing.assert_allclose(y, a * f1 + (1 - a) * f2, rtol=1e-14, atol=1e-15)
    ev = ShakeShake(*layer.branches, mode="eval", dt=dt)
    assert not ev.needs_rng
    np.testing.assert_allclose(ev.forward(params, x)[0], dt / 2 * (f1 + f2), rtol=1e-15)


def test_shake_shake_euler_maruyama_moments():
    """Increment of one step: mean dt (f1+f2)/2, variance dt (f1-f2)^2 / 12 (Lu et al. sec. 3.1)."""
    d, m, dt = 3, 40_000, 0.5
    layer = ShakeShake(*shake_branches(d), dt=dt)
    params = layer.init(np.random.default_rng(3))
    x0 = np.random.default_rng(4).normal(size=(1, d))
    inc = layer.forward(params, np.repeat(x0, m, 0), rng=np.random.default_rng(5))[0]
    f1 = layer.branches[0].forward(params[:layer._offsets[1]], x0)[0][0]
    f2 = layer.branches[1].forward(params[layer._offsets[1]:], x0)[0][0]
    sigma = np.sqrt(dt / 12) * np.abs(f1 - f2)
    assert np.all(np.abs(inc.mean(0) - dt / 2 * (f1 + f2)) <= N_SIGMA * sigma / np.sqrt(m))
    # sample variance: Var(s^2) ~ (kurtosis - 1) sigma^4 / m, kurtosis of a uniform = 9/5
    rel = N_SIGMA * np.sqrt(0.8 / m)
    np.testing.assert_allclose(inc.var(0, ddof=1), sigma**2, rtol=rel)
    with pytest.raises(AssertionError):                  # the seed's 1/sqrt(12) matters
        np.testing.assert_allclose(inc.var(0, ddof=1), dt / 4 * (f1 - f2) ** 2, rtol=rel)


def test_shake_backward_is_not_the_gradient():
    """exact_gradient=False: same forward; the VJP uses an independent beta (not a gradient)."""
    d = 3
    b1, b2 = shake_branches(d)
    exact, shake = ShakeShake(b1, b2), ShakeShake(b1, b2, exact_gradient=False)
    params, x = exact.init(np.random.default_rng(0)), np.random.default_rng(1).normal(size=(4, d))
    y_e, _ = exact.forward(params, x, rng=np.random.default_rng(2))
    y_s, cache = shake.forward(params, x, rng=np.random.default_rng(2))
    assert np.array_equal(y_e, y_s) and cache.beta.shape == (4,)
    w = np.random.default_rng(3).normal(size=y_s.shape)
    x_bar, p_bar = shake.vjp(params, cache, w)
    fwd = lambda z: exact.forward(params, z, rng=np.random.default_rng(2))[0]   # noqa: E731
    assert vjp_vs_fd(fwd, x, x_bar, w, np.random.default_rng(4).normal(size=x.shape)) > GROSS
    c1, c2 = shake.coefficients(cache.beta, x)                  # it is the beta-weighted VJP
    o = shake._offsets[1]
    _, k1 = b1.forward(params[:o], x)
    _, k2 = b2.forward(params[o:], x)
    expected = b1.vjp(params[:o], k1, c1 * w)[0] + b2.vjp(params[o:], k2, c2 * w)[0]
    np.testing.assert_allclose(x_bar, expected, rtol=1e-14, atol=1e-15)


def test_shake_shake_bad_input():
    b1, b2 = shake_branches(2)
    with pytest.raises(ValueError, match="dt"):
        ShakeShake(b1, b2, dt=0.0)
    with pytest.raises(ValueError, match="level"):
        ShakeShake(b1, b2, level="pixel")
    with pytest.raises(ValueError, match="mode"):
        ShakeShake(b1, b2, mode="test")
    layer = ShakeShake(b1, b2)
    with pytest.raises(TypeError, match="rng"):
        layer.forward(layer.init(np.random.default_rng(0)), np.zeros((2, 2)))
    wide = ShakeShake(b1, Linear(2, 3))
    with pytest.raises(ValueError, match="shape"):
        wide.forward(wide.init(np.random.default_rng(0)), np.zeros((2, 2)),
                     rng=np.random.default_rng(0))


def test_branch_without_parameter_gradient_is_an_error(rng):
    """A branch with parameters whose VJP returns ``params_bar=None`` broke the protocol; the
    shake-shake VJP used to fill in zeros (a silently wrong gradient), now it raises like the
    stacks do."""
    class NoParamBar(Linear):
        def vjp(self, params, cache, y_bar, need_params=True):
            return super().vjp(params, cache, y_bar, need_params)[0], None

    layer = ShakeShake(Linear(3, 3), NoParamBar(3, 3), mode="eval")
    params, x = layer.init(rng), rng.standard_normal((2, 3))
    y, cache = layer.forward(params, x)
    with pytest.raises(TypeError, match="branch2.vjp returned params_bar=None"):
        layer.vjp(params, cache, np.ones_like(y))
    assert layer.vjp(params, cache, np.ones_like(y), need_params=False)[1] is None
