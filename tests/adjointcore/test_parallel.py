"""Element-wise kernels split across threads give bitwise the serial result."""
from __future__ import annotations

import numpy as np
import pytest

from adjointcore.layers import Tanh, _parallel
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
        for a, b in zip(results[1], results[n], strict=True):
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


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_threaded_kernel_works_in_a_forked_child(threads):
    """A child forked after the pool started must not wait on the parent's (absent) threads."""
    import os
    threads(2)
    x = np.linspace(-3, 3, 600 * 450).reshape(600, 450)
    expected = Tanh().apply(None, x)[0]                   # starts the pool in the parent
    pid = os.fork()
    if pid == 0:                                          # child: exit code 0 iff bitwise equal
        ok = False
        try:
            ok = np.array_equal(Tanh().apply(None, x)[0], expected)
        finally:
            os._exit(0 if ok else 1)
    import signal
    import time
    deadline = time.monotonic() + 30.0                    # a hang fails the test, not CI
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked child hung on the parent's thread pool")
        time.sleep(0.01)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
