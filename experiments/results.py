"""HDF5 results: one file per run, written atomically and read back with the same structure.

Layout of a file
----------------
- root attributes: ``experiment``, ``config`` (JSON), ``versions`` (JSON), ``git_commit``,
  ``backend``, ``device``, ``created``; files written since issue 10 add ``status``
  (``"finished"`` or ``"checkpoint"``), ``run_id`` (see :mod:`experiments.durable`),
  ``git_dirty`` (bool), ``git_diff_sha256``, ``blas`` (JSON list of threadpoolctl's records),
  ``blas_library``, ``blas_threads`` and ``data`` (JSON: the data set and its checksum);
- group ``config`` with one attribute per configuration entry (nested keys joined by ``.``),
  readable without JSON;
- one dataset per metric under ``metrics/`` (first axis = iteration or row), each with a
  ``units`` attribute (``"1"`` when dimensionless) and any further attributes the experiment
  gives (e.g. ``never_reached`` for a sentinel value); every experiment stores its total wall
  time as the scalar metric ``wall_time_s``;
- one compound dataset per table under ``tables/`` (a column per key; ``h5py`` returns a NumPy
  structured array, ``pandas.DataFrame(f["tables/NAME"][()])`` a data frame). A table whose
  rows lack some keys has a boolean attribute ``present`` (rows x columns); columns whose values
  are not numbers, booleans or strings are JSON text, listed in the attribute ``json_columns``;
- optional group ``checkpoint/`` (:func:`write_checkpoint_group`): the state a training loop
  needs to continue (parameters, optimiser state, RNG state, loop position).

Files written before issue 10 (tables as JSON attributes of ``tables``, no units) still load.
:func:`save` writes to a temporary name in the same folder, flushes, fsyncs and renames it over
``path`` (:func:`atomic_write`), so a kill at any instant leaves the old file or the new one.

The root attributes' provenance (versions, git state, BLAS, device) is gathered by
:func:`experiments.provenance.run_metadata`, re-exported here. The encoding of the ``config``
attributes and the tables is :mod:`experiments._tables`; run-file names (:func:`find_runs`,
:func:`output_path`, the rerun command in :func:`load`'s errors) are
:mod:`experiments._runfiles`, re-exported here. The sweep index of a results folder
(:func:`sweep_table` and the other names of :mod:`experiments.sweepindex`) is written with this
module's tables and stays importable from here.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ._runfiles import _rerun_hint, find_runs, output_path
from ._tables import _attr_value, _dumps, _flat_config, _read_table, _write_table
from .provenance import run_metadata

__all__ = ["output_path", "run_metadata", "save", "load", "load_checkpoint", "atomic_write",
           "write_results", "write_checkpoint_group", "find_runs", "default_unit",
           "ResultsFileError",
           # defined in experiments.sweepindex, resolved by __getattr__ at the end of this file
           "SWEEP_INDEX", "write_sweep_index", "read_sweep_rows", "sweep_table"]  # noqa: F822

#: Root attributes every file written by :func:`save` has.
ROOT_ATTRS = ("experiment", "config", "versions", "git_commit", "backend", "device", "created")

#: Root attributes added by issue 10 (absent from older files; :func:`load` returns None).
EXTRA_ATTRS = ("status", "run_id", "git_dirty", "git_diff_sha256", "blas_library",
               "blas_threads")


class ResultsFileError(ValueError):
    """A path given to :func:`load` is not a complete results file written by :func:`save`
    (a directory, an empty, truncated or corrupt file, a non-HDF5 file, or an HDF5 file of
    another layout). The message names the path, says what is wrong and how to regenerate it."""


def default_unit(name: str) -> str:
    """The unit a metric name implies: seconds for ``*_s``/wall/time, evaluations for NFE,
    ``"1"`` (dimensionless) otherwise."""
    leaf = name.rsplit(".", 1)[-1]
    if name.endswith("_s") or "_s." in name or leaf.startswith("wall") or leaf.endswith("time"):
        return "s"
    if "nfe" in name:
        return "function evaluations"
    if "acc" in leaf:
        return "fraction"
    return "1"


# --------------------------------------------------------------------------------- writing
def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_replace(tmp: Path, path: Path) -> None:
    """fsync ``tmp``, rename it over ``path`` (atomic on POSIX) and fsync the folder."""
    _fsync_path(tmp)
    os.replace(tmp, path)
    try:
        _fsync_path(path.parent)
    except OSError:  # pragma: no cover - folders cannot be opened on some platforms
        pass


def temporary_name(path: Path) -> Path:
    """``.NAME.PID.partial`` beside ``path``: where :func:`atomic_write` builds the file."""
    return path.with_name(f".{path.name}.{os.getpid()}.partial")


def atomic_write(path, fill) -> Path:
    """Build an HDF5 file with ``fill(h5py.File)`` under a temporary name, then replace ``path``.

    The temporary file is closed (flushed), fsynced and renamed over ``path``
    (:func:`durable_replace`); on any error or interruption it is removed and ``path`` is left
    as it was. A kill at any instant leaves either the old ``path`` or the new one.
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        with h5py.File(tmp, "w") as f:
            fill(f)
        durable_replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _check_names(metrics: dict, tables: dict) -> dict:
    bad = [k for k in list(metrics) + list(tables) if "/" in k or not k]
    if bad:
        raise ValueError(f"metric/table names {bad} must be non-empty and free of '/' (HDF5 would "
                         f"nest them); use '.' or '_' instead.")
    arrays = {name: np.asarray(values) for name, values in metrics.items()}
    bad = {name: a.dtype.str for name, a in arrays.items() if a.dtype.kind not in "biufc"}
    if bad:
        raise ValueError(f"metrics must be numeric or boolean arrays; got dtypes {bad}. Put text "
                         f"and mixed records in `tables` (lists of dicts) instead.")
    bad = [k for k, rows in tables.items() if not isinstance(rows, list)
           or not all(isinstance(r, dict) for r in rows)]
    if bad:
        raise ValueError(f"tables {bad} must be lists of dicts (one dict per row).")
    return arrays


def write_results(f, experiment: str, config: dict, metrics: dict, tables: dict | None = None,
                  meta: dict | None = None, units: dict | None = None,
                  metric_attrs: dict | None = None, status: str = "finished",
                  run_id: str = "", data: dict | None = None) -> None:
    """Fill an open, empty ``h5py.File`` with the results layout (see the module docstring).

    Arguments as for :func:`save`; ``status`` is ``"finished"`` or ``"checkpoint"``.
    """
    tables = tables or {}
    arrays = _check_names(metrics, tables)
    meta = meta or run_metadata()
    f.attrs["experiment"] = experiment
    f.attrs["config"] = _dumps(config)
    f.attrs["versions"] = json.dumps(meta["versions"], sort_keys=True)
    for key in ("git_commit", "backend", "device", "created"):
        f.attrs[key] = str(meta[key])
    f.attrs["status"] = status
    f.attrs["run_id"] = run_id
    f.attrs["git_dirty"] = bool(meta.get("git_dirty", False))
    f.attrs["git_diff_sha256"] = str(meta.get("git_diff_sha256", ""))
    f.attrs["blas"] = json.dumps(meta.get("blas", []), sort_keys=True)
    f.attrs["blas_library"] = str(meta.get("blas_library", "unknown"))
    f.attrs["blas_threads"] = int(meta.get("blas_threads", -1))
    f.attrs["data"] = _dumps(data or {})
    cgrp = f.create_group("config")
    for key, value in _flat_config(config):
        cgrp.attrs[key] = _attr_value(value)
    grp = f.create_group("metrics")
    for name, values in arrays.items():
        ds = grp.create_dataset(name, data=values)
        ds.attrs["units"] = (units or {}).get(name, default_unit(name))
        for key, value in (metric_attrs or {}).get(name, {}).items():
            ds.attrs[key] = value
    tgrp = f.create_group("tables")
    for name, rows in tables.items():
        _write_table(tgrp, name, rows)


def save(path, experiment: str, config: dict, metrics: dict, tables: dict | None = None,
         meta: dict | None = None, units: dict | None = None, metric_attrs: dict | None = None,
         checkpoint: dict | None = None, run_id: str = "", data: dict | None = None) -> Path:
    """Write one run to ``path`` atomically (parents created). Returns the path.

    Parameters
    ----------
    path : str or Path
    experiment : str
    config : dict
        JSON-serialisable configuration (a JSON attribute and the ``config`` group).
    metrics : dict of str -> array_like
        Numeric arrays (per-iteration metrics, NFE, timings, ...).
    tables : dict of str -> list of dict, optional
        Row tables, stored as compound datasets.
    meta : dict, optional
        Output of :func:`run_metadata`; computed when omitted.
    units : dict of str -> str, optional
        Unit of each metric (default :func:`default_unit`).
    metric_attrs : dict of str -> dict, optional
        Further attributes of a metric's dataset (e.g. ``{"never_reached": -1.0}``).
    checkpoint : dict, optional
        ``{"arrays": {...}, "position": {...}, "rng_state": {...}}`` stored under
        ``checkpoint/`` (:func:`write_checkpoint_group`): the final training state.
    run_id : str, optional
        The run's identity (file stem) as :mod:`experiments.durable` names it.
    data : dict, optional
        The data set: name, sizes and checksum.
    """
    _check_names(metrics, tables or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = meta or run_metadata()

    def fill(f):
        write_results(f, experiment, config, metrics, tables, meta, units, metric_attrs,
                      "finished", run_id, data)
        if checkpoint is not None:
            write_checkpoint_group(f, **checkpoint)

    return atomic_write(path, fill)


def write_checkpoint_group(f, arrays: dict, position: dict, rng_state: dict | None = None):
    """Group ``checkpoint/``: ``arrays/`` (one dataset each, exact dtype), the loop position
    and the ``numpy.random.Generator`` bit-generator state (JSON attributes)."""
    grp = f.create_group("checkpoint")
    agrp = grp.create_group("arrays")
    for name, value in arrays.items():
        agrp.create_dataset(name, data=np.asarray(value))
    grp.attrs["position"] = _dumps(position)
    grp.attrs["rng_state"] = _dumps(rng_state)


# --------------------------------------------------------------------------------- reading
def _results_path(path) -> Path:
    """``path`` as a :class:`Path` to an existing, non-empty HDF5 file; the project's error
    naming the path otherwise (checked before h5py opens it, whose errors omit the path)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a str or os.PathLike naming a results file, got "
                        f"{type(path).__name__} {path!r}; e.g. "
                        f"load(find_runs('results', 'digits')[0]).")
    path = Path(path)
    shown = repr(str(path))
    if not path.exists():
        raise FileNotFoundError(f"`path` {shown} does not exist; run the experiment first "
                                f"(python -m experiments NAME), or check the name "
                                f"(experiments.results.find_runs(DIR) lists the run files).")
    if path.is_dir():
        found = sorted(p.name for p in path.glob("*.h5"))[:8]
        inside = f" it holds {found}" if found else " it holds no .h5 file"
        raise ResultsFileError(f"`path` {shown} is a directory, not a results file;{inside}. "
                               f"Pass one file, e.g. find_runs({str(path)!r}, NAME)[0] or "
                               f"output_path({str(path)!r}, NAME, quick).")
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


def _open(path: Path):
    try:
        return h5py.File(path, "r")
    except OSError as err:
        raise ResultsFileError(
            f"`path` {str(path)!r} is an HDF5 file that cannot be opened: it is truncated or "
            f"corrupt (HDF5 says: {err}); if a run is still writing it, wait for it to finish, "
            f"else {_rerun_hint(path)}.") from err


def _attr(f, key):
    value = f.attrs[key]
    return value.item() if isinstance(value, np.generic) else value


def load(path) -> dict:
    """Read a file written by :func:`save` (or a durable run's checkpoint file).

    Parameters
    ----------
    path : str or os.PathLike
        The ``.h5`` file (see :func:`find_runs`).

    Returns
    -------
    dict
        ``{"experiment", "config", "versions", "git_commit", "backend", "device", "created",
        "status", "run_id", "git_dirty", "git_diff_sha256", "blas", "blas_library",
        "blas_threads", "data", "metrics": {name: ndarray}, "units": {name: str},
        "metric_attrs": {name: dict}, "tables": {name: list of dict}}``; the issue-10 entries
        are None for older files (whose ``status`` is ``"finished"``).

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
    with _open(path) as f:
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
            for key in EXTRA_ATTRS:
                out[key] = _attr(f, key) if key in f.attrs else None
            out["status"] = out["status"] or "finished"
            for key in ("blas", "data"):
                field = f"the attribute {key!r}"
                out[key] = json.loads(f.attrs[key]) if key in f.attrs else None
            out["metrics"], out["units"], out["metric_attrs"] = {}, {}, {}
            for name, ds in f["metrics"].items():
                field = f"the metric 'metrics/{name}'"
                out["metrics"][name] = ds[()]
                attrs = {k: _attr(ds, k) for k in ds.attrs}
                out["units"][name] = attrs.pop("units", None)
                out["metric_attrs"][name] = attrs
            out["tables"] = {}
            field = "the group 'tables'"
            tables = f["tables"] if "tables" in f else None
            for name, value in (tables.attrs.items() if tables is not None else ()):
                field = f"the table {name!r}"          # files before issue 10: JSON rows
                out["tables"][name] = json.loads(value)
            for name, ds in (tables.items() if tables is not None else ()):
                field = f"the table 'tables/{name}'"
                out["tables"][name] = _read_table(ds)
        except (OSError, KeyError, ValueError, TypeError, AttributeError, IndexError) as err:
            raise ResultsFileError(
                f"`path` {shown} is damaged: {field} cannot be read "
                f"({type(err).__name__}: {err}); {_rerun_hint(path)}.") from err
    return out


def load_checkpoint(path) -> dict:
    """The ``checkpoint/`` group of a run file: ``{"arrays": {name: ndarray}, "position": dict,
    "rng_state": dict or None}``.

    Raises
    ------
    ResultsFileError
        The file is not a results file (as :func:`load`), has no checkpoint, or the checkpoint
        cannot be read; the message names the path and what to do.
    """
    path = _results_path(path)
    shown = repr(str(path))
    with _open(path) as f:
        if not isinstance(f.get("checkpoint"), h5py.Group):
            raise ResultsFileError(
                f"`path` {shown} holds no checkpoint (group 'checkpoint'): it was written by an "
                f"experiment without a training loop, or before issue 10; {_rerun_hint(path)}.")
        try:
            grp = f["checkpoint"]
            return {"arrays": {k: ds[()] for k, ds in grp["arrays"].items()},
                    "position": json.loads(grp.attrs["position"]),
                    "rng_state": json.loads(grp.attrs["rng_state"])}
        except (OSError, KeyError, ValueError, TypeError) as err:
            raise ResultsFileError(
                f"`path` {shown} is damaged: its checkpoint cannot be read "
                f"({type(err).__name__}: {err}); {_rerun_hint(path)}.") from err


# --------------------------------------------------------------------------------- moved names
#: Names of :mod:`experiments.sweepindex` that stay importable from here (they were defined
#: here). Resolved on first use: that module imports this one, so a plain import would be
#: circular.
_SWEEP_INDEX_NAMES = frozenset({"SWEEP_INDEX", "SWEEP_FORMAT", "write_sweep_index",
                                "read_sweep_rows", "sweep_table"})


def __getattr__(name: str) -> Any:
    """``experiments.results.sweep_table`` and the other sweep-index names (PEP 562)."""
    if name in _SWEEP_INDEX_NAMES:
        from . import sweepindex
        return getattr(sweepindex, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
