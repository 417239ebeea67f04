"""Mutation suite: deliberately broken VJPs of every layer family must be rejected.

Each mutant overrides ``vjp`` (subclass) or wraps a built-in layer and injects one classic bug.
``check_layer`` must return ``passed is False`` with the figure that sees the bug far above its
tolerance (``> 1e-3`` for relative errors, i.e. 1e4 times the 1e-7 FD tolerance; Taylor rate
near 1). Where a wrapper is needed, the same wrapper without the bug is checked to pass, so the
failure is the bug's and not the plumbing's.
"""
import numpy as np
import pytest

from adjointcore.gradcheck import check_layer
from adjointcore.gradcheck import strategies as gs
from adjointcore.layers.activation import LeakyReLU, Sigmoid, Tanh
from adjointcore.layers.compose import Sequential
from adjointcore.layers.conv import Conv2d
from adjointcore.layers.dropout import Dropout
from adjointcore.layers.elementwise import Parallel, Scale
from adjointcore.layers.linear import ConcatLinear, Linear
from adjointcore.layers.norm import BatchNorm, GroupNorm
from adjointcore.layers.pool import AvgPool2d, MaxPool2d
from adjointcore.layers.residual import Residual
from adjointcore.layers.shape import ChannelPad, Flatten

SEEDS = [0, 1]
GROSS = 1e-3     # a real bug is an O(1) error; 1e4 x the FD tolerance leaves no doubt


def perturbed(layer, seed, scale=0.3):
    rng = np.random.default_rng(seed)
    p = layer.init(rng)
    return p + scale * rng.standard_normal(p.shape)


def image(seed, shape=(2, 2, 5, 4)):
    return np.random.default_rng(seed).uniform(-1.5, 1.5, shape)


def assert_caught(report, *figures, rate=True):
    assert report.passed is False, str(report)
    for name in figures:
        assert report.figures[name] > GROSS, str(report)
    if rate:
        assert report.figures["taylor_min_rate"] < 1.2, str(report)


# -- linear -------------------------------------------------------------------------------------
class TransposedWeightLinear(Linear):
    """x_bar = y_bar @ W.T instead of y_bar @ W (square layer, so shapes still match)."""

    def vjp(self, params, cache, y_bar, need_params=True):
        _, p_bar = super().vjp(params, cache, y_bar, need_params)
        return y_bar @ self.views(params)["weight"].T, p_bar


class NoTimeColumnConcatLinear(ConcatLinear):
    """Weight gradient of the time column dropped."""

    def vjp(self, params, cache, y_bar, need_params=True):
        x_bar, p_bar = super().vjp(params, cache, y_bar, need_params)
        p_bar = p_bar.copy()
        self.views(p_bar)["weight"][:, -1] = 0.0
        return x_bar, p_bar


@pytest.mark.parametrize("seed", SEEDS)
def test_linear_transposed_weight(seed):
    layer = TransposedWeightLinear(4, 4)
    x = np.random.default_rng(seed).uniform(-1, 1, (3, 4))
    report = check_layer(layer, x=x, seed=seed)
    assert_caught(report, "fd_x", "complex_x", "dot_x")
    assert report.figures["fd_params"] <= 1e-7


@pytest.mark.parametrize("seed", SEEDS)
def test_concat_linear_missing_time_column(seed):
    layer = NoTimeColumnConcatLinear(3, 2)
    x = np.random.default_rng(seed).uniform(-1, 1, (3, 3))
    report = check_layer(layer, x=x, t=0.8, seed=seed)
    assert_caught(report, "fd_params", "complex_params", "dot_params")


# -- convolution --------------------------------------------------------------------------------
class FlippedKernelConv(Conv2d):
    """Input gradient computed with the spatially flipped kernel (convolution vs correlation)."""

    def vjp(self, params, cache, y_bar, need_params=True):
        flipped = params.copy()
        w = self.views(flipped)["weight"]
        w[...] = w[..., ::-1, ::-1].copy()
        x_bar, _ = super().vjp(flipped, cache, y_bar, need_params=False)
        _, p_bar = super().vjp(params, cache, y_bar, need_params)
        return x_bar, p_bar


class StrideViaDense:
    """Strided conv whose VJP reuses the stride-1 conv: y_bar must be *dilated* onto the
    stride-1 output grid (``[::s, ::s]``); the bug packs it into the top-left corner."""

    analytic = True

    def __init__(self, conv, dilate_correctly):
        self.conv, self.dilate = conv, dilate_correctly
        self.dense = Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=1,
                            padding=conv.padding)
        self.n_params = conv.n_params

    def init(self, rng, dtype=np.float64):
        return self.conv.init(rng, dtype)

    def forward(self, params, x):
        y, cache = self.conv.forward(params, x)
        return y, (cache, x)

    def vjp(self, params, cache, y_bar, need_params=True):
        y1, cache1 = self.dense.forward(params, cache[1])
        y1_bar = np.zeros_like(y1)
        sh, sw = self.conv.stride
        ho, wo = y_bar.shape[2:]
        if self.dilate:
            y1_bar[:, :, ::sh, ::sw] = y_bar
        else:
            y1_bar[:, :, :ho, :wo] = y_bar
        return self.dense.vjp(params, cache1, y1_bar, need_params)


@pytest.mark.parametrize("seed", SEEDS)
def test_conv_flipped_kernel(seed):
    layer = FlippedKernelConv(2, 3, 3, padding=1)
    report = check_layer(layer, x=image(seed), seed=seed)
    assert_caught(report, "fd_x", "complex_x", "dot_x")
    assert report.figures["fd_params"] <= 1e-7


@pytest.mark.parametrize("seed", SEEDS)
def test_conv_wrong_stride_handling(seed):
    conv = Conv2d(2, 3, 3, stride=2, padding=1)
    x = image(seed, (2, 2, 6, 5))
    assert check_layer(StrideViaDense(conv, True), x=x, seed=seed).passed   # control
    report = check_layer(StrideViaDense(conv, False), x=x, seed=seed)
    assert_caught(report, "fd_x", "fd_params", "complex_x", "complex_params", "dot_x")


# -- pooling --------------------------------------------------------------------------------------
class ShiftedArgmaxMaxPool(MaxPool2d):
    """Cotangent routed to the window element after the maximum (off-by-one index)."""

    def vjp(self, params, cache, y_bar, need_params=True):
        kh, kw = self.kernel_size
        shifted = cache._replace(argmax=(cache.argmax + 1) % (kh * kw))
        return super().vjp(params, shifted, y_bar, need_params)


class UndividedAvgPool(AvgPool2d):
    """Window sum's VJP: forgets the 1 / (kh kw) of the mean."""

    def vjp(self, params, cache, y_bar, need_params=True):
        x_bar, p_bar = super().vjp(params, cache, y_bar, need_params)
        kh, kw = self.kernel_size
        return x_bar * (kh * kw), p_bar


@pytest.mark.parametrize("seed", SEEDS)
def test_maxpool_off_by_one_argmax(seed):
    x = gs.distinct_values(np.random.default_rng(seed), (2, 2, 4, 4), margin=0.1)
    report = check_layer(ShiftedArgmaxMaxPool(2), x=x, seed=seed)
    assert_caught(report, "fd_x", "dot_x")


@pytest.mark.parametrize("seed", SEEDS)
def test_avgpool_missing_divisor(seed):
    report = check_layer(UndividedAvgPool(2, stride=1), x=image(seed), seed=seed)
    assert_caught(report, "fd_x", "complex_x", "dot_x")


# -- shape / padding ------------------------------------------------------------------------------
class WrongSliceChannelPad(ChannelPad):
    """VJP keeps the *last* C channels of y_bar instead of the first C."""

    def vjp(self, params, cache, y_bar, need_params=True):
        _, p_bar = super().vjp(params, cache, y_bar, need_params)
        return y_bar[:, self.extra:].copy(), p_bar


class FortranFlatten(Flatten):
    """VJP un-flattens in column-major order (layout mismatch with the forward)."""

    def vjp(self, params, cache, y_bar, need_params=True):
        _, p_bar = super().vjp(params, cache, y_bar, need_params)
        n = cache.x_shape[0]
        return y_bar.reshape((n,) + tuple(cache.x_shape[1:]), order="F"), p_bar


@pytest.mark.parametrize("seed", SEEDS)
def test_channel_pad_wrong_slice(seed):
    report = check_layer(WrongSliceChannelPad(2), x=image(seed), seed=seed)
    assert_caught(report, "fd_x", "complex_x", "dot_x")


@pytest.mark.parametrize("seed", SEEDS)
def test_flatten_wrong_order(seed):
    report = check_layer(FortranFlatten(), x=image(seed), seed=seed)
    assert_caught(report, "fd_x", "complex_x", "dot_x")


# -- activations ----------------------------------------------------------------------------------
class NoMaskLeakyReLU(LeakyReLU):
    """Negative slope forgotten in the VJP (identity backward)."""

    def vjp(self, params, cache, y_bar, need_params=True):
        _, p_bar = super().vjp(params, cache, y_bar, need_params)
        return y_bar, p_bar


class LinearTermTanh(Tanh):
    """``1 - y`` instead of ``1 - y**2``, in the unchecked ``apply_vjp`` that both the checked
    ``vjp`` and the solvers' fast path call."""

    def apply_vjp(self, params, cache, y_bar, params_bar=None):
        return y_bar * (1 - np.tanh(cache.x))


class SignFlipSigmoid(Sigmoid):
    def vjp(self, params, cache, y_bar, need_params=True):
        x_bar, p_bar = super().vjp(params, cache, y_bar, need_params)
        return -x_bar, p_bar


@pytest.mark.parametrize("seed", SEEDS)
def test_leaky_relu_missing_mask(seed):
    x = gs.away_from_kinks(np.random.default_rng(seed).uniform(-1, 1, (3, 5)), 0.05)
    report = check_layer(NoMaskLeakyReLU(0.1), x=x, seed=seed)
    assert_caught(report, "fd_x", "dot_x")
    assert "complex" in report.skipped


@pytest.mark.parametrize("mutant", [LinearTermTanh, SignFlipSigmoid], ids=["tanh", "sigmoid"])
@pytest.mark.parametrize("seed", SEEDS)
def test_smooth_activation_mutants(mutant, seed):
    x = np.random.default_rng(seed).uniform(-2, 2, (3, 5))
    assert_caught(check_layer(mutant(), x=x, seed=seed), "fd_x", "complex_x", "dot_x")


# -- normalisation --------------------------------------------------------------------------------
def _channel_mean(a):
    return a.mean(axis=(0,) + tuple(range(2, a.ndim)), keepdims=True)


class NoMeanTermBatchNorm(BatchNorm):
    """Train-mode VJP without the ``- mean(g)`` term (batch mean treated as a constant)."""

    def vjp(self, params, cache, y_bar, need_params=True):
        x_bar, p_bar = super().vjp(params, cache, y_bar, need_params)
        w = self.views(params)["weight"].reshape((1, -1) + (1,) * (y_bar.ndim - 2))
        inv_std = cache.inv_std.reshape(w.shape)
        return x_bar + inv_std * _channel_mean(w * y_bar), p_bar


class NoVarianceTermGroupNorm(GroupNorm):
    """VJP treats the group variance as a constant: ``x_bar = inv_std (g - mean(g))``."""

    def vjp(self, params, cache, y_bar, need_params=True):
        _, p_bar = super().vjp(params, cache, y_bar, need_params)
        w = self.views(params)["weight"].reshape((1, -1) + (1,) * (y_bar.ndim - 2))
        gg = self._grouped(w * y_bar)
        axes = tuple(range(2, gg.ndim))
        x_bar = cache.inv_std * (gg - gg.mean(axis=axes, keepdims=True))
        return x_bar.reshape(y_bar.shape), p_bar


@pytest.mark.parametrize("seed", SEEDS)
def test_batchnorm_missing_mean_term(seed):
    assert check_layer(BatchNorm(2), x=np.ones((3, 2)) + np.arange(6).reshape(3, 2),
                       seed=seed).passed                                      # control
    layer = NoMeanTermBatchNorm(2)
    x = gs.distinct_values(np.random.default_rng(seed), (3, 2, 2, 2), margin=0.1)
    report = check_layer(layer, x=x, params=perturbed(layer, seed), seed=seed)
    assert_caught(report, "fd_x", "complex_x", "dot_x")
    assert report.figures["fd_params"] <= 1e-7


@pytest.mark.parametrize("seed", SEEDS)
def test_groupnorm_missing_variance_term(seed):
    layer = NoVarianceTermGroupNorm(2, 4)
    x = gs.distinct_values(np.random.default_rng(seed), (2, 4, 2, 3), margin=0.1)
    report = check_layer(layer, x=x, params=perturbed(layer, seed), seed=seed)
    assert_caught(report, "fd_x", "complex_x", "dot_x")


# -- dropout --------------------------------------------------------------------------------------
class UnscaledDropout(Dropout):
    """VJP multiplies by the keep mask but forgets the 1 / (1 - p) scale."""

    def vjp(self, params, cache, y_bar, need_params=True):
        x_bar, p_bar = super().vjp(params, cache, y_bar, need_params)
        return x_bar * (1 - self.p), p_bar


class FreshMaskDropout(Dropout):
    """VJP draws its own mask instead of using the forward's (cache ignored)."""

    def vjp(self, params, cache, y_bar, need_params=True):
        _, p_bar = super().vjp(params, cache, y_bar, need_params)
        keep = np.random.default_rng(12345).random(y_bar.shape) >= self.p
        return y_bar * keep / (1 - self.p), p_bar


@pytest.mark.parametrize("mutant", [UnscaledDropout, FreshMaskDropout], ids=["scale", "mask"])
@pytest.mark.parametrize("seed", SEEDS)
def test_dropout_mutants(mutant, seed):
    report = check_layer(mutant(0.4), x=image(seed), rng=np.random.default_rng(seed), seed=seed)
    assert_caught(report, "fd_x", "complex_x", "dot_x")


# -- composition ----------------------------------------------------------------------------------
class NoSkipResidual(Residual):
    """Residual VJP that drops the identity path: returns only the inner x_bar."""

    def vjp(self, params, cache, y_bar, need_params=True):
        return self.inner.vjp(params, cache.inner, y_bar, need_params)


class SwappedParamsSequential(Sequential):
    """Parameter cotangent blocks of the two children concatenated in reverse order."""

    def vjp(self, params, cache, y_bar, need_params=True):
        x_bar, p_bar = super().vjp(params, cache, y_bar, need_params)
        n0 = self.layers[0].n_params
        return x_bar, np.concatenate([p_bar[n0:], p_bar[:n0]])


@pytest.mark.parametrize("seed", SEEDS)
def test_residual_dropped_skip(seed):
    net = NoSkipResidual(Sequential(Linear(4, 4), Tanh(), Linear(4, 4)))
    x = np.random.default_rng(seed).uniform(-1, 1, (3, 4))
    report = check_layer(net, x=x, seed=seed)
    assert_caught(report, "fd_x", "complex_x", "dot_x")
    assert report.figures["fd_params"] <= 1e-7


@pytest.mark.parametrize("seed", SEEDS)
def test_sequential_swapped_param_blocks(seed):
    net = SwappedParamsSequential(Linear(3, 3), Tanh(), Linear(3, 3, bias=False))
    x = np.random.default_rng(seed).uniform(-1, 1, (3, 3))
    net_ok = Sequential(Linear(3, 3), Tanh(), Linear(3, 3, bias=False))
    assert net.layers[0].n_params == net.layers[2].n_params + 3
    report = check_layer(net, x=x, seed=seed)
    assert check_layer(net_ok, x=x, seed=seed).passed                        # control
    assert_caught(report, "fd_params", "complex_params", "dot_params")


# -- small layers: element-wise scale, parallel sum ---------------------------------------------
class BatchOnlyScale(Scale):
    """``w_bar`` summed over the batch axis only, forgetting the spatial axes."""

    def apply_vjp(self, params, cache, y_bar, params_bar=None):
        x_bar = super().apply_vjp(params, cache, y_bar, params_bar)
        if params_bar is not None:
            params_bar[...] = (y_bar * cache.x)[:, :, 0, 0].sum(axis=0)
        return x_bar


class FirstBranchOnlyParallel(Parallel):
    """``x_bar`` of the first branch only (the other branches' input cotangents dropped)."""

    def apply_vjp(self, params, cache, y_bar, params_bar=None):
        super().apply_vjp(params, cache, y_bar, params_bar)
        sl = self._slices[0]
        return self._kernels[0].apply_vjp(params[sl], cache.branches[0], y_bar, None)


@pytest.mark.parametrize("seed", SEEDS)
def test_scale_missing_spatial_sum_is_caught(seed):
    rng = np.random.default_rng(seed)
    layer = BatchOnlyScale(2)
    report = check_layer(layer, x=rng.standard_normal((2, 2, 3, 3)),
                         params=rng.uniform(0.5, 1.5, 2), seed=seed)
    assert_caught(report, "fd_params", "complex_params", "dot_params")


@pytest.mark.parametrize("seed", SEEDS)
def test_parallel_dropped_branch_cotangent_is_caught(seed):
    rng = np.random.default_rng(seed)
    layer = FirstBranchOnlyParallel(Scale(3), Linear(3, 3, bias=False))
    report = check_layer(layer, x=rng.standard_normal((4, 3)),
                         params=layer.init(rng) + 0.3 * rng.standard_normal(layer.n_params),
                         seed=seed)
    assert_caught(report, "fd_x", "complex_x", "dot_x")
