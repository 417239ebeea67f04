"""Second-order VJPs (issue 12, point 3) of the norm, pool, shape and dropout layers, and the
catalog-wide coverage of ``jvp_vjp``.

Every example of ``gradcheck.catalog.builtin_examples`` (hence every built-in layer class, checked
below) goes through :func:`adjointcore.gradcheck.check_jvp_vjp`, which differentiates the lifted
scalar ``phi = <y_bar, y> + <g, y_dot>`` in blocks ``x``, ``params``, ``t``, ``x_dot``,
``params_dot`` and ``full``:

* central differences, <= 1e-8 relative (float64). The truncation error ``h**2 |phi'''|`` and the
  roundoff ``eps_mach |phi| / h`` balance at ``h ~ eps_mach**(1/3)``, giving about
  ``eps_mach**(2/3)`` = 4e-11 times the conditioning of ``phi`` (its third derivative against
  its first: O(1-100) for a normalisation whose variance is O(0.1-1)). Measured: <= 6e-11
  (BatchNorm, dense, 4 samples per channel), <= 5e-12 for GroupNorm, the pools, the shape layers
  and Dropout. A dropped term is caught by >= 7800 x the tolerance (see the mutation tests).
* the complex step where ``layer.analytic`` (every layer here but ``MaxPool2d``: ``max`` is not
  analytic, and at ties not even differentiable, so the check is skipped for it and its inputs
  keep the window values >= 0.075 apart): <= 1e-13 (exact to roundoff; measured <= 1.6e-16).
* the Taylor remainder of ``phi`` along the ``full`` direction: least-squares slope
  2.00 +- 0.05. For the norms ``phi`` is genuinely nonlinear (measured ``|slope - 2|`` <= 0.02);
  for the layers that are linear given their cache (pools, shape layers, Dropout) ``phi`` is
  linear along the direction, every remainder ``R1`` sits at roundoff and the figure is 0 (a
  wrong gradient would leave ``R1 = eps <g_true - g, d>``, rate 1, figure 1), so the slope is
  also measured on chains that put these layers between smooth nonlinearities (``CHAINS``).
* float32: the float32 tolerances and every bar keeps the dtype.

Mutation tests (``MUTANTS``): a dropped second-derivative term of each norm (the variance term
``-s M(G xhat_dot) xhat``, either half of the normalised-input product, the weight products),
a wrong routing or scaling of the tangent cotangent of each pool / shape layer / dropout, and a
forgotten ordinary VJP of ``y_bar``: each must fail, its Taylor rate falling from 2 to 1 and its
named figures exceeding 1e3 x their tolerance.
"""
from __future__ import annotations

import numpy as np
import pytest

from adjointcore import layers as layers_module
from adjointcore.errors import ParameterError, ShapeError
from adjointcore.gradcheck import check_jvp_vjp
from adjointcore.gradcheck.catalog import builtin_examples
from adjointcore.layers import (
    ELU,
    AvgPool2d,
    BatchNorm,
    ChannelPad,
    ChannelUnpad,
    ConcatConv2d,
    Conv2d,
    Dropout,
    Flatten,
    GlobalAvgPool2d,
    GroupNorm,
    Layer,
    Linear,
    MaxPool2d,
    Reshape,
    Sequential,
    Sigmoid,
    Softplus,
    Tanh,
)
from adjointcore.layers._affine_norm import _channel, _normalise_vjp
from adjointcore.layers.second_order import SecondOrderBars
from tests.adjointcore._examples import assert_quadratic_form_gradient, forward_fresh, split_example

EXAMPLES = builtin_examples(np.random.default_rng(0))
IDS = [e[0] for e in EXAMPLES]
SEEDS = [0, 1]
MUTANT_MARGIN = 1e3   # a mutant's figures exceed their tolerance this many times (see below)
FD, COMPLEX, TAYLOR = 1e-8, 1e-13, 0.05
#: The families this file adds (the dense, element-wise and composite layers are covered by
#: test_second_order.py, and through the catalog here too).
NEW = (BatchNorm, GroupNorm, MaxPool2d, AvgPool2d, GlobalAvgPool2d, Flatten, Reshape, ChannelPad,
       ChannelUnpad, Dropout)


def _assert_figures(layer, report, kwargs):
    assert report.passed, str(report)
    blocks = ["x", "x_dot", "full"] + (["params", "params_dot"] if layer.n_params else []) \
        + (["t"] if "t" in kwargs else [])
    for block in blocks:
        assert report.figures[f"fd_{block}"] <= FD, str(report)
        if layer.analytic:
            assert report.figures[f"complex_{block}"] <= COMPLEX, str(report)
    if not layer.analytic:
        assert "complex" in report.skipped, str(report)
    assert report.figures["taylor_slope"] <= TAYLOR, str(report)


# -- every catalog layer ------------------------------------------------------------------------
@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("example", EXAMPLES, ids=IDS)
def test_catalog_second_order_float64(example, seed):
    layer, x, params, kwargs = split_example(example)
    report = check_jvp_vjp(layer, x, params=params, seed=seed, **kwargs)
    _assert_figures(layer, report, kwargs)


@pytest.mark.parametrize("example", EXAMPLES, ids=IDS)
def test_catalog_second_order_float32_keeps_dtype(example):
    layer, x, params, kwargs = split_example(example, np.float32)
    report = check_jvp_vjp(layer, x, params=params, **kwargs)   # a float64 bar is a failure
    assert report.passed, str(report)


def _classes(layer):
    out = {type(layer)}
    for child in getattr(layer, "_children", ()) or ():
        out |= _classes(child)
    if hasattr(layer, "inner"):
        out |= _classes(layer.inner)
    return out


def test_catalog_covers_every_builtin_layer_class():
    """Every exported layer class is reached by the catalog tests above and overrides the base
    ``apply_jvp_vjp`` (none raises NotImplementedError any more)."""
    covered = set().union(*(_classes(e[1]) for e in EXAMPLES))
    exported = {getattr(layers_module, n) for n in layers_module.__all__}
    builtin = {c for c in exported if isinstance(c, type) and issubclass(c, Layer)} \
        - {Layer, layers_module.ParameterFree}
    assert builtin - covered == set()
    for cls in builtin:
        assert cls.apply_jvp_vjp is not Layer.apply_jvp_vjp, cls


# -- the new families: bitwise properties -------------------------------------------------------
NEW_EXAMPLES = [e for e in EXAMPLES if isinstance(e[1], NEW)]
NEW_IDS = [e[0] for e in NEW_EXAMPLES]


def _tangents(layer, params, x, kwargs, seed=5):
    y, cache = forward_fresh(layer, params, x, kwargs)
    rng = np.random.default_rng(seed)
    x_dot = rng.standard_normal(x.shape)
    p_dot = rng.standard_normal(params.shape) if params.size else None
    g, y_bar = rng.standard_normal(y.shape), rng.standard_normal(y.shape)
    return cache, x_dot, p_dot, g, y_bar


@pytest.mark.parametrize("example", NEW_EXAMPLES, ids=NEW_IDS)
def test_fast_path_equals_checked_and_tangent_bars_are_the_vjp(example):
    """``apply_jvp_vjp`` is ``jvp_vjp`` bit for bit; ``x_dot_bar``/``params_dot_bar`` are the
    layer's own VJP of ``y_dot_bar`` bit for bit; ``y_bar`` adds exactly its VJP for the layers
    without second derivative."""
    layer, x, params, kwargs = split_example(example)
    cache, x_dot, p_dot, g, y_bar = _tangents(layer, params, x, kwargs)
    for pd in (None, p_dot):
        for yb in (None, y_bar):
            a = layer.jvp_vjp(params, cache, x_dot, pd, g, yb)
            b = layer.apply_jvp_vjp(params, cache, x_dot, pd, g, yb)
            assert isinstance(a, SecondOrderBars) and a.t_bar is None
            for u, v in zip(a, b, strict=True):
                if u is not None:
                    assert np.array_equal(u, v)
            x_bar, p_bar = layer.vjp(params, cache, g)
            assert np.array_equal(a.x_dot_bar, x_bar) and np.array_equal(a.params_dot_bar, p_bar)
    if layer.n_params:
        return
    r = layer.jvp_vjp(params, cache, x_dot, None, g)
    assert r.x_bar.shape == x.shape and not r.x_bar.any()        # no second derivative
    r = layer.jvp_vjp(params, cache, x_dot, None, g, y_bar)
    assert np.array_equal(r.x_bar, layer.vjp(params, cache, y_bar)[0])


@pytest.mark.parametrize("example", NEW_EXAMPLES, ids=NEW_IDS)
def test_inputs_are_not_modified(example):
    layer, x, params, kwargs = split_example(example)
    cache, x_dot, p_dot, g, y_bar = _tangents(layer, params, x, kwargs)
    kept = [None if a is None else a.copy() for a in (params, x_dot, p_dot, g, y_bar)]
    layer.jvp_vjp(params, cache, x_dot, p_dot, g, y_bar)
    for a, b in zip((params, x_dot, p_dot, g, y_bar), kept, strict=True):
        assert (a is None and b is None) or np.array_equal(a, b)


# -- slopes through chains: the linear layers between smooth nonlinearities ---------------------
def _distinct(seed, shape, margin=0.1):
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    levels = (np.arange(size) - (size - 1) / 2) * margin / 2
    return (rng.permutation(levels) + rng.uniform(0, margin / 8, size)).reshape(shape)


def _image(seed, shape=(2, 2, 4, 4)):
    return np.random.default_rng(seed).uniform(-1.5, 1.5, shape)


def _bn_eval():
    rng = np.random.default_rng(11)
    return BatchNorm(4, mode="eval", running=(rng.standard_normal(4), rng.uniform(0.5, 2, 4)))


CHAINS = [
    ("tanh-maxpool-softplus", lambda: Sequential(Tanh(), MaxPool2d(2), Softplus()),
     lambda s: _distinct(s, (2, 2, 4, 4)), {}),
    ("tanh-maxpool-overlap-sigmoid",
     lambda: Sequential(Tanh(), MaxPool2d(3, stride=1, padding=1), Sigmoid()),
     lambda s: _distinct(s, (1, 2, 4, 3)), {}),
    ("conv-groupnorm-tanh-avgpool-flatten-linear",
     lambda: Sequential(Conv2d(2, 4, 3, padding=1), GroupNorm(2, 4), Tanh(), AvgPool2d(2),
                        Flatten(), Linear(16, 3), Sigmoid()), _image, {}),
    ("pad-concatconv-unpad-gap",
     lambda: Sequential(ChannelPad(1), ConcatConv2d(3, 3, 3, padding=1), Tanh(),
                        ChannelUnpad(1), GlobalAvgPool2d(), Softplus()), _image, {"t": 0.4}),
    ("linear-batchnorm-dropout",
     lambda: Sequential(Linear(3, 5), BatchNorm(5), Tanh(), Dropout(0.3), Linear(5, 2), Tanh()),
     lambda s: _image(s, (6, 3)), {"rng": np.random.default_rng(3)}),
    ("reshape-groupnorm-flatten",
     lambda: Sequential(Linear(4, 8), Reshape((2, 2, 2)), GroupNorm(1, 2), ELU(), Flatten(),
                        Linear(8, 2), Tanh()), lambda s: _image(s, (3, 4)), {}),
    ("linear-batchnorm-eval",
     lambda: Sequential(Linear(3, 4), _bn_eval(), Softplus(), Linear(4, 2), Tanh()),
     lambda s: _image(s, (5, 3)), {}),
    ("groupnorm-alone-no-affine", lambda: GroupNorm(2, 4, affine=False),
     lambda s: _distinct(s, (2, 4, 3)), {}),
    ("batchnorm-images-no-affine", lambda: BatchNorm(3, affine=False),
     lambda s: _distinct(s, (2, 3, 2, 2)), {}),
]


def _perturbed(layer, seed):
    rng = np.random.default_rng(seed)
    p = layer.init(rng)
    return p + 0.3 * rng.standard_normal(p.shape)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("chain", CHAINS, ids=[c[0] for c in CHAINS])
def test_chains_second_order_with_a_real_taylor_slope(chain, seed):
    _, make, make_x, kwargs = chain
    layer = make()
    report = check_jvp_vjp(layer, make_x(seed), params=_perturbed(layer, seed), seed=seed,
                           **kwargs)
    _assert_figures(layer, report, kwargs)
    assert report.figures["taylor_slope"] > 0.0, str(report)   # measured, not all roundoff


@pytest.mark.parametrize("chain", CHAINS, ids=[c[0] for c in CHAINS])
def test_chains_second_order_float32(chain):
    _, make, make_x, kwargs = chain
    layer = make()
    x = make_x(0).astype(np.float32)
    report = check_jvp_vjp(layer, x, params=_perturbed(layer, 0).astype(np.float32), **kwargs)
    assert report.passed, str(report)


def test_divergence_gradient_of_a_normalised_field():
    """``d(v^T J v)/dz`` through GroupNorm and a max-pool free conv stack, by jvp_vjp(x_dot=v,
    y_dot_bar=v), against a central difference of the quadratic form."""
    layer = Sequential(Conv2d(2, 4, 3, padding=1), GroupNorm(2, 4), Tanh(),
                       Conv2d(4, 2, 3, padding=1))
    rng = np.random.default_rng(7)
    z, v, u = (rng.standard_normal((2, 2, 3, 3)) for _ in range(3))
    params = _perturbed(layer, 7)
    assert_quadratic_form_gradient(layer, params, z, v, u)


# -- mutation tests -----------------------------------------------------------------------------
def _gn_terms(layer, cache, x_dot, G):
    """The pieces of GroupNorm's second-order ``x_bar`` (original layout): the variance term
    ``s M(G xhat_dot) xhat``, ``P^T(s M(G xhat) u)`` (derivative of ``a = M(xhat u)``) and
    ``P^T(s a G)`` (derivative of the ``xhat`` factor); ``x_bar`` holds each with a minus sign."""
    grp, shape = layer._grouped, x_dot.shape
    xd, xh, gg, s = grp(x_dot), grp(cache.xhat), grp(G), cache.inv_std
    axes = tuple(range(2, xd.ndim))
    u = xd - xd.mean(axis=axes, keepdims=True)
    a = (xh * u).mean(axis=axes, keepdims=True)
    xhat_dot = s * (u - xh * a)
    variance = s * (gg * xhat_dot).mean(axis=axes, keepdims=True) * xh
    a_term = _normalise_vjp(s * (gg * xh).mean(axis=axes, keepdims=True) * u, xh, s, axes)
    xhat_term = _normalise_vjp(s * a * gg, xh, s, axes)
    return {k: v.reshape(shape) for k, v in
            (("variance", variance), ("a", a_term), ("xhat", xhat_term),
             ("xhat_dot", xhat_dot))}


class _GroupNormDrop(GroupNorm):
    drop = ""

    def apply_jvp_vjp(self, params, cache, x_dot, params_dot, y_dot_bar, y_bar=None):
        r = super().apply_jvp_vjp(params, cache, x_dot, params_dot, y_dot_bar, y_bar)
        w = params[:self.num_channels]
        terms = _gn_terms(self, cache, x_dot, y_dot_bar * _channel(w, x_dot.ndim))
        if self.drop in ("variance", "a", "xhat"):
            return r._replace(x_bar=r.x_bar + terms[self.drop])
        if self.drop == "weight-product-x":          # x_bar's P^T(g w_dot)
            wd = _channel(params_dot[:self.num_channels], x_dot.ndim)
            grp = self._grouped
            term = _normalise_vjp(grp(y_dot_bar * wd), grp(cache.xhat), cache.inv_std,
                                  tuple(range(2, grp(x_dot).ndim))).reshape(x_dot.shape)
            return r._replace(x_bar=r.x_bar - term)
        if self.drop == "weight-product-w":          # params_bar's S(g xhat_dot)
            p = r.params_bar.copy()
            p[:self.num_channels] -= (y_dot_bar * terms["xhat_dot"]).sum(axis=(0, 2, 3))
            return r._replace(params_bar=p)
        raise AssertionError(self.drop)


def _gn_mutant(drop):
    return type(f"GroupNormDrop_{drop}", (_GroupNormDrop,), {"drop": drop})(2, 4)


class BatchNormNoVarianceTerm(BatchNorm):
    """Train mode with the ``inv_std`` derivative ``-s M(G xhat_dot) xhat`` dropped."""

    def apply_jvp_vjp(self, params, cache, x_dot, params_dot, y_dot_bar, y_bar=None):
        r = super().apply_jvp_vjp(params, cache, x_dot, params_dot, y_dot_bar, y_bar)
        nd, axes = x_dot.ndim, (0,) + tuple(range(2, x_dot.ndim))
        s, xh = _channel(cache.inv_std, nd), cache.xhat
        G = y_dot_bar * _channel(params[:self.num_features], nd)
        u = x_dot - x_dot.mean(axis=axes, keepdims=True)
        xhat_dot = s * (u - xh * (xh * u).mean(axis=axes, keepdims=True))
        return r._replace(x_bar=r.x_bar + s * (G * xhat_dot).mean(axis=axes, keepdims=True) * xh)


class BatchNormEvalNoWeightProduct(BatchNorm):
    """Eval mode with ``x_bar``'s ``inv_std g w_dot`` dropped."""

    def apply_jvp_vjp(self, params, cache, x_dot, params_dot, y_dot_bar, y_bar=None):
        r = super().apply_jvp_vjp(params, cache, x_dot, params_dot, y_dot_bar, y_bar)
        nd, c = x_dot.ndim, self.num_features
        term = y_dot_bar * _channel(params_dot[:c] * cache.inv_std, nd)
        return r._replace(x_bar=r.x_bar - term)


class MaxPoolFirstElement(MaxPool2d):
    """Routes the tangent cotangent to each window's first element, not to its maximum."""

    def apply_jvp_vjp(self, params, cache, x_dot, params_dot, y_dot_bar, y_bar=None):
        r = super().apply_jvp_vjp(params, cache, x_dot, params_dot, y_dot_bar, y_bar)
        wrong = self.apply_vjp(params, cache._replace(argmax=np.zeros_like(cache.argmax)),
                               y_dot_bar)
        return r._replace(x_dot_bar=wrong)


class MaxPoolNoPrimalVjp(MaxPool2d):
    """Forgets the ordinary VJP of ``y_bar`` in ``x_bar``."""

    def apply_jvp_vjp(self, params, cache, x_dot, params_dot, y_dot_bar, y_bar=None):
        r = super().apply_jvp_vjp(params, cache, x_dot, params_dot, y_dot_bar, y_bar)
        return r._replace(x_bar=np.zeros_like(r.x_bar))


class AvgPoolNoDivisor(AvgPool2d):
    """Spreads the whole tangent cotangent over every window element (no ``1/(kh kw)``)."""

    def apply_jvp_vjp(self, params, cache, x_dot, params_dot, y_dot_bar, y_bar=None):
        r = super().apply_jvp_vjp(params, cache, x_dot, params_dot, y_dot_bar, y_bar)
        return r._replace(x_dot_bar=r.x_dot_bar * float(np.prod(self.kernel_size)))


class GlobalAvgPoolStaleBar(GlobalAvgPool2d):
    """``x_bar`` built from ``y_dot_bar`` instead of ``y_bar`` (swapped cotangents)."""

    def apply_jvp_vjp(self, params, cache, x_dot, params_dot, y_dot_bar, y_bar=None):
        r = super().apply_jvp_vjp(params, cache, x_dot, params_dot, y_dot_bar, y_bar)
        return r._replace(x_bar=r.x_dot_bar)


class FlattenTransposed(Flatten):
    """Unflattens the tangent cotangent in the wrong spatial order."""

    def apply_jvp_vjp(self, params, cache, x_dot, params_dot, y_dot_bar, y_bar=None):
        r = super().apply_jvp_vjp(params, cache, x_dot, params_dot, y_dot_bar, y_bar)
        n, c, h, w = cache.x_shape
        return r._replace(x_dot_bar=y_dot_bar.reshape(n, c, w, h).transpose(0, 1, 3, 2))


class UnpadFront(ChannelUnpad):
    """Puts the tangent cotangent on the first channels instead of the kept ones."""

    def apply_jvp_vjp(self, params, cache, x_dot, params_dot, y_dot_bar, y_bar=None):
        r = super().apply_jvp_vjp(params, cache, x_dot, params_dot, y_dot_bar, y_bar)
        wrong = np.zeros(cache.x_shape)
        wrong[:, self.extra:] = y_dot_bar
        return r._replace(x_dot_bar=wrong)


class DropoutNoMaskOnTangent(Dropout):
    """Ignores the cached mask in ``x_dot_bar``."""

    def apply_jvp_vjp(self, params, cache, x_dot, params_dot, y_dot_bar, y_bar=None):
        r = super().apply_jvp_vjp(params, cache, x_dot, params_dot, y_dot_bar, y_bar)
        return r._replace(x_dot_bar=y_dot_bar.copy())


class DropoutNoMaskOnPrimal(Dropout):
    """Ignores the cached mask in ``x_bar`` (the ordinary VJP of ``y_bar``)."""

    def apply_jvp_vjp(self, params, cache, x_dot, params_dot, y_dot_bar, y_bar=None):
        r = super().apply_jvp_vjp(params, cache, x_dot, params_dot, y_dot_bar, y_bar)
        return r._replace(x_bar=r.x_bar if y_bar is None else y_bar.copy())


_GN_X = lambda s: _distinct(s, (2, 4, 3, 2))          # noqa: E731
_IMG = lambda s: _image(s, (2, 2, 4, 4))              # noqa: E731
_DROP_RNG = {"rng": np.random.default_rng(3)}

# (id, make layer, make x, extra kwargs, figures that must see the bug)
MUTANTS = [
    ("groupnorm: variance term dropped", lambda: _gn_mutant("variance"), _GN_X, {},
     ["fd_x", "complex_x", "fd_full"]),
    ("groupnorm: d mean(xhat u) term dropped", lambda: _gn_mutant("a"), _GN_X, {},
     ["fd_x", "complex_x", "fd_full"]),
    ("groupnorm: d xhat factor of the product dropped", lambda: _gn_mutant("xhat"), _GN_X, {},
     ["fd_x", "complex_x", "fd_full"]),
    ("groupnorm: x_bar weight product g w_dot dropped", lambda: _gn_mutant("weight-product-x"),
     _GN_X, {}, ["fd_x", "complex_x"]),
    ("groupnorm: w_bar weight product S(g xhat_dot) dropped",
     lambda: _gn_mutant("weight-product-w"), _GN_X, {}, ["fd_params", "complex_params"]),
    ("batchnorm: variance term dropped", lambda: BatchNormNoVarianceTerm(2),
     lambda s: _distinct(s, (5, 2)), {}, ["fd_x", "complex_x", "fd_full"]),
    ("batchnorm eval: weight product dropped",
     lambda: BatchNormEvalNoWeightProduct(2, mode="eval",
                                          running=(np.array([0.1, -0.3]), np.array([0.7, 1.6]))),
     _IMG, {}, ["fd_x", "complex_x"]),
    ("maxpool: tangent bar to the first element", lambda: MaxPoolFirstElement(2),
     lambda s: _distinct(s, (2, 2, 4, 4)), {}, ["fd_x_dot", "fd_full"]),
    ("maxpool: y_bar's vjp forgotten", lambda: MaxPoolNoPrimalVjp(2),
     lambda s: _distinct(s, (2, 2, 4, 4)), {}, ["fd_full"]),
    ("avgpool: no divisor", lambda: AvgPoolNoDivisor(2), _IMG, {},
     ["fd_x_dot", "complex_x_dot"]),
    ("global-avgpool: swapped cotangents", GlobalAvgPoolStaleBar, _IMG, {},
     ["fd_x", "complex_x", "fd_full"]),
    ("flatten: wrong order", FlattenTransposed, lambda s: _image(s, (2, 2, 3, 4)), {},
     ["fd_x_dot", "complex_x_dot"]),
    ("channel-unpad: wrong channels", lambda: UnpadFront(1), _IMG, {},
     ["fd_x_dot", "complex_x_dot"]),
    ("dropout: mask ignored on the tangent", lambda: DropoutNoMaskOnTangent(0.4), _IMG,
     _DROP_RNG, ["fd_x_dot", "complex_x_dot"]),
    ("dropout: mask ignored on y_bar", lambda: DropoutNoMaskOnPrimal(0.4), _IMG, _DROP_RNG,
     ["fd_full", "complex_full"]),
]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("mutant", MUTANTS, ids=[m[0] for m in MUTANTS])
def test_mutant_second_order_is_caught(mutant, seed):
    """Each mutant fails, with (a) the Taylor rate of ``phi`` fallen from 2 to 1 (a wrong
    gradient leaves ``R1 = eps <g_true - g, d>``; measured ``|slope - 2|`` in [0.96, 1.04]) and
    (b) every named figure above ``MUTANT_MARGIN`` x its tolerance. The relative figures of a
    term missing from one block are ``|<term, u>| / (|gradient| |u|)`` for a random unit ``u``
    over every block: O(|term| / |gradient| / sqrt(n)), measured 8e-5 to 0.2 over seeds 0-3
    (>= 7800 x the FD tolerance), so (b) asks for 1e3 x, not the 1e-3 of whole-gradient slips."""
    _, make, make_x, kwargs, figures = mutant
    layer = make()
    params = _perturbed(layer, seed) if layer.n_params else None
    report = check_jvp_vjp(layer, make_x(seed), params=params, seed=seed, **kwargs)
    assert report.passed is False, str(report)
    assert report.figures["taylor_slope"] > 0.5, str(report)
    for name in figures:
        tol = report.tolerances[name.split("_")[0]]
        assert report.figures[name] > MUTANT_MARGIN * tol, str(report)


def test_unmutated_bases_pass():
    """The mutants' parents pass the same checks (so the failures above are the mutations)."""
    for layer, x, kw in ((GroupNorm(2, 4), _GN_X(0), {}), (BatchNorm(2), _distinct(0, (5, 2)), {}),
                         (MaxPool2d(2), _distinct(0, (2, 2, 4, 4)), {}),
                         (Dropout(0.4), _IMG(0), {"rng": np.random.default_rng(3)})):
        params = _perturbed(layer, 0) if layer.n_params else None
        assert check_jvp_vjp(layer, x, params=params, **kw).passed


# -- errors -------------------------------------------------------------------------------------
@pytest.mark.parametrize("example", NEW_EXAMPLES, ids=NEW_IDS)
def test_bad_arguments_are_named(example):
    layer, x, params, kwargs = split_example(example)
    y, cache = forward_fresh(layer, params, x, kwargs)
    x_dot, g = np.zeros_like(x), np.zeros_like(y)
    eval_dropout = isinstance(layer, Dropout) and cache.mask is None
    if not eval_dropout:                                       # eval dropout: any shape
        with pytest.raises(ShapeError, match="`x_dot`"):
            layer.jvp_vjp(params, cache, np.zeros((7,) + x.shape), None, g)
    with pytest.raises(TypeError, match="`x_dot`"):
        layer.jvp_vjp(params, cache, x.tolist(), None, g)
    with pytest.raises(ParameterError, match="`params_dot`"):
        layer.jvp_vjp(params, cache, x_dot, np.zeros(params.size + 1), g)
    with pytest.raises(ParameterError, match="`params`"):
        layer.jvp_vjp(np.zeros(params.size + 1), cache, x_dot, None, g)
    with pytest.raises(ShapeError, match="`y_dot_bar`"):
        layer.jvp_vjp(params, cache, x_dot, None, np.zeros(y.shape + (1,)))
    with pytest.raises(TypeError, match="`y_dot_bar`"):
        layer.jvp_vjp(params, cache, x_dot, None, g.tolist())
    with pytest.raises(ShapeError, match="`y_bar`"):
        layer.jvp_vjp(params, cache, x_dot, None, g, np.zeros(y.shape + (1,)))


def test_norm_channel_mismatch_is_named():
    layer = GroupNorm(2, 4)
    params = layer.init(np.random.default_rng(0))
    x = _GN_X(0)
    _, cache = layer.forward(params, x)
    with pytest.raises(ShapeError, match="`x_dot`"):
        layer.jvp_vjp(params, cache, np.zeros((2, 2, 3, 2)), None, np.zeros((2, 2, 3, 2)))


# -- backends -----------------------------------------------------------------------------------
@pytest.mark.parametrize("example", NEW_EXAMPLES, ids=NEW_IDS)
def test_new_second_order_on_backend(example, xp):
    """The same checks on the array module under test (the device emulation; CuPy on a GPU
    machine)."""
    layer, x, params, kwargs = split_example(example)
    report = check_jvp_vjp(layer, xp.asarray(x), params=xp.asarray(params), **kwargs)
    assert report.passed, str(report)
