"""Array backend selection, host/device helpers, dtype policy, and the shared input checks."""
import numpy as np
import pytest

from adjointcore import backend
from adjointcore.errors import (
    NonFiniteError,
    ParameterError,
    ShapeError,
    check_array,
    check_params,
    check_positive_int,
    check_probability,
)


def test_numpy_is_chosen_for_host_arrays_and_none():
    assert backend.get_array_module(np.zeros(2), None, 3.0) is np
    assert backend.get_array_module() is np
    assert not backend.is_cupy_array(np.zeros(2))


def test_cupy_is_chosen_from_the_arrays(xp):
    x = xp.zeros(3)
    assert backend.get_array_module(np.zeros(1), x) is xp
    assert np.array_equal(backend.to_host(x), np.zeros(3))


def test_to_host_walks_containers():
    out = backend.to_host({"a": [np.ones(2), None], "b": (np.zeros(1),)})
    assert isinstance(out["a"], list) and out["a"][1] is None and out["b"][0].shape == (1,)


def test_to_device_rejects_unknown_device():
    with pytest.raises(ValueError, match="device"):
        backend.to_device(np.zeros(2), "tpu")
    assert backend.to_device(np.zeros(2), "cpu").shape == (2,)


@pytest.mark.skipif(backend.cupy_available(), reason="checks the message shown without CuPy")
def test_to_device_gpu_without_cupy_says_how_to_install():
    with pytest.raises(RuntimeError, match=r"adjointcore\[gpu\]"):
        backend.to_device(np.zeros(2), "gpu")


def test_dtype_policy():
    assert backend.as_dtype("float32") == np.float32
    assert backend.as_dtype(np.complex128) == np.complex128
    assert backend.real_dtype(np.complex64) == np.float32
    with pytest.raises(TypeError, match="float32 or float64"):
        backend.as_dtype(np.int64)
    with pytest.raises(TypeError, match="dtype"):
        backend.as_dtype("not-a-dtype")


@pytest.mark.parametrize("value,kwargs,exc,match", [
    ([1.0, 2.0], {}, TypeError, "NumPy or CuPy array"),
    (np.zeros(3, dtype=np.int32), {}, TypeError, "astype"),
    (np.zeros(3, dtype=np.complex128), {"allow_complex": False}, TypeError, "dtype complex128"),
    (np.zeros((2, 3)), {"ndim": 4}, ShapeError, r"4 dimensions, got array of shape \(2, 3\)"),
    (np.zeros((2, 3)), {"shape": (None, 4)}, ShapeError, r"shape \(\*, 4\)"),
    (np.array([0.0, np.inf]), {"finite": True}, NonFiniteError, "1 non-finite"),
])
def test_check_array_names_argument_value_and_fix(value, kwargs, exc, match):
    with pytest.raises(exc, match=match) as info:
        check_array("x", value, **kwargs)
    assert "`x`" in str(info.value)


def test_check_array_returns_valid_input_unchanged():
    x = np.zeros((2, 3), dtype=np.float32)
    assert check_array("x", x, ndim=(1, 2), shape=(2, None), finite=True) is x


@pytest.mark.parametrize("params,match", [
    ([0.0] * 4, "flat array of length 4"),
    (np.zeros((2, 2)), "1-D"),
    (np.zeros(5), "length 5, expected 4"),
    (np.zeros(4, dtype=np.int64), "dtype int64"),
])
def test_check_params_messages(params, match):
    with pytest.raises(ParameterError, match=match):
        check_params("params", params, 4, owner="Linear(2, 2)")


def test_check_params_formats_owner_lazily():
    class Owner:
        def __repr__(self):
            raise AssertionError("repr must only be built on failure")
    p = np.zeros(3)
    assert check_params("params", p, 3, owner=Owner()) is p


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "3"])
def test_check_positive_int_rejects(value):
    with pytest.raises(ValueError, match="`n` must be an integer >= 1"):
        check_positive_int("n", value)


@pytest.mark.parametrize("value", [-0.1, 1.0, float("nan"), "0.5"])
def test_check_probability_rejects(value):
    with pytest.raises(ValueError, match="`p` must be a probability"):
        check_probability("p", value)
    assert check_probability("p", 1.0, allow_one=True) == 1.0
