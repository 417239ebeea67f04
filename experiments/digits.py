"""Main job: an ODE-net classifier on scikit-learn's bundled 8x8 digits.

Model: Linear stem (64 -> d) -> ODE block (MLP vector field, RK4 fixed steps, discrete adjoint
under a Revolve schedule) -> Linear classifier (d -> 10); softmax cross-entropy, Adam.
Writes ``digits.h5`` (per-epoch loss/accuracy, forward/backward NFE, wall time, checkpoint
counters) and ``digits.png`` (``digits_quick.*`` in quick mode).
"""
from __future__ import annotations

import time

import numpy as np

from adjointcore.checkpointing import Revolve
from adjointcore.layers import Linear, Sequential, Tanh
from adjointcore.losses import softmax_cross_entropy
from adjointcore.optim import Adam
from nets.odeblock import ODEBlock

from .data import load_digits_split
from ._plotting import new_figure, save_figure
from ._training import check_loss
from .results import output_path, run_metadata, save

QUICK = {"width": 16, "hidden": 32, "steps": 4, "epochs": 2, "batch": 128, "lr": 1e-2,
         "snapshots": 2, "n_train": 512}
FULL = {"width": 32, "hidden": 64, "steps": 8, "epochs": 15, "batch": 64, "lr": 3e-3,
        "snapshots": 3, "n_train": None}


def build_model(cfg) -> Sequential:
    """Stem -> ODE block -> classifier, one flat parameter vector."""
    field = Sequential(Linear(cfg["width"], cfg["hidden"]), Tanh(),
                       Linear(cfg["hidden"], cfg["width"]))
    block = ODEBlock(field, t_span=(0.0, 1.0), method="rk4", steps=cfg["steps"],
                     gradient="discrete", schedule=Revolve(snapshots=cfg["snapshots"]))
    return Sequential(Linear(64, cfg["width"]), Tanh(), block, Linear(cfg["width"], 10))


def _accuracy(model, params, x, y) -> float:
    logits, _ = model.forward(params, x)
    return float(np.mean(np.argmax(logits, axis=1) == y))


def run(quick: bool = False, out: str = "results", seed: int = 0) -> int:
    """Train an ODE-net on the bundled digits (main job); write HDF5 + PNG."""
    cfg = dict(QUICK if quick else FULL, seed=seed)
    data = load_digits_split(seed)
    x_train, y_train = data.x_train, data.y_train
    if cfg["n_train"]:
        x_train, y_train = x_train[:cfg["n_train"]], y_train[:cfg["n_train"]]
    rng = np.random.default_rng(seed)
    model = build_model(cfg)
    params = model.init(rng)
    opt = Adam(lr=cfg["lr"])
    state = opt.init_state(params)
    block = model.layers[2]
    hist = {k: [] for k in ("loss", "train_acc", "test_acc", "epoch_time_s", "nfe_forward",
                            "nfe_backward", "max_live_snapshots", "recomputed_steps")}
    t_start = time.perf_counter()
    for epoch in range(cfg["epochs"]):
        t_epoch, losses = time.perf_counter(), []
        records = []
        model_e = Sequential(*model.layers[:2], block.with_config(monitor=lambda phase, work: records.append((phase, work))),
                             model.layers[3])
        for idx in np.array_split(rng.permutation(len(y_train)),
                                  max(1, len(y_train) // cfg["batch"])):
            logits, cache = model_e.forward(params, x_train[idx])
            loss, g_logits = softmax_cross_entropy(logits, y_train[idx])
            _, grad = model_e.vjp(params, cache, g_logits)
            params, state = opt.step(params, grad, state)
            losses.append(check_loss(float(loss), f"epoch {epoch + 1}",
                                     "lower the learning rate or use more ODE steps"))
        fwd = [w for phase, w in records if phase == "forward"]
        bwd = [w for phase, w in records if phase == "backward"]
        hist["loss"].append(np.mean(losses))
        hist["train_acc"].append(_accuracy(model, params, x_train, y_train))
        hist["test_acc"].append(_accuracy(model, params, data.x_test, data.y_test))
        hist["epoch_time_s"].append(time.perf_counter() - t_epoch)
        hist["nfe_forward"].append(sum(w.forward_nfe for w in fwd))
        hist["nfe_backward"].append(sum(w.backward_nfe for w in bwd))
        hist["max_live_snapshots"].append(max(w.max_live_snapshots for w in bwd))
        hist["recomputed_steps"].append(sum(r.recomputed_steps for r in bwd))
        print(f"epoch {epoch + 1:3d}/{cfg['epochs']}  loss {hist['loss'][-1]:.4f}  "
              f"train {hist['train_acc'][-1]:.3f}  test {hist['test_acc'][-1]:.3f}  "
              f"NFE fwd/bwd {hist['nfe_forward'][-1]}/{hist['nfe_backward'][-1]}  "
              f"{hist['epoch_time_s'][-1]:.1f}s", flush=True)
    hist["wall_time_s"] = time.perf_counter() - t_start
    path = save(output_path(out, "digits", quick), "digits", cfg,
                {k: np.asarray(v) for k, v in hist.items()}, meta=run_metadata())
    png = output_path(out, "digits", quick, ".png")
    _plot(hist, png)
    print(f"final test accuracy {hist['test_acc'][-1]:.3f}; wrote {path} and {png}")
    return 0


def _plot(hist, path):
    fig = new_figure((8, 3))
    ax1, ax2 = fig.subplots(1, 2)
    epochs = np.arange(1, len(hist["loss"]) + 1)
    ax1.plot(epochs, hist["loss"], marker="o")
    ax1.set(xlabel="epoch", ylabel="training loss", yscale="log")
    ax2.plot(epochs, hist["train_acc"], marker="o", label="train")
    ax2.plot(epochs, hist["test_acc"], marker="s", label="test")
    ax2.set(xlabel="epoch", ylabel="accuracy")
    ax2.legend()
    save_figure(fig, path)
