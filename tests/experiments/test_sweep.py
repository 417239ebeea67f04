"""Sweeps on Dask (issue 10, point 6): a 2 x 2 grid x 2 seeds on a LocalCluster of 2 worker
processes writes the index; re-submission skips finished runs; a worker killed mid-run has its
run resumed from the checkpoint (bitwise equal to an uninterrupted run); bad grids, seeds and
options are refused before any compute, naming the argument; plot-sweep draws mean +- std."""
from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed", reason="sweeps need dask.distributed: pip install -e '.[test]'")

from experiments import (  # noqa: E402
    digits,
    durable,
    results,
    sweep,
    sweepindex,
    sweepplan,
    sweepplot,
)
from experiments.__main__ import main  # noqa: E402
from tests.experiments._harness import assert_same_run  # noqa: E402

#: The cheapest quick configuration that trains: digits --quick (2 epochs of 4 batches).
GRID = ["--grid", "width=8,16", "--grid", "lr=0.01,0.03"]
SEEDS = ["--seeds", "0-1"]



def _no_cluster(monkeypatch):
    """Fail the test if anything tries to start or reach a Dask cluster. (``_connect`` is
    defined in experiments._cluster; ``sweep.execute`` looks it up in experiments.sweep, which
    imports it, so it is patched there.)"""
    def refuse(*args, **kwargs):
        raise AssertionError("a cluster was started")
    monkeypatch.setattr(sweep, "_connect", refuse)


def _sweep(out, *extra):
    return main(["sweep", "digits", "--quick", *GRID, *SEEDS, "--out", str(out), *extra])


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """The acceptance sweep through the command line: its own LocalCluster, 2 workers."""
    out = tmp_path_factory.mktemp("sweep")
    start = time.perf_counter()
    status = _sweep(out, "--workers", "2", "--quiet")
    return out, status, time.perf_counter() - start


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of 2 worker processes (1 thread each) for the API-level tests."""
    from distributed import Client, LocalCluster
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=":0")
    with Client(cluster) as c:
        c.run(__import__, "experiments.registry")           # imports paid once per worker
        yield c
    cluster.close()


# ------------------------------------------------------------------------------- acceptance
def test_sweep_on_local_cluster_writes_the_index(swept):
    out, status, _ = swept
    assert status == 0
    table = sweepindex.sweep_table(out)
    runs = results.find_runs(out, "digits", quick=True)
    assert len(runs) == 8 and len(table["run_id"]) == 8
    assert set(table["status"]) == {"finished"} and set(table["action"]) == {"ran"}
    assert sorted(zip(table["config.width"], table["config.lr"], table["seed"],
                      strict=True)) == sorted(
        (w, lr, s) for w in (8, 16) for lr in (0.01, 0.03) for s in (0, 1))
    assert len({w.rsplit(":", 1)[1] for w in table["worker"]}) <= 2
    for i, stem in enumerate(table["run_id"]):
        r = results.load(out / table["file"][i])
        assert r["run_id"] == stem and r["config"]["width"] == table["config.width"][i]
        assert table["metric.test_acc"][i] == r["metrics"]["test_acc"][-1]
        assert table["wall_time_s"][i] == r["metrics"]["wall_time_s"]
        assert table["nfe_forward"][i] == r["metrics"]["nfe_forward"].sum() > 0
        assert table["nfe"][i] == table["nfe_forward"][i] + table["nfe_backward"][i]
        assert r["blas_threads"] in (1, -1)           # one BLAS thread per worker (-1: unknown)
    assert np.all(table["task_wall_s"] > 0)
    assert sweepindex.sweep_table(out / "sweep.h5")["run_id"].tolist() == table["run_id"].tolist()


def test_resubmission_skips_finished_runs(swept, monkeypatch, capsys):
    out, _, _ = swept
    before = {p: p.stat().st_mtime_ns for p in results.find_runs(out)}
    rows = sweepindex.sweep_table(out)
    _no_cluster(monkeypatch)
    capsys.readouterr()
    assert _sweep(out) == 0
    printed = capsys.readouterr().out
    assert "8 finished already (skipped), 0 to run" in printed
    assert "8 runs, all finished before: nothing to run" in printed
    assert {p: p.stat().st_mtime_ns for p in results.find_runs(out)} == before
    again = sweepindex.sweep_table(out)
    assert again["worker"].tolist() == rows["worker"].tolist()      # the index keeps its rows


def test_resubmission_to_a_scheduler_runs_only_what_is_missing(swept, client, tmp_path,
                                                               capsys):
    """``--scheduler ADDRESS`` (an existing cluster): after one run file is deleted, only that
    run is submitted; the other files are untouched and their index rows kept."""
    src, _, _ = swept
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    gone = results.find_runs(out, seed=1)[0]
    kept = {p: p.stat().st_mtime_ns for p in results.find_runs(out) if p != gone}
    gone.unlink()
    capsys.readouterr()
    assert _sweep(out, "--scheduler", client.scheduler.address) == 0
    assert "7 finished already (skipped), 1 to run" in capsys.readouterr().out
    table = sweepindex.sweep_table(out)
    assert gone.exists() and len(table["run_id"]) == 8 and set(table["status"]) == {"finished"}
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    actions = dict(zip(table["run_id"], table["action"], strict=False))
    assert actions.pop(gone.name[:-3]) == "ran" and set(actions.values()) == {"ran"}
    workers = set(client.run(os.getpid).values())
    row = table["run_id"].tolist().index(gone.name[:-3])
    assert int(table["worker"][row].rsplit(":", 1)[1]) in workers


def _kill_first_checkpointing_worker(out: Path, pids: set, killed: dict) -> None:
    """Poll ``out`` for a checkpoint; SIGKILL the worker process that owns its run's lock
    (named in ``.STEM.lock.owner``) if it is one of ``pids``; record ``killed[stem] = pid``."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for ckpt in out.glob("*.ckpt.h5"):
            stem = ckpt.name[:-len(".ckpt.h5")]
            try:
                pid = int((out / f".{stem}.lock.owner").read_text())
            except (OSError, ValueError):
                continue
            if pid in pids and not (out / f"{stem}.h5").exists():   # a worker this test
                os.kill(pid, signal.SIGKILL)                           # started, mid-run
                killed[stem] = pid
                return
        time.sleep(0.01)


def test_killed_worker_mid_sweep_still_completes_every_run(client, tmp_path, monkeypatch):
    """SIGKILL to the worker process that holds a run's lock, right after that run's first
    checkpoint: the scheduler gives the task to another worker, which resumes the run from its
    checkpoint (the kernel released the dead process's lock); every run finishes, and the
    resumed one equals an uninterrupted run bitwise. (The nanny starts a fresh worker in the
    killed one's place, so the cluster stays usable for later tests.)"""
    plan = sweepplan.plan_sweep("digits", GRID[1::2], "0-1", quick=True, fixed={"epochs": 6})
    killed, finished_per_write = {}, []
    write = sweepindex.write_sweep_index

    def counting_write(path, rows, attrs=None):
        finished_per_write.append(sum(r["status"] == "finished" for r in rows))
        return write(path, rows, attrs)

    monkeypatch.setattr(sweepindex, "write_sweep_index", counting_write)
    watcher = threading.Thread(target=_kill_first_checkpointing_worker, daemon=True,
                               args=(tmp_path, set(client.run(os.getpid).values()), killed))
    watcher.start()
    status = sweep.execute(plan, tmp_path, client=client, quiet=True, index_every=0)
    watcher.join(5)
    assert status == 0 and len(killed) == 1
    # written before the first run, after each completion, at the end
    assert finished_per_write[0] == 0 and finished_per_write[-1] == 8
    assert finished_per_write == sorted(finished_per_write) and len(finished_per_write) >= 9
    (stem, pid), = killed.items()
    table = sweepindex.sweep_table(tmp_path)
    assert set(table["status"]) == {"finished"} and len(table["run_id"]) == 8
    i = table["run_id"].tolist().index(stem)
    assert table["action"][i] == "resumed" and not table["worker"][i].endswith(f":{pid}")
    assert not list(tmp_path.glob("*.ckpt.h5")) and len(results.find_runs(tmp_path)) == 8
    ref = tmp_path / "reference"
    point = next(p for p in plan.points if p.stem == stem)
    assert digits.run(True, ref, point.seed, overrides=point.overrides,
                      options=durable.RunOptions(quiet=True, plot=False)) == 0
    assert_same_run(tmp_path / f"{stem}.h5", ref / f"{stem}.h5")


def test_run_locked_by_a_live_process_is_waited_for_then_reported(client, tmp_path):
    plan = sweepplan.plan_sweep("digits", ["width=8"], "0", quick=True)
    (point,) = plan.points
    with durable.claim("digits", point.config, tmp_path, durable.RunOptions(plot=False),
                       note=lambda text: None):
        status = sweep.execute(plan, tmp_path, client=client, quiet=True, lock_wait=0.5)
    assert status == 1
    table = sweepindex.sweep_table(tmp_path)
    assert table["status"].tolist() == ["failed"]
    assert "is being written by another process" in table["error"][0]
    assert sweep.execute(plan, tmp_path, client=client, quiet=True) == 0    # lock released
    assert sweepindex.sweep_table(tmp_path)["status"].tolist() == ["finished"]


def test_planning_names_stay_importable_from_sweep():
    """The planning moved to experiments.sweepplan; ``sweep.plan_sweep`` and the rest of its
    names (documented there) are the same objects."""
    for name in sweepplan.__all__:
        assert name in sweep.__all__ and getattr(sweep, name) is getattr(sweepplan, name)


# ------------------------------------------------------------------------------- refusals
@pytest.mark.parametrize("args, fragment", [
    (["--grid", "nosuch=1,2"], "--grid 'nosuch=1,2': digits has no setting 'nosuch'"),
    (["--grid", "seed=0,1"], "seeds are given by --seeds"),
    (["--grid", "quick=true,false"], "is the flag --quick"),
    (["--grid", "width"], "must look like KEY=V1,V2"),
    (["--grid", "width=8,,16"], "has an empty value"),
    (["--grid", "width=8,abc"], "--grid width=abc: digits's 'width' must be int"),
    (["--grid", "width=8,0"], "--grid width=0: digits settings ['width'] are out of range"),
    (["--grid", "lr=0.01,1e-2"], "the values '0.01' and '1e-2' are the same setting"),
    (["--grid", "width=8", "--grid", "width=16"], "--grid width=... is given twice"),
    (["--grid", "epochs=1,2", "--set", "epochs=3"],
     "--grid epochs=... and --set epochs=... both set"),
])
def test_bad_grid_is_refused_before_compute_naming_the_argument(args, fragment, tmp_path,
                                                                monkeypatch, capsys):
    _no_cluster(monkeypatch)
    start = time.perf_counter()
    assert main(["sweep", "digits", "--quick", *args, "--out", str(tmp_path / "o")]) == 2
    assert time.perf_counter() - start < 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err, err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("seeds, fragment", [
    ("4-0", "runs downwards"), ("-1", "not a non-negative integer"), ("a", "'a' is not"),
    ("0,0-2", "more than once"), ("", "is empty"), ("1.5", "'1.5' is not")])
def test_bad_seeds_are_refused_naming_the_argument(seeds, fragment, tmp_path, monkeypatch,
                                                   capsys):
    _no_cluster(monkeypatch)
    with pytest.raises(SystemExit) as stop:
        main(["sweep", "digits", "--quick", "--seeds", seeds, "--out", str(tmp_path)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "argument --seeds" in err and fragment in err, err


def test_bad_options_are_refused_before_compute(tmp_path, monkeypatch, capsys):
    _no_cluster(monkeypatch)
    with pytest.raises(SystemExit):
        main(["sweep", "digits", "--workers", "0"])
    assert "argument --workers: must be an integer >= 1" in capsys.readouterr().err
    assert main(["sweep", "digits", "--quick", "--workers", "2", "--scheduler",
                 "tcp://127.0.0.1:8786", "--out", str(tmp_path)]) == 2
    assert "--workers sizes the local cluster" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    assert main(["sweep", "digits", "--quick", "--out", str(tmp_path / "file")]) == 2
    assert "--out" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["sweep", "nosuch"])
    assert "unknown experiment 'nosuch'" in capsys.readouterr().err
    assert main(["sweep", "digits", "--quick", "--set", "nosuch=1", "--out", str(tmp_path)]) == 2
    assert "--set nosuch=...: digits has no setting" in capsys.readouterr().err


def test_seed_and_grid_parsing():
    assert sweepplan.parse_seeds("0-4") == [0, 1, 2, 3, 4]
    assert sweepplan.parse_seeds("0-2, 10,7") == [0, 1, 2, 10, 7]
    assert sweepplan.parse_seeds("3") == [3]
    grid = sweepplan.parse_grid("theorem1", ["variant=backsolve,interpolated", "lr=1e-3,3e-3"],
                            quick=True)
    assert grid == {"variant": ["backsolve", "interpolated"], "lr": [1e-3, 3e-3]}
    plan = sweepplan.plan_sweep("digits", {"width": [8, 16]}, [2, 5], quick=True,
                            fixed={"epochs": 1})
    assert [(p.seed, p.grid["width"]) for p in plan.points] == [(2, 8), (2, 16), (5, 8),
                                                                (5, 16)]
    assert all(p.config["epochs"] == 1 for p in plan.points)
    assert len({p.stem for p in plan.points}) == 4


def test_grid_over_optional_settings_keeps_the_default_runs_identity():
    # thesis_efficiency's ablation keys are absent from its configuration at their defaults
    # (so the default run's identity does not depend on them), yet a sweep can grid over them
    grid = sweepplan.parse_grid("thesis_efficiency", ["activation=relu,tanh"], quick=True)
    assert grid == {"activation": ["relu", "tanh"]}
    plan = sweepplan.plan_sweep("thesis_efficiency", grid, [0], quick=True)
    default, tanh = plan.points
    assert "activation" not in default.config and tanh.config["activation"] == "tanh"
    assert default.stem == sweepplan.plan_sweep("thesis_efficiency", {}, [0], quick=True) \
        .points[0].stem
    # the sweep index has the column for every run, the default's value included
    assert [sweep._config_columns("thesis_efficiency", p.config)["config.activation"]
            for p in plan.points] == ["relu", "tanh"]
    with pytest.raises(sweepplan.SweepError, match="'relu' and 'relu' are the same setting"):
        sweepplan.parse_grid("thesis_efficiency", ["activation=relu,relu"], quick=True)
    with pytest.raises(sweepplan.SweepError, match=r"activation=gelu: .*must be one of"):
        sweepplan.parse_grid("thesis_efficiency", ["activation=gelu"], quick=True)
    with pytest.raises(sweepplan.SweepError, match="has no setting 'activation'"):
        sweepplan.parse_grid("digits", ["activation=relu"], quick=True)


def test_dry_run_lists_without_running(tmp_path, monkeypatch, capsys):
    _no_cluster(monkeypatch)
    assert _sweep(tmp_path, "--dry-run") == 0
    out = capsys.readouterr().out
    assert "8 runs (2 x 2 grid points x 2 seeds)" in out and out.count("to run") == 9
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------------------- plotting
def test_plot_sweep_draws_mean_and_std_over_seeds(swept, tmp_path, capsys):
    out, _, _ = swept
    table = sweepindex.sweep_table(out)
    lines = sweepplot.summarize(table, "lr", "test_acc")
    assert [line["label"] for line in lines] == ["width=16", "width=8"]
    for line in lines:
        width = int(line["label"].split("=")[1])
        for x, mean, std, n in zip(line["x"], line["mean"], line["std"], line["n"], strict=False):
            pick = (table["config.width"] == width) & (table["config.lr"] == x)
            vals = table["metric.test_acc"][pick]
            assert n == 2 and mean == vals.mean() and std == vals.std(ddof=1)
    png = tmp_path / "p.png"
    assert main(["plot-sweep", str(out), "--x", "lr", "--y", "test_acc", "--png",
                 str(png)]) == 0
    assert png.stat().st_size > 10_000 and f"figure: {png}" in capsys.readouterr().out
    assert main(["plot-sweep", str(out), "--x", "width", "--y", "nfe"]) == 0
    assert (out / "sweep-nfe-vs-width.png").exists()
    assert main(["plot-sweep", str(out), "--x", "lr", "--y", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "--y 'nosuch' is not a column" in err and "test_acc" in err
    assert main(["plot-sweep", str(tmp_path / "none"), "--x", "lr", "--y", "loss"]) == 2
    assert "no sweep index" in capsys.readouterr().err
    with pytest.raises(results.ResultsFileError, match="is not a sweep index"):
        sweepindex.sweep_table(results.find_runs(out)[0])
