"""Peak memory of an end-to-end discrete-adjoint gradient of an MLP neural ODE (not collected by
pytest).

``discrete_adjoint`` (the full driver: field, stepper, schedule, observation cotangents) takes
the gradient of ``L = <y_bar, y(1)>`` with respect to ``y0`` and the parameters over ``n`` fixed
RK4 steps of the MLP field of ``_fields.mlp_problem`` (default: batch 64 x 64 features, hidden
64, tanh), with the taped default (``schedule=None``: backpropagation through the solver),
StoreAll(), Uniform(every=32), Revolve(10) and Online(10), at ``n = 250`` and ``1000``. Peak
memory is ``tracemalloc``'s peak above the level before the call (NumPy) or the
CuPy pool's high-water mark (``--gpu``), reported in MiB and in units of one state
(``batch * d * 8`` bytes).

Expected: the taped default grows like ``n`` tapes (each step's stages and field caches, about
12 states per step here); StoreAll() like ``n`` states; Revolve(s) stays below about ``s`` states
plus one step's VJP working set (measured separately as "one step VJP"), independent of ``n``;
Uniform(k) about ``n/k + k`` states. Every gradient is checked bitwise against the taped one.

Run: ``python benchmarks/bench_adjoint_memory.py [--steps 250 1000] [--batch 64] [--d 64]
[--hidden 64] [--gpu]``.
"""
from __future__ import annotations

import argparse

import numpy as np
from _fields import describe_problem, mlp_problem, peak_memory, run_cli

import solvers
from adjointcore.backend import get_array_module, to_host
from adjointcore.checkpointing import Online, Revolve, StoreAll, Uniform
from adjointcore.sensitivity.discrete import discrete_adjoint


def schedules(snapshots=10, every=32):
    """None (taped: every step's stages kept), StoreAll() (every state, stages recomputed in the
    reverse sweep), Uniform(every), Revolve(s), Online(s)."""
    return [None, StoreAll(), Uniform(every=every), Revolve(snapshots), Online(snapshots)]


def one_step_vjp_peak(prob, h, xp):
    """Peak bytes of one RK4 ``step_vjp`` (stage recomputation, caches, stage cotangents)."""
    stepper = solvers.get_stepper("rk4")
    state = (prob.y0,)
    _, peak, _ = peak_memory(lambda: stepper.step_vjp(prob.field, 0, 0.0, h, state, prob.params,
                                                      (prob.y_bar,)), xp)
    return peak


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[250, 1000])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--snapshots", type=int, default=10)
    parser.add_argument("--every", type=int, default=32)
    run_cli(parser, argv, run)


def run(args):
    """The measurements (under the BLAS thread limit)."""

    prob = mlp_problem(d=args.d, hidden=args.hidden, batch=args.batch, gpu=args.gpu)
    xp = get_array_module(prob.y0)
    state_bytes = prob.y0.nbytes
    print(describe_problem(prob))
    print(f"state = {state_bytes / 2**10:.0f} KiB; RK4 on [0, 1]; params "
          f"{prob.params.nbytes / 2**10:.0f} KiB; seconds are under tracemalloc (slower)")
    step_peak = one_step_vjp_peak(prob, 1.0 / args.steps[0], xp)
    print(f"one step VJP (RK4, recomputed stages): peak {step_peak / 2**20:.2f} MiB = "
          f"{step_peak / state_bytes:.1f} states")
    header = (f"{'n':>5} {'schedule':<22} {'fwd steps':>9} {'recomp':>7} {'live':>5} "
              f"{'peak MiB':>9} {'peak/state':>10} {'(s+step)':>9} {'seconds':>8} {'bitwise':>7}")
    print(header)
    print("-" * len(header))
    for n in args.steps:
        grid = np.linspace(0.0, 1.0, n + 1)
        ref = None
        for schedule in schedules(args.snapshots, args.every):
            grad, peak, seconds = peak_memory(
                lambda s=schedule, g=grid: discrete_adjoint(prob.field, prob.y0, prob.params, g,
                                                    prob.y_bar, method="rk4", schedule=s), xp)
            if ref is None:
                ref = grad
            same = bool(np.array_equal(to_host(grad.y0_bar), to_host(ref.y0_bar))
                        and np.array_equal(to_host(grad.params_bar), to_host(ref.params_bar)))
            ck = grad.stats
            bound = ""
            if isinstance(schedule, (Revolve, Online)):
                bound = f"{(schedule.snapshots * state_bytes + step_peak) / state_bytes:.1f}"
            label = "taped (None)" if schedule is None else repr(schedule)
            print(f"{n:>5} {label:<22} {ck.forward_steps:>9} {ck.recomputed_steps:>7} "
                  f"{ck.max_live_snapshots:>5} {peak / 2**20:>9.2f} {peak / state_bytes:>10.1f} "
                  f"{bound:>9} {seconds:>8.2f} {str(same):>7}")


if __name__ == "__main__":
    main()
