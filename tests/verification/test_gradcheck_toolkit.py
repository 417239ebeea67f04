"""The gradient-verification toolkit itself, on functions with known derivatives.

Layers here are defined locally (one does not inherit from adjointcore's Layer) so the toolkit is
tested independently of the built-in layers.
"""
from typing import NamedTuple

import numpy as np
import pytest
from hypothesis import given, settings

from adjointcore.gradcheck import (
    LayerReport,
    TaylorTestError,
    auto_step,
    central_difference,
    check_layer,
    complex_step,
    default_tolerances,
    dot_product_test,
    relative_error,
    richardson_difference,
    taylor_test,
)
from adjointcore.gradcheck import __main__ as cli
from adjointcore.gradcheck import strategies as gs
from adjointcore.gradcheck.catalog import builtin_examples
from adjointcore.layers import Layer, activation, compose, conv, dropout, linear, norm, pool, shape
from adjointcore.layers.activation import Tanh
from adjointcore.layers.compose import Sequential
from adjointcore.layers.linear import Linear


# -- small layers under test -------------------------------------------------------------------
class _Cache(NamedTuple):
    x: np.ndarray
    y: np.ndarray


class UserTanhDense:
    """A user's layer y = tanh(x W^T + b): plain class, no adjointcore base, complex-safe."""

    analytic = True

    def __init__(self, n_in, n_out):
        self.n_in, self.n_out = n_in, n_out

    @property
    def n_params(self):
        return self.n_out * self.n_in + self.n_out

    def init(self, rng, dtype=np.float64):
        return rng.standard_normal(self.n_params).astype(dtype) * 0.5

    def _split(self, params):
        k = self.n_out * self.n_in
        return params[:k].reshape(self.n_out, self.n_in), params[k:]

    def forward(self, params, x):
        w, b = self._split(params)
        y = np.tanh(x @ w.T + b)
        return y, _Cache(x, y)

    def vjp(self, params, cache, y_bar, need_params=True):
        w, _ = self._split(params)
        z_bar = y_bar * (1.0 - cache.y ** 2)
        x_bar = z_bar @ w
        if not need_params:
            return x_bar, None
        return x_bar, np.concatenate([(z_bar.T @ cache.x).ravel(), z_bar.sum(0)])


class SignFlipTanhDense(UserTanhDense):
    """Mutation: input cotangent with the wrong sign."""

    def vjp(self, params, cache, y_bar, need_params=True):
        x_bar, p_bar = super().vjp(params, cache, y_bar, need_params)
        return -x_bar, p_bar


class BiasSlipTanhDense(UserTanhDense):
    """Mutation: bias gradient off by 1 % (only the parameter figures can see it)."""

    def vjp(self, params, cache, y_bar, need_params=True):
        x_bar, p_bar = super().vjp(params, cache, y_bar, need_params)
        p_bar = p_bar.copy()
        p_bar[-self.n_out:] *= 1.01
        return x_bar, p_bar


class TinyErrorTanhDense(UserTanhDense):
    """Mutation: x_bar off by 1e-9 relative: below FD resolution, caught by complex/dot."""

    def vjp(self, params, cache, y_bar, need_params=True):
        x_bar, p_bar = super().vjp(params, cache, y_bar, need_params)
        return x_bar * (1.0 + 1e-9), p_bar


class _MaskCache(NamedTuple):
    positive: np.ndarray


class UserReLU(Layer):
    """Piecewise-linear layer (not analytic): FD, Richardson dot test, exact Taylor."""

    def forward(self, params, x):
        positive = x > 0
        return np.where(positive, x, 0.0), _MaskCache(positive)

    def vjp(self, params, cache, y_bar, need_params=True):
        return np.where(cache.positive, y_bar, 0.0), np.zeros(0) if need_params else None


class _DropCache(NamedTuple):
    mask: np.ndarray


class UserDropout:
    """Stochastic user layer: the mask comes from the rng passed to forward."""

    n_params = 0
    needs_rng = True
    analytic = True

    def init(self, rng, dtype=np.float64):
        return np.zeros(0, dtype=dtype)

    def forward(self, params, x, rng):
        mask = (rng.random(x.shape) > 0.5) / 0.5
        return x * mask, _DropCache(mask)

    def vjp(self, params, cache, y_bar, need_params=True):
        return y_bar * cache.mask, np.zeros(0)


class _TimeCache(NamedTuple):
    t: float


class UserTimeScale:
    """Time-dependent user layer y = sin(t) * x**2 (requires t=)."""

    n_params = 0
    time_dependent = True
    analytic = True

    def init(self, rng, dtype=np.float64):
        return np.zeros(0, dtype=dtype)

    def forward(self, params, x, t):
        return np.sin(t) * x ** 2, (x, t)

    def vjp(self, params, cache, y_bar, need_params=True):
        x, t = cache
        return 2.0 * np.sin(t) * x * y_bar, np.zeros(0)


# -- finite differences and complex step --------------------------------------------------------
def test_auto_step_scales_with_dtype_and_magnitude():
    x, v = np.ones(3), np.array([1.0, 0.0, 0.0])
    assert auto_step(x, v, np.float64) == pytest.approx(np.finfo(np.float64).eps ** (1 / 3))
    assert auto_step(x, v, np.float32) == pytest.approx(np.finfo(np.float32).eps ** (1 / 3))
    assert auto_step(10 * x, v / 2, np.float64) == pytest.approx(20 * auto_step(x, v, np.float64))


def test_auto_step_rejects_zero_direction():
    with pytest.raises(ValueError, match="direction `v` is zero"):
        auto_step(np.ones(2), np.zeros(2), np.float64)


def test_central_difference_exact_on_quadratics():
    # central differences are exact for polynomials of degree <= 2 (up to roundoff 1e-10 rel.)
    a = np.array([[2.0, -1.0], [0.5, 3.0]])
    x, v = np.array([0.3, -0.7]), np.array([1.0, 2.0])
    got = central_difference(lambda z: z @ a @ z + z.sum(), x, v)
    exact = (a + a.T) @ x @ v + v.sum()
    assert abs(got - exact) <= 1e-10 * abs(exact)


def test_central_difference_sin_accuracy():
    # eps_mach**(2/3) ~ 4e-11 is the attainable relative accuracy at the auto step
    x = np.linspace(-1, 1, 5)
    v = np.ones(5) / np.sqrt(5)
    got = central_difference(np.sin, x, v)
    assert relative_error(got, np.cos(x) * v) <= 1e-9


def test_richardson_difference_beats_central():
    x, v = np.array([0.4, 1.3]), np.array([0.6, -0.8])
    exact = np.exp(x) * v
    err4 = relative_error(richardson_difference(np.exp, x, v), exact)
    assert err4 <= 1e-12       # eps_mach**(4/5) ~ 3e-13


def test_complex_step_exact_to_roundoff():
    x, v = np.array([0.3, -1.1, 2.0]), np.array([1.0, 0.5, -0.25])
    fun = lambda z: np.sin(z) * z ** 3  # noqa: E731
    exact = (np.cos(x) * x ** 3 + 3 * np.sin(x) * x ** 2) * v
    assert relative_error(complex_step(fun, x, v), exact) <= 4 * np.finfo(float).eps


def test_complex_step_rejects_real_output():
    with pytest.raises(TypeError, match="complex-safe"):
        complex_step(lambda z: np.abs(z), np.ones(2), np.ones(2))


def test_relative_error_scale_guards_cancellation():
    assert relative_error(1e-20, -1e-20) == pytest.approx(2.0)
    assert relative_error(1e-20, -1e-20, scale=1.0) == pytest.approx(2e-20)
    assert relative_error(0.0, 0.0) == 0.0


# -- dot-product test ---------------------------------------------------------------------------
def test_dot_product_test_exact_matrix_and_transpose_error():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 3))
    u, w = rng.standard_normal(3), rng.standard_normal(4)
    assert dot_product_test(lambda s: a @ s, lambda s: a.T @ s, u, w) <= 1e-15
    b = a.copy()
    b[0, 1] += 0.1
    assert dot_product_test(lambda s: a @ s, lambda s: b.T @ s, u, w) > 1e-3


def test_dot_product_test_shape_mismatch():
    with pytest.raises(ValueError, match="J u"):
        dot_product_test(np.ones(3), np.ones(2), np.ones(2), np.ones(4))


# -- Taylor test ----------------------------------------------------------------------------------
def _quartic(m):
    return float(np.sum(m ** 4) + np.sin(m).sum())


def test_taylor_rates_one_and_two_measured():
    m = np.array([0.5, -1.0, 0.25])
    dm = np.array([0.3, 0.2, -0.9])
    res = taylor_test(_quartic, 4 * m ** 3 + np.cos(m), m, dm)
    assert res.min_rate >= 1.95 and abs(res.slope1 - 2.0) <= 0.05
    assert np.all(np.abs(res.rates0 - 1.0) <= 0.05)
    assert res.usable.all()


def test_taylor_wrong_gradient_has_rate_one():
    m = np.array([0.5, -1.0, 0.25])
    dm = np.array([0.3, 0.2, -0.9])
    wrong = 4 * m ** 3 + np.cos(m) + np.array([0.5, 0.0, 0.0])
    res = taylor_test(_quartic, wrong, m, dm)
    assert abs(res.slope1 - 1.0) <= 0.1 and res.min_rate < 1.2


def test_taylor_linear_function_is_exact():
    m, dm = np.array([1.0, 2.0]), np.array([0.5, -0.5])
    res = taylor_test(lambda z: float(3 * z[0] - z[1]), np.array([3.0, -1.0]), m, dm)
    assert res.min_rate == np.inf and not res.usable.any()


def test_taylor_too_few_points_raises():
    # R1 = eps**4 falls below the roundoff floor after two points
    m, dm = np.array([0.0]), np.array([1.0])
    with pytest.raises(TaylorTestError, match="roundoff floor"):
        taylor_test(lambda z: float(z[0] ** 4 + 1.0), np.array([0.0]), m, dm, eps0=1e-3, n=6)
    res = taylor_test(lambda z: float(z[0] ** 4 + 1.0), np.array([0.0]), m, dm, eps0=1e-3,
                      n=6, strict=False)
    assert np.isnan(res.min_rate)


# -- check_layer ----------------------------------------------------------------------------------
def test_user_class_without_base_passes_all_checks():
    layer = UserTanhDense(3, 4)
    x = np.random.default_rng(1).standard_normal((2, 3))
    report = check_layer(layer, x=x)
    assert report.passed, str(report)
    f = report.figures
    assert f["fd_x"] <= 1e-9 and f["fd_params"] <= 1e-9
    assert f["complex_x"] <= 1e-14 and f["complex_params"] <= 1e-14
    assert f["dot_x"] <= 1e-14 and f["dot_params"] <= 1e-14
    assert 1.9 <= f["taylor_min_rate"] <= 2.1
    assert "PASS" in str(report) and "fd_x" in str(report)


def test_sign_flip_caught_by_every_x_figure():
    report = check_layer(SignFlipTanhDense(3, 4), x=np.random.default_rng(2).random((2, 3)))
    assert report.passed is False
    assert report.figures["fd_x"] > 0.1 and report.figures["dot_x"] > 0.1
    assert report.figures["taylor_min_rate"] < 1.2
    assert report.figures["fd_params"] <= 1e-7
    assert any("fd_x" in msg for msg in report.failures)


def test_bias_error_caught_by_param_figures():
    report = check_layer(BiasSlipTanhDense(3, 4), x=np.random.default_rng(3).random((2, 3)))
    assert report.passed is False
    assert report.figures["fd_params"] > 1e-4 and report.figures["complex_params"] > 1e-4
    assert report.figures["fd_x"] <= 1e-7


def test_tiny_error_seen_by_complex_and_dot_not_fd():
    report = check_layer(TinyErrorTanhDense(3, 4), x=np.random.default_rng(4).random((2, 3)))
    assert report.figures["fd_x"] <= 1e-7          # below FD resolution: FD alone would pass
    assert report.figures["complex_x"] > 1e-13 and report.figures["dot_x"] > 1e-12
    assert report.passed is False


def test_piecewise_linear_layer_uses_fd_only():
    x = gs.away_from_kinks(np.random.default_rng(5).uniform(-2, 2, (3, 4)), 1e-2)
    report = check_layer(UserReLU(), x=x)
    assert report.passed, str(report)
    assert "complex" in report.skipped and "complex_x" not in report.figures
    assert report.figures["dot_x"] <= 1e-12 and report.figures["taylor_min_rate"] == np.inf
    assert "fd_params" not in report.figures


def test_stochastic_user_layer_mask_frozen():
    x = np.random.default_rng(6).standard_normal((3, 5))
    report = check_layer(UserDropout(), x=x, rng=np.random.default_rng(11))
    assert report.passed, str(report)


def test_time_dependent_layer_requires_t():
    x = np.random.default_rng(7).standard_normal((2, 3))
    with pytest.raises(ValueError, match="pass `t=`"):
        check_layer(UserTimeScale(), x=x)
    assert check_layer(UserTimeScale(), x=x, t=0.7).passed


def test_float32_tolerances_and_skips():
    layer = UserTanhDense(3, 2)
    x = np.random.default_rng(8).standard_normal((2, 3)).astype(np.float32)
    report = check_layer(layer, x=x)
    assert report.passed, str(report)
    assert report.tolerances == default_tolerances(np.float32)
    assert set(report.skipped) == {"complex", "taylor"}


def test_check_layer_argument_errors():
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match="unknown entries"):
        check_layer(UserTanhDense(3, 2), x=x, checks=["fdd"])
    with pytest.raises(TypeError, match="layer protocol"):
        check_layer(object(), x=x)
    with pytest.raises(ValueError, match="unknown keys"):
        check_layer(UserTanhDense(3, 2), x=x, tol={"fd_x": 1.0})


def test_report_is_dataclass_with_readable_failures():
    report = check_layer(SignFlipTanhDense(2, 2), x=np.ones((1, 2)), checks=["fd"])
    assert isinstance(report, LayerReport)
    assert set(report.figures) == {"fd_x", "fd_params"}
    assert "FAIL" in str(report) and "violates" in str(report)


# -- strategies ----------------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(x=gs.kink_free_arrays((3, 4), margin=1e-2), d=gs.unit_directions((5,)),
       y=gs.distinct_arrays((2, 6), margin=5e-2), shape=gs.image_shapes())
def test_strategies_respect_their_contracts(x, d, y, shape):
    assert np.all(np.isfinite(x)) and np.min(np.abs(x)) >= 1e-2 and np.max(np.abs(x)) <= 2.01
    assert abs(np.linalg.norm(d) - 1.0) <= 1e-12
    gaps = np.diff(np.sort(y.ravel()))
    assert np.min(gaps) >= 5e-2 * 0.75
    n, c, h, w = shape
    assert 1 <= n <= 3 and 1 <= c <= 3 and 1 <= h <= 5 and 1 <= w <= 5


def test_taylor_adaptive_halving_escapes_cancellation():
    # R1 = |eps**2 - 50 eps**3|: the eps**3 term dominates, then cancels the eps**2 term near
    # eps = 0.02; a fixed 6-point list from 1e-2 sees min rate 1.42, adaptive halving reaches 2
    def fun(z):
        return float(z[0] ** 2 - 50 * z[0] ** 3)

    m, dm, g = np.array([0.0]), np.array([1.0]), np.array([0.0])
    assert taylor_test(fun, g, m, dm, max_points=6).min_rate < 1.5
    res = taylor_test(fun, g, m, dm)
    assert res.min_rate >= 1.9 and abs(res.slope1 - 2.0) <= 0.05 and res.eps.size > 6


# -- catalog and CLI ------------------------------------------------------------------------------
def _layer_types(layer):
    yield type(layer)
    for child in getattr(layer, "layers", ()):
        yield from _layer_types(child)
    if hasattr(layer, "inner"):
        yield from _layer_types(layer.inner)


def test_catalog_covers_every_builtin_layer():
    builtin = {obj for mod in (activation, compose, conv, dropout, linear, norm, pool, shape)
               for name, obj in vars(mod).items()
               if isinstance(obj, type) and issubclass(obj, Layer) and not name.startswith("_")
               and obj.__module__ == mod.__name__}
    covered = {t for _, layer, _, _ in builtin_examples() for t in _layer_types(layer)}
    assert builtin - covered == set()


def test_cli_passes_on_builtins_and_prints_table(capsys):
    assert cli.main([]) == 0
    out = capsys.readouterr().out
    assert "taylor_mi" in out and "Conv2d" in out and "0 failed" in out
    assert cli.main(["--dtype", "float32"]) == 0
    assert "(float32)" in capsys.readouterr().out


def test_cli_exits_1_on_a_broken_layer(capsys, monkeypatch):
    x = np.random.default_rng(0).standard_normal((2, 3))
    monkeypatch.setattr(cli, "builtin_examples",
                        lambda rng: [("sign-flipped dense", SignFlipTanhDense(3, 2), x, {})])
    assert cli.main([]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "1 failed" in out


def test_check_layer_on_backend(xp):
    """check_layer on device arrays (CuPy case skips without a GPU)."""
    net = Sequential(Linear(3, 4), Tanh(), Linear(4, 2))
    params = net.init(np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((2, 3))
    if xp is not np:
        params, x = xp.asarray(params), xp.asarray(x)
    report = check_layer(net, x=x, params=params)
    assert report.passed, str(report)
    assert report.figures["complex_x"] <= 1e-13 and report.figures["dot_params"] <= 1e-12
