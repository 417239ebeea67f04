"""Plots of a sweep index: a metric's mean +- standard deviation over seeds against a setting.

``python -m experiments plot-sweep DIR --x KEY --y METRIC`` (:func:`plot_sweep`) reads
``DIR/sweep.h5`` (:func:`experiments.sweepindex.sweep_table`, written by
:mod:`experiments.sweep`), groups the finished runs by the settings that vary
(:func:`summarize`) and draws one line per group, with the shared settings as a caption.
"""
from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Optional

import numpy as np

from . import durable, results, sweepindex
from .sweepplan import SweepError

__all__ = ["summarize", "plot_sweep"]


def _resolve(columns: dict, name: str, prefix: str, what: str) -> str:
    for candidate in (name, f"{prefix}{name}"):
        if candidate in columns:
            return candidate
    known = sorted(c[len(prefix):] for c in columns if c.startswith(prefix))
    raise SweepError(f"{what} {name!r} is not a column of the sweep index; choose one of "
                     f"{known}.")


def _label_value(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def summarize(table: dict, x: str, y: str, experiment: Optional[str] = None) -> list:
    """Mean and standard deviation (ddof=1; 0 for one seed) of ``y`` over seeds at each ``x``.

    Parameters
    ----------
    table : dict of columns
        :func:`experiments.sweepindex.sweep_table`.
    x : str
        A configuration key (``lr`` or ``config.lr``) or any column.
    y : str
        A metric (``test_acc`` or ``metric.test_acc``) or a numeric column (``wall_time_s``).
    experiment : str, optional
        Keep only this experiment's runs.

    Returns
    -------
    list of dict
        One per line: ``label`` (the other configuration values that vary, with experiment
        and mode when several), ``fixed`` (the settings shared by every run plotted), ``x``,
        ``mean``, ``std``, ``n`` (arrays, one entry per x value), ``seeds``.
    """
    xcol = _resolve(table, x, "config.", "--x")
    ycol = _resolve(table, y, "metric.", "--y")
    keep = np.array([s == "finished" for s in table["status"]], dtype=bool)
    if experiment is not None:
        keep &= np.array([e == experiment for e in table["experiment"]])
    yvals = np.asarray(table[ycol], dtype=object)
    try:
        ynum = np.array([np.nan if v is None else float(v) for v in yvals])
    except (TypeError, ValueError):
        raise SweepError(f"--y {y!r} is not numeric (column {ycol!r}); choose a metric.") from None
    keep &= np.isfinite(ynum)
    if not keep.any():
        raise SweepError(f"no finished run has a value of {ycol!r}"
                         + (f" for experiment {experiment!r}" if experiment else "") + ".")
    idx = np.flatnonzero(keep)
    others = [c for c in table if (c.startswith("config.") and c not in (xcol, "config.seed"))
              or c in ("experiment", "quick")]

    def cell(col, i):
        v = table[col][i]
        return v.item() if isinstance(v, np.generic) else v

    varying = [c for c in others if len({json.dumps(cell(c, i), default=str) for i in idx}) > 1]
    fixed = {c.removeprefix("config."): cell(c, idx[0]) for c in others if c not in varying}
    groups = {}
    for i in idx:
        key = tuple(json.dumps(cell(c, i), default=str) for c in varying)
        groups.setdefault(key, []).append(i)
    lines = []
    for members in groups.values():
        xs = {}
        for i in members:
            xs.setdefault(json.dumps(cell(xcol, i), default=str), []).append(i)
        numeric = all(isinstance(json.loads(k), (int, float)) and not isinstance(
            json.loads(k), bool) for k in xs)
        order = sorted(xs, key=(lambda k: float(json.loads(k))) if numeric else str)
        xv = [json.loads(k) for k in order]
        vals = [ynum[xs[k]] for k in order]
        lines.append({
            "label": ", ".join(f"{c.removeprefix('config.')}={_label_value(cell(c, members[0]))}"
                               for c in varying) or ycol.removeprefix("metric."),
            "x": np.array(xv, dtype=float if numeric else object),
            "mean": np.array([v.mean() for v in vals]),
            "std": np.array([v.std(ddof=1) if len(v) > 1 else 0.0 for v in vals]),
            "n": np.array([len(v) for v in vals]),
            "seeds": sorted({int(table["seed"][i]) for i in members}),
            "fixed": fixed, "xcol": xcol, "ycol": ycol})
    return sorted(lines, key=lambda line: line["label"])


def plot_sweep(folder, x: str, y: str, png=None, experiment: Optional[str] = None,
               logx: bool = False, logy: bool = False) -> Path:
    """Draw ``y``'s mean +- std over seeds against ``x`` (one line per combination of the other
    varied settings) from the sweep index of ``folder``; returns the PNG's path (default
    ``folder/sweep-Y-vs-X.png``).

    Raises
    ------
    MissingDependencyError
        Without matplotlib (checked first).
    SweepError
        An unknown ``x`` or ``y`` (the message lists the choices), or no finished run.
    """
    from ._plotting import PLOT_MODULES, new_figure, save_figure
    durable.check_modules({"matplotlib": PLOT_MODULES["matplotlib"]}, "plot-sweep")
    folder = Path(folder)
    table = sweepindex.sweep_table(folder)
    lines = summarize(table, x, y, experiment)
    xcol, ycol = lines[0]["xcol"], lines[0]["ycol"]
    xname, yname = xcol.removeprefix("config."), ycol.removeprefix("metric.")
    categorical = any(line["x"].dtype == object for line in lines)
    cats = sorted({str(v) for line in lines for v in line["x"]}) if categorical else []
    fig = new_figure((7, 4.6))
    ax = fig.add_subplot(1, 1, 1)
    for k, line in enumerate(lines):
        xs = (np.array([cats.index(str(v)) for v in line["x"]], dtype=float) if categorical
              else line["x"].astype(float))
        color = f"C{k % 10}"
        ax.errorbar(xs, line["mean"], yerr=line["std"], marker="o", capsize=4, color=color,
                    label=f"{line['label']} (n={'/'.join(map(str, sorted(set(line['n']))))})")
        ax.fill_between(xs, line["mean"] - line["std"], line["mean"] + line["std"],
                        color=color, alpha=0.15, lw=0)
    if categorical:
        ax.set_xticks(range(len(cats)), cats)
    if logx and not categorical:
        ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xname)
    units = _units_of(folder, table, ycol)
    ax.set_ylabel(f"{yname}" + (f" [{units}]" if units and units != "1" else ""))
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    seeds = sorted({s for line in lines for s in line["seeds"]})
    ax.set_title(f"{yname} vs {xname}: mean +- std over seeds {seeds}", fontsize=10)
    n_lines = _caption(fig, folder, lines[0]["fixed"], sum(int(line["n"].sum())
                                                              for line in lines))
    png = Path(png) if png else folder / f"sweep-{_safe(yname)}-vs-{_safe(xname)}.png"
    save_figure(fig, png, dpi=110, caption_lines=n_lines)
    return png


def _caption(fig, folder: Path, fixed: dict, runs: int, fontsize: float = 7) -> int:
    """The settings every plotted run shares, under the axes; returns its number of lines."""
    import textwrap
    width = int(0.9 * fig.get_figwidth() * 72 / (0.65 * fontsize))
    body = ", ".join(f"{k}={v}" for k, v in fixed.items())
    text = "\n".join(textwrap.wrap(f"sweep index {folder / sweepindex.SWEEP_INDEX} ({runs} "
                                    f"finished runs); shared settings: {body}", width))
    fig.text(0.01, 0.005, text, ha="left", va="bottom", fontsize=fontsize, color="0.3",
             family="monospace")
    return text.count("\n") + 1


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _units_of(folder: Path, table: dict, ycol: str) -> str:
    """The ``units`` attribute of the metric in one finished run file (empty if unknown)."""
    if not ycol.startswith("metric."):
        return results.default_unit(ycol) if ycol.endswith("_s") or "nfe" in ycol else ""
    for status, name in zip(table["status"], table["file"], strict=False):
        if status == "finished" and name and (folder / name).exists():
            with contextlib.suppress(Exception):
                return results.load(folder / name)["units"].get(ycol[len("metric."):]) or ""
    return ""
