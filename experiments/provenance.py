"""Provenance of a run: the versions, git state, BLAS libraries and device it ran with.

:func:`run_metadata` gathers what every results file records in its root attributes
(``versions``, ``git_commit``, ``git_dirty``, ``git_diff_sha256``, ``blas``, ``blas_library``,
``blas_threads``, ``backend``, ``device``, ``created``; see :mod:`experiments.results`);
:func:`git_state` is also what :mod:`experiments.durable` compares when a run resumes from a
checkpoint, to warn that the code changed since.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

__all__ = ["PACKAGES", "git_state", "blas_info", "run_metadata"]

#: Distributions whose versions every run records (not imported to read them).
PACKAGES = ("numpy", "scipy", "h5py", "scikit-learn", "matplotlib", "threadpoolctl", "filelock",
            "tqdm")


def _cpu_description() -> str:
    """``"cpu (<machine>, <n> usable cores)"``: what the timings of a NumPy run ran on."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count()
    return f"cpu ({platform.machine() or 'unknown'}, {cores} usable cores)"


def _git(*args) -> bytes | None:
    """Output of ``git ARGS`` run in this package's folder, or None (no git, not a checkout)."""
    try:
        out = subprocess.run(["git", *args], capture_output=True, timeout=20,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_state() -> dict:
    """``{"git_commit", "git_dirty", "git_diff_sha256"}`` of the checkout this code runs from.

    ``git_dirty`` is True when tracked files differ from the commit (untracked files, such as
    results, do not count); ``git_diff_sha256`` is the SHA-256 of ``git diff HEAD --binary``
    (the hash of the empty diff when clean), so two runs of the same edited tree can be matched.
    Outside a git checkout: ``"unknown"``, False and ``""``.
    """
    head = _git("rev-parse", "HEAD")
    if head is None:
        return {"git_commit": "unknown", "git_dirty": False, "git_diff_sha256": ""}
    diff = _git("diff", "HEAD", "--binary") or b""
    return {"git_commit": head.decode().strip() or "unknown", "git_dirty": bool(diff),
            "git_diff_sha256": hashlib.sha256(diff).hexdigest()}


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def blas_info() -> list:
    """threadpoolctl's record of every BLAS/OpenMP library loaded (library, version, threads)."""
    try:
        import threadpoolctl
    except ImportError:
        return []
    keys = ("user_api", "internal_api", "version", "num_threads", "threading_layer", "filepath")
    return [{k: info.get(k) for k in keys} for info in threadpoolctl.threadpool_info()]


def run_metadata(backend: str = "numpy", device: str | None = None) -> dict:
    """Versions, git state, BLAS, backend and device of this run (default device: this CPU).

    Returns
    -------
    dict
        ``versions`` (python, adjointcore and :data:`PACKAGES`, plus cupy when imported),
        ``git_commit``, ``git_dirty``, ``git_diff_sha256``, ``blas`` (list of dict),
        ``blas_library``, ``blas_threads``, ``backend``, ``device``, ``created``.
    """
    import adjointcore
    versions = {"python": platform.python_version(), "adjointcore": adjointcore.__version__}
    versions.update({dist: _version(dist) for dist in PACKAGES})
    if "cupy" in sys.modules or backend == "cupy":
        versions["cupy"] = getattr(sys.modules.get("cupy"), "__version__", "not imported")
    blas = blas_info()
    first = next((b for b in blas if b.get("user_api") == "blas"), None)
    library = (f"{first['internal_api']} {first['version']} ({first['threading_layer']})"
               if first else "unknown")
    return {"versions": versions, **git_state(), "blas": blas, "blas_library": library,
            "blas_threads": int(first["num_threads"]) if first else -1, "backend": backend,
            "device": _cpu_description() if device is None else device,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat()}
