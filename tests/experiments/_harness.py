"""What the durable-run tests of every experiment share: run options, the tiny image-run
settings, a crash after the n-th checkpoint, and the bitwise comparison of two run files."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from experiments import durable, results

QUIET = durable.RunOptions(quiet=True, plot=False)
RESUME = durable.RunOptions(quiet=True, plot=False, resume=True)
EVERY = durable.RunOptions(quiet=True, plot=False, checkpoint_every=1)


def tiny(idx_dir: str, **more) -> dict:
    """Image-experiment settings for seconds-long runs on the ``idx_dir`` fixture: batches of
    32 from 64 training, 32 validation and 32 test images, plus ``more``."""
    return {"data_dir": idx_dir, "n_train": 64, "n_val": 32, "n_test": 32, "batch": 32,
            "eval_batch": 32, **more}


def timing(name: str) -> bool:
    """Metrics that measure wall time (not reproducible, so not compared bitwise)."""
    return "wall" in name or "time" in name


def bitwise_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Same dtype, shape and bytes (so NaN equals the same NaN and -0.0 differs from 0.0);
    object and string arrays by value."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype.kind in "OUS":
        return bool(np.array_equal(a, b))
    return np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def assert_same_run(a: Path, b: Path) -> None:
    """Every non-timing metric, table column and final array of two run files bitwise equal."""
    ra, rb = results.load(a), results.load(b)
    assert ra["config"] == rb["config"] and ra["run_id"] == rb["run_id"]
    for name, value in ra["metrics"].items():
        if not timing(name):
            assert bitwise_equal(np.asarray(value), np.asarray(rb["metrics"][name])), name
    ca, cb = results.load_checkpoint(a), results.load_checkpoint(b)
    assert set(ca["arrays"]) == set(cb["arrays"])
    for name, value in ca["arrays"].items():
        assert bitwise_equal(np.asarray(value), np.asarray(cb["arrays"][name])), name
    assert ca["rng_state"] == cb["rng_state"]


class Crash(Exception):
    """Stands for a kill right after a checkpoint reached the disk."""


def crash_after_checkpoints(monkeypatch: pytest.MonkeyPatch, n: int) -> None:
    """Make the ``n``-th checkpoint write raise :class:`Crash` once it is on disk."""
    real = results.atomic_write
    count = {"ckpt": 0}

    def write(path, fill):
        out = real(path, fill)
        if str(path).endswith(".ckpt.h5"):
            count["ckpt"] += 1
            if count["ckpt"] == n:
                raise Crash(path)
        return out

    monkeypatch.setattr(results, "atomic_write", write)


def crash_and_resume(monkeypatch: pytest.MonkeyPatch, out: Path, run: Callable,
                     overrides: dict, crash_at: int) -> Path:
    """Run ``run(True, out, 0, ...)`` (a quick mode) with a checkpoint every step until the
    ``crash_at``-th checkpoint write, check that a plain rerun is refused and that ``--resume``
    finishes without leaving a checkpoint; returns the finished run's file."""
    crash_after_checkpoints(monkeypatch, crash_at)
    with pytest.raises(Crash):
        run(True, out, 0, overrides=overrides, options=EVERY)
    monkeypatch.undo()
    with pytest.raises(durable.RunExistsError, match="--resume to continue"):
        run(True, out, 0, overrides=overrides, options=QUIET)
    assert run(True, out, 0, overrides=overrides, options=RESUME) == 0
    assert not list(Path(out).glob("*.ckpt.h5"))
    (path,) = results.find_runs(out)
    return path
