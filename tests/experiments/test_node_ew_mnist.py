"""Seed 000's MNIST experiment (issue 11, point 3) in quick mode on the synthetic IDX data set:
NODE and NODE-EW trained by backpropagation through Euler steps, then the continuous adjoint."""
from __future__ import annotations

import numpy as np
import pytest

from experiments import durable, registry, results
from experiments import node_ew_mnist as ew
from experiments.__main__ import main
from tests.experiments._harness import (
    QUIET,
    assert_same_run,
    crash_and_resume,
    tiny,
)
from tests.experiments._record import assert_run_record


@pytest.mark.parametrize("model", ew.MODELS)
def test_quick_mode_records_both_phases(tmp_path, idx_dir, model, capsys):
    argv = ["node_ew_mnist", "--quick", "--out", str(tmp_path), "--set", f"data_dir={idx_dir}",
            "--set", f"model={model}"]
    assert main(argv) == 0
    (path,) = results.find_runs(tmp_path, "node_ew_mnist")
    assert path.with_suffix(".png").stat().st_size > 0
    run = results.load(path)
    assert_run_record(run, "node_ew_mnist", 0)
    cfg, m = run["config"], run["metrics"]
    assert cfg["model"] == model and cfg["dataset"] == "mnist"
    assert m["train_loss"][1] < m["train_loss"][0] and 0 <= m["test_acc"] <= 1
    assert list(m["phase"]) == [0, 1]
    batches = 128 // 32
    # phase 0: 2 Euler steps, exact backpropagation (no backward solve, one VJP per step)
    assert m["nfe_forward_per_batch"][0] == 2 and m["nfe_backward"][0] == 0
    assert m["vjps_backward"][0] == 2 * batches and m["val_nfe_forward_per_batch"][0] == 2
    # phase 1: RK4, 2 steps, backsolve: 8 forward and 8 augmented backward evaluations
    assert m["nfe_forward_per_batch"][1] == 8 and m["nfe_backward_per_batch"][1] == 8
    assert m["vjps_backward"][1] == 8 * batches and m["test_nfe_forward_per_batch"] == 8
    assert np.isfinite(m["val_acc_adjoint_solver"][0])          # phase 0: validated twice
    assert m["val_acc_adjoint_solver"][1] == m["val_acc"][1]     # phase 1: the same solver
    assert (m["theta_change"] > 0).all() if model == "node_ew" else not m["theta_change"].any()
    assert m["test_error_percent"] == pytest.approx(100 * (1 - m["test_acc"]))
    paper = ew.PAPER[model]["test_error_percent"]
    assert run["metric_attrs"]["test_acc"]["paper_test_error_percent"] == paper
    assert {r["training"] for r in run["tables"]["paper_table_1"]} == {"adjoint", "bp+adjoint"}
    assert (m["params_weight_ode"] > 0) == (model == "node_ew")
    assert f"(paper {paper:.2f}%)" in capsys.readouterr().out


@pytest.mark.parametrize("bp_epochs, phases", [(0, [1, 1]), (2, [0, 0])])
def test_bp_epochs_choose_the_gradient_method(tmp_path, idx_dir, bp_epochs, phases):
    """``bp_epochs=0``: pure adjoint training (the paper's Table 1 baseline); ``= epochs``: only
    backpropagation through Euler steps."""
    over = tiny(idx_dir, model="node_ew", bp_epochs=bp_epochs)
    assert ew.run(True, tmp_path, 0, overrides=over, options=QUIET) == 0
    m = results.load(results.find_runs(tmp_path)[0])["metrics"]
    assert list(m["phase"]) == phases
    assert list(m["nfe_backward"] > 0) == [p == 1 for p in phases]
    assert list(m["nfe_forward_per_batch"]) == [8 if p else 2 for p in phases]


def test_bad_settings_fail_before_compute(tmp_path, capsys):
    for over, text in [({"model": "resnet"}, "model"), ({"bp_epochs": 3}, "bp_epochs"),
                       ({"euler_steps": 0}, "euler_steps"), ({"rank": 0}, "rank"),
                       ({"solver": "dopri"}, "solver"), ({"steps": 0}, "steps"),
                       ({"gradient": "exact"}, "gradient"), ({"groups": 3}, "groups")]:
        with pytest.raises(durable.ConfigError, match=text):
            ew.make_config(True, 0, over)
    with pytest.raises(durable.ConfigError, match="no setting 'activation'"):
        ew.make_config(True, 0, {"activation": "tanh"})       # the thesis' ablations are not here
    argv = ["node_ew_mnist", "--quick", "--out", str(tmp_path / "o"), "--set", "bp_epochs=5",
            "--set", "data_dir=/nonexistent"]
    assert main(argv) == 2
    assert "bp_epochs" in capsys.readouterr().err and not list(tmp_path.rglob("*.h5"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, idx_dir):
    out = tmp_path_factory.mktemp("node_ew_ref")
    assert ew.run(True, out, 0, overrides=tiny(idx_dir, model="node_ew"), options=QUIET) == 0
    return results.find_runs(out)[0]


@pytest.mark.parametrize("crash_at", [1, 2, 3])
def test_resume_is_bitwise(tmp_path, monkeypatch, idx_dir, reference, crash_at):
    """Checkpoints: 1 mid Euler epoch, 2 at the phase switch, 3 mid adjoint epoch."""
    path = crash_and_resume(monkeypatch, tmp_path, ew.run, tiny(idx_dir, model="node_ew"),
                            crash_at)
    assert_same_run(path, reference)


def test_full_configuration_and_registry():
    cfg = ew.make_config(False)
    assert (cfg["width"], cfg["downsample"], cfg["euler_steps"], cfg["bp_epochs"],
            cfg["epochs"]) == (32, 4, 4, 5, 7)
    model = ew.build_schedule(cfg)(0)[0]           # stem 28 -> 14 -> 7, ODE block on 7 x 7
    assert model.layers[6].output_shape((2, 32, 7, 7)) == (2, 32, 7, 7)
    assert (cfg["solver"], cfg["steps"], cfg["gradient"], cfg["dataset"], cfg["dtype"]) == (
        "dopri5", None, "backsolve", "mnist", "float32")
    assert "node_ew_mnist" in registry.EXPERIMENTS and "node_ew_mnist" in registry.CONFIGS
    assert "node_ew_mnist" in registry.CHECKPOINTED
