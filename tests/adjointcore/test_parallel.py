"""Element-wise kernels split across threads give bitwise the serial result."""
from __future__ import annotations

import numpy as np
import pytest

from adjointcore.layers import Tanh
from adjointcore.layers import _parallel
from adjointcore.layers.activation import tanh_derivative


@pytest.fixture
def threads():
    before = _parallel.n_threads()
    yield _parallel.set_threads
    _parallel.set_threads(before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(600, 450), (3, 5, 131, 137)])
def test_threaded_tanh_equals_serial_bitwise(threads, dtype, shape):
    rng = np.random.default_rng(0)
    x = (3 * rng.standard_normal(shape)).astype(dtype)
    y_bar = rng.standard_normal(shape).astype(dtype)
    assert x.size >= _parallel.MIN_PARALLEL_SIZE
    results = {}
    for n in (1, 2, 3):
        threads(n)
        y, cache = Tanh().apply(None, x)
        results[n] = (y, tanh_derivative(x), tanh_derivative(x, y_bar),
                      Tanh().apply_vjp(None, cache, y_bar))
    for n in (2, 3):
        for a, b in zip(results[1], results[n]):
            assert a.dtype == dtype and np.array_equal(a, b)
    assert np.array_equal(results[1][0], np.tanh(x))


def test_chunked_falls_back_to_serial_for_small_or_strided(threads):
    threads(2)
    calls = []

    def kernel(out, x):
        calls.append(out.size)
        np.negative(x, out=out)

    big = np.ones((1024, 512))
    out = np.empty_like(big)
    _parallel.chunked(kernel, out, big)
    assert sorted(calls) == [262144, 262144] and np.all(out == -1)
    calls.clear()
    _parallel.chunked(kernel, np.empty((10, 10)), np.ones((10, 10)))
    assert calls == [100]
    calls.clear()
    strided = np.ones((1024, 1024))[:, ::2]
    _parallel.chunked(kernel, np.empty((1024, 512)), strided)
    assert calls == [1024 * 512]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_threads_rejects_bad_counts(bad):
    with pytest.raises(ValueError, match="`n` must be an integer >= 1"):
        _parallel.set_threads(bad)


def test_bad_environment_variable_is_named(monkeypatch):
    monkeypatch.setenv("ADJOINTCORE_THREADS", "two")
    with pytest.raises(ValueError, match="ADJOINTCORE_THREADS"):
        _parallel._default_threads()
