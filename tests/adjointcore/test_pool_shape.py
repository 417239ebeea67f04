"""Pooling and shape layers: forward against naive references, VJPs against finite differences."""
import numpy as np
import pytest

from adjointcore.backend import to_host
from adjointcore.errors import ParameterError, ShapeError
from adjointcore.gradcheck import check_layer
from adjointcore.layers.pool import AvgPool2d, GlobalAvgPool2d, MaxPool2d
from adjointcore.layers.shape import ChannelPad, ChannelUnpad, Flatten, Reshape

from .test_linear import FD_TOL, directional_errors

# (kernel, stride, padding, input H x W): default stride, overlapping windows with padding,
# asymmetric pairs, stride 1.
POOLS = {
    "k2": (2, None, 0, (4, 6)),
    "k3s2p1": (3, 2, 1, (5, 6)),
    "k23s1p11": ((2, 3), 1, (1, 1), (3, 4)),
    "k3s2rest": (3, 2, 0, (6, 5)),
}


def separated(rng, shape, gap=0.05):
    """Distinct values at least ``gap`` apart (no ties, no kinks within an FD step)."""
    return (rng.permutation(np.prod(shape)) * gap - 1.0).reshape(shape)


def reference_pool(x, kernel, stride, padding, reduce, fill):
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, h, w = x.shape
    xpad = np.full((n, c, h + 2 * ph, w + 2 * pw), fill)
    xpad[:, :, ph:ph + h, pw:pw + w] = x
    ho, wo = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    y = np.empty((n, c, ho, wo))
    for i in range(ho):
        for j in range(wo):
            y[:, :, i, j] = reduce(xpad[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw], axis=(2, 3))
    return y


def make_pool(cls, name, rng, n=2, c=3):
    k, s, p, hw = POOLS[name]
    return cls(k, stride=s, padding=p), separated(rng, (n, c) + hw)


# -- pooling: forward -------------------------------------------------------------------------
@pytest.mark.parametrize("name", POOLS)
@pytest.mark.parametrize("cls, reduce, fill", [(MaxPool2d, np.max, -np.inf),
                                               (AvgPool2d, np.mean, 0.0)])
def test_pool_forward_matches_reference(xp, rng, name, cls, reduce, fill):
    layer, x = make_pool(cls, name, rng)
    expected = reference_pool(x, layer.kernel_size, layer.stride, layer.padding, reduce, fill)
    y, _ = layer.forward(xp.zeros(0), xp.asarray(x))
    assert y.shape == expected.shape == layer.output_shape(x.shape)
    # max is exact; a mean of <= 9 terms differs by summation order only
    np.testing.assert_allclose(to_host(y), expected, rtol=1e-14, atol=1e-15)


def test_global_avg_pool(xp, rng):
    x = rng.standard_normal((2, 3, 4, 5))
    layer = GlobalAvgPool2d()
    y, cache = layer.forward(None, xp.asarray(x))
    np.testing.assert_allclose(to_host(y), x.mean(axis=(2, 3)), rtol=1e-14)
    assert layer.output_shape(x.shape) == (2, 3)
    x_bar, p_bar = layer.vjp(None, cache, xp.ones((2, 3)))
    np.testing.assert_allclose(to_host(x_bar), np.full(x.shape, 1 / 20), rtol=1e-15)
    assert p_bar.shape == (0,)


def test_max_pool_ties_route_to_first_maximum():
    x = np.zeros((1, 1, 2, 4))
    x[0, 0, :, 2:] = [[5.0, 5.0], [5.0, 1.0]]             # second window: three tied maxima
    layer = MaxPool2d(2)
    y, cache = layer.forward(None, x)
    x_bar, _ = layer.vjp(None, cache, np.array([[[[2.0, 3.0]]]]))
    expected = np.zeros_like(x)
    expected[0, 0, 0, 0] = 2.0                            # all-zero window: first element
    expected[0, 0, 0, 2] = 3.0                            # first 5 in row-major order
    np.testing.assert_array_equal(x_bar, expected)
    assert cache.argmax.dtype == np.uint8


def test_max_pool_overlapping_windows_accumulate():
    """With stride 1 one input can be the maximum of several windows; its gradients add up."""
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 1.0
    layer = MaxPool2d(2, stride=1)
    y, cache = layer.forward(None, x)
    x_bar, _ = layer.vjp(None, cache, np.array([[[[1.0, 2.0], [3.0, 4.0]]]]))
    assert x_bar[0, 0, 1, 1] == 10.0 and x_bar.sum() == 10.0


# -- pooling: gradients -----------------------------------------------------------------------
@pytest.mark.parametrize("name", POOLS)
@pytest.mark.parametrize("cls", [MaxPool2d, AvgPool2d])
def test_pool_vjp_matches_finite_difference(xp, rng, name, cls):
    layer, x = make_pool(cls, name, rng)
    err_x, err_p = directional_errors(layer, xp.zeros(0), xp.asarray(x))
    assert err_x <= FD_TOL and err_p is None


@pytest.mark.parametrize("layer", [MaxPool2d(3, stride=2, padding=1), AvgPool2d((2, 3)),
                                   GlobalAvgPool2d()])
def test_pool_check_layer_passes(rng, layer):
    report = check_layer(layer, separated(rng, (2, 2, 5, 6)), seed=2)
    assert report.passed, str(report)


# -- pooling: bad input -----------------------------------------------------------------------
def test_pool_validation(rng):
    with pytest.raises(ValueError, match="`padding`.*at most half"):
        MaxPool2d(2, padding=2)
    with pytest.raises(ValueError, match="`kernel_size`"):
        AvgPool2d(0)
    with pytest.raises(ValueError, match="`stride`"):
        MaxPool2d(2, stride=(1, 0))
    with pytest.raises(ShapeError, match="`x` must have 4 dimensions"):
        MaxPool2d(2).forward(None, np.ones((2, 4, 4)))
    with pytest.raises(TypeError, match="`x` has dtype complex128"):
        MaxPool2d(2).forward(None, np.ones((1, 1, 4, 4), dtype=complex))
    with pytest.raises(TypeError, match="`x` has dtype int"):
        AvgPool2d(2).forward(None, np.ones((1, 1, 4, 4), dtype=int))
    with pytest.raises(ShapeError, match="smaller than the kernel 3x3"):
        AvgPool2d(3).forward(None, np.ones((1, 1, 2, 4)))
    with pytest.raises(ParameterError, match="`params`.*length 1, expected 0"):
        MaxPool2d(2).forward(np.ones(1), np.ones((1, 1, 4, 4)))
    y, cache = MaxPool2d(2).forward(None, rng.standard_normal((1, 1, 4, 4)))
    with pytest.raises(ShapeError, match="`y_bar` must have shape"):
        MaxPool2d(2).vjp(None, cache, np.ones((1, 1, 2, 3)))
    assert not MaxPool2d(2).analytic and AvgPool2d(2).analytic


# -- shape layers -----------------------------------------------------------------------------
SHAPE_LAYERS = {
    "flatten": (Flatten(), (2, 3, 4, 5), (2, 60)),
    "reshape": (Reshape((5, -1)), (2, 3, 4, 5), (2, 5, 12)),
    "pad_dense": (ChannelPad(2), (3, 4), (3, 6)),
    "pad_image": (ChannelPad(3), (2, 2, 3, 4), (2, 5, 3, 4)),
    "unpad_dense": (ChannelUnpad(1), (3, 4), (3, 3)),
    "unpad_image": (ChannelUnpad(2), (2, 5, 3, 4), (2, 3, 3, 4)),
}


@pytest.mark.parametrize("name", SHAPE_LAYERS)
def test_shape_layer_adjoint_identity(xp, rng, name):
    """For a linear map, <y_bar, f(u)> = <f^T(y_bar), u> to roundoff, and shapes round-trip."""
    layer, in_shape, out_shape = SHAPE_LAYERS[name]
    u = xp.asarray(rng.standard_normal(in_shape))
    y, cache = layer.forward(xp.zeros(0), u)
    assert y.shape == out_shape == layer.output_shape(in_shape)
    y_bar = xp.asarray(rng.standard_normal(out_shape))
    x_bar, p_bar = layer.vjp(xp.zeros(0), cache, y_bar)
    assert x_bar.shape == in_shape and p_bar.shape == (0,)
    lhs, rhs = float(xp.vdot(y_bar, y)), float(xp.vdot(x_bar, u))
    assert abs(lhs - rhs) <= 1e-13 * max(1.0, abs(lhs))   # same products, summed differently
    err_x, _ = directional_errors(layer, xp.zeros(0), u)
    assert err_x <= FD_TOL


def test_channel_pad_values_and_round_trip(rng):
    x = rng.standard_normal((2, 3, 2, 2))
    y, _ = ChannelPad(2).forward(None, x)
    np.testing.assert_array_equal(y[:, :3], x)
    np.testing.assert_array_equal(y[:, 3:], 0.0)
    back, _ = ChannelUnpad(2).forward(None, y)
    np.testing.assert_array_equal(back, x)
    assert not np.shares_memory(back, y)
    same, _ = ChannelPad(0).forward(None, x)
    np.testing.assert_array_equal(same, x)


def test_shape_layers_accept_complex(rng):
    z = rng.standard_normal((2, 6)) + 1j * rng.standard_normal((2, 6))
    for layer in (Flatten(), Reshape((2, 3)), ChannelPad(1), ChannelUnpad(1)):
        assert layer.analytic and layer.forward(None, z)[0].dtype == np.complex128


@pytest.mark.parametrize("make, error, match", [
    (lambda: Reshape((5, 5)).forward(None, np.ones((2, 12))), ShapeError,
     r"cannot reshape samples of shape \(12,\)"),
    (lambda: Reshape((-1, -1)), ValueError, "`shape`"),
    (lambda: Reshape((0, 3)), ValueError, "`shape`"),
    (lambda: ChannelPad(-1), ValueError, "`extra`"),
    (lambda: ChannelUnpad(2.5), ValueError, "`extra`"),
    (lambda: ChannelUnpad(3).forward(None, np.ones((2, 3))), ShapeError, "more than 3 channels"),
    (lambda: Flatten().forward(None, np.ones(4)), ShapeError, "`x` must have"),
    (lambda: Flatten().forward(None, np.ones((2, 2), dtype=int)), TypeError, "`x` has dtype"),
    (lambda: Flatten().forward(np.ones(2), np.ones((2, 2))), ParameterError, "`params`"),
])
def test_shape_layer_validation(make, error, match):
    with pytest.raises(error, match=match):
        make()
