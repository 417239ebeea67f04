"""Forward+gradient time over forward time for an MLP neural ODE (not collected by pytest).

Problem (``_fields.mlp_problem``): d = 64, hidden 128, tanh, batch 128, float64, t in [0, 1],
loss ``L = <y_bar, y(1)>``. Methods: RK4 with 100 fixed steps, and Dopri5 at rtol 1e-6 (atol
default). Rows, each timed best of ``--repeat``:

* ``forward``: ``solvers.solve(..., dense_output=False)`` (what a user runs for inference; the
  default dense output adds 10-40 % here and is shown on its own row).
* ``discrete``: ``discrete_adjoint`` with StoreAll. On the RK4 grid it runs its own forward
  sweep, so its time *is* forward + gradient for a loss whose cotangent is known in advance
  (a linear loss). For Dopri5 it replays the accepted grid of a preceding adaptive ``solve``,
  so forward + gradient = ``solve`` + ``discrete_adjoint``.
* ``untaped: Uniform(1)``: every state stored but no stage tapes, so each reverse step
  recomputes its stages (the store-all cost before the taped path).
* ``discrete+fwd``: ``solve`` then ``discrete_adjoint`` - the cost for a nonlinear loss, whose
  cotangent needs ``y(1)`` before ``discrete_adjoint`` can be called.
* ``record_forward+recording``: ``record_forward`` (taped sweep), the cotangent of
  ``1/2 |y(1)|^2`` from its final state, then ``discrete_adjoint(..., recording=rec)`` - forward +
  gradient for a nonlinear loss without a second forward (plus the ``solve`` for Dopri5's grid).
* ``grid_forward``: the bare discrete map (``solve``'s own overhead shows against it).
* ``backsolve``: ``continuous_adjoint(..., variant="backsolve")`` (runs its own forward).

The ratio is the row's time over ``forward``; the goal for the discrete adjoint is <= 3.0. Also
printed: the time of one field evaluation and one field VJP (the floor of a taped reverse sweep
is ``1 + t_vjp / t_forward``). ``--profile`` prints a cProfile of the RK4 discrete adjoint.

Run: ``python benchmarks/bench_adjoint_speed.py [--repeat 5] [--profile] [--gpu]``.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats

import numpy as np
from _fields import best_time, describe_problem, mlp_problem, run_cli

import solvers
from adjointcore.backend import get_array_module
from adjointcore.checkpointing import Uniform
from adjointcore.sensitivity.discrete import discrete_adjoint, grid_forward

try:
    from adjointcore.sensitivity.discrete import record_forward
except ImportError:     # pragma: no cover - older driver without taped recordings
    record_forward = None

try:
    from adjointcore.sensitivity import continuous_adjoint
except ImportError:     # pragma: no cover - while the continuous adjoint is being written
    continuous_adjoint = None


def field_costs(prob, repeat, xp):
    """Seconds of one field forward and one field VJP (parameters included) on ``y0``."""
    field = prob.field
    t_fwd, (dy, cache) = best_time(lambda: field.forward(0.0, prob.y0, prob.params), repeat * 20,
                                   xp)
    t_vjp, _ = best_time(lambda: field.vjp(cache, prob.y_bar), repeat * 20, xp)
    return t_fwd, t_vjp


def rows_for(prob, method, repeat, xp, steps=None, rtol=None):
    """Timings ``[(label, seconds, note)]`` for one method (forward first)."""
    opts = {"steps": steps} if steps else {"rtol": rtol}
    span = (0.0, 1.0)
    t_fwd, sol = best_time(lambda: solvers.solve(prob.field, prob.y0, span, prob.params,
                                                 method=method, dense_output=False, **opts),
                           repeat, xp)
    grid = sol.grid if steps is None else np.linspace(0.0, 1.0, steps + 1)
    n = grid.size - 1
    out = [("forward", t_fwd, f"{n} steps, nfe {sol.stats.nfe}, dense_output=False")]
    t_dense, _ = best_time(lambda: solvers.solve(prob.field, prob.y0, span, prob.params,
                                                 method=method, **opts), repeat, xp)
    out.append(("solve with dense output", t_dense, "the solve default"))
    t_map, _ = best_time(lambda: grid_forward(prob.field, prob.y0, prob.params, grid, method),
                         repeat, xp)
    out.append(("grid_forward (bare map)", t_map, "the discrete map alone, no solver overhead"))
    t_adj, grad = best_time(lambda: discrete_adjoint(prob.field, prob.y0, prob.params, grid,
                                                     prob.y_bar, method=method), repeat, xp)
    st = grad.stats
    work = (f"nfe {st.forward_nfe}+{st.backward_nfe} recomputed, {st.vjps} vjps")
    t_u1, _ = best_time(lambda: discrete_adjoint(prob.field, prob.y0, prob.params, grid,
                                                 prob.y_bar, method=method,
                                                 schedule=Uniform(1)), repeat, xp)
    if steps is None:
        out.append(("discrete (solve+adjoint)", t_fwd + t_adj, work))
        out.append(("  untaped: Uniform(1) +solve", t_fwd + t_u1, "stages recomputed"))
    else:
        out.append(("discrete", t_adj, work))
        out.append(("  untaped: Uniform(1)", t_u1, "every state stored, stages recomputed"))
        out.append(("discrete+fwd (nonlinear L)", t_fwd + t_adj, "solve, then discrete_adjoint"))
    if record_forward is not None:
        def taped():
            rec = record_forward(prob.field, prob.y0, prob.params, grid, method)
            y_bar = rec.states[-1][0]          # cotangent of the nonlinear L = 1/2 |y(1)|^2
            return discrete_adjoint(prob.field, prob.y0, prob.params, grid, y_bar,
                                    method=method, recording=rec)
        t_rec, _ = best_time(taped, repeat, xp)
        extra = t_fwd if steps is None else 0.0
        out.append(("record_forward+recording" + (" +solve" if steps is None else ""),
                    t_rec + extra, "taped sweep, loss on y(1), adjoint without forward"))
    if continuous_adjoint is None:
        out.append(("backsolve", float("nan"), "skipped: continuous_adjoint not importable"))
        return out
    kw = {"steps": steps} if steps else {"rtol": rtol}
    t_bs, cg = best_time(lambda: continuous_adjoint(
        prob.field, prob.y0, prob.params, np.array([1.0]), prob.y_bar[None], t0=0.0,
        variant="backsolve", method=method, **kw), repeat, xp)
    out.append(("backsolve", t_bs, f"nfe fwd {cg.stats.forward_nfe}, "
                                   f"bwd {cg.stats.backward_nfe} (each fwd+vjp)"))
    return out


def profile_discrete(prob, steps, top):
    """cProfile of one RK4 ``discrete_adjoint``; the ``top`` functions by internal time."""
    grid = np.linspace(0.0, 1.0, steps + 1)
    prof = cProfile.Profile()
    prof.enable()
    discrete_adjoint(prob.field, prob.y0, prob.params, grid, prob.y_bar, method="rk4")
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=100, help="RK4 fixed steps")
    parser.add_argument("--rtol", type=float, default=1e-6, help="Dopri5 tolerance")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=18)
    run_cli(parser, argv, run)


def run(args):
    """The measurements (under the BLAS thread limit)."""

    prob = mlp_problem(d=args.d, hidden=args.hidden, batch=args.batch, gpu=args.gpu)
    xp = get_array_module(prob.y0)
    print(describe_problem(prob))
    t_f, t_v = field_costs(prob, args.repeat, xp)
    print(f"field forward {t_f * 1e6:.0f} us, field VJP {t_v * 1e6:.0f} us "
          f"(taped-reverse floor: ratio >= 1 + vjp/forward = {1 + t_v / t_f:.2f})")
    header = f"{'method':<14} {'row':<34} {'seconds':>8} {'ratio':>6}  work"
    print(header)
    print("-" * 90)
    for method, kw in (("rk4", {"steps": args.steps}), ("dopri5", {"rtol": args.rtol})):
        label = f"rk4 n={args.steps}" if method == "rk4" else f"dopri5 {args.rtol:g}"
        rows = rows_for(prob, method, args.repeat, xp, **kw)
        t_fwd = rows[0][1]
        for name, seconds, note in rows:
            print(f"{label:<14} {name:<34} {seconds:>8.4f} {seconds / t_fwd:>6.2f}  {note}")
    if args.profile:
        print(profile_discrete(prob, args.steps, args.top))


if __name__ == "__main__":
    main()
