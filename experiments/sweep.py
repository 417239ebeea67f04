"""Parameter sweeps on Dask: a grid x seeds of durable runs, an index written as they complete.

``python -m experiments sweep NAME --grid KEY=V1,V2 ... --seeds 0-4 [--quick] [--set KEY=VALUE]
[--out DIR] [--scheduler ADDRESS] [--workers N]`` expands the grid (values read like ``--set``:
JSON, else text) and checks every point against the experiment's configuration
(:data:`experiments.registry.CONFIGS`) before anything runs. Each point is one durable run
(:mod:`experiments.durable`), submitted as one Dask task that calls
:data:`experiments.registry.EXPERIMENTS` with ``RunOptions(resume=True)``:

- a run whose file ``DIR/STEM.h5`` exists is not submitted again (re-submission skips it);
- a run with a checkpoint continues from it. When the worker running a task dies, the Dask
  scheduler gives the task to another worker, which resumes from the last checkpoint: the
  run's lock (``filelock``, an OS ``flock``) is released by the kernel when its process dies,
  so the retry is not refused by it. A lock held by a process that is still alive (a worker
  the scheduler lost contact with, or a run started by hand) is waited for (``lock_wait``);
- by default an embedded ``dask.distributed.LocalCluster`` runs the tasks: one worker process
  per usable core (at most one per pending run), one thread each, one BLAS thread each
  (environment variables for the worker processes and ``threadpoolctl`` in the task);
  ``--scheduler tcp://HOST:8786`` (or a scheduler file) submits to an existing cluster whose
  workers see ``DIR`` at the same path.

The sweep index ``DIR/sweep.h5`` (:func:`experiments.sweepindex.sweep_table`) holds one row per
run (configuration columns, status, final metrics, wall time, NFE), is written before the first
task and rewritten atomically as runs complete (at most every ``index_every`` seconds, and at
the end), under a lock so that several sweeps can share a folder: rows of other runs are kept.
``python -m experiments plot-sweep DIR --x KEY --y METRIC``
(:func:`experiments.sweepplot.plot_sweep`) draws a metric's mean +- standard deviation over
seeds.

This module runs a plan: :func:`execute` submits it, :func:`run_point` is one task and
:func:`run_row` one row of the index. The plan comes from :mod:`experiments.sweepplan`
(:func:`plan_sweep`, :class:`SweepError` and the rest of its names are re-exported here), the
Dask cluster from :mod:`experiments._cluster`, and the index file from
:mod:`experiments.sweepindex`.
"""
from __future__ import annotations

import contextlib
import math
import os
import socket
import sys
import time
import uuid
from pathlib import Path
from typing import Optional

import numpy as np

from . import _tables, durable, results, sweepindex
from ._cluster import _connect, _describe_failure, _limit_blas
from .sweepplan import Plan, Point, SweepError, parse_grid, parse_seeds, plan_sweep

__all__ = ["SweepError", "Point", "Plan", "parse_seeds", "parse_grid", "plan_sweep",
           "run_point", "run_row", "execute", "DASK_MODULES"]

#: What a sweep imports, with the pip requirement that provides it.
DASK_MODULES = {"dask": "adjointcore[sweep]", "distributed": "adjointcore[sweep]"}

#: Exit statuses of :func:`execute`.
OK, SOME_FAILED, INTERRUPTED = 0, 1, 130


# ------------------------------------------------------------------------------- rows
def _base_row(experiment: str, run_id: durable.RunId) -> dict:
    return {"run_id": run_id.stem, "experiment": experiment, "quick": run_id.quick,
            "seed": run_id.seed, "config_hash": run_id.config_hash}


def _config_columns(experiment: str, config: dict) -> dict:
    """``config.KEY`` columns, optional settings at their defaults included (seed and quick
    have their own columns)."""
    from .registry import settings
    return {f"config.{k}": v for k, v in _tables._flat_config(settings(experiment, config))
            if k not in ("seed", "quick")}


def _nfe_totals(metrics: dict) -> tuple:
    """Sums of every integer metric named ``*nfe*`` with ``forward``/``backward`` in its name
    (per-epoch or per-iteration counts, so the sum is the run's total)."""
    fwd = bwd = 0
    for name, value in metrics.items():
        a = np.asarray(value)
        if "nfe" not in name.lower() or a.dtype.kind not in "iu":
            continue
        if "forward" in name:
            fwd += int(a.sum())
        elif "backward" in name:
            bwd += int(a.sum())
    return fwd, bwd


def _final_values(metrics: dict) -> dict:
    """``metric.NAME`` -> the final value: a scalar as it is, the last entry of a 1-D array
    (arrays of more dimensions, empty and complex ones are left out)."""
    out = {}
    for name, value in sorted(metrics.items()):
        a = np.asarray(value)
        if a.dtype.kind not in "biuf" or a.ndim > 1 or a.size == 0:
            continue
        out[f"metric.{name}"] = (a[-1] if a.ndim else a).item()
    return out


def run_row(path, **extra) -> dict:
    """The index row of a finished run file (configuration, status, final metrics, wall time,
    NFE); ``extra`` columns (action, worker, task_wall_s, ...) go after the fixed ones."""
    path = Path(path)
    r = results.load(path)
    cfg = r["config"]
    run_id = durable.run_identity(r["experiment"], cfg)
    fwd, bwd = _nfe_totals(r["metrics"])
    wall = r["metrics"].get("wall_time_s")
    row = {**_base_row(r["experiment"], run_id), "status": "finished", "action": None,
           "error": None, "file": path.name, "worker": None, "task_wall_s": None,
           "wall_time_s": float(wall) if wall is not None and np.ndim(wall) == 0 else None,
           "nfe_forward": fwd, "nfe_backward": bwd, "nfe": fwd + bwd}
    row.update({k: v for k, v in extra.items() if k in row or v is not None})
    row.update(_config_columns(r["experiment"], cfg))
    row.update(_final_values(r["metrics"]))
    return row


def _unfinished_row(experiment: str, config: dict, out: Path, status: str = "pending",
                    **extra) -> dict:
    """The index row of a run without a finished file (pending, or failed with ``error``)."""
    run_id = durable.run_identity(experiment, config)
    row = {**_base_row(experiment, run_id), "status": status, "action": None, "error": None,
           "file": durable.run_paths(out, run_id).final.name, "worker": None,
           "task_wall_s": None, "wall_time_s": None, "nfe_forward": None, "nfe_backward": None,
           "nfe": None}
    row.update(extra)
    row.update(_config_columns(experiment, config))
    return row


# ------------------------------------------------------------------------------- worker side
def run_point(spec: dict) -> dict:
    """Run one point of a sweep (a Dask task); returns its index row.

    ``spec``: ``experiment``, ``quick``, ``seed``, ``overrides``, ``set_texts``, ``out``
    (absolute), ``checkpoint_every``, ``plot``, ``blas_threads``, ``lock_wait`` (seconds to
    wait for a lock held by a live process), ``stem``, ``config`` (for the row of a failure).

    The run always resumes (``RunOptions(resume=True)``): from its checkpoint when an earlier
    attempt (a worker that died) left one, from the start otherwise; a run that finished in the
    meantime is reported as ``existing``. A refusal (an :class:`durable.ExperimentError`: a
    damaged or mismatching checkpoint, a missing package, an unwritable folder) is returned as
    a ``failed`` row, not retried; anything else raises, and Dask retries the task.
    """
    from .registry import EXPERIMENTS
    _limit_blas(spec.get("blas_threads"))
    out = Path(spec["out"])
    cfg = spec["config"]
    run_id = durable.run_identity(spec["experiment"], cfg)
    paths = durable.run_paths(out, run_id)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    options = durable.RunOptions(resume=True, quiet=True, plot=bool(spec.get("plot", False)),
                                 checkpoint_every=spec.get("checkpoint_every"),
                                 overrides=tuple(spec.get("set_texts", ())))
    start = time.perf_counter()
    deadline = start + float(spec.get("lock_wait", 60.0))

    def failed(error: str) -> dict:
        return _unfinished_row(spec["experiment"], cfg, out, "failed", error=error,
                               worker=worker, task_wall_s=time.perf_counter() - start)

    while True:
        resumed = paths.checkpoint.exists() and not paths.final.exists()
        try:
            status = EXPERIMENTS[spec["experiment"]](
                quick=spec["quick"], out=str(out), seed=spec["seed"],
                overrides=dict(spec["overrides"]), options=options)
            action = "resumed" if resumed else "ran"
            break
        except durable.RunFinished:
            status, action = 0, "existing"
            break
        except durable.RunLockedError as err:
            if time.perf_counter() >= deadline:
                return failed(f"{type(err).__name__}: {err} (waited {spec.get('lock_wait', 60.0)} "
                              f"s)")
            time.sleep(0.5)
        except durable.ExperimentError as err:
            return failed(f"{type(err).__name__}: {err}")
    if not paths.final.exists():
        return failed(f"the experiment ended with exit status {status} without writing "
                      f"{paths.final.name}")
    return run_row(paths.final, status="finished" if status == 0 else "check_failed",
                   action=action, worker=worker, task_wall_s=time.perf_counter() - start,
                   error=None if status == 0 else
                   f"the experiment's own check failed (exit status {status}); its file is "
                   f"written")


# ------------------------------------------------------------------------------- index
class _Index:
    """The sweep index of ``out``: this sweep's rows merged into the file's, written under a
    lock (``.sweep.h5.lock``), atomically, at most every ``every`` seconds unless forced."""

    def __init__(self, out: Path, plan: Plan, every: float):
        self.path = out / sweepindex.SWEEP_INDEX
        self.lock = out / f".{sweepindex.SWEEP_INDEX}.lock"
        self.plan = plan
        self.every = every
        self.rows = {}
        self.last = -math.inf
        self.before = {}
        if self.path.exists():
            with contextlib.suppress(results.ResultsFileError, OSError):
                self.before = {r.get("run_id"): r for r in sweepindex.read_sweep_rows(self.path)[0]}

    def finished_row(self, point: Point, path: Path) -> dict:
        """The row of a run finished before this submission: the index's own (which says how
        and where it ran) when it has one, else one read from the file."""
        row = self.before.get(point.stem)
        if row is not None and row.get("status") == "finished" and row.get("file") == path.name:
            return row
        return run_row(path, action="existing")

    def set(self, row: dict) -> None:
        self.rows[row["run_id"]] = row

    def write(self, force: bool = False) -> Optional[Path]:
        now = time.monotonic()
        if not force and now - self.last < self.every:
            return None
        from filelock import FileLock
        with FileLock(str(self.lock), timeout=120):
            old, attrs = [], {}
            if self.path.exists():
                with contextlib.suppress(results.ResultsFileError, OSError):
                    old, attrs = sweepindex.read_sweep_rows(self.path)
            merged = {r.get("run_id"): r for r in old}
            for run_id, row in self.rows.items():     # another sweep may have finished it
                if not (row["status"] == "pending" and merged.get(run_id, {}).get("status")
                        == "finished"):
                    merged[run_id] = row
            submissions = list(attrs.get("submissions", []))
            mine = self.plan.describe()
            if mine not in submissions:
                submissions.append(mine)
            sweepindex.write_sweep_index(self.path, list(merged.values()),
                                      {"submissions": submissions})
        self.last = now
        return self.path


# ------------------------------------------------------------------------------- client side
def _checks(plan: Plan, out, plot: bool, scheduler, workers) -> Path:
    durable.check_modules(DASK_MODULES, "a sweep (Dask)")
    if plot:
        from ._plotting import PLOT_MODULES
        durable.check_modules(PLOT_MODULES, "the runs' figures", "no --plot-runs")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise SweepError(f"--workers must be an integer >= 1, got {workers!r}.")
    if scheduler and workers is not None:
        raise SweepError("--workers sizes the local cluster; with --scheduler the cluster's own "
                         "workers run the sweep (start more with `dask worker ADDRESS`). Pass "
                         "one of them.")
    return durable.check_out_dir(out).resolve()


def execute(plan: Plan, out="results", *, scheduler: Optional[str] = None,
            workers: Optional[int] = None, client=None, checkpoint_every: Optional[int] = None,
            plot: bool = False, retries: int = 1, blas_threads: int = 1,
            lock_wait: float = 60.0, index_every: float = 1.0, dry_run: bool = False,
            quiet: bool = False) -> int:
    """Run the pending points of ``plan`` on Dask and keep ``out/sweep.h5`` up to date.

    Parameters
    ----------
    plan : Plan
        From :func:`plan_sweep`.
    out : str or Path
        The results folder: every worker must see it at the same path.
    scheduler : str, optional
        A Dask scheduler address (``tcp://HOST:8786``) or scheduler file; default: a local
        cluster.
    workers : int, optional
        Worker processes of the local cluster (default: the usable cores, at most the pending
        runs).
    client : distributed.Client, optional
        Use this client (and its cluster) instead; it is not closed.
    checkpoint_every : int, optional
        As ``--checkpoint-every`` for every run.
    plot : bool
        Draw each run's figure (needs matplotlib on the workers).
    retries : int
        Dask retries of a task that raised (a worker's death is retried by the scheduler
        regardless, up to ``distributed.scheduler.allowed-failures`` times).
    blas_threads : int
        BLAS/OpenMP threads per run.
    lock_wait : float
        Seconds a task waits for the lock of a run another live process writes.
    index_every : float
        Least seconds between two rewrites of the index (it is always written at the end).
    dry_run : bool
        Print the plan and what would run; submit nothing, write nothing.
    quiet : bool
        Only the summary line.

    Returns
    -------
    int
        0: every run finished; 1: some failed or failed their own check (the index's
        ``status`` and ``error`` say which and why);
        130: interrupted (the index is written; submit again to continue).
    """
    say = (lambda text: None) if quiet else (lambda text: print(text, flush=True))
    out = _checks(plan, out, plot, scheduler if client is None else None,
                  workers if client is None else None)
    index = _Index(out, plan, index_every)
    pending = []
    for point in plan.points:
        paths = durable.run_paths(out, point.run_id)
        if paths.final.exists():
            try:
                index.set(index.finished_row(point, paths.final))
                continue
            except (results.ResultsFileError, OSError) as err:
                say(f"sweep: {paths.final} cannot be read ({err}); it is rerun")
        pending.append(point)
        index.set(_unfinished_row(point.experiment, point.config, out))
    n_done = len(plan.points) - len(pending)
    resumable = sum(durable.run_paths(out, p.run_id).checkpoint.exists() for p in pending)
    say(f"sweep {plan.experiment}{' --quick' if plan.quick else ''}: {len(plan.points)} runs "
        f"({' x '.join(str(len(v)) for v in plan.grid.values()) or '1'} grid points x "
        f"{len(plan.seeds)} seeds) into {str(out)!r}: {n_done} finished already (skipped), "
        f"{len(pending)} to run ({resumable} from a checkpoint)")
    if dry_run:
        for p in plan.points:
            state = "to run" if p in pending else "finished"
            say(f"  {p.stem}  seed {p.seed}  {p.grid}  {state}")
        return OK
    index.write(force=True)
    if not pending:
        print(f"sweep: {len(plan.points)} runs, all finished before: nothing to run; index "
              f"{index.path}", flush=True)
        return OK
    specs = [{"experiment": p.experiment, "quick": p.quick, "seed": p.seed,
              "overrides": p.overrides, "set_texts": p.set_texts, "out": str(out),
              "config": p.config, "stem": p.stem, "checkpoint_every": checkpoint_every,
              "plot": plot, "blas_threads": blas_threads, "lock_wait": lock_wait}
             for p in pending]
    start = time.perf_counter()
    counts = {"ran": 0, "resumed": 0, "existing": 0, "failed": 0}
    futures = []
    connection = (contextlib.nullcontext(client) if client is not None else
                  _connect(scheduler, workers, len(pending), blas_threads, say))
    try:
        with connection as dask_client:
            from distributed import as_completed
            tag = uuid.uuid4().hex[:8]
            by_key = {}
            for spec, point in zip(specs, pending, strict=False):
                fut = dask_client.submit(run_point, spec, key=f"adjointcore-{spec['stem']}-{tag}",
                                         retries=retries, pure=False)
                futures.append(fut)
                by_key[fut.key] = point
            for k, fut in enumerate(as_completed(futures), 1):
                point = by_key[fut.key]
                if fut.status == "finished":
                    row = fut.result()
                else:
                    row = _unfinished_row(point.experiment, point.config, out, "failed",
                                          error=_describe_failure(fut))
                index.set(row)
                index.write()
                if row["status"] != "finished":
                    counts["failed"] += 1
                else:
                    counts[row.get("action") or "ran"] += 1
                wall = row.get("task_wall_s")
                took = f" in {wall:.1f} s" if wall is not None else ""
                detail = (f": {row['error']}" if row["status"] != "finished" and row.get("error")
                          else f" ({row.get('action')})")
                say(f"[{k}/{len(pending)}] {point.stem} {point.grid} {row['status']}{took}"
                    f"{detail}")
                fut.release()
    except OSError as err:      # the scheduler went away (CommClosedError), a full disk, ...
        with contextlib.suppress(OSError):
            index.write(force=True)
        print(f"error: the sweep stopped ({type(err).__name__}: {err}); finished runs and "
              f"checkpoints are kept, the index is {str(index.path)!r}; submit the same "
              f"command again to continue", file=sys.stderr, flush=True)
        return SOME_FAILED
    except KeyboardInterrupt:
        if client is not None or scheduler:     # a local cluster is shut down instead
            with contextlib.suppress(Exception):
                for fut in futures:
                    fut.cancel()                # queued runs do not start; running ones finish
        index.write(force=True)
        print(f"interrupted: the sweep stopped; finished runs and checkpoints are kept, the "
              f"index is {str(index.path)!r}; submit the same command again to continue "
              f"(finished runs are skipped, interrupted ones resume)", file=sys.stderr,
              flush=True)
        return INTERRUPTED
    index.write(force=True)
    elapsed = time.perf_counter() - start
    print(f"sweep: {len(plan.points)} runs: {counts['ran']} ran, {counts['resumed']} resumed, "
          f"{n_done + counts['existing']} finished before, {counts['failed']} failed, in "
          f"{elapsed:.1f} s; index {index.path}", flush=True)
    return SOME_FAILED if counts["failed"] else OK
