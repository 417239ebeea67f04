"""Main job: an ODE-net classifier on scikit-learn's bundled 8x8 digits.

Model: Linear stem (64 -> d) -> ODE block (MLP vector field, RK4 fixed steps, discrete adjoint
under a Revolve schedule) -> Linear classifier (d -> 10); softmax cross-entropy, Adam.
Writes ``digits[_quick]-HASH-seedN.h5`` (per-epoch loss/accuracy, forward/backward NFE, wall
time, checkpoint counters, and the final parameters and optimiser state) and the same name with
``.png``. The run is durable (:mod:`experiments.durable`): a checkpoint after every epoch (and
every ``checkpoint_every`` optimiser steps), ``--resume`` continues bitwise.
"""
from __future__ import annotations

import time
from typing import NamedTuple, Optional

import numpy as np

from adjointcore.checkpointing import Revolve
from adjointcore.layers import Linear, Sequential, Tanh
from adjointcore.losses import softmax_cross_entropy
from adjointcore.optim import Adam
from nets.odeblock import ODEBlock

from . import durable
from ._plotting import PLOT_MODULES, caption, draw, integer_ticks, new_figure, save_figure
from ._progress import log, progress_bar
from ._training import check_loss
from .data import load_digits_split

__all__ = ["run", "make_config", "build_model", "QUICK", "FULL"]

QUICK = {"width": 16, "hidden": 32, "steps": 4, "epochs": 2, "batch": 128, "lr": 1e-2,
         "snapshots": 2, "n_train": 512}
FULL = {"width": 32, "hidden": 64, "steps": 8, "epochs": 15, "batch": 64, "lr": 3e-3,
        "snapshots": 3, "n_train": None}
#: Settings shared by both modes (recorded in every file; ``solver`` may be overridden).
COMMON = {"solver": "rk4", "gradient": "discrete", "schedule": "revolve", "t1": 1.0,
          "optimizer": "adam", "loss": "softmax_cross_entropy", "n_test": 297,
          "dataset": "sklearn.datasets.load_digits (8x8, scaled to [0, 1])"}
POSITIVE_INTS = ("width", "hidden", "steps", "epochs", "batch", "snapshots", "n_test")
HIST_KEYS = ("loss", "train_acc", "test_acc", "epoch_time_s", "nfe_forward", "nfe_backward",
             "max_live_snapshots", "recomputed_steps")
UNITS = {"loss": "nats per example (mean over batches)", "train_acc": "fraction",
         "test_acc": "fraction", "epoch_time_s": "s", "nfe_forward": "function evaluations",
         "nfe_backward": "function evaluations (VJPs + recomputed)",
         "max_live_snapshots": "states", "recomputed_steps": "steps", "wall_time_s": "s"}
DATA_MODULES = {"sklearn": "adjointcore[data]"}


def make_config(quick: bool = False, seed: int = 0, overrides: Optional[dict] = None) -> dict:
    """The full configuration of a run: mode defaults, shared settings, ``--set`` overrides.

    Raises
    ------
    experiments.durable.ConfigError
        An unknown key, a value of the wrong type, or a value out of range.
    """
    base = {**(QUICK if quick else FULL), **COMMON, "seed": int(seed), "quick": bool(quick)}
    cfg = durable.apply_overrides("digits", base, overrides)
    bad = [k for k in POSITIVE_INTS if cfg[k] < 1]
    if cfg["n_train"] is not None and (not isinstance(cfg["n_train"], int) or cfg["n_train"] < 1):
        bad.append("n_train")
    if cfg["lr"] <= 0 or cfg["t1"] <= 0:
        bad += [k for k in ("lr", "t1") if cfg[k] <= 0]
    if cfg["gradient"] != "discrete" or cfg["schedule"] != "revolve":
        bad += ["gradient/schedule (only 'discrete' with 'revolve' here)"]
    if bad:
        raise durable.ConfigError(f"digits settings {bad} are out of range: integers must be "
                                  f">= 1 (n_train: null or >= 1), lr and t1 > 0; got "
                                  f"{ {k: cfg.get(k) for k in bad if k in cfg} }.")
    return cfg


def build_model(cfg) -> Sequential:
    """Stem -> ODE block -> classifier, one flat parameter vector."""
    field = Sequential(Linear(cfg["width"], cfg["hidden"]), Tanh(),
                       Linear(cfg["hidden"], cfg["width"]))
    block = ODEBlock(field, t_span=(0.0, cfg.get("t1", 1.0)), method=cfg.get("solver", "rk4"),
                     steps=cfg["steps"], gradient="discrete",
                     schedule=Revolve(snapshots=cfg["snapshots"]))
    return Sequential(Linear(64, cfg["width"]), Tanh(), block, Linear(cfg["width"], 10))


def _accuracy(model, params, x, y) -> float:
    logits, _ = model.forward(params, x)
    return float(np.mean(np.argmax(logits, axis=1) == y))


class Loop(NamedTuple):
    """Where the training loop stands: everything a checkpoint holds."""

    params: np.ndarray
    opt_state: object
    rng: np.random.Generator
    epoch: int              # current epoch (0-based)
    batch: int              # next batch of the current epoch
    perm: Optional[np.ndarray]   # the current epoch's permutation (None at an epoch start)
    losses: list            # batch losses of the current epoch
    work: dict              # NFE and checkpoint counters of the current epoch, elapsed time
    hist: dict              # per-epoch metrics of the finished epochs
    wall: float             # wall time of earlier sessions of this run


def _new_work() -> dict:
    return {"nfe_forward": 0, "nfe_backward": 0, "max_live_snapshots": 0,
            "recomputed_steps": 0, "epoch_elapsed_s": 0.0}


def _fresh(cfg, model, opt) -> Loop:
    rng = np.random.default_rng(cfg["seed"])
    params = model.init(rng)
    return Loop(params, opt.init_state(params), rng, 0, 0, None, [], _new_work(),
                {k: [] for k in HIST_KEYS}, 0.0)


def _restored(resumed, opt, model) -> Loop:
    ck = resumed["checkpoint"]
    arrays, pos = ck["arrays"], ck["position"]
    params = arrays["params"]
    return Loop(params, durable.restore_optimizer(opt.init_state(params), arrays, "opt."),
                durable.restore_rng(ck["rng_state"]), pos["epoch"], pos["batch"],
                arrays.get("perm"), arrays["epoch_losses"].tolist(), pos["work"],
                {k: resumed["metrics"][k].tolist() for k in HIST_KEYS}, pos["wall_s"])


def _checkpoint(loop: Loop, cfg, n_batches: int, session_start: float) -> dict:
    """:func:`experiments.durable.save_checkpoint` arguments for ``loop``."""
    arrays = {"params": loop.params, **durable.optimizer_arrays("opt.", loop.opt_state),
              "epoch_losses": np.asarray(loop.losses, dtype=np.float64)}
    if loop.perm is not None:
        arrays["perm"] = loop.perm
    where = (f"epoch {loop.epoch + 1}/{cfg['epochs']}, batch {loop.batch}/{n_batches}"
             if loop.batch else f"start of epoch {loop.epoch + 1}/{cfg['epochs']}")
    position = {"epoch": loop.epoch, "batch": loop.batch, "work": loop.work,
                "wall_s": loop.wall + time.perf_counter() - session_start, "where": where}
    return {"arrays": arrays, "position": position, "rng_state": durable.rng_state(loop.rng),
            "metrics": _metrics(loop.hist), "units": UNITS}


def _metrics(hist: dict, wall=None) -> dict:
    out = {k: np.asarray(v, dtype=np.float64 if k in ("loss", "train_acc", "test_acc",
                                                      "epoch_time_s") else np.int64)
           for k, v in hist.items()}
    if wall is not None:
        out["wall_time_s"] = wall
    return out


def _batch(model_e, opt, loop: Loop, x, y, records, epoch: int) -> Loop:
    """One optimiser step on the batch; the epoch's losses and counters updated."""
    logits, cache = model_e.forward(loop.params, x)
    loss, g_logits = softmax_cross_entropy(logits, y)
    _, grad = model_e.vjp(loop.params, cache, g_logits)
    params, state = opt.step(loop.params, grad, loop.opt_state)
    loss = check_loss(float(loss), f"epoch {epoch + 1}",
                      "lower the learning rate (--set lr=...) or use more ODE steps")
    work = dict(loop.work)
    for phase, w in records:
        if phase == "forward":
            work["nfe_forward"] += int(w.forward_nfe)
        else:
            work["nfe_backward"] += int(w.backward_nfe)
            work["max_live_snapshots"] = max(work["max_live_snapshots"],
                                             int(w.max_live_snapshots))
            work["recomputed_steps"] += int(w.recomputed_steps)
    records.clear()
    return loop._replace(params=params, opt_state=state, losses=loop.losses + [loss],
                         batch=loop.batch + 1, work=work)


def _end_epoch(loop: Loop, model, data, x_train, y_train) -> Loop:
    hist = {k: list(v) for k, v in loop.hist.items()}
    hist["loss"].append(float(np.mean(loop.losses)))
    hist["train_acc"].append(_accuracy(model, loop.params, x_train, y_train))
    hist["test_acc"].append(_accuracy(model, loop.params, data.x_test, data.y_test))
    hist["epoch_time_s"].append(loop.work["epoch_elapsed_s"])
    for key in ("nfe_forward", "nfe_backward", "max_live_snapshots", "recomputed_steps"):
        hist[key].append(loop.work[key])
    return loop._replace(epoch=loop.epoch + 1, batch=0, perm=None, losses=[], work=_new_work(),
                         hist=hist)


def _epoch_line(loop: Loop, cfg) -> str:
    h = loop.hist
    return (f"epoch {loop.epoch:3d}/{cfg['epochs']}  loss {h['loss'][-1]:.4f}  "
            f"train {h['train_acc'][-1]:.3f}  test {h['test_acc'][-1]:.3f}  "
            f"NFE fwd/bwd {h['nfe_forward'][-1]}/{h['nfe_backward'][-1]}  "
            f"{h['epoch_time_s'][-1]:.1f}s")


def _train(run, cfg, model, opt, loop: Loop, data, x_train, y_train) -> Loop:
    """Epochs from ``loop`` to the end, checkpointing through :func:`durable.after_step`."""
    records = []
    block = model.layers[2]
    model_e = Sequential(*model.layers[:2], block.with_config(
        monitor=lambda phase, work: records.append((phase, work))), model.layers[3])
    n_batches = max(1, len(y_train) // cfg["batch"])
    session_start = time.perf_counter()
    since = 0
    quiet = run.options.quiet
    bar = progress_bar(cfg["epochs"] * n_batches, "digits", quiet,
                       initial=loop.epoch * n_batches + loop.batch, unit="step")
    with bar:
        while loop.epoch < cfg["epochs"]:
            if loop.perm is None:
                loop = loop._replace(perm=loop.rng.permutation(len(y_train)))
            batches = np.array_split(loop.perm, n_batches)
            while loop.batch < n_batches:
                start = time.perf_counter()
                idx = batches[loop.batch]
                loop = _batch(model_e, opt, loop, x_train[idx], y_train[idx], records,
                              loop.epoch)
                work = dict(loop.work, epoch_elapsed_s=loop.work["epoch_elapsed_s"]
                            + time.perf_counter() - start)
                loop = loop._replace(work=work)
                bar.update(1)
                acc = loop.hist["test_acc"][-1] if loop.hist["test_acc"] else float("nan")
                bar.set_postfix_str(f"loss {loop.losses[-1]:.3f}  test acc {acc:.3f}  NFE f/b "
                                    f"{work['nfe_forward']}/{work['nfe_backward']}")
                if loop.batch < n_batches:
                    since = durable.after_step(run, since + 1, lambda loop=loop: _checkpoint(
                        loop, cfg, n_batches, session_start))
            start = time.perf_counter()
            loop = _end_epoch(loop, model, data, x_train, y_train)
            loop.hist["epoch_time_s"][-1] += time.perf_counter() - start
            log(_epoch_line(loop, cfg), quiet)
            since = durable.after_step(run, since + 1, lambda loop=loop: _checkpoint(
                loop, cfg, n_batches, session_start), force=True)
    return loop._replace(wall=loop.wall + time.perf_counter() - session_start)


def _data_info(data, x_train, y_train, cfg) -> dict:
    return {"name": cfg["dataset"], "split_seed": cfg["seed"], "n_train": int(len(y_train)),
            "n_test": int(len(data.y_test)),
            "sha256": durable.array_checksum(x_train, y_train, data.x_test, data.y_test)}


def run(quick: bool = False, out: str = "results", seed: int = 0, *,
        overrides: Optional[dict] = None, options: Optional[durable.RunOptions] = None) -> int:
    """Train an ODE-net on the bundled digits (main job); write HDF5 + PNG."""
    options = options or durable.RunOptions()
    cfg = make_config(quick, seed, overrides)
    durable.check_out_dir(out)
    durable.check_modules(DATA_MODULES, "digits's data set (scikit-learn's bundled digits)")
    if options.plot:
        durable.check_modules(PLOT_MODULES, "digits's figure", "--no-plot")
    data = load_digits_split(seed, n_test=cfg["n_test"])
    x_train, y_train = data.x_train, data.y_train
    if cfg["n_train"]:
        x_train, y_train = x_train[:cfg["n_train"]], y_train[:cfg["n_train"]]
    info = _data_info(data, x_train, y_train, cfg)
    with durable.claim("digits", cfg, out, options, PLOT_MODULES, info, checkpoints=True) as rn:
        model = build_model(cfg)
        opt = Adam(lr=cfg["lr"])
        loop = _fresh(cfg, model, opt) if rn.resumed is None else _restored(rn.resumed, opt,
                                                                               model)
        loop = _train(rn, cfg, model, opt, loop, data, x_train, y_train)
        final = {"arrays": {"params": loop.params,
                            **durable.optimizer_arrays("opt.", loop.opt_state)},
                 "position": {"epoch": loop.epoch, "batch": 0, "where": "finished"},
                 "rng_state": durable.rng_state(loop.rng)}
        path = durable.finish(rn, _metrics(loop.hist, loop.wall), units=UNITS, checkpoint=final)
        log(f"final test accuracy {loop.hist['test_acc'][-1]:.3f}; wrote {path}", False)
        return draw(options, lambda: _plot(loop.hist, path.with_suffix(".png"), cfg,
                                            rn.id.stem))


def _plot(hist, path, cfg, stem):
    fig = new_figure((8, 3.6))
    ax1, ax2 = fig.subplots(1, 2)
    epochs = np.arange(1, len(hist["loss"]) + 1)
    ax1.plot(epochs, hist["loss"], marker="o")
    ax1.set(xlabel="epoch", ylabel="training loss (mean over batches)", yscale="log")
    ax2.plot(epochs, hist["train_acc"], marker="o", label="train")
    ax2.plot(epochs, hist["test_acc"], marker="s", label="test")
    ax2.set(xlabel="epoch", ylabel="accuracy")
    ax2.legend()
    for ax in (ax1, ax2):
        integer_ticks(ax.xaxis)
    fig.suptitle(f"ODE-net on 8x8 digits: test accuracy {hist['test_acc'][-1]:.3f} after "
                 f"{len(epochs)} epochs", fontsize=10)
    keys = ("width", "hidden", "solver", "steps", "gradient", "schedule", "snapshots", "epochs",
            "batch", "lr", "n_train", "seed", "quick")
    lines = caption(fig, stem, cfg, keys)
    save_figure(fig, path, caption_lines=lines)
    return path
