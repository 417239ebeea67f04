"""BatchNorm and GroupNorm: reference forwards, exact VJPs, running statistics, bad input."""
import numpy as np
import pytest

from adjointcore.backend import to_host
from adjointcore.errors import ParameterError, ShapeError
from adjointcore.gradcheck import check_layer
from adjointcore.layers.norm import (
    BatchNorm,
    BatchNormCache,
    BatchNormEvalCache,
    GroupNorm,
    update_running_stats,
)

ULP = 2.3e-16


def channel_data(rng, shape):
    """Per-channel offsets and scales so that the statistics are far from (0, 1)."""
    c = shape[1]
    bshape = (1, c) + (1,) * (len(shape) - 2)
    return (rng.normal(0, 3, bshape) + rng.uniform(0.5, 4, bshape) * rng.standard_normal(shape))


def random_affine(rng, c):
    return np.concatenate([rng.uniform(0.5, 2, c), rng.normal(0, 1, c)])


def bn_reference(x, weight, bias, eps):
    axes = (0,) + tuple(range(2, x.ndim))
    bshape = (1, -1) + (1,) * (x.ndim - 2)
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    return weight.reshape(bshape) * (x - mean) / np.sqrt(var + eps) + bias.reshape(bshape)


# -- BatchNorm forward ----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(16, 3), (4, 3, 5, 6), (5, 2, 7)])
def test_batchnorm_train_matches_reference(shape, xp, rng):
    x = channel_data(rng, shape)
    c = shape[1]
    params = random_affine(rng, c)
    layer = BatchNorm(c, eps=1e-3)
    y, cache = layer.forward(xp.asarray(params), xp.asarray(x))
    # ~10 roundings along two different summation orders; values O(1)
    np.testing.assert_allclose(to_host(y), bn_reference(x, params[:c], params[c:], 1e-3),
                               rtol=1e-13, atol=1e-13)
    axes = (0,) + tuple(range(2, x.ndim))
    assert isinstance(cache, BatchNormCache) and cache.count == x.size // c
    np.testing.assert_allclose(to_host(cache.batch_mean), x.mean(axis=axes), rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(to_host(cache.batch_var), x.var(axis=axes), rtol=1e-13)
    np.testing.assert_allclose(to_host(cache.unbiased_var), x.var(axis=axes, ddof=1), rtol=1e-13)


def test_batchnorm_normalises(rng):
    """With weight 1 and bias 0 the output has per-channel mean 0 and variance var/(var+eps)."""
    x = channel_data(rng, (8, 4, 3, 3))
    layer = BatchNorm(4)
    y, cache = layer.forward(layer.init(rng), x)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-15)
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), cache.batch_var / (cache.batch_var + 1e-5),
                               rtol=1e-14)
    assert layer.param_shapes == {"weight": (4,), "bias": (4,)} and layer.n_params == 8
    np.testing.assert_array_equal(layer.init(rng), [1, 1, 1, 1, 0, 0, 0, 0])


def test_batchnorm_eval_uses_running(xp, rng):
    x = channel_data(rng, (3, 4, 2, 2))
    mean, var = rng.normal(0, 1, 4), rng.uniform(0.5, 3, 4)
    params = random_affine(rng, 4)
    layer = BatchNorm(4, mode="eval", running=(mean, var))
    y, cache = layer.forward(xp.asarray(params), xp.asarray(x))
    b = (1, 4, 1, 1)
    want = params[:4].reshape(b) * (x - mean.reshape(b)) / np.sqrt(var.reshape(b) + 1e-5) \
        + params[4:].reshape(b)
    np.testing.assert_allclose(to_host(y), want, rtol=1e-14, atol=1e-14)  # a few roundings
    assert isinstance(cache, BatchNormEvalCache)
    y_bar = rng.standard_normal(x.shape)
    x_bar, _ = layer.vjp(xp.asarray(params), cache, xp.asarray(y_bar))
    np.testing.assert_allclose(to_host(x_bar), y_bar * params[:4].reshape(b)
                               / np.sqrt(var.reshape(b) + 1e-5), rtol=1e-14)


def test_batchnorm_eval_from_batch_stats_equals_train(rng):
    """Eval mode with running = the biased batch statistics reproduces the train forward."""
    x = channel_data(rng, (6, 3))
    train = BatchNorm(3)
    params = random_affine(rng, 3)
    y, cache = train.forward(params, x)
    y_eval, _ = train.to_eval((cache.batch_mean, cache.batch_var)).forward(params, x)
    np.testing.assert_allclose(y_eval, y, rtol=1e-14, atol=1e-14)


# -- gradients ------------------------------------------------------------------------------------
NORM_CASES = [
    (lambda rng: BatchNorm(3), (6, 3)),
    (lambda rng: BatchNorm(3), (2, 3, 4, 5)),
    (lambda rng: BatchNorm(3, affine=False), (3, 3, 2, 2)),
    (lambda rng: BatchNorm(3, mode="eval", running=(rng.normal(size=3),
                                                    rng.uniform(0.5, 2, 3))), (2, 3, 3, 2)),
    (lambda rng: GroupNorm(2, 4), (3, 4, 3, 3)),
    (lambda rng: GroupNorm(1, 4), (3, 4, 2, 2)),
    (lambda rng: GroupNorm(4, 4, affine=False), (2, 4, 3, 3)),
    (lambda rng: GroupNorm(2, 8), (5, 8)),
]


CASE_IDS = ["bn-2d", "bn-4d", "bn-noaffine", "bn-eval", "gn-2of4", "gn-1of4", "gn-instance",
            "gn-2d"]


@pytest.mark.parametrize("make, shape", NORM_CASES, ids=CASE_IDS)
def test_norm_gradients(make, shape, rng):
    """float64: FD <= 1e-7, complex step <= 1e-13, dot test <= 1e-12 (check_layer defaults)."""
    layer = make(rng)
    x = channel_data(rng, shape)
    params = random_affine(rng, shape[1]) if layer.affine else None
    report = check_layer(layer, x, params=params)
    assert report.passed, str(report)
    assert report.figures["complex_x"] <= 1e-13 and report.figures["fd_x"] <= 1e-7


@pytest.mark.parametrize("make, shape", NORM_CASES, ids=CASE_IDS)
def test_norm_float32_agrees_with_float64(make, shape, rng):
    """float32 forward and VJP match float64 to 1e-5 relative (measured <= 5e-7 over 20 seeds:
    ~20 roundings of 6e-8 times a normalisation condition number of a few)."""
    layer = make(rng)
    x = channel_data(rng, shape)
    params = random_affine(rng, shape[1]) if layer.affine else np.zeros(0)
    y_bar = rng.standard_normal(shape)
    y64, c64 = layer.forward(params, x)
    y32, c32 = layer.forward(params.astype(np.float32), x.astype(np.float32))
    out64 = (y64,) + layer.vjp(params, c64, y_bar)
    out32 = (y32,) + layer.vjp(params.astype(np.float32), c32, y_bar.astype(np.float32))
    for a32, a64 in zip(out32, out64, strict=True):
        assert a32.dtype == np.float32
        if a64.size:
            assert np.linalg.norm(a32 - a64) <= 1e-5 * np.linalg.norm(a64)


class _BatchNormWithoutStatTerms(BatchNorm):
    """Mutation: the train-mode VJP treats the batch statistics as constants."""

    def vjp(self, params, cache, y_bar, need_params=True):
        eval_cache = BatchNormEvalCache(cache.xhat, cache.inv_std)
        return super().vjp(params, eval_cache, y_bar, need_params)


def test_gradient_check_catches_missing_mean_var_terms(rng):
    x = channel_data(rng, (5, 3))
    report = check_layer(_BatchNormWithoutStatTerms(3), x, params=random_affine(rng, 3))
    assert not report.passed and report.figures["fd_x"] > 1e-2


def test_need_params_false(rng):
    layer = BatchNorm(3)
    params = random_affine(rng, 3)
    x = channel_data(rng, (4, 3))
    y, cache = layer.forward(params, x)
    y_bar = rng.standard_normal(y.shape)
    x_bar, p_bar = layer.vjp(params, cache, y_bar, need_params=False)
    assert p_bar is None
    np.testing.assert_array_equal(x_bar, layer.vjp(params, cache, y_bar)[0])
    p_bar = layer.vjp(params, cache, y_bar)[1]
    np.testing.assert_allclose(p_bar, np.concatenate([(y_bar * cache.xhat).sum(0), y_bar.sum(0)]),
                               rtol=1e-15)


# -- running statistics ---------------------------------------------------------------------------
def test_update_running_stats(rng):
    x = channel_data(rng, (5, 2, 3, 3))
    _, cache = BatchNorm(2).forward(random_affine(rng, 2), x)
    mean0, var0 = rng.normal(size=2), rng.uniform(1, 2, 2)
    mean, var = update_running_stats((mean0, var0), cache, momentum=0.25)
    np.testing.assert_allclose(mean, 0.75 * mean0 + 0.25 * x.mean(axis=(0, 2, 3)), rtol=1e-14)
    np.testing.assert_allclose(var, 0.75 * var0 + 0.25 * x.var(axis=(0, 2, 3), ddof=1), rtol=1e-14)
    mean, var = update_running_stats(None, cache)  # starts from (0, 1), momentum 0.1
    np.testing.assert_allclose(mean, 0.1 * x.mean(axis=(0, 2, 3)), rtol=1e-14)
    np.testing.assert_allclose(var, 0.9 + 0.1 * x.var(axis=(0, 2, 3), ddof=1), rtol=1e-14)
    assert mean0 is not mean  # pure: inputs untouched
    with pytest.raises(ValueError, match="`momentum`"):
        update_running_stats(None, cache, momentum=1.5)
    eval_layer = BatchNorm(2, mode="eval", running=(mean0, var0))
    _, eval_cache = eval_layer.forward(random_affine(rng, 2), x)
    with pytest.raises(TypeError, match="`cache`"):
        update_running_stats(None, eval_cache)
    with pytest.raises(ShapeError, match=r"running\[0\]"):
        update_running_stats((np.zeros(3), np.ones(2)), cache)


# -- GroupNorm ------------------------------------------------------------------------------------
def test_groupnorm_matches_reference(xp, rng):
    x = channel_data(rng, (3, 6, 4, 5))
    params = random_affine(rng, 6)
    y, _ = GroupNorm(3, 6).forward(xp.asarray(params), xp.asarray(x))
    xg = x.reshape(3, 3, 2, 4, 5)
    mean = xg.mean(axis=(2, 3, 4), keepdims=True)
    var = xg.var(axis=(2, 3, 4), keepdims=True)
    xhat = ((xg - mean) / np.sqrt(var + 1e-5)).reshape(x.shape)
    want = params[:6].reshape(1, 6, 1, 1) * xhat + params[6:].reshape(1, 6, 1, 1)
    np.testing.assert_allclose(to_host(y), want, rtol=1e-13, atol=1e-13)


def test_groupnorm_is_per_sample(rng):
    """Samples are normalised independently: the first sample's output ignores the others."""
    x = channel_data(rng, (4, 4, 3, 3))
    layer = GroupNorm(2, 4)
    params = random_affine(rng, 4)
    y_all, _ = layer.forward(params, x)
    y_one, _ = layer.forward(params, x[:1])
    np.testing.assert_allclose(y_one, y_all[:1], rtol=1e-15, atol=1e-15)


# -- bad input ------------------------------------------------------------------------------------
def test_bad_configuration():
    with pytest.raises(ValueError, match="`num_channels`=6 is not divisible by `num_groups`=4"):
        GroupNorm(4, 6)
    with pytest.raises(ValueError, match="`num_features`"):
        BatchNorm(0)
    with pytest.raises(ValueError, match="`eps`"):
        BatchNorm(3, eps=0.0)
    with pytest.raises(ValueError, match="`mode`"):
        BatchNorm(3, mode="test")
    with pytest.raises(ValueError, match="`running` is required"):
        BatchNorm(3, mode="eval")
    with pytest.raises(ValueError, match="`running` is only used"):
        BatchNorm(3, running=(np.zeros(3), np.ones(3)))
    with pytest.raises(ShapeError, match=r"running\[1\]"):
        BatchNorm(3, mode="eval", running=(np.zeros(3), np.ones(4)))
    with pytest.raises(ValueError, match=r"running\[1\]"):
        BatchNorm(3, mode="eval", running=(np.zeros(3), -np.ones(3)))


def test_bad_inputs(rng):
    layer = BatchNorm(3)
    params = layer.init(rng)
    with pytest.raises(ShapeError, match="`x` has 4 channels"):
        layer.forward(params, np.ones((5, 4)))
    with pytest.raises(ShapeError, match="`x` must have 2 or 3 or 4 dimensions"):
        layer.forward(params, np.ones((2, 3, 1, 1, 1)))
    with pytest.raises(ShapeError, match="at least 2"):
        layer.forward(params, np.ones((1, 3)))
    with pytest.raises(ParameterError, match="`params`"):
        layer.forward(params[:4], np.ones((5, 3)))
    _, cache = layer.forward(params, rng.standard_normal((5, 3)))
    with pytest.raises(ShapeError, match="`y_bar`"):
        layer.vjp(params, cache, np.ones((5, 2)))
    with pytest.raises(ShapeError, match="`x` has 3 channels"):
        GroupNorm(2, 4).forward(None, np.ones((2, 3, 2, 2)))


@pytest.mark.parametrize("make", [lambda **kw: BatchNorm(3, **kw),
                                  lambda **kw: GroupNorm(1, 3, **kw)],
                         ids=["batchnorm", "groupnorm"])
def test_bad_eps_and_affine_named(make):
    # Before: eps=inf was accepted (xhat = 0 everywhere, every gradient silently 0), eps="a"
    # raised float()'s bare "could not convert", and affine="no" silently meant True.
    with pytest.raises(ValueError, match=r"`eps` must be finite, got inf"):
        make(eps=float("inf"))
    with pytest.raises(TypeError, match=r"`eps` must be a real number, got 'a'"):
        make(eps="a")
    with pytest.raises(TypeError, match=r"`affine` must be True or False, got 'no'"):
        make(affine="no")
    assert make(affine=np.bool_(False)).n_params == 0
