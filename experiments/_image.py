"""The durable training loop of the image classifiers (the thesis' models in
:mod:`experiments._thesis`; ``node_ew_mnist``, ``anodev2_classify`` and
``lm_resnet_classify`` bring their own), their configuration checks and data.

Training (:func:`train`)
------------------------
Adam on softmax cross-entropy (learning rate constant or cosine-annealed to 0 over all steps,
``lr_schedule``), one pass over a fresh permutation per epoch; after every epoch the
validation loss and accuracy; early stopping when the validation loss has not improved for
``patience`` epochs (thesis section 6.2.2); the test set is evaluated with the parameters of the
best validation loss. Per epoch: forward and backward NFE of the ODE block (sums over the epoch's
batches and means per batch, from its ``monitor(phase, work)`` :class:`solvers.Work` records),
field VJPs, training time and evaluation time. A checkpoint every 50 optimiser steps
(``--checkpoint-every``) and after every epoch holds everything needed to continue bitwise:
parameters, best parameters, Adam's state, the generator's state, the epoch's permutation,
position, running sums and the early-stopping state.

Hooks for other image experiments (the thesis' runs use none of them): :func:`train` takes a
per-epoch ``models(epoch) -> (training model, evaluation model)`` (NODE-EW's switch from
Euler backpropagation to the adjoint; stochastic depth's random training network beside its
expectation-mode evaluation network), passes the loop's checkpointed generator to a training
model that ``needs_rng``, and appends a ``record(loop)`` hook's per-epoch values to the
history. :func:`image_config` takes the experiment's model names, its own checks and, for the
thesis, its ablation settings; :func:`trained_run` is the whole claim / train / test sequence
of such a run.
"""
from __future__ import annotations

import contextlib
import math
import time
from typing import Callable, NamedTuple, Optional

import numpy as np

from adjointcore.losses import softmax_cross_entropy
from adjointcore.optim import Adam

from . import durable
from ._progress import log, progress_bar
from ._training import check_loss
from .data import load_fashion_mnist, load_mnist

__all__ = ["split_ablations", "check_model_config", "load_data", "load_test", "data_info",
           "evaluate", "make_optimizer", "learning_rate", "Loop", "fresh", "restored", "train",
           "final_checkpoint", "metrics", "HIST_KEYS", "UNITS", "image_size", "image_config",
           "Trained", "summary", "trained_run", "plot_curves"]


# ------------------------------------------------------------------------------- config
def image_size(cfg) -> int:
    """Side of the images the network sees (28, or 28 / downsample)."""
    return 28 // int(cfg.get("downsample", 1))


def image_config(name, modes, quick: bool, seed: int, overrides: Optional[dict], *,
                 models, ablations: Optional[dict] = None, check: Optional[Callable] = None,
                 hint: str = "") -> dict:
    """A run's configuration: ``modes = (full, quick, common)`` defaults, the seed and mode,
    ``--set`` overrides (checked by :func:`durable.apply_overrides`) and ablation settings
    (``ablations``, as :data:`experiments._thesis.ABLATIONS`; None: their keys are unknown
    settings), with the model settings checked (:func:`check_model_config`; ``models``, the
    experiment's model names, ``check`` and ``hint`` go there).

    Raises
    ------
    experiments.durable.ConfigError
        An unknown key, a value of the wrong type, or a value out of range.
    """
    full, quick_defaults, common = modes
    base = {**(quick_defaults if quick else full), **common, "seed": int(seed),
            "quick": bool(quick)}
    overrides, extra = (overrides, {}) if ablations is None else \
        split_ablations(name, overrides, ablations)
    return check_model_config(name, {**durable.apply_overrides(name, base, overrides), **extra},
                              models=models, check=check, hint=hint)


def split_ablations(name: str, overrides: Optional[dict], ablations: dict) -> tuple:
    """``(overrides without the keys of ablations, {key: value} of the non-default ones)``;
    ``ablations`` maps a setting to ``(default, choices)``.

    Raises
    ------
    experiments.durable.ConfigError
        An ablation value that is not one of its choices.
    """
    rest, extra = dict(overrides or {}), {}
    for key, (default, choices) in ablations.items():
        if key in rest:
            value = rest.pop(key)
            if value not in choices:
                raise durable.ConfigError(f"--set {key}={value!r}: {name}'s {key!r} must be one "
                                          f"of {list(choices)} (default {default!r}).")
            if value != default:
                extra[key] = value
    return rest, extra


_POSITIVE = ("width", "groups", "blocks_large", "pool", "downsample", "epochs", "patience",
             "batch", "n_val", "eval_batch")


def _bad_settings(cfg: dict, models) -> list:
    """Names of the generic settings of ``cfg`` out of range (absent keys are not checked)."""
    bad = [k for k in _POSITIVE if k in cfg and (not isinstance(cfg[k], int) or cfg[k] < 1)]
    if cfg.get("augment", 0) < 0:
        bad.append("augment")
    for key in ("n_train", "n_test"):
        v = cfg.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            bad.append(key)
    if cfg["model"] not in models:
        bad.append("model")
    bad += [k for k in ("lr", "rtol", "atol", "t1") if k in cfg and cfg[k] <= 0]
    if cfg.get("weight_decay", 0.0) < 0:
        bad.append("weight_decay")
    if cfg.get("lr_schedule", "constant") not in ("constant", "cosine"):
        bad.append("lr_schedule")
    if cfg["dataset"] not in ("fashion-mnist", "mnist"):
        bad.append("dataset")
    if cfg["dtype"] not in ("float32", "float64"):
        bad.append("dtype")
    if cfg.get("gradient", "discrete") not in ("discrete", "backsolve", "interpolated"):
        bad.append("gradient")
    widths = cfg.get("complex_widths", [2, 2, 2])
    if not (isinstance(widths, list) and len(widths) == 3 and all(
            isinstance(c, int) and c >= 2 for c in widths) and widths == sorted(widths)):
        bad.append("complex_widths")
    if not bad:
        if 28 % cfg.get("downsample", 1) or image_size(cfg) % cfg.get("pool", 1):
            bad += ["downsample/pool (28 / downsample must be divisible by pool)"]
        if "groups" in cfg and (cfg["width"] + cfg.get("augment", 0)) % cfg["groups"]:
            bad += ["groups (must divide width + augment)"]
        if any(c % min(cfg.get("groups", 1), c) for c in widths):
            bad += ["groups (must divide each of complex_widths)"]
    return bad


def check_model_config(name: str, cfg: dict, models, check: Optional[Callable] = None,
                       hint: str = "") -> dict:
    """Raise :class:`experiments.durable.ConfigError` naming the bad settings: the generic
    ones, and those ``check(cfg)`` returns (an experiment's own; ``hint`` says their ranges).
    """
    bad = _bad_settings(cfg, models)
    bad += [k for k in (check(cfg) if check is not None else ()) if k not in bad]
    if bad:
        raise durable.ConfigError(
            f"{name} settings {bad} are out of range: widths, counts and sizes are integers "
            f">= 1 (augment >= 0; n_train/n_test null or >= 1), lr/rtol/atol/t1 > 0, model one "
            f"of {list(models)}, dataset 'fashion-mnist' or 'mnist', dtype 'float32' or "
            f"'float64', gradient 'discrete'/'backsolve'/'interpolated', complex_widths three "
            f"non-decreasing integers >= 2{hint}; got "
            f"{ {k: cfg.get(k) for k in bad if k in cfg} }.")
    return cfg


# ------------------------------------------------------------------------------- data
def load_data(cfg):
    """The ``ImageSplit`` of ``cfg``: pixels scaled to [-1, 1] as in the thesis (section 5.3),
    ``n_val`` validation images held out of the training set, optional subsets."""
    loader = load_fashion_mnist if cfg["dataset"] == "fashion-mnist" else load_mnist
    split = loader("all", cfg.get("data_dir"), dtype=np.dtype(cfg["dtype"]), n_train=cfg["n_train"],
                   n_val=cfg["n_val"], n_test=cfg["n_test"], seed=cfg["seed"])
    scaled = []
    for x in (split.x_train, split.x_test, split.x_val):
        x *= 2
        x -= 1
        scaled.append(x)
    return split._replace(x_train=scaled[0], x_test=scaled[1], x_val=scaled[2])


def load_test(cfg, n_test=None):
    """The test images of ``cfg``'s data set only (scaled as :func:`load_data`)."""
    loader = load_fashion_mnist if cfg["dataset"] == "fashion-mnist" else load_mnist
    split = loader("test", cfg.get("data_dir"), dtype=np.dtype(cfg["dtype"]), n_test=n_test,
                   seed=cfg["seed"])
    x = split.x_test
    x *= 2
    x -= 1
    return split._replace(x_test=x)


def data_info(cfg, data) -> dict:
    return {"name": cfg["dataset"], "split_seed": cfg["seed"], "n_train": int(len(data.y_train)),
            "n_val": int(len(data.y_val)), "n_test": int(len(data.y_test)),
            "scaling": "pixels / 255 * 2 - 1 (in [-1, 1])",
            "sha256": durable.array_checksum(data.x_train, data.y_train, data.x_val,
                                             data.y_val, data.x_test, data.y_test)}


# ------------------------------------------------------------------------------- evaluation
def evaluate(model, params, x, y, batch: int, records: Optional[list] = None) -> dict:
    """Mean loss, accuracy and mean forward NFE per batch of the ODE block (0 without one) over
    ``(x, y)`` in batches of ``batch``; ``records`` is the list the model's monitor fills."""
    loss_sum, correct, nfe, calls = 0.0, 0, 0, 0
    for i in range(0, len(y), batch):
        if records is not None:
            records.clear()
        logits, _ = model.forward(params, x[i:i + batch])
        loss, _ = softmax_cross_entropy(logits, y[i:i + batch])
        n = len(y[i:i + batch])
        loss_sum += float(loss) * n
        correct += int(np.sum(np.argmax(logits, axis=1) == y[i:i + batch]))
        for phase, w in (records or ()):
            if phase == "forward":
                nfe += int(w.forward_nfe)
                calls += 1
    if records is not None:
        records.clear()
    return {"loss": loss_sum / len(y), "acc": correct / len(y),
            "nfe_forward": nfe / calls if calls else 0.0}


# ------------------------------------------------------------------------------- training
HIST_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "epoch_time_s", "eval_time_s",
             "nfe_forward", "nfe_backward", "vjps_backward", "nfe_forward_per_batch",
             "nfe_backward_per_batch", "val_nfe_forward_per_batch")
_FLOAT_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "epoch_time_s", "eval_time_s",
               "nfe_forward_per_batch", "nfe_backward_per_batch", "val_nfe_forward_per_batch")
_INT_KEYS = ("nfe_forward", "nfe_backward", "vjps_backward")
UNITS = {
    "train_loss": "nats per example (mean over the epoch's batches)",
    "train_acc": "fraction (during the epoch's steps)", "val_loss": "nats per example",
    "val_acc": "fraction", "epoch_time_s": "s (training steps of the epoch)",
    "eval_time_s": "s (validation after the epoch)",
    "nfe_forward": "function evaluations (ODE block, forward solves, sum over the epoch)",
    "nfe_backward": "function evaluations (ODE block, backward phase, sum over the epoch)",
    "vjps_backward": "field VJPs (ODE block, sum over the epoch)",
    "nfe_forward_per_batch": "function evaluations per training batch (mean)",
    "nfe_backward_per_batch": "function evaluations per training batch (mean)",
    "val_nfe_forward_per_batch": "function evaluations per validation batch (mean)",
    "test_acc": "fraction (parameters of the best validation loss)",
    "test_loss": "nats per example (parameters of the best validation loss)",
    "test_nfe_forward_per_batch": "function evaluations per test batch (mean)",
    "best_epoch": "epoch (1-based)", "epochs_run": "epochs", "stopped_early": "bool",
    "mean_epoch_time_s": "s", "test_time_s": "s", "wall_time_s": "s",
    "params_total": "parameters", "params_fc": "parameters", "params_not_fc": "parameters",
}


#: Optimiser steps between checkpoints inside an epoch (``--checkpoint-every`` overrides).
CHECKPOINT_EVERY = 50


class Loop(NamedTuple):
    """Where training stands: everything a checkpoint holds."""

    params: np.ndarray
    opt_state: object
    rng: np.random.Generator
    epoch: int                 # current epoch (0-based)
    batch: int                 # next batch of the current epoch
    perm: Optional[np.ndarray]
    acc: dict                  # the current epoch's running sums (loss, correct, count, work)
    hist: dict                 # per-epoch metrics of the finished epochs
    stop: dict                 # early stopping: best_val_loss, best_epoch, bad_epochs, stopped
    best_params: np.ndarray
    wall: float                # wall time of earlier sessions


def _new_acc() -> dict:
    return {"loss_sum": 0.0, "correct": 0, "count": 0, "batches": 0, "nfe_forward": 0,
            "nfe_backward": 0, "vjps_backward": 0, "elapsed_s": 0.0}


def make_optimizer(cfg) -> Adam:
    return Adam(lr=cfg["lr"], weight_decay=cfg.get("weight_decay", 0.0))


def fresh(cfg, model, opt, keys: tuple = ()) -> Loop:
    """The loop before the first step (``keys``: the per-epoch keys of :func:`train`'s
    ``record`` hook, kept beside :data:`HIST_KEYS`)."""
    rng = np.random.default_rng(cfg["seed"])
    params = model.init(rng, np.dtype(cfg["dtype"]))
    stop = {"best_val_loss": None, "best_epoch": 0, "bad_epochs": 0, "stopped": False}
    return Loop(params, opt.init_state(params), rng, 0, 0, None, _new_acc(),
                {k: [] for k in HIST_KEYS + tuple(keys)}, stop, params.copy(), 0.0)


def restored(resumed, opt, keys: tuple = ()) -> Loop:
    """The loop of a checkpoint (``keys`` as for :func:`fresh`)."""
    ck = resumed["checkpoint"]
    arrays, pos = ck["arrays"], ck["position"]
    params = arrays["params"]
    return Loop(params, durable.restore_optimizer(opt.init_state(params), arrays, "opt."),
                durable.restore_rng(ck["rng_state"]), pos["epoch"], pos["batch"],
                arrays.get("perm"), pos["acc"], {k: resumed["metrics"][k].tolist()
                                                 for k in HIST_KEYS + tuple(keys)},
                pos["stop"], arrays["best_params"], pos["wall_s"])


def _dtype(key: str):
    """float64 / int64 for the loop's own keys; a record hook's keep NumPy's choice."""
    return np.float64 if key in _FLOAT_KEYS else np.int64 if key in _INT_KEYS else None


def metrics(hist: dict, extra: Optional[dict] = None) -> dict:
    out = {k: np.asarray(v, dtype=_dtype(k)) for k, v in hist.items()}
    out.update(extra or {})
    return out


def _checkpoint(loop: Loop, cfg, n_batches: int, session_start: float) -> dict:
    arrays = {"params": loop.params, "best_params": loop.best_params,
              **durable.optimizer_arrays("opt.", loop.opt_state)}
    if loop.perm is not None:
        arrays["perm"] = loop.perm
    where = (f"epoch {loop.epoch + 1}/{cfg['epochs']}, batch {loop.batch}/{n_batches}"
             if loop.batch else f"start of epoch {loop.epoch + 1}/{cfg['epochs']}")
    if loop.stop["stopped"]:
        where = f"stopped early after epoch {loop.epoch}"
    position = {"epoch": loop.epoch, "batch": loop.batch, "acc": loop.acc, "stop": loop.stop,
                "wall_s": loop.wall + time.perf_counter() - session_start, "where": where}
    return {"arrays": arrays, "position": position, "rng_state": durable.rng_state(loop.rng),
            "metrics": metrics(loop.hist), "units": UNITS}


def final_checkpoint(loop: Loop) -> dict:
    """The finished run's ``checkpoint/`` group: ``params`` are the best-validation parameters
    (those tested), ``last_params`` the parameters after the last epoch."""
    return {"arrays": {"params": loop.best_params, "last_params": loop.params,
                       **durable.optimizer_arrays("opt.", loop.opt_state)},
            "position": {"epoch": loop.epoch, "batch": 0, "where": "finished",
                         "stop": loop.stop},
            "rng_state": durable.rng_state(loop.rng)}


def learning_rate(cfg, epoch: int, batch: int, n_batches: int) -> float:
    """The step's learning rate: ``lr`` throughout (``lr_schedule="constant"``), or cosine
    annealing from ``lr`` to 0 over all ``epochs * n_batches`` steps (``"cosine"``)."""
    if cfg.get("lr_schedule", "constant") == "constant":
        return cfg["lr"]
    step, total = epoch * n_batches + batch, cfg["epochs"] * n_batches
    return cfg["lr"] * 0.5 * (1.0 + math.cos(math.pi * step / total))


def _step(model, opt, loop: Loop, x, y, records, epoch: int, lr: float) -> Loop:
    # a model that draws random numbers (stochastic depth) takes them from the loop's
    # generator, which the checkpoints hold, so a resumed run draws the same gates
    context = {"rng": loop.rng} if getattr(model, "needs_rng", False) else {}
    logits, cache = model.forward(loop.params, x, **context)
    loss, g_logits = softmax_cross_entropy(logits, y)
    _, grad = model.vjp(loop.params, cache, g_logits)
    params, state = opt.step(loop.params, grad, loop.opt_state, lr=lr)
    loss = check_loss(float(loss), f"epoch {epoch + 1}",
                      "lower the learning rate (--set lr=...) or the tolerances")
    acc = dict(loop.acc)
    acc["loss_sum"] += loss * len(y)
    acc["correct"] += int(np.sum(np.argmax(logits, axis=1) == y))
    acc["count"] += len(y)
    acc["batches"] += 1
    for phase, w in records:
        if phase == "forward":
            acc["nfe_forward"] += int(w.forward_nfe)
        else:
            acc["nfe_backward"] += int(w.backward_nfe)
            acc["vjps_backward"] += int(w.vjps)
    records.clear()
    return loop._replace(params=params, opt_state=state, acc=acc, batch=loop.batch + 1)


def _end_epoch(loop: Loop, cfg, model, data, records, record=None) -> Loop:
    start = time.perf_counter()
    val = evaluate(model, loop.params, data.x_val, data.y_val, cfg["eval_batch"], records)
    a = loop.acc
    hist = {k: list(v) for k, v in loop.hist.items()}
    hist["train_loss"].append(a["loss_sum"] / a["count"])
    hist["train_acc"].append(a["correct"] / a["count"])
    hist["val_loss"].append(val["loss"])
    hist["val_acc"].append(val["acc"])
    hist["epoch_time_s"].append(a["elapsed_s"])
    for key in ("nfe_forward", "nfe_backward", "vjps_backward"):
        hist[key].append(a[key])
    hist["nfe_forward_per_batch"].append(a["nfe_forward"] / a["batches"])
    hist["nfe_backward_per_batch"].append(a["nfe_backward"] / a["batches"])
    hist["val_nfe_forward_per_batch"].append(val["nfe_forward"])
    for key, value in (record(loop._replace(hist=hist)) if record is not None else {}).items():
        hist[key].append(value)
    stop = dict(loop.stop)
    best = loop.best_params
    if stop["best_val_loss"] is None or val["loss"] < stop["best_val_loss"]:
        stop.update(best_val_loss=val["loss"], best_epoch=loop.epoch + 1, bad_epochs=0)
        best = loop.params.copy()
    else:
        stop["bad_epochs"] += 1
        stop["stopped"] = stop["bad_epochs"] >= cfg["patience"]
    hist["eval_time_s"].append(time.perf_counter() - start)
    return loop._replace(epoch=loop.epoch + 1, batch=0, perm=None, acc=_new_acc(), hist=hist,
                         stop=stop, best_params=best)


def _epoch_line(loop: Loop, cfg, name: str) -> str:
    h = loop.hist
    s = loop.stop
    return (f"{name} epoch {loop.epoch:3d}/{cfg['epochs']}  loss {h['train_loss'][-1]:.4f}  "
            f"train {h['train_acc'][-1]:.4f}  val loss {h['val_loss'][-1]:.4f} acc "
            f"{h['val_acc'][-1]:.4f}  NFE f/b per batch {h['nfe_forward_per_batch'][-1]:.1f}/"
            f"{h['nfe_backward_per_batch'][-1]:.1f}  {h['epoch_time_s'][-1]:.1f}s + "
            f"{h['eval_time_s'][-1]:.1f}s eval  (best epoch {s['best_epoch']}, "
            f"{s['bad_epochs']}/{cfg['patience']} without improvement)")


def train(run, cfg, model, opt, loop: Loop, data, records: list, name: str, *,
          models: Optional[Callable] = None, record: Optional[Callable] = None) -> Loop:
    """Epochs from ``loop`` until ``cfg["epochs"]`` or early stopping, checkpointing through
    :func:`durable.after_step` (``records``: the list the model's monitor appends to).

    Hooks (all optional): ``models(epoch) -> (training model, evaluation model)`` replaces
    ``model`` (used for both) per epoch (0-based): a phase switch, or a stochastic training
    model beside its deterministic evaluation model, all of one parameter layout. The training
    model gets the loop's generator as ``rng=`` when it ``needs_rng``. ``record(loop) ->
    {key: value}`` after each epoch's validation (``loop``: the epoch's final state, epoch
    0-based, its history holding the epoch's metrics) appends per-epoch values to the history
    (keys passed to :func:`fresh` and :func:`restored`)."""
    models = models or (lambda epoch: (model, model))
    x_train, y_train = data.x_train, data.y_train
    n_batches = max(1, len(y_train) // cfg["batch"])
    session_start = time.perf_counter()
    since = 0
    quiet = run.options.quiet
    bar = progress_bar(cfg["epochs"] * n_batches, name, quiet,
                       initial=loop.epoch * n_batches + loop.batch, unit="step")
    with bar:
        while loop.epoch < cfg["epochs"] and not loop.stop["stopped"]:
            model, eval_model = models(loop.epoch)
            if loop.perm is None:
                loop = loop._replace(perm=loop.rng.permutation(len(y_train)))
            batches = np.array_split(loop.perm, n_batches)
            while loop.batch < n_batches:
                start = time.perf_counter()
                idx = batches[loop.batch]
                records.clear()
                lr = learning_rate(cfg, loop.epoch, loop.batch, n_batches)
                loop = _step(model, opt, loop, x_train[idx], y_train[idx], records, loop.epoch,
                             lr)
                acc = dict(loop.acc, elapsed_s=loop.acc["elapsed_s"] + time.perf_counter()
                           - start)
                loop = loop._replace(acc=acc)
                bar.update(1)
                bar.set_postfix_str(f"loss {acc['loss_sum'] / acc['count']:.3f}  NFE f/b "
                                    f"{acc['nfe_forward']}/{acc['nfe_backward']}")
                if loop.batch < n_batches:
                    since = durable.after_step(run, since + 1, lambda loop=loop: _checkpoint(
                        loop, cfg, n_batches, session_start), default_every=CHECKPOINT_EVERY)
            loop = _end_epoch(loop, cfg, eval_model, data, records, record)
            log(_epoch_line(loop, cfg, name), quiet)
            since = durable.after_step(run, since + 1, lambda loop=loop: _checkpoint(
                loop, cfg, n_batches, session_start), force=True)
    return loop._replace(wall=loop.wall + time.perf_counter() - session_start)


# ------------------------------------------------------------------------------- a whole run
class Trained(NamedTuple):
    """What :func:`trained_run` yields: the claimed run, the model schedule, the trained loop,
    the test result of the tested parameters (:func:`evaluate`'s dict) and the summary
    metrics (:func:`summary`)."""

    run: durable.Run
    schedule: Callable
    loop: Loop
    test: dict
    summary: dict


def summary(loop: Loop, test: dict, test_time: float) -> dict:
    """Per-run metrics of a trained loop (units in :data:`UNITS`)."""
    return {"test_acc": test["acc"], "test_loss": test["loss"],
            "test_nfe_forward_per_batch": test["nfe_forward"],
            "best_epoch": loop.stop["best_epoch"], "epochs_run": loop.epoch,
            "stopped_early": bool(loop.stop["stopped"]),
            "mean_epoch_time_s": float(np.mean(loop.hist["epoch_time_s"])),
            "test_time_s": test_time, "wall_time_s": loop.wall + test_time}


@contextlib.contextmanager
def trained_run(name: str, cfg: dict, out, options, plot_modules: dict, models: Callable, *,
                keys: tuple = (), record: Optional[Callable] = None, tested: str = "best"):
    """Check, load the data, claim, train (or resume) and test one image-classifier run; yields
    :class:`Trained` inside the claim, for the caller to :func:`durable.finish` and plot.

    ``models(cfg, monitor)`` returns ``schedule(epoch) -> (training model, evaluation model)``
    (:func:`train`'s ``models`` hook; ``monitor(phase, work)`` is for the ODE blocks). The test
    set is evaluated with the last epoch's evaluation model and the parameters of the best
    validation loss (``tested="best"``) or of the last epoch (``"last"``). ``keys`` and
    ``record(cfg, loop, data, schedule) -> {key: value}``: :func:`train`'s per-epoch hook.
    """
    options = options or durable.RunOptions()
    durable.check_out_dir(out)
    if options.plot:
        durable.check_modules(plot_modules, f"{name}'s figure", "--no-plot")
    data = load_data(cfg)
    with durable.claim(name, cfg, out, options, plot_modules, data_info(cfg, data),
                       checkpoints=True) as rn:
        records = []
        schedule = models(cfg, lambda phase, work: records.append((phase, work)))
        hook = None if record is None else (lambda lp: record(cfg, lp, data, schedule))
        opt = make_optimizer(cfg)
        loop = fresh(cfg, schedule(0)[0], opt, keys) if rn.resumed is None else restored(
            rn.resumed, opt, keys)
        loop = train(rn, cfg, None, opt, loop, data, records, cfg["model"], models=schedule,
                     record=hook)
        start = time.perf_counter()
        params = loop.best_params if tested == "best" else loop.params
        test = evaluate(schedule(max(loop.epoch - 1, 0))[1], params, data.x_test, data.y_test,
                        cfg["eval_batch"], records)
        yield Trained(rn, schedule, loop, test, summary(loop, test, time.perf_counter() - start))


def plot_curves(ax_loss, ax_acc, hist: dict, test_acc: float, paper_acc: Optional[float],
                source: str, best_epoch: Optional[int] = None,
                titles: tuple = ("(a) loss", "(b) accuracy")) -> None:
    """Loss and accuracy by epoch (training, validation) with the test accuracy, ours and the
    paper's (``paper_acc`` a fraction, None: not drawn; ``source`` names it), on two axes;
    ``best_epoch`` (1-based) marks the best validation loss."""
    epochs = np.arange(1, len(hist["train_loss"]) + 1)
    ax_loss.plot(epochs, hist["train_loss"], marker="o", label="train")
    ax_loss.plot(epochs, hist["val_loss"], marker="s", label="validation")
    if best_epoch is not None:
        ax_loss.axvline(best_epoch, color="0.6", ls=":", label="best validation loss")
    ax_loss.set(xlabel="epoch", ylabel="loss (nats per example)", title=titles[0])
    ax_acc.plot(epochs, hist["train_acc"], marker="o", label="train")
    ax_acc.plot(epochs, hist["val_acc"], marker="s", label="validation")
    ax_acc.axhline(test_acc, color="C2", ls="--", label=f"test (ours) {100 * test_acc:.2f}%")
    if paper_acc is not None:
        ax_acc.axhline(paper_acc, color="C3", ls=":",
                       label=f"test ({source}) {100 * paper_acc:.2f}%")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title=titles[1])
