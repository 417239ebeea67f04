"""Seed 003's image experiments (issue 11, experiments 1 and 2) in quick mode: thesis_efficiency
(ODEnet vs ResNets of matched structure) and thesis_eval_solvers (Table 8.2), on a small
synthetic IDX data set (``--set data_dir=...``) so that they run without the real files; one
smoke test on the real FashionMNIST when it is in the cache."""
from __future__ import annotations

import numpy as np
import pytest

from experiments import _image, _thesis, data, durable, registry, results
from experiments import thesis_efficiency as eff
from experiments import thesis_eval_solvers as evs
from experiments.__main__ import main
from tests.experiments._harness import (
    EVERY,
    QUIET,
    assert_same_run,
    crash_and_resume,
    tiny,
)
from tests.experiments._record import assert_run_record

NAME_EFF = "thesis_efficiency"


# ------------------------------------------------------------------------------- efficiency
@pytest.mark.parametrize("model", _thesis.MODELS)
def test_thesis_efficiency_quick_writes_results_and_figure(tmp_path, idx_dir, model, capsys):
    argv = ["thesis_efficiency", "--quick", "--out", str(tmp_path), "--set",
            f"data_dir={idx_dir}", "--set", f"model={model}"]
    assert main(argv) == 0
    (path,) = results.find_runs(tmp_path, "thesis_efficiency")
    assert path.name.startswith("thesis_efficiency_quick-") and path.with_suffix(".png").stat(
    ).st_size > 0
    run = results.load(path)
    assert_run_record(run, "thesis_efficiency", 0)
    cfg, m = run["config"], run["metrics"]
    assert cfg["model"] == model and cfg["epochs"] == eff.QUICK["epochs"]
    assert run["data"]["n_train"] == 128 and run["data"]["n_val"] == 64
    for key in ("train_loss", "val_loss", "val_acc", "epoch_time_s", "nfe_forward_per_batch"):
        assert m[key].shape == (2,) and np.all(np.isfinite(m[key])), key
    assert 0 <= m["test_acc"] <= 1 and np.isfinite(m["test_loss"])
    assert m["train_loss"][1] < m["train_loss"][0] or model.startswith("complex")
    if model in _thesis.ODE_MODELS:     # Dopri5: 2 + 6 per attempted step
        assert np.all(m["nfe_forward"] > 0) and np.all(m["nfe_backward"] > 0)
        assert np.all(m["nfe_forward_per_batch"] >= 8)
        assert m["test_nfe_forward_per_batch"] > 0
    else:
        assert not np.any(m["nfe_forward"]) and m["test_nfe_forward_per_batch"] == 0
    counts = {r["model"]: r for r in run["tables"]["param_counts"]}
    assert set(counts) == set(_thesis.MODELS)
    assert m["params_total"] == counts[model]["params"] == _thesis.param_counts(
        _thesis.build_model(cfg))["total"]
    thesis = _thesis.THESIS_TABLE_8_1[model]
    assert run["metric_attrs"]["test_acc"]["thesis_test_acc_percent"] == thesis[0]
    assert [r["model"] for r in run["tables"]["thesis_table_8_1"]] == list(_thesis.MODELS)
    params = results.load_checkpoint(path)["arrays"]["params"]
    assert params.dtype == np.float32 and params.shape == (m["params_total"],)
    assert f"(thesis {thesis[0]:.2f}%)" in capsys.readouterr().out


def test_simple_parameter_counts_match_the_formula():
    base = eff.make_config(True)
    for width, augment, downsample, pool, time_conv in [(4, 2, 2, 1, False), (16, 2, 2, 1, False),
                                                        (6, 0, 1, 2, True), (8, 4, 4, 7, False),
                                                        (64, 2, 1, 2, False)]:
        for kind in _thesis.SIMPLE_MODELS:
            cfg = {**base, "model": kind, "width": width, "augment": augment,
                   "downsample": downsample, "pool": pool, "time_conv": time_conv}
            built = _thesis.param_counts(_thesis.build_model(cfg))
            formula = _thesis.simple_formula(kind, width, augment, 28 // downsample, pool,
                                            cfg["blocks_large"], time_conv)
            assert built == formula, (kind, width, augment, downsample, pool, time_conv)


def test_thesis_scale_counts_are_those_of_table_7_4():
    rows = {r["model"]: r for r in _thesis.count_table(eff.make_config(True))}
    assert [rows[k]["thesis_scale_params"] for k in _thesis.SIMPLE_MODELS] == [168_900, 168_904,
                                                                              247_708]
    assert [rows[k]["thesis_scale_params_not_fc"] for k in _thesis.SIMPLE_MODELS] == [
        39_530, 39_534, 118_338]
    for kind in _thesis.SIMPLE_MODELS:     # the thesis rounds to three digits
        reported, reported_not_fc = _thesis.THESIS_TABLE_7_4[kind]
        assert abs(rows[kind]["thesis_scale_params"] / reported - 1) < 0.003
        assert abs(rows[kind]["thesis_scale_params_not_fc"] / reported_not_fc - 1) < 0.015
    # the ODE block's field is the residual block: the ODEnet differs only in its stem
    assert rows["resnet_small"]["params"] - rows["odenet"]["params"] == 2 * (
        eff.QUICK["downsample"] ** 2 + 1)
    # complex models: the ODE field's first convolution also sees the kept zero channel
    c1 = eff.QUICK["complex_widths"][0]
    assert rows["complex_odenet"]["params"] - rows["complex_resnet"]["params"] == 9 * c1


def test_complex_odenet_keeps_the_state_dimensions(idx_dir):
    cfg = eff.make_config(True, 0, {"model": "complex_odenet", "downsample": 1})
    model = _thesis.build_model(cfg)
    block = model.layers[0]
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28)).astype(np.float32)
    state_shape = block.output_shape(x.shape)
    assert state_shape == (3, cfg["complex_widths"][-1], 28, 28)
    params = model.init(np.random.default_rng(0), np.float32)
    y, cache = model.forward(params, x)
    assert y.shape == (3, 10)
    x_bar, p_bar = model.vjp(params, cache, np.ones_like(y))
    assert x_bar.shape == x.shape and p_bar.shape == params.shape and np.all(np.isfinite(p_bar))


def test_spatial_pad_and_crop_vjps_are_adjoint():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4, 5))
    pad, crop = _thesis.SpatialPad(7, 7), _thesis.SpatialCrop(4, 5)
    y, cache = pad.forward(None, x)
    assert y.shape == (2, 3, 7, 7) and np.array_equal(crop.forward(None, y)[0], x)
    y_bar = rng.standard_normal(y.shape)
    x_bar, _ = pad.vjp(None, cache, y_bar)
    assert np.isclose(np.vdot(y, y_bar), np.vdot(x, x_bar))
    z, c2 = crop.forward(None, y_bar)
    w_bar = rng.standard_normal(z.shape)
    assert np.isclose(np.vdot(z, w_bar), np.vdot(y_bar, crop.vjp(None, c2, w_bar)[0]))


@pytest.fixture(scope="module")
def efficiency_reference(tmp_path_factory, idx_dir):
    out = tmp_path_factory.mktemp("eff_ref")
    assert eff.run(True, out, 0, overrides=tiny(idx_dir), options=QUIET) == 0
    (path,) = results.find_runs(out)
    return path


@pytest.mark.parametrize("crash_at", [1, 2, 4])
def test_thesis_efficiency_resume_is_bitwise(tmp_path, monkeypatch, idx_dir,
                                             efficiency_reference, crash_at):
    """2 epochs of 2 batches, a checkpoint every step: 1 (and 3) mid-epoch, 2 at the end of
    epoch 1, 4 after the last epoch (before the test evaluation)."""
    path = crash_and_resume(monkeypatch, tmp_path, eff.run, tiny(idx_dir), crash_at)
    assert_same_run(path, efficiency_reference)


def test_early_stopping_after_patience_epochs_without_improvement(tmp_path, idx_dir,
                                                                  monkeypatch):
    """Validation losses 1.0, 0.9, 1.1, 1.2: with patience 2 training stops after epoch 4 and
    the test set is evaluated with epoch 2's parameters."""
    losses = iter([1.0, 0.9, 1.1, 1.2])
    tested = []
    real = _image.evaluate

    def fake(model, params, x, y, batch, records=None):
        out = real(model, params, x, y, batch, records)
        if len(y) == 32:                  # the validation set (the test set has 31 images)
            return {**out, "loss": next(losses)}
        tested.append(params.copy())
        return out

    monkeypatch.setattr(_image, "evaluate", fake)
    over = tiny(idx_dir, n_test=31, epochs=10, patience=2)
    assert eff.run(True, tmp_path, 0, overrides=over, options=EVERY) == 0
    run = results.load(results.find_runs(tmp_path)[0])
    m = run["metrics"]
    assert list(m["val_loss"]) == [1.0, 0.9, 1.1, 1.2]
    assert m["epochs_run"] == 4 and m["best_epoch"] == 2 and m["stopped_early"]
    ck = results.load_checkpoint(results.find_runs(tmp_path)[0])
    assert len(tested) == 1 and np.array_equal(tested[0], ck["arrays"]["params"])  # the best
    assert not np.array_equal(ck["arrays"]["params"], ck["arrays"]["last_params"])


def test_subset_mode_and_bad_settings_are_named():
    cfg = eff.make_config(False, 0, {"n_train": 10000})
    assert cfg["n_train"] == 10000 and cfg["n_val"] == 12000 and cfg["model"] == "odenet"
    for over, text in [({"model": "vgg"}, "model"), ({"groups": 4}, "groups"),
                       ({"downsample": 3}, "downsample"), ({"complex_widths": [8, 4, 2]},
                                                           "complex_widths"),
                       ({"n_train": 0}, "n_train"), ({"dtype": "float16"}, "dtype")]:
        with pytest.raises(durable.ConfigError, match=text):
            eff.make_config(True, 0, over)


def test_ablation_settings_build_the_thesis_variants_and_keep_default_identities():
    from adjointcore.layers import Softplus, Tanh
    plain = eff.make_config(True)
    same = eff.make_config(True, 0, {"activation": "relu", "pre_activation": "none"})
    assert same == plain and "activation" not in plain           # defaults: same identity
    cfg = eff.make_config(True, 0, {"activation": "tanh", "pre_activation": "softplus",
                                    "t1": 2.0})
    assert durable.run_identity(NAME_EFF, cfg) != durable.run_identity(NAME_EFF, plain)
    model = _thesis.build_model(cfg)
    _stem, pre, block = model.layers[:3]
    assert isinstance(pre, Softplus) and isinstance(block.field_layer.layers[-1], Tanh)
    assert block.t_span == (0.0, 2.0)
    assert model.n_params == _thesis.build_model(plain).n_params
    resnet = _thesis.build_model({**cfg, "model": "resnet_small"})
    assert isinstance(resnet.layers[1], Softplus)
    assert isinstance(resnet.layers[2].inner.layers[-1], Tanh)
    with pytest.raises(durable.ConfigError, match="activation"):
        eff.make_config(True, 0, {"activation": "elu"})
    settings = {r[1] for r in _thesis.THESIS_ABLATIONS}
    assert {"activation=tanh", "pre_activation=softplus", "t1=2"} <= settings


def test_full_configuration_is_the_documented_scale():
    cfg = eff.make_config(False)
    assert (cfg["width"], cfg["augment"], cfg["downsample"], cfg["pool"]) == (16, 2, 2, 1)
    assert (cfg["solver"], cfg["rtol"], cfg["gradient"], cfg["patience"]) == (
        "dopri5", 1e-3, "backsolve", 5)
    assert cfg["n_train"] is None and cfg["n_val"] == 12000 and cfg["dataset"] == "fashion-mnist"
    assert (cfg["epochs"], cfg["batch"], cfg["lr"], cfg["lr_schedule"]) == (5, 64, 1e-3, "cosine")


def test_learning_rate_schedules():
    cfg = {"lr": 1e-3, "epochs": 2, "lr_schedule": "cosine"}
    lrs = [_image.learning_rate(cfg, e, b, 4) for e in range(2) for b in range(4)]
    assert lrs[0] == 1e-3 and lrs[4] == pytest.approx(5e-4) and 0 < lrs[-1] < 5e-5
    assert np.all(np.diff(lrs) < 0)
    assert _image.learning_rate({**cfg, "lr_schedule": "constant"}, 1, 3, 4) == 1e-3
    with pytest.raises(durable.ConfigError, match="lr_schedule"):
        eff.make_config(True, 0, {"lr_schedule": "step"})


def test_registered_and_checkpointed():
    for name in ("thesis_efficiency", "thesis_eval_solvers"):
        assert name in registry.EXPERIMENTS and name in registry.CONFIGS
        assert name in registry.CHECKPOINTED


# ------------------------------------------------------------------------------- eval solvers
def test_thesis_eval_solvers_quick_trains_and_evaluates(tmp_path, idx_dir):
    argv = ["thesis_eval_solvers", "--quick", "--out", str(tmp_path), "--set",
            f"data_dir={idx_dir}"]
    assert main(argv) == 0
    (path,) = results.find_runs(tmp_path, "thesis_eval_solvers")
    assert path.with_suffix(".png").stat().st_size > 0
    run = results.load(path)
    assert_run_record(run, "thesis_eval_solvers", 0)
    rows = run["tables"]["evaluation"]
    grid = evs.settings(run["config"])
    assert [(r["solver"], r["steps"] or None, r["tolerance"] or None) for r in rows] == grid
    by = {(r["solver"], r["steps"], r["tolerance"]): r for r in rows}
    assert by[("euler", 1, 0.0)]["nfe_forward"] == 1 and by[("rk4", 1, 0.0)]["nfe_forward"] == 4
    assert by[("midpoint", 2, 0.0)]["nfe_forward"] == 4
    for solver in ("dopri5", "tsit5", "bosh3"):        # tighter tolerance: never fewer NFE
        nfe = [by[(solver, 0, t)]["nfe_forward"] for t in run["config"]["tolerances"]]
        assert nfe == sorted(nfe) and nfe[0] > 0, solver
    assert np.array_equal(run["metrics"]["eval_accuracy"], [r["accuracy"] for r in rows])
    assert run["metrics"]["val_loss"].shape == (1,)                   # trained here
    assert {r["architecture"] for r in run["tables"]["thesis_table_8_2"]} == {"simple",
                                                                            "complex"}
    assert "euler 1 step: FNFE 1, 83.48%" in run["metric_attrs"]["eval_accuracy"][
        "thesis_table_8_2_simple"]


def test_thesis_eval_solvers_reads_a_thesis_efficiency_model(tmp_path, idx_dir,
                                                              efficiency_reference):
    """With the source's tolerances and dtype, Dopri5 reproduces the source's test accuracy."""
    src = results.load(efficiency_reference)
    over = {"source": str(efficiency_reference), "data_dir": idx_dir, "eval_n_test": 32,
            "eval_batch": 32, "eval_dtype": "float32", "fixed_steps": [1],
            "adaptive_solvers": ["dopri5"], "tolerances": [1e-3]}
    assert evs.run(True, tmp_path, 0, overrides=over, options=QUIET) == 0
    run = results.load(results.find_runs(tmp_path)[0])
    assert run["data"]["source_run_id"] == src["run_id"]
    dopri = [r for r in run["tables"]["evaluation"] if r["solver"] == "dopri5"]
    assert dopri[0]["accuracy"] == pytest.approx(float(src["metrics"]["test_acc"]))
    assert "val_loss" not in run["metrics"]                             # nothing trained here


def test_thesis_eval_solvers_rejects_a_resnet_source(tmp_path, idx_dir):
    assert eff.run(True, tmp_path, 0, overrides=tiny(idx_dir, model="resnet_small",
                                                      epochs=1), options=QUIET) == 0
    (src,) = results.find_runs(tmp_path)
    with pytest.raises(durable.ConfigError, match="ODE model"):
        evs.run(True, tmp_path / "e", 0, overrides={"source": str(src), "data_dir": idx_dir},
                options=QUIET)
    with pytest.raises(durable.ConfigError, match="cannot read"):
        evs.run(True, tmp_path / "e", 0, overrides={"source": str(tmp_path / "none.h5")},
                options=QUIET)
    with pytest.raises(durable.ConfigError, match="solver"):
        evs.make_config(True, 0, {"adaptive_solvers": ["rk4"]})


@pytest.fixture(scope="module")
def eval_reference(tmp_path_factory, idx_dir):
    out = tmp_path_factory.mktemp("evs_ref")
    over = tiny(idx_dir, eval_n_test=32, tolerances=[1e-1, 1e-3], fixed_steps=[1], epochs=1)
    assert evs.run(True, out, 0, overrides=over, options=QUIET) == 0
    return results.find_runs(out)[0], over


@pytest.mark.parametrize("crash_at", [3, 6])
def test_thesis_eval_solvers_resume_is_bitwise(tmp_path, monkeypatch, eval_reference,
                                               crash_at):
    """Checkpoints 1-3: training (2 batches, epoch end: 3); 4-9: one per evaluation setting
    (euler, midpoint, rk4 at 1 step; dopri5, tsit5, bosh3 at 1e-1 and 1e-3)."""
    ref, over = eval_reference
    path = crash_and_resume(monkeypatch, tmp_path, evs.run, over, crash_at)
    assert_same_run(path, ref)
    drop = ("time_s", "ms_per_image")
    rows = [{k: v for k, v in r.items() if k not in drop}
            for r in results.load(path)["tables"]["evaluation"]]
    assert rows == [{k: v for k, v in r.items() if k not in drop}
                    for r in results.load(ref)["tables"]["evaluation"]]


# ------------------------------------------------------------------------------- real data
def test_thesis_efficiency_on_real_fashion_mnist(tmp_path):
    try:
        data.load_fashion_mnist("test", n_test=1)
    except data.DataMissingError:
        pytest.skip("FashionMNIST not in the cache (python -m experiments.data fetch "
                    "fashion-mnist)")
    assert eff.run(True, tmp_path, 0, overrides={"epochs": 1}, options=QUIET) == 0
    run = results.load(results.find_runs(tmp_path)[0])
    assert run["data"]["name"] == "fashion-mnist" and len(run["data"]["sha256"]) == 64
    assert run["metrics"]["test_acc"] > 0.2         # above chance after 4 steps of 32 images
