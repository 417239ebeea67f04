"""What a bitwise-unchanged engine must compute beyond the plain-NumPy floor (issue 8).

The P1 targets of ``bench_p1.py`` compare the engine with a floor that does only the field
evaluations and VJPs, with tanh's derivative as ``1 - H*H``. The engine's gradients may not
change by one bit, and they come from arithmetic the floor does not do:

* the Runge-Kutta stage inputs ``y + h sum_j a_ij k_j``, the update ``y + h sum_i b_i k_i``
  and, in reverse, the stage cotangents ``h (b_i y1_bar + sum_j a_ji w_j)`` and
  ``y_bar = y1_bar + sum_i w_i`` (one ``dot`` with a tableau row, a scaling and an add each);
* tanh's derivative to full relative accuracy, ``4 e / (1 + e)^2`` with ``e = exp(-2|x|)``
  (:func:`adjointcore.layers.activation.tanh_derivative`), where ``1 - H*H`` loses up to
  ``eps / (1 - H^2)`` relatively;
* the parameter cotangents accumulated stage by stage and step by step in the engine's order.

The replica calls no engine code except the public :func:`tanh_derivative`; the stage
combinations are written out here with the same NumPy calls as ``solvers._rk``.

This script writes that arithmetic as one flat loop, the *lean replica* of the engine's taped
RK4 discrete adjoint for the P1 MLP (no layers, drivers, checks or bookkeeping: only the NumPy
calls whose results reach the gradient), asserts that its gradient is bitwise the engine's,
and times it beside the floor and the engine in one process (interleaved medians). The lean
replica's ratio to the floor bounds from below what any implementation with bitwise-unchanged
gradients can reach; the engine's ratio to the lean replica is the engine's own overhead.

Run::

    python benchmarks/bench_required_work.py [--sizes small,medium] [--repeat 9]
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_p1 as p1  # noqa: E402  (the P1 problem, floor and timing helpers)

from adjointcore.layers.activation import tanh_derivative  # noqa: E402

A = (None, np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0]))
B = np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6])
#: Column j of RK4's ``a`` below the diagonal: the weights of ``w_i`` (i > j) in kappa_j.
A_COLUMNS = (np.array([0.5, 0.0, 0.0]), np.array([0.5, 0.0]), np.array([1.0]))
#: Issue 8's targets (engine / floor).
TARGETS = {"small": {"taped": 1.5, "forward": 2.0}, "medium": {"taped": 1.15, "forward": 1.1}}


def weighted_sum(weights, stack):
    """``sum_j weights[j] stack[j]`` as one ``dot`` of shapes ``(1, m)`` and ``(m, size)``."""
    m = weights.shape[0]
    return np.dot(weights.reshape(1, m), stack.reshape(m, -1)).reshape(stack.shape[1:])


def combine(y, h, weights, stack):
    """``y + h * sum_j weights[j] stack[j]``: the sum, scaled, then ``y`` added, in place."""
    out = weighted_sum(weights, stack)
    out *= h
    out += y
    return out


def layout(prob):
    """Views ``(W1 (h, d), b1, W2 (d, h), b2)`` of the flat parameters and their slices."""
    batch, d, h = p1.SIZES[prob.size]
    cuts = np.cumsum([h * d, h, d * h, d])
    sl = [slice(a, b) for a, b in zip((0, *cuts[:-1]), cuts, strict=True)]
    return sl, (h, d), (d, h)


def lean_forward(prob, steps, tape):
    """RK4 on ``linspace(0, 1, steps + 1)``; returns ``(y_N, tape)``, the tape holding each
    step's ``(h, [(stage input, pre-activation, hidden)] * 4)`` when ``tape`` is true."""
    sl, s1, s2 = layout(prob)
    p = prob.params
    W1, b1, W2, b2 = p[sl[0]].reshape(s1), p[sl[1]], p[sl[2]].reshape(s2), p[sl[3]]
    grid = np.linspace(0.0, 1.0, steps + 1)
    y, states = prob.z0, []
    for n in range(steps):
        h = grid[n + 1] - grid[n]
        k = np.empty((4,) + y.shape, dtype=y.dtype)
        stage = []
        for i in range(4):
            y_i = y if i == 0 else combine(y, h, A[i], k[:i])
            z = y_i @ W1.T
            z += b1
            hidden = np.tanh(z)
            out = hidden @ W2.T
            out += b2
            k[i] = out
            stage.append((y_i, z, hidden))
        if tape:
            states.append((h, stage))
        y = combine(y, h, B, k)
    return y, states


def lean_gradient(prob, steps):
    """Taped forward, then the reverse sweep in the engine's order: ``(x_bar, params_bar)``."""
    sl, s1, s2 = layout(prob)
    p = prob.params
    W1, W2 = p[sl[0]].reshape(s1), p[sl[2]].reshape(s2)
    _, tape = lean_forward(prob, steps, tape=True)
    n_params = p.size
    dtype = np.result_type(prob.z0.dtype, p.dtype)
    buf0, buf1 = np.empty(n_params, dtype=dtype), np.empty(n_params, dtype=dtype)
    y_bar, acc = prob.C, None
    for h, stage in reversed(tape):
        w, pb = None, None
        for i in range(3, -1, -1):
            kappa = B[i] * y_bar
            if i < 3:
                kappa += weighted_sum(A_COLUMNS[i], w[i + 1:4])
            kappa *= h
            buf = buf0 if pb is None else buf1
            y_i, z, hidden = stage[i]
            x_bar = kappa @ W2
            np.matmul(kappa.T, hidden, out=buf[sl[2]].reshape(s2))
            kappa.sum(axis=0, out=buf[sl[3]])
            g = tanh_derivative(z, x_bar)
            w_i = g @ W1
            np.matmul(g.T, y_i, out=buf[sl[0]].reshape(s1))
            g.sum(axis=0, out=buf[sl[1]])
            if pb is None:
                pb = buf0
            else:
                pb += buf1
            if w is None:
                w = np.zeros((4,) + w_i.shape, dtype=np.result_type(w_i, y_bar))
            w[i] = w_i
        y_bar = y_bar + w.sum(axis=0)
        acc = pb.copy() if acc is None else acc.__iadd__(pb)
    return y_bar, acc


def run_size(size, repeat, steps):
    """One size's rows: floor, lean replica and engine (taped fwd+grad and forward only)."""
    prob = p1.make_problem(size, "float64", 0)
    block = p1.make_block(prob, steps)
    engine = p1.block_fwd_grad(block, prob)
    lean_x, lean_p = lean_gradient(prob, steps)
    if not (np.array_equal(lean_x, engine["x_bar"]) and np.array_equal(lean_p,
                                                                      engine["params_bar"])):
        raise AssertionError(f"{size}: the lean replica's gradient is not bitwise the "
                             "engine's; it does not replicate the engine's arithmetic")
    n = 4 * steps
    taped = p1.interleaved_medians(lambda: lean_gradient(prob, steps),
                                   lambda: p1.floor_taped(prob, n, n), repeat)
    engine_taped = p1.interleaved_medians(lambda: p1.block_fwd_grad(block, prob),
                                          lambda: p1.floor_taped(prob, n, n), repeat)
    fwd = p1.interleaved_medians(lambda: lean_forward(prob, steps, tape=False),
                                 lambda: p1.floor_taped(prob, n, 0), repeat)
    engine_fwd = p1.interleaved_medians(lambda: p1.solve_forward(prob, steps),
                                        lambda: p1.floor_taped(prob, n, 0), repeat)
    return [(size, "taped fwd+grad", taped, engine_taped),
            (size, "forward only", fwd, engine_fwd)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small,medium")
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args(argv)
    print("| size | row | floor | lean replica | lean / floor | engine | engine / floor | "
          "engine / lean | target |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes.split(","):
        for sz, row, (t_lean, t_floor), (t_eng, t_floor2) in run_size(size, args.repeat,
                                                                      args.steps):
            key = "taped" if row.startswith("taped") else "forward"
            print(f"| {sz} | {row} | {t_floor * 1e3:.2f} ms | {t_lean * 1e3:.2f} ms | "
                  f"{t_lean / t_floor:.2f} | {t_eng * 1e3:.2f} ms | {t_eng / t_floor2:.2f} | "
                  f"{t_eng / t_lean:.2f} | {TARGETS[sz][key]} |", flush=True)
    print("\nThe lean replica's gradient is bitwise the engine's (asserted for every size).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
