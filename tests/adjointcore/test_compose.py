"""Sequential and Residual: flat parameters, named views, context routing, chained VJPs."""
from typing import Any, NamedTuple

import numpy as np
import pytest

from adjointcore.backend import get_array_module, to_host
from adjointcore.errors import ParameterError, ShapeError
from adjointcore.gradcheck import check_layer
from adjointcore.layers.activation import ReLU, Tanh
from adjointcore.layers.base import Layer
from adjointcore.layers.compose import Sequential
from adjointcore.layers.dropout import Dropout
from adjointcore.layers.residual import Residual, ResidualCache


# -- tiny test layers -----------------------------------------------------------------------------
class ScaleCache(NamedTuple):
    x: Any
    w: Any


class Scale(Layer):
    """y = x * w (feature-wise), analytic."""

    analytic = True

    def __init__(self, d):
        self.d = d

    @property
    def param_shapes(self):
        return {"w": (self.d,)}

    def _init_views(self, rng, views):
        views["w"][...] = rng.uniform(0.5, 1.5, self.d)

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def forward(self, params, x, **context):
        w = self.views(params)["w"]
        return x * w, ScaleCache(x, w)

    def vjp(self, params, cache, y_bar, need_params=True):
        return y_bar * cache.w, (y_bar * cache.x).sum(0) if need_params else None


class TimeShift(Layer):
    """y = x + t * b: time-dependent, analytic."""

    analytic = True
    time_dependent = True

    def __init__(self, d):
        self.d = d

    @property
    def param_shapes(self):
        return {"b": (self.d,)}

    def _init_views(self, rng, views):
        views["b"][...] = rng.standard_normal(self.d)

    def forward(self, params, x, t=None, **context):
        return x + t * self.views(params)["b"], t

    def vjp(self, params, cache, y_bar, need_params=True):
        return y_bar, cache * y_bar.sum(0) if need_params else None


class UserTanh:
    """A user's layer: no base class, no flags, no param_shapes, no output_shape, no context."""

    n_params = 0

    def forward(self, params, x):
        y = np.tanh(x)
        return y, y

    def vjp(self, params, cache, y_bar, need_params=True):
        return y_bar * (1 - cache * cache), np.zeros(0) if need_params else None


class UserAffine:
    """A user's layer with parameters (a, b) but no param_shapes: y = a x + b."""

    n_params = 2
    analytic = True

    def init(self, rng, dtype=np.float64):
        return rng.uniform(0.5, 1.5, 2).astype(dtype)

    def forward(self, params, x):
        return params[0] * x + params[1], x

    def vjp(self, params, cache, y_bar, need_params=True):
        xp = get_array_module(y_bar)
        p_bar = xp.stack([(y_bar * cache).sum(), y_bar.sum()]) if need_params else None
        return params[0] * y_bar, p_bar


# -- parameters -----------------------------------------------------------------------------------
def test_flat_params_and_named_views(rng):
    seq = Sequential(Scale(3), Tanh(), Scale(3), UserAffine())
    assert seq.n_params == 8
    assert seq.param_shapes == {"0.w": (3,), "2.w": (3,), "3.params": (2,)}
    params = seq.init(rng)
    views = seq.views(params)
    np.testing.assert_array_equal(np.concatenate([views["0.w"], views["2.w"], views["3.params"]]),
                                  params)
    views["2.w"][1] = 42.0  # views write through to the flat vector
    assert params[4] == 42.0
    assert [s.size for s in seq.slices(params)] == [3, 0, 3, 2]


def test_init_draws_children_in_order():
    children = [Scale(3), Tanh(), UserAffine(), Scale(2)]
    rng = np.random.default_rng(5)
    want = np.concatenate([children[0].init(rng), children[2].init(rng), children[3].init(rng)])
    got = Sequential(*children).init(np.random.default_rng(5))
    np.testing.assert_array_equal(got, want)
    assert Sequential(*children).init(np.random.default_rng(5), np.float32).dtype == np.float32


# -- forward / vjp --------------------------------------------------------------------------------
def test_forward_is_the_composition_and_cache_is_a_tuple(rng):
    a, b = Scale(3), UserAffine()
    seq = Sequential(a, Tanh(), b)
    params = seq.init(rng)
    x = rng.standard_normal((4, 3))
    y, cache = seq.forward(params, x)
    want = b.forward(params[3:], np.tanh(a.forward(params[:3], x)[0]))[0]
    np.testing.assert_array_equal(y, want)
    assert isinstance(cache, tuple) and len(cache) == 3


def test_gradients_with_time_and_user_layers(rng):
    """UserTanh has no `analytic` flag, so the stack is not analytic and check_layer's dot test
    would use its fourth-order FD JVP, roundoff-limited at ~1e-11 on this 5-layer stack (above
    its 1e-12 bound); FD (<= 1e-7) and Taylor apply, and the analytic twin below does the rest."""
    seq = Sequential(Scale(3), UserTanh(), TimeShift(3), Tanh(), UserAffine())
    x = rng.standard_normal((5, 3))
    report = check_layer(seq, x, t=0.7, checks=("fd", "taylor"))
    assert report.passed, str(report)
    assert report.figures["fd_params"] <= 1e-7 and report.figures["fd_x"] <= 1e-7
    twin = Sequential(Scale(3), Tanh(), TimeShift(3), Tanh(), UserAffine())
    assert twin.analytic
    report = check_layer(twin, x, t=0.7)
    assert report.passed, str(report)
    assert report.figures["complex_params"] <= 1e-13 and report.figures["complex_x"] <= 1e-13


def test_gradients_mlp_with_linear(rng):
    from adjointcore.layers import linear
    mlp = Sequential(linear.Linear(3, 5), Tanh(), linear.ConcatLinear(5, 4), ReLU(),
                     linear.Linear(4, 2))
    assert mlp.time_dependent and not mlp.analytic
    assert list(mlp.param_shapes)[:2] == ["0.weight", "0.bias"]
    x = rng.standard_normal((6, 3))
    params = mlp.init(rng)
    # keep ReLU inputs >= 0.05 from its kink: FD/Taylor steps move them by < 1e-2
    pre, _ = Sequential(*mlp.layers[:3]).forward(params[:mlp._offsets[3]], x, t=0.3)
    assert np.min(np.abs(pre)) > 0.05
    report = check_layer(mlp, x, params=params, t=0.3)
    assert report.passed, str(report)
    assert mlp.output_shape((6, 3)) == (6, 2)


def test_need_params_false(rng):
    seq = Sequential(Scale(3), Tanh(), UserAffine())
    params = seq.init(rng)
    x = rng.standard_normal((4, 3))
    y, cache = seq.forward(params, x)
    y_bar = rng.standard_normal(y.shape)
    x_bar, p_bar = seq.vjp(params, cache, y_bar, need_params=False)
    assert p_bar is None
    np.testing.assert_array_equal(x_bar, seq.vjp(params, cache, y_bar)[0])


def test_backend(xp, rng):
    seq = Sequential(Scale(3), Tanh(), Residual(Sequential(Scale(3), Tanh())))
    params = seq.init(rng)
    x = rng.standard_normal((4, 3))
    y_bar = rng.standard_normal((4, 3))
    y, cache = seq.forward(xp.asarray(params), xp.asarray(x))
    x_bar, p_bar = seq.vjp(xp.asarray(params), cache, xp.asarray(y_bar))
    y_np, cache_np = seq.forward(params, x)
    x_bar_np, p_bar_np = seq.vjp(params, cache_np, y_bar)
    for a, b in [(y, y_np), (x_bar, x_bar_np), (p_bar, p_bar_np)]:
        np.testing.assert_allclose(to_host(a), b, rtol=1e-14, atol=1e-15)  # same ops, ~1 ulp


# -- context routing and flags --------------------------------------------------------------------
def test_context_routing(rng):
    seq = Sequential(UserTanh(), TimeShift(3), Dropout(0.5))
    assert seq.time_dependent and seq.needs_rng and not seq.analytic
    params = seq.init(rng)
    x = rng.standard_normal((4, 3))
    # UserTanh.forward takes no keywords: receiving t or rng would raise TypeError
    y1, _ = seq.forward(params, x, t=0.2, rng=np.random.default_rng(1))
    y2, _ = seq.forward(params, x, t=0.2, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(y1, y2)
    with pytest.raises(ValueError, match=r"layers\[1\] \(TimeShift\) is time-dependent"):
        seq.forward(params, x, rng=np.random.default_rng(1))
    with pytest.raises(ValueError, match=r"layers\[2\] \(Dropout\) needs random numbers"):
        seq.forward(params, x, t=0.2)
    with pytest.raises(TypeError, match="unknown context"):
        seq.forward(params, x, t=0.2, rng=rng, temperature=1.0)


def test_flags_derived():
    assert Sequential(Scale(2), Tanh()).analytic
    assert not Sequential(Scale(2), ReLU()).analytic
    assert not Sequential(Tanh()).time_dependent and not Sequential(Tanh()).needs_rng
    assert not Sequential(Dropout(0.5, mode="eval")).needs_rng
    assert Residual(Sequential(TimeShift(2))).time_dependent


def test_empty_sequential_is_identity(rng):
    x = rng.standard_normal((2, 3))
    y, cache = Sequential().forward(np.zeros(0), x)
    assert y is x and cache == ()
    assert Sequential().vjp(np.zeros(0), cache, x)[1].shape == (0,)


def test_output_shape_needs_children_support():
    assert Sequential(Scale(3), Tanh()).output_shape((5, 3)) == (5, 3)
    with pytest.raises(TypeError, match=r"layers\[1\] \(UserTanh\) has no output_shape"):
        Sequential(Tanh(), UserTanh()).output_shape((5, 3))


# -- residual -------------------------------------------------------------------------------------
def test_residual_forward_and_gradients(rng):
    inner = Sequential(Scale(3), Tanh(), TimeShift(3))
    res = Residual(inner)
    assert res.param_shapes == inner.param_shapes and res.n_params == 6
    params = res.init(rng)
    x = rng.standard_normal((4, 3))
    y, cache = res.forward(params, x, t=0.4)
    assert isinstance(cache, ResidualCache)
    np.testing.assert_array_equal(y, x + inner.forward(params, x, t=0.4)[0])
    report = check_layer(res, x, t=0.4)
    assert report.passed, str(report)
    report = check_layer(Residual(UserTanh()), x)
    assert report.passed, str(report)


class Widen:
    """A user's layer that changes the feature count (3 -> 6)."""

    n_params = 0

    def forward(self, params, x):
        return np.concatenate([x, x], axis=1), None

    def vjp(self, params, cache, y_bar, need_params=True):
        return y_bar[:, :3] + y_bar[:, 3:], np.zeros(0)


def test_residual_shape_mismatch(rng):
    with pytest.raises(ShapeError, match="shape-preserving.*\\(4, 3\\).*\\(4, 6\\)"):
        Residual(Widen()).forward(np.zeros(0), rng.standard_normal((4, 3)))


# -- bad input ------------------------------------------------------------------------------------
def test_bad_children_and_params(rng):
    with pytest.raises(TypeError, match=r"layers\[1\] \(object\) is not a layer.*n_params"):
        Sequential(Tanh(), object())
    with pytest.raises(TypeError, match="inner"):
        Residual("tanh")
    seq = Sequential(Scale(3), Tanh())
    with pytest.raises(ParameterError, match="`params` of Sequential has length 2, expected 3"):
        seq.forward(np.zeros(2), np.ones((1, 3)))
    params = seq.init(rng)
    with pytest.raises(TypeError, match="`cache`"):
        seq.vjp(params, ("only one",), np.ones((1, 3)))
    with pytest.raises(TypeError, match="`rng`"):
        seq.init(0)


class WrongGradLength:
    """Duck-typed user layer (no optional attributes) whose vjp returns one value too many."""

    n_params = 2

    def forward(self, params, x, **context):
        return x * params[0] + params[1], x

    def vjp(self, params, cache, y_bar, need_params=True):
        x_bar = y_bar * params[0]
        if not need_params:
            return x_bar, None
        return x_bar, np.array([(y_bar * cache).sum(), y_bar.sum(), 0.0])


@pytest.mark.parametrize("wrap", [lambda c: Sequential(Tanh(), c, Tanh()), Residual],
                         ids=["sequential", "residual"])
def test_child_params_bar_of_wrong_length_is_rejected(wrap, rng):
    # Before the fix Sequential concatenated it silently (a params_bar one entry too long, every
    # later block shifted) and Residual returned it as is.
    net = wrap(WrongGradLength())
    params, x = rng.standard_normal(2), rng.standard_normal((3, 2))
    y, cache = net.forward(params, x)
    with pytest.raises(ParameterError, match=r"vjp returned params_bar of shape \(3,\).*2 values"):
        net.vjp(params, cache, np.ones_like(y))
    x_bar, p_bar = net.vjp(params, cache, np.ones_like(y), need_params=False)
    assert p_bar is None and x_bar.shape == x.shape


def test_minimal_user_layer_composes(rng):
    """A layer with only n_params/forward/vjp works inside Sequential and Residual."""
    class Minimal:
        n_params = 1

        def forward(self, params, x, **context):
            return params[0] * x, x

        def vjp(self, params, cache, y_bar, need_params=True):
            return params[0] * y_bar, (np.array([(y_bar * cache).sum()]) if need_params
                                       else None)

    for net in (Sequential(Minimal(), Tanh()), Residual(Minimal())):
        assert net.param_shapes == ({"0.params": (1,)} if isinstance(net, Sequential)
                                    else {"params": (1,)})
        assert not net.analytic and not net.time_dependent and not net.needs_rng
        params = np.array([0.7])
        report = check_layer(net, rng.standard_normal((2, 3)), params=params)
        assert report.passed, str(report)
