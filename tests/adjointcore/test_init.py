"""Initialisation schemes: bounds, moments, determinism, argument checks, layer ``init=``."""
import math

import numpy as np
import pytest

from adjointcore import init
from adjointcore.layers.conv import ConcatConv2d, Conv2d
from adjointcore.layers.linear import ConcatLinear, Linear

N_DRAWS = 200_000   # moments below are checked to 6 standard errors of this sample size


def test_kaiming_normal_moments(rng):
    w = init.kaiming_normal(rng, (N_DRAWS,), fan_in=50)
    std = math.sqrt(2 / 50)
    # standard error of the mean: std/sqrt(n); of the sample std: std/sqrt(2n)
    assert abs(w.mean()) <= 6 * std / math.sqrt(N_DRAWS)
    assert abs(w.std() - std) <= 6 * std / math.sqrt(2 * N_DRAWS)
    w1 = init.kaiming_normal(rng, (N_DRAWS,), fan_in=50, gain=1.0)
    assert abs(w1.std() - 1 / math.sqrt(50)) <= 6 / math.sqrt(50) / math.sqrt(2 * N_DRAWS)


@pytest.mark.parametrize("a, bound", [(math.sqrt(5), 1 / math.sqrt(12)),
                                      (0.0, math.sqrt(6 / 12))])
def test_kaiming_uniform_bound(rng, a, bound):
    w = init.kaiming_uniform(rng, (N_DRAWS,), fan_in=12, a=a)
    assert w.min() >= -bound and w.max() < bound
    assert w.max() > 0.999 * bound and w.min() < -0.999 * bound  # P(miss) = (1-5e-4)^1e5 ~ 0
    # variance of U(-b, b) is b^2/3; sample variance standard error ~ b^2 sqrt(4/45/n)
    assert abs(w.var() - bound ** 2 / 3) <= 6 * bound ** 2 * math.sqrt(4 / 45 / N_DRAWS)


def test_kaiming_uniform_default_is_pytorch_bound(rng):
    w = init.kaiming_uniform(rng, (N_DRAWS,), fan_in=7)
    assert np.abs(w).max() <= 1 / math.sqrt(7) < np.abs(w).max() / 0.999


def test_uniform_and_xavier_bounds(rng):
    u = init.uniform(rng, (N_DRAWS,), 0.25)
    assert u.min() >= -0.25 and u.max() < 0.25 and u.max() > 0.249
    b = math.sqrt(6 / (10 + 20))
    x = init.xavier_uniform(rng, (20, 10), fan_in=10, fan_out=20)
    assert np.abs(x).max() <= b and x.shape == (20, 10)
    assert init.uniform(rng, (3,), 0.0).tolist() == [0.0, 0.0, 0.0]


def test_zeros_and_output_type():
    z = init.zeros((2, 3))
    assert z.shape == (2, 3) and z.dtype == np.float64 and not z.any()
    assert init.zeros(4).shape == (4,)


def test_same_seed_same_draws():
    a = init.kaiming_normal(np.random.default_rng(5), (4, 3), fan_in=3)
    b = init.kaiming_normal(np.random.default_rng(5), (4, 3), fan_in=3)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float64


@pytest.mark.parametrize("call, error, match", [
    (lambda r: init.uniform(np.random.RandomState(0), (2,), 1.0), TypeError, "`rng`"),
    (lambda r: init.uniform(r, (2,), -1.0), ValueError, "`bound`"),
    (lambda r: init.uniform(r, (2,), float("nan")), ValueError, "`bound`"),
    (lambda r: init.uniform(r, (2, -1), 1.0), ValueError, "`shape`"),
    (lambda r: init.uniform(r, "ab", 1.0), ValueError, "`shape`"),
    (lambda r: init.kaiming_normal(r, (2,), fan_in=0), ValueError, "`fan_in`"),
    (lambda r: init.kaiming_normal(r, (2,), fan_in=2.0), ValueError, "`fan_in`"),
    (lambda r: init.kaiming_normal(r, (2,), fan_in=2, gain=float("inf")), ValueError, "`gain`"),
    (lambda r: init.kaiming_uniform(r, (2,), fan_in=3, a=-1.0), ValueError, "`a`"),
    (lambda r: init.xavier_uniform(r, (2,), fan_in=3, fan_out=0), ValueError, "`fan_out`"),
    (lambda r: init.init_weight("glorot", r, (2,), 3, 3), ValueError, "`init` must be one of"),
])
def test_rejects_bad_arguments(rng, call, error, match):
    with pytest.raises(error, match=match):
        call(rng)


# -- layers' init= option ---------------------------------------------------------------------
LAYERS = [
    (lambda s: Linear(8, 4, init=s), 8, 4),
    (lambda s: ConcatLinear(8, 4, init=s), 9, 4),
    (lambda s: Conv2d(6, 4, 3, groups=2, init=s), 27, 18),
    (lambda s: ConcatConv2d(5, 4, (1, 2), init=s), 12, 8),
]


@pytest.mark.parametrize("make, fan_in, fan_out", LAYERS)
@pytest.mark.parametrize("scheme", init.WEIGHT_SCHEMES)
def test_layer_init_option(make, fan_in, fan_out, scheme):
    layer = make(scheme)
    params = layer.init(np.random.default_rng(3))
    v = layer.views(params)
    w = v["weight"]
    bound = {"kaiming_uniform": 1 / math.sqrt(fan_in), "uniform": 1 / math.sqrt(fan_in),
             "xavier_uniform": math.sqrt(6 / (fan_in + fan_out))}.get(scheme)
    if bound is None:          # kaiming_normal: a normal sample, not bounded
        assert w.std() > 0.5 * math.sqrt(2 / fan_in) and w.std() < 1.5 * math.sqrt(2 / fan_in)
    else:
        assert np.abs(w).max() <= bound
    assert np.abs(v["bias"]).max() <= 1 / math.sqrt(fan_in)
    assert np.unique(params).size == params.size          # all entries drawn, none left zero
    np.testing.assert_array_equal(params, layer.init(np.random.default_rng(3)))


def test_layer_init_dtype_and_rng_checks():
    layer = Linear(3, 2)
    assert layer.init(np.random.default_rng(0), dtype=np.float32).dtype == np.float32
    with pytest.raises(TypeError, match="`rng`"):
        layer.init(0)
