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

The backsolve row replicates ``ODEBlock(gradient="backsolve")`` on RK4: the forward solve to
``y(1)`` (stages without caches), then the backward solve of the flat augmented state
``(y, a, a_params)`` with the same steps, each augmented evaluation a taped field evaluation,
its VJP (the parameter cotangent written into the ``a_params`` block) and two negations, and
the Runge-Kutta combinations on the whole augmented state; its floor is ``bench_p1.py``'s
paired floor (400 evaluations, then 400 evaluation + VJP pairs). Every fixed-step row runs in
float32 too (``--dtypes``): the tableau rows in the state's real dtype, the step a Python
float, as the engine takes them. Floor, replica and engine are timed in turn in one loop.

The adaptive row does the same for P1's Dopri5 block (rtol 1e-6, atol 1e-8, the discrete
adjoint of the accepted grid): Hairer's starting step, the seven-stage FSAL steps with their
embedded error estimate and RMS norm, the PI controller's scalar updates, then the reverse
sweep over the six kept (live) stages of each accepted step. It checks its evaluation and VJP
counts and its gradient against the engine's, bitwise; the floor is that of its 26
evaluations and 24 VJPs, as in ``bench_p1.py``'s dopri5 row.

Run::

    python benchmarks/bench_required_work.py [--sizes small,medium] [--dtypes float64]
                                             [--rows taped,forward,backsolve] [--repeat 9]
                                             [--dopri5-sizes small]
"""
from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_p1 as p1  # noqa: E402  (the P1 problem, floor and timing helpers)

from adjointcore.layers.activation import tanh_derivative  # noqa: E402

A = (None, np.array([0.5]), np.array([0.0, 0.5]), np.array([0.0, 0.0, 1.0]))
B = np.array([1 / 6, 1 / 3, 1 / 3, 1 / 6])
#: Column j of RK4's ``a`` below the diagonal: the weights of ``w_i`` (i > j) in kappa_j.
A_COLUMNS = (np.array([0.5, 0.0, 0.0]), np.array([0.5, 0.0]), np.array([1.0]))
#: RK4's nodes ``c``.
RK4_C = (0.0, 0.5, 0.5, 1.0)
#: Issue 8's targets (engine / floor).
TARGETS = {"small": {"taped": 1.5, "forward": 2.0, "dopri5": 3.0},
           "medium": {"taped": 1.15, "forward": 1.1, "backsolve": 1.2},
           "large": {"taped": 1.05, "forward": 1.1, "backsolve": 1.2}}

#: Dormand-Prince 5(4) (``solvers.tableaux.DOPRI5``, Dormand & Prince 1980), written out with
#: the same Python float expressions: ``a`` (7 x 7, last row = ``b``, FSAL), ``b``, ``b_err``.
DP_B = [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0]
DP_A = np.array([[0, 0, 0, 0, 0, 0, 0],
                 [1 / 5, 0, 0, 0, 0, 0, 0],
                 [3 / 40, 9 / 40, 0, 0, 0, 0, 0],
                 [44 / 45, -56 / 15, 32 / 9, 0, 0, 0, 0],
                 [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729, 0, 0, 0],
                 [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656, 0, 0],
                 DP_B], dtype=np.float64)
DP_B_ERR = np.array([35 / 384 - 5179 / 57600, 0, 500 / 1113 - 7571 / 16695,
                     125 / 192 - 393 / 640, -2187 / 6784 + 92097 / 339200,
                     11 / 84 - 187 / 2100, -1 / 40], dtype=np.float64)
DP_B_ARR = np.array(DP_B, dtype=np.float64)
#: P1's Dopri5 row: rtol, atol, PI exponents for k = 5 (beta2 = 0.2 / k, beta1 = 1/k - 0.75
#: beta2), Hairer's safety / factor limits / error memory floor, the solver's landing ulps.
RTOL, ATOL, K = 1e-6, 1e-8, 5
BETA2 = 0.2 / K
BETA1 = 1.0 / K - 0.75 * BETA2


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


def tableau_rows(dtype):
    """RK4's rows of ``a``, ``b`` and the columns of ``a`` in the state's real ``dtype``, as
    the engine's ``rk_coefficients`` casts them (float32 states: float32 weights)."""
    def cast(rows):
        return tuple(None if r is None else np.asarray(r, dtype=dtype) for r in rows)
    return cast(A), np.asarray(B, dtype=dtype), cast(A_COLUMNS)


def layout(prob):
    """Views ``(W1 (h, d), b1, W2 (d, h), b2)`` of the flat parameters and their slices."""
    batch, d, h = p1.SIZES[prob.size]
    cuts = np.cumsum([h * d, h, d * h, d])
    sl = [slice(a, b) for a, b in zip((0, *cuts[:-1]), cuts, strict=True)]
    return sl, (h, d), (d, h)


def lean_forward(prob, steps, tape):
    """RK4 on ``linspace(0, 1, steps + 1)``; returns ``(y_N, tape)``, the tape holding each
    step's ``(h, [(stage input, pre-activation, hidden)] * 4)`` when ``tape`` is true. Without
    a tape the stage inputs are formed in one reused buffer each (the product of ``combine``
    written into it: the same bits, as the engine's forward-only loop does since it reuses
    them), so the replica stays a lower bound of the engine's work."""
    sl, s1, s2 = layout(prob)
    p = prob.params
    W1, b1, W2, b2 = p[sl[0]].reshape(s1), p[sl[1]], p[sl[2]].reshape(s2), p[sl[3]]
    a_rows, b_row, _ = tableau_rows(prob.z0.dtype)
    grid = np.linspace(0.0, 1.0, steps + 1)
    y, states = prob.z0, []
    inputs = np.empty((4, 1, y.size), dtype=y.dtype)     # forward only: reused stage inputs
    for n in range(steps):
        h = float(grid[n + 1] - grid[n])          # a Python float, as the engine's rk_step
        k = np.empty((4,) + y.shape, dtype=y.dtype)
        stage = []
        for i in range(4):
            if i == 0:
                y_i = y
            elif tape:
                y_i = combine(y, h, a_rows[i], k[:i])
            else:
                np.dot(a_rows[i].reshape(1, i), k[:i].reshape(i, -1), out=inputs[i])
                y_i = inputs[i].reshape(y.shape)
                y_i *= h
                y_i += y
            z = y_i @ W1.T
            z += b1
            hidden = np.tanh(z)
            out = hidden @ W2.T
            out += b2
            k[i] = out
            stage.append((y_i, z, hidden))
        if tape:
            states.append((h, stage))
        y = combine(y, h, b_row, k)
    return y, states


def lean_gradient(prob, steps):
    """Taped forward, then the reverse sweep in the engine's order: ``(x_bar, params_bar)``."""
    sl, s1, s2 = layout(prob)
    p = prob.params
    W1, W2 = p[sl[0]].reshape(s1), p[sl[2]].reshape(s2)
    _, b_row, a_columns = tableau_rows(prob.z0.dtype)
    _, tape = lean_forward(prob, steps, tape=True)
    n_params = p.size
    dtype = np.result_type(prob.z0.dtype, p.dtype)
    buf0, buf1 = np.empty(n_params, dtype=dtype), np.empty(n_params, dtype=dtype)
    y_bar, acc = prob.C, None
    for h, stage in reversed(tape):
        w, pb = None, None
        for i in range(3, -1, -1):
            kappa = b_row[i] * y_bar
            if i < 3:
                kappa += weighted_sum(a_columns[i], w[i + 1:4])
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


def lean_backsolve(prob, steps):
    """The engine's RK4 backsolve (``ODEBlock(gradient="backsolve")``) as flat loops: the
    forward solve to ``y(1)`` (stages evaluated without caches), then the backward solve of
    the flat augmented state ``z = (y, a, a_params)`` from ``t = 1`` to ``0`` with the same
    ``steps``, each augmented evaluation one taped field evaluation at ``y``, its VJP with
    ``a`` (the parameter cotangent written into the ``a_params`` block) and two negations:
    ``(x_bar, params_bar)``, bitwise the engine's."""
    sl, s1, s2 = layout(prob)
    p = prob.params
    weights = (p[sl[0]].reshape(s1), p[sl[1]], p[sl[2]].reshape(s2), p[sl[3]])
    real = prob.z0.dtype
    a_rows, b_row, _ = tableau_rows(real)

    def rk4(f, y, t0, t1):
        k = np.empty((4,) + y.shape, dtype=y.dtype)   # one stage buffer, reused by each step
        f0, t = f(t0, y), t0
        for n in range(1, steps + 1):
            t_new = t1 if n == steps else t0 + n * ((t1 - t0) / steps)
            h = t_new - t
            k[0] = f0
            for i in range(1, 4):
                k[i] = f(t + RK4_C[i] * h, combine(y, h, a_rows[i], k[:i]))
            y = combine(y, h, b_row, k)
            t = t_new
            if n < steps:
                f0 = f(t, y)
        return y

    n_y, shape = prob.z0.size, prob.z0.shape

    def augmented(t, z):
        y, a = z[:n_y].reshape(shape), z[n_y:2 * n_y].reshape(shape)
        dz = np.empty(z.shape, dtype=z.dtype)
        dy, cache = mlp_eval(weights, y)
        y_bar = mlp_vjp_into(weights, sl, (s1, s2), cache, a, dz[2 * n_y:])
        np.negative(y_bar.reshape(-1), out=dz[n_y:2 * n_y])
        np.negative(dz[2 * n_y:], out=dz[2 * n_y:])
        dz[:n_y] = dy.reshape(-1)
        return dz

    y1 = rk4(lambda t, y: mlp_eval(weights, y)[0], prob.z0, 0.0, 1.0)
    z1 = np.concatenate([y1.reshape(-1), prob.C.reshape(-1), np.zeros(p.size, dtype=real)])
    z0 = rk4(augmented, z1, 1.0, 0.0)
    return z0[n_y:2 * n_y].reshape(shape).copy(), z0[2 * n_y:].copy()


def mlp_eval(weights, x):
    """The bound MLP field ``tanh(x W1^T + b1) W2^T + b2``: ``(dy, (x, z, hidden))``."""
    W1, b1, W2, b2 = weights
    z = x @ W1.T
    z += b1
    hidden = np.tanh(z)
    out = hidden @ W2.T
    out += b2
    return out, (x, z, hidden)


def mlp_vjp_into(weights, sl, shapes, cache, kappa, buf):
    """The field's VJP at ``cache`` with the parameter cotangent written into ``buf``."""
    W1, _, W2, _ = weights
    x, z, hidden = cache
    x_bar = kappa @ W2
    np.matmul(kappa.T, hidden, out=buf[sl[2]].reshape(shapes[1]))
    kappa.sum(axis=0, out=buf[sl[3]])
    g = tanh_derivative(z, x_bar)
    w_i = g @ W1
    np.matmul(g.T, x, out=buf[sl[0]].reshape(shapes[0]))
    g.sum(axis=0, out=buf[sl[1]])
    return w_i


def rms(scaled):
    """The solver's RMS norm ``m * sqrt(mean((|s| / m)^2))``, ``m = max |s|`` (1 if 0), the
    mean as the solver takes it (``add.reduce`` / count, bitwise ``numpy.mean``)."""
    mag = np.abs(scaled)
    peak = mag.max()
    scale = peak if (np.isfinite(peak) and peak > 0) else peak.dtype.type(1)
    sq = (mag / scale) ** 2
    return float(scale * np.sqrt(sq.dtype.type(np.add.reduce(sq, axis=None) / np.intp(sq.size))))


def scaled(err, y0, y1):
    """``err / (atol + rtol max(|y0|, |y1|))`` with P1's scalar tolerances."""
    return err / (ATOL + RTOL * np.maximum(np.abs(y0), np.abs(y1)))


def first_step(weights, y0, f0):
    """Hairer's starting step (one evaluation), capped at the span 1; the three norms share
    one divisor ``atol + rtol |y0|`` (``max(|y0|, |0|)``), as the solver's."""
    scale = ATOL + RTOL * np.abs(y0)
    d0, d1 = rms(y0 / scale), rms(f0 / scale)
    h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
    f1, _ = mlp_eval(weights, y0 + h0 * f0)
    d_max = max(d1, rms((f1 - f0) / scale) / h0)
    h1 = max(1e-6, 1e-3 * h0) if d_max <= 1e-15 else (0.01 / d_max) ** (1.0 / 6)
    return min(float(min(100.0 * h0, h1)), 1.0)


def lean_dopri5(prob):
    """Dopri5 on ``[0, 1]`` (rtol 1e-6, atol 1e-8, PI control, FSAL) with every accepted
    step's stages taped, then the discrete adjoint of the accepted grid in the engine's order:
    ``(x_bar, params_bar, nfe, n_vjp)``."""
    sl, s1, s2 = layout(prob)
    p = prob.params
    weights = (p[sl[0]].reshape(s1), p[sl[1]], p[sl[2]].reshape(s2), p[sl[3]])
    y = prob.z0
    f = mlp_eval(weights, y)
    h_abs, nfe = first_step(weights, y, f[0]), 2
    t, err_prev, rejected, tape = 0.0, 1.0, False, []
    while t != 1.0:
        t_new = t + h_abs
        if 1.0 - t_new <= 10 * np.spacing(1.0):
            t_new, h = 1.0, 1.0 - t
        else:
            h = t_new - t
            t_new = t + h
        k = np.empty((7,) + y.shape, dtype=y.dtype)
        k[0], caches = f[0], [f[1]]
        for i in range(1, 7):
            dy, cache = mlp_eval(weights, combine(y, h, DP_A[i, :i], k[:i]))
            k[i] = dy
            caches.append(cache)
        nfe += 6
        y1 = combine(y, h, DP_B_ARR[:6], k[:6])
        y_err = weighted_sum(DP_B_ERR, k)
        y_err *= h
        err = rms(scaled(0.0 + y_err, y, y1))
        if err > 1.0:
            h_abs, rejected = abs(h * max(0.2, 0.9 * err ** (-1.0 / K))), True
            continue
        factor = 10.0 if err == 0.0 else 0.9 * err ** (-BETA1) * err_prev ** BETA2
        h_abs = abs(h * min(max(factor, 0.2), 1.0 if rejected else 10.0))
        err_prev, rejected = max(err, 1e-4), False
        tape.append((h, caches))
        f, t, y = (k[6], caches[6]), t_new, y1
    n_params = p.size
    bufs = np.empty(n_params, dtype=p.dtype), np.empty(n_params, dtype=p.dtype)
    y_bar, acc = np.zeros_like(y) + prob.C, None
    for h, caches in reversed(tape):
        w, pb = None, None
        for i in range(5, -1, -1):
            kappa = DP_B_ARR[i] * y_bar
            if w is not None:               # the kept stages are the six live ones
                kappa += weighted_sum(DP_A[i + 1:6, i], w[i + 1:6])
            kappa *= h
            w_i = mlp_vjp_into(weights, sl, (s1, s2), caches[i], kappa,
                               bufs[0] if pb is None else bufs[1])
            if pb is None:
                pb = bufs[0]
            else:
                pb += bufs[1]
            if w is None:
                w = np.zeros((6,) + w_i.shape, dtype=np.result_type(w_i, y_bar))
            w[i] = w_i
        y_bar = y_bar + w.sum(axis=0)
        acc = pb.copy() if acc is None else acc.__iadd__(pb)
    return y_bar, acc, nfe, 6 * len(tape)


def run_dopri5(size, repeat, dtype="float64"):
    """The adaptive Dopri5 row: lean replica, engine and the floor of their evaluations."""
    prob = p1.make_problem(size, dtype, 0)
    block = p1.dopri5_block(prob)
    engine = p1.dopri5_fwd_grad(block, prob)
    lean_x, lean_p, nfe, n_vjp = lean_dopri5(prob)
    if (nfe, n_vjp) != (engine["fwd_nfe"], engine["vjps"]) or not (
            np.array_equal(lean_x, engine["x_bar"])
            and np.array_equal(lean_p, engine["params_bar"])):
        raise AssertionError(f"{size}: the lean Dopri5 replica ({nfe} evaluations, {n_vjp} "
                             f"VJPs) is not bitwise the engine's ({engine['fwd_nfe']}, "
                             f"{engine['vjps']})")
    lean, eng = interleaved3(lambda: p1.floor_taped(prob, nfe, n_vjp),
                             lambda: lean_dopri5(prob),
                             lambda: p1.dopri5_fwd_grad(block, prob), repeat)
    return [(size, dtype, "dopri5", f"adaptive dopri5 ({nfe} NFE, {n_vjp} VJPs)", lean, eng)]


def interleaved3(floor, lean, engine, repeat):
    """``((lean, floor), (engine, floor))`` medians, the three timed in turn ``repeat`` times
    after one untimed call each (one floor for both ratios: noise hits all three alike)."""
    fns = (floor, lean, engine)
    for fn in fns:
        fn()
    times = [[], [], []]
    for _ in range(repeat):
        for k, fn in enumerate(fns):
            gc.collect()
            times[k].append(p1.timed(fn)[0])
    t_floor, t_lean, t_eng = (statistics.median(t) for t in times)
    return (t_lean, t_floor), (t_eng, t_floor)


def assert_bitwise(size, what, lean, engine):
    """Raise unless the replica's arrays are bitwise the engine's."""
    if not all(np.array_equal(a, b) and a.dtype == b.dtype for a, b in zip(lean, engine,
                                                                           strict=True)):
        raise AssertionError(f"{size}: the lean replica's {what} is not bitwise the engine's; "
                             "it does not replicate the engine's arithmetic")


def gradient_row(prob, key, label, block, lean, floor, repeat):
    """One gradient row: the replica ``lean()`` checked bitwise against ``block``'s gradient,
    then floor, replica and engine timed in turn."""
    engine = p1.block_fwd_grad(block, prob)
    assert_bitwise(prob.size, f"{label} gradient", lean(),
                   (engine["x_bar"], engine["params_bar"]))
    times = interleaved3(floor, lean, lambda: p1.block_fwd_grad(block, prob), repeat)
    return (prob.size, prob.dtype, key, label, *times)


def run_size(size, repeat, steps, dtype="float64", rows=("taped", "forward", "backsolve")):
    """One size's rows: floor, lean replica and engine (taped fwd+grad, forward only,
    backsolve), each replica checked bitwise against the engine first."""
    import solvers

    prob = p1.make_problem(size, dtype, 0)
    n, out = 4 * steps, []
    if "taped" in rows:
        out.append(gradient_row(prob, "taped", "taped fwd+grad", p1.make_block(prob, steps),
                                lambda: lean_gradient(prob, steps),
                                lambda: p1.floor_taped(prob, n, n), repeat))
    if "forward" in rows:
        end = solvers.solve(prob.field, prob.z0, (0.0, 1.0), prob.params, method="rk4",
                            steps=steps, dense_output=False).ys[-1]
        assert_bitwise(size, "forward state", (lean_forward(prob, steps, tape=False)[0],), (end,))
        lean, eng = interleaved3(lambda: p1.floor_taped(prob, n, 0),
                                 lambda: lean_forward(prob, steps, tape=False),
                                 lambda: p1.solve_forward(prob, steps), repeat)
        out.append((size, dtype, "forward", "forward only", lean, eng))
    if "backsolve" in rows:
        out.append(gradient_row(prob, "backsolve", "backsolve",
                                p1.make_block(prob, steps, gradient="backsolve"),
                                lambda: lean_backsolve(prob, steps),
                                lambda: p1.floor_paired(prob, n, n), repeat))
    return out


def derivative_bound(size, dtype, repeat, steps=100):
    """A lower bound for the taped row from tanh's accurate derivative alone.

    A bitwise-unchanged engine computes ``tanh'(z) * x_bar`` as
    :func:`tanh_derivative` does in each of its ``4 steps`` VJPs, where the floor computes
    ``x_bar * (1 - H*H)``. Both are timed here on the same arrays (medians of ``repeat``
    batches), and ``(floor + 4 steps (t_accurate - t_floor_form)) / floor`` bounds the taped
    ratio from below: it adds only that difference to the floor, none of the Runge-Kutta
    arithmetic or memory traffic of a tape.

    Returns
    -------
    tuple
        ``(t_accurate, t_floor_form, t_floor_taped, bound)`` in seconds (bound: a ratio).
    """
    prob = p1.make_problem(size, dtype, 0)
    W1, b1, _, _ = prob.weights
    z = prob.z0 @ W1.T + b1
    hidden = np.tanh(z)
    x_bar = np.random.default_rng(1).standard_normal(hidden.shape).astype(dtype)
    n_vjp = 4 * steps
    batch = {"small": 2000, "medium": 200, "large": 10}[size]

    def batched(fn):
        def run():
            for _ in range(batch):
                fn()
        return run

    (accurate, floor_form), _ = interleaved3(batched(lambda: x_bar * (1 - hidden * hidden)),
                                             batched(lambda: tanh_derivative(z, x_bar)),
                                             lambda: None, repeat)
    t_acc, t_form = accurate / batch, floor_form / batch
    t_floor = statistics.median(p1.timed(lambda: p1.floor_taped(prob, n_vjp, n_vjp))[0]
                                for _ in range(3))
    return t_acc, t_form, t_floor, 1.0 + n_vjp * (t_acc - t_form) / t_floor


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="small,medium")
    parser.add_argument("--dtypes", default="float64",
                        help="dtypes of the fixed-step rows, e.g. float32,float64")
    parser.add_argument("--rows", default="taped,forward,backsolve",
                        help="fixed-step rows: taped, forward, backsolve")
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--dopri5-sizes", default="small",
                        help="sizes of the adaptive Dopri5 row ('' for none)")
    parser.add_argument("--bound-sizes", default="",
                        help="sizes of the accurate-derivative bound of the taped row, in "
                             "every --dtypes ('' for none)")
    parser.add_argument("--trim-threshold", type=int, default=None,
                        help="bytes of freed memory kept for reuse (solvers.retain_host_memory;"
                             " default: the library's); large tapes need up to 2**31 - 1")
    args = parser.parse_args(argv)
    if args.trim_threshold is not None:
        import solvers
        solvers.retain_host_memory(trim_threshold=args.trim_threshold)
    wanted = tuple(filter(None, args.rows.split(",")))
    print("| size | dtype | row | floor | lean replica | lean / floor | engine | engine / floor "
          "| engine / lean | target |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    rows = [lambda size=size, dtype=dtype: run_size(size, args.repeat, args.steps, dtype, wanted)
            for size in filter(None, args.sizes.split(","))
            for dtype in filter(None, args.dtypes.split(","))]
    rows += [lambda size=size: run_dopri5(size, args.repeat)
             for size in filter(None, args.dopri5_sizes.split(","))]
    for run in rows:
        for sz, dtype, key, row, (t_lean, t_floor), (t_eng, t_floor2) in run():
            print(f"| {sz} | {dtype} | {row} | {t_floor * 1e3:.2f} ms | {t_lean * 1e3:.2f} ms | "
                  f"{t_lean / t_floor:.2f} | {t_eng * 1e3:.2f} ms | {t_eng / t_floor2:.2f} | "
                  f"{t_eng / t_lean:.2f} | {TARGETS[sz].get(key) or '-'} |", flush=True)
    print("\nEach lean replica's result is bitwise the engine's (asserted before timing).")
    bound_sizes = list(filter(None, args.bound_sizes.split(",")))
    if bound_sizes:
        print("\n| size | dtype | accurate tanh' per VJP | x_bar (1 - H*H) per VJP | floor, taped "
              "| bound for the taped row | target |")
        print("|---|---|---:|---:|---:|---:|---:|")
    for size in bound_sizes:
        for dtype in filter(None, args.dtypes.split(",")):
            t_acc, t_form, t_floor, bound = derivative_bound(size, dtype, args.repeat,
                                                             args.steps)
            print(f"| {size} | {dtype} | {t_acc * 1e6:.0f} us | {t_form * 1e6:.0f} us | "
                  f"{t_floor * 1e3:.1f} ms | {bound:.3f} | {TARGETS[size]['taped']} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
