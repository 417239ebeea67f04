"""Seed 001's image experiment (issue 11, point 4): anodev2_classify in quick mode on the small
synthetic IDX data set (``--set data_dir=...``): the four models of one skeleton, their
parameter counts, the RDA evolution with a positive diffusion, bad settings refused before any
compute, and a bitwise resume after a crash."""
from __future__ import annotations

import numpy as np
import pytest

from adjointcore.gradcheck import check_layer
from experiments import anodev2_classify as anv
from experiments import data, durable, registry, results
from experiments.__main__ import main
from nets.anodev2 import ANODEV2Block
from tests.experiments._harness import (
    QUIET,
    assert_same_run,
    crash_and_resume,
    tiny,
)
from tests.experiments._record import assert_run_record

NAME = "anodev2_classify"
#: Field evaluations per batch: forward, and recomputed in the backward pass.
F_EVALS = {"resnet": (1, 0), "node": (2, 0), "anodev2_c1": (5, 5), "anodev2_c2": (2, 2)}


@pytest.mark.parametrize("model", anv.MODELS)
def test_quick_mode_writes_results_and_figure(tmp_path, idx_dir, model, capsys):
    argv = [NAME, "--quick", "--out", str(tmp_path), "--set", f"data_dir={idx_dir}", "--set",
            f"model={model}"]
    assert main(argv) == 0
    (path,) = results.find_runs(tmp_path, NAME)
    assert path.name.startswith(f"{NAME}_quick-")
    assert path.with_suffix(".png").stat().st_size > 0
    run = results.load(path)
    assert_run_record(run, NAME, 0)
    cfg, m = run["config"], run["metrics"]
    assert cfg["model"] == model and run["data"]["n_train"] == 128
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "epoch_time_s",
                "eval_time_s", "nfe_forward_per_batch"):
        assert m[key].shape == (anv.QUICK["epochs"],) and np.all(np.isfinite(m[key])), key
    assert m["train_loss"][-1] < m["train_loss"][0] and m["val_loss"][-1] < m["val_loss"][0]
    assert 0 <= m["test_acc"] <= 1 and np.isfinite(m["test_loss"])
    forward, backward = F_EVALS[model]
    assert np.all(m["nfe_forward_per_batch"] == forward)
    assert np.all(m["nfe_backward_per_batch"] == backward)
    assert m["test_nfe_forward_per_batch"] == forward
    # parameter counts: the model's, the table's and the formula agree
    counts = {r["model"]: r for r in run["tables"]["param_counts"]}
    assert list(counts) == list(anv.MODELS)
    assert m["params_total"] == counts[model]["params"] == counts[model]["params_formula"]
    params = results.load_checkpoint(path)["arrays"]["params"]
    assert params.dtype == np.float32 and params.shape == (m["params_total"],)
    # the kernels: evolved in time by ANODEV2 (and tau stays positive), constant otherwise
    norms, times = m["kernel_norms"], m["kernel_times"]
    assert norms.shape == (len(times), 2) and np.all(norms > 0)
    if model in anv.ANODEV2_MODELS:
        n_w = {"anodev2_c1": 5, "anodev2_c2": 10}[model]
        assert np.allclose(times, np.linspace(0, 1, n_w + 1))
        assert not np.allclose(norms[-1], norms[0])
        rda = run["tables"]["rda_coefficients"]
        assert len(rda) == 2 and all(r["tau"] > 0 for r in rda)
        assert m["params_evolution"] == 8
    else:
        assert np.array_equal(norms[0], norms[-1]) and "rda_coefficients" not in run["tables"]
        assert m["params_evolution"] == 0
    # the paper's CIFAR-10 numbers are stored, and marked as such
    attrs = run["metric_attrs"]["test_acc"]
    assert attrs["paper_cifar10_resnet4_avg_percent"] == anv.PAPER_CIFAR10[model][2]
    assert "CIFAR-10" in attrs["paper_dataset"] and "NOT comparable" in attrs["paper_dataset"]
    rows = run["tables"]["paper_cifar10"]
    assert len(rows) == 12 and {r["dataset"] for r in rows} == {"CIFAR-10"}
    assert "not comparable" in capsys.readouterr().out


def test_parameter_counts_match_the_formula_and_the_paper():
    base = anv.make_config(True)
    for width, groups, stride, pool in [(4, 2, 2, 4), (16, 4, 2, 4), (8, 8, 1, 8), (6, 3, 4, 7),
                                        (6, 2, 2, 3)]:
        cfg = {**base, "width": width, "groups": groups, "stride": stride, "pool": pool}
        rows = {r["model"]: r for r in anv.count_table(cfg)}
        side = -(-(28 // stride) // pool)
        for kind in anv.MODELS:
            built = anv.build_model({**cfg, "model": kind})
            assert built.n_params == rows[kind]["params"] == anv.formula(kind, width, side)
            x = np.zeros((1, 1, 28, 28), np.float32)
            assert built.output_shape(x.shape) == (1, 10)
        # only the block differs; ANODEV2 adds only tau, v0, v1, rho per kernel tensor
        assert rows["node"]["params"] == rows["resnet"]["params"]
        assert rows["anodev2_c1"]["params"] == rows["anodev2_c2"]["params"] == \
            rows["resnet"]["params"] + 2 * 4
        assert rows["anodev2_c1"]["params_evolution"] == 8
    # at the paper's ResNet-4 scale (3 x 32 x 32, width 16, 4 x 4 after the pool): its 7.71K
    paper = {r["model"]: r for r in anv.count_table(base)}
    assert paper["resnet"]["paper_scale_params"] == 7706
    assert paper["resnet"]["paper_resnet4_params_k"] == 7.71
    assert anv.make_config(False)["width"] == 16 and anv.formula("resnet", 16, 4) == 7418


def test_blocks_are_the_paper_configurations():
    cfg = anv.make_config(True)
    c1 = anv.build_model({**cfg, "model": "anodev2_c1"}).layers[3]
    c2 = anv.build_model({**cfg, "model": "anodev2_c2"}).layers[3]
    c2e = anv.build_model({**cfg, "model": "anodev2_c2", "c2_apply": "euler"}).layers[3]
    assert isinstance(c1, ANODEV2Block) and (c1.n_z, c1.n_w, c1.apply_at) == (5, 5, (0, 1, 2, 3,
                                                                                     4))
    assert (c2.n_z, c2.n_w, c2.apply_at) == (2, 10, (0, 10))        # w(0) and w(1)
    assert c2e.apply_at == (0, 5)
    node = anv.build_model({**cfg, "model": "node"}).layers[3]
    assert (node.method, node.steps, node.gradient) == ("euler", 2, "discrete")


def test_positive_rda_gradients_and_diffusion_stay_valid():
    """The softplus diffusion: exact VJP of the whole block (tau_raw < 0 still means tau > 0),
    and a parameter vector with any tau_raw is accepted."""
    cfg = {**anv.make_config(True), "width": 2, "groups": 1, "model": "anodev2_c2",
           "c2_apply": "euler"}
    block = anv.block(cfg)
    rng = np.random.default_rng(3)
    params = block.init(rng, np.float64)
    w0, p = block.split(params)
    assert np.allclose(block.evolution.coefficients(p)[[0, 4]], 0.05)
    p[:] = [-2.0, 0.3, -0.2, 0.1, 0.5, -0.1, 0.2, -0.3]
    x = rng.standard_normal((2, 2, 5, 5))
    # (no dot test: its fourth-order difference takes steps long enough to cross ReLU kinks)
    report = check_layer(block, x, params=params, seed=1, checks=("fd", "taylor"))
    assert report.passed, report
    y, cache = block.forward(params, x)
    y_bar = rng.standard_normal(y.shape)
    _, bar = block.vjp(params, cache, y_bar)
    n_f = params.size - p.size
    for i in (n_f, n_f + 4):                  # each kernel's tau_raw, by central differences
        e = np.zeros_like(params)
        e[i] = 1e-6
        fd = (np.vdot(y_bar, block.forward(params + e, x)[0])
              - np.vdot(y_bar, block.forward(params - e, x)[0])) / 2e-6
        assert bar[i] == pytest.approx(fd, rel=1e-6) and abs(fd) > 1e-6


def test_bad_settings_fail_before_compute(tmp_path, idx_dir, capsys):
    for over, key in [({"model": "vgg"}, "model"), ({"groups": 3}, "groups"),
                      ({"stride": 3}, "stride"), ({"pool": 20}, "pool"),
                      ({"node_steps": 0}, "node_steps"), ({"c2_apply": "middle"}, "c2_apply"),
                      ({"sigma": "cube"}, "sigma"), ({"rda_tau": 0.0}, "rda_tau"),
                      ({"n_train": 0}, "n_train"), ({"dtype": "float16"}, "dtype"),
                      ({"lr_schedule": "step"}, "lr_schedule")]:
        with pytest.raises(durable.ConfigError, match=f"{key}=") as err:
            anv.make_config(True, 0, over)
        assert "must be" in str(err.value) and "--set" in str(err.value)
    with pytest.raises(durable.ConfigError, match="no setting 'depth'"):
        anv.make_config(True, 0, {"depth": 3})
    with pytest.raises(durable.ConfigError, match="must be int"):
        anv.make_config(True, 0, {"width": "wide"})
    # refused before the data are read (an impossible data_dir is not what fails) or written
    out = tmp_path / "out"
    argv = [NAME, "--quick", "--out", str(out), "--set", f"data_dir={tmp_path / 'none'}",
            "--set", "model=anodev2_c3"]
    assert main(argv) == 2
    assert "model='anodev2_c3' must be one of" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())


@pytest.fixture(scope="module")
def reference(tmp_path_factory, idx_dir):
    out = tmp_path_factory.mktemp("anv_ref")
    over = tiny(idx_dir, model="anodev2_c2")
    assert anv.run(True, out, 0, overrides=over, options=QUIET) == 0
    (path,) = results.find_runs(out)
    return path, over


@pytest.mark.parametrize("crash_at", [1, 2, 4])
def test_resume_after_a_crash_is_bitwise(tmp_path, monkeypatch, reference, crash_at):
    """2 epochs of 2 batches, a checkpoint every step: 1 (and 3) mid-epoch, 2 at the end of
    epoch 1, 4 after the last epoch (before the test evaluation)."""
    ref, over = reference
    path = crash_and_resume(monkeypatch, tmp_path, anv.run, over, crash_at)
    assert_same_run(path, ref)
    assert results.load(path)["tables"]["rda_coefficients"] == results.load(ref)["tables"][
        "rda_coefficients"]


def test_registered_checkpointed_and_full_scale_documented():
    assert NAME in registry.EXPERIMENTS and NAME in registry.CONFIGS
    assert NAME in registry.CHECKPOINTED
    cfg = anv.make_config(False)
    assert (cfg["width"], cfg["stride"], cfg["pool"], cfg["dtype"]) == (16, 2, 4, "float32")
    assert (cfg["epochs"], cfg["batch"], cfg["lr_schedule"]) == (anv.FULL["epochs"], 128,
                                                                 "cosine")
    assert cfg["n_train"] is None and cfg["dataset"] == "fashion-mnist"
    assert "CIFAR-10 is not available" in anv.__doc__


def test_quick_mode_on_real_fashion_mnist(tmp_path):
    try:
        data.load_fashion_mnist("test", n_test=1)
    except data.DataMissingError:
        pytest.skip("FashionMNIST not in the cache (python -m experiments.data fetch "
                    "fashion-mnist)")
    assert anv.run(True, tmp_path, 0, overrides={"epochs": 1, "model": "anodev2_c1"},
                   options=QUIET) == 0
    run = results.load(results.find_runs(tmp_path)[0])
    assert run["data"]["name"] == "fashion-mnist" and len(run["data"]["sha256"]) == 64
    assert np.isfinite(run["metrics"]["test_loss"])
