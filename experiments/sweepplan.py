"""Planning a sweep: ``--grid`` and ``--seeds`` parsed, checked and expanded before anything runs.

:func:`plan_sweep` turns ``--grid KEY=V1,V2`` texts (or a dict), ``--seeds`` and the ``--set``
overrides into a :class:`Plan`: one :class:`Point` per run, in submission order (seeds
outermost), each checked against the experiment's configuration
(:data:`experiments.registry.CONFIGS`) and carrying its durable run identity
(:func:`experiments.durable.run_identity`). :func:`parse_seeds` and :func:`parse_grid` read the
two arguments. Every refusal is a :class:`SweepError` naming the argument and the fix.
:mod:`experiments.sweep` runs a plan on Dask and re-exports these names.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import re
from typing import Optional

from . import _tables, durable

__all__ = ["SweepError", "Point", "Plan", "parse_seeds", "parse_grid", "plan_sweep"]


class SweepError(durable.ExperimentError):
    """A sweep refused before any compute: bad ``--grid``/``--seeds``/``--workers``, an
    unreachable scheduler; the message names the argument and the fix."""


# ------------------------------------------------------------------------------- parsing
def parse_seeds(text: str) -> list:
    """``"0-4"``, ``"0,3,7"``, ``"0-2,10"`` or ``"5"`` as a list of distinct seeds >= 0.

    Raises
    ------
    SweepError
        Naming ``--seeds``, the bad part and the accepted forms.
    """
    forms = "e.g. --seeds 0-4 (0 to 4), --seeds 0,3,7 or --seeds 0-2,10"
    text = str(text).strip()
    if not text:
        raise SweepError(f"--seeds is empty; pass non-negative integers, {forms}.")
    seeds = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", part)
        if m is None:
            raise SweepError(f"--seeds {text!r}: {part!r} is not a non-negative integer or a "
                             f"range START-END; {forms}.")
        start, end = int(m[1]), int(m[2]) if m[2] is not None else int(m[1])
        if end < start:
            raise SweepError(f"--seeds {text!r}: the range {part!r} runs downwards; write "
                             f"START-END with START <= END, {forms}.")
        seeds.extend(range(start, end + 1))
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise SweepError(f"--seeds {text!r} names seeds {repeated} more than once; each seed "
                         f"is one run.")
    return seeds


def _split_values(text: str) -> list:
    """Split on commas outside brackets, braces and quotes (so JSON lists stay whole)."""
    parts, depth, quote, current = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts]


def _strip_set(message: str) -> str:
    """A :class:`durable.ConfigError` message without its leading ``--set KEY=VALUE: ``."""
    return re.sub(r"^--set [^:]*: ", "", message)


def parse_grid(experiment: str, texts, quick: bool = False, fixed: Optional[dict] = None) -> dict:
    """``["KEY=V1,V2", ...]`` as ``{KEY: [value, ...]}``, each key a setting of ``experiment``
    (optional ones included: :data:`experiments.registry.OPTIONAL_SETTINGS`) and each value
    accepted by its configuration (checked with the other keys at their defaults and
    ``fixed``, the ``--set`` overrides).

    Raises
    ------
    SweepError
        Naming the ``--grid`` argument, the key or value, and what is accepted.
    """
    from .registry import CONFIGS, settings
    make = CONFIGS[experiment]
    fixed = dict(fixed or {})
    defaults = settings(experiment, make(quick, 0, fixed))
    known = sorted(k for k in defaults if k not in ("seed", "quick"))
    grid = {}
    for text in texts:
        key, sep, values = str(text).partition("=")
        key = key.strip()
        if not sep or not key or not values.strip():
            raise SweepError(f"--grid {text!r} must look like KEY=V1,V2,..., e.g. --grid "
                             f"lr=0.01,0.03 (values read like --set: JSON, else text).")
        if key == "seed":
            raise SweepError(f"--grid {text!r}: seeds are given by --seeds (e.g. --seeds 0-4), "
                             f"not by --grid.")
        if key == "quick":
            raise SweepError(f"--grid {text!r}: quick mode is the flag --quick (a sweep runs "
                             f"one mode).")
        if key not in defaults:
            raise SweepError(f"--grid {text!r}: {experiment} has no setting {key!r}; choose "
                             f"one of {known}.")
        if key in grid:
            raise SweepError(f"--grid {key}=... is given twice; list all its values in one "
                             f"--grid {key}=V1,V2,...")
        if key in fixed:
            raise SweepError(f"--grid {key}=... and --set {key}=... both set {key!r}; keep one.")
        raw = _split_values(values)
        if any(not r for r in raw):
            raise SweepError(f"--grid {text!r} has an empty value; separate values by single "
                             f"commas, e.g. --grid {key}=1,2.")
        parsed = []
        seen = {}
        for r in raw:
            value = durable.parse_override(f"{key}={r}")[1]
            try:
                cfg = make(quick, 0, {**fixed, key: value})
            except durable.ConfigError as err:
                raise SweepError(f"--grid {key}={r}: {_strip_set(str(err))}") from None
            value_set = settings(experiment, cfg)[key]
            canon = json.dumps(value_set, sort_keys=True, default=_tables._json_default)
            if canon in seen:
                raise SweepError(f"--grid {text!r}: the values {seen[canon]!r} and {r!r} are the "
                                 f"same setting ({key}={value_set!r}); list each value once.")
            seen[canon] = r
            parsed.append(value)
        grid[key] = parsed
    return grid


@dataclasses.dataclass(frozen=True)
class Point:
    """One run of a sweep: its grid values, seed, overrides, configuration and identity."""

    experiment: str
    quick: bool
    seed: int
    grid: dict
    overrides: dict
    set_texts: tuple
    config: dict
    run_id: durable.RunId

    @property
    def stem(self) -> str:
        return self.run_id.stem


@dataclasses.dataclass(frozen=True)
class Plan:
    """A checked sweep: the points in submission order (seeds outermost) and what was asked."""

    experiment: str
    quick: bool
    grid: dict
    seeds: list
    fixed: dict
    points: list

    def describe(self) -> dict:
        """What the index records about this submission."""
        return {"experiment": self.experiment, "quick": self.quick, "grid": self.grid,
                "seeds": self.seeds, "set": self.fixed, "runs": len(self.points)}


def plan_sweep(experiment: str, grid=(), seeds="0", quick: bool = False, fixed=()) -> Plan:
    """Check and expand a sweep before anything runs.

    Parameters
    ----------
    experiment : str
        A name in :data:`experiments.registry.EXPERIMENTS`.
    grid : iterable of str or dict
        ``"KEY=V1,V2"`` texts (as ``--grid``) or ``{KEY: [values]}``.
    seeds : str or iterable of int
        ``"0-4"`` (as ``--seeds``) or the seeds.
    quick : bool
    fixed : iterable of str or dict
        ``"KEY=VALUE"`` texts (as ``--set``) or ``{KEY: value}``: the same in every run.

    Raises
    ------
    SweepError, durable.ConfigError
        An unknown experiment, key or value, bad seeds, or two points with one identity.
    """
    from .registry import CONFIGS
    if experiment not in CONFIGS:
        raise SweepError(f"unknown experiment {experiment!r}; choose one of {sorted(CONFIGS)}.")
    if isinstance(fixed, dict):
        fixed_texts = tuple(f"{k}={json.dumps(v)}" for k, v in fixed.items())
        fixed = dict(fixed)
    else:
        fixed_texts = tuple(fixed)
        fixed = dict(durable.parse_override(t) for t in fixed_texts)
    CONFIGS[experiment](quick, 0, fixed)             # --set checked with its own messages
    if isinstance(grid, dict):
        grid = parse_grid(experiment, [f"{k}={','.join(json.dumps(v) for v in vs)}"
                                       for k, vs in grid.items()], quick, fixed)
    else:
        grid = parse_grid(experiment, list(grid), quick, fixed)
    if isinstance(seeds, str):
        seeds = parse_seeds(seeds)
    else:
        seeds = parse_seeds(",".join(str(int(s)) for s in seeds))
    keys = list(grid)
    points, stems = [], {}
    for seed in seeds:
        for combo in itertools.product(*(grid[k] for k in keys)):
            values = dict(zip(keys, combo, strict=False))
            overrides = {**fixed, **values}
            try:
                cfg = CONFIGS[experiment](quick, seed, overrides)
            except durable.ConfigError as err:
                shown = " ".join(f"{k}={v!r}" for k, v in values.items())
                raise SweepError(f"--grid point {shown}: {_strip_set(str(err))}") from None
            run_id = durable.run_identity(experiment, cfg)
            if run_id.stem in stems:
                raise SweepError(f"--grid points {stems[run_id.stem]} and {values} give the same "
                                 f"run {run_id.stem}; list each value once.")
            stems[run_id.stem] = values
            texts = fixed_texts + tuple(f"{k}={json.dumps(v)}" for k, v in values.items())
            points.append(Point(experiment, bool(quick), seed, values, overrides, texts, cfg,
                                run_id))
    return Plan(experiment, bool(quick), grid, seeds, fixed, points)
