"""Mean +- standard deviation over seeds of finished runs, as a Markdown table.

A comparison is only claimed when its difference exceeds the spread over seeds (issue 11), so
every results table of the documentation is produced by this module from the run files::

    python -m experiments seed-table DIR --experiment anodev2_classify --by model \\
        --values test_acc,mean_epoch_time_s
    python -m experiments seed-table DIR --experiment cnf2d --table comparison \\
        --by dataset,trace --values node_epochs_to_level,node_ew_epochs_to_level

Rows come either from each run's scalar metrics and configuration (the default: one row per
run, ``--by`` naming configuration keys such as ``model``), or from one of the run's HDF5
tables (``--table NAME``: every row of that table in every run, ``--by`` naming its columns).
Rows that agree on ``--by`` are grouped; each value is reported as ``mean +- std (n)``, the
sample standard deviation (ddof 1) over the group's rows. Booleans are counted (``k/n``).

A per-epoch metric (an array) is reduced to one number per run by a suffix: ``NAME:mean``,
``NAME:last``, ``NAME:min``, ``NAME:max`` or ``NAME:sum``, e.g.
``--values test_acc,nfe_forward_per_batch:mean`` (the forward NFE per batch averaged over a run's
epochs, then mean +- std over seeds).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

import numpy as np

from . import results
from .durable import ExperimentError
from .registry import settings

__all__ = ["SeedTableError", "REDUCTIONS", "run_rows", "group_rows", "format_cell", "markdown",
           "seed_table"]

#: Reductions of an array metric to one number per run (``NAME:REDUCTION``).
REDUCTIONS = {"mean": np.mean, "last": lambda a: a[-1], "min": np.min, "max": np.max,
              "sum": np.sum}


class SeedTableError(ExperimentError):
    """The folder holds no matching finished run, or a named key or value is missing."""


def _scalar(value: Any) -> Any:
    """A Python scalar of a 0-d or size-1 array (or the value itself); None for anything else."""
    if isinstance(value, np.ndarray):
        return value.reshape(-1)[0].item() if value.size == 1 else None
    return value.item() if isinstance(value, np.generic) else value


def _metric(value: Any) -> Any:
    """:func:`_scalar` of ``value``, or a numeric array as it is (reduced by ``NAME:REDUCTION``);
    None for anything else."""
    scalar = _scalar(value)
    if scalar is None and isinstance(value, np.ndarray) and value.dtype.kind in "biuf" \
            and value.size:
        return value
    return scalar


def _value(row: dict, name: str) -> Any:
    """``row[name]``, or the reduction ``REDUCTION`` of the array ``row[NAME]`` for
    ``name = "NAME:REDUCTION"``."""
    base, _, reduction = name.partition(":")
    value = row[base]
    if reduction:
        return REDUCTIONS[reduction](np.asarray(value, dtype=np.float64)).item()
    if isinstance(value, np.ndarray):
        raise SeedTableError(f"{base!r} holds one value per epoch (shape {value.shape}); name "
                             f"a reduction, e.g. {base}:mean (one of "
                             f"{', '.join(REDUCTIONS)}).")
    return value


def run_rows(folder, experiment: str, table: Optional[str] = None, quick: bool = False) -> list:
    """The rows to aggregate: one per finished run (its configuration and scalar metrics, plus
    ``seed``), or every row of its table ``table`` (plus ``seed``).

    Raises
    ------
    SeedTableError
        No finished run of ``experiment`` in ``folder``, or a run without table ``table``.
    """
    paths = results.find_runs(folder, experiment, quick=quick)
    if not paths:
        raise SeedTableError(f"no finished {'quick ' if quick else ''}run of {experiment!r} "
                             f"in {str(folder)!r}; run them first (python -m experiments sweep "
                             f"{experiment} ... --out {folder}).")
    rows = []
    for path in paths:
        run = results.load(path)
        seed = int(run["config"]["seed"])
        if table is None:
            metrics = {k: _metric(v) for k, v in run["metrics"].items()}
            rows.append({**settings(experiment, run["config"]),
                         **{k: v for k, v in metrics.items() if v is not None},
                         "seed": seed})
            continue
        if table not in run["tables"]:
            raise SeedTableError(f"{path.name} has no table {table!r}; its tables are "
                                 f"{sorted(run['tables'])}.")
        rows.extend({**{k: _scalar(v) for k, v in row.items()}, "seed": seed}
                    for row in run["tables"][table])
    return rows


def group_rows(rows: Sequence[dict], by: Sequence[str], values: Sequence[str]) -> list:
    """Group ``rows`` on the keys ``by`` (in order of first appearance) and collect ``values``.

    Returns
    -------
    list of dict
        ``{"key": tuple, "seeds": sorted list, VALUE: list of the group's values}`` per group.

    Raises
    ------
    SeedTableError
        A key of ``by`` or a name of ``values`` missing from a row, an unknown reduction, or an
        array value named without one.
    """
    unknown = sorted({v.partition(":")[2] for v in values if ":" in v} - set(REDUCTIONS))
    if unknown:
        raise SeedTableError(f"unknown reduction(s) {unknown} in --values; use one of "
                             f"{', '.join(REDUCTIONS)} (e.g. nfe_forward_per_batch:mean).")
    groups: dict = {}
    for row in rows:
        missing = [k for k in (*by, *(v.partition(":")[0] for v in values)) if k not in row]
        if missing:
            raise SeedTableError(f"rows have no {missing}; available: {sorted(row)}.")
        key = tuple(row[k] for k in by)
        group = groups.setdefault(key, {"key": key, "seeds": set(),
                                        **{v: [] for v in values}})
        group["seeds"].add(row["seed"])
        for v in values:
            group[v].append(_value(row, v))
    return [dict(g, seeds=sorted(g["seeds"])) for g in groups.values()]


def format_cell(samples: Sequence, digits: int = 4) -> str:
    """``mean +- std (n)`` with ``digits`` significant digits of the mean (the std to the same
    decimal place); ``k/n`` for booleans; ``mean (n)`` for a single sample."""
    if all(isinstance(s, (bool, np.bool_)) for s in samples):
        return f"{sum(bool(s) for s in samples)}/{len(samples)}"
    x = np.asarray(samples, dtype=np.float64)
    mean = float(np.mean(x))
    scale = 0 if mean == 0 or not math.isfinite(mean) else math.floor(math.log10(abs(mean)))
    places = max(0, digits - 1 - scale)
    if len(x) == 1:
        return f"{mean:.{places}f} (1)"
    return f"{mean:.{places}f} +- {float(np.std(x, ddof=1)):.{places}f} ({len(x)})"


def markdown(groups: Sequence[dict], by: Sequence[str], values: Sequence[str],
             digits: int = 4) -> str:
    """The groups of :func:`group_rows` as a Markdown table (one row per group)."""
    head = [*by, *values, "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for g in groups:
        cells = [str(k) for k in g["key"]] + [format_cell(g[v], digits) for v in values]
        cells.append(",".join(str(s) for s in g["seeds"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def seed_table(folder, experiment: str, by: Sequence[str], values: Sequence[str],
               table: Optional[str] = None, quick: bool = False, digits: int = 4) -> str:
    """:func:`markdown` of the runs of ``experiment`` in ``folder`` (see the module notes)."""
    if not Path(folder).is_dir():
        raise SeedTableError(f"{str(folder)!r} is not a folder; pass the --out folder of the "
                             "runs.")
    groups = group_rows(run_rows(folder, experiment, table, quick), by, values)
    return markdown(groups, by, values, digits)
