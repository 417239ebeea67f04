"""Property suite: every built-in layer passes ``check_layer`` on hypothesis-drawn inputs.

Each test draws shapes, batch sizes, layer options, values and parameters (100 examples per
layer; tiny shapes keep each example at a few milliseconds) and asserts, in float64:

- central FD relative error <= 1e-7 (a correct layer reaches ~1e-10; eps_mach**(2/3) ~ 4e-11),
- complex step <= 1e-13 where ``analytic`` (exact to roundoff, ~1e-16 measured),
- dot-product test <= 1e-12 (complex-step JVP, or 4th-order FD JVP at ~3e-13 for kinked layers),
- Taylor first-order remainder rate >= 1.9 (``inf``: R1 at roundoff, the map is linear along
  the direction and the gradient exact).

Kinks are excluded by construction: ReLU-type inputs satisfy ``|x| >= 1e-2`` (the largest
perturbation, the 4th-order FD's ``2 h max(1, |x|_inf)``, is 3e-3), max-pool inputs are pairwise
separated by >= 3.75e-2 (``distinct_arrays`` with margin 5e-2 guarantees 0.75 * margin). Norm
layers use separated values too, which keeps the variance away from 0
(well-conditioned normalisation).
"""
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from adjointcore.gradcheck import check_layer, taylor_test
from adjointcore.gradcheck import strategies as gs
from adjointcore.layers.activation import ELU, LeakyReLU, ReLU, Sigmoid, Softplus, Tanh
from adjointcore.layers.compose import Sequential
from adjointcore.layers.conv import ConcatConv2d, Conv2d
from adjointcore.layers.dropout import Dropout
from adjointcore.layers.linear import ConcatLinear, Linear
from adjointcore.layers.norm import BatchNorm, GroupNorm
from adjointcore.layers.pool import AvgPool2d, GlobalAvgPool2d, MaxPool2d
from adjointcore.layers.residual import Residual
from adjointcore.layers.shape import ChannelPad, ChannelUnpad, Flatten, Reshape

SETTINGS = settings(max_examples=100, deadline=None)
KINK_MARGIN = 1e-2
FD_TOL, COMPLEX_TOL, DOT_TOL, RATE_MIN = 1e-7, 1e-13, 1e-12, 1.9

any_shapes = hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4)


def assert_verified(report):
    """``report.passed`` plus each figure against the suite's own bounds."""
    assert report.passed, str(report)
    for key, value in report.figures.items():
        if key.startswith("fd"):
            assert value <= FD_TOL, str(report)
        elif key.startswith("complex"):
            assert value <= COMPLEX_TOL, str(report)
        elif key.startswith("dot"):
            assert value <= DOT_TOL, str(report)
        else:
            assert value >= RATE_MIN, str(report)


def random_params(layer, seed, scale=0.5):
    """Parameters away from init's special values (weights 1, biases 0)."""
    rng = np.random.default_rng(seed)
    p = layer.init(rng)
    return p + scale * rng.standard_normal(p.shape)


# -- activations --------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [ReLU, lambda: LeakyReLU(0.1), lambda: LeakyReLU(-0.3)],
                         ids=["relu", "leaky0.1", "leaky-0.3"])
@SETTINGS
@given(x=gs.kink_free_arrays(any_shapes, margin=KINK_MARGIN), seed=gs.seeds())
def test_piecewise_linear_activations(make, x, seed):
    report = check_layer(make(), x=x, seed=seed)
    assert_verified(report)
    assert "complex" in report.skipped


@pytest.mark.parametrize("make", [Tanh, Sigmoid], ids=["tanh", "sigmoid"])
@SETTINGS
@given(x=gs.arrays_float(any_shapes, -4.0, 4.0), seed=gs.seeds())
@example(x=np.array([3.93355327]), seed=0)  # regression: 1 - y**2 cancelled (complex 1.1e-13)
def test_smooth_activations(make, x, seed):
    report = check_layer(make(), x=x, seed=seed)
    assert_verified(report)
    assert "complex_x" in report.figures


@SETTINGS
@given(x=gs.arrays_float(any_shapes, -4.0, 4.0), beta=st.floats(0.25, 4.0), seed=gs.seeds())
def test_softplus(x, beta, seed):
    assert_verified(check_layer(Softplus(beta), x=x, seed=seed))


@SETTINGS
@given(x=gs.kink_free_arrays(any_shapes, margin=KINK_MARGIN),
       alpha=st.one_of(st.just(0.0), st.floats(0.05, 2.0)), seed=gs.seeds())
def test_elu(x, alpha, seed):
    assert_verified(check_layer(ELU(alpha), x=x, seed=seed))


# -- normalisation -------------------------------------------------------------------------------
@st.composite
def norm_inputs(draw, min_batch, dense=True):
    n = draw(st.integers(min_batch, 3))
    c = draw(st.integers(1, 4))
    spatial = draw(st.sampled_from(([()] if dense else []) + [(1, 3), (2, 2), (3, 1), (2, 3)]))
    return draw(gs.distinct_arrays((n, c) + spatial, margin=0.1))


# Normalising only 2 values gives +-1 whatever they are: J = O(eps / var), a degenerate map
# whose tiny Jacobian is computed by cancellation. Groups / channels keep >= 3 values.
@SETTINGS
@given(x=norm_inputs(min_batch=3), affine=st.booleans(), seed=gs.seeds())
def test_batchnorm_train(x, affine, seed):
    layer = BatchNorm(x.shape[1], affine=affine)
    assert_verified(check_layer(layer, x=x, params=random_params(layer, seed), seed=seed))


@SETTINGS
@given(x=norm_inputs(min_batch=1), seed=gs.seeds())
def test_batchnorm_eval(x, seed):
    rng = np.random.default_rng(seed)
    c = x.shape[1]
    layer = BatchNorm(c, mode="eval", running=(rng.standard_normal(c), rng.uniform(0.1, 2, c)))
    assert_verified(check_layer(layer, x=x, params=random_params(layer, seed), seed=seed))


@SETTINGS
@given(x=norm_inputs(min_batch=1, dense=False), data=st.data(), affine=st.booleans(),
       seed=gs.seeds())
def test_groupnorm(x, data, affine, seed):
    c = x.shape[1]
    groups = data.draw(st.sampled_from([g for g in range(1, c + 1) if c % g == 0]))
    layer = GroupNorm(groups, c, affine=affine)
    assert_verified(check_layer(layer, x=x, params=random_params(layer, seed), seed=seed))


# -- dropout --------------------------------------------------------------------------------------
@SETTINGS
@given(x=gs.arrays_float(any_shapes), p=st.floats(0.0, 0.9), mode=st.sampled_from(["train",
                                                                                   "eval"]),
       seed=gs.seeds())
def test_dropout(x, p, mode, seed):
    report = check_layer(Dropout(p, mode), x=x, rng=np.random.default_rng(seed), seed=seed)
    assert_verified(report)


# -- dense ----------------------------------------------------------------------------------------
@st.composite
def dense_case(draw):
    n, f_in, f_out = draw(gs.batch_sizes()), draw(st.integers(1, 5)), draw(st.integers(1, 5))
    return draw(gs.arrays_float((n, f_in))), f_out, draw(st.booleans())


@SETTINGS
@given(case=dense_case(), seed=gs.seeds())
def test_linear(case, seed):
    x, f_out, bias = case
    layer = Linear(x.shape[1], f_out, bias=bias)
    assert_verified(check_layer(layer, x=x, params=random_params(layer, seed), seed=seed))


@SETTINGS
@given(case=dense_case(), t=gs.scalars(-2.0, 2.0), seed=gs.seeds())
def test_concat_linear(case, t, seed):
    x, f_out, bias = case
    layer = ConcatLinear(x.shape[1], f_out, bias=bias)
    assert_verified(check_layer(layer, x=x, params=random_params(layer, seed), t=t, seed=seed))


# -- convolution ----------------------------------------------------------------------------------
@st.composite
def conv_case(draw, extra_channels=0):
    """(x, kwargs of Conv2d) with groups dividing in_channels (+ time channel) and out."""
    groups = draw(st.integers(1, 2))
    c_total = groups * draw(st.integers(1, 2))
    c = c_total - extra_channels
    if c < 1:
        c, c_total = c + groups, c_total + groups
    o = groups * draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    ph, pw = draw(st.integers(0, 2)), draw(st.integers(0, 2))
    sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    h = draw(st.integers(max(1, kh - 2 * ph), kh + 2))
    w = draw(st.integers(max(1, kw - 2 * pw), kw + 2))
    x = draw(gs.arrays_float((draw(st.integers(1, 2)), c, h, w)))
    kwargs = dict(in_channels=c, out_channels=o, kernel_size=(kh, kw), stride=(sh, sw),
                  padding=(ph, pw), groups=groups, bias=draw(st.booleans()))
    return x, kwargs


@SETTINGS
@given(case=conv_case(), seed=gs.seeds())
def test_conv2d(case, seed):
    x, kwargs = case
    layer = Conv2d(**kwargs)
    assert_verified(check_layer(layer, x=x, params=random_params(layer, seed), seed=seed))


@SETTINGS
@given(case=conv_case(extra_channels=1), t=gs.scalars(-2.0, 2.0), seed=gs.seeds())
def test_concat_conv2d(case, t, seed):
    x, kwargs = case
    layer = ConcatConv2d(**kwargs)
    assert_verified(check_layer(layer, x=x, params=random_params(layer, seed), t=t, seed=seed))


# -- pooling --------------------------------------------------------------------------------------
@st.composite
def pool_case(draw):
    k = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = draw(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
    pad = (draw(st.integers(0, k[0] // 2)), draw(st.integers(0, k[1] // 2)))
    h = draw(st.integers(max(1, k[0] - 2 * pad[0]), k[0] + 3))
    w = draw(st.integers(max(1, k[1] - 2 * pad[1]), k[1] + 3))
    shape = (draw(gs.batch_sizes(1, 2)), draw(st.integers(1, 2)), h, w)
    return shape, dict(kernel_size=k, stride=stride, padding=pad)


@SETTINGS
@given(case=pool_case(), data=st.data(), seed=gs.seeds())
def test_maxpool2d(case, data, seed):
    shape, kwargs = case
    x = data.draw(gs.distinct_arrays(shape, margin=5e-2))
    report = check_layer(MaxPool2d(**kwargs), x=x, seed=seed)
    assert_verified(report)


@SETTINGS
@given(case=pool_case(), data=st.data(), seed=gs.seeds())
def test_avgpool2d(case, data, seed):
    shape, kwargs = case
    x = data.draw(gs.arrays_float(shape))
    assert_verified(check_layer(AvgPool2d(**kwargs), x=x, seed=seed))


@SETTINGS
@given(shape=gs.image_shapes(), data=st.data(), seed=gs.seeds())
def test_global_avgpool2d(shape, data, seed):
    x = data.draw(gs.arrays_float(shape))
    assert_verified(check_layer(GlobalAvgPool2d(), x=x, seed=seed))


# -- shape ----------------------------------------------------------------------------------------
@SETTINGS
@given(x=gs.arrays_float(hnp.array_shapes(min_dims=2, max_dims=4, max_side=3)),
       which=st.sampled_from(["flatten", "reshape", "pad", "unpad"]),
       extra=st.integers(0, 2), seed=gs.seeds())
def test_shape_layers(x, which, extra, seed):
    if which == "flatten":
        layer = Flatten()
    elif which == "reshape":
        layer = Reshape(tuple(reversed(x.shape[1:])) if extra else (-1,))
    elif which == "pad":
        layer = ChannelPad(extra)
    else:
        layer = ChannelUnpad(min(extra, x.shape[1] - 1))
    report = check_layer(layer, x=x, seed=seed)
    assert_verified(report)
    assert report.figures["taylor_min_rate"] == np.inf      # linear: R1 at roundoff


# -- composition ----------------------------------------------------------------------------------
ACTIVATIONS = [Tanh, Sigmoid, Softplus, lambda: ELU(1.0)]


@SETTINGS
@given(x=gs.arrays_float(st.tuples(gs.batch_sizes(), st.integers(1, 4))),
       widths=st.lists(st.integers(1, 4), min_size=1, max_size=3),
       acts=st.lists(st.sampled_from(range(len(ACTIVATIONS))), min_size=3, max_size=3),
       residual=st.booleans(), seed=gs.seeds())
def test_sequential_and_residual(x, widths, acts, residual, seed):
    layers, f_in = [], x.shape[1]
    for width, act in zip(widths, acts, strict=False):   # acts: one per possible width
        layers += [Linear(f_in, width), ACTIVATIONS[act]()]
        f_in = width
    layers.append(Linear(f_in, x.shape[1]))
    net = Residual(Sequential(*layers)) if residual else Sequential(*layers)
    report = check_layer(net, x=x, params=random_params(net, seed, 0.2), seed=seed)
    assert_verified(report)


def _network_taylor(net, x, seed, **context):
    """Taylor test of J(x, params) = <y_bar, net(params, x)> along a joint unit direction."""
    rng = np.random.default_rng(seed)
    params = net.init(rng)
    y, cache = net.forward(params, x, **context)
    y_bar = rng.standard_normal(y.shape)
    x_bar, p_bar = net.vjp(params, cache, y_bar)
    m = np.concatenate([x.ravel(), params])
    dm = rng.standard_normal(m.shape)
    dm /= np.linalg.norm(dm)

    def loss(z):
        return float(np.sum(y_bar * net.forward(z[x.size:], z[:x.size].reshape(x.shape),
                                                **context)[0]))

    return taylor_test(loss, np.concatenate([x_bar.ravel(), p_bar]), m, dm)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_taylor_rate_cnn(seed):
    net = Sequential(Conv2d(2, 4, 3, padding=1), GroupNorm(2, 4), Tanh(),
                     Conv2d(4, 4, 3, stride=2, padding=1), GlobalAvgPool2d(), Linear(4, 3))
    x = np.random.default_rng(seed + 10).uniform(-1, 1, (2, 2, 6, 5))
    res = _network_taylor(net, x, seed)
    assert res.converged and res.min_rate >= RATE_MIN and abs(res.slope1 - 2.0) <= 0.05
    assert np.all(np.abs(res.rates0[-3:] - 1.0) <= 0.05)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_taylor_rate_mlp_and_ode_field(seed):
    mlp = Sequential(Linear(5, 16), Tanh(), Linear(16, 16), Softplus(), Linear(16, 3))
    x = np.random.default_rng(seed + 20).uniform(-1, 1, (4, 5))
    res = _network_taylor(mlp, x, seed)
    assert res.converged and res.min_rate >= RATE_MIN and abs(res.slope1 - 2.0) <= 0.05
    field = Sequential(ConcatLinear(5, 8), Tanh(), ConcatLinear(8, 5))
    res = _network_taylor(field, x, seed, t=0.4)
    assert res.converged and res.min_rate >= RATE_MIN and abs(res.slope1 - 2.0) <= 0.05
