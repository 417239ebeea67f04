"""The sweep index of a results folder: ``DIR/sweep.h5``, one row per run of any sweep.

:mod:`experiments.sweep` writes it (:func:`write_sweep_index`, under its own lock) before the
first task and as runs complete; :func:`sweep_table` reads it back as columns (or a pandas
data frame) and :func:`read_sweep_rows` as rows. The rows are one compound dataset ``runs``
in the table layout of :mod:`experiments.results`; the root attribute ``format`` is
:data:`SWEEP_FORMAT`. These names are also importable from :mod:`experiments.results`, where
they were defined before.
"""
from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path

import h5py
import numpy as np

from ._tables import _cell, _dumps, _read_table, _write_table
from .results import ResultsFileError, _open, atomic_write

__all__ = ["SWEEP_INDEX", "SWEEP_FORMAT", "write_sweep_index", "read_sweep_rows", "sweep_table"]

#: The sweep index of a results folder (:mod:`experiments.sweep`): one row per run.
SWEEP_INDEX = "sweep.h5"
#: Its format tag (root attribute ``format``).
SWEEP_FORMAT = "adjointcore-sweep-index/1"


def write_sweep_index(path, rows: list, attrs: dict | None = None) -> Path:
    """Replace the sweep index ``path`` atomically with ``rows`` (dicts) as the compound dataset
    ``runs`` (one column per key, see :func:`_write_table`); ``attrs`` become JSON root
    attributes. Callers serialise writers themselves (:mod:`experiments.sweep` holds a lock)."""
    def fill(f):
        f.attrs["format"] = SWEEP_FORMAT
        f.attrs["updated"] = _dt.datetime.now(_dt.timezone.utc).isoformat()
        for key, value in (attrs or {}).items():
            f.attrs[key] = _dumps(value)
        _write_table(f, "runs", rows)

    return atomic_write(Path(path), fill)


def _sweep_index_path(path) -> Path:
    path = Path(path)
    if path.is_dir() or path.suffix != ".h5":
        path = path / SWEEP_INDEX
    if not path.exists():
        raise FileNotFoundError(
            f"no sweep index {str(path)!r}: a sweep writes it before its first run and as runs "
            f"complete; run one first (python -m experiments sweep NAME --grid KEY=V1,V2 "
            f"--seeds 0-4 --out {str(path.parent)!r}).")
    return path


def _check_sweep_index(f, path: Path) -> None:
    if f.attrs.get("format") != SWEEP_FORMAT or not isinstance(f.get("runs"), h5py.Dataset):
        raise ResultsFileError(f"{str(path)!r} is not a sweep index written by "
                               f"experiments.sweep (no format {SWEEP_FORMAT!r} with a 'runs' "
                               f"table); pass the folder a sweep wrote into.")


def read_sweep_rows(path) -> tuple:
    """``(rows, attrs)`` of a sweep index (a folder or the file): rows as dicts (missing cells
    left out), root attributes JSON-decoded."""
    path = _sweep_index_path(path)
    shown = repr(str(path))
    with _open(path) as f:
        _check_sweep_index(f, path)
        try:
            attrs = {k: (json.loads(v) if k not in ("format", "updated") else str(v))
                     for k, v in f.attrs.items()}
            rows = _read_table(f["runs"])
        except (OSError, KeyError, ValueError, TypeError) as err:
            raise ResultsFileError(f"sweep index {shown} is damaged ({type(err).__name__}: "
                                   f"{err}); resubmit the sweep to rewrite it.") from err
    return rows, attrs


def sweep_table(path, frame: bool = False):
    """The sweep index of a results folder as columns (one entry per run).

    Parameters
    ----------
    path : str or Path
        The ``--out`` folder of ``python -m experiments sweep`` (or its ``sweep.h5``).
    frame : bool
        Return a ``pandas.DataFrame`` instead (needs pandas).

    Returns
    -------
    dict of str -> ndarray
        Columns in file order: ``run_id``, ``experiment``, ``quick``, ``seed``,
        ``config_hash``, ``status`` (``"pending"``, ``"finished"``, ``"check_failed"``: the
        experiment's own check failed but its file is written, ``"failed"``), ``action``
        (``"ran"``, ``"resumed"``, ``"existing"``: finished before this submission), ``error``,
        ``file``, ``worker``, ``task_wall_s`` (this submission's wall time), ``wall_time_s``
        (the run's own, all sessions), ``nfe_forward``, ``nfe_backward``, ``nfe``; then
        ``config.KEY`` for every configuration entry and ``metric.NAME`` for every metric's
        final value (a scalar, or the last entry of a per-iteration array). Numeric columns
        are NumPy arrays (a missing cell is NaN; integer and boolean columns with missing
        cells become float or object arrays); text columns are object arrays with None for a
        missing cell.

    Raises
    ------
    FileNotFoundError
        No index there (the message gives the sweep command).
    ResultsFileError
        The file is not a sweep index or is damaged.
    """
    path = _sweep_index_path(path)
    with _open(path) as f:
        _check_sweep_index(f, path)
        ds = f["runs"]
        if ds.attrs.get("empty", False):
            columns = {}
        else:
            table = ds[()]
            kinds = [k.decode() if isinstance(k, bytes) else str(k) for k in ds.attrs["kinds"]]
            present = ds.attrs["present"] if "present" in ds.attrs else np.ones(
                (len(table), len(table.dtype.names)), dtype=bool)
            columns = {name: _sweep_column(table[name], kind, present[:, j])
                       for j, (name, kind) in enumerate(zip(table.dtype.names, kinds,
                                                            strict=True))}
    if frame:
        try:
            import pandas
        except ImportError as err:
            raise ImportError("sweep_table(..., frame=True) needs pandas (pip install pandas); "
                              "without it, use the dict of columns (frame=False).") from err
        return pandas.DataFrame(columns)
    return columns


def _sweep_column(values, kind: str, present) -> np.ndarray:
    """One column of the index as described by :func:`sweep_table`."""
    if kind in ("str", "json"):
        out = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):
            out[i] = _cell(v, kind) if present[i] else None
        return out
    column = np.asarray(values)
    if present.all():
        return column
    if kind == "bool":
        out = column.astype(object)
        out[~present] = None
        return out
    out = column.astype(np.float64)
    out[~present] = np.nan
    return out
