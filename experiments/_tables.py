"""The table layout of :mod:`experiments.results`: JSON text, configuration attributes and
compound tables.

- :func:`_dumps` (with :func:`_json_default`): the canonical JSON text of a value holding NumPy
  scalars and arrays (sorted keys), used for the ``config`` root attribute, run hashes
  (:mod:`experiments.durable`) and JSON table cells;
- :func:`_flat_config` and :func:`_attr_value`: a nested configuration as the attributes of the
  ``config`` group (keys joined by ``.``);
- :func:`_write_table` and :func:`_read_table` (with :func:`_table_array`, :func:`_column_kind`
  and :func:`_cell`): rows (dicts) as one compound dataset, a column per key, and back; the
  attributes ``kinds``, ``json_columns`` and ``present`` record what the columns hold.

Shared by :mod:`experiments.results` (the ``tables/`` group of a run file) and
:mod:`experiments.sweepindex` (the sweep index).
"""
from __future__ import annotations

import json

import h5py
import numpy as np


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

