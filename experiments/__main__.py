"""Command line: ``python -m experiments NAME [--quick] [--seed N] [--out DIR] [--set KEY=VALUE]
[--resume | --overwrite] [--checkpoint-every N] [--no-plot] [--quiet]``.

Each run writes ``DIR/NAME[_quick]-HASH-seedN.h5`` (HASH: the configuration without the seed),
never replacing a finished run unless ``--overwrite``; training runs checkpoint to
``...ckpt.h5`` and continue with ``--resume``. ``python -m experiments --list`` lists them.

Exit status: 0 done (or nothing to resume), 1 the experiment's own check failed, 2 a refused
start (bad argument, unwritable ``--out``, missing package, existing run), 3 another process
writes the same run, 130 interrupted (Ctrl-C).
"""
from __future__ import annotations

import argparse
import shlex
import sys

from . import durable, registry


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


def _count(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0 (optimiser steps; 0: only at "
                                         f"epoch/phase ends), got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m experiments",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("name", nargs="?", help="experiment to run (see --list)")
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke configuration")
    parser.add_argument("--out", default="results", help="output directory (default: results/)")
    parser.add_argument("--seed", type=_seed, default=0,
                        help="non-negative integer seeding data splits and initialisation")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change one configuration entry (repeatable; VALUE read as JSON), "
                             "e.g. --set epochs=3; part of the run's identity")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue this run from its last checkpoint")
    again.add_argument("--overwrite", action="store_true",
                       help="replace a finished run of the same identity (or discard its "
                            "checkpoint)")
    parser.add_argument("--checkpoint-every", type=_count, default=None, metavar="N",
                        help="optimiser steps between checkpoints (default: the experiment's)")
    parser.add_argument("--no-plot", action="store_true",
                        help="skip the figures (no matplotlib needed)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress bars or per-epoch lines (bars are off anyway when "
                             "output is not a terminal)")
    parser.add_argument("--list", action="store_true", help="list experiments and exit")
    return parser


def _rerun(args, resume: bool) -> str:
    parts = ["python", "-m", "experiments", args.name] + (["--quick"] if args.quick else [])
    parts += ["--seed", str(args.seed), "--out", args.out]
    for text in args.set:
        parts += ["--set", text]
    return " ".join(shlex.quote(p) for p in parts) + (" --resume" if resume else "")


def _interrupted_line(args) -> str:
    if args.name in registry.CHECKPOINTED:
        return (f"interrupted: {args.name} stopped; its last checkpoint (if any) is kept; "
                f"resume with: {_rerun(args, True)}")
    return (f"interrupted: {args.name} keeps no checkpoints and wrote nothing; rerun with: "
            f"{_rerun(args, False)}")


def main(argv=None) -> int:
    """Run the command line; returns the exit status (see the module docstring)."""
    parser = _parser()
    args = parser.parse_args(argv)
    experiments = registry.EXPERIMENTS
    if args.list or args.name is None:
        for name, fn in experiments.items():
            print(f"{name:20s} {(fn.__doc__ or '').strip().splitlines()[0]}")
        return 0
    if args.name not in experiments:
        parser.error(f"unknown experiment {args.name!r}; choose one of {sorted(experiments)}")
    try:
        durable.check_out_dir(args.out)
        overrides = dict(durable.parse_override(text) for text in args.set)
        options = durable.RunOptions(resume=args.resume, overwrite=args.overwrite,
                                     quiet=True if args.quiet else None, plot=not args.no_plot,
                                     checkpoint_every=args.checkpoint_every,
                                     overrides=tuple(args.set))
        return experiments[args.name](quick=args.quick, out=args.out, seed=args.seed,
                                      overrides=overrides, options=options)
    except durable.RunInterrupted as stop:
        print(stop, file=sys.stderr, flush=True)
        return stop.exit_code
    except durable.RunFinished as done:
        print(f"note: {done}", flush=True)
        return done.exit_code
    except durable.ExperimentError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return err.exit_code
    except KeyboardInterrupt:
        print(_interrupted_line(args), file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":
    sys.exit(main())
