"""Dropout: mask from the passed Generator, inverted scaling, deterministic VJP, eval identity."""
import numpy as np
import pytest

from adjointcore.backend import to_host
from adjointcore.errors import ShapeError
from adjointcore.gradcheck import check_layer
from adjointcore.layers.dropout import Dropout, DropoutCache


def test_mask_statistics_and_scaling(xp):
    p, n = 0.3, 200_000
    x = xp.ones((n // 100, 100))
    y, cache = Dropout(p).forward(xp.zeros(0), x, rng=np.random.default_rng(1))
    y = to_host(y)
    dropped = np.mean(y == 0)
    # Bernoulli(p) frequency: standard deviation sqrt(p (1-p) / n) = 1e-3; allow 5 sigma
    assert abs(dropped - p) < 5 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_array_equal(np.unique(y), [0.0, 1 / (1 - p)])  # exact inverted scaling
    np.testing.assert_array_equal(to_host(cache.mask), y)  # x = 1: the mask is the output


def test_same_seed_same_mask_and_backends_agree(xp, rng):
    x = rng.standard_normal((4, 3, 5))
    layer = Dropout(0.5)
    y1, c1 = layer.forward(None, xp.asarray(x), rng=np.random.default_rng(7))
    y2, _ = layer.forward(None, x, rng=np.random.default_rng(7))
    y3, _ = layer.forward(None, x, rng=np.random.default_rng(8))
    np.testing.assert_array_equal(to_host(y1), y2)
    assert not np.array_equal(y2, y3)
    y_bar = rng.standard_normal(x.shape)
    x_bar, p_bar = layer.vjp(None, c1, xp.asarray(y_bar))
    np.testing.assert_array_equal(to_host(x_bar), y_bar * to_host(c1.mask))
    assert p_bar.shape == (0,)
    assert layer.vjp(None, c1, xp.asarray(y_bar), need_params=False)[1] is None


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gradients(dtype, rng):
    x = rng.standard_normal((3, 8)).astype(dtype)
    report = check_layer(Dropout(0.4), x, rng=np.random.default_rng(3))
    assert report.passed, str(report)
    y, cache = Dropout(0.4).forward(None, x, rng=np.random.default_rng(3))
    assert y.dtype == dtype and cache.mask.dtype == dtype


def test_eval_and_p_zero_are_identity(rng):
    x = rng.standard_normal((2, 3))
    for layer in (Dropout(0.5, mode="eval"), Dropout(0.0)):
        assert not layer.needs_rng
        y, cache = layer.forward(None, x)  # no rng needed
        assert y is x and cache == DropoutCache(None)
        y_bar = rng.standard_normal(x.shape)
        assert layer.vjp(None, cache, y_bar)[0] is y_bar
    assert Dropout(0.5).needs_rng and Dropout(0.5).analytic


def test_bad_input(rng):
    x = rng.standard_normal((2, 3))
    with pytest.raises(TypeError, match="`rng` must be a numpy.random.Generator"):
        Dropout(0.5).forward(None, x)
    with pytest.raises(TypeError, match="`rng`"):
        Dropout(0.5).forward(None, x, rng=42)
    for p in (-0.1, 1.0, 1.5):
        with pytest.raises(ValueError, match="`p`"):
            Dropout(p)
    with pytest.raises(ValueError, match="`mode`"):
        Dropout(0.5, mode="test")
    _, cache = Dropout(0.5).forward(None, x, rng=rng)
    with pytest.raises(ShapeError, match="`y_bar`"):
        Dropout(0.5).vjp(None, cache, np.ones((3, 2)))


def test_p_must_be_a_number_not_a_bool(rng):
    # Dropout(False) must not pass as p=0 (a silent no-op layer); NumPy scalars are numbers.
    with pytest.raises(ValueError, match=r"`p` must be a probability in \[0, 1\), got False"):
        Dropout(False)
    with pytest.raises(ValueError, match=r"got nan"):
        Dropout(float("nan"))
    assert Dropout(np.int64(0)).p == 0.0 and not Dropout(np.int64(0)).needs_rng
    assert Dropout(np.float32(0.25)).p == 0.25
