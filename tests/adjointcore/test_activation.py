"""Activations: reference forwards, stability at extreme inputs, gradient checks, bad input."""
import numpy as np
import pytest
from scipy.special import expit

from adjointcore.backend import to_host
from adjointcore.errors import ParameterError, ShapeError
from adjointcore.gradcheck import check_layer
from adjointcore.layers.activation import (
    ELU,
    LeakyReLU,
    ReLU,
    Sigmoid,
    SigmoidCache,
    Softplus,
    Tanh,
    TanhCache,
    tanh_derivative,
)

ALL = [ReLU(), LeakyReLU(), LeakyReLU(0.2), Tanh(), Sigmoid(), Softplus(), Softplus(beta=3.0),
       ELU(), ELU(alpha=0.5)]
IDS = [repr(a) for a in ALL]


def away_from_zero(rng, shape, margin=0.1):
    """Values with |x| in [margin, 2]: no ReLU/LeakyReLU/ELU kink within any FD or Taylor step
    (check_layer's largest perturbation moves a coordinate by <= 2e-3)."""
    return rng.uniform(margin, 2.0, shape) * rng.choice([-1.0, 1.0], shape)


def reference(layer, x):
    """Direct NumPy formulas (float64)."""
    if isinstance(layer, ReLU):
        return np.maximum(x, 0)
    if isinstance(layer, LeakyReLU):
        return np.where(x > 0, x, layer.negative_slope * x)
    if isinstance(layer, Tanh):
        return np.tanh(x)
    if isinstance(layer, Sigmoid):
        return expit(x)
    if isinstance(layer, Softplus):
        return np.logaddexp(0.0, layer.beta * x) / layer.beta
    if isinstance(layer, ELU):
        return np.where(x > 0, x, layer.alpha * np.expm1(np.minimum(x, 0)))
    raise AssertionError(layer)


@pytest.mark.parametrize("layer", ALL, ids=IDS)
def test_forward_matches_reference(layer, xp, rng):
    x = away_from_zero(rng, (3, 4, 5))
    y, _ = layer.forward(xp.zeros(0), xp.asarray(x))
    assert y.shape == x.shape and layer.output_shape(x.shape) == x.shape
    # 4 ulp: each reference is the same closed form evaluated along another route
    np.testing.assert_allclose(to_host(y), reference(layer, x), rtol=4e-16 * 4, atol=1e-300)


@pytest.mark.parametrize("layer", ALL, ids=IDS)
def test_gradients_float64(layer, rng):
    x = away_from_zero(rng, (4, 6))
    report = check_layer(layer, x)
    assert report.passed, str(report)
    assert report.figures["fd_x"] <= 1e-7
    if layer.analytic:
        assert report.figures["complex_x"] <= 1e-13


@pytest.mark.parametrize("layer", ALL, ids=IDS)
def test_gradients_float32(layer, rng):
    x = away_from_zero(rng, (4, 6)).astype(np.float32)
    y, cache = layer.forward(np.zeros(0, np.float32), x)
    x_bar, _ = layer.vjp(np.zeros(0, np.float32), cache, np.ones_like(y))
    assert y.dtype == np.float32 and x_bar.dtype == np.float32
    report = check_layer(layer, x)
    assert report.passed, str(report)


@pytest.mark.parametrize("layer", ALL, ids=IDS)
def test_vjp_matches_float64_derivative_on_backend(layer, xp, rng):
    x = away_from_zero(rng, (2, 3, 4))
    y_bar = rng.standard_normal(x.shape)
    _, cache = layer.forward(xp.zeros(0), xp.asarray(x))
    x_bar, p_bar = layer.vjp(xp.zeros(0), cache, xp.asarray(y_bar))
    _, cache_np = layer.forward(np.zeros(0), x)
    x_bar_np, _ = layer.vjp(np.zeros(0), cache_np, y_bar)
    np.testing.assert_allclose(to_host(x_bar), x_bar_np, rtol=1e-14)  # same formula, ~1 ulp
    assert p_bar.shape == (0,)
    assert layer.vjp(xp.zeros(0), cache, xp.asarray(y_bar), need_params=False)[1] is None


def test_analytic_flags():
    assert [type(a).__name__ for a in ALL if a.analytic] == [
        "Tanh", "Sigmoid", "Softplus", "Softplus", "ELU", "ELU"]
    assert not ReLU().needs_rng and not Tanh().time_dependent


def test_sigmoid_softplus_stable_at_extremes():
    x = np.array([-1000.0, -745.0, -40.0, 0.0, 40.0, 745.0, 1000.0])
    s, _ = Sigmoid().forward(None, x)
    # 1 ulp; expit flushes exp(-745) = 4.9e-324 (subnormal) to 0, hence the tiny atol
    np.testing.assert_allclose(s, expit(x), rtol=2.3e-16, atol=1e-323)
    sp, cache = Softplus().forward(None, x)
    assert np.all(np.isfinite(sp)) and sp[-1] == 1000.0 and sp[0] == 0.0
    np.testing.assert_allclose(sp, np.logaddexp(0.0, x), rtol=1e-15, atol=0)
    x_bar, _ = Softplus().vjp(None, cache, np.ones_like(x))
    np.testing.assert_allclose(x_bar, expit(x), rtol=2.3e-16, atol=1e-323)
    t, cache = Tanh().forward(None, x)
    assert np.all(np.isfinite(Tanh().vjp(None, cache, np.ones_like(x))[0]))
    assert np.all(np.isfinite(ELU().forward(None, x)[0]))


def reference_derivative(layer, x):
    """dy/dx from closed forms that keep full relative accuracy for large |x|."""
    if isinstance(layer, Tanh):
        e = np.exp(-2 * np.abs(x))
        return 4 * e / (1 + e) ** 2
    if isinstance(layer, Sigmoid):
        return expit(x) * expit(-x)
    if isinstance(layer, Softplus):
        return expit(layer.beta * x)
    if isinstance(layer, ELU):
        return np.where(x > 0, 1.0, layer.alpha * np.exp(np.minimum(x, 0)))
    raise AssertionError(layer)


EXTREME = np.array([-1000.0, -30.0, -0.7, 0.4, 30.0, 1000.0])
ANALYTIC = [a for a in ALL if a.analytic]


@pytest.mark.parametrize("layer", ANALYTIC, ids=repr)
def test_complex_step_at_extremes(layer):
    """Complex input with |Re x| up to 1000 stays finite; Im y / h is the derivative to full
    relative accuracy (5 ulp: a few roundings) and Re y equals the real forward (2 ulp)."""
    h = 1e-30
    y, _ = layer.forward(None, EXTREME + 1j * h)
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y.imag / h, reference_derivative(layer, EXTREME), rtol=5 * 2.3e-16,
                               atol=0)
    np.testing.assert_allclose(y.real, layer.forward(None, EXTREME)[0], rtol=2 * 2.3e-16, atol=0)


@pytest.mark.parametrize("layer", ANALYTIC, ids=repr)
def test_vjp_at_extremes(layer):
    """VJPs at |x| up to 1000 are finite and accurate to 5 ulp relative (no cancellation)."""
    x = np.concatenate([EXTREME, [3.93355327, -8.5, 19.0]])   # 1 - tanh(x)**2 would cancel
    _, cache = layer.forward(None, x)
    x_bar, _ = layer.vjp(None, cache, np.ones_like(x))
    np.testing.assert_allclose(x_bar, reference_derivative(layer, x), rtol=5 * 2.3e-16, atol=0)


def test_caches_hold_what_the_vjp_needs():
    """Tanh keeps its input (the VJP evaluates the derivative from it); a forward-only call
    (``tape=False``) keeps nothing and returns the same output bit for bit."""
    x = np.linspace(-2, 2, 7)
    y, cache = Tanh().forward(None, x)
    assert isinstance(cache, TanhCache) and cache.x is x
    np.testing.assert_allclose(tanh_derivative(cache.x), 1 - y * y, rtol=1e-14)
    y_fast, no_cache = Tanh().apply(None, x, tape=False)
    assert no_cache is None and np.array_equal(y_fast, y)
    y, cache = Sigmoid().forward(None, x)
    assert isinstance(cache, SigmoidCache) and cache.y is y
    np.testing.assert_allclose(cache.y_c, expit(-x), rtol=2.3e-16)


def test_any_shape_1d_and_0d(rng):
    for shape in [(5,), (), (2, 1, 3, 2, 2)]:
        x = np.asarray(away_from_zero(rng, shape))
        for layer in ALL:
            y, cache = layer.forward(None, x)
            assert y.shape == x.shape
            assert layer.vjp(None, cache, np.ones_like(y))[0].shape == x.shape


@pytest.mark.parametrize("cls, kwargs, name", [
    (Softplus, {"beta": 0.0}, "beta"), (Softplus, {"beta": -1.0}, "beta"),
    (ELU, {"alpha": -0.1}, "alpha"),
    (LeakyReLU, {"negative_slope": float("nan")}, "negative_slope"),
    (LeakyReLU, {"negative_slope": float("inf")}, "negative_slope"),
])
def test_bad_hyperparameters(cls, kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        cls(**kwargs)


def test_bad_inputs_named():
    x = np.ones((2, 3))
    with pytest.raises(TypeError, match="`x`"):
        ReLU().forward(None, x + 1j)  # ReLU is not analytic: no complex input
    with pytest.raises(TypeError, match="`x`"):
        Tanh().forward(None, [1.0, 2.0])
    with pytest.raises(TypeError, match="`x`"):
        Tanh().forward(None, np.ones(3, dtype=np.int64))
    with pytest.raises(ParameterError, match="`params`.*length 2, expected 0"):
        Sigmoid().forward(np.zeros(2), x)
    _, cache = Tanh().forward(None, x)
    with pytest.raises(ShapeError, match="`y_bar`"):
        Tanh().vjp(None, cache, np.ones((3, 2)))


@pytest.mark.parametrize("make, name", [(lambda v: LeakyReLU(v), "negative_slope"),
                                        (lambda v: Softplus(v), "beta"),
                                        (lambda v: ELU(v), "alpha")])
def test_hyperparameters_reject_bools_and_non_finite(make, name):
    # Before: LeakyReLU(True) etc. were accepted as 1.0.
    with pytest.raises(TypeError, match=rf"`{name}` must be a real number, got True"):
        make(True)
    with pytest.raises(ValueError, match=rf"`{name}` must be finite"):
        make(float("nan"))
    with pytest.raises(TypeError, match=rf"`{name}`"):
        make("1.0")
