"""float32 VJPs agree with float64 VJPs of the same inputs, for every built-in layer.

Inputs, parameters and cotangents are drawn exactly representable in float32, so both runs see
identical numbers and differ only by rounding. Each VJP is a handful of operations (sums of at
most ~100 products); its float32 error is about ``u * kappa`` with unit roundoff
``u = 6e-8`` and a condition number ``kappa`` (sum length times the cancellation factor) of
O(10-100) for these tiny well-scaled shapes, hence the bound ``1e-5`` (= 170 u) on the
norm-wise relative error ``|a32 - a64| / |a64|`` of ``x_bar`` and ``params_bar`` (and ``y``).
The complex-step and Taylor checks are float64-only (see ``check_layer``); here the float32
FD check of ``check_layer`` (tolerance 1e-3) runs as well.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adjointcore.gradcheck import check_layer, relative_error
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

F32_VS_F64 = 1e-5
IMG = (2, 2, 4, 5)


def _f32_exact(a):
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def _kinked(shape):
    # the float32 FD step moves coordinates by 4.9e-3 max(1, |x|_inf) ~ 1.1e-2 < 5e-2
    return gs.kink_free_arrays(shape, margin=5e-2, dtype=np.float32).map(_f32_exact)


def _plain(shape):
    return gs.arrays_float(shape, dtype=np.float32).map(_f32_exact)


def _distinct(shape):
    return gs.distinct_arrays(shape, margin=0.1).map(_f32_exact)


# (id, layer factory, input strategy, context)
CASES = [
    ("relu", ReLU, _kinked(IMG), {}),
    ("leaky_relu", lambda: LeakyReLU(0.2), _kinked(IMG), {}),
    ("tanh", Tanh, _plain(IMG), {}),
    ("sigmoid", Sigmoid, _plain(IMG), {}),
    ("softplus", lambda: Softplus(2.0), _plain(IMG), {}),
    ("elu", ELU, _kinked(IMG), {}),
    ("linear", lambda: Linear(5, 3), _plain((3, 5)), {}),
    ("concat_linear", lambda: ConcatLinear(5, 3), _plain((3, 5)), {"t": 0.75}),
    ("conv2d", lambda: Conv2d(2, 3, 3, padding=1), _plain(IMG), {}),
    ("conv2d_strided_grouped", lambda: Conv2d(2, 4, 2, stride=2, groups=2), _plain(IMG), {}),
    ("concat_conv2d", lambda: ConcatConv2d(2, 3, 3, padding=1), _plain(IMG), {"t": -0.5}),
    ("maxpool2d", lambda: MaxPool2d(2, stride=1), _distinct(IMG), {}),
    ("avgpool2d", lambda: AvgPool2d(3, stride=2, padding=1), _plain(IMG), {}),
    ("global_avgpool2d", GlobalAvgPool2d, _plain(IMG), {}),
    ("flatten", Flatten, _plain(IMG), {}),
    ("reshape", lambda: Reshape((-1, 2)), _plain(IMG), {}),
    ("channel_pad", lambda: ChannelPad(2), _plain(IMG), {}),
    ("channel_unpad", lambda: ChannelUnpad(1), _plain(IMG), {}),
    ("batchnorm", lambda: BatchNorm(2), _distinct(IMG), {}),
    ("groupnorm", lambda: GroupNorm(2, 2), _distinct(IMG), {}),
    ("dropout", lambda: Dropout(0.3), _plain(IMG), {"rng": 0}),
    ("sequential", lambda: Sequential(Conv2d(2, 3, 3), GroupNorm(1, 3), Tanh(),
                                      GlobalAvgPool2d(), Linear(3, 2)), _plain(IMG), {}),
    ("residual", lambda: Residual(Sequential(Linear(5, 5), Softplus(), Linear(5, 5))),
     _plain((3, 5)), {}),
]


def _ctx(context):
    """Fresh Generator per call (same seed): both precisions see the same dropout mask."""
    ctx = dict(context)
    if "rng" in ctx:
        ctx["rng"] = np.random.default_rng(ctx["rng"])
    return ctx


def _run(layer, params, x, y_bar, context, dtype):
    y, cache = layer.forward(params.astype(dtype), x.astype(dtype), **_ctx(context))
    x_bar, p_bar = layer.vjp(params.astype(dtype), cache, y_bar.astype(dtype))
    return y, x_bar, p_bar


@pytest.mark.parametrize("name, make, xs, context", CASES, ids=[c[0] for c in CASES])
@settings(max_examples=25, deadline=None)
@given(data=st.data(), seed=gs.seeds())
def test_float32_vjp_matches_float64(name, make, xs, context, data, seed):
    layer = make()
    x = data.draw(xs)
    rng = np.random.default_rng(seed)
    params = layer.init(rng)
    params = _f32_exact(params + 0.3 * rng.standard_normal(params.shape))
    y_shape = layer.forward(params, x, **_ctx(context))[0].shape
    y_bar = _f32_exact(rng.standard_normal(y_shape))
    y64, xb64, pb64 = _run(layer, params, x, y_bar, context, np.float64)
    y32, xb32, pb32 = _run(layer, params, x, y_bar, context, np.float32)
    assert y32.dtype == xb32.dtype == np.float32
    assert relative_error(y32.astype(np.float64), y64) <= F32_VS_F64
    assert relative_error(xb32.astype(np.float64), xb64) <= F32_VS_F64
    if layer.n_params:
        assert pb32.dtype == np.float32
        assert relative_error(pb32.astype(np.float64), pb64) <= F32_VS_F64


@pytest.mark.parametrize("name, make, xs, context", CASES, ids=[c[0] for c in CASES])
@settings(max_examples=5, deadline=None)
@given(data=st.data(), seed=gs.seeds())
def test_float32_check_layer(name, make, xs, context, data, seed):
    """check_layer in float32: FD <= 1e-3 and the 4th-order dot test <= 1e-3."""
    layer = make()
    x = data.draw(xs).astype(np.float32)
    kwargs = dict(context)
    report = check_layer(layer, x=x, seed=seed, **kwargs)
    assert report.passed, str(report)
    assert report.dtype == "float32" and "taylor" in report.skipped
