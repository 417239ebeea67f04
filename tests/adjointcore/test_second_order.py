"""Second-order VJPs of the layers (issue 12, point 3): ``jvp_vjp``.

``jvp_vjp(params, cache, x_dot, params_dot, y_dot_bar, y_bar=None)`` is the VJP of the
tangent-lifted layer ``(x, params, t, x_dot, params_dot) -> (y, y_dot)``. Every covered layer goes
through :func:`adjointcore.gradcheck.check_jvp_vjp`, which differentiates the lifted scalar
``phi = <y_bar, y> + <g, y_dot>`` block by block (``x``, ``params``, ``t``: the second-order terms
alone; ``x_dot``, ``params_dot``; ``full``: all inputs with ``y_bar != 0``):

* central differences, <= 1e-8 relative (float64). ``phi`` contains the JVP, so the difference's
  truncation error involves the layer's third/fourth derivatives and its roundoff
  ``eps_mach |phi| / eps``: about ``eps_mach**(2/3)`` = 4e-11 times an O(1-100) conditioning
  factor (measured <= 2e-11 here), and a dropped term is an O(1) error;
* the complex step where ``layer.analytic``: <= 1e-13 (exact to roundoff; measured <= 1e-16);
* the Taylor remainder of ``phi`` along the ``full`` direction: least-squares slope
  2.00 +- 0.05 (measured within 0.03).

Mutation tests: one deliberately broken ``jvp_vjp`` per layer family (a dropped second
derivative, a dropped weight-product term, a dropped time term, a chain that forgets to propagate
the tangent, a skip connection without its identity) must fail with an O(1) figure.
"""
from __future__ import annotations

import numpy as np
import pytest

from adjointcore.errors import ParameterError, ShapeError
from adjointcore.gradcheck import check_jvp_vjp
from adjointcore.layers import (
    ELU,
    ConcatConv2d,
    ConcatLinear,
    Conv2d,
    Layer,
    LeakyReLU,
    Linear,
    Parallel,
    ReLU,
    Residual,
    Scale,
    Sequential,
    Sigmoid,
    Softplus,
    Tanh,
)
from adjointcore.layers.base import call_jvp_vjp, kernel_jvp
from adjointcore.layers.second_order import SecondOrderBars
from tests.adjointcore._examples import assert_quadratic_form_gradient

GROSS = 1e-3        # a dropped term: >= 1e5 x the FD tolerance


def _x(shape=(4, 3), seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


CASES = [
    ("Linear", lambda: Linear(3, 5), {}),
    ("Linear-nobias", lambda: Linear(3, 4, bias=False), {}),
    ("ConcatLinear", lambda: ConcatLinear(3, 5), {"t": 0.7}),
    ("Tanh", Tanh, {}),
    ("Sigmoid", Sigmoid, {}),
    ("Softplus", lambda: Softplus(beta=2.0), {}),
    ("ELU", lambda: ELU(alpha=0.7), {}),
    ("ReLU", ReLU, {}),
    ("LeakyReLU", lambda: LeakyReLU(0.1), {}),
    ("Scale", lambda: Scale(3, init_value=0.8), {}),
    ("Scale-image", lambda: Scale(2), {"shape": (2, 2, 3, 3)}),
    ("Sequential", lambda: Sequential(ConcatLinear(3, 6), Tanh(), Linear(6, 6), Softplus(),
                                      ConcatLinear(6, 3)), {"t": 0.3}),
    ("Residual", lambda: Residual(Sequential(Linear(3, 3), Sigmoid())), {}),
    ("Parallel", lambda: Sequential(Parallel(Scale(3), Linear(3, 3, bias=False)), Tanh()), {}),
    ("Parallel-timed", lambda: Parallel(ConcatLinear(3, 3), Sequential(Linear(3, 3), ELU())),
     {"t": -0.4}),
    ("Conv2d", lambda: Conv2d(2, 3, 3, padding=1), {"shape": (2, 2, 4, 4)}),
    ("Conv2d-stride2-cols", lambda: Conv2d(2, 3, 3, stride=2, cache_cols=True),
     {"shape": (2, 2, 5, 5)}),
    ("ConcatConv2d", lambda: ConcatConv2d(2, 3, 3, padding=1), {"shape": (2, 2, 4, 4),
                                                                 "t": 0.6}),
    ("ConcatConv2d-groups", lambda: ConcatConv2d(3, 4, 3, stride=2, padding=1, groups=2),
     {"shape": (2, 3, 5, 5), "t": -0.5}),
    ("conv-field", lambda: Sequential(ConcatConv2d(2, 2, 3, padding=1), Tanh(),
                                      ConcatConv2d(2, 2, 3, padding=1)),
     {"shape": (2, 2, 4, 4), "t": 0.2}),
]
IDS = [c[0] for c in CASES]


def _run(make, kwargs, seed=0, dtype=np.float64):
    kwargs = dict(kwargs)
    x = _x(kwargs.pop("shape", (4, 3)), seed).astype(dtype)
    layer = make()
    return layer, check_jvp_vjp(layer, x, seed=seed, **kwargs)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("make,kwargs", [c[1:] for c in CASES], ids=IDS)
def test_second_order_vjp_float64(make, kwargs, seed):
    layer, report = _run(make, kwargs, seed)
    assert report.passed, str(report)
    blocks = ["x", "x_dot", "full"] + (["params", "params_dot"] if layer.n_params else []) \
        + (["t"] if "t" in kwargs else [])
    for block in blocks:
        assert report.figures[f"fd_{block}"] <= 1e-8, str(report)
        if layer.analytic:
            assert report.figures[f"complex_{block}"] <= 1e-13, str(report)
    assert report.figures["taylor_slope"] <= 0.05, str(report)


@pytest.mark.parametrize("make,kwargs", [c[1:] for c in CASES], ids=IDS)
def test_second_order_vjp_float32_keeps_dtype(make, kwargs):
    _, report = _run(make, kwargs, 0, np.float32)
    assert report.passed, str(report)         # includes: every bar is float32


def test_fast_path_equals_checked_bitwise():
    layer = Sequential(ConcatLinear(3, 5), Tanh(), Linear(5, 3))
    rng = np.random.default_rng(3)
    x, xd, g, yb = (rng.standard_normal((4, 3)) for _ in range(4))
    params = layer.init(rng)
    pd = rng.standard_normal(params.shape)
    _, cache = layer.forward(params, x, t=0.2)
    a = layer.jvp_vjp(params, cache, xd, pd, g, yb)
    b = layer.apply_jvp_vjp(params, cache, xd, pd, g, yb)
    assert isinstance(a, SecondOrderBars)
    for u, v in zip(a, b, strict=True):
        assert np.array_equal(u, v)


def test_tangent_cotangents_are_the_ordinary_vjp():
    """x_dot_bar / params_dot_bar = J^T y_dot_bar, bit for bit the layer's own VJP for Linear."""
    layer = Linear(3, 4)
    rng = np.random.default_rng(4)
    x, xd = rng.standard_normal((5, 3)), rng.standard_normal((5, 3))
    g = rng.standard_normal((5, 4))
    params = layer.init(rng)
    _, cache = layer.forward(params, x)
    r = layer.jvp_vjp(params, cache, xd, None, g)
    x_bar, p_bar = layer.vjp(params, cache, g)
    assert np.array_equal(r.x_dot_bar, x_bar) and np.array_equal(r.params_dot_bar, p_bar)
    assert not r.x_bar.any()                      # no params_dot, no y_bar: Linear is flat in x


def test_vjp_of_v_J_v_matches_quadratic_form_fd():
    """d(v^T J(z) v)/dz via jvp_vjp(x_dot=v, y_dot_bar=v) against a central difference."""
    layer = Sequential(Linear(3, 7), Tanh(), Linear(7, 3))
    rng = np.random.default_rng(5)
    z, v, u = (rng.standard_normal((2, 3)) for _ in range(3))
    params = layer.init(rng)
    assert_quadratic_form_gradient(layer, params, z, v, u)


# -- mutation tests -----------------------------------------------------------------------------
class TanhNoSecond(Tanh):
    def _second_term(self, cache, q):          # tanh'' dropped
        return np.zeros_like(q)


class SigmoidNoSecond(Sigmoid):
    def _second_term(self, cache, q):
        return np.zeros_like(q)


class SoftplusNoSecond(Softplus):
    def _second_term(self, cache, q):
        return np.zeros_like(q)


class ELUNoSecond(ELU):
    def _second_term(self, cache, q):
        return np.zeros_like(q)


class LinearNoWeightProduct(Linear):
    """Drops ``W_bar += y_dot_bar^T x_dot``."""

    def apply_jvp_vjp(self, params, cache, x_dot, params_dot, y_dot_bar, y_bar=None):
        r = super().apply_jvp_vjp(params, cache, x_dot, params_dot, y_dot_bar, y_bar)
        p_bar = r.params_bar.copy()
        self._weights(p_bar)[0][...] -= y_dot_bar.T @ x_dot
        return r._replace(params_bar=p_bar)


class LinearNoInputWeightDot(Linear):
    """Drops ``x_bar += y_dot_bar @ W_dot``."""

    def apply_jvp_vjp(self, params, cache, x_dot, params_dot, y_dot_bar, y_bar=None):
        r = super().apply_jvp_vjp(params, cache, x_dot, params_dot, y_dot_bar, y_bar)
        if params_dot is None:
            return r
        return r._replace(x_bar=r.x_bar - y_dot_bar @ self._weights(params_dot)[0])


class ConcatLinearNoTimeDot(ConcatLinear):
    """Drops ``t_bar += <y_dot_bar, w_t_dot>``."""

    def apply_jvp_vjp(self, params, cache, x_dot, params_dot, y_dot_bar, y_bar=None):
        r = super().apply_jvp_vjp(params, cache, x_dot, params_dot, y_dot_bar, y_bar)
        if params_dot is None:
            return r
        return r._replace(t_bar=r.t_bar - (y_dot_bar * self._weights(params_dot)[0][:, -1]).sum())


class ConvNoWeightProduct(Conv2d):
    """Drops ``W_bar += y_dot_bar (x) cols(x_dot)``."""

    def apply_jvp_vjp(self, params, cache, x_dot, params_dot, y_dot_bar, y_bar=None):
        r = super().apply_jvp_vjp(params, cache, x_dot, params_dot, y_dot_bar, y_bar)
        _, c = self.forward(params, x_dot)
        _, wrong = self.vjp(params, c, y_dot_bar)
        wrong[self._layout[2]] = 0.0                 # keep the bias part
        return r._replace(params_bar=r.params_bar - wrong)


class ConcatConvNoTime(ConcatConv2d):
    """Drops ``t_bar`` altogether (returns 0)."""

    def apply_jvp_vjp(self, params, cache, x_dot, params_dot, y_dot_bar, y_bar=None):
        r = super().apply_jvp_vjp(params, cache, x_dot, params_dot, y_dot_bar, y_bar)
        return r._replace(t_bar=0.0 * r.t_bar)


class ScaleNoWeightDot(Scale):
    """Drops ``x_bar += y_dot_bar * w_dot``."""

    def apply_jvp_vjp(self, params, cache, x_dot, params_dot, y_dot_bar, y_bar=None):
        r = super().apply_jvp_vjp(params, cache, x_dot, params_dot, y_dot_bar, y_bar)
        if params_dot is None:
            return r
        return r._replace(x_bar=r.x_bar - y_dot_bar * self._weight(params_dot, y_dot_bar.ndim))


class SequentialStaleTangent(Sequential):
    """Hands every child the input tangent instead of the propagated one."""

    def apply_jvp_vjp(self, params, cache, x_dot, params_dot, y_dot_bar, y_bar=None):
        g, yb = y_dot_bar, y_bar
        pb, pdb = [], []
        for i in range(len(self.layers) - 1, -1, -1):
            sl = self._slices[i]
            tangent = x_dot if x_dot.shape[1] == self.layers[i].in_features \
                else kernel_jvp(self._kernels[0], params[self._slices[0]], cache[0], x_dot,
                                None)
            r = call_jvp_vjp(self._kernels[i], params[sl], cache[i], tangent,
                             None if params_dot is None else params_dot[sl], g, yb)
            yb, g = r.x_bar, r.x_dot_bar
            pb.insert(0, r.params_bar)
            pdb.insert(0, r.params_dot_bar)
        return SecondOrderBars(yb, np.concatenate(pb), g, np.concatenate(pdb), None)


class ResidualNoIdentity(Residual):
    """Drops ``x_dot_bar += y_dot_bar`` (the identity's tangent)."""

    def apply_jvp_vjp(self, params, cache, x_dot, params_dot, y_dot_bar, y_bar=None):
        r = super().apply_jvp_vjp(params, cache, x_dot, params_dot, y_dot_bar, y_bar)
        return r._replace(x_dot_bar=r.x_dot_bar - y_dot_bar)


class ParallelFirstBranchOnly(Parallel):
    """Forgets the second-order ``x_bar`` of every branch but the first."""

    def apply_jvp_vjp(self, params, cache, x_dot, params_dot, y_dot_bar, y_bar=None):
        r = super().apply_jvp_vjp(params, cache, x_dot, params_dot, y_dot_bar, y_bar)
        sl = self._slices[0]
        first = call_jvp_vjp(self._kernels[0], params[sl], cache.branches[0], x_dot,
                             None if params_dot is None else params_dot[sl], y_dot_bar, y_bar)
        return r._replace(x_bar=first.x_bar)


class _Tanh2(Tanh):
    """Tanh with an ``in_features`` attribute so the stale chain hands it the input tangent
    (the true one is ``x_dot @ W.T``)."""

    in_features = 3


MUTANTS = [
    ("tanh''-dropped", TanhNoSecond, {}),
    ("sigmoid''-dropped", SigmoidNoSecond, {}),
    ("softplus''-dropped", lambda: SoftplusNoSecond(beta=1.5), {}),
    ("elu''-dropped", lambda: ELUNoSecond(alpha=1.3), {"shape": (4, 3), "shift": -0.5}),
    ("linear-W_bar-weight-product", lambda: LinearNoWeightProduct(3, 4), {}),
    ("linear-x_bar-weight-product", lambda: LinearNoInputWeightDot(3, 4), {}),
    ("concatlinear-t-term", lambda: ConcatLinearNoTimeDot(3, 4), {"t": 0.5}),
    ("scale-weight-dot", lambda: ScaleNoWeightDot(3), {}),
    ("conv-weight-product", lambda: ConvNoWeightProduct(2, 3, 3, padding=1),
     {"shape": (2, 2, 4, 4)}),
    ("concatconv-t-term", lambda: ConcatConvNoTime(2, 3, 3, padding=1),
     {"shape": (2, 2, 4, 4), "t": 0.5}),
    ("sequential-stale-tangent", lambda: SequentialStaleTangent(Linear(3, 3), _Tanh2()), {}),
    ("residual-no-identity", lambda: ResidualNoIdentity(Sequential(Linear(3, 3), Tanh())), {}),
    ("parallel-first-branch-only",
     lambda: ParallelFirstBranchOnly(Linear(3, 3), Sequential(Linear(3, 3), Tanh())), {}),
]


@pytest.mark.parametrize("make,kwargs", [m[1:] for m in MUTANTS], ids=[m[0] for m in MUTANTS])
def test_mutations_are_caught(make, kwargs):
    kwargs = dict(kwargs)
    x = _x(kwargs.pop("shape", (4, 3)), 2) + kwargs.pop("shift", 0.0)
    report = check_jvp_vjp(make(), x, seed=2, checks=("fd",), **kwargs)
    assert not report.passed, str(report)
    assert max(report.figures.values()) > GROSS, str(report)


# -- protocol -----------------------------------------------------------------------------------
class FirstOrderOnly(Layer):
    """A user layer (``y = 2 x``) with forward, VJP and JVP but no second-order VJP (every
    built-in layer has one)."""

    def forward(self, params, x, **context):
        return 2 * x, None

    def vjp(self, params, cache, y_bar, need_params=True):
        return 2 * y_bar, np.zeros(0)

    def jvp(self, params, cache, x_dot, params_dot=None):
        return 2 * x_dot


def test_missing_second_order_raises_naming_the_child():
    layer = Sequential(Linear(4, 4), FirstOrderOnly())
    params = layer.init(np.random.default_rng(0))
    with pytest.raises(NotImplementedError, match=r"layers\[1\] \(FirstOrderOnly\)"):
        layer.apply_jvp_vjp(params, (None, None), np.zeros((2, 4)), None, np.zeros((2, 4)))
    user = FirstOrderOnly()
    x = np.zeros((1, 4))
    _, cache = user.forward(None, x)
    with pytest.raises(NotImplementedError, match="FirstOrderOnly has no second-order"):
        user.jvp_vjp(None, cache, x, None, np.zeros((1, 4)))
    with pytest.raises(NotImplementedError, match="FirstOrderOnly has no second-order"):
        user.apply_jvp_vjp(None, cache, x, None, np.zeros((1, 4)))


def test_checked_jvp_vjp_rejects_bad_shapes():
    layer = Linear(3, 2)
    rng = np.random.default_rng(0)
    params = layer.init(rng)
    x = rng.standard_normal((4, 3))
    _, cache = layer.forward(params, x)
    with pytest.raises(ShapeError, match="y_dot_bar"):
        layer.jvp_vjp(params, cache, x, None, np.zeros((4, 3)))
    with pytest.raises(ParameterError, match="params_dot"):
        layer.jvp_vjp(params, cache, x, np.zeros(3), np.zeros((4, 2)))
    with pytest.raises(ShapeError, match="y_bar"):
        layer.jvp_vjp(params, cache, x, None, np.zeros((4, 2)), np.zeros((4, 1)))
