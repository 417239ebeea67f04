"""Seed 000 (He, Xie & Lin, *Neural ODEs with Evolutionary Weights*), section 4.2: a neural ODE
(NODE) and the same network with evolutionary weights (NODE-EW) on MNIST, trained with the
paper's strategy (its section 3.2.2): backpropagation through fixed Euler steps first, then
fine-tuning with the continuous adjoint.

Models (``--set model=node|node_ew``), ``C = width``, ``downsample = 4`` (two stride-2
convolutions, as the paper's "downsamples the input twice"; 2: one, to 14 x 14; 1: none)::

    Conv2d(1, C/2, 3x3, stride 2, pad 1) -> GroupNorm -> ReLU                       (28 -> 14)
    -> Conv2d(C/2, C, 3x3, stride 2, pad 1) -> GroupNorm -> ReLU                    (14 -> 7)
    -> ODEBlock on [0, t1]:  x' = f(x, theta(t)),  f = [Conv2d(C, C, 3x3, pad 1),
                             GroupNorm(groups, C), ReLU],  theta = f's weights
    -> Flatten -> Linear(49 C, 10)

``node``: ``theta`` constant (a plain :class:`~nets.ODEBlock` of ``f``). ``node_ew``: ``theta``
follows the weight ODE ``theta' = g(theta, theta1)`` from ``theta(0) = theta0``, coupled to the
state ODE (:class:`~nets.CoupledField`; block parameters ``[theta0, theta1]``) and integrated
by the same solver; both phases' gradients include the coupling term the paper's eq. (5)
omits (see :mod:`nets.node_ew`).

The weight ODE ``g``. The paper does not give the MNIST ``g`` (its figure of the network is in
the supplementary material, not available); the only ``g``-like network it specifies is the
two-layer network of its Theorem 1 experiment. A dense ``Linear(n_theta, n_theta)`` on the
``n_theta = 9 C^2 + 3 C`` weights of ``f`` (9,312 at C = 32: 87 M parameters) is out of reach
here, so ``g`` is a two-layer network through a rank-``r`` bottleneck with an element-wise
output gain::

    g(theta) = s * (W2 tanh(W1 theta + b1) + b2),   W1: r x n_theta, W2: n_theta x r,
                                                   s in R^n_theta initialised to 0,

``(2 r + 2) n_theta + r`` parameters (``rank`` r = 4: 93,124 at C = 32, beside the NODE's
29,898) and ``O(r n_theta)`` work per evaluation, negligible beside the convolution. ``s = 0``
at the start makes NODE-EW start as exactly the NODE of the same ``theta0`` (the weights begin
to evolve as training moves ``s``); the bottleneck lets all weights move along ``r`` shared
directions that depend on the current weights, the gain scales each weight's motion.

Training (``_image``'s loop with a per-epoch model): epochs ``0 .. bp_epochs-1`` (phase 0)
backpropagate through ``euler_steps`` forward-Euler steps (``gradient="discrete"``: the exact
gradient of the discrete map, a ResNet of shared, or evolving, weights); the remaining epochs
(phase 1) solve with ``solver`` (Dopri5 at ``rtol``/``atol``, or fixed ``steps``) and take the
continuous adjoint (``gradient``, default ``"backsolve"``: Algorithm 1, corrected). Validation
after each epoch uses that epoch's solver; in phase 0 the epoch's parameters are also validated
under the fine-tuning solver (``val_acc_adjoint_solver``, equal to ``val_acc`` in phase 1: does
the Euler-trained network work as an ODE?). Adam, one cosine-annealed learning rate over both
phases (the paper: rates 0.01 then 0.001), no early stopping (the paper trains fixed epochs);
the test set is evaluated at the end with the last parameters and the fine-tuning solver.
Recorded per epoch: ``phase``, losses, accuracies, times, forward/backward NFE and field VJPs
of the ODE block (Euler phase: ``euler_steps`` forward NFE, no backward NFE and ``euler_steps``
VJPs per batch; adjoint phase: the backward solve's augmented evaluations), the relative
weight change ``|theta(t1) - theta0| / |theta0|`` (``theta_change``; 0 for NODE). The paper's
numbers are stored beside ours (``test_acc``'s attributes, table ``paper_results``).

Paper (300 epochs, learning rate 0.1 divided by 10 every 100; downsampling twice, then the ODE
block of Chen et al.): test error 0.38% (NODE), 0.35% (NODE-EW); Table 1 (NODE-EW, 10 Euler
steps, 80 + 80 epochs): mean test accuracy over the last 80 epochs 99.65% for BP + adjoint vs
99.57% for pure adjoint, 62.54 s vs 89.76 s per epoch (23.18 s in the Euler epochs).
``--set bp_epochs=0`` is the pure-adjoint column.

Scale (2 shared CPU cores, one BLAS thread per run): width 32 on 7 x 7 maps (the paper, after
Chen et al.: 64), 4 Euler steps (the paper: 10), 5 Euler + 2 adjoint epochs (the paper: 80 +
80), batches of 64, learning rate 3e-3 cosine-annealed to 0 over all epochs, 55,000 training /
5,000 validation images, float32; Dopri5 at rtol = atol = 1e-3 with the backsolve adjoint in
phase 1. Measured on this machine (seed 0, 2 cores shared with 3-5 other jobs,
``OPENBLAS_NUM_THREADS=1``; times vary 2x with the load): NODE: Euler epochs 24.5-53 s of
training (28-61 ms per step of 64), adjoint epochs 135-265 s (20 forward + 20 backward NFE per
batch, 0.16-0.31 s per step), 4-14 s of validation per epoch (both solvers in phase 0), 7.5 s
of test: 11.6 min in all under load, about 7 min on an idle core; validation accuracy 98.04%
after the first epoch, 98.72% after the Euler phase, 98.98% after the adjoint phase; test
accuracy 99.16% (test error 0.84%; paper 0.38% after 300 epochs). NODE-EW (under a lighter
load): Euler epochs 26-36 s, adjoint epochs 166 s (25 forward NFE per batch: the coupled state
makes Dopri5 reject some steps; 20 backward), 8.9 min in all; validation 98.58% after the
Euler phase, 98.82% at the end; test accuracy 99.08% (error 0.92%; paper 0.35%); the weights
change by 115% of their norm over [0, 1] (``theta_change``).

Quick mode (the test suite): width 4, rank 2, 2 Euler steps, 1 + 1 epochs of 128 images, RK4
with 2 steps in the adjoint phase: seconds.

Writes ``node_ew_mnist[_quick]-HASH-seedN.h5`` and ``.png``; durable like
``thesis_efficiency``: a checkpoint every 50 optimiser steps and after every epoch, ``--resume``
continues bitwise (the phase is a function of the epoch).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from adjointcore.layers import Conv2d, Flatten, GroupNorm, Linear, ReLU, Scale, Sequential, Tanh
from nets import CoupledField, ODEBlock

from . import _image, durable
from ._plotting import PLOT_MODULES, caption, draw, integer_ticks, new_figure, save_figure
from ._progress import log

__all__ = ["run", "make_config", "build_schedule", "QUICK", "FULL",
           "COMMON", "PAPER", "MODELS"]

NAME = "node_ew_mnist"
MODELS = ("node", "node_ew")
#: Full mode (module notes). Do not change casually: these define the runs' identities.
FULL = {"model": "node", "width": 32, "groups": 4, "downsample": 4, "rank": 4,
        "euler_steps": 4, "bp_epochs": 5, "epochs": 7, "batch": 64, "lr": 3e-3,
        "n_train": None, "n_val": 5000, "n_test": None, "eval_batch": 500, "solver": "dopri5",
        "steps": None}
#: Quick mode: seconds (the test suite).
QUICK = {"model": "node", "width": 4, "groups": 2, "downsample": 4, "rank": 2,
         "euler_steps": 2, "bp_epochs": 1, "epochs": 2, "batch": 32, "lr": 3e-3,
         "n_train": 128, "n_val": 64, "n_test": 64, "eval_batch": 64, "solver": "rk4",
         "steps": 2}
#: Shared settings (``solver``/``steps``/``rtol``/``atol``/``gradient``: the adjoint phase).
COMMON = {"rtol": 1e-3, "atol": 1e-3, "gradient": "backsolve", "t1": 1.0,
          "lr_schedule": "cosine", "patience": 1000, "weight_decay": 0.0, "dtype": "float32",
          "dataset": "mnist", "data_dir": None, "optimizer": "adam",
          "loss": "softmax_cross_entropy"}
#: He, Xie & Lin, section 4.2 and Table 1.
PAPER = {"node": {"test_error_percent": 0.38}, "node_ew": {"test_error_percent": 0.35}}
PAPER_TABLE_1 = [
    {"training": "adjoint", "mean_test_acc_percent": 99.57, "mean_train_acc_percent": 99.97,
     "time_per_epoch_s": 89.76},
    {"training": "bp+adjoint", "mean_test_acc_percent": 99.65,
     "mean_train_acc_percent": 99.98, "time_per_epoch_s": 62.54}]
KEYS = ("phase", "val_acc_adjoint_solver", "val_loss_adjoint_solver", "theta_change")
UNITS = {**_image.UNITS, "phase": "0: backpropagation through Euler steps, 1: adjoint",
         "val_acc_adjoint_solver": "fraction (the epoch's parameters under the adjoint "
                                   "phase's solver: val_acc in phase 1)",
         "val_loss_adjoint_solver": "nats per example (as val_acc_adjoint_solver)",
         "theta_change": "|theta(t1) - theta0| / |theta0| of the epoch's solver (0: NODE)"}
_HINT = ("; rank, euler_steps >= 1, 0 <= bp_epochs <= epochs, steps null or >= 1, solver a "
         "Runge-Kutta method of the solvers package, downsample 1, 2 or 4, groups dividing "
         "width (and width / 2 when downsample is 4)")


def _bad(cfg) -> list:
    bad = [k for k in ("rank", "euler_steps") if not isinstance(cfg[k], int) or cfg[k] < 1]
    if cfg["downsample"] not in (1, 2, 4):
        bad.append("downsample")
    elif any(c < 1 or c % cfg["groups"] for c in _stem_widths(cfg)):
        bad.append("groups")
    if not (isinstance(cfg["bp_epochs"], int) and 0 <= cfg["bp_epochs"] <= cfg["epochs"]):
        bad.append("bp_epochs")
    if cfg["steps"] is not None and (not isinstance(cfg["steps"], int) or cfg["steps"] < 1):
        bad.append("steps")
    if not _solver_ok(cfg):
        bad.append("solver")
    return bad


def _solver_ok(cfg) -> bool:
    try:
        ODEBlock(Conv2d(1, 1, 1), method=cfg["solver"], steps=cfg["steps"], rtol=cfg["rtol"],
                 atol=cfg["atol"], gradient=cfg["gradient"])
    except (ValueError, TypeError, KeyError):
        return False
    return True


def make_config(quick: bool = False, seed: int = 0, overrides: Optional[dict] = None) -> dict:
    """The full configuration: mode defaults, shared settings, ``--set`` overrides (checked).

    Raises
    ------
    experiments.durable.ConfigError
        An unknown key, a value of the wrong type, or a value out of range.
    """
    return _image.image_config(NAME, (FULL, QUICK, COMMON), quick, seed, overrides,
                               models=MODELS, check=_bad, hint=_HINT)


# ------------------------------------------------------------------------------- the model
def _field(cfg):
    c, size = cfg["width"], _image.image_size(cfg)
    f = Sequential(Conv2d(c, c, 3, padding=1), GroupNorm(cfg["groups"], c), ReLU())
    if cfg["model"] == "node":
        return f
    n, r = f.n_params, cfg["rank"]
    g = Sequential(Linear(n, r), Tanh(), Linear(r, n), Scale(n, init_value=0.0))
    return CoupledField(f, g, (None, c, size, size))     # the batch varies: left free


def _stem_widths(cfg) -> list:
    """Channels after each stem convolution: ``log2(downsample)`` stride-2 convolutions (one
    stride-1 convolution for ``downsample=1``) doubling up to ``width``."""
    n = max(1, int(cfg["downsample"]).bit_length() - 1)
    return [cfg["width"] >> (n - 1 - i) for i in range(n)]


def _network(cfg, block) -> Sequential:
    size, g, stride = _image.image_size(cfg), cfg["groups"], 1 if cfg["downsample"] == 1 else 2
    stem, prev = [], 1
    for c in _stem_widths(cfg):
        stem += [Conv2d(prev, c, 3, stride=stride, padding=1), GroupNorm(g, c), ReLU()]
        prev = c
    return Sequential(*stem, block, Flatten(), Linear(prev * size * size, 10))


def build_schedule(cfg, monitor=None):
    """``schedule(epoch) -> (model, model)``: the Euler/discrete network before ``bp_epochs``,
    the adjoint network after (one field, one parameter layout, one ``monitor``)."""
    euler = ODEBlock(_field(cfg), t_span=(0.0, cfg["t1"]), method="euler",
                     steps=cfg["euler_steps"], gradient="discrete", monitor=monitor)
    adjoint = euler.with_config(method=cfg["solver"], steps=cfg["steps"], rtol=cfg["rtol"],
                                atol=cfg["atol"], gradient=cfg["gradient"])
    nets = (_network(cfg, euler), _network(cfg, adjoint))
    return lambda epoch: (nets[_phase(cfg, epoch)],) * 2


def _phase(cfg, epoch: int) -> int:
    return int(epoch >= cfg["bp_epochs"])


def theta_change(model, params) -> float:
    """``|theta(t1) - theta0| / |theta0|`` of ``model``'s ODE block (0 without a weight ODE):
    one solve of a single zero image (``theta`` does not depend on the image)."""
    i = next(i for i, layer in enumerate(model.layers) if isinstance(layer, ODEBlock))
    stem, block = Sequential(*model.layers[:i]), model.layers[i]
    field = block.field_layer
    if not isinstance(field, CoupledField):
        return 0.0
    offsets = np.cumsum([0] + [layer.n_params for layer in model.layers])
    p_block = params[offsets[i]:offsets[i + 1]]
    x = stem.forward(params[:offsets[i]], np.zeros((1, 1, 28, 28), dtype=params.dtype))[0]
    _, cache = block.forward(p_block, x)
    theta0, theta1 = p_block[:field.n_state_params], field.unpack(cache.sweep.ys[0])[1]
    return float(np.linalg.norm(theta1 - theta0) / np.linalg.norm(theta0))


def _weight_ode_params(model) -> int:
    """Length of ``theta1`` (0 for NODE)."""
    block = next(layer for layer in model.layers if isinstance(layer, ODEBlock))
    return block.n_params - block.n_state_params if block.n_state_params else 0


def _record(cfg, loop, data, schedule) -> dict:
    """The per-epoch hook: phase, the phase-0 network under the adjoint solver, weight change."""
    phase = _phase(cfg, loop.epoch)
    ev = {"loss": loop.hist["val_loss"][-1], "acc": loop.hist["val_acc"][-1]}
    if phase == 0:
        ev = _image.evaluate(schedule(cfg["epochs"])[1], loop.params, data.x_val, data.y_val,
                             cfg["eval_batch"])
    return {"phase": phase, "val_acc_adjoint_solver": ev["acc"],
            "val_loss_adjoint_solver": ev["loss"],
            "theta_change": theta_change(schedule(loop.epoch)[1], loop.params)}


def _shade_phases(ax, phases) -> None:
    """Grey background over the adjoint phase's epochs."""
    phases = np.asarray(phases)
    if np.any(phases == 1):
        first = int(np.argmax(phases == 1)) + 1
        ax.axvspan(first - 0.5, len(phases) + 0.5, color="0.92", zorder=0)


# ------------------------------------------------------------------------------- the run
def run(quick: bool = False, out: str = "results", seed: int = 0, *,
        overrides: Optional[dict] = None, options: Optional[durable.RunOptions] = None) -> int:
    """NODE-EW section 4.2: NODE vs NODE-EW on MNIST, Euler backpropagation then adjoint."""
    options = options or durable.RunOptions()
    cfg = make_config(quick, seed, overrides)
    with _image.trained_run(NAME, cfg, out, options, PLOT_MODULES, build_schedule, keys=KEYS,
                            record=_record, tested="last") as done:
        loop, test = done.loop, done.test
        model = done.schedule(0)[0]
        paper = PAPER[cfg["model"]]["test_error_percent"]
        extra = {**done.summary, "test_error_percent": 100 * (1 - test["acc"]),
                 "params_total": int(model.n_params),
                 "params_weight_ode": int(_weight_ode_params(model))}
        attrs = {"test_acc": {"paper_test_error_percent": paper,
                              "paper_test_acc_percent": 100 - paper,
                              "paper_source": "He, Xie & Lin 2019, section 4.2 (MNIST, 300 "
                                              "epochs)"}}
        tables = {"paper_results": [{"model": k, "paper_test_error_percent": v[
            "test_error_percent"]} for k, v in PAPER.items()],
                  "paper_table_1": PAPER_TABLE_1,
                  "summary": [{"model": cfg["model"], "test_error_percent":
                               extra["test_error_percent"], "paper_test_error_percent": paper,
                               "test_loss": test["loss"], "params": extra["params_total"],
                               "epochs_run": loop.epoch, "bp_epochs": cfg["bp_epochs"],
                               "mean_epoch_time_s": extra["mean_epoch_time_s"]}]}
        path = durable.finish(done.run, _image.metrics(loop.hist, extra), tables=tables,
                              units={**UNITS, "test_error_percent": "%", "params_weight_ode":
                                     "parameters (theta1)"}, metric_attrs=attrs,
                              checkpoint=_image.final_checkpoint(loop))
        log(f"{cfg['model']}: test error {extra['test_error_percent']:.2f}% (paper {paper:.2f}%)"
            f", loss {test['loss']:.4f}; wrote {path}", False)
        return draw(options, lambda: _plot(loop.hist, extra, path.with_suffix(".png"), cfg,
                                            done.run.id.stem))


def _plot(hist, extra, path, cfg, stem):
    fig = new_figure((11, 7.2))
    (ax1, ax2), (ax3, ax4) = fig.subplots(2, 2)
    epochs = np.arange(1, len(hist["train_loss"]) + 1)
    paper = PAPER[cfg["model"]]["test_error_percent"]
    _image.plot_curves(ax1, ax2, hist, extra["test_acc"], 1 - paper / 100, "paper")
    ax2.plot(epochs, hist["val_acc_adjoint_solver"], marker="^", ls="--",
             label=f"validation under {cfg['solver']}")
    ax3.plot(epochs, hist["nfe_forward_per_batch"], marker="o", label="forward NFE")
    ax3.plot(epochs, hist["nfe_backward_per_batch"], marker="s", label="backward NFE")
    ax3.plot(epochs, np.asarray(hist["vjps_backward"]) / _batches(hist), marker="x", ls=":",
             label="field VJPs")
    ax3.set(xlabel="epoch", ylabel="per training batch (mean)", title="(c) ODE block work")
    ax4.bar(epochs, hist["epoch_time_s"], color=["C0" if p == 0 else "C1"
                                                 for p in hist["phase"]])
    ax4b = ax4.twinx()
    ax4b.plot(epochs, hist["theta_change"], color="C2", marker="o")
    ax4b.set_ylabel("|theta(t1) - theta0| / |theta0|", color="C2")
    ax4.set(xlabel="epoch", ylabel="training time (s; blue: Euler, orange: adjoint)",
            title="(d) epoch time and weight evolution")
    for ax in (ax1, ax2, ax3, ax4):
        _shade_phases(ax, hist["phase"])
        integer_ticks(ax.xaxis)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"{cfg['model']} on {cfg['dataset']}: test error "
                 f"{extra['test_error_percent']:.2f}% (paper {paper:.2f}% after 300 epochs); "
                 f"{cfg['bp_epochs']} Euler-BP + {cfg['epochs'] - cfg['bp_epochs']} adjoint "
                 f"epochs; {extra['params_total']:,} parameters", fontsize=10)
    keys = ("model", "width", "rank", "downsample", "euler_steps", "bp_epochs", "epochs",
            "solver", "steps", "rtol", "atol", "gradient", "batch", "lr", "lr_schedule",
            "n_train", "n_val", "n_test", "dtype", "seed", "quick")
    lines = caption(fig, stem, cfg, keys)
    save_figure(fig, path, caption_lines=lines)
    return path


def _batches(hist) -> np.ndarray:
    """Training batches per epoch (forward NFE sum / mean per batch)."""
    return np.asarray(hist["nfe_forward"]) / np.asarray(hist["nfe_forward_per_batch"])
