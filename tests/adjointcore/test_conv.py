"""Conv2d and ConcatConv2d: forward against a direct loop, VJPs against finite differences."""
import numpy as np
import pytest

from adjointcore.backend import to_host
from adjointcore.errors import NonFiniteError, ParameterError, ShapeError
from adjointcore.gradcheck import check_layer
from adjointcore.layers._conv_kernels import channel_major, input_grad_col2im, input_grad_transposed
from adjointcore.layers._im2col import Geometry
from adjointcore.layers.conv import ConcatConv2d, Conv2d

from .test_linear import FD_TOL, directional_errors

# (in, out, kernel, stride, padding, groups, input H x W). Covers both input-gradient paths:
# stride 1 with padding <= kernel - 1 (transposed convolution) and the col2im path (stride > 1,
# or padding > kernel - 1), asymmetric pairs, groups, depthwise and unused trailing rows.
CONFIGS = {
    "k3s1p1": (3, 4, 3, 1, 1, 1, (6, 5)),
    "k3s2p1": (3, 4, 3, 2, 1, 1, (7, 6)),
    "k23s12p02g2": (4, 6, (2, 3), (1, 2), (0, 2), 2, (5, 6)),
    "k1p2": (2, 3, 1, 1, 2, 1, (3, 4)),
    "depthwise": (4, 4, (3, 1), 1, (1, 0), 4, (5, 3)),
    "k3s3rest": (2, 3, 3, 3, 0, 1, (8, 7)),
}


def reference_conv(x, w, b, stride, padding, groups):
    """Direct evaluation of the definition, one output pixel and group at a time (tiny inputs)."""
    (sh, sw), (ph, pw) = stride, padding
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xpad = np.zeros((n, c, h + 2 * ph, wd + 2 * pw), dtype=np.result_type(x, w))
    xpad[:, :, ph:ph + h, pw:pw + wd] = x
    ho, wo = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    og = o // groups
    y = np.zeros((n, o, ho, wo), dtype=xpad.dtype)
    for i in range(ho):
        for j in range(wo):
            patch = xpad[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
            for g in range(groups):
                y[:, g * og:(g + 1) * og, i, j] = np.einsum(
                    "ncab,ocab->no", patch[:, g * cg:(g + 1) * cg], w[g * og:(g + 1) * og])
    return y + (0 if b is None else b[None, :, None, None])


def make(name, rng, layer_cls=Conv2d, n=2, **kwargs):
    cin, cout, k, s, p, g, hw = CONFIGS[name]
    layer = layer_cls(cin, cout, k, stride=s, padding=p, groups=g, **kwargs)
    return layer, layer.init(rng), rng.standard_normal((n, cin) + hw)


def pair(v):
    return v if isinstance(v, tuple) else (v, v)


# -- forward ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("bias", [True, False])
def test_forward_matches_direct_loop(xp, rng, name, bias):
    layer, params, x = make(name, rng, bias=bias)
    v = layer.views(params)
    expected = reference_conv(x, v["weight"], v.get("bias"), layer.stride, layer.padding,
                              layer.groups)
    y, _ = layer.forward(xp.asarray(params), xp.asarray(x))
    assert y.shape == expected.shape == layer.output_shape(x.shape)
    assert y.flags.c_contiguous
    # sums of <= 27 products of O(1) numbers in another order: roundoff ~ 1e-15
    np.testing.assert_allclose(to_host(y), expected, rtol=1e-13, atol=1e-13)


def test_param_layout(rng):
    layer = Conv2d(4, 6, (2, 3), groups=2)
    assert layer.param_shapes == {"weight": (6, 2, 2, 3), "bias": (6,)}
    assert layer.n_params == 6 * 2 * 2 * 3 + 6
    assert ConcatConv2d(5, 6, 3, groups=3).param_shapes["weight"] == (6, 2, 3, 3)
    params = layer.init(rng)
    layer.views(params)["weight"][0, 0, 0, 0] = 7.0
    assert params[0] == 7.0


def test_concat_conv_equals_conv_of_concatenated_input(xp, rng):
    t = -0.6
    layer = ConcatConv2d(3, 4, 3, padding=1)
    params = layer.init(rng)
    x = rng.standard_normal((2, 3, 5, 4))
    y, _ = layer.forward(xp.asarray(params), xp.asarray(x), t=t)
    augmented = np.concatenate([x, np.full((2, 1, 5, 4), t)], axis=1)
    y_ref, _ = Conv2d(4, 4, 3, padding=1).forward(params, augmented)
    # identical products, different summation order: roundoff only
    np.testing.assert_allclose(to_host(y), y_ref, rtol=1e-13, atol=1e-13)
    assert layer.time_dependent and layer.analytic


def test_complex_input_is_analytic(rng):
    """Convolution is linear in x: f(a + ib) = f(a) + i (f(b) - bias)."""
    layer, params, x = make("k3s2p1", rng)
    imag = rng.standard_normal(x.shape)
    y, _ = layer.forward(params, x + 1j * imag)
    y_re, _ = layer.forward(params, x)
    y_im, _ = layer.forward(params, imag)
    bias = layer.views(params)["bias"][None, :, None, None]
    np.testing.assert_allclose(y, y_re + 1j * (y_im - bias), rtol=1e-13, atol=1e-13)


def test_float32_keeps_dtype_and_agrees_with_float64(rng):
    layer, p64, x = make("k23s12p02g2", rng)
    y64, c64 = layer.forward(p64, x)
    y32, c32 = layer.forward(p64.astype(np.float32), x.astype(np.float32))
    y_bar = rng.standard_normal(y64.shape)
    g64 = layer.vjp(p64, c64, y_bar)
    g32 = layer.vjp(p64.astype(np.float32), c32, y_bar.astype(np.float32))
    assert y32.dtype == g32[0].dtype == g32[1].dtype == np.float32
    # float32 roundoff of sums of <= 60 O(1) terms: ~1e-6 absolute; 1e-4 leaves margin
    for a, b in zip((y32,) + g32, (y64,) + g64, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


# -- gradients --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("cache_cols", [False, True])
def test_vjp_matches_finite_difference(xp, rng, name, cache_cols):
    layer, params, x = make(name, rng, cache_cols=cache_cols)
    err_x, err_p = directional_errors(layer, xp.asarray(params), xp.asarray(x))
    assert err_x <= FD_TOL and err_p <= FD_TOL


@pytest.mark.parametrize("name", ["k3s1p1", "k3s2p1", "k1p2"])
def test_concat_conv_vjp_matches_finite_difference(xp, rng, name):
    layer, params, x = make(name, rng, layer_cls=ConcatConv2d)
    err_x, err_p = directional_errors(layer, xp.asarray(params), xp.asarray(x), t=0.8)
    assert err_x <= FD_TOL and err_p <= FD_TOL


@pytest.mark.parametrize("name", ["k3s1p1", "k23s12p02g2"])
@pytest.mark.parametrize("layer_cls, t", [(Conv2d, None), (ConcatConv2d, 1.5)])
def test_check_layer_passes(rng, name, layer_cls, t):
    cin, cout, k, s, p, g, hw = CONFIGS[name]
    if layer_cls is ConcatConv2d:
        cin -= 1 if g > 1 else 0          # in_channels + 1 must be divisible by groups
    layer = layer_cls(cin, cout, k, stride=s, padding=p, groups=g)
    report = check_layer(layer, rng.standard_normal((2, cin) + hw), t=t, seed=3)
    assert report.passed, str(report)


def test_input_gradient_paths_agree(rng):
    """Transposed-convolution and col2im input gradients are the same linear map."""
    layer, params, x = make("k3s1p1", rng)
    w = layer.views(params)["weight"]
    y_bar = rng.standard_normal(layer.output_shape(x.shape))
    geom = Geometry(layer.kernel_size, layer.stride, layer.padding)
    n, c, h, wd = x.shape
    a = input_grad_transposed(w, y_bar, geom, 1, (h, wd))
    b = input_grad_col2im(w, channel_major(y_bar, 1), geom, 1, (c, n, h + 2, wd + 2),
                          y_bar.shape[2:], (h, wd))
    np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-13)


def test_cached_columns_give_identical_gradients(rng):
    lean, params, x = make("k3s2p1", rng)
    fat = Conv2d(3, 4, 3, stride=2, padding=1, cache_cols=True)
    y, c_lean = lean.forward(params, x)
    _, c_fat = fat.forward(params, x)
    assert c_lean.cols is None and c_fat.x_cm is None
    y_bar = rng.standard_normal(y.shape)
    for a, b in zip(lean.vjp(params, c_lean, y_bar), fat.vjp(params, c_fat, y_bar), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind, expect_view", [
    ("plain k3s2p1", True), ("plain k3s1p1", True), ("time channel", False), ("1x1", False),
    ("valid k3s1p0", False)])
def test_cache_keeps_the_input_itself_where_the_columns_come_from_phase_planes(rng, kind,
                                                                             expect_view):
    """The phase planes read the caller's NCHW input through a transposed view, so the cache
    keeps that view (no padded copy); where a time channel is appended or the columns are a
    window view (1x1) or come from the window fallback (valid k3), it keeps one C-contiguous
    unpadded copy. Either way the VJP sees the same columns: bitwise those of a layer that
    caches them."""
    layer = {"plain k3s2p1": Conv2d(3, 4, 3, stride=2, padding=1),
             "plain k3s1p1": Conv2d(3, 4, 3, padding=1),
             "time channel": ConcatConv2d(3, 4, 3, padding=1),
             "1x1": Conv2d(3, 4, 1),
             "valid k3s1p0": Conv2d(3, 4, 3)}[kind]
    params = layer.init(rng)
    x = rng.standard_normal((2, 3, 6, 5))
    kw = {"t": 0.25} if kind == "time channel" else {}
    y, cache = layer.forward(params, x, **kw)
    extra = 1 if kind == "time channel" else 0
    assert cache.x_cm.shape == (3 + extra, 2, 6, 5)
    assert np.shares_memory(cache.x_cm, x) is expect_view
    assert expect_view or cache.x_cm.flags.c_contiguous
    np.testing.assert_array_equal(cache.x_cm[:3], x.transpose(1, 0, 2, 3))
    fat = type(layer)(3, 4, layer.kernel_size, stride=layer.stride, padding=layer.padding,
                      cache_cols=True)
    _, c_fat = fat.forward(params, x, **kw)
    y_bar = rng.standard_normal(y.shape)
    for a, b in zip(layer.vjp(params, cache, y_bar), fat.vjp(params, c_fat, y_bar),
                    strict=True):
        np.testing.assert_array_equal(a, b)


def test_need_params_false_skips_params_bar(rng):
    layer, params, x = make("k3s1p1", rng)
    y, cache = layer.forward(params, x)
    x_bar, p_bar = layer.vjp(params, cache, np.ones_like(y), need_params=False)
    assert p_bar is None
    np.testing.assert_array_equal(x_bar, layer.vjp(params, cache, np.ones_like(y))[0])


@pytest.mark.parametrize("name", CONFIGS)
def test_output_shape_matches_forward(rng, name):
    layer, params, x = make(name, rng, n=1)
    ho = [(n + 2 * p - k) // s + 1 for n, k, s, p in
          zip(x.shape[2:], layer.kernel_size, layer.stride, layer.padding, strict=True)]
    assert layer.output_shape(x.shape) == (1, layer.out_channels, *ho)
    assert layer.forward(params, x)[0].shape == layer.output_shape(x.shape)


# -- bad input --------------------------------------------------------------------------------
@pytest.mark.parametrize("x_shape, dtype, error, match", [
    ((2, 3, 5), np.float64, ShapeError, "`x` must have 4 dimensions"),
    ((2, 4, 5, 5), np.float64, ShapeError, "`x` has 4 channels.*in_channels=3"),
    ((2, 3, 1, 5), np.float64, ShapeError, "smaller than the kernel 3x3"),
    ((2, 3, 5, 5), np.int64, TypeError, "`x` has dtype int64"),
])
def test_rejects_bad_x(rng, x_shape, dtype, error, match):
    layer = Conv2d(3, 2, 3)
    with pytest.raises(error, match=match):
        layer.forward(layer.init(rng), np.ones(x_shape, dtype=dtype))


def test_rejects_bad_params_and_cotangent(rng):
    layer = Conv2d(3, 2, 3, padding=1)
    params = layer.init(rng)
    x = rng.standard_normal((2, 3, 4, 4))
    with pytest.raises(ParameterError, match="`params`.*expected 56"):
        layer.forward(params[:-1], x)
    with pytest.raises(ParameterError, match="`params`.*dtype int"):
        layer.forward(params.astype(int), x)
    y, cache = layer.forward(params, x)
    with pytest.raises(ShapeError, match="`y_bar` must have shape"):
        layer.vjp(params, cache, np.ones((2, 2, 3, 4)))


@pytest.mark.parametrize("args, kwargs, error, match", [
    ((4, 6, 3), dict(groups=3), ValueError, "`groups`=3 must divide.*in_channels=4"),
    ((4, 6, 3), dict(groups=0), ValueError, "`groups`"),
    ((3, 6, 0), {}, ValueError, "`kernel_size`"),
    ((3, 6, (3, 3, 3)), {}, ValueError, "`kernel_size`"),
    ((3, 6, 3), dict(stride=0), ValueError, "`stride`"),
    ((3, 6, 3), dict(padding=-1), ValueError, "`padding`"),
    ((3, 6, 3), dict(padding=1.5), ValueError, "`padding`"),
    ((0, 6, 3), {}, ValueError, "`in_channels`"),
    ((3, 6, 3), dict(init="orthogonal"), ValueError, "`init`"),
    ((3, 6, 3), dict(cache_cols=1), TypeError, "`cache_cols`"),
])
def test_rejects_bad_configuration(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        Conv2d(*args, **kwargs)


def test_concat_conv_validation(rng):
    with pytest.raises(ValueError, match=r"in_channels \+ 1.*=5"):
        ConcatConv2d(4, 6, 3, groups=2)
    layer = ConcatConv2d(3, 2, 3)
    params = layer.init(rng)
    x = rng.standard_normal((1, 3, 4, 4))
    with pytest.raises(TypeError, match="time-dependent"):
        layer.forward(params, x)
    with pytest.raises(NonFiniteError, match="`t`"):
        layer.forward(params, x, t=np.nan)
    with pytest.raises(ShapeError, match="`t`"):
        layer.forward(params, x, t=np.ones(2))
    with pytest.raises(ShapeError, match="in_channels=3"):
        layer.output_shape((1, 4, 4, 4))


def test_init_respects_fan_in(rng):
    layer = Conv2d(4, 8, 3, groups=2, init="uniform")
    v = layer.views(layer.init(rng))
    bound = 1 / np.sqrt(2 * 3 * 3)                     # fan_in = in/groups * kh * kw
    assert np.abs(v["weight"]).max() <= bound and np.abs(v["bias"]).max() <= bound
    assert np.abs(v["weight"]).max() > 0.8 * bound     # 144 uniform draws reach the edge
