"""Progress for long loops: a tqdm bar on a terminal, per-epoch lines, silence with ``--quiet``.

Bars (loss, accuracy, forward/backward NFE, ETA) are drawn on stderr only when both stdout and
stderr are terminals and the run is not quiet; log lines go to stdout unless the run is quiet.
"""
from __future__ import annotations

import sys

__all__ = ["bars_enabled", "progress_bar", "log"]


class _NoBar:
    """Stands in for a bar when none is drawn."""

    def update(self, n=1):
        return None

    def set_postfix_str(self, text, refresh=True):
        return None

    def close(self):
        return None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def bars_enabled(quiet) -> bool:
    """Whether to draw bars: not ``quiet`` (True), and (when None) both streams are terminals."""
    if quiet:
        return False
    return bool(getattr(sys.stdout, "isatty", lambda: False)()
                and getattr(sys.stderr, "isatty", lambda: False)())


def progress_bar(total: int, desc: str, quiet=None, initial: int = 0, unit: str = "it"):
    """A tqdm bar over ``total`` steps (``initial`` already done), or a silent stand-in."""
    if not bars_enabled(quiet):
        return _NoBar()
    from tqdm import tqdm
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False,
                dynamic_ncols=True, file=sys.stderr)


def log(text: str, quiet=None) -> None:
    """Print a log line to stdout unless ``quiet`` is True (bars, if any, stay intact)."""
    if quiet:
        return
    if bars_enabled(quiet):
        from tqdm import tqdm
        tqdm.write(text, file=sys.stdout)
    else:
        print(text, flush=True)
