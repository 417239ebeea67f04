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

__all__ = ["output_path", "run_metadata", "save", "load", "ResultsFileError"]

#: Root attributes every file written by :func:`save` has.
ROOT_ATTRS = ("experiment", "config", "versions", "git_commit", "backend", "device", "created")


class ResultsFileError(ValueError):
    """A path given to :func:`load` is not a complete results file written by :func:`save`
    (a directory, an empty, truncated or corrupt file, a non-HDF5 file, or an HDF5 file of
    another layout). The message names the path, says what is wrong and how to regenerate it."""


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


def _rerun_hint(path: Path) -> str:
    """How to regenerate ``path``: the exact command when its name is ``NAME.h5`` or
    ``NAME_quick.h5`` for a registered experiment, else the generic one (with its folder)."""
    stem = path.stem
    quick = stem.endswith("_quick")
    name = stem[:-len("_quick")] if quick else stem
    out = repr(str(path.parent))
    try:                    # imported only on this error path (it imports every experiment)
        from .registry import EXPERIMENTS
    except Exception:  # noqa: BLE001 - an error message must not fail: use the generic hint
        EXPERIMENTS = {}
    if path.suffix == ".h5" and name in EXPERIMENTS:
        return (f"rerun the experiment to regenerate it: python -m experiments {name}"
                f"{' --quick' if quick else ''} --out {out}")
    return (f"rerun the experiment that wrote it to regenerate it: python -m experiments NAME "
            f"[--quick] --out {out} (`python -m experiments --list` lists the names)")


def _results_path(path) -> Path:
    """``path`` as a :class:`Path` to an existing, non-empty HDF5 file; the project's error
    naming the path otherwise (checked before h5py opens it, whose errors omit the path)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a str or os.PathLike naming a results file, got "
                        f"{type(path).__name__} {path!r}; e.g. "
                        f"load(output_path('results', 'digits', quick=False)).")
    path = Path(path)
    shown = repr(str(path))
    if not path.exists():
        raise FileNotFoundError(f"`path` {shown} does not exist; run the experiment first "
                                f"(python -m experiments NAME), or check the name "
                                f"(quick runs write NAME_quick.h5).")
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.h5"))[:8]
        inside = f" it holds {found}" if found else " it holds no .h5 file"
        raise ResultsFileError(f"`path` {shown} is a directory, not a results file;{inside}. "
                               f"Pass one file, e.g. output_path({str(path)!r}, NAME, quick).")
    if not path.is_file():
        raise ResultsFileError(f"`path` {shown} is not a regular file (a device, pipe or "
                               f"socket); pass the .h5 file an experiment wrote.")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"`path` {shown} is not readable by this user; fix its "
                              f"permissions (chmod u+r) or copy it somewhere readable.")
    size = path.stat().st_size
    if size == 0:
        raise ResultsFileError(f"`path` {shown} is empty (0 bytes), not a results file: the run "
                               f"that wrote it was probably interrupted before saving; "
                               f"{_rerun_hint(path)}.")
    if not h5py.is_hdf5(path):
        with open(path, "rb") as fh:
            head = fh.read(16)
        raise ResultsFileError(f"`path` {shown} is not an HDF5 file ({size} bytes starting "
                               f"{head!r}; no HDF5 signature), so not a results file written "
                               f"by experiments.results.save; pass the .h5 file the "
                               f"experiment wrote, or {_rerun_hint(path)}.")
    return path


def _layout_problems(f) -> list:
    """What a file opened with h5py lacks of the layout :func:`save` writes."""
    problems = []
    missing = [key for key in ROOT_ATTRS if key not in f.attrs]
    if missing:
        problems.append(f"the root attributes {missing}")
    if not isinstance(f.get("metrics"), h5py.Group):
        problems.append("the group 'metrics'")
    return problems


def load(path) -> dict:
    """Read a file written by :func:`save`.

    Parameters
    ----------
    path : str or os.PathLike
        The ``.h5`` file (see :func:`output_path`).

    Returns
    -------
    dict
        ``{"experiment", "config", "versions", "git_commit", "backend", "device", "created",
        "metrics": {name: ndarray}, "tables": {name: list of dict}}``.

    Raises
    ------
    TypeError
        ``path`` is not a str or path-like.
    FileNotFoundError
        ``path`` does not exist.
    PermissionError
        ``path`` is not readable.
    ResultsFileError
        ``path`` is a directory, or an empty, truncated, corrupt or non-HDF5 file, or an HDF5
        file without the layout :func:`save` writes. The message names the path, says what is
        wrong and gives the command that regenerates the file.
    """
    path = _results_path(path)
    shown = repr(str(path))
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ResultsFileError(
            f"`path` {shown} is an HDF5 file that cannot be opened: it is truncated or "
            f"corrupt (HDF5 says: {err}); if a run is still writing it, wait for it to finish, "
            f"else {_rerun_hint(path)}.") from err
    with f:
        problems = _layout_problems(f)
        if problems:
            raise ResultsFileError(
                f"`path` {shown} is an HDF5 file but not a results file written by "
                f"experiments.results.save: it lacks {' and '.join(problems)}; read it with "
                f"h5py directly, or {_rerun_hint(path)}.")
        field = "the root attributes"
        try:
            out = {"experiment": str(f.attrs["experiment"])}
            for key in ("config", "versions"):
                field = f"the attribute {key!r}"
                out[key] = json.loads(f.attrs[key])
            field = "the root attributes"
            for key in ("git_commit", "backend", "device", "created"):
                out[key] = str(f.attrs[key])
            out["metrics"] = {}
            for name, ds in f["metrics"].items():
                field = f"the metric 'metrics/{name}'"
                out["metrics"][name] = ds[()]
            out["tables"] = {}
            field = "the group 'tables'"
            tables = f["tables"].attrs.items() if "tables" in f else ()
            for name, value in tables:
                field = f"the table {name!r}"
                out["tables"][name] = json.loads(value)
        except (OSError, KeyError, ValueError, TypeError, AttributeError) as err:
            raise ResultsFileError(
                f"`path` {shown} is damaged: {field} cannot be read "
                f"({type(err).__name__}: {err}); {_rerun_hint(path)}.") from err
    return out
