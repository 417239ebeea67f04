"""Forward mode of the layers (issue 12, point 1): ``jvp(params, cache, x_dot, params_dot=None)``.

Every example of ``gradcheck.catalog.builtin_examples`` (hence every built-in layer class, checked
below) goes through :func:`adjointcore.gradcheck.check_jvp`:

* central differences of the forward along ``(x_dot, params_dot)`` vs ``jvp``: <= 1e-8 relative
  in float64 (the difference itself is accurate to ~eps_mach**(2/3) = 4e-11 times the layer's
  conditioning; measured <= 5e-10);
* the adjoint identity ``<J v, w> = <v, J^T w>`` against the layer's own VJP, for ``x``, the
  parameters and both jointly: <= 1e-12;
* the complex step where ``layer.analytic``: <= 1e-13;
* float32: passes the float32 tolerances and keeps the dtype.

A mutation suite (one or more deliberately broken ``jvp`` per layer family) must be caught, the
fast path ``apply_jvp`` must equal the checked ``jvp`` bit for bit, and bad arguments raise our
own exceptions naming the argument. ``LayerField.jvp`` is checked the same way.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

from adjointcore import layers as layers_module
from adjointcore.errors import ParameterError, ShapeError
from adjointcore.fields import LayerField
from adjointcore.gradcheck import (
    JVP_CHECKS,
    central_difference,
    check_jvp,
    complex_step,
    default_jvp_tolerances,
    dot_product_test,
    relative_error,
)
from adjointcore.gradcheck.catalog import builtin_examples
from adjointcore.layers import (
    ELU,
    AvgPool2d,
    BatchNorm,
    ChannelUnpad,
    ConcatConv2d,
    ConcatLinear,
    Conv2d,
    Dropout,
    Flatten,
    GroupNorm,
    Layer,
    Linear,
    MaxPool2d,
    Parallel,
    ReLU,
    Residual,
    Scale,
    Sequential,
    Sigmoid,
    Softplus,
    Tanh,
)
from adjointcore.layers._affine_norm import _channel
from adjointcore.layers.activation import tanh_derivative
from adjointcore.layers.second_order import tangent_sum
from tests.adjointcore._examples import forward_fresh, split_example

EXAMPLES = builtin_examples(np.random.default_rng(0))
IDS = [e[0] for e in EXAMPLES]
SEEDS = [0, 1]
GROSS = 1e-3          # a dropped term is an O(1) error: 1e5 x the FD tolerance


# -- every catalog layer ------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("example", EXAMPLES, ids=IDS)
def test_catalog_jvp_float64(example, seed):
    layer, x, params, kwargs = split_example(example)
    report = check_jvp(layer, x, params=params, seed=seed, **kwargs)
    assert report.passed, str(report)
    blocks = ["x"] + (["params", "joint"] if params.size else [])
    for block in blocks:
        assert report.figures[f"fd_{block}"] <= 1e-8, str(report)
        assert report.figures[f"dot_{block}"] <= 1e-12, str(report)
        if layer.analytic:
            assert report.figures[f"complex_{block}"] <= 1e-13, str(report)
    if not layer.analytic:
        assert "complex" in report.skipped


@pytest.mark.parametrize("example", EXAMPLES, ids=IDS)
def test_catalog_jvp_float32_keeps_dtype(example):
    layer, x, params, kwargs = split_example(example, np.float32)
    report = check_jvp(layer, x, params=params, **kwargs)   # a float64 y_dot is a failure
    assert report.passed, str(report)
    y, cache = forward_fresh(layer, params, x, kwargs)
    rng = np.random.default_rng(4)
    x_dot = rng.standard_normal(x.shape).astype(np.float32)
    p_dot = rng.standard_normal(params.shape).astype(np.float32) if params.size else None
    y_dot = layer.jvp(params, cache, x_dot, p_dot)
    assert y_dot.dtype == np.float32 and y.dtype == np.float32
    y64, c64 = forward_fresh(layer, params.astype(np.float64), x.astype(np.float64), kwargs)
    ref = layer.jvp(params.astype(np.float64), c64, x_dot.astype(np.float64),
                    None if p_dot is None else p_dot.astype(np.float64))
    assert relative_error(y_dot, ref) <= 1e-5


def _classes(layer):
    """Classes of ``layer`` and of every child (composites, Residual)."""
    out = {type(layer)}
    for child in getattr(layer, "_children", ()) or ():
        out |= _classes(child)
    if hasattr(layer, "inner"):
        out |= _classes(layer.inner)
    return out


def test_catalog_covers_every_builtin_layer_class():
    """The catalog-driven tests above reach every exported layer class (so each has a checked
    jvp), and every built-in class overrides the base ``jvp``."""
    covered = set().union(*(_classes(e[1]) for e in EXAMPLES))
    exported = {getattr(layers_module, n) for n in layers_module.__all__}
    builtin = {c for c in exported if isinstance(c, type) and issubclass(c, Layer)} \
        - {Layer, layers_module.ParameterFree}
    assert builtin - covered == set()
    for cls in builtin:
        assert cls.jvp is not Layer.jvp and cls.apply_jvp is not Layer.apply_jvp, cls


@pytest.mark.parametrize("example", EXAMPLES, ids=IDS)
def test_apply_jvp_equals_checked_jvp_bitwise(example):
    layer, x, params, kwargs = split_example(example)
    _, cache = forward_fresh(layer, params, x, kwargs)
    rng = np.random.default_rng(5)
    x_dot = rng.standard_normal(x.shape)
    p_dot = rng.standard_normal(params.shape) if params.size else None
    for pd in (None, p_dot):
        assert np.array_equal(layer.apply_jvp(params, cache, x_dot, pd),
                              layer.jvp(params, cache, x_dot, pd))
    # the taped fast forward's cache serves the jvp as well
    _, fast_cache = layer.apply(params, x, kwargs.get("t"), copy.deepcopy(kwargs.get("rng")))
    assert np.array_equal(layer.apply_jvp(params, fast_cache, x_dot, p_dot),
                          layer.jvp(params, cache, x_dot, p_dot))


@pytest.mark.parametrize("example", EXAMPLES, ids=IDS)
def test_zero_params_dot_is_the_none_path(example):
    """``params_dot=None`` means a zero parameter tangent (same values, bit for bit)."""
    layer, x, params, kwargs = split_example(example)
    if not params.size:
        pytest.skip("no parameters")
    _, cache = forward_fresh(layer, params, x, kwargs)
    x_dot = np.random.default_rng(6).standard_normal(x.shape)
    x_keep = x_dot.copy()
    assert np.array_equal(layer.jvp(params, cache, x_dot, np.zeros_like(params)),
                          layer.jvp(params, cache, x_dot))
    assert np.array_equal(x_dot, x_keep)


# -- mutation suite -----------------------------------------------------------------------------
class LinearNoWeightTangent(Linear):
    """Drops ``x @ W_dot.T`` (keeps the bias tangent)."""

    def jvp(self, params, cache, x_dot, params_dot=None):
        y_dot = super().jvp(params, cache, x_dot, None)
        if params_dot is not None:
            y_dot = y_dot + self.views(params_dot)["bias"]
        return y_dot


class ConcatLinearNoTimeColumn(ConcatLinear):
    """Drops ``t W_dot[:, -1]``."""

    def jvp(self, params, cache, x_dot, params_dot=None):
        if params_dot is not None:
            params_dot = params_dot.copy()
            self.views(params_dot)["weight"][:, -1] = 0.0
        return super().jvp(params, cache, x_dot, params_dot)


class ConvWeightTangentOnXDot(Conv2d):
    """The weight tangent convolved with ``x_dot`` instead of ``x`` (a classic bilinear slip)."""

    def jvp(self, params, cache, x_dot, params_dot=None):
        y_dot = super().jvp(params, cache, x_dot, None)
        if params_dot is not None:
            y_dot = y_dot + super().forward(params_dot, x_dot)[0]
        return y_dot


class ConcatConvTimeTangent(ConcatConv2d):
    """Treats ``t`` as varying with the state: adds the time column's response to ``t_dot = 1``."""

    def jvp(self, params, cache, x_dot, params_dot=None):
        y_dot = super().jvp(params, cache, x_dot, params_dot)
        w = self.views(params)["weight"]
        return y_dot + w[:, -1].sum(axis=(1, 2))[None, :, None, None]


class TanhWrongDerivative(Tanh):
    """``1 - x**2`` instead of ``1 - tanh(x)**2``."""

    def jvp(self, params, cache, x_dot, params_dot=None):
        return x_dot * (1 - cache.x * cache.x)


class SigmoidMissingFactor(Sigmoid):
    """``y`` instead of ``y (1 - y)``."""

    def jvp(self, params, cache, x_dot, params_dot=None):
        return x_dot * cache.y


class SoftplusBetaTwice(Softplus):
    """Multiplies by ``beta`` (chain rule applied once too often)."""

    def jvp(self, params, cache, x_dot, params_dot=None):
        return self.beta * super().jvp(params, cache, x_dot, params_dot)


class ReLUNoMask(ReLU):
    """Passes the tangent everywhere."""

    def jvp(self, params, cache, x_dot, params_dot=None):
        return x_dot.copy()


class ELUUnitSlope(ELU):
    """Slope 1 on the negative side."""

    def jvp(self, params, cache, x_dot, params_dot=None):
        return x_dot.copy()


class GroupNormNoMeanTerm(GroupNorm):
    """The derivative of the group mean dropped: ``u = x_dot`` instead of centred."""

    def jvp(self, params, cache, x_dot, params_dot=None):
        w = self.views(params)["weight"]
        xd, xh = self._grouped(x_dot), self._grouped(cache.xhat)
        axes = tuple(range(2, xd.ndim))
        xhat_dot = cache.inv_std * (xd - xh * (xh * xd).mean(axis=axes, keepdims=True))
        return xhat_dot.reshape(x_dot.shape) * _channel(w, x_dot.ndim)


class GroupNormNoAffineTangent(GroupNorm):
    """``weight_dot * xhat`` dropped (bias tangent kept)."""

    def jvp(self, params, cache, x_dot, params_dot=None):
        y_dot = super().jvp(params, cache, x_dot, None)
        if params_dot is not None:
            y_dot = y_dot + _channel(params_dot[self.num_channels:], x_dot.ndim)
        return y_dot


class BatchNormNoVarianceTerm(BatchNorm):
    """The derivative of ``inv_std`` dropped: ``xhat_dot = inv_std (x_dot - mean(x_dot))``."""

    def jvp(self, params, cache, x_dot, params_dot=None):
        axes = (0,) + tuple(range(2, x_dot.ndim))
        u = x_dot - x_dot.mean(axis=axes, keepdims=True)
        w = self.views(params)["weight"]
        return u * _channel(cache.inv_std * w, x_dot.ndim)


class ScaleNoWeightTangent(Scale):
    """``x * w_dot`` dropped."""

    def jvp(self, params, cache, x_dot, params_dot=None):
        return super().jvp(params, cache, x_dot, None)


class MaxPoolFirstElement(MaxPool2d):
    """Routes the tangent of every window's first element, not of its maximum."""

    def jvp(self, params, cache, x_dot, params_dot=None):
        cache = cache._replace(argmax=np.zeros_like(cache.argmax))
        return super().jvp(params, cache, x_dot, params_dot)


class AvgPoolNoDivisor(AvgPool2d):
    """Window sums instead of means."""

    def jvp(self, params, cache, x_dot, params_dot=None):
        return super().jvp(params, cache, x_dot, params_dot) * float(np.prod(self.kernel_size))


class FlattenTransposed(Flatten):
    """Flattens the spatial axes in the wrong order."""

    def jvp(self, params, cache, x_dot, params_dot=None):
        return x_dot.transpose(0, 1, 3, 2).reshape(x_dot.shape[0], -1)


class UnpadFront(ChannelUnpad):
    """Drops the first channels instead of the last."""

    def jvp(self, params, cache, x_dot, params_dot=None):
        return x_dot[:, self.extra:].copy()


class DropoutNoMask(Dropout):
    """Ignores the cached mask."""

    def jvp(self, params, cache, x_dot, params_dot=None):
        return x_dot.copy()


class SequentialSkipsParams(Sequential):
    """Child ``skip`` receives no parameter tangent."""

    def __init__(self, *layers, skip=0):
        super().__init__(*layers)
        self.skip = skip

    def jvp(self, params, cache, x_dot, params_dot=None):
        for i, (child, sl) in enumerate(zip(self.layers, self._slices, strict=True)):
            pd = None if params_dot is None or i == self.skip or sl.start == sl.stop \
                else params_dot[sl]
            x_dot = child.jvp(params[sl], cache[i], x_dot, pd)
        return x_dot


class ResidualNoSkip(Residual):
    """Forgets the identity term ``x_dot``."""

    def jvp(self, params, cache, x_dot, params_dot=None):
        return self.inner.jvp(params, cache.inner, x_dot, params_dot)


class ParallelFirstBranchOnly(Parallel):
    """Only the first branch's tangent."""

    def jvp(self, params, cache, x_dot, params_dot=None):
        sl = self._slices[0]
        return self.branches[0].jvp(params[sl], cache.branches[0], x_dot,
                                    None if params_dot is None else params_dot[sl])


def _dense(seed, shape=(3, 4)):
    return np.random.default_rng(seed).uniform(-1.5, 1.5, shape)


def _image(seed, shape=(2, 2, 5, 4)):
    return np.random.default_rng(seed).uniform(-1.5, 1.5, shape)


def _kinked(seed):
    x = _dense(seed, (2, 3, 4))
    return np.where(x >= 0, x + 0.05, x - 0.05)


def _distinct(seed, shape):
    rng = np.random.default_rng(seed)
    return rng.permutation(np.arange(np.prod(shape)) * 0.1).reshape(shape) \
        + rng.uniform(0, 0.02, shape)


def _perturbed(layer, seed):
    rng = np.random.default_rng(seed)
    p = layer.init(rng)
    return p + 0.3 * rng.standard_normal(p.shape)


# (id, make layer, make x, extra kwargs, figures that must see the bug)
MUTANTS = [
    ("linear: dropped x @ W_dot.T", lambda: LinearNoWeightTangent(4, 3), _dense, {},
     ["fd_params", "complex_params", "dot_params", "fd_joint"]),
    ("concat-linear: dropped t W_dot[:, -1]", lambda: ConcatLinearNoTimeColumn(4, 3), _dense,
     {"t": 0.8}, ["fd_params", "complex_params", "dot_params"]),
    ("conv: weight tangent on x_dot", lambda: ConvWeightTangentOnXDot(2, 3, 3, padding=1),
     _image, {}, ["fd_params", "complex_params", "dot_params", "fd_joint"]),
    ("concat-conv: time given a tangent", lambda: ConcatConvTimeTangent(2, 3, 3, padding=1),
     _image, {"t": 0.4}, ["fd_x", "complex_x", "dot_x"]),
    ("tanh: 1 - x**2", TanhWrongDerivative, lambda s: _dense(s, (2, 3, 4)), {},
     ["fd_x", "complex_x", "dot_x"]),
    ("sigmoid: missing 1 - y", SigmoidMissingFactor, lambda s: _dense(s, (2, 3, 4)), {},
     ["fd_x", "complex_x", "dot_x"]),
    ("softplus: beta twice", lambda: SoftplusBetaTwice(2.0), lambda s: _dense(s, (2, 3, 4)), {},
     ["fd_x", "complex_x", "dot_x"]),
    ("relu: no mask", ReLUNoMask, _kinked, {}, ["fd_x", "dot_x"]),
    ("elu: unit slope", lambda: ELUUnitSlope(0.7), _kinked, {}, ["fd_x", "complex_x", "dot_x"]),
    ("groupnorm: mean term dropped", lambda: GroupNormNoMeanTerm(2, 4),
     lambda s: _distinct(s, (2, 4, 3, 2)), {}, ["fd_x", "complex_x", "dot_x"]),
    ("groupnorm: weight tangent dropped", lambda: GroupNormNoAffineTangent(2, 4),
     lambda s: _distinct(s, (2, 4, 3, 2)), {}, ["fd_params", "complex_params", "dot_params"]),
    ("batchnorm: variance term dropped", lambda: BatchNormNoVarianceTerm(2),
     lambda s: _distinct(s, (4, 2)), {}, ["fd_x", "complex_x", "dot_x"]),
    ("scale: weight tangent dropped", lambda: ScaleNoWeightTangent(4), _dense, {},
     ["fd_params", "complex_params", "dot_params"]),
    ("maxpool: first element", lambda: MaxPoolFirstElement(2),
     lambda s: _distinct(s, (2, 2, 4, 4)), {}, ["fd_x", "dot_x"]),
    ("avgpool: no divisor", lambda: AvgPoolNoDivisor(2), _image, {},
     ["fd_x", "complex_x", "dot_x"]),
    ("flatten: wrong order", FlattenTransposed, _image, {}, ["fd_x", "complex_x", "dot_x"]),
    ("channel-unpad: wrong channels", lambda: UnpadFront(1), _image, {},
     ["fd_x", "complex_x", "dot_x"]),
    ("dropout: mask ignored", lambda: DropoutNoMask(0.4), _image,
     {"rng": np.random.default_rng(3)}, ["fd_x", "complex_x", "dot_x"]),
    ("sequential: skips a child's params_dot",
     lambda: SequentialSkipsParams(Linear(4, 6), Tanh(), Linear(6, 2), skip=0), _dense, {},
     ["fd_params", "complex_params", "dot_params", "fd_joint"]),
    ("sequential: skips the last child's params_dot",
     lambda: SequentialSkipsParams(ConcatLinear(4, 6), Tanh(), ConcatLinear(6, 2), skip=2),
     _dense, {"t": 0.3}, ["fd_params", "complex_params", "dot_params"]),
    ("sequential: broken child (tanh)",
     lambda: Sequential(Linear(4, 6), TanhWrongDerivative(), Linear(6, 2)), _dense, {},
     ["fd_x", "complex_x", "dot_x", "fd_params"]),
    ("residual: skip term dropped",
     lambda: ResidualNoSkip(Sequential(Conv2d(2, 2, 3, padding=1), Tanh())), _image, {},
     ["fd_x", "complex_x", "dot_x"]),
    ("parallel: first branch only",
     lambda: ParallelFirstBranchOnly(Scale(4), Linear(4, 4, bias=False)), _dense, {},
     ["fd_x", "complex_x", "dot_x", "fd_params"]),
]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mutant", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_mutant_jvp_is_caught(mutant, seed):
    _, make, make_x, kwargs, figures = mutant
    layer = make()
    params = _perturbed(layer, seed) if layer.n_params else None
    report = check_jvp(layer, make_x(seed), params=params, seed=seed, **kwargs)
    assert report.passed is False, str(report)
    for name in figures:
        assert report.figures[name] > GROSS, str(report)


# -- duck-typed layers, protocol violations, errors ---------------------------------------------
class UserCube:
    """A duck-typed user layer ``y = a * x**3`` (one parameter) with forward, vjp and jvp."""

    n_params = 1
    analytic = True

    def init(self, rng, dtype=np.float64):
        return np.array([0.7], dtype=dtype)

    def forward(self, params, x):
        return params[0] * x ** 3, (x,)

    def vjp(self, params, cache, y_bar):
        (x,) = cache
        return 3 * params[0] * x ** 2 * y_bar, np.array([np.sum(y_bar * x ** 3)])

    def jvp(self, params, cache, x_dot, params_dot=None):
        (x,) = cache
        y_dot = 3 * params[0] * x ** 2 * x_dot
        return y_dot if params_dot is None else y_dot + params_dot[0] * x ** 3


class UserNoJvp:
    n_params = 0

    def forward(self, params, x):
        return 2 * x, None

    def vjp(self, params, cache, y_bar):
        return 2 * y_bar, np.zeros(0)


def test_user_layer_jvp_checked_alone_and_inside_composites():
    x = _dense(0)
    assert check_jvp(UserCube(), x).passed
    net = Sequential(Linear(4, 4), UserCube(), Tanh())
    assert check_jvp(net, x, params=_perturbed(net, 0)).passed
    assert check_jvp(Residual(net), x, params=_perturbed(net, 1)).passed
    assert check_jvp(Parallel(UserCube(), Scale(4)), x).passed


def test_layer_without_jvp_is_named():
    net = Sequential(Linear(4, 4), UserNoJvp())
    params = net.init(np.random.default_rng(0))
    x = _dense(0)
    _, cache = net.forward(params, x)
    for call in (net.jvp, net.apply_jvp):
        with pytest.raises(NotImplementedError, match=r"layers\[1\] \(UserNoJvp\) has no "
                                                      r"forward-mode jvp"):
            call(params, cache, x)

    class Bare(Layer):
        def forward(self, params, x, **context):
            return x, None

        def vjp(self, params, cache, y_bar, need_params=True):
            return y_bar, np.zeros(0)

    with pytest.raises(NotImplementedError, match="Bare has no forward-mode jvp"):
        Bare().jvp(np.zeros(0), None, x)
    with pytest.raises(NotImplementedError, match="Bare has no forward-mode jvp"):
        Bare().apply_jvp(np.zeros(0), None, x)
    net = Sequential(Tanh(), Bare())           # a Layer subclass keeping the base default
    _, cache = net.forward(np.zeros(0), x)
    for call in (net.jvp, net.apply_jvp):
        with pytest.raises(NotImplementedError, match=r"layers\[1\] \(Bare\) has no"):
            call(np.zeros(0), cache, x)


@pytest.mark.parametrize("example", EXAMPLES, ids=IDS)
def test_wrong_tangent_shapes_are_named(example):
    layer, x, params, kwargs = split_example(example)
    _, cache = forward_fresh(layer, params, x, kwargs)
    if not (isinstance(layer, Dropout) and cache.mask is None):   # eval dropout: any shape
        with pytest.raises(ShapeError, match="`x_dot`"):
            layer.jvp(params, cache, np.zeros((7,) + x.shape))
    with pytest.raises(ParameterError, match="`params_dot`"):
        layer.jvp(params, cache, np.zeros_like(x), np.zeros(params.size + 1))
    with pytest.raises(TypeError, match="`x_dot`"):
        layer.jvp(params, cache, x.tolist())


def test_composite_cache_errors_are_named():
    seq, res = Sequential(Linear(4, 4), Tanh()), Residual(Linear(4, 4))
    par = Parallel(Scale(4), Linear(4, 4))
    x = _dense(0)
    for layer in (seq, res, par):
        params = layer.init(np.random.default_rng(0))
        with pytest.raises(TypeError, match="`cache` must be"):
            layer.jvp(params, ("not", "a", "cache"), x)
        _, cache = layer.forward(params, x)
        with pytest.raises(ParameterError, match="`params_dot`"):
            layer.jvp(params, cache, x, np.zeros(3))


def test_residual_inner_changing_shape_is_named():
    class Widen(UserCube):
        def jvp(self, params, cache, x_dot, params_dot=None):
            return np.zeros((x_dot.shape[0], 9))

    layer = Residual(Widen())
    params = layer.init(np.random.default_rng(0))
    x = _dense(0)
    _, cache = layer.forward(params, x)
    with pytest.raises(ShapeError, match="preserve the shape"):
        layer.jvp(params, cache, x)


class WrongShapeJvp(UserCube):
    def jvp(self, params, cache, x_dot, params_dot=None):
        return super().jvp(params, cache, x_dot, params_dot)[:, :-1]


class Float64Jvp(UserCube):
    def jvp(self, params, cache, x_dot, params_dot=None):
        return super().jvp(params, cache, x_dot, params_dot).astype(np.float64)


class InPlaceJvp(UserCube):
    def jvp(self, params, cache, x_dot, params_dot=None):
        y_dot = super().jvp(params, cache, x_dot, params_dot)
        x_dot *= 0.0
        return y_dot


@pytest.mark.parametrize("layer, dtype, match", [
    (WrongShapeJvp(), np.float64, "expected an array of shape"),
    (Float64Jvp(), np.float32, "expected the forward output's dtype float32"),
    (InPlaceJvp(), np.float64, "modified its argument x_dot in place"),
])
def test_check_jvp_reports_protocol_violations(layer, dtype, match):
    report = check_jvp(layer, _dense(0).astype(dtype))
    assert report.passed is False and not report.figures
    assert any(match in f for f in report.failures), str(report)


def test_check_jvp_argument_errors():
    x = _dense(0)
    with pytest.raises(TypeError, match="lacks `jvp`"):
        check_jvp(UserNoJvp(), x, params=np.zeros(0))
    with pytest.raises(ValueError, match="unknown entries"):
        check_jvp(Linear(4, 3), x, checks=["taylor"])
    with pytest.raises(ValueError, match="did you mean 'dot'"):
        check_jvp(Linear(4, 3), x, tol={"dott": 1e-9})
    with pytest.raises(ValueError, match=r"`tol\['fd'\]` must be a positive"):
        check_jvp(Linear(4, 3), x, tol={"fd": -1})
    with pytest.raises(ValueError, match="time-dependent"):
        check_jvp(ConcatLinear(4, 3), x)
    report = check_jvp(Linear(4, 3), x, checks=["dot"])
    assert set(report.figures) == {"dot_x", "dot_params", "dot_joint"}
    assert set(JVP_CHECKS) == {"fd", "complex", "dot"}
    assert default_jvp_tolerances(np.float64) == {"fd": 1e-8, "complex": 1e-13, "dot": 1e-12}
    assert "jvp" in str(report) and "PASS" in str(report)


def test_tangent_sum_never_widens_in_place():
    a32 = np.ones(3, np.float32)
    out = tangent_sum(a32, np.ones(3, np.float64))
    assert out.dtype == np.float64 and np.all(a32 == 1)
    a = np.ones((2, 3))
    assert tangent_sum(a, np.ones(3)) is a and np.all(a == 2)


def test_tanh_jvp_uses_the_accurate_derivative():
    """At x = 8 ``1 - tanh**2`` would lose every digit; the jvp keeps full relative accuracy."""
    x = np.array([[8.0, -12.0, 0.3]])
    _, cache = Tanh().forward(None, x)
    y_dot = Tanh().jvp(None, cache, np.ones_like(x))
    exact = 1 / np.cosh(x) ** 2
    assert np.max(np.abs(y_dot / exact - 1)) < 1e-14
    assert np.array_equal(y_dot, tanh_derivative(x))


# -- LayerField.jvp ------------------------------------------------------------------------------
FIELDS = [
    ("mlp", lambda: Sequential(Linear(3, 7), Tanh(), Linear(7, 3)), (5, 3), None),
    ("timed", lambda: Sequential(ConcatLinear(3, 6), Softplus(), ConcatLinear(6, 3)), (4, 3),
     0.37),
    ("conv", lambda: Sequential(ConcatConv2d(2, 4, 3, padding=1), GroupNorm(2, 4), Tanh(),
                                Conv2d(4, 2, 3, padding=1)), (2, 2, 5, 4), -0.2),
    ("anodev2 activation", lambda: Sequential(Parallel(Scale(3), Linear(3, 3, bias=False)),
                                              Tanh()), (4, 3), None),
]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("spec", FIELDS, ids=[f[0] for f in FIELDS])
def test_layer_field_jvp(spec, dtype):
    _, make, shape, t = spec
    layer = make()
    field = LayerField(layer)
    rng = np.random.default_rng(8)
    params = _perturbed(layer, 8).astype(dtype)
    y = rng.uniform(-1, 1, shape).astype(dtype)
    t = 0.0 if t is None else t
    y_dot = rng.standard_normal(shape).astype(dtype)
    p_dot = rng.standard_normal(params.shape).astype(dtype)
    w = rng.standard_normal(shape).astype(dtype)
    dy, cache = field.forward(t, y, params)
    dy_dot = field.jvp(cache, y_dot, p_dot)
    assert dy_dot.dtype == dtype and dy_dot.shape == dy.shape
    assert np.array_equal(dy_dot, field.jvp(field.forward_unchecked(t, y, params)[1], y_dot,
                                            p_dot))
    y_bar, p_bar, _ = field.vjp(cache, w)
    state_only = field.jvp(cache, y_dot)
    if dtype == np.float32:
        ref = LayerField(layer).jvp(field.forward(t, y.astype(np.float64),
                                                  params.astype(np.float64))[1],
                                    y_dot.astype(np.float64), p_dot.astype(np.float64))
        assert relative_error(dy_dot, ref) <= 1e-5
        assert dot_product_test(state_only, y_bar, y_dot, w) <= 1e-5
        return
    n = y.size
    z = np.concatenate([y.ravel(), params])
    v = np.concatenate([y_dot.ravel(), p_dot])

    def f(q):
        return field.forward(t, q[:n].reshape(shape), q[n:])[0]

    assert relative_error(dy_dot, central_difference(f, z, v)) <= 1e-8
    assert relative_error(dy_dot, complex_step(f, z, v)) <= 1e-13
    assert dot_product_test(state_only, y_bar, y_dot, w) <= 1e-12
    assert dot_product_test(dy_dot, np.concatenate([y_bar.ravel(), p_bar]), v, w) <= 1e-12


def test_layer_field_jvp_errors():
    field = LayerField(Sequential(Linear(3, 3), Tanh()))
    params = field.layer.init(np.random.default_rng(0))
    y = np.ones((2, 3))
    _, cache = field.forward(0.0, y, params)
    with pytest.raises(TypeError, match="LayerFieldCache"):
        field.jvp(cache.layer_cache, y)
    with pytest.raises(ShapeError, match="`x_dot`"):
        field.jvp(cache, np.ones((2, 4)))
    with pytest.raises(ParameterError, match="`params_dot`"):
        field.jvp(cache, y, np.ones(2))
    no_jvp = LayerField(Sequential(Linear(3, 3), UserNoJvp()))
    _, cache = no_jvp.forward(0.0, y, no_jvp.layer.init(np.random.default_rng(0)))
    with pytest.raises(NotImplementedError, match=r"layers\[1\]"):
        no_jvp.jvp(cache, y)


# -- GPU (CuPy) ----------------------------------------------------------------------------------
GPU_EXAMPLES = EXAMPLES


@pytest.mark.parametrize("example", GPU_EXAMPLES, ids=[e[0] for e in GPU_EXAMPLES])
def test_catalog_jvp_on_backend(example, xp):
    """The same checks on the array module under test (CuPy on a GPU machine)."""
    layer, x, params, kwargs = split_example(example)
    report = check_jvp(layer, xp.asarray(x), params=xp.asarray(params), **kwargs)
    assert report.passed, str(report)
