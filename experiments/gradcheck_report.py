"""Gradient-verification report over every built-in layer, written to HDF5."""
from __future__ import annotations

import time
from typing import Optional

import numpy as np

from adjointcore.gradcheck import check_layer
from adjointcore.gradcheck.catalog import builtin_examples

from . import durable
from ._progress import log

__all__ = ["run", "make_config"]


def make_config(quick: bool = False, seed: int = 0, overrides: Optional[dict] = None) -> dict:
    """``{"quick", "seed", "dtypes"}``: float64 only in quick mode, float32 as well otherwise."""
    dtypes = ["float64"] if quick else ["float64", "float32"]
    cfg = durable.apply_overrides("gradcheck", {"quick": bool(quick), "seed": int(seed),
                                                "dtypes": dtypes}, overrides)
    bad = [d for d in cfg["dtypes"] if d not in ("float64", "float32")]
    if bad or not cfg["dtypes"]:
        raise durable.ConfigError(f"--set dtypes={cfg['dtypes']!r}: gradcheck's dtypes must be a "
                                  f"non-empty list of 'float64'/'float32', e.g. "
                                  f"--set 'dtypes=[\"float64\"]'.")
    return cfg


def run(quick: bool = False, out: str = "results", seed: int = 0, *,
        overrides: Optional[dict] = None, options: Optional[durable.RunOptions] = None) -> int:
    """Check every built-in layer's VJP (FD, complex step, dot product, Taylor); write HDF5."""
    options = options or durable.RunOptions()
    cfg = make_config(quick, seed, overrides)
    with durable.claim("gradcheck", cfg, out, options) as rn:
        rows, t_start = [], time.perf_counter()
        for dtype in (np.dtype(d) for d in cfg["dtypes"]):
            for name, layer, x, kwargs in builtin_examples(np.random.default_rng(seed)):
                start = time.perf_counter()
                report = check_layer(layer, x=x.astype(dtype), seed=seed, **kwargs)
                rows.append({"layer": name, "dtype": dtype.name, "passed": report.passed,
                             **{k: float(v) for k, v in report.figures.items()},
                             "wall_s": time.perf_counter() - start})
                status = "ok  " if report.passed else "FAIL"
                figs = "  ".join(f"{k}={v:.1e}" for k, v in report.figures.items())
                log(f"{status} {dtype.name:8s} {name:22s} {figs}", options.quiet)
        n_fail = sum(not r["passed"] for r in rows)
        path = durable.finish(rn, {"passed": np.array([bool(r["passed"]) for r in rows]),
                                   "wall_s": np.array([r["wall_s"] for r in rows]),
                                   "wall_time_s": time.perf_counter() - t_start},
                              tables={"report": rows}, units={"passed": "bool"})
    log(f"{len(rows) - n_fail}/{len(rows)} layer checks passed; report written to {path}", False)
    return 1 if n_fail else 0
