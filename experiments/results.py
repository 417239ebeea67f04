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
:func:`experiments.provenance.run_metadata`, re-exported here. The sweep index of a results
folder (:func:`sweep_table` and the other names of :mod:`experiments.sweepindex`) is written
with this module's tables and stays importable from here.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np

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

#: A run file's name: ``EXPERIMENT[_quick]-CONFIGHASH-seedN[.ckpt].h5`` (experiments.durable).
RUN_NAME = re.compile(r"^(?P<name>[A-Za-z0-9_]+?)(?P<quick>_quick)?-(?P<hash>[0-9a-f]{10})"
                      r"-seed(?P<seed>\d+)(?P<ckpt>\.ckpt)?$")


class ResultsFileError(ValueError):
    """A path given to :func:`load` is not a complete results file written by :func:`save`
    (a directory, an empty, truncated or corrupt file, a non-HDF5 file, or an HDF5 file of
    another layout). The message names the path, says what is wrong and how to regenerate it."""


def output_path(out, experiment: str, quick: bool, suffix: str = ".h5") -> Path:
    """``out/EXPERIMENT.h5`` for a full run, ``out/EXPERIMENT_quick.h5`` for a quick one
    (the names before issue 10; durable runs are named by :func:`experiments.durable.run_paths`).
    """
    return Path(out) / f"{experiment}{'_quick' if quick else ''}{suffix}"


def find_runs(out, experiment: str | None = None, quick: bool | None = None,
              seed: int | None = None) -> list:
    """Finished run files under ``out`` (named ``EXPERIMENT[_quick]-HASH-seedN.h5``), sorted.

    Parameters
    ----------
    out : str or Path
        The ``--out`` folder.
    experiment, quick, seed : optional
        Keep only runs of this experiment / mode / seed.

    Returns
    -------
    list of Path
        Checkpoints (``*.ckpt.h5``) and temporary files are not listed.
    """
    found = []
    for path in sorted(Path(out).glob("*.h5")):
        m = RUN_NAME.match(path.name[:-3])
        if m is None or m["ckpt"]:
            continue
        if experiment is not None and m["name"] != experiment:
            continue
        if quick is not None and bool(m["quick"]) != bool(quick):
            continue
        if seed is not None and int(m["seed"]) != int(seed):
            continue
        found.append(path)
    return found


def _json_default(value):
    """JSON form of what :mod:`json` cannot encode: NumPy scalars/arrays as numbers/lists,
    anything else (paths, dtypes) as its ``str``."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _dumps(value) -> str:
    return json.dumps(value, sort_keys=True, default=_json_default)


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


def _flat_config(config: dict, prefix: str = ""):
    """``(key, value)`` pairs of a nested configuration, keys joined by ``.``."""
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flat_config(value, f"{name}.")
        else:
            yield name, value


def _attr_value(value):
    """``value`` as an HDF5 attribute: numbers, booleans, strings and numeric lists as they are,
    None as ``"None"``, anything else as JSON text."""
    if isinstance(value, (bool, int, float, str, np.generic)):
        return value
    if value is None:
        return "None"
    arr = np.asarray(value, dtype=object)
    if arr.ndim >= 1 and arr.size and all(isinstance(v, (bool, int, float, np.generic))
                                          for v in arr.ravel()):
        return np.asarray(value)
    return _dumps(value)


def _column_kind(values) -> str:
    """``"bool"``, ``"int"``, ``"float"``, ``"str"`` or ``"json"`` for a table column."""
    if all(isinstance(v, (bool, np.bool_)) for v in values):
        return "bool"
    numbers = [isinstance(v, (int, float, np.integer, np.floating))
               and not isinstance(v, (bool, np.bool_)) for v in values]
    if all(numbers):
        ints = all(isinstance(v, (int, np.integer)) for v in values)
        return "int" if ints else "float"
    if all(isinstance(v, str) for v in values):
        return "str"
    return "json"


_KIND_DTYPE = {"bool": np.bool_, "int": np.int64, "float": np.float64}
_KIND_FILL = {"bool": False, "int": -1, "float": np.nan, "str": "", "json": ""}


def _table_array(rows: list):
    """Rows (dicts) as ``(structured array, kinds, present mask)``; columns in first-seen order."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    present = np.array([[k in row and row[k] is not None for k in columns] for row in rows],
                       dtype=bool).reshape(len(rows), len(columns))
    kinds = [_column_kind([row[k] for row in rows if row.get(k) is not None]) for k in columns]
    dtype = [(k, _KIND_DTYPE.get(kind, h5py.string_dtype()))
             for k, kind in zip(columns, kinds, strict=True)]
    table = np.zeros(len(rows), dtype=dtype)
    for j, (key, kind) in enumerate(zip(columns, kinds, strict=False)):
        cells = [row.get(key) if present[i, j] else _KIND_FILL[kind] for i, row in enumerate(rows)]
        if kind == "json":
            cells = [_dumps(c) if present[i, j] else "" for i, c in enumerate(cells)]
        elif kind == "str":
            cells = [str(c) for c in cells]
        table[key] = np.array(cells, dtype=object) if kind in ("str", "json") else cells
    return table, kinds, present


def _write_table(group, name: str, rows: list) -> None:
    if not rows:
        ds = group.create_dataset(name, data=np.zeros(0, dtype=[("empty", np.int8)]))
        ds.attrs["empty"] = True
        return
    table, kinds, present = _table_array(rows)
    ds = group.create_dataset(name, data=table)
    ds.attrs["kinds"] = np.array(kinds, dtype=h5py.string_dtype())
    json_cols = [k for k, kind in zip(table.dtype.names, kinds, strict=False) if kind == "json"]
    if json_cols:
        ds.attrs["json_columns"] = np.array(json_cols, dtype=h5py.string_dtype())
    if not present.all():
        ds.attrs["present"] = present


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
def _rerun_hint(path: Path) -> str:
    """How to regenerate ``path``: the exact command when its name is a run file's
    (``NAME[_quick]-HASH-seedN[.ckpt].h5``, or the older ``NAME[_quick].h5``) for a registered
    experiment, else the generic one (with its folder)."""
    stem = path.name[:-3] if path.name.endswith(".h5") else path.stem
    run = RUN_NAME.match(stem)
    if run is not None:
        name, quick, seed = run["name"], bool(run["quick"]), f" --seed {run['seed']}"
    else:
        quick = stem.endswith("_quick")
        name, seed = (stem[:-len("_quick")] if quick else stem), ""
    out = repr(str(path.parent))
    try:                    # imported only on this error path (it imports every experiment)
        from .registry import EXPERIMENTS
    except Exception:  # noqa: BLE001 - an error message must not fail: use the generic hint
        EXPERIMENTS = {}
    if path.suffix == ".h5" and name in EXPERIMENTS:
        extra = (" (with the same --set options, if it had any)" if run is not None else "")
        resume = (" --resume" if run is not None and run["ckpt"] else "")
        return (f"rerun the experiment to regenerate it: python -m experiments {name}"
                f"{' --quick' if quick else ''}{seed} --out {out}{resume}{extra}")
    return (f"rerun the experiment that wrote it to regenerate it: python -m experiments NAME "
            f"[--quick] --out {out} (`python -m experiments --list` lists the names)")


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


def _cell(value, kind: str):
    """A table cell as the Python value that was saved."""
    if kind == "bool":
        return bool(value)
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    text = value.decode() if isinstance(value, bytes) else str(value)
    return json.loads(text) if kind == "json" else text


def _read_table(ds) -> list:
    """Rows (dicts) of a compound table dataset written by :func:`_write_table`."""
    if ds.attrs.get("empty", False):
        return []
    table = ds[()]
    columns = table.dtype.names
    kinds = [k.decode() if isinstance(k, bytes) else str(k) for k in ds.attrs["kinds"]]
    present = ds.attrs["present"] if "present" in ds.attrs else np.ones(
        (len(table), len(columns)), dtype=bool)
    pairs = list(enumerate(zip(columns, kinds, strict=True)))
    return [{c: _cell(table[i][c], kind) for j, (c, kind) in pairs if present[i, j]}
            for i in range(len(table))]


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
