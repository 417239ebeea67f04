"""Gradient-verification report over every built-in layer, written to HDF5."""
from __future__ import annotations

import time

import numpy as np

from adjointcore.gradcheck import check_layer
from adjointcore.gradcheck.catalog import builtin_examples

from .results import output_path, save


def run(quick: bool = False, out: str = "results", seed: int = 0) -> int:
    """Check every built-in layer's VJP (FD, complex step, dot product, Taylor); write HDF5."""
    dtypes = [np.float64] if quick else [np.float64, np.float32]
    rows, t_start = [], time.perf_counter()
    for dtype in dtypes:
        for name, layer, x, kwargs in builtin_examples(np.random.default_rng(seed)):
            start = time.perf_counter()
            report = check_layer(layer, x=x.astype(dtype), seed=seed, **kwargs)
            rows.append({"layer": name, "dtype": np.dtype(dtype).name, "passed": report.passed,
                         **{k: float(v) for k, v in report.figures.items()},
                         "wall_s": time.perf_counter() - start})
            status = "ok  " if report.passed else "FAIL"
            figs = "  ".join(f"{k}={v:.1e}" for k, v in report.figures.items())
            print(f"{status} {np.dtype(dtype).name:8s} {name:22s} {figs}", flush=True)
    n_fail = sum(not r["passed"] for r in rows)
    path = save(output_path(out, "gradcheck", quick), "gradcheck",
                {"quick": bool(quick), "seed": seed, "dtypes": [np.dtype(d).name for d in dtypes]},
                metrics={"passed": np.array([bool(r["passed"]) for r in rows]),
                         "wall_s": np.array([r["wall_s"] for r in rows]),
                         "wall_time_s": time.perf_counter() - t_start},
                tables={"report": rows})
    print(f"{len(rows) - n_fail}/{len(rows)} layer checks passed; report written to {path}")
    return 1 if n_fail else 0
