"""Benchmark: cost of the CNF's exact trace per evaluation against the plain field's forward.

Field ``f = Sequential(ConcatLinear(d, 64), Tanh(), ConcatLinear(64, d))`` on a batch of 128
samples, ``d`` in (2, 8, 32). Timed per evaluation (median of ``--repeats``, all variants of one
``d`` alternated inside one loop so load drifts cancel in the ratios):

``field``      ``f(t, z)`` alone, no tape (a plain neural-ODE evaluation; the unit of the ratios);
``tiled``      :func:`adjointcore.divergence.divergence` with ``closed_form=False``: one taped
               forward and one forward-mode product on the ``d * 128`` tiled rows (``f`` and
               ``div`` together, as :class:`nets.CNF` evaluates them);
``closed``     the MLP closed form ``tanh'(a) @ s`` (one taped forward of ``f`` plus O(N h));
``hutch``      Hutchinson with one probe per sample (forward + JVP on 128 rows);

and for the backward pass (one field VJP of a training step):

``field+vjp``  taped forward + VJP of ``f``;
``tiled+vjp``  ``tiled`` + :func:`~adjointcore.divergence.divergence_vjp` (second-order VJP on
               the tiled batch, ``dz_bar`` included);
``closed+vjp`` ``closed`` + its hand-derived VJP.

Ratios are against ``field`` (forward columns) and ``field+vjp`` (backward columns). The tiled
trace costs about ``d`` forward-and-JVP evaluations (linear in ``d``); the closed form stays at
a few field evaluations for every ``d``. Pin BLAS to one thread for stable ratios::

    OPENBLAS_NUM_THREADS=1 python benchmarks/bench_cnf_trace.py [--repeats 51]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from adjointcore.divergence import divergence, divergence_vjp, draw_probes
from adjointcore.layers import ConcatLinear, Sequential, Tanh

BATCH, HIDDEN, DIMS = 128, 64, (2, 8, 32)


def median_ms(funs, repeats: int) -> list:
    """Median wall time (ms) of each function, timed in turn inside one loop after a warm-up."""
    for fun in funs:
        fun()
    times = [[] for _ in funs]
    for _ in range(repeats):
        for fun, bucket in zip(funs, times, strict=True):
            start = time.perf_counter()
            fun()
            bucket.append(time.perf_counter() - start)
    return [1e3 * statistics.median(bucket) for bucket in times]


def case(d: int, repeats: int, seed: int = 0) -> dict:
    """Timings (ms) and ratios for one state dimension ``d``."""
    rng = np.random.default_rng(seed)
    layer = Sequential(ConcatLinear(d, HIDDEN), Tanh(), ConcatLinear(HIDDEN, d))
    params = layer.init(rng)
    z = rng.standard_normal((BATCH, d))
    probes = draw_probes(rng, z.shape)
    dz_bar, div_bar = rng.standard_normal(z.shape), rng.standard_normal(BATCH)
    t = 0.5

    def field():
        layer.apply(params, z, t, None, False)

    def tiled():
        divergence(layer, t, z, params, closed_form=False)

    def closed():
        divergence(layer, t, z, params, closed_form=True)

    def hutch():
        divergence(layer, t, z, params, method="hutchinson", probes=probes)

    def field_vjp():
        _, cache = layer.apply(params, z, t, None, True)
        layer.apply_vjp(params, cache, dz_bar, np.empty(layer.n_params))

    def tiled_vjp():
        divergence_vjp(divergence(layer, t, z, params, closed_form=False)[1], div_bar, dz_bar)

    def closed_vjp():
        divergence_vjp(divergence(layer, t, z, params, closed_form=True)[1], div_bar, dz_bar)

    names = ["field", "tiled", "closed", "hutch", "field+vjp", "tiled+vjp", "closed+vjp"]
    ms = dict(zip(names, median_ms([field, tiled, closed, hutch, field_vjp, tiled_vjp,
                                    closed_vjp], repeats), strict=True))
    return ms


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=51)
    args = parser.parse_args(argv)
    print(f"CNF exact trace vs field cost: MLP d -> {HIDDEN} -> d (ConcatLinear, tanh), "
          f"batch {BATCH}, float64, median of {args.repeats}")
    head = (f"{'d':>3} | {'field ms':>8} {'tiled x':>8} {'closed x':>8} {'hutch x':>8} | "
            f"{'f+vjp ms':>8} {'tiled x':>8} {'closed x':>8}")
    print(head)
    print("-" * len(head))
    for d in DIMS:
        ms = case(d, args.repeats)
        f, fb = ms["field"], ms["field+vjp"]
        print(f"{d:>3} | {f:8.4f} {ms['tiled'] / f:8.2f} {ms['closed'] / f:8.2f} "
              f"{ms['hutch'] / f:8.2f} | {fb:8.4f} {ms['tiled+vjp'] / fb:8.2f} "
              f"{ms['closed+vjp'] / fb:8.2f}")
    print("x: time per evaluation / field (forward columns) or field+vjp (backward columns).")


if __name__ == "__main__":
    main()
