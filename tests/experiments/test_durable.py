"""Durable runs in-process (issue 10, points 1-3 and 5): identity and file names, refusal to
overwrite, the lock, bitwise resume from every kind of checkpoint, fail-fast checks and the
project's own errors for bad input."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from experiments import digits, durable, registry, results, theorem1
from experiments.__main__ import main
from tests.experiments._harness import (
    QUIET,
    Crash,
    assert_same_run,
    bitwise_equal,
    crash_after_checkpoints,
)

TINY_DIGITS = {"epochs": 3, "n_train": 128, "batch": 32}          # 4 batches an epoch
TINY_T1 = {"bp_iterations": 6, "ft_iterations": 2, "adj_iterations": 2}


def test_bitwise_equal_compares_bytes():
    nan = np.array([1.0, np.nan])
    assert bitwise_equal(nan, nan.copy()) and not np.array_equal(nan, nan.copy())
    assert not bitwise_equal(np.array([0.0]), np.array([-0.0]))
    assert not bitwise_equal(np.array([1.0]), np.array([1.0], dtype=np.float32))
    assert bitwise_equal(np.array(["a"]), np.array(["a"]))


# ------------------------------------------------------------------------------- identity
def test_identity_separates_seeds_configurations_and_modes():
    base = digits.make_config(True, 0)
    same = digits.make_config(True, 0)
    other_seed = digits.make_config(True, 1)
    other_cfg = digits.make_config(True, 0, {"epochs": 3})
    ids = [durable.run_identity("digits", c) for c in (base, same, other_seed, other_cfg)]
    assert ids[0] == ids[1]
    assert ids[0].config_hash == ids[2].config_hash and ids[0].seed != ids[2].seed
    assert ids[0].config_hash != ids[3].config_hash
    assert ids[0].config_hash != durable.run_identity("digits", digits.make_config(False, 0)) \
        .config_hash
    paths = durable.run_paths("out", ids[2])
    assert paths.final == Path("out") / f"digits_quick-{ids[2].config_hash}-seed1.h5"
    assert paths.checkpoint.name.endswith("-seed1.ckpt.h5") and paths.lock.name.startswith(".")


def test_registry_configs_give_the_identity_a_sweep_needs():
    for name, make in registry.CONFIGS.items():
        cfg = make(True, 2, None)
        assert cfg["seed"] == 2 and cfg["quick"] is True, name
        assert durable.run_identity(name, cfg).stem.startswith(f"{name}_quick-")


def test_different_seeds_never_overwrite_each_other(tmp_path):
    for seed in (0, 1):
        assert theorem1.run(True, tmp_path, seed, overrides=TINY_T1, options=QUIET) == 0
    runs = results.find_runs(tmp_path, "theorem1")
    assert len(runs) == 2 and [results.load(p)["config"]["seed"] for p in runs] == [0, 1]
    assert results.find_runs(tmp_path, "theorem1", seed=1) == [runs[1]]


def test_finished_run_is_not_overwritten_without_flag(tmp_path, capsys):
    args = ["theorem1", "--quick", "--out", str(tmp_path), "--no-plot", "--quiet"] + [
        f"--set={k}={v}" for k, v in TINY_T1.items()]
    assert main(args) == 0
    (path,) = results.find_runs(tmp_path)
    before = path.stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "has already finished" in err and "--overwrite" in err and str(path) in err
    assert path.stat().st_mtime_ns == before
    assert main(args + ["--resume"]) == 0
    assert "nothing to resume" in capsys.readouterr().out
    assert main(args + ["--overwrite"]) == 0 and path.stat().st_mtime_ns != before
    assert_same_run(path, path)


def test_second_writer_of_the_same_run_is_refused(tmp_path, capsys):
    cfg = theorem1.make_config(True, 0, TINY_T1)
    with durable.claim("theorem1", cfg, tmp_path, QUIET, note=lambda text: None):
        start = time.perf_counter()
        status = main(["theorem1", "--quick", "--out", str(tmp_path), "--no-plot"] + [
            f"--set={k}={v}" for k, v in TINY_T1.items()])
        assert time.perf_counter() - start < 2
    assert status == 3
    err = capsys.readouterr().err
    assert "is being written by another process" in err and f"(pid {os.getpid()})" in err
    assert results.find_runs(tmp_path) == []                  # the refused run wrote nothing
    assert theorem1.run(True, tmp_path, 0, overrides=TINY_T1, options=QUIET) == 0  # lock freed


# ------------------------------------------------------------------------------- resume
@pytest.fixture(scope="module")
def digits_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits_ref")
    assert digits.run(True, out, 0, overrides=TINY_DIGITS, options=QUIET) == 0
    (path,) = results.find_runs(out)
    return path


@pytest.mark.parametrize("crash_at", [1, 3, 4, 5, 9, 12])
def test_digits_resume_is_bitwise(tmp_path, monkeypatch, digits_reference, crash_at):
    """A checkpoint every step (12 steps, 3 epochs of 4 batches): crashes mid-epoch, at an epoch
    end and after the last epoch all resume to the uninterrupted run's numbers, bitwise."""
    every = durable.RunOptions(quiet=True, plot=False, checkpoint_every=1)
    crash_after_checkpoints(monkeypatch, crash_at)
    with pytest.raises(Crash):
        digits.run(True, tmp_path, 0, overrides=TINY_DIGITS, options=every)
    monkeypatch.undo()
    (ckpt,) = tmp_path.glob("*.ckpt.h5")
    partial = results.load(ckpt)
    assert partial["status"] == "checkpoint" and "where" in results.load_checkpoint(ckpt)[
        "position"]
    with pytest.raises(durable.RunExistsError, match="--resume to continue"):
        digits.run(True, tmp_path, 0, overrides=TINY_DIGITS, options=QUIET)
    resume = durable.RunOptions(quiet=True, plot=False, resume=True)
    assert digits.run(True, tmp_path, 0, overrides=TINY_DIGITS, options=resume) == 0
    (path,) = results.find_runs(tmp_path)
    assert not ckpt.exists()
    assert_same_run(path, digits_reference)


@pytest.fixture(scope="module")
def theorem1_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("t1_ref")
    assert theorem1.run(True, out, 0, overrides=TINY_T1, options=QUIET) == 0
    (path,) = results.find_runs(out)
    return path


@pytest.mark.parametrize("crash_at", [2, 6, 7, 8, 9, 10])
def test_theorem1_resume_is_bitwise(tmp_path, monkeypatch, theorem1_reference, crash_at):
    """Checkpoints 1-6: BP iterations (6: the last, before the switch); 7-8: fine-tuning; 9: the
    stage boundary; 10: the pure adjoint stage. Each resumes to the same numbers."""
    every = durable.RunOptions(quiet=True, plot=False, checkpoint_every=1)
    crash_after_checkpoints(monkeypatch, crash_at)
    with pytest.raises(Crash):
        theorem1.run(True, tmp_path, 0, overrides=TINY_T1, options=every)
    monkeypatch.undo()
    resume = durable.RunOptions(quiet=True, plot=False, resume=True)
    assert theorem1.run(True, tmp_path, 0, overrides=TINY_T1, options=resume) == 0
    assert_same_run(results.find_runs(tmp_path)[0], theorem1_reference)


def test_resume_without_checkpoint_starts_afresh(tmp_path, capsys):
    resume = durable.RunOptions(quiet=True, plot=False, resume=True)
    assert theorem1.run(True, tmp_path, 0, overrides=TINY_T1, options=resume) == 0
    assert "no checkpoint of run theorem1_quick-" in capsys.readouterr().out


def test_resume_refuses_a_checkpoint_of_other_data(tmp_path, monkeypatch):
    crash_after_checkpoints(monkeypatch, 2)
    with pytest.raises(Crash):
        digits.run(True, tmp_path, 0, overrides=TINY_DIGITS, options=QUIET)
    monkeypatch.undo()
    (ckpt,) = tmp_path.glob("*.ckpt.h5")
    with h5py.File(ckpt, "a") as f:
        f.attrs["data"] = '{"sha256": "0000"}'
    resume = durable.RunOptions(quiet=True, plot=False, resume=True)
    with pytest.raises(durable.ConfigError, match="data set changed.*--overwrite"):
        digits.run(True, tmp_path, 0, overrides=TINY_DIGITS, options=resume)


def test_atomic_write_keeps_the_old_file_when_the_writer_fails(tmp_path):
    path = results.save(tmp_path / "r.h5", "x", {"a": 1}, {"loss": np.arange(3.0)})

    def broken(f):
        f.attrs["experiment"] = "half"
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        results.atomic_write(path, broken)
    assert results.load(path)["config"] == {"a": 1}
    assert list(tmp_path.iterdir()) == [path]                 # no temporary left behind


# ------------------------------------------------------------------------------- fail fast
def _bad_outs(tmp_path):
    (tmp_path / "file").write_text("x")
    cases = {"a regular file": (tmp_path / "file", "is an existing file"),
             "under a regular file": (tmp_path / "file" / "sub", "which is a regular file"),
             "not creatable": (Path("/proc/self/no/such/dir"), "cannot be created")}
    if os.geteuid() != 0:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        cases["read-only"] = (ro, "is not writable")
    elif os.path.isdir("/sys") and not _writable("/sys"):     # root ignores permission bits
        cases["read-only"] = (Path("/sys"), "is not writable")
    return cases


def _writable(folder) -> bool:
    try:
        with open(Path(folder) / f".probe{os.getpid()}", "wb"):
            pass
    except OSError:
        return False
    os.unlink(Path(folder) / f".probe{os.getpid()}")
    return True


@pytest.mark.parametrize("name", ["digits", "theorem1", "gradient_accuracy", "rda_evolution",
                                  "gradcheck"])
def test_bad_out_fails_before_compute(tmp_path, name, monkeypatch):
    computed = []      # run_identity is the first thing claim does after checking --out
    monkeypatch.setattr(durable, "run_identity", lambda *a, **k: computed.append(a) or 1 / 0)
    for case, (out, text) in _bad_outs(tmp_path).items():
        start = time.perf_counter()
        with pytest.raises(durable.OutputDirError, match=text) as info:
            registry.EXPERIMENTS[name](True, out, 0, options=QUIET)
        assert time.perf_counter() - start < 2, case
        assert f"--out {str(out)!r}" in str(info.value) and "writable folder" in str(info.value)
    assert computed == []


def test_missing_matplotlib_is_named_before_compute(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)     # import blocked
    with pytest.raises(durable.MissingDependencyError) as info:
        theorem1.run(True, tmp_path, 0, overrides=TINY_T1)
    msg = str(info.value)
    assert "pip install 'adjointcore[plot]'" in msg and "--no-plot" in msg
    assert results.find_runs(tmp_path) == []
    assert theorem1.run(True, tmp_path, 0, overrides=TINY_T1,
                        options=durable.RunOptions(plot=False)) == 0
    assert "figures skipped (--no-plot)" in capsys.readouterr().out
    (path,) = results.find_runs(tmp_path)
    assert not path.with_suffix(".png").exists()


def test_results_are_written_before_a_failing_plot(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("experiments.rda_evolution._plot", lambda *a: 1 / 0)
    from experiments import rda_evolution
    assert rda_evolution.run(True, tmp_path, 0) == 1
    assert "figure not drawn (ZeroDivisionError" in capsys.readouterr().out
    (path,) = results.find_runs(tmp_path)
    assert results.load(path)["metrics"]["kernels"].ndim == 4


# ------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("argv, text", [
    (["--set", "epoch=3"], "has no setting 'epoch'"),
    (["--set", "epochs=two"], "'epochs' must be int"),
    (["--set", "epochs=0"], "out of range"),
    (["--set", "seed=3"], "--seed"),
    (["--set", "epochs"], "must look like KEY=VALUE"),
])
def test_bad_settings_name_the_argument_and_fix(tmp_path, capsys, argv, text):
    assert main(["digits", "--quick", "--out", str(tmp_path)] + argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and text in err and "Traceback" not in err
    assert results.find_runs(tmp_path) == []


@pytest.mark.parametrize("argv, text", [
    (["--resume", "--overwrite"], "not allowed with argument"),
    (["--checkpoint-every", "-1"], "--checkpoint-every"),
])
def test_bad_flags_are_usage_errors(capsys, argv, text):
    with pytest.raises(SystemExit):
        main(["digits", "--quick"] + argv)
    assert text in capsys.readouterr().err


def test_moved_names_stay_importable_from_durable():
    """The refusals and pre-compute checks moved to experiments._preflight and the loop-state
    conversions to experiments._loopstate; ``experiments.durable`` gives the same objects."""
    from experiments import _loopstate, _preflight
    moved = {_preflight: ["ExperimentError", "OutputDirError", "MissingDependencyError",
                          "ConfigError", "RunExistsError", "RunFinished", "RunLockedError",
                          "check_out_dir", "check_modules", "apply_overrides",
                          "parse_override"],
             _loopstate: ["rng_state", "restore_rng", "optimizer_arrays", "restore_optimizer"]}
    for module, names in moved.items():
        for name in names:
            assert name in durable.__all__ and getattr(durable, name) is getattr(module, name)


def test_run_options_reject_contradictions():
    with pytest.raises(durable.ConfigError, match="exclude each other"):
        durable.RunOptions(resume=True, overwrite=True)
    with pytest.raises(durable.ConfigError, match="checkpoint-every"):
        durable.RunOptions(checkpoint_every=-2)


def test_keyboard_interrupt_without_checkpoints_is_one_line(monkeypatch, capsys, tmp_path):
    def interrupted(**kwargs):
        raise KeyboardInterrupt

    monkeypatch.setitem(registry.EXPERIMENTS, "rda_evolution", interrupted)
    assert main(["rda_evolution", "--quick", "--out", str(tmp_path)]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("interrupted: rda_evolution keeps no checkpoints")


def test_tables_are_compound_datasets_and_units_attributes(tmp_path):
    assert theorem1.run(True, tmp_path, 0, overrides=TINY_T1, options=QUIET) == 0
    (path,) = results.find_runs(tmp_path)
    with h5py.File(path, "r") as f:
        table = f["tables/summary"][()]
        assert table.dtype.names == ("run", "iterations", "final_loss", "wall_s")
        assert table["iterations"].dtype == np.int64 and table["run"][0] == b"BP + adjoint"
        assert f["metrics/wall_time_s"].attrs["units"] == "s"
        assert f["config"].attrs["bp_solver"] == "euler" and f.attrs["status"] == "finished"
        assert f["metrics/adjoint_time_to_reach_bp_adjoint_loss_s"].attrs["never_reached"] == -1
