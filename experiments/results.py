"""HDF5 results: one file per run, written and read back with the same structure.

Layout of a file
----------------
- root attributes: ``experiment``, ``config`` (JSON), ``versions`` (JSON), ``git_commit``,
  ``backend``, ``device``, ``created``;
- one dataset per metric under ``metrics/`` (first axis = iteration or row); every experiment
  stores its total wall time as the scalar metric ``wall_time_s``;
- optional string tables under ``tables/`` (JSON-encoded rows).

NumPy scalars and arrays in ``config`` and in table rows are stored as the equivalent JSON
numbers, booleans and lists, so :func:`load` returns the values that were passed to :func:`save`.
A full run writes ``NAME.h5``, a quick run ``NAME_quick.h5`` (:func:`output_path`), so a smoke
run never overwrites a full run's results.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
from pathlib import Path

import h5py
import numpy as np
import scipy

__all__ = ["output_path", "run_metadata", "save", "load"]


def output_path(out, experiment: str, quick: bool, suffix: str = ".h5") -> Path:
    """``out/EXPERIMENT.h5`` for a full run, ``out/EXPERIMENT_quick.h5`` for a quick one."""
    return Path(out) / f"{experiment}{'_quick' if quick else ''}{suffix}"


def _json_default(value):
    """JSON form of what :mod:`json` cannot encode: NumPy scalars/arrays as numbers/lists,
    anything else (paths, dtypes) as its ``str``."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _cpu_description() -> str:
    """``"cpu (<machine>, <n> usable cores)"``: what the timings of a NumPy run ran on."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count()
    return f"cpu ({platform.machine() or 'unknown'}, {cores} usable cores)"


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run_metadata(backend: str = "numpy", device: str | None = None) -> dict:
    """Versions, git commit, backend and device of this run (default device: this CPU)."""
    import adjointcore
    versions = {"python": platform.python_version(), "numpy": np.__version__,
                "scipy": scipy.__version__, "h5py": h5py.__version__,
                "adjointcore": adjointcore.__version__}
    return {"versions": versions, "git_commit": _git_commit(), "backend": backend,
            "device": _cpu_description() if device is None else device, "created": _dt.datetime.now(_dt.timezone.utc).isoformat()}


def save(path, experiment: str, config: dict, metrics: dict, tables: dict | None = None,
         meta: dict | None = None) -> Path:
    """Write one run to ``path`` (parents created). Returns the path.

    Parameters
    ----------
    path : str or Path
    experiment : str
    config : dict
        JSON-serialisable configuration (stored as an attribute).
    metrics : dict of str -> array_like
        Numeric arrays (per-iteration metrics, NFE, timings, ...).
    tables : dict of str -> list of dict, optional
        Row tables (JSON-serialisable).
    meta : dict, optional
        Output of :func:`run_metadata`; computed when omitted.
    """
    bad = [k for k in list(metrics) + list(tables or {}) if "/" in k or not k]
    if bad:
        raise ValueError(f"metric/table names {bad} must be non-empty and free of '/' (HDF5 would "
                         f"nest them); use '.' or '_' instead.")
    arrays = {name: np.asarray(values) for name, values in metrics.items()}
    bad = {name: a.dtype.str for name, a in arrays.items() if a.dtype.kind not in "biufc"}
    if bad:
        raise ValueError(f"metrics must be numeric or boolean arrays; got dtypes {bad}. Put text "
                         f"and mixed records in `tables` (lists of dicts) instead.")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = meta or run_metadata()
    with h5py.File(path, "w") as f:
        f.attrs["experiment"] = experiment
        f.attrs["config"] = json.dumps(config, sort_keys=True, default=_json_default)
        f.attrs["versions"] = json.dumps(meta["versions"], sort_keys=True)
        for key in ("git_commit", "backend", "device", "created"):
            f.attrs[key] = str(meta[key])
        grp = f.create_group("metrics")
        for name, values in arrays.items():
            grp.create_dataset(name, data=values)
        tgrp = f.create_group("tables")
        for name, rows in (tables or {}).items():
            tgrp.attrs[name] = json.dumps(rows, default=_json_default)
    return path


def load(path) -> dict:
    """Read a file written by :func:`save`.

    Returns
    -------
    dict
        ``{"experiment", "config", "versions", "git_commit", "backend", "device", "created",
        "metrics": {name: ndarray}, "tables": {name: list of dict}}``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"`path` {str(path)!r} does not exist; run the experiment first "
                                f"(python -m experiments NAME).")
    with h5py.File(path, "r") as f:
        out = {"experiment": str(f.attrs["experiment"]),
               "config": json.loads(f.attrs["config"]),
               "versions": json.loads(f.attrs["versions"])}
        for key in ("git_commit", "backend", "device", "created"):
            out[key] = str(f.attrs[key])
        out["metrics"] = {name: ds[()] for name, ds in f["metrics"].items()}
        out["tables"] = {name: json.loads(v) for name, v in f["tables"].attrs.items()}
    return out
