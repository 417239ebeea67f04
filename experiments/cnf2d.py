"""NODE-EW's 2-D flow experiment (seed paper He, Xie & Lin 2019, Sect. 4.3, Fig. 3).

A continuous normalizing flow (CNF) is fitted by maximum likelihood to 2-D densities generated in
code (:mod:`experiments._toy2d`: two moons, circles, eight Gaussians, a two-arm spiral, a
checkerboard), with and without evolutionary weights:

* **NODE**: :class:`nets.CNF` on ``[z, log p]``, field ``f(t, z) = L2(tanh(L1(t, z)), t)``
  (``ConcatLinear(2, H)``, ``Tanh``, ``ConcatLinear(H, 2)``), constant weights ``theta``;
* **NODE-EW**: :class:`nets.CoupledCNF` on ``[z, theta, log p]``: the same ``f`` whose weights
  follow ``theta' = g(theta) = s * tanh(W theta + b)`` (``Linear(n, n)``, ``Tanh``,
  ``Scale(n)``, ``n = 6 H + 4``) from ``theta(0) = theta0``. ``s`` starts at 0, so NODE-EW starts
  as exactly the NODE (same ``theta0``, the same initial held-out NLL) and learns how its weights
  move in time.

Both are trained with Adam, one *epoch* being (as in the paper: "1,000 epochs, taking 100 data
points in every epoch") one step on ``batch`` points drawn without replacement from a training
pool; on the same data, the same batches and the same initial ``theta0`` per data set, with the
divergence as the exact trace (the MLP closed form ``(1 - tanh^2) @ s``) or Hutchinson's estimate
(one Gaussian probe per point, redrawn every epoch, the same probes for both models). Solves:
adaptive dopri5 from the data (``t = 0``) to the base ``N(0, I)`` (``t = t1``), gradients by the
discrete adjoint of the accepted grid. After every epoch the held-out negative log-likelihood is
evaluated with the exact trace (entry 0: before training), so a Hutchinson-trained model is
scored like an exact one.

Recorded per data set / model / trace (metric ``DATASET.MODEL.TRACE.KEY``): ``heldout_nll``
(epochs + 1), ``train_nll`` (the batch NLL of each step, Hutchinson's estimate where used),
``nfe_forward`` (forward solve), ``vjps`` (backward), ``steps`` (accepted) and
``epoch_time_s`` per epoch, ``eval_nfe``, the learned log-density on a grid
(``log_density``, pushed from each grid point to the base), samples pushed back from the base
Gaussian by the inverse solve (``samples``); per data set the held-out NLL of one fitted
Gaussian (``DATASET.gaussian_nll``), the true NLL where the density has a closed form
(``DATASET.true_nll``), the training and held-out data. Tables: ``summary`` (one row per
training: final / minimum held-out NLL, epochs to the minimum, mean NFE, time) and
``comparison`` (NODE vs NODE-EW per data set and trace: epochs to the minimum, raw and
smoothed, and epochs to reach the level both reach). Figures: ``STEM.png`` (data, learned
densities and inverse-solve samples of the exact-trace models, held-out NLL against epoch for all
four trainings with the Gaussian's level) and ``STEM.hutchinson.png`` (the same panels for the
Hutchinson-trained models).

The run is durable (:mod:`experiments.durable`): checkpoints every 100 epochs (default of
``--checkpoint-every``) and after every training; ``--resume`` continues bitwise. Compare
NODE and NODE-EW over seeds by running ``--seed 0``, ``1``, ``2`` (each its own file).

The models and their solves are :mod:`experiments._cnf2d_model` (:class:`Model` and
:func:`build_model` importable from here), the figures :mod:`experiments._cnf2d_plot`.
"""
from __future__ import annotations

import time
from typing import NamedTuple, Optional

import numpy as np

import solvers
from adjointcore.optim import Adam

from . import _toy2d, durable
from ._cnf2d_model import (
    MODEL_LABELS,
    Model,
    _train_step,
    build_model,
    grid_axis,
    heldout_nll,
    inverse_samples,
    learned_density,
)
from ._cnf2d_plot import _plot
from ._plotting import PLOT_MODULES, draw
from ._progress import log, progress_bar
from ._training import check_loss

__all__ = ["run", "make_config", "QUICK", "FULL", "COMMON", "MODELS", "TRACES", "tasks",
           "build_model", "Model"]

MODELS = ("node", "node_ew")
TRACES = ("exact", "hutchinson")

#: Quick: seconds (the tests).
QUICK = {"datasets": ["two_moons", "checkerboard"], "models": list(MODELS),
         "traces": list(TRACES), "hidden": 16, "epochs": 6, "batch": 32, "lr": 2e-2,
         "n_train": 256, "n_test": 128, "grid": 24, "n_plot_samples": 200, "smooth": 3}
#: Full: the paper's 1000 epochs of 100 points on all five data sets, both models, both traces
#: (23 minutes a seed measured on 2 busy CPU cores; the held-out evaluation after every epoch is
#: most of it).
FULL = {"datasets": list(_toy2d.DATASETS), "models": list(MODELS), "traces": list(TRACES),
        "hidden": 64, "epochs": 1000, "batch": 100, "lr": 1e-2, "n_train": 10000,
        "n_test": 500, "grid": 100, "n_plot_samples": 2000, "smooth": 25}
#: Shared settings (recorded in every file; the numeric ones may be overridden).
COMMON = {"solver": "dopri5", "rtol": 1e-5, "atol": 1e-5, "gradient": "discrete",
          "max_steps": 2000, "t1": 1.0, "optimizer": "adam", "probes": "gaussian",
          "n_probes": 1, "level_margin": 0.02, "plot_range": 3.5,
          "field": "ConcatLinear(2, H) -> Tanh -> ConcatLinear(H, 2)",
          "weight_field": "Linear(n, n) -> Tanh -> Scale(n, init 0), n = 6 H + 4",
          "base": "N(0, I)"}
CHECKPOINT_EVERY = 100
POSITIVE_INTS = ("hidden", "epochs", "batch", "n_train", "n_test", "grid", "n_plot_samples",
                 "smooth", "max_steps", "n_probes")
HIST_KEYS = ("heldout_nll", "train_nll", "nfe_forward", "vjps", "steps", "eval_nfe",
             "epoch_time_s")
FLOAT_KEYS = ("heldout_nll", "train_nll", "epoch_time_s")
#: Streams of ``default_rng([seed, dataset index, stream])``.
STREAMS = {"train": 0, "test": 1, "theta0": 2, "theta1": 3, "batches": 4, "probes": 5,
           "base": 6}


def _units(key: str) -> str:
    if key.endswith(("nll", "heldout_nll", "train_nll")):
        return "nats per point"
    return {"nfe_forward": "function evaluations", "vjps": "field VJPs",
            "steps": "accepted steps", "eval_nfe": "function evaluations",
            "epoch_time_s": "s", "log_density": "nats (log p on the grid)",
            "samples": "1 (data coordinates)", "grid_axis": "1 (data coordinates)",
            "train": "1 (data coordinates)", "test": "1 (data coordinates)",
            "params": "1", "wall_time_s": "s"}.get(key, "1")


# ------------------------------------------------------------------------------ configuration
def make_config(quick: bool = False, seed: int = 0, overrides: Optional[dict] = None) -> dict:
    """The full configuration: mode defaults, shared settings, ``--set`` overrides (checked).

    Raises
    ------
    experiments.durable.ConfigError
        An unknown key, a value of the wrong type or out of range (named).
    """
    base = {**(QUICK if quick else FULL), **COMMON, "seed": int(seed), "quick": bool(quick)}
    cfg = durable.apply_overrides("cnf2d", base, overrides)
    bad = [k for k in POSITIVE_INTS if cfg[k] < 1]
    bad += [k for k in ("lr", "rtol", "atol", "t1", "plot_range") if cfg[k] <= 0]
    if cfg["level_margin"] < 0:
        bad.append("level_margin")
    for key, allowed in (("datasets", tuple(_toy2d.DATASETS)), ("models", MODELS),
                         ("traces", TRACES)):
        values = cfg[key]
        if not values or len(set(values)) != len(values) or any(v not in allowed
                                                                 for v in values):
            bad.append(f"{key} (a non-empty list without repeats from {list(allowed)})")
    if cfg["probes"] not in ("gaussian", "rademacher"):
        bad.append("probes ('gaussian' or 'rademacher')")
    if cfg["solver"] not in solvers.adaptive_methods():
        bad.append(f"solver (adaptive: {list(solvers.adaptive_methods())})")
    if cfg["batch"] > cfg["n_train"]:
        bad.append("batch (at most n_train)")
    if cfg["gradient"] != "discrete":
        bad.append("gradient (only 'discrete')")
    if bad:
        raise durable.ConfigError(f"cnf2d settings {bad} are out of range: counts >= 1, rates, "
                                  f"tolerances, t1 and plot_range > 0, level_margin >= 0; got "
                                  f"{ {k.split(' ')[0]: cfg.get(k.split(' ')[0]) for k in bad} }.")
    return cfg


class Task(NamedTuple):
    """One training: data set, model, trace."""

    dataset: str
    model: str
    trace: str

    @property
    def key(self) -> str:
        return f"{self.dataset}.{self.model}.{self.trace}"


def tasks(cfg) -> list:
    """The trainings in order: per data set, per trace, NODE then NODE-EW."""
    return [Task(d, m, t) for d in cfg["datasets"] for t in cfg["traces"] for m in cfg["models"]]


def _rng(cfg, dataset: str, stream: str) -> np.random.Generator:
    index = list(_toy2d.DATASETS).index(dataset)
    return np.random.default_rng([cfg["seed"], index, STREAMS[stream]])


def make_data(cfg, dataset: str):
    """``(train (n_train, 2), test (n_test, 2))`` of ``dataset`` for this seed."""
    return (_toy2d.sample(dataset, cfg["n_train"], _rng(cfg, dataset, "train")),
            _toy2d.sample(dataset, cfg["n_test"], _rng(cfg, dataset, "test")))


# ------------------------------------------------------------------------------ loop state
class Loop(NamedTuple):
    """Where the run stands: everything a checkpoint holds."""

    task: int                   # index into tasks(cfg)
    epoch: int                  # epochs done in the current training
    params: Optional[np.ndarray]
    opt_state: object
    batch_rng: Optional[np.random.Generator]
    probe_rng: Optional[np.random.Generator]
    hist: dict                  # the current training's per-epoch lists
    done: dict                  # metrics of finished trainings (arrays)
    finals: dict                # final trained vectors of finished trainings
    wall: float                 # wall time of earlier sessions


def _new_hist() -> dict:
    return {k: [] for k in HIST_KEYS}


def _start_task(cfg, task: Task, loop: Loop, data) -> Loop:
    """Fresh parameters, optimiser and generators for ``task``; the held-out NLL before
    training as entry 0."""
    model = build_model(cfg, task.model)
    params = model.init(_rng(cfg, task.dataset, "theta0"), _rng(cfg, task.dataset, "theta1"))
    opt = Adam(lr=cfg["lr"])
    nll0, nfe0 = heldout_nll(model, cfg, params, data[task.dataset][1])
    hist = _new_hist()
    hist["heldout_nll"].append(nll0)
    hist["eval_nfe"].append(nfe0)
    return loop._replace(epoch=0, params=params, opt_state=opt.init_state(params),
                         batch_rng=_rng(cfg, task.dataset, "batches"),
                         probe_rng=_rng(cfg, task.dataset, "probes"), hist=hist)


def _hist_arrays(hist: dict, prefix: str) -> dict:
    return {f"{prefix}{k}": np.asarray(v, dtype=np.float64 if k in FLOAT_KEYS else np.int64)
            for k, v in hist.items()}


def _checkpoint(loop: Loop, cfg, task_list, session_start: float) -> dict:
    """:func:`experiments.durable.save_checkpoint` arguments for ``loop``."""
    arrays = {f"final.{k}": v for k, v in loop.finals.items()}
    rng = {}
    if loop.params is not None:
        arrays.update({"params": loop.params,
                       **durable.optimizer_arrays("opt.", loop.opt_state),
                       **_hist_arrays(loop.hist, "current.")})
        rng = {"batches": durable.rng_state(loop.batch_rng),
               "probes": durable.rng_state(loop.probe_rng)}
    n = len(task_list)
    where = (f"training {loop.task + 1}/{n} ({task_list[loop.task].key}), epoch "
             f"{loop.epoch}/{cfg['epochs']}" if loop.task < n else "all trainings done")
    position = {"task": loop.task, "epoch": loop.epoch, "started": loop.params is not None,
                "wall_s": loop.wall + time.perf_counter() - session_start, "where": where}
    return {"arrays": arrays, "position": position, "rng_state": rng, "metrics": loop.done,
            "units": {k: _units(k.rsplit(".", 1)[-1]) for k in loop.done}}


def _restored(resumed, cfg, task_list) -> Loop:
    ck = resumed["checkpoint"]
    arrays, pos = ck["arrays"], ck["position"]
    done = {k: v for k, v in resumed["metrics"].items()}
    finals = {k[len("final."):]: v for k, v in arrays.items() if k.startswith("final.")}
    loop = Loop(pos["task"], pos["epoch"], None, None, None, None, _new_hist(), done, finals,
                pos["wall_s"])
    if not pos["started"]:
        return loop
    params = arrays["params"]
    opt_state = durable.restore_optimizer(Adam(lr=cfg["lr"]).init_state(params), arrays, "opt.")
    hist = {k: arrays[f"current.{k}"].tolist() for k in HIST_KEYS}
    return loop._replace(params=params, opt_state=opt_state,
                         batch_rng=durable.restore_rng(ck["rng_state"]["batches"]),
                         probe_rng=durable.restore_rng(ck["rng_state"]["probes"]), hist=hist)


def _epoch(cfg, task: Task, model: Model, opt, loop: Loop, data) -> Loop:
    """One Adam step on a batch, then the held-out NLL."""
    start = time.perf_counter()
    train, test = data[task.dataset]
    idx = loop.batch_rng.choice(len(train), cfg["batch"], replace=False)
    field = model.field(cfg["batch"])
    if task.trace == "hutchinson":
        field = field.redraw(loop.probe_rng, n_probes=cfg["n_probes"], kind=cfg["probes"])
    value, grad, nfe, vjps, steps = _train_step(model, cfg, field, loop.params, train[idx])
    check_loss(value, f"{task.key} epoch {loop.epoch + 1}",
               "lower the learning rate (--set lr=...) or loosen rtol/atol")
    params, state = opt.step(loop.params, grad, loop.opt_state)
    nll, eval_nfe = heldout_nll(model, cfg, params, test)
    hist = {k: list(v) for k, v in loop.hist.items()}
    for key, v in (("heldout_nll", nll), ("train_nll", value), ("nfe_forward", nfe),
                   ("vjps", vjps), ("steps", steps), ("eval_nfe", eval_nfe),
                   ("epoch_time_s", time.perf_counter() - start)):
        hist[key].append(v)
    return loop._replace(epoch=loop.epoch + 1, params=params, opt_state=state, hist=hist)


def _finish_task(loop: Loop, task: Task) -> Loop:
    done = dict(loop.done)
    done.update(_hist_arrays(loop.hist, f"{task.key}."))
    finals = dict(loop.finals)
    finals[task.key] = loop.params
    return loop._replace(task=loop.task + 1, epoch=0, params=None, opt_state=None,
                         batch_rng=None, probe_rng=None, hist=_new_hist(), done=done,
                         finals=finals)


def _train(run, cfg, loop: Loop, data) -> Loop:
    """All trainings from ``loop`` on, checkpointing through :func:`durable.after_step`."""
    task_list = tasks(cfg)
    quiet = run.options.quiet
    session_start = time.perf_counter()
    since = 0
    total = len(task_list) * cfg["epochs"]
    every = max(1, cfg["epochs"] // 5)
    bar = progress_bar(total, "cnf2d", quiet, initial=loop.task * cfg["epochs"] + loop.epoch,
                       unit="epoch")
    with bar:
        while loop.task < len(task_list):
            task = task_list[loop.task]
            model = build_model(cfg, task.model)
            opt = Adam(lr=cfg["lr"])
            if loop.params is None:
                loop = _start_task(cfg, task, loop, data)
                log(f"{task.key}: {model.n_params} parameters, held-out NLL before training "
                    f"{loop.hist['heldout_nll'][0]:.4f}", quiet)
            while loop.epoch < cfg["epochs"]:
                loop = _epoch(cfg, task, model, opt, loop, data)
                h = loop.hist
                bar.update(1)
                bar.set_postfix_str(f"{task.key} held-out NLL {h['heldout_nll'][-1]:.3f} NFE "
                                    f"f/b {h['nfe_forward'][-1]}/{h['vjps'][-1]}")
                if loop.epoch % every == 0 or loop.epoch == cfg["epochs"]:
                    log(f"  {task.key} epoch {loop.epoch:5d}/{cfg['epochs']}  train "
                        f"{h['train_nll'][-1]:.4f}  held-out {h['heldout_nll'][-1]:.4f}  NFE "
                        f"f/b {h['nfe_forward'][-1]}/{h['vjps'][-1]}  "
                        f"{h['epoch_time_s'][-1] * 1e3:.0f} ms", quiet)
                if loop.epoch < cfg["epochs"]:
                    since = durable.after_step(run, since + 1, lambda loop=loop: _checkpoint(
                        loop, cfg, task_list, session_start), default_every=CHECKPOINT_EVERY)
            loop = _finish_task(loop, task)
            since = durable.after_step(run, since + 1, lambda loop=loop: _checkpoint(
                loop, cfg, task_list, session_start), force=True)
    return loop._replace(wall=loop.wall + time.perf_counter() - session_start)


# ------------------------------------------------------------------------------ evaluation


def _first_at_or_below(curve, level) -> int:
    hit = np.flatnonzero(np.asarray(curve) <= level)
    return int(hit[0]) if hit.size else -1


def _smoothed(curve, window: int) -> np.ndarray:
    """Trailing moving average (shorter windows at the start)."""
    c = np.cumsum(np.concatenate([[0.0], np.asarray(curve, dtype=np.float64)]))
    idx = np.arange(1, len(curve) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def _summarise(cfg, loop: Loop, data, gauss: dict):
    """Summary and comparison tables (rows of dicts)."""
    rows, comparison = [], []
    for task in tasks(cfg):
        m = {k: loop.done[f"{task.key}.{k}"] for k in HIST_KEYS}
        curve = m["heldout_nll"]
        rows.append({"dataset": task.dataset, "model": MODEL_LABELS[task.model],
                     "trace": task.trace, "gaussian_nll": gauss[task.dataset],
                     "initial_nll": float(curve[0]), "final_nll": float(curve[-1]),
                     "min_nll": float(curve.min()), "epochs_to_min": int(np.argmin(curve)),
                     "epochs_to_min_smoothed": int(np.argmin(_smoothed(curve, cfg["smooth"]))),
                     "final_minus_gaussian": float(curve[-1] - gauss[task.dataset]),
                     "mean_nfe_forward": float(np.mean(m["nfe_forward"])),
                     "mean_vjps": float(np.mean(m["vjps"])),
                     "train_time_s": float(np.sum(m["epoch_time_s"]))})
    for dataset in cfg["datasets"]:
        for trace in cfg["traces"]:
            if set(cfg["models"]) != set(MODELS):
                continue
            curves = {mdl: loop.done[f"{dataset}.{mdl}.{trace}.heldout_nll"] for mdl in MODELS}
            level = max(float(c.min()) for c in curves.values()) + cfg["level_margin"]
            row = {"dataset": dataset, "trace": trace, "level": level}
            for mdl, c in curves.items():
                row[f"{mdl}_min_nll"] = float(c.min())
                row[f"{mdl}_epochs_to_min"] = int(np.argmin(c))
                row[f"{mdl}_epochs_to_min_smoothed"] = int(np.argmin(_smoothed(c,
                                                                              cfg["smooth"])))
                row[f"{mdl}_epochs_to_level"] = _first_at_or_below(c, level)
            row["node_ew_faster"] = bool(row["node_ew_epochs_to_level"]
                                         < row["node_epochs_to_level"])
            comparison.append(row)
    return rows, comparison


def _data_info(cfg, data) -> dict:
    arrays = [a for d in cfg["datasets"] for a in data[d]]
    return {"name": "2-D toy densities generated in code (experiments._toy2d)",
            "datasets": {d: _toy2d.DESCRIPTIONS[d] for d in cfg["datasets"]},
            "n_train": cfg["n_train"], "n_test": cfg["n_test"],
            "sha256": durable.array_checksum(*arrays)}


# ------------------------------------------------------------------------------ entry point
def run(quick: bool = False, out: str = "results", seed: int = 0, *,
        overrides: Optional[dict] = None, options: Optional[durable.RunOptions] = None) -> int:
    """Maximum-likelihood CNF on 2-D densities, NODE vs NODE-EW, exact trace and Hutchinson
    (HDF5 + PNG)."""
    options = options or durable.RunOptions()
    cfg = make_config(quick, seed, overrides)
    data = {d: make_data(cfg, d) for d in cfg["datasets"]}
    with durable.claim("cnf2d", cfg, out, options, PLOT_MODULES, _data_info(cfg, data),
                       checkpoints=True) as rn:
        task_list = tasks(cfg)
        log(f"cnf2d: {len(task_list)} trainings ({', '.join(cfg['datasets'])} x "
            f"{'/'.join(cfg['models'])} x {'/'.join(cfg['traces'])}) of {cfg['epochs']} epochs "
            f"x {cfg['batch']} points, hidden {cfg['hidden']}", options.quiet)
        loop = Loop(0, 0, None, None, None, None, _new_hist(), {}, {}, 0.0) \
            if rn.resumed is None else _restored(rn.resumed, cfg, task_list)
        loop = _train(rn, cfg, loop, data)
        metrics, gauss = dict(loop.done), {}
        for dataset in cfg["datasets"]:
            train, test = data[dataset]
            mean, cov = _toy2d.fit_gaussian(train)
            gauss[dataset] = _toy2d.gaussian_nll(test, mean, cov)
            metrics[f"{dataset}.gaussian_nll"] = gauss[dataset]
            if dataset in ("checkerboard", "eight_gaussians"):
                metrics[f"{dataset}.true_nll"] = float(-np.mean(_toy2d.log_density(dataset,
                                                                                   test)))
            metrics[f"{dataset}.train"] = train[:max(cfg["n_plot_samples"], cfg["n_test"])]
            metrics[f"{dataset}.test"] = test
        metrics["grid_axis"] = grid_axis(cfg)
        for task in task_list:
            model = build_model(cfg, task.model)
            params = loop.finals[task.key]
            logp, theta_t1 = learned_density(model, cfg, params)
            metrics[f"{task.key}.log_density"] = logp
            metrics[f"{task.key}.samples"] = inverse_samples(model, cfg, params, theta_t1,
                                                             _rng(cfg, task.dataset, "base"))
        metrics["wall_time_s"] = loop.wall
        rows, comparison = _summarise(cfg, loop, data, gauss)
        units = {k: _units(k.rsplit(".", 1)[-1]) for k in metrics}
        final = {"arrays": {f"params.{k}": v for k, v in loop.finals.items()},
                 "position": {"task": loop.task, "epoch": 0, "where": "finished"},
                 "rng_state": {}}
        path = durable.finish(rn, metrics, {"summary": rows, "comparison": comparison},
                              units, checkpoint=final)
        for r in rows:
            log(f"  {r['dataset']:16s} {r['model']:8s} {r['trace']:10s} held-out NLL "
                f"{r['initial_nll']:.3f} -> {r['final_nll']:.3f} (min {r['min_nll']:.3f} at "
                f"epoch {r['epochs_to_min']}; Gaussian {r['gaussian_nll']:.3f})", options.quiet)
        for r in comparison:
            log(f"  {r['dataset']:16s} {r['trace']:10s} epochs to NLL <= {r['level']:.3f}: "
                f"NODE {r['node_epochs_to_level']}, NODE-EW {r['node_ew_epochs_to_level']}",
                options.quiet)
        log(f"wrote {path}", False)
        status = draw(options, lambda: _plot(path, metrics, cfg, rn.id.stem, gauss))
    finite = all(np.all(np.isfinite(loop.done[f"{t.key}.heldout_nll"])) for t in task_list)
    return status if finite else 1
