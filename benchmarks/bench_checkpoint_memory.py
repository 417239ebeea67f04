"""Peak traced memory of a checkpointed RK4 discrete-adjoint gradient.

Run ``python benchmarks/bench_checkpoint_memory.py [--size 100000] [--steps 250 1000]``.

The gradient of ``L = 0.5 |y_n|^2`` with respect to ``y_0`` and ``theta`` for
``y' = -theta * tanh(y)`` (elementwise, hand-written VJP) is taken over ``n`` fixed RK4
steps with ``solvers.get_stepper("rk4")`` and
:func:`adjointcore.checkpointing.run_adjoint` under StoreAll, Uniform(every=32),
Revolve(10) and Online(10). Peak memory is measured with ``tracemalloc`` (NumPy reports its
buffers to it) above the memory held before the run, and given in units of one state.
Every schedule's gradient is checked to be bitwise equal to StoreAll's.

Runtime: about 12 minutes for the defaults on a loaded 2-core machine (RK4 steps on 10^5
floats dominate); ``--size 10000`` takes about a minute and gives the same state ratios.
"""
from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

import solvers
from adjointcore.checkpointing import Online, Revolve, StoreAll, Uniform, run_adjoint


class TanhDecay:
    """``f(t, y, theta) = -theta[0] * tanh(y)``; cache ``(tanh(y), theta[0])``."""

    def forward(self, t, y, params):
        z = np.tanh(y)
        return -params[0] * z, (z, params[0])

    def vjp(self, cache, dy_bar, need_params=True):
        z, theta = cache
        y_bar = -theta * dy_bar * (1.0 - z * z)
        params_bar = np.array([-np.dot(dy_bar, z)]) if need_params else None
        return y_bar, params_bar, None


def gradient(schedule, n, y0, params, h):
    """``(y0_bar, theta_bar, stats)`` of ``0.5 |y_n|^2`` under ``schedule``."""
    field, stepper = TanhDecay(), solvers.get_stepper("rk4")
    theta_bar = [np.zeros_like(params)]

    def forward_step(i, state):
        return stepper.step(field, i, i * h, h, state, params)[0]

    def reverse_step(i, state, state_next_bar):
        state_bar, p_bar, _ = stepper.step_vjp(field, i, i * h, h, state, params,
                                               state_next_bar)
        theta_bar[0] = theta_bar[0] + p_bar
        return state_bar

    def final_bar(state):
        return (state[0].copy(),)

    (y0_bar,), stats = run_adjoint(schedule, n, state0=(y0,), forward_step=forward_step,
                                   reverse_step=reverse_step, final_bar=final_bar)
    return y0_bar, theta_bar[0], stats


def measure(schedule, n, y0, params, h):
    """Gradient plus (peak traced bytes above the starting level, seconds)."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    result = gradient(schedule, n, y0, params, h)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return result, peak, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100_000, help="state length")
    parser.add_argument("--steps", type=int, nargs="+", default=[250, 1000])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    y0 = rng.standard_normal(args.size)
    params = np.array([0.7])
    state_bytes = y0.nbytes
    print(f"state: {args.size} float64 = {state_bytes / 2**20:.2f} MiB; RK4, t in [0, 1]")
    header = (f"{'n':>6} {'schedule':<18} {'fwd steps':>9} {'recomp':>7} {'live':>5} "
              f"{'peak MiB':>9} {'peak/state':>10} {'seconds':>8} {'bitwise':>7}")
    print(header)
    print("-" * len(header))
    for n in args.steps:
        h = 1.0 / n
        reference = None
        for schedule in (StoreAll(), Uniform(every=32), Revolve(10), Online(10)):
            (y0_bar, theta_bar, stats), peak, seconds = measure(schedule, n, y0, params, h)
            if reference is None:
                reference = (y0_bar, theta_bar)
            same = (np.array_equal(y0_bar, reference[0])
                    and np.array_equal(theta_bar, reference[1]))
            print(f"{n:>6} {schedule!r:<18} {stats.forward_steps:>9} "
                  f"{stats.recomputed_steps:>7} {stats.max_live_snapshots:>5} "
                  f"{peak / 2**20:>9.1f} {peak / state_bytes:>10.1f} {seconds:>8.2f} "
                  f"{str(same):>7}")


if __name__ == "__main__":
    main()
