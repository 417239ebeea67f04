"""Element-wise kernels on several cores: contiguous chunks of one array in a thread pool.

NumPy releases the GIL inside its ufunc loops, so the chunks of a large element-wise
computation run in parallel on plain threads. Each element is computed by the same ufunc
sequence whichever chunk it falls in, so the result is bitwise the serial one (asserted in
``tests/adjointcore/test_parallel.py``). Used by the activations whose element-wise work is a
visible share of a neural-ODE step at large sizes (:class:`~adjointcore.layers.Tanh`).

Threads are used only for NumPy arrays of at least :data:`MIN_PARALLEL_SIZE` elements. Below
that, dispatch and contention with OpenBLAS's own threads (which spin for a while after each
GEMM) cost more than they save: measured on 2 cores with 2 BLAS threads, a 100-step RK4 forward
of the (256, 32, 128) MLP took 94-114 ms with threaded tanh against 71 ms without, although in
isolation the tanh VJP of 256 x 128 takes 0.32 ms serially and 0.15 ms on two threads. The
thread count is the number of usable cores, capped at :data:`MAX_THREADS`; set the environment
variable ``ADJOINTCORE_THREADS`` (1 disables threading) before the first call, or call
:func:`set_threads`.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["MIN_PARALLEL_SIZE", "MAX_THREADS", "set_threads", "n_threads", "chunked"]

#: Smallest array (elements) whose element-wise work is split across threads.
MIN_PARALLEL_SIZE = 1 << 18
#: Upper bound on the default thread count.
MAX_THREADS = 8

_state: dict[str, Any] = {"threads": None, "pool": None}


def _forget_pool_in_child() -> None:
    """After ``fork`` the child has none of the parent's pool threads: drop the pool (a new one
    is made on first use) instead of queueing work that no thread would run."""
    _state["pool"] = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_in_child)


def _default_threads() -> int:
    env = os.environ.get("ADJOINTCORE_THREADS")
    if env is not None:
        try:
            return max(1, int(env))
        except ValueError:
            raise ValueError(f"ADJOINTCORE_THREADS must be a positive integer, got {env!r}; "
                             f"unset it or set e.g. ADJOINTCORE_THREADS=2.") from None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:      # pragma: no cover - platforms without sched_getaffinity
        cores = os.cpu_count() or 1
    return max(1, min(MAX_THREADS, cores))


def n_threads() -> int:
    """Threads used for large element-wise kernels."""
    if _state["threads"] is None:
        _state["threads"] = _default_threads()
    return _state["threads"]


def set_threads(n: int) -> None:
    """Use ``n`` threads (1: serial) for large element-wise kernels from now on."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"`n` must be an integer >= 1, got {n!r}.")
    pool = _state["pool"]
    _state.update(threads=int(n), pool=None)
    if pool is not None:
        pool.shutdown(wait=True)


def _pool(n: int) -> ThreadPoolExecutor:
    if _state["pool"] is None:
        _state["pool"] = ThreadPoolExecutor(max_workers=n, thread_name_prefix="adjointcore")
    return _state["pool"]


def chunked(kernel: Callable[..., Any], out: NDArray[Any], *arrays: NDArray[Any]) -> None:
    """Run ``kernel(out_chunk, *array_chunks)`` over contiguous chunks, in parallel if large.

    Parameters
    ----------
    kernel : callable
        Element-wise: writes into its first argument from the others, chunk by chunk.
    out : ndarray
        C-contiguous NumPy output array.
    *arrays : ndarray
        Inputs of ``out``'s shape.

    Notes
    -----
    Serial (one call on the whole arrays) for CuPy arrays, arrays below
    :data:`MIN_PARALLEL_SIZE`, non-contiguous arrays, or one thread.
    """
    n = n_threads()
    size = out.size
    if (n == 1 or size < MIN_PARALLEL_SIZE or type(out) is not np.ndarray
            or not out.flags.c_contiguous
            or not all(type(a) is np.ndarray and a.flags.c_contiguous and a.shape == out.shape
                       for a in arrays)):
        kernel(out, *arrays)
        return
    flat = [a.reshape(-1) for a in (out,) + arrays]
    bounds = [size * i // n for i in range(n + 1)]
    parts = [[f[lo:hi] for f in flat] for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)]
    futures = [_pool(n - 1).submit(kernel, *p) for p in parts[1:]]
    kernel(*parts[0])                        # the calling thread takes the first chunk
    for future in futures:
        future.result()
