"""The figures of :mod:`experiments.cnf2d`.

:func:`_plot` draws one figure per trace the models were trained with: ``STEM.png`` for the
first (the exact trace by default) and ``STEM.TRACE.png`` for the others. Each has a row per
data set: the training data, the learned densities and the inverse-solve samples of each model,
and the held-out NLL against epoch of all trainings with the level of one fitted Gaussian (and
the true density's, where known). :data:`STYLES`: a line style per model and trace.
"""
from __future__ import annotations

import numpy as np

from ._cnf2d_model import MODEL_LABELS
from ._plotting import caption, new_figure, save_figure

STYLES = {("node", "exact"): {"color": "C0", "ls": "-", "lw": 1.2},
          ("node_ew", "exact"): {"color": "C3", "ls": "-", "lw": 1.2},
          ("node", "hutchinson"): {"color": "C0", "ls": ":", "lw": 1.2},
          ("node_ew", "hutchinson"): {"color": "C3", "ls": ":", "lw": 1.2}}


def _scatter(ax, pts, r, title, color="k"):
    ax.scatter(pts[:, 0], pts[:, 1], s=1.5, c=color, alpha=0.5, linewidths=0)
    ax.set(xlim=(-r, r), ylim=(-r, r), aspect="equal", xticks=[], yticks=[])
    ax.set_title(title, fontsize=8)


def _density(ax, logp, r, title):
    ax.imshow(np.exp(logp), origin="lower", extent=(-r, r, -r, r), cmap="viridis",
              interpolation="nearest")
    ax.set(xlim=(-r, r), ylim=(-r, r), aspect="equal", xticks=[], yticks=[])
    ax.set_title(title, fontsize=8)


def _plot_one(path, metrics, cfg, stem, gauss, trace):
    """Rows: data sets; columns: data, densities and inverse-solve samples of the models trained
    with ``trace``, held-out NLL against epoch (all trainings) with the Gaussian's level."""
    datasets, models = cfg["datasets"], cfg["models"]
    ncol = 2 + 2 * len(models)
    fig = new_figure((2.3 * ncol, 2.3 * len(datasets) + 0.9))
    axes = fig.subplots(len(datasets), ncol, squeeze=False)
    r = cfg["plot_range"]
    for i, d in enumerate(datasets):
        row = axes[i]
        _scatter(row[0], metrics[f"{d}.train"], r, f"{d}: data")
        for j, mdl in enumerate(models):
            key = f"{d}.{mdl}.{trace}"
            nll = metrics[f"{key}.heldout_nll"][-1]
            _density(row[1 + j], metrics[f"{key}.log_density"], r,
                     f"{MODEL_LABELS[mdl]} density (NLL {nll:.2f})")
            _scatter(row[1 + len(models) + j], metrics[f"{key}.samples"], r,
                     f"{MODEL_LABELS[mdl]}: base samples pushed back", color=STYLES[(mdl,
                                                                                      trace)][
                         "color"])
        ax = row[-1]
        for mdl in models:
            for tr in cfg["traces"]:
                curve = metrics[f"{d}.{mdl}.{tr}.heldout_nll"]
                ax.plot(np.arange(len(curve)), curve, label=f"{MODEL_LABELS[mdl]} {tr}",
                        **STYLES[(mdl, tr)])
        ax.axhline(gauss[d], color="0.4", ls="--", lw=1, label="one Gaussian")
        if f"{d}.true_nll" in metrics:
            ax.axhline(metrics[f"{d}.true_nll"], color="0.6", ls="-.", lw=1, label="true density")
        lo = min(float(np.min(metrics[f"{d}.{m}.{t}.heldout_nll"])) for m in models
                 for t in cfg["traces"])
        ax.set_ylim(min(lo, metrics.get(f"{d}.true_nll", lo)) - 0.1, gauss[d] + 0.6)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("held-out NLL [nats]", fontsize=8)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=6)
    fig.suptitle(f"CNF on 2-D densities, {trace} trace in training: NODE vs NODE-EW "
                 f"({cfg['epochs']} epochs x {cfg['batch']} points, Adam)", fontsize=10)
    lines = caption(fig, stem, cfg, ("hidden", "epochs", "batch", "lr", "solver", "rtol",
                                     "atol", "t1", "probes", "n_train", "n_test", "seed",
                                     "quick"))
    save_figure(fig, path, dpi=90, caption_lines=lines)
    return path


def _plot(h5_path, metrics, cfg, stem, gauss):
    paths = []
    for k, trace in enumerate(cfg["traces"]):
        path = h5_path.with_suffix(".png") if k == 0 else h5_path.with_suffix(f".{trace}.png")
        paths.append(_plot_one(path, metrics, cfg, stem, gauss, trace))
    return ", ".join(str(p) for p in paths)

