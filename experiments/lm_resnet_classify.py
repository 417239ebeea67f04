"""Seed 002 (Lu, Zhong, Li & Dong, *Beyond Finite Layer Neural Networks*), sections 2.2 and 3.2:
LM-ResNet vs ResNet of equal depth, with and without stochastic depth, on FashionMNIST
(``--set dataset=mnist`` for MNIST).

Models (``--set model=...``): ``resnet``, ``lm_resnet`` (:class:`~nets.ResNetStack`,
:class:`~nets.LMStack`: ``u_{n+1} = (1 - k_n) u_n + k_n u_{n-1} + f_n(u_n)`` with a trainable
``k_n`` per block after each stage's first, initialised from U[-0.1, 0] as in the paper), and
``resnet_sd``, ``lm_resnet_sd``: the same trained with stochastic depth (the residual branch
``f_n`` of block ``n`` of ``N`` survives with ``p_n = 1 - (n + 1)/N (1 - survival_last)``
counted over the whole network, Huang et al.'s linear rule; a dropped block is not evaluated;
evaluation scales ``f_n`` by ``p_n``, the expected value, the SDE's drift; for the LM stack only
``f_n`` is gated, the paper's section 3.2). ``C = width``, ``d = downsample``, ``blocks = [N_1,
N_2, ...]``::

    Conv2d(1, C, d x d, stride d)                                         (28 -> 28/d)
    stage i (width C 2^i): stack of N_i pre-activation blocks
        f_n = [GroupNorm, ReLU, Conv2d 3x3, GroupNorm, ReLU, Conv2d 3x3]   (the paper's block,
              GroupNorm for BatchNorm: stateless, so train and evaluation differ only by the
              gates)
    between stages: GroupNorm -> ReLU -> Conv2d(c, 2c, 2x2, stride 2)    (halves the size)
    GroupNorm -> ReLU -> GlobalAvgPool2d -> Linear(C 2^(S-1), 10)

as the paper's CIFAR networks (a 3x3 conv, stages of residual blocks, global average pooling,
a fully connected classifier), with the stage transitions outside the stacks (an LM stack's
blocks keep the shape, so each stage is one stack, starting with its own Euler step). ResNet
and LM-ResNet have the same blocks; the LM-ResNet has ``sum(N_i - 1)`` more parameters (the
``k_n``). Depth (weighted layers) ``2 sum(N_i) + S + 1``: 19 at the default ``[4, 4]``.

Training: Adam (the paper: SGD with momentum and weight decay 1e-4, 160-500 epochs),
cosine-annealed learning rate, validation after every epoch, test accuracy of the
best-validation parameters (``_image``'s loop; a stochastic-depth model trains with gates drawn
from the loop's generator, which every checkpoint holds, and validates/tests in expectation
mode). Recorded per epoch: losses, accuracies, times, and every learned ``k_n`` (metric ``k``,
epochs x ``sum(N_i - 1)``, in network order; table ``k_final`` gives stage, block and depth of
each); per run: test accuracy and loss, parameter count, the survival probabilities.

The paper's numbers (CIFAR-10/100, ImageNet; none on (Fashion-)MNIST) are stored beside ours
as tables ``paper_table_1`` (CIFAR-10 test error of ResNet and LM-ResNet by depth) and
``paper_table_3`` (with stochastic depth). Comparable is only the *difference* LM-ResNet minus
ResNet at equal depth (CIFAR-10: -0.42 points at depth 20, -0.33 at 32, -0.51 at 44, -0.66 at
56; with stochastic depth at depth 56: -0.41) and the learned ``k_n`` of its Figure 4 (CIFAR-100:
most in (-1, 1), negative and close to -1 towards the end of the network); ``test_acc``'s
attributes give the depth-20 pair, the paper's nearest to ours.

Scale (2 shared CPU cores, one BLAS thread per run): width 16 (32 in stage 2), blocks [4, 4],
2x2 stride-2 stem to 14 x 14, 4 epochs of batches of 64, learning rate 2e-3 cosine-annealed
to 0 (6e-3 trained worse in a one-epoch test), 55,000 training / 5,000 validation images,
float32, survival_last 0.8 (the paper's value for LM-ResNet56). Measured on this machine
(``OPENBLAS_NUM_THREADS=1``, batch 64, 2 cores shared with 3-5 other jobs): a training step
0.12 s (LM-ResNet) / 0.09-0.11 s (ResNet; the stochastic-depth models skip dropped blocks) at
a load of about 3, 0.24 s at a load of 4-6; one epoch of LM-ResNet on FashionMNIST took 203 s
of training and 11 s of validation under the heavier load (test accuracy 81.9% after that one
epoch, cosine-annealed within it). Projected full run: 4 x (100-200 s + 11 s) + test, about 7
min on a quiet core, up to 14 min under load.

Quick mode (the test suite): width 4, blocks [2, 2], 2 epochs of 128 images: seconds.

Writes ``lm_resnet_classify[_quick]-HASH-seedN.h5`` and ``.png``; durable like
``thesis_efficiency`` (a checkpoint every 50 optimiser steps and after every epoch, ``--resume``
continues bitwise, stochastic-depth gates included).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from adjointcore.layers import Conv2d, GlobalAvgPool2d, GroupNorm, Linear, ReLU, Sequential
from nets import LMStack, ResNetStack, linear_survival
from nets.lm_resnet import zero_stable

from . import _image, durable
from ._plotting import PLOT_MODULES, caption, draw, integer_ticks, new_figure, save_figure
from ._progress import log

__all__ = ["run", "make_config", "build_schedule", "k_layout", "QUICK", "FULL", "COMMON",
           "MODELS", "PAPER_TABLE_1", "PAPER_TABLE_3"]

NAME = "lm_resnet_classify"
MODELS = ("resnet", "lm_resnet", "resnet_sd", "lm_resnet_sd")
#: Full mode (module notes). Do not change casually: these define the runs' identities.
FULL = {"model": "lm_resnet", "width": 16, "groups": 4, "downsample": 2, "blocks": [4, 4],
        "epochs": 4, "batch": 64, "lr": 2e-3, "n_train": None, "n_val": 5000, "n_test": None,
        "eval_batch": 500}
#: Quick mode: seconds (the test suite).
QUICK = {"model": "lm_resnet", "width": 4, "groups": 2, "downsample": 2, "blocks": [2, 2],
         "epochs": 2, "batch": 32, "lr": 1e-2, "n_train": 128, "n_val": 64, "n_test": 64,
         "eval_batch": 64}
#: Shared settings (``survival_last``, ``gate_level``: the ``_sd`` models only).
COMMON = {"survival_last": 0.8, "gate_level": "batch", "k_init": [-0.1, 0.0],
          "lr_schedule": "cosine", "patience": 1000, "weight_decay": 0.0, "dtype": "float32",
          "dataset": "fashion-mnist", "data_dir": None, "optimizer": "adam",
          "loss": "softmax_cross_entropy"}
#: Lu et al. Table 1 (CIFAR-10 test error %, ResNet of He et al. 2015b, LM-ResNet pre-act).
PAPER_TABLE_1 = [(20, 8.75, 8.33, "0.27M"), (32, 7.51, 7.18, "0.46M"),
                 (44, 7.17, 6.66, "0.66M"), (56, 6.97, 6.31, "0.85M"),
                 (110, 6.37, 6.16, "1.14M"), (164, 5.46, 5.27, "1.7M")]
#: Lu et al. Table 3 (CIFAR-10 test error %, stochastic depth).
PAPER_TABLE_3 = [("ResNet (Huang et al.)", 56, "SD", 5.66),
                 ("ResNet (their implementation)", 56, "pre-act, SD", 5.55),
                 ("ResNet (Huang et al.)", 110, "SD", 5.25),
                 ("ResNet (Huang et al.)", 1202, "SD", 4.91),
                 ("LM-ResNet", 56, "pre-act, SD", 5.14), ("LM-ResNet", 110, "pre-act, SD", 4.80)]
UNITS = {**_image.UNITS, "k": "LM coefficient k_n (epochs x blocks with a k, network order)",
         "params_total": "parameters", "depth": "weighted layers",
         "survival": "probability that block n's residual branch is kept in training"}
_HINT = ("; blocks a list of integers >= 1 (one stage each; 28 / downsample must halve "
         "len(blocks) - 1 times), groups dividing width, 0 < survival_last <= 1, "
         "gate_level 'batch' or 'sample', k_init [low, high] with -1 < low <= high <= 1")


def _bad(cfg) -> list:
    blocks, bad = cfg["blocks"], []
    if not (blocks and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1
                           for n in blocks)) or _image.image_size(cfg) >> (len(blocks) - 1) < 1:
        bad.append("blocks")
    if cfg["width"] % cfg["groups"]:
        bad.append("groups")
    if not 0 < cfg["survival_last"] <= 1:
        bad.append("survival_last")
    if cfg["gate_level"] not in ("batch", "sample"):
        bad.append("gate_level")
    k = cfg["k_init"]
    if not (len(k) == 2 and all(isinstance(v, (int, float)) for v in k)
            and -1 < k[0] <= k[1] <= 1):
        bad.append("k_init")
    return bad


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
def survival(cfg) -> Optional[np.ndarray]:
    """Survival probability of every block (network order); None without stochastic depth."""
    if not cfg["model"].endswith("_sd"):
        return None
    return linear_survival(sum(cfg["blocks"]), cfg["survival_last"])


def _block(c: int, groups: int) -> Sequential:
    return Sequential(GroupNorm(groups, c), ReLU(), Conv2d(c, c, 3, padding=1),
                      GroupNorm(groups, c), ReLU(), Conv2d(c, c, 3, padding=1))


def _network(cfg, mode: str) -> Sequential:
    c, g, d = cfg["width"], cfg["groups"], cfg["downsample"]
    lm, p = cfg["model"].startswith("lm_"), survival(cfg)
    layers, start = [Conv2d(1, c, d, stride=d)], 0
    for i, n in enumerate(cfg["blocks"]):
        if i:
            layers += [GroupNorm(g, c), ReLU(), Conv2d(c, 2 * c, 2, stride=2)]
            c *= 2
        blocks = [_block(c, g) for _ in range(n)]
        kw = {"survival": None if p is None else p[start:start + n], "mode": mode,
              "gate_level": cfg["gate_level"]}
        layers.append(LMStack(blocks, k_init=tuple(cfg["k_init"]), **kw) if lm
                      else ResNetStack(blocks, **kw))
        start += n
    return Sequential(*layers, GroupNorm(g, c), ReLU(), GlobalAvgPool2d(), Linear(c, 10))


def build_schedule(cfg, monitor=None):
    """``schedule(epoch) -> (training model, evaluation model)``: with stochastic depth the
    training model draws gates (``mode="train"``), the evaluation model scales by ``p_n``."""
    pair = (_network(cfg, "train"), _network(cfg, "eval"))
    return lambda epoch: pair


def k_layout(model) -> list:
    """``(stage, block, depth, slice of params)`` of every ``k_n`` of an LM model (``block``
    counts within the stage, ``depth`` over the network's blocks; both from 0)."""
    rows, offset, depth, stage = [], 0, 0, 0
    for layer in model.layers:
        if isinstance(layer, LMStack):
            start = offset + layer.n_block_params
            rows += [(stage, n, depth + n, slice(start + n - 1, start + n))
                     for n in range(1, len(layer))]
        if isinstance(layer, ResNetStack):
            depth += len(layer)
            stage += 1
        offset += layer.n_params
    return rows


def _record(cfg, loop, data, schedule) -> dict:
    return {"k": [float(loop.params[sl][0]) for *_, sl in k_layout(schedule(0)[0])]}


def depth(cfg) -> int:
    """Weighted layers: stem, two convolutions per block, transitions, classifier."""
    return 2 * sum(cfg["blocks"]) + len(cfg["blocks"]) + 1


# ------------------------------------------------------------------------------- the run
def run(quick: bool = False, out: str = "results", seed: int = 0, *,
        overrides: Optional[dict] = None, options: Optional[durable.RunOptions] = None) -> int:
    """LM-ResNet section 2.2 / 3.2: LM-ResNet vs ResNet, with and without stochastic depth."""
    options = options or durable.RunOptions()
    cfg = make_config(quick, seed, overrides)
    lm = cfg["model"].startswith("lm_")
    with _image.trained_run(NAME, cfg, out, options, PLOT_MODULES, build_schedule,
                            keys=("k",) if lm else (), record=_record if lm else None) as done:
        loop, test = done.loop, done.test
        model = done.schedule(0)[0]
        p = survival(cfg)
        extra = {**done.summary, "params_total": int(model.n_params), "depth": depth(cfg),
                 "survival": np.ones(sum(cfg["blocks"])) if p is None else np.asarray(p)}
        metrics = _image.metrics(loop.hist, extra)
        path = durable.finish(done.run, metrics, tables=_tables(cfg, model, loop, test),
                              units={k: UNITS[k] for k in metrics},
                              metric_attrs=_attrs(), checkpoint=_image.final_checkpoint(loop))
        log(f"{cfg['model']} (depth {extra['depth']}): test accuracy {100 * test['acc']:.2f}%, "
            f"loss {test['loss']:.4f}; wrote {path}", False)
        return draw(options, lambda: _plot(loop.hist, extra, path.with_suffix(".png"), cfg,
                                            model, done.run.id.stem))


def _tables(cfg, model, loop, test) -> dict:
    k_rows = [{"stage": s, "block": n, "depth": dep, "k": float(loop.best_params[sl][0]),
               "zero_stable": bool(zero_stable(loop.best_params[sl])[0])}
              for s, n, dep, sl in k_layout(model)]
    return {
        "paper_table_1": [{"depth": dep, "resnet_error_percent": r, "lm_resnet_error_percent": m,
                           "lm_minus_resnet": round(m - r, 2), "params": n}
                          for dep, r, m, n in PAPER_TABLE_1],
        "paper_table_3": [{"model": m, "depth": dep, "training": t, "error_percent": e}
                          for m, dep, t, e in PAPER_TABLE_3],
        "summary": [{"model": cfg["model"], "dataset": cfg["dataset"], "depth": depth(cfg),
                     "test_acc_percent": 100 * test["acc"], "test_loss": test["loss"],
                     "params": int(model.n_params), "best_epoch": loop.stop["best_epoch"]}],
        **({"k_final": k_rows} if k_rows else {})}


def _attrs() -> dict:
    return {"test_acc": {"paper_dataset": "CIFAR-10 (Lu et al. Table 1)",
                         "paper_depth20_resnet_error_percent": 8.75,
                         "paper_depth20_lm_resnet_error_percent": 8.33,
                         "paper_comparable": "only the LM-ResNet minus ResNet difference at "
                                             "equal depth (tables paper_table_1/3)"},
            "k": {"paper_figure_4": "CIFAR-100 LM-ResNet: most k_n in (-1, 1), negative and "
                                    "close to -1 towards the end of the network"}}


def _plot(hist, extra, path, cfg, model, stem):
    fig = new_figure((11, 7.2))
    (ax1, ax2), (ax3, ax4) = fig.subplots(2, 2)
    epochs = np.arange(1, len(hist["train_loss"]) + 1)
    _image.plot_curves(ax1, ax2, hist, extra["test_acc"], None, "")
    _plot_k(ax3, hist, model, cfg["blocks"])
    ax4.bar(epochs - 0.2, hist["epoch_time_s"], width=0.4, label="training")
    ax4.bar(epochs + 0.2, hist["eval_time_s"], width=0.4, label="validation")
    ax4.set(xlabel="epoch", ylabel="s", title="(d) epoch time")
    for ax in (ax1, ax2, ax4):
        integer_ticks(ax.xaxis)
    for ax in (ax1, ax2, ax3, ax4):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"{cfg['model']} (depth {extra['depth']}) on {cfg['dataset']}: test accuracy "
                 f"{100 * extra['test_acc']:.2f}%, loss {extra['test_loss']:.4f}; "
                 f"{extra['params_total']:,} parameters\n(paper, CIFAR-10, depth 20: test error "
                 f"ResNet 8.75%, LM-ResNet 8.33%; only the difference is comparable)",
                 fontsize=10)
    keys = ("model", "width", "blocks", "downsample", "survival_last", "gate_level", "k_init",
            "epochs", "batch", "lr", "lr_schedule", "n_train", "n_val", "n_test", "dtype",
            "dataset", "seed", "quick")
    lines = caption(fig, stem, cfg, keys)
    save_figure(fig, path, caption_lines=lines)
    return path


def _plot_k(ax, hist, model, blocks) -> None:
    """Learned k_n by depth, one line per epoch (Lu et al. Figure 4)."""
    rows = k_layout(model)
    ax.set(xlabel="block (depth in the network)", ylabel="k_n",
           title="(c) learned k_n by depth (paper Fig. 4)")
    if not rows:
        ax.text(0.5, 0.5, "ResNet: no k_n", ha="center", va="center", transform=ax.transAxes)
        return
    k = np.asarray(hist["k"]).reshape(len(hist["train_loss"]), len(rows))
    stages = np.array([r[0] for r in rows])
    depths = np.array([r[2] for r in rows])
    for e, values in enumerate(k):                 # grey (early) to red (last epoch)
        last = e == len(k) - 1
        style = {"marker": "o" if last else ".",
                 "color": "C3" if last else str(0.8 * (1 - (e + 1) / len(k)))}
        for s in np.unique(stages):                # one line per stage (its own LM stack)
            on = stages == s
            label = f"epoch {e + 1}" if s == stages[0] and (last or e == 0) else None
            ax.plot(depths[on], values[on], label=label, **style)
    ax.axhline(0.0, color="0.6", lw=0.8)
    ax.axhline(-1.0, color="C0", ls=":", lw=0.8, label="k = -1 (zero-stability bound)")
    for end in np.cumsum(blocks)[:-1]:                       # stage boundaries
        ax.axvline(end - 0.5, color="0.8", ls="--", lw=0.8)
    integer_ticks(ax.xaxis)
