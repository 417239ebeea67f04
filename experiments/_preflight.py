"""What refuses a run before any compute: the errors of :mod:`experiments.durable` and the
checks that raise them.

- :class:`ExperimentError` (exit status 2 unless a subclass says otherwise) and its subclasses:
  :class:`OutputDirError`, :class:`MissingDependencyError`, :class:`ConfigError`,
  :class:`RunExistsError`, :class:`RunFinished` (exit status 0) and :class:`RunLockedError`
  (exit status 3); each message names the argument or path and the fix;
- :func:`check_out_dir`: the ``--out`` folder exists (created if missing) and is writable;
- :func:`check_modules`: optional packages are installed (else what to ``pip install``);
- :func:`parse_override` and :func:`apply_overrides`: ``--set KEY=VALUE`` texts, each key
  known and each value of its default's type.

All are importable from :mod:`experiments.durable`, where :func:`experiments.durable.claim`
uses them.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Optional


class ExperimentError(Exception):
    """A run refused before any compute; the message names the argument or path and the fix."""

    exit_code = 2


class OutputDirError(ExperimentError):
    """``--out`` cannot hold results (a file, under a file, read-only, not creatable)."""


class MissingDependencyError(ExperimentError):
    """An optional package the run needs is not installed; the message says what to install."""


class ConfigError(ExperimentError, ValueError):
    """A configuration override is unknown or of the wrong type, or a checkpoint's data or
    configuration does not match this run."""


class RunExistsError(ExperimentError):
    """A finished run or an interrupted run's checkpoint of this identity exists already."""


class RunFinished(ExperimentError):
    """``--resume`` of a run that has already finished: nothing to do (exit status 0)."""

    exit_code = 0


class RunLockedError(ExperimentError):
    """Another process is writing the run of this identity."""

    exit_code = 3


# ------------------------------------------------------------------------------- checks
def check_out_dir(out) -> Path:
    """``out`` as a folder that exists (created if missing) and accepts new files.

    Raises
    ------
    OutputDirError
        ``out`` is a file, lies under a regular file, cannot be created, or is not writable
        (read-only folder or file system); the message names the path and the fix.
    """
    out = Path(out)
    shown = repr(str(out))
    fix = "pass --out with a writable folder (it is created if missing)"
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--out {shown} is an existing file, not a directory; {fix}.")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputDirError(f"--out {shown} lies under {str(parent)!r}, which is a "
                                     f"regular file, not a folder; {fix}.")
            break
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OutputDirError(f"--out {shown} cannot be created ({err.strerror or err}); "
                             f"{fix}.") from err
    probe = out / f".write-test.{os.getpid()}"
    try:
        with open(probe, "wb") as fh:
            fh.write(b"ok")
    except OSError as err:
        raise OutputDirError(f"--out {shown} is not writable ({err.strerror or err}); {fix}, "
                             f"or fix its permissions.") from err
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return out


def _installed(module: str) -> bool:
    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_modules(modules: dict, purpose: str, skip_flag: str = "") -> None:
    """Raise :class:`MissingDependencyError` naming what to ``pip install`` for ``purpose``.

    Parameters
    ----------
    modules : dict of str -> str
        Import name -> pip requirement (e.g. ``{"matplotlib": "adjointcore[plot]"}``).
    purpose : str
        What needs them (``"digits's figure"``).
    skip_flag : str
        A flag that avoids the need (``"--no-plot"``), named in the message.
    """
    missing = {m: req for m, req in modules.items() if not _installed(m)}
    if missing:
        reqs = " ".join(shlex.quote(r) for r in dict.fromkeys(missing.values()))
        skip = f", or pass {skip_flag} to skip it" if skip_flag else ""
        raise MissingDependencyError(f"{purpose} needs {sorted(missing)}, not installed: pip "
                                     f"install {reqs}{skip}.")


def parse_override(text: str) -> tuple:
    """``"KEY=VALUE"`` as ``(KEY, value)``; VALUE is read as JSON (numbers, true/false, null,
    lists) and otherwise kept as text."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r} must look like KEY=VALUE, e.g. --set epochs=3.")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value


def _fits(default, value) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if default is None:
        return value is None or isinstance(value, (int, float, str))
    return isinstance(value, type(default))


def apply_overrides(experiment: str, defaults: dict, overrides: Optional[dict]) -> dict:
    """``defaults`` updated by ``overrides``, each key known and each value of the default's type.

    Raises
    ------
    ConfigError
        Naming the key, what it must be and the keys there are.
    """
    cfg = dict(defaults)
    for key, value in (overrides or {}).items():
        if key not in defaults or key in ("seed", "quick"):
            known = sorted(k for k in defaults if k not in ("seed", "quick"))
            raise ConfigError(f"--set {key}=...: {experiment} has no setting {key!r} (--seed "
                              f"and --quick are flags); choose one of {known}.")
        if not _fits(defaults[key], value):
            raise ConfigError(f"--set {key}={value!r}: {experiment}'s {key!r} must be "
                              f"{type(defaults[key]).__name__} like its default "
                              f"{defaults[key]!r}.")
        cfg[key] = float(value) if isinstance(defaults[key], float) else value
    return cfg

