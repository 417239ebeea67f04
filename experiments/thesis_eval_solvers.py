"""Seed 003 (Bijsterbosch), section 8.3 and Table 8.2: one ODEnet trained with Dopri5, evaluated
at test time with other solvers and tolerances.

The model is the ODEnet of a finished ``thesis_efficiency`` run (``--set source=PATH.h5``: its
configuration and best-validation parameters are read back) or, without a source, one trained
here the same way (Dopri5, continuous adjoint, early stopping; :mod:`experiments._thesis`). The
test images are then classified with every setting of the grid:

* fixed steps: ``fixed_solvers`` (Euler, midpoint, RK4) x ``fixed_steps`` (1, 2, 4, 8 equal
  steps over [0, T]; the thesis used one step: FNFE 1 for Euler, 4 for RK4);
* adaptive: ``adaptive_solvers`` (Dopri5, Tsit5, Bosh3) x ``tolerances`` (rtol = atol =
  1e-1 ... 1e-7).

Per setting: test accuracy and loss, the average forward NFE per batch and the evaluation time
(table ``evaluation``, metrics ``eval_*`` in the same order). Evaluation runs in ``eval_dtype``
(float64 by default: tolerances down to 1e-7 are below float32's resolution). The thesis' Table
8.2 (FashionMNIST columns) is stored beside ours (table ``thesis_table_8_2`` and attributes of
``eval_accuracy``).

Modes. Full: without a source, an ODEnet of thesis_efficiency's full scale (width 16 + 2, 2x2
stride-2 stem, 14 x 14 block) trained on the thesis' 10k subset (2,000 validation images, 6
epochs, batches of 64, cosine-annealed Adam, early stopping with patience 5); the grid is Euler,
midpoint and RK4 at 1, 2, 4 and 8 steps and Dopri5, Tsit5 and Bosh3 at 1e-1 ... 1e-7, on 2,000
test images (``eval_n_test``). Recommended after a thesis_efficiency run::

    python -m experiments thesis_eval_solvers --set source=results/thesis/RUN.h5

(RUN: the thesis_efficiency file, ``thesis_efficiency-HASH-seed0``)

(estimated 20-40 min on 2 shared cores, mostly the tight tolerances: about 250-450 forward NFE
per batch at 1e-7). Quick (the test suite): width 4 + 2, 96 training images, 1 epoch, 64 test
images, 1-2 steps and tolerances 1e-1, 1e-2, 1e-4: seconds.

Durable: the training phase checkpoints as ``thesis_efficiency`` does; the evaluation phase
after every setting; ``--resume`` continues bitwise (timings excepted).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np

from . import _image, _thesis, durable, results
from ._plotting import PLOT_MODULES, caption, draw, new_figure, save_figure
from ._progress import log, progress_bar

__all__ = ["run", "make_config", "QUICK", "FULL", "COMMON", "THESIS_TABLE_8_2", "settings"]

NAME = "thesis_eval_solvers"

#: Table 8.2, FashionMNIST (the extraction's column headers are swapped: the columns with
#: Dopri5 accuracy 90.36 / 90.80 match Table 8.1's FashionMNIST ODEnets). Rows: (solver,
#: tolerance or None, average FNFE, accuracy %).
THESIS_TABLE_8_2 = {
    "simple": [("euler", None, 1, 83.48), ("rk4", None, 4, 88.90), ("dopri5", 1e-3, 26, 90.36),
               ("dopri5", 1e-2, 26, 90.36), ("dopri5", 1e-1, 26, 90.36)],
    "complex": [("euler", None, 1, 90.88), ("rk4", None, 4, 90.80),
                ("dopri5", 1e-3, 19.06, 90.80), ("dopri5", 1e-2, 19.06, 90.80),
                ("dopri5", 1e-1, 19.06, 90.80)],
}

#: Model and training settings, used when no ``source`` is given (as thesis_efficiency's).
FULL = {"model": "odenet", "width": 16, "augment": 2, "groups": 2, "blocks_large": 3,
        "downsample": 2, "pool": 1, "complex_widths": [8, 16, 32], "epochs": 6, "batch": 64,
        "lr": 1e-3, "n_train": 10000, "n_val": 2000, "n_test": None, "eval_batch": 500,
        "eval_n_test": 2000, "fixed_steps": [1, 2, 4, 8],
        "tolerances": [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7]}
QUICK = {"model": "odenet", "width": 4, "augment": 2, "groups": 2, "blocks_large": 3,
         "downsample": 2, "pool": 1, "complex_widths": [2, 4, 4], "epochs": 1, "batch": 32,
         "lr": 3e-3, "n_train": 96, "n_val": 32, "n_test": 64, "eval_batch": 64,
         "eval_n_test": 64, "fixed_steps": [1, 2], "tolerances": [1e-1, 1e-2, 1e-4]}
COMMON = {"source": None, "solver": "dopri5", "rtol": 1e-3, "atol": 1e-3, "lr_schedule": "cosine",
          "gradient": "backsolve", "t1": 1.0, "time_conv": False, "patience": 5,
          "weight_decay": 0.0, "dtype": "float32", "dataset": "fashion-mnist", "data_dir": None,
          "optimizer": "adam", "loss": "softmax_cross_entropy",
          "fixed_solvers": ["euler", "midpoint", "rk4"],
          "adaptive_solvers": ["dopri5", "tsit5", "bosh3"], "eval_dtype": "float64"}
#: Keys of a source run's configuration that define its model and data.
MODEL_KEYS = ("model", "width", "augment", "groups", "blocks_large", "downsample", "pool",
              "complex_widths", "t1", "time_conv", "dataset", "solver", "rtol", "atol",
              "gradient", "dtype")
EVAL_METRICS = ("eval_accuracy", "eval_loss", "eval_nfe_forward", "eval_time_s")
UNITS = {**_image.UNITS, "eval_accuracy": "fraction", "eval_loss": "nats per example",
         "eval_nfe_forward": "function evaluations per test batch (mean)",
         "eval_time_s": "s (whole evaluation of the setting)"}


def make_config(quick: bool = False, seed: int = 0, overrides: Optional[dict] = None) -> dict:
    """The full configuration: mode defaults, shared settings, ``--set`` overrides (checked).

    Raises
    ------
    experiments.durable.ConfigError
        An unknown key, a value of the wrong type, or a value out of range.
    """
    cfg = _image.image_config(NAME, (FULL, QUICK, COMMON), quick, seed, overrides,
                               models=_thesis.MODELS, ablations=_thesis.ABLATIONS)
    bad = []
    if cfg["model"] not in _thesis.ODE_MODELS:
        bad.append("model (an ODE model: odenet or complex_odenet)")
    if not (isinstance(cfg["eval_n_test"], int) and cfg["eval_n_test"] >= 1):
        bad.append("eval_n_test")
    if not all(isinstance(n, int) and n >= 1 for n in cfg["fixed_steps"]):
        bad.append("fixed_steps")
    if not all(isinstance(t, (int, float)) and t > 0 for t in cfg["tolerances"]):
        bad.append("tolerances")
    if cfg["eval_dtype"] not in ("float32", "float64"):
        bad.append("eval_dtype")
    if cfg["source"] is not None and not isinstance(cfg["source"], str):
        bad.append("source (a path)")
    bad += _bad_solvers(cfg)
    if bad:
        raise durable.ConfigError(f"{NAME} settings {bad} are out of range: model an ODE model, "
                                  f"eval_n_test and fixed_steps integers >= 1, tolerances > 0, "
                                  f"eval_dtype float32/float64, source a path or null, solver "
                                  f"names known to solvers (adaptive ones with an error "
                                  f"estimate: {__import__('solvers').adaptive_methods()}).")
    return cfg


def _bad_solvers(cfg) -> list:
    """Names in the solver lists that ``solvers`` does not know (or, for the adaptive list,
    that have no error estimate)."""
    import solvers
    bad = []
    for m in cfg["fixed_solvers"] + cfg["adaptive_solvers"]:
        try:
            solvers.get_stepper(m)
        except (ValueError, TypeError, KeyError):
            bad.append(f"solver {m!r}")
    bad += [f"adaptive_solvers {m!r} (no error estimate)" for m in cfg["adaptive_solvers"]
            if m not in solvers.adaptive_methods() and f"solver {m!r}" not in bad]
    return bad


def settings(cfg) -> list:
    """The evaluation grid: ``(solver, steps or None, tolerance or None)`` in table order."""
    grid = [(m, n, None) for m in cfg["fixed_solvers"] for n in cfg["fixed_steps"]]
    grid += [(m, None, float(t)) for m in cfg["adaptive_solvers"] for t in cfg["tolerances"]]
    return grid


def _source_model(cfg):
    """``(model config, best parameters, description)`` of the ``source`` run file."""
    path = Path(cfg["source"]).expanduser()
    try:
        src = results.load(path)
        ck = results.load_checkpoint(path)
    except (FileNotFoundError, results.ResultsFileError) as err:
        raise durable.ConfigError(f"--set source={cfg['source']!r}: cannot read it ({err}); pass "
                                  f"a finished thesis_efficiency run file (.h5).") from err
    scfg = src["config"]
    if src["experiment"] != "thesis_efficiency" or src["status"] != "finished" or \
            scfg.get("model") not in _thesis.ODE_MODELS:
        raise durable.ConfigError(f"--set source={cfg['source']!r} is a {src['status']} "
                                  f"{src['experiment']} run of model {scfg.get('model')!r}; "
                                  f"pass a finished thesis_efficiency run of an ODE model.")
    keys = MODEL_KEYS + tuple(_thesis.ABLATIONS)
    model_cfg = {**{k: v for k, v in cfg.items() if k not in _thesis.ABLATIONS},
                 **{k: scfg[k] for k in keys if k in scfg},
                 "data_dir": cfg["data_dir"] if cfg["data_dir"] is not None
                 else scfg.get("data_dir")}
    params = ck["arrays"]["params"]
    desc = {"source": str(path), "source_run_id": src["run_id"],
            "source_params_sha256": durable.array_checksum(params),
            "source_test_acc": float(src["metrics"]["test_acc"])}
    return model_cfg, params, desc


def _eval_model(model_cfg, solver, steps, tol, monitor):
    return _thesis.build_model({**model_cfg, "solver": solver, "steps": steps,
                               "rtol": tol or model_cfg["rtol"], "atol": tol or model_cfg["atol"],
                               "gradient": "backsolve"}, monitor=monitor)


def _row(setting, ev, seconds, n_images) -> dict:
    solver, steps, tol = setting
    return {"solver": solver, "kind": "fixed" if steps else "adaptive",
            "steps": int(steps or 0), "tolerance": float(tol or 0.0),
            "accuracy": ev["acc"], "loss": ev["loss"], "nfe_forward": ev["nfe_forward"],
            "time_s": seconds, "ms_per_image": 1000 * seconds / n_images}


def _eval_checkpoint(params, rows, train_metrics, stop, wall) -> dict:
    return {"arrays": {"params": params}, "metrics": train_metrics, "units": UNITS,
            "position": {"phase": "eval", "rows": rows, "stop": stop, "wall_s": wall,
                         "where": f"evaluation, {len(rows)} settings done"},
            "rng_state": None}


def run(quick: bool = False, out: str = "results", seed: int = 0, *,
        overrides: Optional[dict] = None, options: Optional[durable.RunOptions] = None) -> int:
    """Thesis Table 8.2: a Dopri5-trained ODEnet evaluated with other solvers/tolerances."""
    options = options or durable.RunOptions()
    cfg = make_config(quick, seed, overrides)
    durable.check_out_dir(out)
    if options.plot:
        durable.check_modules(PLOT_MODULES, f"{NAME}'s figure", "--no-plot")
    if cfg["source"] is not None:
        model_cfg, src_params, desc = _source_model(cfg)
        data = None
    else:
        model_cfg, src_params, desc = cfg, None, {"source": "trained in this run"}
        data = _image.load_data(cfg)
    test = _image.load_test(model_cfg, cfg["eval_n_test"])
    info = {**desc, "name": model_cfg["dataset"], "n_eval_test": int(len(test.y_test)),
            "sha256": durable.array_checksum(
                test.x_test, test.y_test, *((data.x_train, data.y_train, data.x_val,
                                             data.y_val) if data is not None else ()),
                *((src_params,) if src_params is not None else ()))}
    with durable.claim(NAME, cfg, out, options, PLOT_MODULES, info, checkpoints=True) as rn:
        records = []
        resumed = rn.resumed
        phase = (resumed["checkpoint"]["position"].get("phase", "train") if resumed else None)
        train_metrics, stop, wall = {}, None, 0.0
        if src_params is not None:
            params, rows = src_params, []
        elif phase == "eval":
            params = None
        else:
            model = _thesis.build_model(cfg, monitor=lambda p, w: records.append((p, w)))
            opt = _image.make_optimizer(cfg)
            loop = _image.fresh(cfg, model, opt) if resumed is None else _image.restored(
                resumed, opt)
            loop = _image.train(rn, cfg, model, opt, loop, data, records, "eval_solvers train")
            params, rows, stop, wall = loop.best_params, [], loop.stop, loop.wall
            train_metrics = _image.metrics(loop.hist)
        if phase == "eval":
            pos = resumed["checkpoint"]["position"]
            params, rows = resumed["checkpoint"]["arrays"]["params"], list(pos["rows"])
            stop, wall = pos["stop"], pos["wall_s"]
            train_metrics = {k: v for k, v in resumed["metrics"].items()}
        eval_dtype = np.dtype(cfg["eval_dtype"])
        p_eval = params.astype(eval_dtype)
        x_test = test.x_test.astype(eval_dtype)
        grid = settings(cfg)
        session_start = time.perf_counter()
        bar = progress_bar(len(grid), NAME, rn.options.quiet, initial=len(rows), unit="setting")
        with bar:
            for setting in grid[len(rows):]:
                model = _eval_model(model_cfg, *setting,
                                    monitor=lambda p, w: records.append((p, w)))
                start = time.perf_counter()
                ev = _image.evaluate(model, p_eval, x_test, test.y_test, cfg["eval_batch"],
                                     records)
                rows.append(_row(setting, ev, time.perf_counter() - start, len(test.y_test)))
                r = rows[-1]
                how = f"steps {r['steps']}" if r["steps"] else f"tol {r['tolerance']:.0e}"
                log(f"{r['solver']:9s} {how:10s} accuracy {100 * r['accuracy']:.2f}%  loss "
                    f"{r['loss']:.4f}  FNFE {r['nfe_forward']:.1f}  {r['time_s']:.1f}s",
                    rn.options.quiet)
                bar.update(1)
                elapsed = wall + time.perf_counter() - session_start
                durable.after_step(rn, 1, lambda elapsed=elapsed: _eval_checkpoint(
                    params, rows, train_metrics, stop, elapsed), force=True)
        wall += time.perf_counter() - session_start
        metrics = dict(train_metrics)
        metrics["eval_accuracy"] = np.array([r["accuracy"] for r in rows])
        metrics["eval_loss"] = np.array([r["loss"] for r in rows])
        metrics["eval_nfe_forward"] = np.array([r["nfe_forward"] for r in rows])
        metrics["eval_time_s"] = np.array([r["time_s"] for r in rows])
        metrics["wall_time_s"] = wall
        kind = "complex" if model_cfg["model"] == "complex_odenet" else "simple"
        thesis_rows = [{"architecture": a, "solver": s, "tolerance": float(t or 0.0),
                        "avg_fnfe": float(n), "accuracy_percent": acc}
                       for a, rs in THESIS_TABLE_8_2.items() for s, t, n, acc in rs]
        attrs = {"eval_accuracy": {
            "thesis_table_8_2_" + kind: "; ".join(
                f"{s} {f'tol {t:g}' if t else '1 step'}: FNFE {n}, {acc}%"
                for s, t, n, acc in THESIS_TABLE_8_2[kind]),
            "thesis_source": "Bijsterbosch, Table 8.2 (FashionMNIST columns)"}}
        final = {"arrays": {"params": params}, "position": {"phase": "finished",
                                                            "where": "finished"},
                 "rng_state": None}
        path = durable.finish(rn, metrics, tables={"evaluation": rows,
                                                    "thesis_table_8_2": thesis_rows},
                              units=UNITS, metric_attrs=attrs, checkpoint=final)
        log(f"wrote {path}", False)
        return draw(options, lambda: _plot(rows, kind, path.with_suffix(".png"), cfg,
                                            model_cfg, rn.id.stem, desc))


def _plot(rows, kind, path, cfg, model_cfg, stem, desc):
    fig = new_figure((11, 4.4))
    ax1, ax2 = fig.subplots(1, 2)
    for i, solver in enumerate(dict.fromkeys(r["solver"] for r in rows)):
        mine = [r for r in rows if r["solver"] == solver]
        nfe = [r["nfe_forward"] for r in mine]
        acc = [100 * r["accuracy"] for r in mine]
        ms = [r["ms_per_image"] for r in mine]
        style = "o-" if mine[0]["kind"] == "fixed" else "s--"
        ax1.plot(nfe, acc, style, color=f"C{i}", label=solver)
        ax2.plot(nfe, ms, style, color=f"C{i}", label=solver)
    for s, _t, n, acc in THESIS_TABLE_8_2[kind]:
        ax1.plot([n], [acc], "k*", ms=9, label="thesis (Table 8.2)" if s == "euler" else None)
    ax1.set(xscale="log", xlabel="average forward NFE per test batch",
            ylabel="test accuracy (%)", title="(a) accuracy vs forward NFE")
    ax2.set(xscale="log", yscale="log", xlabel="average forward NFE per test batch",
            ylabel="ms per test image", title="(b) evaluation time")
    ax1.legend(fontsize=7)
    ax2.legend(fontsize=7)
    best = max(rows, key=lambda r: r["accuracy"])
    fig.suptitle(f"{model_cfg['model']} trained with {model_cfg['solver']} (rtol "
                 f"{model_cfg['rtol']:g}), evaluated with other solvers: best "
                 f"{100 * best['accuracy']:.2f}% ({best['solver']}); thesis: Euler 83.48%, RK4 "
                 f"88.90%, Dopri5 90.36% (simple, FashionMNIST)", fontsize=9)
    keys = ("source", "model", "width", "augment", "downsample", "fixed_solvers", "fixed_steps",
            "adaptive_solvers", "tolerances", "eval_n_test", "eval_dtype", "epochs", "n_train",
            "seed", "quick")
    if cfg["source"] is not None:                 # nothing trained here
        keys = tuple(k for k in keys if k not in ("epochs", "n_train"))
    shown = {**cfg, **{k: model_cfg[k] for k in ("model", "width", "augment", "downsample")}}
    lines = caption(fig, stem, shown, keys)
    save_figure(fig, path, caption_lines=lines)
    return path
