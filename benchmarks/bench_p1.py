"""Engine time over a plain-NumPy floor for an MLP neural ODE, forward and gradient (P1 table).

Problem
-------
``dz/dt = f(z) = tanh(z W1^T + b1) W2^T + b2`` (``Sequential(Linear(d, h), Tanh(), Linear(h, d))``;
``Linear`` computes ``x @ W.T + b`` with ``W`` of shape ``(out, in)``) on a batch ``z0`` of shape
``(B, d)``, ``t`` in ``[0, 1]``, loss ``L = sum(z(1) * C)`` with ``C`` a fixed random ``(B, d)``
array; RK4 with ``--steps`` (100) fixed steps unless a row says otherwise; the gradient is taken
with respect to ``z0`` and every parameter. Parameters are ``layer.init(rng).astype(dtype)``,
the flat layout ``[W1 (h, d), b1 (h,), W2 (d, h), b2 (d,)]``.

Sizes ``(B, d, h)``: small (16, 2, 16), medium (256, 32, 128), large (1024, 128, 512).
Default dtypes: float64 for small and medium, float32 *and* float64 for large (``--dtypes``
overrides the choice for every size).

The floor
---------
The floor is what the same number of field evaluations and field VJPs costs as bare NumPy
expressions in a tight loop, the way a user would write them (new temporaries allowed):
an evaluation is ``H = tanh(z @ W1.T + b1); f = H @ W2.T + b2`` and a VJP with cotangent
``kappa`` is ``gW2 += kappa.T @ H; gb2 += kappa.sum(0); s = (kappa @ W2) * (1 - H*H);
gW1 += s.T @ z; gb1 += s.sum(0); x_bar = s @ W1``. It contains *no* Runge-Kutta stage
combinations, no solver bookkeeping and no checkpointing: everything the engine does beyond
the counted field work shows in the ratio engine / floor. Two shapes of loop are used:

* *taped*: ``n_eval`` evaluations keeping the ``H`` of the last ``n_vjp`` of them, then
  ``n_vjp`` VJPs over that tape in reverse (taped, forward with ``n_vjp = 0``, StoreAll,
  Revolve and dopri5 rows);
* *paired*: ``n_eval`` evaluations, then ``n_pairs`` times an evaluation followed at once by
  its VJP (the backsolve row: the backward solve evaluates the augmented field, one field
  forward plus one VJP, and needs no tape).

Rows (each timed as a median; engine and floor runs interleaved)
----------------------------------------------------------------
A row runs at least ``--repeat`` times (large: ``--repeat-large``), raised until its timing
takes about ``--min-seconds`` (2 s; at most ``MAX_REPEAT`` = 301 runs): a row of a few
milliseconds then has hundreds of samples, and its median moves by a few percent between runs
instead of ten. The notes list each row's repeats.

``taped``      "taped fwd+grad": ``nets.ODEBlock(seq, t_span=(0, 1), method="rk4", steps=100,
               gradient="discrete")``, ``y, cache = block.forward(params, z0)`` then
               ``block.vjp(params, cache, C)``. Floor: taped, 400 evaluations + 400 VJPs.
``forward``    "forward only": ``solvers.solve(LayerField(seq), z0, (0, 1), params,
               method="rk4", steps=100, dense_output=False)``. Floor: 400 evaluations.
``storeall``   "StoreAll()": the block with ``schedule=StoreAll()``; floor as ``taped``.
``revolve``    "Revolve(10)": the block with ``schedule=Revolve(10)``; floor as ``taped``. The
               Revolve / taped time ratio is printed per (size, dtype) under the table.
``backsolve``  "backsolve": the block with ``gradient="backsolve"``. Floor: paired, built from
               the counts the engine reports (``cache.stats`` after ``forward`` and the stats of
               ``block.vjp_with_stats``): forward NFE + backward NFE evaluations, of which the
               backward VJP count are paired with a VJP (nominally 400 + 400 and 400 VJPs).
``dopri5``     "adaptive dopri5": ``nets.ODEBlock(seq, method="dopri5", rtol=1e-6, atol=1e-8,
               gradient="discrete")`` forward + VJP (the discrete adjoint of the accepted grid,
               from the solve's own stages). Floor: taped, the forward NFE as evaluations and
               the backward VJP count as VJPs. Small only by default (``--dopri5-sizes``).
``backsolve-steps``  memory only, medium only: backsolve peak memory at each of
               ``--backsolve-steps`` (default 100 and 400) step counts.

Peak memory (``--memory``, the default) is measured in a separate, untimed run of the engine
under ``tracemalloc`` (``_fields.peak_memory``; NumPy buffers plus Python objects, above the
level at the start) for taped, StoreAll, Revolve and backsolve, in MB = 1e6 bytes.

Page faults: after timing, one more untimed call each of the engine and the floor counts its
minor page faults (``getrusage``), fresh pages the kernel maps and zeroes, printed as the last
column. ``--host-memory`` sets ``ADJOINTCORE_HOST_MEMORY`` for the measuring processes:
``retain`` (the library's default: ``solvers.retain_host_memory`` keeps freed buffers for reuse,
for the floor in the same process too) or ``system`` (glibc's own malloc thresholds, under
which large temporaries and whole tapes are faulted in anew on every call).

Every (size, dtype) runs in a fresh subprocess (this script with ``--one``), so allocator and
cache state of one configuration cannot leak into the next. Each subprocess also checks the
engine's taped gradient (``x_bar`` and ``params_bar``) against :func:`reference_rk4_gradient`,
a short independent plain-NumPy taped RK4 adjoint, on its own configuration, and prints the
relative error (about 1e-15 in float64, 1e-6 in float32). With ``--count`` (the default) one
more untimed run per row goes through a layer wrapper that counts the field evaluations and
VJPs the engine really makes; the notes under the table print them next to the counts the
engine reports and the counts of the floor.

Acceptance targets (from the issue; checked and printed under the table)
------------------------------------------------------------------------
* taped fwd+grad: small <= 1.5x floor, medium <= 1.15x, large (float32 and float64) <= 1.05x;
* forward only: small <= 2x floor, medium and large <= 1.1x;
* Revolve(10) on large: <= 1.8x the taped time and peak <= 100 MB (float64);
* adaptive dopri5, small: <= 3x its evaluations' floor;
* backsolve: <= 1.2x its evaluations' floor on medium and large, peak memory independent of
  the number of steps (here: peak at 400 steps <= 1.1x the peak at 100 steps, medium).

The measurements the issue asks for are "2 cores, OpenBLAS 2 threads", which is this machine's
default: ``--blas-threads`` leaves BLAS unchanged unless given. Absolute times on a shared
2-core machine are noisy (other processes, and page faults of the large fresh allocations the
taped rows make: both the engine and the floor allocate their tapes anew in every run); the
interleaving makes the *ratios* robust against slow drifts, so compare ratios, and raise
``--repeat`` when two runs disagree.

Run
---
``python benchmarks/bench_p1.py``                       small and medium, all rows (minutes)
``python benchmarks/bench_p1.py --sizes large``         large, float32 and float64 (about 12 s
                                                        per taped engine run when the machine
                                                        is quiet: 15-30 min in all)
``python benchmarks/bench_p1.py --sizes small,medium --repeat 3 --rows taped,forward``
``python benchmarks/bench_p1.py --profile --json p1.json --no-memory``

Options: ``--sizes``, ``--dtypes``, ``--repeat`` (7), ``--repeat-large`` (3),
``--min-seconds`` (2), ``--rows``,
``--steps`` (100), ``--blas-threads``, ``--host-memory`` (retain), ``--memory/--no-memory``,
``--count/--no-count``,
``--revolve-snapshots`` (10), ``--backsolve-steps`` (100,400), ``--dopri5-sizes`` (small),
``--seed`` (0), ``--profile`` (cProfile of one taped fwd+grad for the first size, top 25 by
internal time), ``--json FILE``.
"""
from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import math
import os
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, NamedTuple

import numpy as np
from _fields import MLPProblem, blas_threads, describe_problem, peak_memory

SIZES = {"small": (16, 2, 16), "medium": (256, 32, 128), "large": (1024, 128, 512)}
DEFAULT_DTYPES = {"small": ("float64",), "medium": ("float64",),
                  "large": ("float32", "float64")}
ROWS = ("taped", "forward", "storeall", "revolve", "backsolve", "dopri5", "backsolve-steps")
MEMORY_ROWS = ("taped", "storeall", "revolve", "backsolve")
MB = 1e6

#: (row, size, dtype or None for any, quantity, limit); quantity "ratio" is engine / floor.
TARGETS = (
    ("taped", "small", None, "ratio", 1.5),
    ("taped", "medium", None, "ratio", 1.15),
    ("taped", "large", None, "ratio", 1.05),
    ("forward", "small", None, "ratio", 2.0),
    ("forward", "medium", None, "ratio", 1.1),
    ("forward", "large", None, "ratio", 1.1),
    ("revolve", "large", "float64", "vs_taped", 1.8),
    ("revolve", "large", "float64", "peak_mb", 100.0),
    ("dopri5", "small", None, "ratio", 3.0),
    ("backsolve", "medium", None, "ratio", 1.2),
    ("backsolve", "large", None, "ratio", 1.2),
    ("backsolve-steps", "medium", None, "peak_growth", 1.1),
)


# -- the problem ------------------------------------------------------------------------------

class Problem(NamedTuple):
    """One benchmark configuration: the engine's layer and field plus the plain arrays.

    Attributes
    ----------
    size, dtype : str
    layer : Sequential
    field : LayerField
    params : ndarray, shape (n_params,)
    z0, C : ndarray, shape (B, d)
        Initial state and the loss weights (``L = sum(z(1) * C)``).
    weights : tuple of ndarray
        Views ``(W1, b1, W2, b2)`` of ``params``.
    """

    size: str
    dtype: str
    layer: Any
    field: Any
    params: np.ndarray
    z0: np.ndarray
    C: np.ndarray
    weights: tuple


def unpack(params, d, h):
    """Views ``(W1 (h, d), b1 (h,), W2 (d, h), b2 (d,))`` of the flat parameter vector."""
    sizes = np.cumsum([h * d, h, d * h])
    w1, b1, w2, b2 = np.split(params, sizes)
    return w1.reshape(h, d), b1, w2.reshape(d, h), b2


def make_problem(size, dtype, seed=0):
    """Build the MLP neural-ODE problem of ``size`` in ``dtype`` from a fixed seed.

    Parameters
    ----------
    size : {"small", "medium", "large"}
    dtype : str
    seed : int

    Returns
    -------
    Problem
    """
    from adjointcore.fields import LayerField
    from adjointcore.layers import Linear, Sequential, Tanh

    batch, d, h = SIZES[size]
    rng = np.random.default_rng(seed)
    layer = Sequential(Linear(d, h), Tanh(), Linear(h, d))
    params = layer.init(rng).astype(dtype)
    z0 = rng.standard_normal((batch, d)).astype(dtype)
    cot = rng.standard_normal((batch, d)).astype(dtype)
    return Problem(size, dtype, layer, LayerField(layer), params, z0, cot,
                   unpack(params, d, h))


def describe(prob):
    """One line describing ``prob`` (via ``_fields.describe_problem``)."""
    batch, d, h = SIZES[prob.size]
    return describe_problem(MLPProblem(prob.field, prob.params, prob.z0, prob.C, d, h, batch))


# -- the plain-NumPy floor --------------------------------------------------------------------

def floor_taped(prob, n_eval, n_vjp):
    """``n_eval`` bare field evaluations keeping the last ``n_vjp`` tanh outputs, then
    ``n_vjp`` bare VJPs over them (cotangent ``C``), accumulating parameter gradients.

    Parameters
    ----------
    prob : Problem
    n_eval, n_vjp : int
        ``n_vjp <= n_eval``.

    Returns
    -------
    tuple
        The last ``f``, the last ``x_bar`` and ``(gW1, gb1, gW2, gb2)`` (so nothing is dead).
    """
    if n_vjp > n_eval:
        raise ValueError(f"the taped floor needs n_vjp <= n_eval, got {n_vjp} > {n_eval}")
    W1, b1, W2, b2 = prob.weights
    z, kappa = prob.z0, prob.C
    keep_from = n_eval - n_vjp
    tape, f, x_bar = [], None, None
    for k in range(n_eval):
        H = np.tanh(z @ W1.T + b1)
        f = H @ W2.T + b2
        if k >= keep_from:
            tape.append(H)
    grads = tuple(np.zeros_like(w) for w in prob.weights)
    for H in reversed(tape):
        x_bar = floor_vjp(prob.weights, z, H, kappa, grads)
    return f, x_bar, grads


def floor_vjp(weights, z, H, kappa, grads):
    """One bare field VJP at ``z`` (hidden activations ``H``) with cotangent ``kappa``: the
    parameter cotangents are added into ``grads = (gW1, gb1, gW2, gb2)``; returns ``x_bar``."""
    W1, _, W2, _ = weights
    gW1, gb1, gW2, gb2 = grads
    gW2 += kappa.T @ H
    gb2 += kappa.sum(axis=0)
    s = (kappa @ W2) * (1 - H * H)
    gW1 += s.T @ z
    gb1 += s.sum(axis=0)
    return s @ W1


def floor_paired(prob, n_eval, n_pairs):
    """``n_eval`` bare field evaluations, then ``n_pairs`` times an evaluation followed at once
    by its VJP (the work of a backsolve: no tape).

    Parameters
    ----------
    prob : Problem
    n_eval, n_pairs : int

    Returns
    -------
    tuple
        As :func:`floor_taped`.
    """
    W1, b1, W2, b2 = prob.weights
    z, kappa = prob.z0, prob.C
    f, x_bar = None, None
    for _ in range(n_eval):
        H = np.tanh(z @ W1.T + b1)
        f = H @ W2.T + b2
    grads = tuple(np.zeros_like(w) for w in prob.weights)
    for _ in range(n_pairs):
        H = np.tanh(z @ W1.T + b1)
        f = H @ W2.T + b2
        x_bar = floor_vjp(prob.weights, z, H, kappa, grads)
    return f, x_bar, grads


# -- independent reference gradient -----------------------------------------------------------

RK4_A = ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0))
RK4_B = (1 / 6, 1 / 3, 1 / 3, 1 / 6)


def reference_rk4_gradient(prob, steps):
    """Plain-NumPy taped RK4 on ``np.linspace(0, 1, steps + 1)`` and its exact reverse sweep.

    Used only to check the engine's gradient of ``L = sum(z(1) * C)``.

    Returns
    -------
    z0_bar : ndarray, shape (B, d)
    params_bar : ndarray, shape (n_params,)
        In the layout ``[W1, b1, W2, b2]``.
    """
    W1, b1, W2, b2 = prob.weights
    grid = np.linspace(0.0, 1.0, steps + 1)
    y, tape = prob.z0, []
    for i in range(steps):
        dt = float(grid[i + 1] - grid[i])
        ks, stages = [], []
        for row in RK4_A:
            yi = y + dt * sum(a * k for a, k in zip(row, ks, strict=True)) if row else y
            Hi = np.tanh(yi @ W1.T + b1)
            ks.append(Hi @ W2.T + b2)
            stages.append((yi, Hi))
        tape.append((dt, stages))
        y = y + dt * sum(b * k for b, k in zip(RK4_B, ks, strict=True))
    a = prob.C
    grads = [np.zeros_like(w) for w in prob.weights]
    for dt, stages in reversed(tape):
        k_bar = [dt * b * a for b in RK4_B]
        for i in reversed(range(len(RK4_B))):
            yi, Hi = stages[i]
            s = (k_bar[i] @ W2) * (1 - Hi * Hi)
            incs = (s.T @ yi, s.sum(0), k_bar[i].T @ Hi, k_bar[i].sum(0))
            for g, inc in zip(grads, incs, strict=True):
                g += inc
            u = s @ W1
            a = a + u
            for j, aij in enumerate(RK4_A[i]):
                k_bar[j] = k_bar[j] + dt * aij * u
    return a, np.concatenate([g.ravel() for g in grads])


def relative_error(value, reference):
    """``||value - reference|| / ||reference||`` (Frobenius, in float64)."""
    value, reference = (np.asarray(v, dtype=np.float64) for v in (value, reference))
    return float(np.linalg.norm(value - reference) / np.linalg.norm(reference))


# -- engine runs ------------------------------------------------------------------------------

def make_block(prob, steps, **options):
    """``nets.ODEBlock`` over the problem's layer, RK4 with ``steps`` steps on ``(0, 1)``."""
    import nets

    options.setdefault("gradient", "discrete")
    return nets.ODEBlock(prob.layer, t_span=(0.0, 1.0), method="rk4", steps=steps, **options)


def block_fwd_grad(block, prob):
    """One forward and gradient of the block.

    Returns
    -------
    dict
        ``x_bar``, ``params_bar`` and the work the engine reports (``fwd_nfe``, ``bwd_nfe``,
        ``vjps``; ``None`` where the engine does not report them).
    """
    _, cache = block.forward(prob.params, prob.z0)
    if hasattr(block, "vjp_with_stats"):
        x_bar, params_bar, bwd = block.vjp_with_stats(prob.params, cache, prob.C)
    else:
        (x_bar, params_bar), bwd = block.vjp(prob.params, cache, prob.C), None
    fwd = getattr(cache, "stats", None)
    return {"x_bar": x_bar, "params_bar": params_bar,
            "fwd_nfe": getattr(fwd, "nfe", None), "bwd_nfe": getattr(bwd, "backward_nfe", None),
            "vjps": getattr(bwd, "vjps", None)}


def solve_forward(prob, steps):
    """RK4 forward solve without dense output; returns the engine's NFE as work."""
    import solvers

    sol = solvers.solve(prob.field, prob.z0, (0.0, 1.0), prob.params, method="rk4",
                        steps=steps, dense_output=False)
    return {"fwd_nfe": int(sol.stats.nfe), "bwd_nfe": 0, "vjps": 0}


def dopri5_block(prob):
    """Adaptive Dopri5 ODE block (rtol 1e-6, atol 1e-8) with the discrete adjoint of its
    accepted grid (the block keeps the solve's stages: no replay)."""
    import nets

    return nets.ODEBlock(prob.layer, t_span=(0.0, 1.0), method="dopri5", rtol=1e-6, atol=1e-8,
                         gradient="discrete")


def dopri5_fwd_grad(block, prob):
    """Forward and gradient of :func:`dopri5_block`'s block, with its step count."""
    _, cache = block.forward(prob.params, prob.z0)
    x_bar, params_bar, bwd = block.vjp_with_stats(prob.params, cache, prob.C)
    return {"x_bar": x_bar, "params_bar": params_bar, "fwd_nfe": int(cache.stats.nfe),
            "bwd_nfe": int(bwd.backward_nfe), "vjps": int(bwd.vjps),
            "steps": int(cache.stats.n_steps)}


# -- measuring --------------------------------------------------------------------------------

def timed(fn):
    """``(seconds, result)`` of one call of ``fn``."""
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def interleaved_medians(engine_fn, floor_fn, repeat):
    """Median seconds of ``engine_fn`` and ``floor_fn``, timed alternately ``repeat`` times
    each after one untimed warm-up call of each (noise hits both alike)."""
    engine_fn()
    floor_fn()
    t_engine, t_floor = [], []
    for _ in range(repeat):
        gc.collect()
        t_engine.append(timed(engine_fn)[0])
        gc.collect()
        t_floor.append(timed(floor_fn)[0])
    return statistics.median(t_engine), statistics.median(t_floor)


def minor_faults(fn):
    """Minor page faults of one ``fn()`` call (Linux ``getrusage``; ``None`` elsewhere):
    fresh pages the kernel had to map and zero for it, a cost the timings include."""
    try:
        import resource
    except ImportError:       # not a Unix system
        return None
    gc.collect()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fn()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def peak_mb(fn):
    """Peak traced memory of one ``fn()`` call, in MB (``_fields.peak_memory``)."""
    gc.collect()
    return peak_memory(fn)[1] / MB


class RowSpec(NamedTuple):
    """How to measure one row: the engine call and a builder of the floor call.

    ``floor_for(work)`` receives the engine's work dict of the warm-up call and returns
    ``(floor_fn, floor_work)``.
    """

    key: str
    label: str
    engine: Any
    floor_for: Any


def taped_floor(prob, n_eval, n_vjp):
    """``(floor_fn, work)`` builder for a fixed taped floor."""
    def build(_work):
        return (lambda: floor_taped(prob, n_eval, n_vjp)), {"evals": n_eval, "vjps": n_vjp}
    return build


def counted_taped_floor(prob):
    """Taped floor from the engine's counts: solve NFE evaluations, adjoint VJPs."""
    def build(work):
        n_eval, n_vjp = work["fwd_nfe"], work["vjps"]
        return (lambda: floor_taped(prob, n_eval, n_vjp)), {"evals": n_eval, "vjps": n_vjp}
    return build


def counted_paired_floor(prob, steps):
    """Paired floor from the backsolve counts (nominal ``4 steps`` each when unreported)."""
    def build(work):
        nominal = 4 * steps
        fwd = work["fwd_nfe"] if work["fwd_nfe"] is not None else nominal
        bwd = work["bwd_nfe"] if work["bwd_nfe"] is not None else nominal
        pairs = min(work["vjps"] if work["vjps"] is not None else nominal, bwd)
        n_eval = fwd + bwd - pairs
        return ((lambda: floor_paired(prob, n_eval, pairs)),
                {"evals": n_eval + pairs, "vjps": pairs})
    return build


def row_specs(prob, opts):
    """The selected :class:`RowSpec` for ``prob`` (timed rows only)."""
    from adjointcore.checkpointing import Revolve, StoreAll

    steps, n = opts["steps"], 4 * opts["steps"]
    nominal = taped_floor(prob, n, n)
    snaps = opts["revolve_snapshots"]
    blocks = {"taped": make_block(prob, steps),
              "storeall": make_block(prob, steps, schedule=StoreAll()),
              "revolve": make_block(prob, steps, schedule=Revolve(snaps)),
              "backsolve": make_block(prob, steps, gradient="backsolve"),
              "dopri5": dopri5_block(prob)}
    specs = {
        "taped": RowSpec("taped", "taped fwd+grad",
                         lambda: block_fwd_grad(blocks["taped"], prob), nominal),
        "forward": RowSpec("forward", "forward only", lambda: solve_forward(prob, steps),
                           taped_floor(prob, n, 0)),
        "storeall": RowSpec("storeall", "StoreAll()",
                            lambda: block_fwd_grad(blocks["storeall"], prob), nominal),
        "revolve": RowSpec("revolve", f"Revolve({snaps})",
                           lambda: block_fwd_grad(blocks["revolve"], prob), nominal),
        "backsolve": RowSpec("backsolve", "backsolve",
                             lambda: block_fwd_grad(blocks["backsolve"], prob),
                             counted_paired_floor(prob, steps)),
        "dopri5": RowSpec("dopri5", "adaptive dopri5",
                          lambda: dopri5_fwd_grad(blocks["dopri5"], prob),
                          counted_taped_floor(prob)),
    }
    wanted = [r for r in opts["rows"] if r in specs]
    if prob.size not in opts["dopri5_sizes"] and "dopri5" in wanted:
        wanted.remove("dopri5")
    return [specs[r] for r in wanted]


#: Most repeats a row is raised to by ``--min-seconds``.
MAX_REPEAT = 301


def repeats_for(repeat, min_seconds, seconds_per_pair):
    """``repeat``, raised so that the interleaved timing takes about ``min_seconds`` (at
    most ``MAX_REPEAT``): millisecond rows get enough samples for a stable median."""
    wanted = math.ceil(min_seconds / max(seconds_per_pair, 1e-9))
    return max(repeat, min(MAX_REPEAT, wanted))


def measure_row(spec, repeat, memory, min_seconds=0.0):
    """Time one row (engine and floor interleaved), optionally its engine peak memory.

    Returns
    -------
    result : dict
        JSON-ready row (times in ms, the number of repeats).
    work : dict
        The engine's output of its warm-up call (gradients included).
    """
    work = spec.engine()
    floor_fn, floor_work = spec.floor_for(work)
    if min_seconds > 0:
        repeat = repeats_for(repeat, min_seconds,
                             timed(spec.engine)[0] + timed(floor_fn)[0])
    t_engine, t_floor = interleaved_medians(spec.engine, floor_fn, repeat)
    faults = minor_faults(spec.engine), minor_faults(floor_fn)
    peak = peak_mb(spec.engine) if memory and spec.key in MEMORY_ROWS else None
    engine_work = {k: work.get(k) for k in ("fwd_nfe", "bwd_nfe", "vjps", "steps")
                   if work.get(k) is not None}
    result = {"row": spec.key, "label": spec.label, "engine_ms": 1e3 * t_engine,
              "floor_ms": 1e3 * t_floor, "ratio": t_engine / t_floor, "peak_mb": peak,
              "engine_faults": faults[0], "floor_faults": faults[1], "repeats": repeat,
              "engine_work": engine_work, "floor_work": floor_work}
    return result, work


def backsolve_step_rows(prob, steps_list):
    """Memory-only rows: backsolve peak at each step count in ``steps_list``."""
    rows = []
    for steps in steps_list:
        block = make_block(prob, steps, gradient="backsolve")
        block_fwd_grad(block, prob)
        rows.append({"row": "backsolve-steps", "label": f"backsolve peak, {steps} steps",
                     "engine_ms": None, "floor_ms": None, "ratio": None,
                     "peak_mb": peak_mb(lambda b=block: block_fwd_grad(b, prob)),
                     "steps": steps})
    return rows


class CountingLayer:
    """The bare layer protocol (``forward``, ``vjp``, ``n_params``) around ``layer``, counting
    ``forward`` and ``vjp`` calls in ``counts``.

    It deliberately exposes nothing else (no fast-path methods), so the engine calls it through
    the generic protocol and every field evaluation and VJP is seen. Used only in separate,
    untimed runs: it checks the work the engine *reports* against the calls it *makes*.
    """

    def __init__(self, layer, counts):
        self._layer, self._counts = layer, counts

    @property
    def n_params(self):
        return self._layer.n_params

    def __repr__(self):
        return f"CountingLayer({self._layer!r})"

    def forward(self, params, x, **context):
        self._counts["evals"] += 1
        return self._layer.forward(params, x, **context)

    def vjp(self, params, cache, y_bar, need_params=True):
        self._counts["vjps"] += 1
        return self._layer.vjp(params, cache, y_bar, need_params=need_params)


def counted_calls(prob, opts):
    """Field evaluations and VJPs each selected engine row actually makes (one untimed run
    per row through a :class:`CountingLayer`); ``{row: {"evals": n, "vjps": m}}``."""
    from adjointcore.fields import LayerField

    counts = {"evals": 0, "vjps": 0}
    layer = CountingLayer(prob.layer, counts)
    counting = prob._replace(layer=layer, field=LayerField(layer))
    out = {}
    for spec in row_specs(counting, opts):
        counts.update(evals=0, vjps=0)
        try:
            spec.engine()
            out[spec.key] = dict(counts)
        except Exception as exc:
            out[spec.key] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def gradient_check(prob, steps, taped_work):
    """Relative errors of the engine's taped gradient against :func:`reference_rk4_gradient`."""
    if taped_work is None:
        taped_work = block_fwd_grad(make_block(prob, steps), prob)
    z0_bar, params_bar = reference_rk4_gradient(prob, steps)
    return {"x_bar": relative_error(taped_work["x_bar"], z0_bar),
            "params_bar": relative_error(taped_work["params_bar"], params_bar)}


def profile_taped(prob, steps, top=25):
    """cProfile text of one taped engine forward + gradient, ``top`` functions by tottime."""
    block = make_block(prob, steps)
    prof = cProfile.Profile()
    prof.enable()
    block_fwd_grad(block, prob)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def run_rows(prob, opts):
    """All selected rows of one configuration, each guarded so one engine error does not
    lose the others; returns ``(rows, taped_work)``."""
    rows, taped_work = [], None
    for spec in row_specs(prob, opts):
        start = time.perf_counter()
        try:
            result, work = measure_row(spec, opts["repeat"], opts["memory"],
                                       opts["min_seconds"])
        except Exception as exc:   # report the engine error in the table, go on
            result, work = {"row": spec.key, "label": spec.label,
                            "error": f"{type(exc).__name__}: {exc}"}, None
        if spec.key == "taped":
            taped_work = work
        rows.append(result)
        summary = result.get("error") or (f"engine {result['engine_ms']:.1f} ms, floor "
                                          f"{result['floor_ms']:.1f} ms")
        log(f"  {spec.label}: {summary} ({time.perf_counter() - start:.1f} s in all)")
    if "backsolve-steps" in opts["rows"] and prob.size == "medium" and opts["memory"]:
        try:
            rows.extend(backsolve_step_rows(prob, opts["backsolve_steps"]))
        except Exception as exc:
            rows.append({"row": "backsolve-steps", "label": "backsolve peak vs steps",
                         "error": f"{type(exc).__name__}: {exc}"})
    return rows, taped_work


def run_one(opts):
    """Measure one (size, dtype) in this process; returns the JSON-ready result."""
    prob = make_problem(opts["size"], opts["dtype"], opts["seed"])
    log(f"[{opts['size']} {opts['dtype']}] {describe(prob)}")
    rows, taped_work = run_rows(prob, opts)
    if opts["count"]:
        for row, calls in counted_calls(prob, opts).items():
            for result in rows:
                if result["row"] == row:
                    result["counted_calls"] = calls
    try:
        check = gradient_check(prob, opts["steps"], taped_work)
    except Exception as exc:
        check = {"error": f"{type(exc).__name__}: {exc}"}
    if opts["profile"]:
        print(f"cProfile, one taped fwd+grad, {opts['size']} {opts['dtype']}:")
        print(profile_taped(prob, opts["steps"]), flush=True)
    return {"size": opts["size"], "dtype": opts["dtype"], "rows": rows, "check": check,
            "blas": blas_info()}


# -- the driver -------------------------------------------------------------------------------

def log(message):
    """Progress line on stderr (stdout carries the table)."""
    print(message, file=sys.stderr, flush=True)


def blas_info():
    """BLAS libraries and thread counts seen by ``threadpoolctl`` (empty if not installed)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    keys = ("internal_api", "version", "num_threads", "architecture")
    return [{k: lib.get(k) for k in keys} for lib in threadpool_info()
            if lib.get("user_api") == "blas"]


def header_line(blas):
    """Machine line: Python, NumPy, BLAS and thread counts, CPU count."""
    libs = ", ".join(f"{b['internal_api']} {b['version']} ({b['architecture']}) "
                     f"{b['num_threads']} threads" for b in blas) or "BLAS: threadpoolctl n/a"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return (f"Python {platform.python_version()}, NumPy {np.__version__}, BLAS: {libs}; "
            f"CPUs: {os.cpu_count()} ({usable} usable)")


def child_command(args, size, dtype, out_path, profile):
    """Command line of the subprocess measuring one (size, dtype)."""
    repeat = args.repeat_large if size == "large" else args.repeat
    cmd = [sys.executable, os.path.abspath(__file__), "--one", size, "--dtypes", dtype,
           "--out", out_path, "--repeat", str(repeat), "--min-seconds", str(args.min_seconds),
           "--rows", ",".join(args.rows),
           "--steps", str(args.steps), "--seed", str(args.seed),
           "--revolve-snapshots", str(args.revolve_snapshots),
           "--backsolve-steps", ",".join(map(str, args.backsolve_steps)),
           "--dopri5-sizes", ",".join(args.dopri5_sizes),
           "--memory" if args.memory else "--no-memory",
           "--count" if args.count else "--no-count"]
    if args.blas_threads is not None:
        cmd += ["--blas-threads", str(args.blas_threads)]
    if profile:
        cmd.append("--profile")
    return cmd


def run_child(args, size, dtype, profile):
    """Run one configuration in a fresh interpreter; returns its result dict."""
    fd, out_path = tempfile.mkstemp(prefix="bench_p1_", suffix=".json")
    os.close(fd)
    try:
        env = dict(os.environ, ADJOINTCORE_HOST_MEMORY=args.host_memory)
        proc = subprocess.run(child_command(args, size, dtype, out_path, profile), env=env)
        if proc.returncode != 0:
            return {"size": size, "dtype": dtype, "rows": [], "check": {},
                    "error": f"subprocess exited with {proc.returncode}"}
        with open(out_path) as fh:
            return json.load(fh)
    finally:
        os.unlink(out_path)


def configurations(args):
    """``[(size, dtype)]`` in run order."""
    return [(size, dtype) for size in args.sizes
            for dtype in (args.dtypes or DEFAULT_DTYPES[size])]


def fmt(value, spec):
    """Format a number, ``-`` for missing."""
    return "-" if value is None else format(value, spec)


def table_lines(results):
    """The markdown table."""
    lines = ["| size | dtype | row | engine (ms) | floor (ms) | ratio | peak MB | page faults "
             "per call (engine / floor) |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for res in results:
        if res.get("error"):
            lines.append(f"| {res['size']} | {res['dtype']} | ERROR: {res['error']} "
                         f"| - | - | - | - | - |")
        for row in res["rows"]:
            if "error" in row:
                lines.append(f"| {res['size']} | {res['dtype']} | {row['label']}: ERROR "
                             f"{row['error']} | - | - | - | - | - |")
                continue
            lines.append(f"| {res['size']} | {res['dtype']} | {row['label']} | "
                         f"{fmt(row['engine_ms'], '.2f')} | {fmt(row['floor_ms'], '.2f')} | "
                         f"{fmt(row['ratio'], '.2f')} | {fmt(row['peak_mb'], '.1f')} | "
                         f"{fmt(row.get('engine_faults'), 'd')} / "
                         f"{fmt(row.get('floor_faults'), 'd')} |")
    return lines


def find_row(res, key):
    """The first error-free row ``key`` of one configuration's result, or ``None``."""
    return next((r for r in res["rows"] if r["row"] == key and "error" not in r), None)


def derived(res):
    """Per-configuration derived quantities: Revolve / taped time, backsolve peak growth."""
    out = {}
    taped, revolve = find_row(res, "taped"), find_row(res, "revolve")
    if taped and revolve:
        out["revolve_vs_taped"] = revolve["engine_ms"] / taped["engine_ms"]
    steps_rows = [r for r in res["rows"] if r["row"] == "backsolve-steps"]
    if len(steps_rows) >= 2 and steps_rows[0]["peak_mb"]:
        out["backsolve_peak_growth"] = steps_rows[-1]["peak_mb"] / steps_rows[0]["peak_mb"]
    return out


def target_value(res, row, quantity):
    """The measured quantity a target refers to, or ``None`` if not measured."""
    extra = derived(res)
    if quantity == "vs_taped":
        return extra.get("revolve_vs_taped")
    if quantity == "peak_growth":
        return extra.get("backsolve_peak_growth")
    found = find_row(res, row)
    return None if found is None else found.get("ratio" if quantity == "ratio" else "peak_mb")


def target_lines(results):
    """One line per acceptance target that this run measured."""
    lines = []
    for row, size, dtype, quantity, limit in TARGETS:
        for res in results:
            if res["size"] != size or (dtype and res["dtype"] != dtype):
                continue
            value = target_value(res, row, quantity)
            if value is not None:
                verdict = "ok" if value <= limit else "MISSED"
                lines.append(f"- {size} {res['dtype']} {row} {quantity}: {value:.2f} "
                             f"(target <= {limit:g}) {verdict}")
    return lines


def note_lines(results):
    """Revolve / taped ratios, gradient checks and the work counts behind each floor."""
    lines = []
    for res in results:
        tag = f"{res['size']} {res['dtype']}"
        extra = derived(res)
        if "revolve_vs_taped" in extra:
            lines.append(f"- {tag}: Revolve / taped time = {extra['revolve_vs_taped']:.2f}")
        if "backsolve_peak_growth" in extra:
            lines.append(f"- {tag}: backsolve peak, last / first step count = "
                         f"{extra['backsolve_peak_growth']:.2f}")
        check = res.get("check") or {}
        if "error" in check:
            lines.append(f"- {tag}: gradient check failed: {check['error']}")
        elif check:
            lines.append(f"- {tag}: taped gradient vs reference_rk4_gradient, relative error "
                         f"x_bar {check['x_bar']:.1e}, params_bar {check['params_bar']:.1e}")
        repeats = {row["row"]: row["repeats"] for row in res["rows"] if "repeats" in row}
        if repeats:
            lines.append(f"- {tag}: repeats per row {repeats}")
        for row in res["rows"]:
            if row.get("floor_work"):
                calls = row.get("counted_calls")
                made = f"; engine makes {calls}" if calls else ""
                lines.append(f"- {tag} {row['label']}: engine reports {row['engine_work']}"
                             f"{made}; floor {row['floor_work']}")
    return lines


def run_all(args):
    """Run every configuration in its own subprocess and print the report."""
    with blas_threads(args.blas_threads):
        header = header_line(blas_info())
    results = [run_child(args, size, dtype, profile=args.profile and i == 0)
               for i, (size, dtype) in enumerate(configurations(args))]
    print()
    print(f"P1 benchmark: MLP neural ODE, RK4 {args.steps} steps unless noted, "
          f"median of at least {args.repeat} (large: {args.repeat_large}) repeats, raised "
          f"to about {args.min_seconds:g} s per row (at most {MAX_REPEAT})")
    print(f"{header}; host memory: {args.host_memory}")
    print()
    print("\n".join(table_lines(results)))
    print()
    print("Targets:")
    print("\n".join(target_lines(results)) or "- none measured")
    print()
    print("Notes:")
    print("\n".join(note_lines(results)))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"header": header, "args": vars(args), "results": results}, fh, indent=1)
    return results


def run_one_cli(args):
    """The ``--one`` subprocess: measure, then write the JSON result to ``--out``."""
    dtype = (args.dtypes or DEFAULT_DTYPES[args.one])[0]
    opts = {"size": args.one, "dtype": dtype, "seed": args.seed, "steps": args.steps,
            "repeat": args.repeat, "min_seconds": args.min_seconds, "rows": args.rows,
            "memory": args.memory,
            "profile": args.profile, "count": args.count,
            "revolve_snapshots": args.revolve_snapshots,
            "backsolve_steps": args.backsolve_steps, "dopri5_sizes": args.dopri5_sizes}
    with blas_threads(args.blas_threads):
        result = run_one(opts)
    with open(args.out, "w") as fh:
        json.dump(result, fh)


def csv_list(choices=None, convert=str):
    """argparse type: comma-separated list, optionally checked against ``choices``."""
    def parse(text):
        items = [convert(s.strip()) for s in text.split(",") if s.strip()]
        bad = [s for s in items if choices is not None and s not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {list(choices)}")
        return items
    return parse


def build_parser():
    """The command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=csv_list(SIZES), default=["small", "medium"],
                   help="comma-separated from small,medium,large (default small,medium)")
    p.add_argument("--dtypes", type=csv_list(("float32", "float64")), default=None,
                   help="dtypes for every size (default: float64; large: float32,float64)")
    p.add_argument("--repeat", type=int, default=7, help="timed repeats (median; default 7)")
    p.add_argument("--repeat-large", type=int, default=3, help="repeats for large (default 3)")
    p.add_argument("--min-seconds", type=float, default=2.0,
                   help="raise a row's repeats until its timing takes about this long (at "
                        f"most {MAX_REPEAT}; default 2; 0: exactly --repeat)")
    p.add_argument("--rows", type=csv_list(ROWS), default=list(ROWS),
                   help=f"rows to run (default all: {','.join(ROWS)})")
    p.add_argument("--steps", type=int, default=100, help="RK4 fixed steps (default 100)")
    p.add_argument("--revolve-snapshots", type=int, default=10)
    p.add_argument("--backsolve-steps", type=csv_list(convert=int), default=[100, 400],
                   help="step counts of the backsolve peak-memory rows (medium only)")
    p.add_argument("--dopri5-sizes", type=csv_list(SIZES), default=["small"],
                   help="sizes that run the adaptive dopri5 row (default small)")
    p.add_argument("--blas-threads", type=int, default=None,
                   help="limit BLAS threads (default: unchanged, 2 here)")
    p.add_argument("--host-memory", choices=("retain", "system"), default="retain",
                   help="ADJOINTCORE_HOST_MEMORY of the measuring processes: 'retain' (the "
                        "library's default: freed buffers reused) or 'system' (glibc's own "
                        "malloc thresholds)")
    p.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                   help="measure peak memory under tracemalloc (untimed runs)")
    p.add_argument("--count", action=argparse.BooleanOptionalAction, default=True,
                   help="count the field calls each engine row makes (one untimed run each)")
    p.add_argument("--profile", action="store_true",
                   help="cProfile one taped fwd+grad of the first size (top 25 by tottime)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--one", choices=tuple(SIZES), help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    return p


def main(argv=None):
    """Entry point: the driver, or one configuration with ``--one``."""
    args = build_parser().parse_args(argv)
    if args.one:
        run_one_cli(args)
    else:
        run_all(args)


if __name__ == "__main__":
    main()
