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
needs to reach the BP + adjoint loss is reported as well (-1 with the dataset attribute
``never_reached = -1`` and ``adjoint_reached_bp_adjoint_loss = False`` if it never does).

The run is durable (:mod:`experiments.durable`): a checkpoint every 50 iterations (default of
``--checkpoint-every``) holds the trained vector, Adam's state, the histories, the switch
evaluation and the stage; ``--resume`` continues bitwise.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from adjointcore.fields import LayerField
from adjointcore.layers import Linear, ReLU, Sequential
from adjointcore.optim import Adam

from . import durable
from ._plotting import PLOT_MODULES, caption, draw, integer_ticks, new_figure, save_figure
from ._progress import log, progress_bar
from ._training import (
    GradientConfig,
    History,
    TrainPosition,
    TrajectoryProblem,
    evaluate,
    train,
    train_bp_then_adjoint,
)

__all__ = ["run", "make_config", "target_curve", "make_problem", "CONFIGS"]

CONFIGS = {
    # Quick: seconds; used by the tests.
    True: dict(width=16, lr=3e-3, ft_lr=1e-3, bp_iterations=20, ft_iterations=2,
               adj_iterations=3, bp_steps=100, rtol=1e-6, atol=1e-8, variant="backsolve"),
    # Full: about 2.5 min on 2 unloaded cores (module docstring: scaling from the paper).
    False: dict(width=64, lr=3e-3, ft_lr=1e-3, bp_iterations=1200, ft_iterations=40,
                adj_iterations=250, bp_steps=100, rtol=1e-6, atol=1e-8, variant="backsolve"),
}
#: Settings shared by both modes (recorded in every file).
COMMON = dict(bp_solver="euler", bp_gradient="discrete", ft_solver="dopri5",
              adj_solver="dopri5", optimizer="adam", eval_solver="dopri5", eval_rtol=1e-9,
              eval_atol=1e-11, dataset="s(t) = [sin t cos t, sin^2 t + cosh^2 t, exp t] at "
                                      "t = 0.01, ..., 1.00")
CHECKPOINT_EVERY = 50
NEVER = -1.0
UNITS = {"t_obs": "1 (time)", "target": "1", "wall_time_ratio_equal_iterations": "1",
         "adjoint_reached_bp_adjoint_loss": "bool"}


def make_config(quick: bool = False, seed: int = 0, overrides: Optional[dict] = None) -> dict:
    """The full configuration: mode defaults, shared settings, ``--set`` overrides (checked)."""
    base = {**CONFIGS[bool(quick)], **COMMON, "seed": int(seed), "quick": bool(quick)}
    cfg = durable.apply_overrides("theorem1", base, overrides)
    counts = ("width", "bp_iterations", "ft_iterations", "adj_iterations", "bp_steps")
    bad = [k for k in counts if cfg[k] < 1] + [k for k in ("lr", "ft_lr", "rtol", "atol")
                                               if cfg[k] <= 0]
    if cfg["variant"] not in ("backsolve", "interpolated"):
        bad.append("variant")
    if bad:
        raise durable.ConfigError(f"theorem1 settings {bad} are out of range: counts >= 1, rates "
                                  f"and tolerances > 0, variant 'backsolve' or 'interpolated'; "
                                  f"got { {k: cfg[k] for k in bad} }.")
    return cfg


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


def _progress(label, totals, quiet=None, bar=None):
    """``progress(phase, it, info)`` printing about ten lines per phase (and its last iteration);
    ``totals[phase]`` is that phase's iteration count; ``bar`` (optional) advances each call."""
    def report(phase, it, info):
        total = totals[phase]
        if bar is not None:
            bar.update(1)
            bar.set_postfix_str(f"phase {phase} loss {info.loss:.3e} NFE f/b "
                                f"{info.forward_nfe}/{info.backward_nfe}")
        if it % max(1, total // 10) == 0 or it == total - 1:
            log(f"  {label} phase {phase} it {it + 1:5d}/{total}  loss {info.loss:.4e}  "
                f"nfe {info.forward_nfe}+{info.backward_nfe}", quiet)
    return report


def _time_to_reach(hist, level):
    """Wall time until the per-iteration loss first reaches ``level`` (:data:`NEVER` if never)."""
    hit = np.flatnonzero(np.asarray(hist.loss) <= level)
    return float(np.cumsum(hist.wall_s)[hit[0]]) if hit.size else NEVER


def _history(metrics: dict, prefix: str) -> History:
    """The :class:`History` saved under ``prefix`` (lists of Python numbers, as when trained)."""
    return History(**{k: metrics[f"{prefix}{k}"].tolist() for k in History.__dataclass_fields__})


def _stage_checkpoint(cfg, stage: str, pos: TrainPosition, done: dict, wall: float) -> dict:
    """:func:`experiments.durable.save_checkpoint` arguments: the loop at ``pos`` of ``stage``
    (``"bp_adjoint"`` or ``"adjoint"``) and the results of earlier stages (``done``)."""
    arrays = {"z": pos.z, **{k: v for k, v in done.items() if isinstance(v, np.ndarray)}}
    if pos.opt_state is not None:
        arrays.update(durable.optimizer_arrays("opt.", pos.opt_state))
    total = {"bp_adjoint": (cfg["bp_iterations"], cfg["ft_iterations"]),
             "adjoint": (cfg["adj_iterations"],)}[stage][pos.phase]
    metrics = {**done.get("bp_history", History()).arrays("bp_adjoint."),
               **pos.history.arrays("adjoint." if stage == "adjoint" else "bp_adjoint.")}
    position = {"stage": stage, "phase": pos.phase, "iteration": pos.iteration, "wall_s": wall,
                "switch_loss": done.get("switch_loss"),
                "where": f"{stage} phase {pos.phase} iteration {pos.iteration}/{total}"}
    return {"arrays": arrays, "position": position, "metrics": metrics}


def _resume_state(resumed, opt_template):
    """``(stage, TrainPosition, done)`` from a loaded checkpoint."""
    ck = resumed["checkpoint"]
    arrays, pos = ck["arrays"], ck["position"]
    stage = pos["stage"]
    opt_state = (durable.restore_optimizer(opt_template, arrays, "opt.")
                 if "opt.t" in arrays else None)
    done = {k: arrays[k] for k in ("switch_traj", "z_bpa") if k in arrays}
    if pos["switch_loss"] is not None:
        done["switch_loss"] = pos["switch_loss"]
    m = resumed["metrics"]
    if stage == "adjoint":
        done["bp_history"] = _history(m, "bp_adjoint.")
        history = _history(m, "adjoint.")
    else:
        history = _history(m, "bp_adjoint.")
    return stage, TrainPosition(pos["phase"], pos["iteration"], arrays["z"], opt_state,
                                history), done


def _train_stages(rn, cfg, problem, f, z0, bp, ft):
    """Both trainings from the start or from the checkpoint; returns ``done`` (results)."""
    n = f.n_params
    quiet = rn.options.quiet
    session = time.perf_counter()
    wall0 = 0.0
    stage, pos, done = "bp_adjoint", None, {}
    if rn.resumed is not None:
        stage, pos, done = _resume_state(rn.resumed, Adam(cfg["lr"]).init_state(z0))
        wall0 = rn.resumed["checkpoint"]["position"]["wall_s"]
    since = [0]

    def stepper(name):
        def on_step(p):
            wall = wall0 + time.perf_counter() - session
            since[0] = durable.after_step(rn, since[0] + 1, lambda: _stage_checkpoint(
                cfg, name, p, done, wall), default_every=CHECKPOINT_EVERY)
        return on_step

    def record_switch(z):
        done["switch_loss"], done["switch_traj"] = evaluate(problem, z, n)

    if stage == "bp_adjoint":
        totals = (cfg["bp_iterations"], cfg["ft_iterations"])
        already = 0 if pos is None else pos.iteration + (cfg["bp_iterations"] if pos.phase else 0)
        with progress_bar(sum(totals), "theorem1 BP+adjoint", quiet, initial=already) as bar:
            z_bpa, h_bpa = train_bp_then_adjoint(
                problem, z0, n, Adam(cfg["lr"]), cfg["bp_iterations"], cfg["ft_iterations"], bp,
                ft, ft_lr=cfg["ft_lr"], progress=_progress("BP+adj", totals, quiet, bar),
                on_switch=record_switch, position=pos, on_step=stepper("bp_adjoint"))
        done.update(z_bpa=z_bpa, bp_history=h_bpa)
        stage, pos = "adjoint", None
        since[0] = durable.after_step(rn, since[0], lambda: _stage_checkpoint(
            cfg, "adjoint", TrainPosition(0, 0, z0, None, History()), done,
            wall0 + time.perf_counter() - session), force=True)
    start = 0 if pos is None else pos.iteration
    with progress_bar(cfg["adj_iterations"], "theorem1 adjoint", quiet, initial=start) as bar:
        z_adj, _, h_adj = train(problem, z0 if pos is None else pos.z, n, ft,
                                cfg["adj_iterations"], Adam(cfg["lr"]),
                                None if pos is None else pos.opt_state,
                                None if pos is None else pos.history,
                                progress=_progress("adjoint", (cfg["adj_iterations"],), quiet,
                                                   bar),
                                start=start, on_step=stepper("adjoint"))
    done.update(z_adj=z_adj, adj_history=h_adj,
                wall_s=wall0 + time.perf_counter() - session)
    return done

STYLES = {"BP + adjoint": dict(color="C0", ls="-", lw=2.2, zorder=3),
          "pure adjoint": dict(color="C1", ls="--", lw=1.4, marker="o", markevery=0.1, ms=3,
                               zorder=4),
          "BP only (ODE)": dict(color="C2", ls="-.", lw=1.2, zorder=2)}


def _mark_switch(ax, x, label: bool):
    """A dotted vertical line at the switch from the Euler (BP) loss to the ODE (adjoint) loss."""
    ax.axvline(x, color="0.4", ls=":", lw=1.2, zorder=1,
               label="switch: Euler BP -> Dopri5 adjoint" if label else None)


def _plot(path, problem, trajs, histories, cfg, stem):
    """3-D curve, its projections, and the loss against iteration and wall time; the switch of
    the BP + adjoint run is marked, the pure-adjoint curve drawn dashed with markers on top, and
    the configuration is the caption."""
    target = problem.target
    fig = new_figure((15, 8.6))
    ax = fig.add_subplot(2, 3, 1, projection="3d")
    ax.plot(*target.T, "k-", lw=2, label="target s(t)")
    for name, tr in trajs.items():
        ax.plot(*tr.T, **{k: v for k, v in STYLES[name].items()
                          if k not in ("marker", "markevery", "ms")}, label=name)
    ax.set_xlabel("x1 = sin t cos t", fontsize=8)
    ax.set_ylabel("x2 = sin^2 t + cosh^2 t", fontsize=8)
    ax.set_zlabel("x3 = exp t", fontsize=8)
    ax.set_title("3-D curve, t in [0, 1]")
    ax.legend(fontsize=8)
    for k, (i, j) in enumerate([(0, 1), (0, 2), (1, 2)]):
        ax = fig.add_subplot(2, 3, 2 + k)
        ax.plot(target[:, i], target[:, j], "k-", lw=2, label="target")
        for name, tr in trajs.items():
            ax.plot(tr[:, i], tr[:, j], label=name, **{
                key: v for key, v in STYLES[name].items() if key not in ("marker", "markevery",
                                                                          "ms")})
        ax.set_xlabel(f"x{i + 1}")
        ax.set_ylabel(f"x{j + 1}")
        ax.set_title(f"projection (x{i + 1}, x{j + 1})")
    n_bp = cfg["bp_iterations"]
    ax = fig.add_subplot(2, 3, 5)
    for name, h in histories.items():
        ax.semilogy(np.arange(1, len(h.loss) + 1), h.loss, label=name, **STYLES[name])
    _mark_switch(ax, n_bp + 0.5, True)
    integer_ticks(ax.xaxis)
    ax.set_xlabel("iteration")
    ax.set_ylabel("training loss (Euler map before the switch, ODE after)", fontsize=8)
    ax.legend(fontsize=8)
    ax = fig.add_subplot(2, 3, 6)
    for name, h in histories.items():
        ax.semilogy(np.cumsum(h.wall_s), h.loss, label=name, **STYLES[name])
    bpa = histories["BP + adjoint"]
    _mark_switch(ax, float(np.sum(bpa.wall_s[:n_bp])), True)
    ax.set_xlabel("wall time [s]")
    ax.set_ylabel("training loss")
    ax.legend(fontsize=8)
    fig.suptitle(f"NODE-EW Theorem 1 curve fit: BP ({n_bp} Euler iterations) then "
                 f"{cfg['ft_iterations']} adjoint iterations vs {cfg['adj_iterations']} pure "
                 f"adjoint iterations", fontsize=11)
    lines = caption(fig, stem, cfg, ("width", "lr", "ft_lr", "bp_iterations", "ft_iterations",
                                     "adj_iterations", "bp_solver", "bp_steps", "bp_gradient",
                                     "ft_solver", "variant", "rtol", "atol", "seed", "quick"))
    save_figure(fig, path, dpi=110, caption_lines=lines)
    return path


def _summary(cfg, problem, done, n):
    """Metrics, summary rows and the figure's inputs from the finished trainings."""
    h_bpa, h_adj = done["bp_history"], done["adj_history"]
    loss_bpa, traj_bpa = evaluate(problem, done["z_bpa"], n)
    loss_adj, traj_adj = evaluate(problem, done["z_adj"], n)
    phase = np.asarray(h_bpa.phase)
    wall = np.asarray(h_bpa.wall_s)
    wall_bp, wall_ft = float(wall[phase == 0].sum()), float(wall[phase == 1].sum())
    wall_adj = float(np.sum(h_adj.wall_s))
    per_it_adj = wall_adj / max(1, cfg["adj_iterations"])
    total_its = cfg["bp_iterations"] + cfg["ft_iterations"]
    reach = _time_to_reach(h_adj, h_bpa.loss[-1])
    metrics = {
        **h_bpa.arrays("bp_adjoint."), **h_adj.arrays("adjoint."),
        "t_obs": problem.t_obs, "target": problem.target,
        "trajectory.bp_adjoint": traj_bpa, "trajectory.adjoint": traj_adj,
        "trajectory.bp_only": done["switch_traj"],
        "final_loss.bp_adjoint": loss_bpa, "final_loss.adjoint": loss_adj,
        "final_loss.bp_only_ode": done["switch_loss"],
        "final_loss.bp_only_euler": float(np.asarray(h_bpa.loss)[phase == 0][-1]),
        "wall_s.bp_phase": wall_bp, "wall_s.ft_phase": wall_ft, "wall_s.adjoint": wall_adj,
        "wall_s.per_iteration_bp": wall_bp / max(1, cfg["bp_iterations"]),
        "wall_s.per_iteration_adjoint": per_it_adj,
        "wall_time_ratio_equal_iterations": per_it_adj * total_its / (wall_bp + wall_ft),
        "adjoint_time_to_reach_bp_adjoint_loss_s": reach,
        "adjoint_reached_bp_adjoint_loss": reach != NEVER,
        "wall_time_s": done["wall_s"],
    }
    rows = [{"run": "BP + adjoint", "iterations": total_its, "final_loss": loss_bpa,
             "wall_s": wall_bp + wall_ft},
            {"run": "BP only", "iterations": cfg["bp_iterations"],
             "final_loss": done["switch_loss"], "wall_s": wall_bp},
            {"run": "pure adjoint", "iterations": cfg["adj_iterations"], "final_loss": loss_adj,
             "wall_s": wall_adj}]
    trajs = {"BP + adjoint": traj_bpa, "pure adjoint": traj_adj,
             "BP only (ODE)": done["switch_traj"]}
    return metrics, rows, trajs


def run(quick: bool = False, out: str = "results", seed: int = 0, *,
        overrides: Optional[dict] = None, options: Optional[durable.RunOptions] = None) -> int:
    """NODE-EW Theorem 1 curve fit: BP-initialised adjoint training vs pure adjoint (HDF5 + PNG)."""
    options = options or durable.RunOptions()
    cfg = make_config(quick, seed, overrides)
    data = {"name": cfg["dataset"], "sha256": durable.array_checksum(target_curve(
        np.arange(0, 101) / 100.0))}
    with durable.claim("theorem1", cfg, out, options, PLOT_MODULES, data,
                       checkpoints=True) as rn:
        f, problem = make_problem(cfg["width"])
        z0 = f.init(np.random.default_rng(seed))
        n = f.n_params
        bp = GradientConfig(cfg["bp_gradient"], cfg["bp_solver"], cfg["bp_steps"])
        ft = bp.with_config(gradient=cfg["variant"], method=cfg["ft_solver"], steps=None,
                            rtol=cfg["rtol"], atol=cfg["atol"])
        log(f"theorem1: width {cfg['width']} ({n} parameters), {cfg['bp_iterations']} BP + "
            f"{cfg['ft_iterations']} adjoint iterations vs {cfg['adj_iterations']} pure adjoint",
            options.quiet)
        done = _train_stages(rn, cfg, problem, f, z0, bp, ft)
        metrics, rows, trajs = _summary(cfg, problem, done, n)
        final = {"arrays": {"z.bp_adjoint": done["z_bpa"], "z.adjoint": done["z_adj"]},
                 "position": {"stage": "finished", "where": "finished"}}
        path = durable.finish(rn, metrics, {"summary": rows}, UNITS,
                              {"adjoint_time_to_reach_bp_adjoint_loss_s":
                               {"never_reached": NEVER}}, final)
        for r in rows:
            log(f"  {r['run']:13s} {r['iterations']:5d} it  ODE loss {r['final_loss']:.4e}  "
                f"{r['wall_s']:.1f} s", options.quiet)
        reach = metrics["adjoint_time_to_reach_bp_adjoint_loss_s"]
        reached = f"after {reach:.1f} s" if reach != NEVER else "never"
        log(f"  wall-time ratio (pure adjoint / BP+adjoint, "
            f"{cfg['bp_iterations'] + cfg['ft_iterations']} iterations each, projected): "
            f"{metrics['wall_time_ratio_equal_iterations']:.1f}x; pure adjoint reached the "
            f"BP+adjoint loss {reached}; results in {path}", False)
        status = draw(options, lambda: _plot(
            path.with_suffix(".png"), problem, trajs,
            {"BP + adjoint": done["bp_history"], "pure adjoint": done["adj_history"]}, cfg,
            rn.id.stem))
    ok = np.isfinite(metrics["final_loss.bp_adjoint"]) and np.isfinite(
        metrics["final_loss.adjoint"])
    return status if ok else 1
