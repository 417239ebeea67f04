"""NODE-EW Theorem 1: a neural ODE fits a 3-D curve; BP-initialised vs pure adjoint training.

Target (He, Xie & Lin 2019, Sect. 4.1): ``s(t) = [sin t cos t, sin^2 t + cosh^2 t, exp t]`` on
``[0, 1]`` at the 100 points ``t_i = i / 100``; the model is ``x' = f(x)`` with ``x(0) = s(0)``
and ``f`` an MLP with two hidden ReLU layers; the loss is ``sum_i ||x(t_i) - s(t_i)||^2`` over the
whole trajectory. Two runs from the same initial weights:

* **BP + adjoint** (Sect. 3.2.2): backpropagation through 100 fixed Euler steps (the discrete
  adjoint), then one switch to Dopri5 with the continuous adjoint (backsolve) for fine-tuning;
* **pure adjoint**: Dopri5 + continuous adjoint from the start.

Reported: final loss of the ODE solution (Dopri5 at rtol 1e-9) for both, per-iteration loss,
forward/backward NFE and wall time, and the wall-time ratio. The paper trains 5k BP + 100 adjoint
iterations of a width-1000 MLP and reports a 30x shorter training than pure adjoint. Here the
full mode is scaled to about 2.5 minutes on 2 unloaded CPU cores (width 64, 1200 BP + 40 adjoint
iterations, 250 pure-adjoint iterations); the ratio for equal iteration counts is projected from
the measured mean time per pure-adjoint iteration, and the measured time the pure adjoint run
needs to reach the BP + adjoint loss is reported as well (NaN if it never does).
"""
from __future__ import annotations

import time

import numpy as np

from adjointcore.fields import LayerField
from adjointcore.layers import Linear, ReLU, Sequential
from adjointcore.optim import Adam

from ._training import GradientConfig, TrajectoryProblem, evaluate, train, train_bp_then_adjoint
from ._plotting import new_figure, save_figure
from .results import output_path, run_metadata, save

__all__ = ["run", "target_curve", "make_problem", "CONFIGS"]

CONFIGS = {
    # Quick: seconds; used by the tests.
    True: dict(width=16, lr=3e-3, ft_lr=1e-3, bp_iterations=20, ft_iterations=2,
               adj_iterations=3, bp_steps=100, rtol=1e-6, atol=1e-8, variant="backsolve"),
    # Full: about 2.5 min on 2 unloaded cores (module docstring: scaling from the paper).
    False: dict(width=64, lr=3e-3, ft_lr=1e-3, bp_iterations=1200, ft_iterations=40,
                adj_iterations=250, bp_steps=100, rtol=1e-6, atol=1e-8, variant="backsolve"),
}


def target_curve(t):
    """``s(t) = [sin t cos t, sin^2 t + cosh^2 t, exp t]``, shape ``t.shape + (3,)``."""
    t = np.asarray(t, dtype=np.float64)
    return np.stack([np.sin(t) * np.cos(t), np.sin(t) ** 2 + np.cosh(t) ** 2, np.exp(t)], -1)


def make_problem(width: int):
    """The MLP ``f`` (3 -> width -> width -> 3, ReLU) and the trajectory-fit problem."""
    f = Sequential(Linear(3, width), ReLU(), Linear(width, width), ReLU(), Linear(width, 3))
    t_obs = np.arange(1, 101) / 100.0
    problem = TrajectoryProblem(LayerField(f), target_curve(np.zeros((1,))), 0.0, t_obs,
                                target_curve(t_obs), slice(0, 3))
    return f, problem


def _progress(label, totals):
    """``progress(phase, it, info)`` printing about ten lines per phase (and its last iteration);
    ``totals[phase]`` is that phase's iteration count."""
    def report(phase, it, info):
        total = totals[phase]
        if it % max(1, total // 10) == 0 or it == total - 1:
            print(f"  {label} phase {phase} it {it + 1:5d}/{total}  loss {info.loss:.4e}  "
                  f"nfe {info.forward_nfe}+{info.backward_nfe}", flush=True)
    return report


def _time_to_reach(hist, level):
    """Wall time until the per-iteration loss first reaches ``level`` (NaN if never)."""
    hit = np.flatnonzero(np.asarray(hist.loss) <= level)
    return float(np.cumsum(hist.wall_s)[hit[0]]) if hit.size else float("nan")


def _plot(path, problem, trajs, histories):
    target = problem.target
    fig = new_figure((15, 8))
    ax = fig.add_subplot(2, 3, 1, projection="3d")
    ax.plot(*target.T, "k-", lw=2, label="target s(t)")
    styles = {"BP + adjoint": "C0--", "pure adjoint": "C1:", "BP only (ODE)": "C2-."}
    for name, tr in trajs.items():
        ax.plot(*tr.T, styles[name], label=name)
    ax.set_title("3-D curve")
    ax.legend(fontsize=7)
    for k, (i, j) in enumerate([(0, 1), (0, 2), (1, 2)]):
        ax = fig.add_subplot(2, 3, 2 + k)
        ax.plot(target[:, i], target[:, j], "k-", lw=2, label="target")
        for name, tr in trajs.items():
            ax.plot(tr[:, i], tr[:, j], styles[name], label=name)
        ax.set_xlabel(f"x{i + 1}")
        ax.set_ylabel(f"x{j + 1}")
        ax.set_title(f"projection (x{i + 1}, x{j + 1})")
    ax = fig.add_subplot(2, 3, 5)
    for name, h in histories.items():
        ax.semilogy(h.loss, label=name)
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=7)
    ax = fig.add_subplot(2, 3, 6)
    for name, h in histories.items():
        ax.semilogy(np.cumsum(h.wall_s), h.loss, label=name)
    ax.set_xlabel("wall time [s]")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=7)
    save_figure(fig, path, dpi=110)


def run(quick: bool = False, out: str = "results", seed: int = 0) -> int:
    """NODE-EW Theorem 1 curve fit: BP-initialised adjoint training vs pure adjoint (HDF5 + PNG)."""
    cfg = dict(CONFIGS[bool(quick)], seed=seed, quick=bool(quick))
    t_start = time.perf_counter()
    f, problem = make_problem(cfg["width"])
    z0 = f.init(np.random.default_rng(seed))
    n = f.n_params
    bp = GradientConfig("discrete", "euler", cfg["bp_steps"])
    ft = bp.with_config(gradient=cfg["variant"], method="dopri5", steps=None, rtol=cfg["rtol"],
                        atol=cfg["atol"])
    print(f"theorem1: width {cfg['width']} ({n} parameters), {cfg['bp_iterations']} BP + "
          f"{cfg['ft_iterations']} adjoint iterations vs {cfg['adj_iterations']} pure adjoint")

    at_switch = {}

    def record_switch(z):
        at_switch["loss"], at_switch["traj"] = evaluate(problem, z, n)

    z_bpa, h_bpa = train_bp_then_adjoint(problem, z0, n, Adam(cfg["lr"]), cfg["bp_iterations"],
                                         cfg["ft_iterations"], bp, ft, ft_lr=cfg["ft_lr"],
                                         progress=_progress("BP+adj", (cfg["bp_iterations"],
                                                              cfg["ft_iterations"])),
                                         on_switch=record_switch)
    loss_after_bp, traj_bp = at_switch["loss"], at_switch["traj"]
    phase = np.asarray(h_bpa.phase)
    loss_bp_euler = float(np.asarray(h_bpa.loss)[phase == 0][-1])
    z_adj, _, h_adj = train(problem, z0, n, ft, cfg["adj_iterations"], Adam(cfg["lr"]),
                            progress=_progress("adjoint", (cfg["adj_iterations"],)))
    loss_bpa, traj_bpa = evaluate(problem, z_bpa, n)
    loss_adj, traj_adj = evaluate(problem, z_adj, n)

    wall = np.asarray(h_bpa.wall_s)
    wall_bp, wall_ft = float(wall[phase == 0].sum()), float(wall[phase == 1].sum())
    wall_adj = float(np.sum(h_adj.wall_s))
    per_it_adj = wall_adj / max(1, cfg["adj_iterations"])
    total_its = cfg["bp_iterations"] + cfg["ft_iterations"]
    ratio = per_it_adj * total_its / (wall_bp + wall_ft)
    reach = _time_to_reach(h_adj, h_bpa.loss[-1])
    metrics = {
        **h_bpa.arrays("bp_adjoint."), **h_adj.arrays("adjoint."),
        "t_obs": problem.t_obs, "target": problem.target,
        "trajectory.bp_adjoint": traj_bpa, "trajectory.adjoint": traj_adj,
        "trajectory.bp_only": traj_bp,
        "final_loss.bp_adjoint": loss_bpa, "final_loss.adjoint": loss_adj,
        "final_loss.bp_only_ode": loss_after_bp,
        "final_loss.bp_only_euler": loss_bp_euler,
        "wall_s.bp_phase": wall_bp, "wall_s.ft_phase": wall_ft, "wall_s.adjoint": wall_adj,
        "wall_s.per_iteration_bp": wall_bp / max(1, cfg["bp_iterations"]),
        "wall_s.per_iteration_adjoint": per_it_adj,
        "wall_time_ratio_equal_iterations": ratio,
        "adjoint_time_to_reach_bp_adjoint_loss_s": reach,
        "wall_time_s": time.perf_counter() - t_start,
    }
    rows = [{"run": "BP + adjoint", "iterations": total_its, "final_loss": loss_bpa,
             "wall_s": wall_bp + wall_ft},
            {"run": "BP only", "iterations": cfg["bp_iterations"], "final_loss": loss_after_bp,
             "wall_s": wall_bp},
            {"run": "pure adjoint", "iterations": cfg["adj_iterations"], "final_loss": loss_adj,
             "wall_s": wall_adj}]
    path = save(output_path(out, "theorem1", quick), "theorem1", cfg, metrics,
                tables={"summary": rows}, meta=run_metadata())
    _plot(output_path(out, "theorem1", quick, ".png"), problem,
          {"BP + adjoint": traj_bpa, "pure adjoint": traj_adj, "BP only (ODE)": traj_bp},
          {"BP + adjoint": h_bpa, "pure adjoint": h_adj})
    for r in rows:
        print(f"  {r['run']:13s} {r['iterations']:5d} it  ODE loss {r['final_loss']:.4e}  "
              f"{r['wall_s']:.1f} s")
    reached = f"after {reach:.1f} s" if np.isfinite(reach) else "never"
    print(f"  wall-time ratio (pure adjoint / BP+adjoint, {total_its} iterations each, "
          f"projected): {ratio:.1f}x; pure adjoint reached the BP+adjoint loss {reached}; "
          f"results in {path}")
    return 0 if np.isfinite(loss_bpa) and np.isfinite(loss_adj) else 1
