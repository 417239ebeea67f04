"""Shared benchmark problems and measuring helpers (imported by the ``bench_*`` scripts).

The MLP neural ODE ``y' = W2 act(W1 y + b1) + b2`` (``LayerField`` over
``Sequential(Linear(d, hidden), act, Linear(hidden, d))``) on a batch ``(batch, d)``, with a
fixed-seed initialisation; plus best-of-``repeat`` wall time and peak-memory measurement
(``tracemalloc`` for NumPy buffers, the CuPy memory pool's high-water mark on a GPU).

Scripts in ``benchmarks/`` run as ``python benchmarks/bench_x.py``, so this module is imported
as ``_fields`` (the script's directory is on ``sys.path``).
"""
from __future__ import annotations

import contextlib
import time
import tracemalloc
from typing import Any, NamedTuple

import numpy as np

from adjointcore.backend import get_array_module, to_device
from adjointcore.fields import LayerField
from adjointcore.layers import Linear, Sequential, Softplus, Tanh

__all__ = ["MLPProblem", "mlp_problem", "best_time", "peak_memory", "describe_problem",
           "blas_threads", "run_cli"]

ACTIVATIONS = {"tanh": Tanh, "softplus": Softplus}


class MLPProblem(NamedTuple):
    """An MLP vector field with parameters, an initial batch and a loss cotangent.

    Attributes
    ----------
    field : LayerField
    params : array, shape (n_params,)
    y0 : array, shape (batch, d)
    y_bar : array, shape (batch, d)
        Cotangent of the final state (``L = <y_bar, y(T)>``), unit Frobenius norm.
    d, hidden, batch : int
    """

    field: Any
    params: Any
    y0: Any
    y_bar: Any
    d: int
    hidden: int
    batch: int


def mlp_problem(d=64, hidden=128, batch=128, activation="tanh", seed=0, weight_scale=1.0,
                gpu=False) -> MLPProblem:
    """Build the MLP neural-ODE benchmark problem.

    Parameters
    ----------
    d, hidden, batch : int
        State features, hidden width, batch size.
    activation : {"tanh", "softplus"}
    seed : int
        Seed of ``np.random.default_rng`` (parameters, ``y0``, ``y_bar``).
    weight_scale : float
        Multiplies the default initialisation (larger: stiffer field, more adaptive steps).
    gpu : bool
        Move the arrays to CuPy.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"`activation` must be one of {sorted(ACTIVATIONS)}, got "
                         f"{activation!r}.")
    rng = np.random.default_rng(seed)
    layer = Sequential(Linear(d, hidden), ACTIVATIONS[activation](), Linear(hidden, d))
    params = weight_scale * layer.init(rng)
    y0 = rng.standard_normal((batch, d))
    y_bar = rng.standard_normal((batch, d))
    y_bar /= np.linalg.norm(y_bar)
    if gpu:
        params, y0, y_bar = (to_device(a, "gpu") for a in (params, y0, y_bar))
    return MLPProblem(LayerField(layer), params, y0, y_bar, d, hidden, batch)


def describe_problem(prob: MLPProblem) -> str:
    """One line: sizes, dtype and backend."""
    xp = get_array_module(prob.y0)
    return (f"MLP field d={prob.d}, hidden={prob.hidden}, batch={prob.batch}, "
            f"{prob.params.size} params, {prob.y0.dtype}, {xp.__name__}")


def _synchronize(xp):
    if xp.__name__ == "cupy":
        xp.cuda.Device().synchronize()


def best_time(fn, repeat=3, xp=np):
    """Minimum wall time of ``fn()`` over ``repeat`` calls (device synchronised) and its result."""
    best, out = np.inf, None
    for _ in range(repeat):
        _synchronize(xp)
        start = time.perf_counter()
        out = fn()
        _synchronize(xp)
        best = min(best, time.perf_counter() - start)
    return best, out


def peak_memory(fn, xp=np):
    """Run ``fn()``; return ``(result, peak_bytes, seconds)``.

    NumPy: ``tracemalloc`` peak above the level at the start (NumPy reports its data buffers
    to ``tracemalloc``; Python objects are included, which is noise of a few KiB). CuPy: the
    default memory pool is emptied first, and its ``total_bytes()`` afterwards is the high-water
    mark (the pool keeps freed blocks), rounded up to the pool's allocation units.
    """
    if xp.__name__ == "cupy":
        pool = xp.get_default_memory_pool()
        _synchronize(xp)
        pool.free_all_blocks()
        base = pool.used_bytes()
        start = time.perf_counter()
        out = fn()
        _synchronize(xp)
        return out, pool.total_bytes() - base, time.perf_counter() - start
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        start = time.perf_counter()
        out = fn()
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return out, peak, seconds


def blas_threads(n):
    """Context limiting BLAS to ``n`` threads (``threadpoolctl``; ``n=None`` or no
    ``threadpoolctl``: unchanged). Small matmuls time far more stably single-threaded, and on a
    loaded machine multi-threaded OpenBLAS can be 100x slower for them."""
    if n is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("note: threadpoolctl not installed; BLAS thread count left unchanged")
        return contextlib.nullcontext()
    return threadpool_limits(limits=n, user_api="blas")


def run_cli(parser, argv, run):
    """Add the options every benchmark shares (``--gpu``, ``--blas-threads``), parse ``argv``
    and call ``run(args)`` under the BLAS thread limit."""
    parser.add_argument("--gpu", action="store_true", help="run on CuPy (needs a CUDA device)")
    parser.add_argument("--blas-threads", type=int, default=1,
                        help="BLAS threads (default 1: stable timings of small matmuls)")
    args = parser.parse_args(argv)
    with blas_threads(args.blas_threads):
        return run(args)
