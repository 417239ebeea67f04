"""Benchmark: Conv2d / Linear forward + VJP against the bare GEMMs they reduce to.

For every case the layer's ``forward`` + ``vjp(need_params=True)`` is timed against three plain
``matmul`` calls with the same shapes and FLOPs on pre-built contiguous operands:

* Conv2d (im2col shapes, ``K = C/groups*kh*kw``, ``M = N*Ho*Wo``):
  ``W (O, K) @ cols (K, M)``, ``Y_bar (O, M) @ cols^T (M, K)``, ``W^T (K, O) @ Y_bar (O, M)``;
* Linear: ``x @ W^T``, ``y_bar^T @ x``, ``y_bar @ W``.

The ratio ``layer / gemm`` is the overhead of padding, im2col copies, layout transposes and
col2im (goal: below 2 for the convolution). Layer and GEMM are timed alternately in one loop
(median of ``--repeats``), so load drifts cancel in the ratio. On a shared machine pin BLAS to one
thread for reproducible ratios. Runs in well under a minute::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_conv_linear.py [--repeats 9] [--quick]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from adjointcore.layers.conv import Conv2d
from adjointcore.layers.linear import Linear

# (label, N, C_in, C_out, H=W, kernel, stride, padding, cache_cols)
CONV_CASES = [
    ("conv 64x32->32 16x16 k3p1", 64, 32, 32, 16, 3, 1, 1, False),
    ("conv 64x32->32 16x16 k3p1 cached", 64, 32, 32, 16, 3, 1, 1, True),
    ("conv 32x64->64 8x8 k3p1", 32, 64, 64, 8, 3, 1, 1, False),
    ("conv 32x16->32 32x32 k3s2p1", 32, 16, 32, 32, 3, 2, 1, False),
    ("conv 64x32->32 16x16 k3s2p1", 64, 32, 32, 16, 3, 2, 1, False),
    ("conv 64x32->64 16x16 k3s2p1", 64, 32, 64, 16, 3, 2, 1, False),
]
# (label, N, in, out)
LINEAR_CASES = [
    ("linear 256x512->512", 256, 512, 512),
    ("linear 1024x64->64", 1024, 64, 64),
]


def median_ms(funs, repeats: int) -> list:
    """Median wall time in milliseconds of each function, after one warm-up call each.

    The functions are timed in turn inside one loop, so a change of machine load during the run
    affects all of them alike and their ratio stays meaningful.
    """
    for fun in funs:
        fun()
    times = [[] for _ in funs]
    for _ in range(repeats):
        for fun, bucket in zip(funs, times, strict=True):
            start = time.perf_counter()
            fun()
            bucket.append(time.perf_counter() - start)
    return [1e3 * statistics.median(bucket) for bucket in times]


def layer_step(layer, params, x, y_bar):
    def run():
        _, cache = layer.forward(params, x)
        return layer.vjp(params, cache, y_bar)
    return run


def gemm_step(a, b, c, d, e, f):
    def run():
        return a @ b, c @ d, e @ f
    return run


def conv_case(rng, dtype, n, cin, cout, hw, k, s, p, cache_cols):
    layer = Conv2d(cin, cout, k, stride=s, padding=p, cache_cols=cache_cols)
    params = layer.init(rng, dtype=dtype)
    x = rng.standard_normal((n, cin, hw, hw)).astype(dtype)
    out = layer.output_shape(x.shape)
    y_bar = rng.standard_normal(out).astype(dtype)
    kk, m = cin * k * k, n * out[2] * out[3]
    w = rng.standard_normal((cout, kk)).astype(dtype)
    cols = rng.standard_normal((kk, m)).astype(dtype)
    ybm = rng.standard_normal((cout, m)).astype(dtype)
    wt = np.ascontiguousarray(w.T)
    return layer_step(layer, params, x, y_bar), gemm_step(w, cols, ybm, cols.T, wt, ybm)


def linear_case(rng, dtype, n, fin, fout):
    layer = Linear(fin, fout)
    params = layer.init(rng, dtype=dtype)
    x = rng.standard_normal((n, fin)).astype(dtype)
    y_bar = rng.standard_normal((n, fout)).astype(dtype)
    w = layer.views(params)["weight"]
    return layer_step(layer, params, x, y_bar), gemm_step(x, w.T, y_bar.T, x, y_bar, w)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--quick", action="store_true", help="first conv and linear case only")
    parser.add_argument("--only", metavar="TEXT", default="",
                        help="only the cases whose label contains TEXT (e.g. 's2' or 'linear')")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    convs = CONV_CASES[:1] if args.quick else CONV_CASES
    linears = LINEAR_CASES[:1] if args.quick else LINEAR_CASES
    convs = [c for c in convs if args.only in c[0]]
    linears = [c for c in linears if args.only in c[0]]
    header = f"{'case':<36} {'dtype':<8} {'layer ms':>9} {'gemm ms':>9} {'ratio':>6}"
    print(header)
    print("-" * len(header))
    for dtype in (np.float64, np.float32):
        cases = [(c[0], conv_case(rng, dtype, *c[1:])) for c in convs]
        cases += [(c[0], linear_case(rng, dtype, *c[1:])) for c in linears]
        for label, (layer_fun, gemm_fun) in cases:
            t_layer, t_gemm = median_ms((layer_fun, gemm_fun), args.repeats)
            print(f"{label:<36} {np.dtype(dtype).name:<8} {t_layer:9.2f} {t_gemm:9.2f} "
                  f"{t_layer / t_gemm:6.2f}")


if __name__ == "__main__":
    main()
