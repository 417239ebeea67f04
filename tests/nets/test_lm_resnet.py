"""LM-ResNet and ResNet stacks (nets.lm_resnet): forward recurrence, exact VJPs, k_n, errors.

Gradient figures: ``<bar, v>`` (VJP) against ``<w, J v>`` with ``J v`` by central differences of
the *same* sampled map (identically seeded Generators), relative to the Cauchy-Schwarz scale
``|w| |J v|`` as in ``check_layer``. Tolerance 1e-8: central FD in float64 with the auto step
(~6e-6) has truncation + roundoff error ~1e-10 on these O(1) smooth maps, so 1e-8 keeps a factor
~100 of margin while a real bug is O(1) (the mutants below give > 1e-3).
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import nets.lm_resnet as lm
from adjointcore.errors import ParameterError
from adjointcore.gradcheck import central_difference, check_layer, relative_error, taylor_test
from adjointcore.layers import (
    BatchNorm,
    ConcatLinear,
    Conv2d,
    Linear,
    ReLU,
    Residual,
    Sequential,
    Softplus,
    Tanh,
)
from nets.lm_resnet import K_INIT_PAPER, LMStack, ResNetStack, zero_stable

FD_TOL = 1e-8
GROSS = 1e-3
SURVIVALS = [None, 0.5, 0.8]


# -- helpers (also used by test_stochastic_depth.py) ----------------------------------------------
def smooth_block(d, kind=0):
    """Smooth residual function: Linear-tanh-Linear or Linear-softplus-Linear."""
    act = Tanh() if kind % 2 == 0 else Softplus()
    return Sequential(Linear(d, d), act, Linear(d, d))


def conv_block(c):
    return Sequential(Conv2d(c, c, 3, padding=1), Tanh(), Conv2d(c, c, 3, padding=1))


def make_params(stack, seed, k_range=0.9):
    """``stack.init`` with the k_n (if any) redrawn from U[-k_range, k_range] (beyond the init)."""
    rng = np.random.default_rng(seed)
    params = stack.init(rng)
    if stack.n_k:
        stack.views(params)["k"][:] = rng.uniform(-k_range, k_range, stack.n_k)
    return params


def frozen_forward(stack, seed):
    """``(params, x) -> y`` with an identically seeded Generator in every call."""
    return lambda p, z: stack.forward(p, z, rng=np.random.default_rng(seed))[0]


def blocks_of(stack):
    """``{name: (lo, hi)}`` slices of params: one per block, plus ``k_n`` one by one."""
    out = {f"block{i}": (stack._offsets[i], stack._offsets[i + 1])
           for i in range(len(stack.blocks)) if stack._offsets[i + 1] > stack._offsets[i]}
    for j in range(stack.n_k):
        lo = stack.n_block_params + j
        out[f"k{j + 1}"] = (lo, lo + 1)
    return out


def vjp_vs_fd(fun, point, bar, w, v):
    """Relative mismatch of ``<bar, v>`` and ``<w, J v>`` (J v by central FD, ``|v| = 1``).

    Scale ``|w| max(|J v|, |y|)``: the Cauchy-Schwarz bound, floored by the output size because
    FD roundoff is relative to ``|y|`` (~eps_mach^(2/3) |y|); without the floor an exactly zero
    derivative (e.g. ``dy/dk_n`` when blocks ``n-1`` and ``n`` are both dropped, so
    ``u_{n-1} = u_n``) would be compared with pure roundoff.
    """
    v = v / np.linalg.norm(v)
    jv = central_difference(fun, point, v)
    scale = float(np.linalg.norm(w) * max(np.linalg.norm(jv), np.linalg.norm(fun(point))))
    return relative_error(float(np.sum(bar * v)), float(np.sum(w * jv)), scale=scale)


def gradient_errors(stack, params, x, seed, draw_seed=0):
    """FD figures for the input, every block's parameters and every k_n separately."""
    fwd = frozen_forward(stack, seed)
    y, cache = stack.forward(params, x, rng=np.random.default_rng(seed))
    draw = np.random.default_rng(draw_seed)
    w = draw.standard_normal(y.shape)
    x_bar, p_bar = stack.vjp(params, cache, w)
    errors = {"x": vjp_vs_fd(lambda z: fwd(params, z), x, x_bar, w,
                             draw.standard_normal(x.shape))}
    for name, (lo, hi) in blocks_of(stack).items():
        v = np.zeros_like(params)
        v[lo:hi] = draw.standard_normal(hi - lo)
        errors[name] = vjp_vs_fd(lambda q: fwd(q, x), params, p_bar, w, v)
    return errors


# -- gradients ------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(depth=st.integers(1, 5), d=st.integers(1, 4), batch=st.integers(1, 3),
       seed=st.integers(0, 2**31), survival=st.sampled_from(SURVIVALS),
       gate_level=st.sampled_from(["batch", "sample"]), mode=st.sampled_from(["train", "eval"]),
       lm_stack=st.booleans())
def test_gradients_match_fd(depth, d, batch, seed, survival, gate_level, mode, lm_stack):
    cls = LMStack if lm_stack else ResNetStack
    stack = cls([smooth_block(d, i) for i in range(depth)], survival=survival, mode=mode,
                gate_level=gate_level)
    params = make_params(stack, seed)
    x = np.random.default_rng(seed + 1).uniform(-1.5, 1.5, (batch, d))
    errors = gradient_errors(stack, params, x, seed + 2)
    assert max(errors.values()) <= FD_TOL, errors


@settings(max_examples=15, deadline=None)
@given(depth=st.integers(2, 4), seed=st.integers(0, 2**31), survival=st.sampled_from(SURVIVALS))
def test_taylor_slope_two(depth, seed, survival):
    stack = LMStack([smooth_block(3, i) for i in range(depth)], survival=survival)
    params = make_params(stack, seed)
    x = np.random.default_rng(seed + 1).uniform(-1, 1, (2, 3))
    w = np.random.default_rng(seed + 3).standard_normal(x.shape)
    fwd = frozen_forward(stack, seed + 2)
    _, cache = stack.forward(params, x, rng=np.random.default_rng(seed + 2))
    x_bar, p_bar = stack.vjp(params, cache, w)
    draw = np.random.default_rng(seed + 4)
    for fun, grad, m in ((lambda q: float(np.sum(w * fwd(q, x))), p_bar, params),
                         (lambda z: float(np.sum(w * fwd(params, z))), x_bar, x)):
        res = taylor_test(fun, grad, m, draw.standard_normal(m.shape))
        if res.min_rate == np.inf:
            # every R1 at roundoff: J is affine along dm (all blocks dropped) and the gradient
            # is exact; a wrong gradient leaves R1 = eps |error| above the floor
            continue
        assert abs(res.slope1 - 2.0) <= 0.05, res


def test_k_gradient_componentwise():
    """Every dL/dk_n against a one-coordinate central difference (L = <w, y>)."""
    stack = LMStack([smooth_block(3, i) for i in range(5)])
    params = make_params(stack, 7)
    x = np.random.default_rng(8).uniform(-1, 1, (3, 3))
    w = np.random.default_rng(9).standard_normal(x.shape)
    _, cache = stack.forward(params, x)
    _, p_bar = stack.vjp(params, cache, w)
    k_bar = stack.views(p_bar)["k"]
    for j in range(stack.n_k):
        e = np.zeros_like(params)
        e[stack.n_block_params + j] = 1.0
        fd = float(np.sum(w * central_difference(lambda q: stack.forward(q, x)[0], params, e)))
        assert abs(k_bar[j] - fd) <= FD_TOL * max(1.0, abs(fd)), (j, k_bar[j], fd)


def test_conv_lm_stack_check_layer():
    stack = LMStack([conv_block(2) for _ in range(3)], survival=0.5, gate_level="sample")
    x = np.random.default_rng(1).uniform(-1, 1, (2, 2, 5, 4))
    report = check_layer(stack, x=x, params=make_params(stack, 2), rng=3)
    assert report.passed, str(report)
    assert report.figures["fd_params"] <= FD_TOL and report.figures["fd_x"] <= FD_TOL


def test_paper_block_with_batchnorm_relu():
    """The paper's Conv-BN-ReLU-Conv block (kinks present; one fixed seed, FD away from them)."""
    c = 2
    blocks = [Sequential(Conv2d(c, c, 3, padding=1), BatchNorm(c), ReLU(),
                         Conv2d(c, c, 3, padding=1)) for _ in range(2)]
    stack = LMStack(blocks)
    x = np.random.default_rng(4).uniform(-1, 1, (3, c, 4, 4))
    report = check_layer(stack, x=x, params=make_params(stack, 5), checks=("fd", "taylor"),
                         tol={"fd": FD_TOL})
    assert report.passed, str(report)


def test_need_params_false_same_input_gradient():
    stack = LMStack([smooth_block(2, i) for i in range(3)], survival=0.5)
    params, x = make_params(stack, 1), np.random.default_rng(2).standard_normal((2, 2))
    _, cache = stack.forward(params, x, rng=np.random.default_rng(3))
    w = np.ones_like(x)
    full = stack.vjp(params, cache, w)
    x_bar, p_bar = stack.vjp(params, cache, w, need_params=False)
    assert p_bar is None and np.array_equal(x_bar, full[0])


def test_float32_agrees_with_float64():
    stack = LMStack([smooth_block(3, i) for i in range(4)])
    params, x = make_params(stack, 3), np.random.default_rng(4).uniform(-1, 1, (2, 3))
    y64, c64 = stack.forward(params, x)
    y32, c32 = stack.forward(params.astype(np.float32), x.astype(np.float32))
    assert y32.dtype == np.float32
    b64 = stack.vjp(params, c64, np.ones_like(y64))
    b32 = stack.vjp(params.astype(np.float32), c32, np.ones_like(y32))
    assert b32[1].dtype == np.float32
    for a, b in ((y64, y32), (b64[0], b32[0]), (b64[1], b32[1])):  # float32 roundoff ~1e-7 x depth
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


# -- forward: recurrence, start-up, ResNet equivalence --------------------------------------------
def reference_lm(blocks, block_params, k, x):
    """Independent plain loop of Lu et al. eq. (1) with the Euler start-up."""
    f = [lambda u, b=b, p=p: b.forward(p, u)[0] for b, p in zip(blocks, block_params, strict=True)]
    u_prev, u = x, x + f[0](x)
    for n in range(1, len(blocks)):
        u_prev, u = u, (1 - k[n - 1]) * u + k[n - 1] * u_prev + f[n](u)
    return u


@pytest.mark.parametrize("depth", [1, 2, 5])
def test_forward_matches_reference_recurrence(depth):
    stack = LMStack([smooth_block(3, i) for i in range(depth)])
    params = make_params(stack, depth)
    x = np.random.default_rng(0).standard_normal((4, 3))
    ref = reference_lm(stack.blocks, stack.block_params(params), stack.views(params)["k"], x)
    np.testing.assert_allclose(stack.forward(params, x)[0], ref, rtol=1e-14, atol=1e-14)


def test_single_block_is_residual_block():
    block = smooth_block(3)
    stack, res = LMStack([block]), Residual(block)
    params = stack.init(np.random.default_rng(0))
    assert stack.n_k == 0 and params.shape == (block.n_params,)
    x = np.random.default_rng(1).standard_normal((2, 3))
    assert np.array_equal(stack.forward(params, x)[0], res.forward(params, x)[0])


@pytest.mark.parametrize("survival, gate_level", [(None, "batch"), (0.5, "batch"),
                                                  (0.7, "sample")])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_k_zero_equals_resnet_bitwise(survival, gate_level, mode):
    blocks = [smooth_block(3, i) for i in range(4)]
    lm_stack = LMStack(blocks, survival=survival, mode=mode, gate_level=gate_level)
    res_stack = ResNetStack(blocks, survival=survival, mode=mode, gate_level=gate_level)
    params = lm_stack.init(np.random.default_rng(0))
    lm_stack.views(params)["k"][:] = 0.0
    res_params = params[:res_stack.n_params]
    x = np.random.default_rng(1).standard_normal((3, 3))
    y_lm, c_lm = lm_stack.forward(params, x, rng=np.random.default_rng(2))
    y_res, c_res = res_stack.forward(res_params, x, rng=np.random.default_rng(2))
    assert np.array_equal(y_lm, y_res)
    w = np.random.default_rng(3).standard_normal(x.shape)
    x_lm, p_lm = lm_stack.vjp(params, c_lm, w)
    x_res, p_res = res_stack.vjp(res_params, c_res, w)
    assert np.array_equal(x_lm, x_res)
    assert np.array_equal(p_lm[:res_stack.n_params], p_res)


# -- parameters and k_n ---------------------------------------------------------------------------
def test_param_layout_and_k_init():
    stack = LMStack([smooth_block(2, i) for i in range(6)])
    assert list(stack.param_shapes)[-1] == "k" and stack.param_shapes["k"] == (5,)
    assert stack.n_params == stack.n_block_params + 5
    params = stack.init(np.random.default_rng(11))
    k = stack.views(params)["k"]
    assert stack.k_init == K_INIT_PAPER
    assert np.all((k >= -0.1) & (k <= 0.0)) and len(np.unique(k)) == 5
    again = stack.init(np.random.default_rng(11))           # reproducible from the seed
    assert np.array_equal(params, again)
    # k is drawn after the blocks, so the blocks' parameters match a ResNetStack's init
    res = ResNetStack(stack.blocks).init(np.random.default_rng(11))
    assert np.array_equal(params[:stack.n_block_params], res)
    const = LMStack(stack.blocks, k_init=-0.5).init(np.random.default_rng(0))
    assert np.all(LMStack(stack.blocks).views(const)["k"] == -0.5)
    assert np.all(LMStack(stack.blocks, k_init=1.0).views(
        LMStack(stack.blocks, k_init=1.0).init(np.random.default_rng(0)))["k"] == 1.0)


@pytest.mark.parametrize("k_init", [(-1.0, 0.0), (0.0, 1.5), (0.2, 0.1), -1.0, 1.01,
                                    (np.nan, 0.0), (0.0,), "ab", None])
def test_k_init_outside_zero_stability_raises(k_init):
    with pytest.raises(ValueError, match="k_init"):
        LMStack([smooth_block(2)], k_init=k_init)


def test_zero_stable():
    assert zero_stable([-1.0, -0.99, 0.0, 1.0, 1.01]).tolist() == [False, True, True, True,
                                                                  False]


# -- mutation tests -------------------------------------------------------------------------------
def _lm_case():
    stack = LMStack([smooth_block(3, i) for i in range(4)])
    return stack, make_params(stack, 21), np.random.default_rng(22).uniform(-1, 1, (2, 3))


def test_mutant_wrong_k_derivative_caught(monkeypatch):
    stack, params, x = _lm_case()
    assert max(gradient_errors(stack, params, x, 0).values()) <= FD_TOL  # plumbing is sound
    monkeypatch.setattr(lm, "_lm_k_bar", lambda bar, u, u_prev: np.sum(bar * (u - u_prev)))
    errors = gradient_errors(stack, params, x, 0)
    assert min(errors[f"k{j}"] for j in (1, 2, 3)) > GROSS, errors
    assert errors["x"] <= FD_TOL                   # the bug is confined to k


def test_mutant_dropped_startup_in_adjoint_caught(monkeypatch):
    stack, params, x = _lm_case()
    monkeypatch.setattr(lm, "_startup_vjp", lambda bar, g: bar)
    errors = gradient_errors(stack, params, x, 0)
    assert errors["x"] > GROSS, errors


def test_mutant_dropped_startup_in_forward_caught(monkeypatch):
    stack, params, x = _lm_case()
    ref = reference_lm(stack.blocks, stack.block_params(params), stack.views(params)["k"], x)
    monkeypatch.setattr(lm, "_startup_step", lambda u, fu: u)
    y = stack.forward(params, x)[0]
    assert np.max(np.abs(y - ref)) > GROSS
    assert gradient_errors(stack, params, x, 0)["block0"] > GROSS   # VJP no longer matches


# -- bad input ------------------------------------------------------------------------------------
def test_bad_input_errors():
    d = 2
    with pytest.raises(ValueError, match="blocks"):
        LMStack([])
    with pytest.raises(TypeError, match="time-dependent"):
        ResNetStack([ConcatLinear(d, d)])
    with pytest.raises(TypeError, match="not a layer"):
        ResNetStack([object()])
    with pytest.raises(ValueError, match="mode"):
        LMStack([smooth_block(d)], mode="test")
    with pytest.raises(ValueError, match="gate_level"):
        LMStack([smooth_block(d)], gate_level="pixel")
    stack = LMStack([smooth_block(d), smooth_block(d)])
    x = np.zeros((2, d))
    with pytest.raises(ParameterError, match="params"):
        stack.forward(np.zeros(stack.n_params - 1), x)
    with pytest.raises(ValueError, match="preserve the shape"):
        ResNetStack([Linear(d, d + 1)]).forward(Linear(d, d + 1).init(np.random.default_rng(0)),
                                               x)
    with pytest.raises(TypeError, match="rng"):
        LMStack([smooth_block(d)], survival=0.5).forward(
            LMStack([smooth_block(d)]).init(np.random.default_rng(0)), x)
    with pytest.raises(TypeError, match="StackCache"):
        stack.vjp(stack.init(np.random.default_rng(0)), (None, None), x)
    with pytest.raises(TypeError, match="context"):
        stack.forward(stack.init(np.random.default_rng(0)), x, mask=1)


# -- backends -------------------------------------------------------------------------------------
def test_backend_matches_numpy(xp):
    """Same results on CuPy as on NumPy (gates and alphas are drawn on the host)."""
    from adjointcore.backend import to_host
    from nets.lm_resnet import ShakeShake
    blocks = [ShakeShake(smooth_block(3, 0), smooth_block(3, 1)) for _ in range(3)]
    stack = LMStack(blocks, survival=0.5, gate_level="sample")
    params, x = make_params(stack, 1), np.random.default_rng(2).standard_normal((4, 3))
    w = np.random.default_rng(3).standard_normal(x.shape)
    outs = []
    for p, z, v in ((params, x, w), tuple(xp.asarray(a) for a in (params, x, w))):
        y, cache = stack.forward(p, z, rng=np.random.default_rng(4))
        outs.append(to_host((y,) + stack.vjp(p, cache, v)))
    for a, b in zip(*outs, strict=True):      # same float64 arithmetic up to reduction order
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("stack_cls", [LMStack, ResNetStack])
def test_stack_composes_in_sequential_and_passes_check_layer(stack_cls):
    """The stacks follow the layer protocol: a Linear stem, the stack and a Linear head in one
    Sequential pass check_layer (issue 9, point 2)."""
    stack = stack_cls([smooth_block(3, i) for i in range(3)])
    model = Sequential(Linear(2, 3), stack, Linear(3, 2))
    rng = np.random.default_rng(11)
    params = model.init(rng)
    model.slices(params)[1][:] = make_params(stack, 12)      # k_n away from the init value
    report = check_layer(model, x=rng.standard_normal((4, 2)), params=params)
    assert report.passed, str(report)
