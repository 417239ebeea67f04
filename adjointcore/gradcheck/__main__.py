"""``python -m adjointcore.gradcheck [--dtype float64|float32] [--seed N]``.

Runs :func:`~adjointcore.gradcheck.check_layer` on every built-in layer example of
:mod:`adjointcore.gradcheck.catalog`, prints one table row per example (each figure and the
verdict) and exits with status 1 if any example fails. This CLI is the one place in
``adjointcore`` that prints.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Sequence

import numpy as np
from numpy.typing import DTypeLike

from . import check_layer, default_tolerances
from ._layer import LayerReport
from .catalog import builtin_examples

COLUMNS = ("fd_x", "fd_params", "complex_x", "complex_params", "dot_x", "dot_params",
           "taylor_min_rate")
NAME_WIDTH = 46


def _cell(report: LayerReport, column: str) -> str:
    value = report.figures.get(column)
    return f"{'-':>9}" if value is None else f"{value:9.1e}" if np.isfinite(value) \
        else f"{value:>9}"


def _rows(dtype: DTypeLike, seed: int) -> Iterator[tuple[str, LayerReport]]:
    for name, layer, x, kwargs in builtin_examples(np.random.default_rng(seed)):
        kwargs = dict(kwargs)
        if "params" in kwargs:
            kwargs["params"] = kwargs["params"].astype(dtype)
        yield name, check_layer(layer, x.astype(dtype), seed=seed, **kwargs)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the table; return 0 if every example passes, else 1."""
    parser = argparse.ArgumentParser(prog="python -m adjointcore.gradcheck",
                                     description="Gradient checks of every built-in layer.")
    parser.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    dtype = np.dtype(args.dtype)
    header = f"{'layer':<{NAME_WIDTH}} " + " ".join(f"{c[:9]:>9}" for c in COLUMNS) + "  result"
    print(header)
    print("-" * len(header))
    failed = []
    for name, report in _rows(dtype, args.seed):
        cells = " ".join(_cell(report, c) for c in COLUMNS)
        print(f"{name[:NAME_WIDTH]:<{NAME_WIDTH}} {cells}  {'pass' if report.passed else 'FAIL'}")
        if not report.passed:
            failed.append(report)
    for report in failed:
        print(f"\n{report}")
    tol = ", ".join(f"{k} {v:g}" for k, v in default_tolerances(dtype).items())
    print(f"\n{len(failed)} failed; tolerances ({dtype}): {tol}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
