"""Durable runs: identity, files, a lock, checkpoints, resume and a clean Ctrl-C.

A run's identity is ``(experiment, configuration hash, seed)`` (:func:`run_identity`); its files
live in the ``--out`` folder under the stem ``EXPERIMENT[_quick]-HASH-seedN`` (:func:`run_paths`):

- ``STEM.h5``: the finished run (:func:`experiments.results.load`), written once, atomically;
- ``STEM.ckpt.h5``: the latest checkpoint of an unfinished run: the metrics so far and the
  ``checkpoint/`` group (parameters, optimiser state, RNG state, loop position), replaced
  atomically at every checkpoint and removed when the finished file is in place;
- ``.STEM.lock`` (hidden): the lock (``filelock``) held by the one process writing this run,
  and ``.STEM.lock.owner``, that process's id (named in the refusal of a second writer).

The configuration hash covers everything that changes the numbers except the seed (which is
the third part of the identity), so runs of different seeds or configurations never share a
file. :func:`claim` is what every experiment (and a sweep, per grid point) calls first: it checks
the output folder and optional packages, takes the lock, refuses to overwrite a finished run
(unless ``overwrite``) and loads the checkpoint to continue from (``resume``).

The refusals (:class:`ExperimentError` and its subclasses, each with its exit status) and the
checks made before any compute (:func:`check_out_dir`, :func:`check_modules`,
:func:`apply_overrides`, :func:`parse_override`) are :mod:`experiments._preflight`; the
conversion of a loop's RNG and optimiser state to what a checkpoint stores (:func:`rng_state`,
:func:`optimizer_arrays` and back) is :mod:`experiments._loopstate`. All these names are
importable from here.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shlex
import signal
import threading
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from . import _tables, provenance, results
from ._loopstate import optimizer_arrays, restore_optimizer, restore_rng, rng_state
from ._preflight import (
    ConfigError,
    ExperimentError,
    MissingDependencyError,
    OutputDirError,
    RunExistsError,
    RunFinished,
    RunLockedError,
    apply_overrides,
    check_modules,
    check_out_dir,
    parse_override,
)

__all__ = ["ExperimentError", "OutputDirError", "MissingDependencyError", "ConfigError",
           "RunExistsError", "RunFinished", "RunLockedError", "RunInterrupted", "RunId",
           "RunPaths", "RunOptions", "Run", "run_identity", "run_paths", "config_hash",
           "check_out_dir", "check_modules", "apply_overrides", "parse_override", "claim",
           "save_checkpoint", "after_step", "finish", "resume_command", "rng_state",
           "restore_rng", "optimizer_arrays", "restore_optimizer", "array_checksum"]


class RunInterrupted(Exception):
    """Ctrl-C stopped a run after writing its checkpoint; ``str()`` is the one-line hint."""

    exit_code = 130


@dataclasses.dataclass(frozen=True)
class RunId:
    """The identity of one run: experiment, hash of the configuration without the seed, seed."""

    experiment: str
    config_hash: str
    seed: int
    quick: bool = False

    @property
    def stem(self) -> str:
        """``EXPERIMENT[_quick]-HASH-seedN``: the file name of the run without suffix."""
        mode = "_quick" if self.quick else ""
        return f"{self.experiment}{mode}-{self.config_hash}-seed{self.seed}"


class RunPaths(NamedTuple):
    """The files of one run in its ``--out`` folder."""

    final: Path
    checkpoint: Path
    lock: Path


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """How to run (none of these changes the numbers, so none is part of the identity).

    Parameters
    ----------
    resume : bool
        Continue from the run's checkpoint (start afresh if there is none; do nothing if the
        run has finished).
    overwrite : bool
        Replace a finished run (the old file stays until the new one is complete) or discard a
        checkpoint.
    quiet : bool or None
        True: no per-epoch lines and no progress bars; None: bars only on a terminal.
    plot : bool
        Draw the figures (needs matplotlib); False skips them with a note.
    checkpoint_every : int or None
        Optimiser steps between checkpoints; None: the experiment's default; 0: only at the
        natural boundaries (end of epoch or phase).
    overrides : tuple of str
        The ``--set KEY=VALUE`` texts, repeated in the resume hint.
    """

    resume: bool = False
    overwrite: bool = False
    quiet: Optional[bool] = None
    plot: bool = True
    checkpoint_every: Optional[int] = None
    overrides: tuple = ()

    def __post_init__(self):
        if self.resume and self.overwrite:
            raise ConfigError("--resume and --overwrite exclude each other: pass --resume to "
                              "continue a run, or --overwrite to start it over.")
        every = self.checkpoint_every
        if every is not None and (isinstance(every, bool) or not isinstance(every, int)
                                  or every < 0):
            raise ConfigError(f"--checkpoint-every must be an integer >= 0 (optimiser steps; 0: "
                              f"only at epoch/phase ends), got {every!r}.")


class Run(NamedTuple):
    """A claimed run (what :func:`claim` yields): identity, files, options and the state to
    continue from. Holds the run's lock until the ``claim`` block ends."""

    id: RunId
    paths: RunPaths
    out: Path
    config: dict
    options: RunOptions
    meta: dict
    resumed: Optional[dict]
    stop: threading.Event
    data: dict


# ------------------------------------------------------------------------------- identity
def config_hash(experiment: str, config: dict) -> str:
    """First 10 hex digits of the SHA-256 of the canonical JSON of ``config`` without ``seed``."""
    body = {k: v for k, v in config.items() if k != "seed"}
    text = json.dumps({"experiment": experiment, "config": body}, sort_keys=True,
                      default=_tables._json_default)
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def run_identity(experiment: str, config: dict) -> RunId:
    """:class:`RunId` of ``config`` (its ``seed`` and ``quick`` entries; 0 and False if absent)."""
    return RunId(experiment, config_hash(experiment, config), int(config.get("seed", 0)),
                 bool(config.get("quick", False)))


def run_paths(out, run_id: RunId) -> RunPaths:
    """``out/STEM.h5``, ``out/STEM.ckpt.h5`` and ``out/.STEM.lock``."""
    out = Path(out)
    return RunPaths(out / f"{run_id.stem}.h5", out / f"{run_id.stem}.ckpt.h5",
                    out / f".{run_id.stem}.lock")


def array_checksum(*arrays) -> str:
    """SHA-256 of the arrays' dtypes, shapes and bytes (the data set's checksum)."""
    digest = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


# ------------------------------------------------------------------------------- claim
def _acquire(lock_path: Path, run_id: RunId):
    from filelock import FileLock, Timeout
    lock = FileLock(str(lock_path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        owner = _read_owner(lock_path)
        raise RunLockedError(f"run {run_id.stem} is being written by another process"
                             f"{owner} (lock {str(lock_path)!r} is held); wait for it to "
                             f"finish (then --resume or --overwrite), or run another --seed, "
                             f"configuration or --out.") from None
    return lock


def _owner_path(lock_path: Path) -> Path:
    return lock_path.with_name(lock_path.name + ".owner")


def _read_owner(lock_path: Path) -> str:
    try:
        return f" (pid {int(_owner_path(lock_path).read_text())})"
    except (OSError, ValueError):
        return ""


def _remove_partials(paths: RunPaths) -> None:
    """Delete temporary files of this run left by a killed writer (only called under the lock)."""
    for target in (paths.final, paths.checkpoint):
        for tmp in target.parent.glob(f".{target.name}.*.partial"):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _describe(position: dict) -> str:
    return str(position.get("where", position))


def _load_resume(paths: RunPaths, config: dict, data: dict) -> dict:
    """The checkpoint file's results and checkpoint group, checked against this run."""
    try:
        partial = results.load(paths.checkpoint)
        partial["checkpoint"] = results.load_checkpoint(paths.checkpoint)
    except (results.ResultsFileError, OSError) as err:
        raise RunExistsError(f"the checkpoint {str(paths.checkpoint)!r} cannot be read ({err}); "
                             f"pass --overwrite to start the run over.") from err
    same = json.dumps(partial["config"], sort_keys=True) == _tables._dumps(config)
    if not same:
        raise ConfigError(f"the checkpoint {str(paths.checkpoint)!r} has another configuration "
                          f"than this run ({partial['config']} vs {config}); pass --overwrite "
                          f"to start over.")
    if data and partial.get("data") and partial["data"].get("sha256") != data.get("sha256"):
        raise ConfigError(f"the data set changed since the checkpoint {str(paths.checkpoint)!r} "
                          f"was written (sha256 {partial['data'].get('sha256')} -> "
                          f"{data.get('sha256')}), so a resumed run would not equal an "
                          f"uninterrupted one; pass --overwrite to start over.")
    return partial


def _check_existing(run_id: RunId, paths: RunPaths, options: RunOptions, config: dict,
                    data: dict, note) -> Optional[dict]:
    """What to continue from (a loaded checkpoint or None); refusals as exceptions."""
    if paths.final.exists() and not options.overwrite:
        if options.resume:
            with contextlib.suppress(OSError):
                paths.checkpoint.unlink()
            raise RunFinished(f"run {run_id.stem} has already finished: {str(paths.final)!r}; "
                              f"nothing to resume (pass --overwrite to run it again).")
        raise RunExistsError(f"run {run_id.stem} has already finished: {str(paths.final)!r} "
                             f"exists. Pass --overwrite to replace it (the old file stays until "
                             f"the new one is complete), or change --seed, --set or --out.")
    if not paths.checkpoint.exists() or options.overwrite:
        if options.resume:
            note(f"no checkpoint of run {run_id.stem} in {str(paths.final.parent)!r}: starting "
                 f"from the beginning")
        return None
    if not options.resume:
        raise RunExistsError(f"run {run_id.stem} was interrupted: its checkpoint "
                             f"{str(paths.checkpoint)!r} exists. Pass --resume to continue it, "
                             f"or --overwrite to discard it and start over.")
    partial = _load_resume(paths, config, data)
    note(f"resuming run {run_id.stem} from its checkpoint "
         f"({_describe(partial['checkpoint']['position'])})")
    return partial


@contextlib.contextmanager
def _stop_on_sigint(stop: threading.Event):
    """While active (main thread only), the first Ctrl-C sets ``stop`` (the loop checkpoints and
    ends at its next step); a second one raises KeyboardInterrupt at once."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _print_note(text: str) -> None:
    print(f"note: {text}", flush=True)


@contextlib.contextmanager
def claim(experiment: str, config: dict, out, options: Optional[RunOptions] = None,
          plot_modules: Optional[dict] = None, data: Optional[dict] = None,
          checkpoints: bool = False, note=_print_note):
    """Check, lock and open one run; yields a :class:`Run` (the lock is held inside the block).

    Parameters
    ----------
    experiment : str
    config : dict
        The full configuration (with ``seed`` and ``quick``): the run's identity.
    out : str or Path
        The results folder (checked by :func:`check_out_dir`).
    options : RunOptions, optional
    plot_modules : dict, optional
        Packages the figures need (checked unless ``options.plot`` is False).
    data : dict, optional
        The data set's description and ``sha256``; a resumed checkpoint must match it.
    checkpoints : bool
        The run writes checkpoints: Ctrl-C then stops at the next step boundary after writing
        one (:func:`after_step`) instead of at once.
    note : callable
        Where notes go (``print`` by default).

    Raises
    ------
    OutputDirError, MissingDependencyError, RunExistsError, RunFinished, RunLockedError,
    ConfigError
        Before any compute.
    """
    options = options or RunOptions()
    out = check_out_dir(out)
    if options.plot and plot_modules:
        check_modules(plot_modules, f"{experiment}'s figures", "--no-plot")
    run_id = run_identity(experiment, config)
    paths = run_paths(out, run_id)
    lock = _acquire(paths.lock, run_id)
    try:
        with contextlib.suppress(OSError):
            _owner_path(paths.lock).write_text(str(os.getpid()))
        _remove_partials(paths)
        resumed = _check_existing(run_id, paths, options, config, data or {}, note)
        if resumed is not None:
            _warn_code_change(resumed, note)
        stop = threading.Event()
        run = Run(run_id, paths, out, config, options, provenance.run_metadata(), resumed, stop,
                  data or {})
        with (_stop_on_sigint(stop) if checkpoints else contextlib.nullcontext()):
            yield run
    finally:
        lock.release()


def _warn_code_change(resumed: dict, note) -> None:
    now = provenance.git_state()
    before = (resumed.get("git_commit"), resumed.get("git_diff_sha256"))
    if before != (now["git_commit"], now["git_diff_sha256"]) and before[1] is not None:
        note(f"the code changed since the checkpoint (commit {before[0][:12]} diff "
             f"{before[1][:12]} -> {now['git_commit'][:12]} diff "
             f"{now['git_diff_sha256'][:12]}): the resumed run may differ from an "
             f"uninterrupted one")


# ------------------------------------------------------------------------------- writing
def resume_command(run: Run) -> str:
    """The command line that continues ``run``."""
    parts = ["python", "-m", "experiments", run.id.experiment]
    if run.id.quick:
        parts.append("--quick")
    parts += ["--seed", str(run.id.seed), "--out", str(run.out)]
    for text in run.options.overrides:
        parts += ["--set", text]
    return " ".join(shlex.quote(p) for p in parts + ["--resume"])


def save_checkpoint(run: Run, arrays: dict, position: dict, metrics: dict,
                    rng_state: Optional[dict] = None, units: Optional[dict] = None) -> Path:
    """Replace the run's checkpoint file atomically: metrics so far plus the ``checkpoint/``
    group (``arrays``: parameters and optimiser state; ``position``: loop counters and a
    ``"where"`` text; ``rng_state``: :func:`rng_state`)."""
    def fill(f):
        results.write_results(f, run.id.experiment, run.config, metrics, None, run.meta, units,
                              status="checkpoint", run_id=run.id.stem, data=run.data)
        results.write_checkpoint_group(f, arrays, position, rng_state)

    return results.atomic_write(run.paths.checkpoint, fill)


def after_step(run: Run, steps_since: int, build, force: bool = False,
               default_every: int = 0) -> int:
    """Call after every optimiser step: checkpoint when due, stop cleanly after Ctrl-C.

    Parameters
    ----------
    run : Run
    steps_since : int
        Steps since the last checkpoint, this one included.
    build : callable
        ``build() -> dict`` of :func:`save_checkpoint`'s keyword arguments (called only when a
        checkpoint is written).
    force : bool
        Write one now (end of an epoch or phase).
    default_every : int
        Steps between checkpoints when ``run.options.checkpoint_every`` is None (0: only when
        forced).

    Returns
    -------
    int
        Steps since the last checkpoint after this call (0 when one was written).

    Raises
    ------
    RunInterrupted
        After writing the checkpoint, when Ctrl-C was pressed; its message is the resume hint.
    """
    every = run.options.checkpoint_every
    every = default_every if every is None else every
    stop = run.stop.is_set()
    if not (stop or force or (every and steps_since >= every)):
        return steps_since
    state = build()
    save_checkpoint(run, **state)
    if stop:
        raise RunInterrupted(f"interrupted: run {run.id.stem} saved at "
                             f"{_describe(state['position'])} in {str(run.paths.checkpoint)!r}; "
                             f"resume with: {resume_command(run)}")
    return 0


def finish(run: Run, metrics: dict, tables: Optional[dict] = None, units: Optional[dict] = None,
           metric_attrs: Optional[dict] = None, checkpoint: Optional[dict] = None) -> Path:
    """Write the finished run atomically, then remove its checkpoint. Returns the file."""
    path = results.save(run.paths.final, run.id.experiment, run.config, metrics, tables,
                        run.meta, units, metric_attrs, checkpoint, run.id.stem, run.data)
    with contextlib.suppress(OSError):
        run.paths.checkpoint.unlink()
    return path
