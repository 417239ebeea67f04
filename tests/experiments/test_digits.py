"""The main job (ODE-net on the bundled digits) in quick mode, read back from HDF5."""
import numpy as np
import pytest

from experiments import data, results
from experiments.__main__ import main
from experiments._training import check_loss
from tests.experiments._record import assert_run_record


def test_digits_quick_writes_readable_results(tmp_path, capsys):
    assert main(["digits", "--quick", "--out", str(tmp_path)]) == 0
    (path,) = results.find_runs(tmp_path, "digits")   # one file, named by the run's identity
    assert path.name.startswith("digits_quick-") and path.name.endswith("-seed0.h5")
    run = results.load(path)
    assert_run_record(run, "digits", 0)
    assert run["config"]["epochs"] == 2
    cfg = run["config"]                                   # the full configuration (issue 10)
    assert (cfg["solver"], cfg["gradient"], cfg["schedule"], cfg["quick"]) == (
        "rk4", "discrete", "revolve", True)
    assert len(run["data"]["sha256"]) == 64 and run["data"]["n_train"] == 512
    m = run["metrics"]
    assert m["loss"].shape == (2,) and np.all(np.isfinite(m["loss"]))
    assert m["loss"][1] < m["loss"][0]                    # Adam makes progress in 2 epochs
    assert np.all(m["test_acc"] > 0.2)                    # above chance (0.1) after one epoch
    assert np.all(m["nfe_forward"] > 0) and np.all(m["nfe_backward"] > 0)
    assert np.all(m["max_live_snapshots"] <= run["config"]["snapshots"])
    assert path.with_suffix(".png").stat().st_size > 0
    assert results.load_checkpoint(path)["arrays"]["params"].ndim == 1   # final parameters
    assert "final test accuracy" in capsys.readouterr().out


def test_check_loss_names_where_and_the_fix():
    assert check_loss(1.5, "epoch 1") == 1.5
    with pytest.raises(FloatingPointError, match="nan at epoch 3; lower the learning rate"):
        check_loss(float("nan"), "epoch 3")


def test_digits_split_is_deterministic_and_disjoint():
    a, b = data.load_digits_split(seed=3), data.load_digits_split(seed=3)
    assert np.array_equal(a.x_train, b.x_train) and a.x_train.shape == (1500, 64)
    assert a.x_test.shape == (297, 64) and 0.0 <= a.x_train.min() and a.x_train.max() <= 1.0


def test_cifar10_loader_reads_python_batches(tmp_path):
    import pickle
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 256, size=(4, 3072), dtype=np.uint8),
                 "labels": list(rng.integers(0, 10, size=4))}
        with open(tmp_path / name, "wb") as f:
            pickle.dump(batch, f)
    split = data.load_cifar10(tmp_path)
    assert split.x_train.shape == (20, 3, 32, 32) and split.x_test.shape == (4, 3, 32, 32)
    with open(tmp_path / "test_batch", "rb") as f:
        raw = pickle.load(f)["data"]
    assert np.allclose(split.x_test[0, 0, 0, :3], raw[0, :3] / 255.0, atol=1e-7)


def test_cifar10_loader_says_where_to_put_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        data.load_cifar10(tmp_path)


def test_unknown_experiment_is_rejected(capsys):
    with pytest.raises(SystemExit):
        main(["nope"])
    assert "unknown experiment" in capsys.readouterr().err


def test_results_load_missing_file_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="path"):
        results.load(tmp_path / "absent.h5")


def test_results_reject_nested_metric_names(tmp_path):
    with pytest.raises(ValueError, match="'/'"):
        results.save(tmp_path / "x.h5", "x", {}, {"a/b": np.zeros(2)})
