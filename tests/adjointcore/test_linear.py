"""Linear and ConcatLinear: forward against a reference, VJPs against finite differences."""
import numpy as np
import pytest

from adjointcore.backend import get_array_module, to_host
from adjointcore.errors import NonFiniteError, ParameterError, ShapeError
from adjointcore.gradcheck import check_layer
from adjointcore.layers.conv import Conv2d
from adjointcore.layers.linear import ConcatLinear, Linear

# Central differences of maps that are linear in x (and bilinear in (x, params)) are exact up to
# roundoff ~ eps_mach * |f| / eps ~ 1e-10; 1e-7 is the project's float64 FD standard.
FD_TOL = 1e-7


def to_xp(xp, a):
    return xp.asarray(a)


def directional_errors(layer, params, x, seed=0, **context):
    """Relative errors of the VJP against a central difference, along x and along params.

    Compares ``<vjp(y_bar), u>`` with ``(<y_bar, f(x + eps u)> - <y_bar, f(x - eps u)>) / 2 eps``
    for a random ``u`` (entries O(1)), ``eps = 1e-6 * max(1, |x|_inf)``. Returns
    ``(err_x, err_params)`` (``err_params`` is None for parameter-free layers).
    """
    xp = get_array_module(x)
    draw = np.random.default_rng(seed)
    y, cache = layer.forward(params, x, **context)
    y_bar = xp.asarray(draw.standard_normal(y.shape).astype(y.dtype))
    x_bar, p_bar = layer.vjp(params, cache, y_bar)

    def err(point, direction, analytic, evaluate):
        scale = max(1.0, float(xp.max(xp.abs(point)))) if point.size else 1.0
        eps = 1e-6 * scale
        plus = float(xp.vdot(y_bar, evaluate(point + eps * direction)).real)
        minus = float(xp.vdot(y_bar, evaluate(point - eps * direction)).real)
        fd = (plus - minus) / (2 * eps)
        return abs(fd - analytic) / max(abs(fd), abs(analytic), 1e-300)

    u = xp.asarray(draw.standard_normal(x.shape).astype(x.dtype))
    err_x = err(x, u, float(xp.vdot(x_bar, u).real),
                lambda z: layer.forward(params, z, **context)[0])
    if layer.n_params == 0:
        return err_x, None
    v = xp.asarray(draw.standard_normal(params.shape).astype(params.dtype))
    err_p = err(params, v, float(xp.vdot(p_bar, v).real),
                lambda p: layer.forward(p, x, **context)[0])
    return err_x, err_p


@pytest.fixture
def dense(rng):
    return rng.standard_normal((5, 4))


# -- forward ----------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_linear_forward_matches_reference(xp, rng, dense, bias):
    layer = Linear(4, 3, bias=bias)
    params = layer.init(rng)
    w = params[:12].reshape(3, 4)
    b = params[12:] if bias else np.zeros(3)
    expected = np.array([[sum(w[o, i] * dense[n, i] for i in range(4)) + b[o] for o in range(3)]
                         for n in range(5)])
    y, _ = layer.forward(to_xp(xp, params), to_xp(xp, dense))
    # sums of 4-5 products of O(1) numbers: roundoff ~ 1e-16; 1e-14 leaves a wide margin
    np.testing.assert_allclose(to_host(y), expected,
                               rtol=1e-14, atol=1e-14)


def test_linear_param_views_are_views(rng):
    layer = Linear(4, 3)
    params = layer.init(rng)
    views = layer.views(params)
    assert list(layer.param_shapes) == ["weight", "bias"]
    assert views["weight"].shape == (3, 4) and views["bias"].shape == (3,)
    views["bias"][0] = 123.0
    assert params[12] == 123.0
    assert layer.n_params == 15 and Linear(4, 3, bias=False).n_params == 12


def test_concat_linear_equals_linear_on_concatenated_input(xp, rng, dense):
    t = 0.37
    layer = ConcatLinear(4, 3)
    params = layer.init(rng)
    y, _ = layer.forward(to_xp(xp, params), to_xp(xp, dense), t=t)
    augmented = np.concatenate([dense, np.full((5, 1), t)], axis=1)
    y_ref, _ = Linear(5, 3).forward(params, augmented)
    # same products summed in a different order: roundoff only
    np.testing.assert_allclose(to_host(y), y_ref,
                               rtol=1e-13, atol=1e-14)
    assert layer.param_shapes["weight"] == (3, 5)


def test_linear_complex_input_is_analytic(rng, dense):
    """f(a + ib) = f(a) + i (f(b) - bias) for an affine map: no conjugation anywhere."""
    layer = Linear(4, 3)
    params = layer.init(rng)
    imag = rng.standard_normal(dense.shape)
    y, _ = layer.forward(params, dense + 1j * imag)
    y_re, _ = layer.forward(params, dense)
    y_im, _ = layer.forward(params, imag)
    np.testing.assert_allclose(y, y_re + 1j * (y_im - params[12:]), rtol=1e-14, atol=1e-14)
    assert layer.analytic and not layer.time_dependent


def test_float32_keeps_dtype_and_agrees_with_float64(rng, dense):
    layer = ConcatLinear(4, 3)
    p64 = layer.init(np.random.default_rng(1))
    p32 = layer.init(np.random.default_rng(1), dtype=np.float32)
    y32, c32 = layer.forward(p32, dense.astype(np.float32), t=0.5)
    y64, c64 = layer.forward(p64, dense, t=0.5)
    assert y32.dtype == np.float32
    y_bar = rng.standard_normal(y64.shape)
    g32 = layer.vjp(p32, c32, y_bar.astype(np.float32))
    g64 = layer.vjp(p64, c64, y_bar)
    assert g32[0].dtype == np.float32 and g32[1].dtype == np.float32
    # float32 roundoff of O(1) sums of 5 terms: ~1e-7; 1e-5 is 100 eps_f32
    for a, b in zip((y32,) + g32, (y64,) + g64, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


# -- gradients --------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
def test_linear_vjp_matches_finite_difference(xp, rng, dense, bias):
    layer = Linear(4, 3, bias=bias)
    err_x, err_p = directional_errors(layer, to_xp(xp, layer.init(rng)), to_xp(xp, dense))
    assert err_x <= FD_TOL and err_p <= FD_TOL


@pytest.mark.parametrize("t", [0.0, -1.25, np.float64(2.5), np.array(0.75)])
def test_concat_linear_vjp_matches_finite_difference(xp, rng, dense, t):
    layer = ConcatLinear(4, 3)
    err_x, err_p = directional_errors(layer, to_xp(xp, layer.init(rng)), to_xp(xp, dense), t=t)
    assert err_x <= FD_TOL and err_p <= FD_TOL


@pytest.mark.parametrize("layer, t", [(Linear(6, 2), None), (ConcatLinear(6, 2), 0.3),
                                      (Linear(6, 2, bias=False, init="xavier_uniform"), None)])
def test_check_layer_passes(rng, layer, t):
    report = check_layer(layer, rng.standard_normal((3, 6)), t=t, seed=4)
    assert report.passed, str(report)


def test_need_params_false_skips_params_bar(rng, dense):
    layer = ConcatLinear(4, 3)
    params = layer.init(rng)
    y, cache = layer.forward(params, dense, t=1.0)
    x_bar, p_bar = layer.vjp(params, cache, np.ones_like(y), need_params=False)
    assert p_bar is None and x_bar.shape == dense.shape
    full = layer.vjp(params, cache, np.ones_like(y))
    np.testing.assert_array_equal(x_bar, full[0])


def test_output_shape(rng):
    assert Linear(4, 7).output_shape((9, 4)) == (9, 7)
    assert ConcatLinear(4, 7).output_shape((2, 4)) == (2, 7)
    with pytest.raises(ShapeError, match="in_features"):
        Linear(4, 7).output_shape((9, 5))


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("make_x, make_p, error, match", [
    (lambda r: r.standard_normal((5, 4, 1)), None, ShapeError, "`x` must have 2 dimensions"),
    (lambda r: r.standard_normal((5, 3)), None, ShapeError, "in_features=4"),
    (lambda r: np.ones((5, 4), dtype=int), None, TypeError, "`x` has dtype int"),
    (None, lambda p: p[:-1], ParameterError, "`params`.*length 14, expected 15"),
    (None, lambda p: p.reshape(5, 3), ParameterError, "`params`.*1-D"),
    (None, lambda p: p.astype(int), ParameterError, "`params`.*dtype int"),
])
def test_linear_rejects_bad_input(rng, make_x, make_p, error, match):
    layer = Linear(4, 3)
    x = make_x(rng) if make_x else rng.standard_normal((5, 4))
    params = layer.init(rng)
    params = make_p(params) if make_p else params
    with pytest.raises(error, match=match):
        layer.forward(params, x)


def test_linear_rejects_bad_cotangent(rng, dense):
    layer = Linear(4, 3)
    params = layer.init(rng)
    _, cache = layer.forward(params, dense)
    with pytest.raises(ShapeError, match="`y_bar` must have shape"):
        layer.vjp(params, cache, np.ones((5, 4)))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(in_features=0, out_features=3), ValueError, "`in_features`"),
    (dict(in_features=2, out_features=2.0), ValueError, "`out_features`"),
    (dict(in_features=2, out_features=3, bias="yes"), TypeError, "`bias`"),
    (dict(in_features=2, out_features=3, init="he"), ValueError, "`init`"),
])
def test_linear_rejects_bad_configuration(kwargs, error, match):
    with pytest.raises(error, match=match):
        Linear(**kwargs)


@pytest.mark.parametrize("t, error, match", [
    (None, TypeError, r"time-dependent.*t=t"),
    (np.array([0.1, 0.2]), ShapeError, "`t`.*scalar"),
    (float("nan"), NonFiniteError, "`t`"),
    (np.inf, NonFiniteError, "`t`"),
    (True, TypeError, "`t`"),
    ("0.5", TypeError, "`t`"),
])
def test_concat_linear_rejects_bad_time(rng, dense, t, error, match):
    layer = ConcatLinear(4, 3)
    with pytest.raises(error, match=match):
        layer.forward(layer.init(rng), dense, t=t)


@pytest.mark.parametrize("layer", [Linear(2, 3), Conv2d(1, 2, 3)], ids=["linear", "conv2d"])
def test_mixed_backends_are_refused_naming_the_layer(layer, monkeypatch):
    """A host ``x`` with device ``params`` is refused before any compute, the message naming
    the layer (its repr, formatted only on failure) and the fix. Without a GPU the device side
    is simulated by marking ``params`` as a CuPy array in the check."""
    import adjointcore.layers._checks as checks

    params = layer.init(np.random.default_rng(0))
    x = np.zeros((4, 2) if isinstance(layer, Linear) else (1, 1, 5, 5))
    monkeypatch.setattr(checks, "is_cupy_array", lambda a: a is params)
    with pytest.raises(TypeError, match=r"params` is on the GPU \(CuPy\) but `x` is on the host"
                       ) as err:
        layer.forward(params, x)
    assert str(err.value).startswith(repr(layer) + ":") and "to_device" in str(err.value)
