"""Continuous-adjoint cost on an MLP vector field (not collected by pytest).

Field: ``f(y) = W2 tanh(W1 y + b1) + b2`` with d = 32, hidden 64 (LayerField over
Sequential(Linear, Tanh, Linear)), batch N, T = 1, dopri5 at rtol 1e-6 / atol 1e-9 for forward and
backward solves. Reports wall time (best of ``--repeat``), NFE and the ratio to the forward solve
for: forward, backsolve gradient, interpolated gradient, each with the full norm and the seminorm.

Run: ``python benchmarks/bench_continuous_adjoint.py [--batch 64] [--repeat 3] [--gpu]``
(timings synchronise the device; BLAS limited to ``--blas-threads``, default 1).
"""
from __future__ import annotations

import argparse

import numpy as np
from _fields import best_time, describe_problem, mlp_problem, run_cli

import solvers
from adjointcore.backend import get_array_module
from adjointcore.sensitivity import continuous_adjoint


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=32)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--rtol", type=float, default=1e-6)
    parser.add_argument("--atol", type=float, default=1e-9)
    parser.add_argument("--repeat", type=int, default=3)
    run_cli(parser, argv, run)


def run(args):
    """The measurements (under the BLAS thread limit)."""
    # a little stiffer than the default initialisation: more adaptive steps to count
    prob = mlp_problem(d=args.d, hidden=args.hidden, batch=args.batch, weight_scale=1.5,
                       gpu=args.gpu)
    field, params, y0 = prob.field, prob.params, prob.y0
    xp = get_array_module(y0)
    t_obs = np.array([0.0, 1.0])
    tol = dict(rtol=args.rtol, atol=args.atol)

    t_fwd, fwd = best_time(lambda: solvers.solve(field, y0, (0.0, 1.0), params, t_eval=t_obs,
                                                 **tol), args.repeat, xp)
    y_bars = xp.stack([0 * y0, fwd.ys[-1]])
    rows = [("forward", t_fwd, int(fwd.stats.nfe), "-", "-")]
    grads = {}
    for variant in ("backsolve", "interpolated"):
        for semi in (False, True):
            # Each gradient includes its own forward solve (forward_solution=None), as in training.
            t, g = best_time(lambda v=variant, s=semi: continuous_adjoint(
                field, y0, params, t_obs, y_bars, variant=v, seminorm=s, **tol),
                             args.repeat, xp)
            name = f"{variant}{' + seminorm' if semi else ''}"
            grads[name] = g
            rows.append((name, t, g.stats.forward_nfe + g.stats.backward_nfe,
                         g.stats.backward_nfe, f"{g.stats.backward_accepted}/"
                                               f"{g.stats.backward_rejected}"))

    print(f"{describe_problem(prob)}; T=1 dopri5 rtol={args.rtol:g} atol={args.atol:g}")
    print(f"{'run':28s} {'time [s]':>9s} {'x fwd':>6s} {'NFE':>6s} {'bwd NFE':>8s} "
          f"{'bwd acc/rej':>11s}")
    for name, t, nfe, bnfe, acc in rows:
        print(f"{name:28s} {t:9.4f} {t / t_fwd:6.2f} {nfe:6d} {str(bnfe):>8s} {acc:>11s}")
    for variant in ("backsolve", "interpolated"):
        full, semi = grads[variant], grads[f"{variant} + seminorm"]
        cut = 1 - semi.stats.backward_nfe / full.stats.backward_nfe
        diff = float(abs(semi.params_bar - full.params_bar).max()
                     / abs(full.params_bar).max())
        print(f"seminorm {variant}: backward NFE {full.stats.backward_nfe} -> "
              f"{semi.stats.backward_nfe} ({100 * cut:.0f}% fewer); max rel. params_bar change "
              f"{diff:.1e}")


if __name__ == "__main__":
    main()
