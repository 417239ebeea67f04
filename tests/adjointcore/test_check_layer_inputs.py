"""``check_layer`` rejects malformed layers and options with its own messages (issue 9, point 6).

Each message names the argument or the layer method, shows what was given or returned, and says
what the layer protocol wants (README, "Verifying your own layers").
"""
from __future__ import annotations

import numpy as np
import pytest

from adjointcore.gradcheck import check_layer


class Affine:
    """``y = x * p[0] + p[1]``, written to the README protocol (no inheritance)."""

    n_params = 2

    def init(self, rng, dtype=np.float64):
        return rng.uniform(0.5, 1.5, 2).astype(dtype)

    def forward(self, params, x):
        return x * params[0] + params[1], (x,)

    def vjp(self, params, cache, y_bar):
        (x,) = cache
        return y_bar * params[0], np.array([np.sum(y_bar * x), np.sum(y_bar)])


class OneArrayVjp(Affine):
    def vjp(self, params, cache, y_bar):
        return y_bar * params[0]


class TripleVjp(Affine):
    def vjp(self, params, cache, y_bar):
        x_bar, p_bar = super().vjp(params, cache, y_bar)
        return x_bar, p_bar, None


class BareForward(Affine):
    def forward(self, params, x):
        return x * params[0] + params[1]


class ListOutputForward(Affine):
    def forward(self, params, x):
        return (x * params[0] + params[1]).tolist(), (x,)


class ShortParamsBar(Affine):
    def vjp(self, params, cache, y_bar):
        x_bar, p_bar = super().vjp(params, cache, y_bar)
        return x_bar, p_bar[:1]


class NoneParamsBar(Affine):
    def vjp(self, params, cache, y_bar):
        return y_bar * params[0], None


class WrongShapeXBar(Affine):
    def vjp(self, params, cache, y_bar):
        x_bar, p_bar = super().vjp(params, cache, y_bar)
        return x_bar[:1], p_bar


@pytest.fixture
def x():
    return np.random.default_rng(0).standard_normal((3, 4))


def test_reference_layer_passes(x):
    report = check_layer(Affine(), x=x)
    assert report.passed, str(report)


def test_vjp_returning_one_array_names_layer_and_shape(x):
    with pytest.raises(TypeError) as info:
        check_layer(OneArrayVjp(), x=x)
    msg = str(info.value)
    assert "OneArrayVjp.vjp returned ndarray of shape (3, 4)" in msg
    assert "pair (x_bar, params_bar)" in msg and "return x_bar, params_bar" in msg
    assert "object at 0x" not in msg


def test_vjp_returning_three_values_shows_them(x):
    with pytest.raises(TypeError, match=r"TripleVjp\.vjp returned tuple of length 3 \(ndarray "
                                        r"of shape \(3, 4\).*None\).*\(x_bar, params_bar\)"):
        check_layer(TripleVjp(), x=x)


def test_forward_without_cache_says_forward_must_return_pair(x):
    with pytest.raises(TypeError) as info:
        check_layer(BareForward(), x=x)
    msg = str(info.value)
    assert "BareForward.forward returned ndarray of shape (3, 4)" in msg
    assert "pair (y, cache)" in msg and "return y, cache" in msg


def test_forward_output_that_is_not_an_array_is_named(x):
    with pytest.raises(TypeError, match=r"ListOutputForward\.forward returned y = list of "
                                        r"length 3.*must be a float NumPy or CuPy array"):
        check_layer(ListOutputForward(), x=x)


@pytest.mark.parametrize("layer,text", [
    (ShortParamsBar(), "vjp returned params_bar = ndarray of shape (1,) and dtype float64, "
                       "expected an array of shape (2,)"),
    (NoneParamsBar(), "vjp returned params_bar = None, expected an array of shape (2,)"),
    (WrongShapeXBar(), "vjp returned x_bar = ndarray of shape (1, 4) and dtype float64, "
                       "expected an array of shape (3, 4) (the shape of x)"),
])
def test_vjp_results_of_wrong_shape_fail_the_report_with_a_reason(x, layer, text):
    report = check_layer(layer, x=x)
    assert not report.passed and not report.figures
    assert any(text in line for line in report.failures), report.failures
    assert "FAIL" in str(report) and text in str(report)


ALLOWED = "allowed keys: 'fd', 'complex', 'dot', 'taylor_min_rate'"


@pytest.mark.parametrize("bad,shown", [
    ("big", "got str 'big'"), (-1.0, "got float -1.0"), (0, "got int 0"),
    (float("inf"), "got float inf"), (None, "got None"), (np.bool_(True), "got bool"),
])
def test_bad_tolerance_value_names_tol_key_value_and_allowed_keys(x, bad, shown):
    with pytest.raises(ValueError) as info:
        check_layer(Affine(), x=x, tol={"fd": bad})
    msg = str(info.value)
    assert "`tol['fd']` must be a positive finite number" in msg
    assert shown in msg and "tol={'fd': 1e-07}" in msg and ALLOWED in msg.lower()


def test_unknown_tolerance_key_names_key_value_and_allowed_keys(x):
    with pytest.raises(ValueError) as info:
        check_layer(Affine(), x=x, tol={"fdd": 1e-3, "dot": 1e-10})
    msg = str(info.value)
    assert "`tol` has unknown keys {'fdd': 0.001}" in msg
    assert "did you mean 'fd' for 'fdd'" in msg and ALLOWED in msg


def test_tolerance_that_is_not_a_dict_is_named(x):
    with pytest.raises(TypeError, match=r"`tol` must be a dict of tolerances such as "
                                        r"\{'fd': 1e-07\}, got float 1e-06; allowed keys"):
        check_layer(Affine(), x=x, tol=1e-6)


def test_valid_tolerance_override_is_used(x):
    report = check_layer(Affine(), x=x, tol={"fd": 1e-6, "taylor_min_rate": 1.5})
    assert report.passed and report.tolerances["fd"] == 1e-6
    assert report.tolerances["taylor_min_rate"] == 1.5


@pytest.mark.parametrize("bad,exc,text", [
    (np.ones((2, 2), dtype=int), TypeError, "`x` has dtype int64"),
    (np.ones((2, 2), dtype=complex), TypeError, "`x` has dtype complex128"),
    (np.array([[1.0, np.nan]]), ValueError, "`x` (array of shape (1, 2) and dtype float64) "
                                            "contains 1 non-finite"),
    (np.ones((0, 2)), ValueError, "`x` is empty (shape (0, 2))"),
    ([[1.0, 2.0]], TypeError, "`x` must be a NumPy or CuPy array"),
])
def test_bad_input_x_is_named(bad, exc, text):
    with pytest.raises(exc) as info:
        check_layer(Affine(), x=bad)
    assert text in str(info.value)


def test_params_of_wrong_dtype_are_named(x):
    with pytest.raises(TypeError, match=r"`params` must be a flat 1-D float32/float64 array, "
                                        r"got ndarray of shape \(2,\) and dtype int64"):
        check_layer(Affine(), x=x, params=np.array([1, 2]))
