"""Command line: ``python -m experiments NAME [--quick] [--seed N] [--out DIR] [--set KEY=VALUE]
[--resume | --overwrite] [--checkpoint-every N] [--no-plot] [--quiet]``.

Each run writes ``DIR/NAME[_quick]-HASH-seedN.h5`` (HASH: the configuration without the seed),
never replacing a finished run unless ``--overwrite``; training runs checkpoint to
``...ckpt.h5`` and continue with ``--resume``. ``python -m experiments --list`` lists them.

Exit status: 0 done (or nothing to resume), 1 the experiment's own check failed, 2 a refused
start (bad argument, unwritable ``--out``, missing package, existing run), 3 another process
writes the same run, 130 interrupted (Ctrl-C).

Sweeps (:mod:`experiments.sweep`): ``python -m experiments sweep NAME --grid KEY=V1,V2 ...
--seeds 0-4 [--quick] [--set KEY=VALUE] [--out DIR] [--scheduler ADDRESS | --workers N]`` runs
every grid point and seed as one durable run on Dask and keeps the index ``DIR/sweep.h5``
(exit 0 all finished, 1 some failed, 2 refused before any compute, 130 interrupted);
``python -m experiments plot-sweep DIR --x KEY --y METRIC`` draws mean +- std over seeds;
``python -m experiments seed-table DIR --experiment NAME --by KEYS --values NAMES [--table T]``
prints them as a Markdown table (:mod:`experiments.seedtable`).
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
    parser = argparse.ArgumentParser(
        prog="python -m experiments", description=__doc__.split("\n")[0],
        epilog="Sweeps: python -m experiments sweep NAME --grid KEY=V1,V2 --seeds 0-4 (sweep "
               "--help); python -m experiments plot-sweep DIR --x KEY --y METRIC.")
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


def _positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _seconds(text: str) -> float:
    """argparse type: a number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text!r}")
    return value


def _seeds(text: str) -> list:
    """argparse type: ``--seeds`` (``0-4``, ``0,3,7``, ``0-2,10``)."""
    from .sweepplan import SweepError, parse_seeds
    try:
        return parse_seeds(text)
    except SweepError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix(f"--seeds {text!r}: ")) from None


def _sweep_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments sweep",
        description="Run a grid of settings x seeds of one experiment as durable runs on Dask "
                    "(finished runs are skipped, interrupted ones resume) and keep the index "
                    "OUT/sweep.h5 (experiments.sweepindex.sweep_table).")
    parser.add_argument("name", help="experiment to sweep (python -m experiments --list)")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                        help="values of one setting (repeatable; values read like --set; the "
                             "grid is the product), e.g. --grid lr=0.01,0.03")
    parser.add_argument("--seeds", type=_seeds, default=[0], metavar="SEEDS",
                        help="seeds of every grid point: 0-4, 0,3,7 or 0-2,10 (default 0)")
    parser.add_argument("--quick", action="store_true", help="the quick configuration")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="one setting for every run (repeatable), as for a single run")
    parser.add_argument("--out", default="results",
                        help="results folder, seen by every worker at the same path "
                             "(default: results/)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="submit to this Dask scheduler (tcp://HOST:8786, or a scheduler "
                             "file) instead of a local cluster")
    parser.add_argument("--workers", type=_positive, metavar="N",
                        help="worker processes of the local cluster (default: one per usable "
                             "core, at most one per pending run)")
    parser.add_argument("--checkpoint-every", type=_count, default=None, metavar="N",
                        help="optimiser steps between checkpoints (default: the experiment's)")
    parser.add_argument("--plot-runs", action="store_true",
                        help="draw each run's figure too (needs matplotlib on the workers)")
    parser.add_argument("--retries", type=_count, default=1, metavar="N",
                        help="Dask retries of a run that raised (default 1); a dead worker's "
                             "runs are resumed elsewhere regardless")
    parser.add_argument("--blas-threads", type=_positive, default=1, metavar="N",
                        help="BLAS threads per run (default 1)")
    parser.add_argument("--lock-wait", type=_seconds, default=60.0, metavar="SECONDS",
                        help="how long a run waits for another live process writing it "
                             "(default 60)")
    parser.add_argument("--dry-run", action="store_true",
                        help="check and list the runs (finished or to run); run nothing")
    parser.add_argument("--quiet", action="store_true", help="only the summary line")
    return parser


def _plot_sweep_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments plot-sweep",
        description="Draw a metric's mean +- std over seeds against a setting from a sweep's "
                    "index (DIR/sweep.h5); one line per combination of the other settings.")
    parser.add_argument("dir", help="the sweep's --out folder")
    parser.add_argument("--x", required=True, metavar="KEY", help="setting on the x axis")
    parser.add_argument("--y", required=True, metavar="METRIC",
                        help="metric (final value) or index column on the y axis, e.g. "
                             "test_acc, wall_time_s, nfe")
    parser.add_argument("--experiment", metavar="NAME",
                        help="only this experiment's runs (when the folder holds several)")
    parser.add_argument("--png", metavar="PATH",
                        help="where to save (default DIR/sweep-METRIC-vs-KEY.png)")
    parser.add_argument("--logx", action="store_true", help="logarithmic x axis")
    parser.add_argument("--logy", action="store_true", help="logarithmic y axis")
    return parser


def _seed_table_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments seed-table",
        description="Mean +- std over seeds of the finished runs of one experiment in DIR, as a "
                    "Markdown table (experiments.seedtable).")
    parser.add_argument("dir", help="the --out folder of the runs")
    parser.add_argument("--experiment", required=True, metavar="NAME")
    parser.add_argument("--by", required=True, metavar="KEYS",
                        help="comma-separated configuration keys (or --table columns) to group on")
    parser.add_argument("--values", required=True, metavar="NAMES",
                        help="comma-separated scalar metrics (or --table columns) to aggregate; "
                             "per-epoch metrics with a reduction, e.g. epoch_time_s:mean")
    parser.add_argument("--table", metavar="T", help="aggregate the rows of this HDF5 table")
    parser.add_argument("--quick", action="store_true", help="the quick runs")
    parser.add_argument("--digits", type=_positive, default=4, metavar="N",
                        help="significant digits of the means (default 4)")
    return parser


def seed_table_main(argv) -> int:
    """``python -m experiments seed-table DIR --experiment NAME --by KEYS --values NAMES``."""
    args = _seed_table_parser().parse_args(argv)
    from . import seedtable

    def run():
        print(seedtable.seed_table(args.dir, args.experiment, args.by.split(","),
                                   args.values.split(","), args.table, args.quick, args.digits),
              end="", flush=True)
        return 0
    return _guarded(run)


def _guarded(run) -> int:
    """``run()``'s exit status, with the project's refusals as one line and exit status 2."""
    from . import results
    try:
        return run()
    except (durable.ExperimentError, results.ResultsFileError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        return getattr(err, "exit_code", 2)


def sweep_main(argv) -> int:
    """``python -m experiments sweep ...``: see :mod:`experiments.sweep`."""
    parser = _sweep_parser()
    args = parser.parse_args(argv)
    if args.name not in registry.EXPERIMENTS:
        parser.error(f"unknown experiment {args.name!r}; choose one of "
                     f"{sorted(registry.EXPERIMENTS)}")
    from . import sweep, sweepplan

    def run():
        plan = sweepplan.plan_sweep(args.name, args.grid, args.seeds, args.quick, args.set)
        return sweep.execute(plan, args.out, scheduler=args.scheduler, workers=args.workers,
                             checkpoint_every=args.checkpoint_every, plot=args.plot_runs,
                             retries=args.retries, blas_threads=args.blas_threads,
                             lock_wait=args.lock_wait, dry_run=args.dry_run, quiet=args.quiet)
    return _guarded(run)


def plot_sweep_main(argv) -> int:
    """``python -m experiments plot-sweep DIR --x KEY --y METRIC``."""
    args = _plot_sweep_parser().parse_args(argv)
    from . import sweepplot

    def run():
        path = sweepplot.plot_sweep(args.dir, args.x, args.y, args.png, args.experiment, args.logx,
                                args.logy)
        print(f"figure: {path}", flush=True)
        return 0
    return _guarded(run)


#: Subcommands (checked before the experiment name).
SUBCOMMANDS = {"sweep": sweep_main, "plot-sweep": plot_sweep_main,
               "seed-table": seed_table_main}


def main(argv=None) -> int:
    """Run the command line; returns the exit status (see the module docstring)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in SUBCOMMANDS:
        return SUBCOMMANDS[argv[0]](argv[1:])
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
