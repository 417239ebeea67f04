"""Run files by name: the name pattern, the files of a results folder, and the command that
regenerates a file.

A durable run's file is ``EXPERIMENT[_quick]-CONFIGHASH-seedN[.ckpt].h5``
(:data:`RUN_NAME`, the stems :func:`experiments.durable.run_paths` gives), a file written
before issue 10 ``EXPERIMENT[_quick].h5`` (:func:`output_path`). :func:`find_runs` lists the
finished runs of a folder; :func:`_rerun_hint` reads a file's name back into the
``python -m experiments`` command that writes it again, for the messages of
:func:`experiments.results.load`. :func:`find_runs` and :func:`output_path` are importable
from :mod:`experiments.results`.
"""
from __future__ import annotations

import re
from pathlib import Path

#: A run file's name: ``EXPERIMENT[_quick]-CONFIGHASH-seedN[.ckpt].h5`` (experiments.durable).
RUN_NAME = re.compile(r"^(?P<name>[A-Za-z0-9_]+?)(?P<quick>_quick)?-(?P<hash>[0-9a-f]{10})"
                      r"-seed(?P<seed>\d+)(?P<ckpt>\.ckpt)?$")


def output_path(out, experiment: str, quick: bool, suffix: str = ".h5") -> Path:
    """``out/EXPERIMENT.h5`` for a full run, ``out/EXPERIMENT_quick.h5`` for a quick one
    (the names before issue 10; durable runs are named by :func:`experiments.durable.run_paths`).
    """
    return Path(out) / f"{experiment}{'_quick' if quick else ''}{suffix}"


def find_runs(out, experiment: str | None = None, quick: bool | None = None,
              seed: int | None = None) -> list:
    """Finished run files under ``out`` (named ``EXPERIMENT[_quick]-HASH-seedN.h5``), sorted.

    Parameters
    ----------
    out : str or Path
        The ``--out`` folder.
    experiment, quick, seed : optional
        Keep only runs of this experiment / mode / seed.

    Returns
    -------
    list of Path
        Checkpoints (``*.ckpt.h5``) and temporary files are not listed.
    """
    found = []
    for path in sorted(Path(out).glob("*.h5")):
        m = RUN_NAME.match(path.name[:-3])
        if m is None or m["ckpt"]:
            continue
        if experiment is not None and m["name"] != experiment:
            continue
        if quick is not None and bool(m["quick"]) != bool(quick):
            continue
        if seed is not None and int(m["seed"]) != int(seed):
            continue
        found.append(path)
    return found


def _rerun_hint(path: Path) -> str:
    """How to regenerate ``path``: the exact command when its name is a run file's
    (``NAME[_quick]-HASH-seedN[.ckpt].h5``, or the older ``NAME[_quick].h5``) for a registered
    experiment, else the generic one (with its folder)."""
    stem = path.name[:-3] if path.name.endswith(".h5") else path.stem
    run = RUN_NAME.match(stem)
    if run is not None:
        name, quick, seed = run["name"], bool(run["quick"]), f" --seed {run['seed']}"
    else:
        quick = stem.endswith("_quick")
        name, seed = (stem[:-len("_quick")] if quick else stem), ""
    out = repr(str(path.parent))
    try:                    # imported only on this error path (it imports every experiment)
        from .registry import EXPERIMENTS
    except Exception:  # noqa: BLE001 - an error message must not fail: use the generic hint
        EXPERIMENTS = {}
    if path.suffix == ".h5" and name in EXPERIMENTS:
        extra = (" (with the same --set options, if it had any)" if run is not None else "")
        resume = (" --resume" if run is not None and run["ckpt"] else "")
        return (f"rerun the experiment to regenerate it: python -m experiments {name}"
                f"{' --quick' if quick else ''}{seed} --out {out}{resume}{extra}")
    return (f"rerun the experiment that wrote it to regenerate it: python -m experiments NAME "
            f"[--quick] --out {out} (`python -m experiments --list` lists the names)")

