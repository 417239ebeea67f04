"""Command line: ``python -m experiments NAME [--quick] [--out DIR] [--seed N]``.

Each experiment writes one HDF5 file per run under ``--out`` (default ``results/``; quick runs
as ``NAME_quick.h5``) and prints a short summary. ``python -m experiments --list`` lists them.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import registry


def _seed(text: str) -> int:
    """argparse type: a non-negative integer (what ``numpy.random.default_rng`` accepts)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}; "
                                         f"e.g. --seed 0")
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments", description=__doc__.split("\n")[0])
    parser.add_argument("name", nargs="?", help="experiment to run (see --list)")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke configuration")
    parser.add_argument("--out", default="results", help="output directory (default: results/)")
    parser.add_argument("--seed", type=_seed, default=0,
                        help="non-negative integer seeding data splits and initialisation")
    parser.add_argument("--list", action="store_true", help="list experiments and exit")
    args = parser.parse_args(argv)
    experiments = registry.EXPERIMENTS
    if args.list or args.name is None:
        for name, fn in experiments.items():
            print(f"{name:20s} {(fn.__doc__ or '').strip().splitlines()[0]}")
        return 0
    if args.name not in experiments:
        parser.error(f"unknown experiment {args.name!r}; choose one of {sorted(experiments)}")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        parser.error(f"--out {args.out!r} is an existing file, not a directory; pass a folder "
                     f"(it is created if missing).")
    return experiments[args.name](quick=args.quick, out=args.out, seed=args.seed)


if __name__ == "__main__":
    sys.exit(main())
