"""Figures without pyplot's global state: an Agg-backed ``Figure``, a configuration caption,
integer ticks, and one way to save it. matplotlib is imported only when a figure is drawn."""
from __future__ import annotations

import textwrap

from ._progress import log

__all__ = ["PLOT_MODULES", "new_figure", "save_figure", "caption", "caption_text",
           "integer_ticks", "draw"]

#: What the figures import, with the pip requirement that provides it (checked before compute).
PLOT_MODULES = {"matplotlib": "adjointcore[plot]", "mpl_toolkits.mplot3d": "adjointcore[plot]"}


def new_figure(figsize):
    """A ``matplotlib.figure.Figure`` on the Agg canvas (no display, no pyplot registry)."""
    import mpl_toolkits.mplot3d  # noqa: F401 - registers the "3d" projection
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def caption_text(stem: str, config: dict, keys=None, width: int = 150) -> str:
    """``"run STEM: key=value, ..."`` wrapped to ``width`` characters (all keys by default)."""
    keys = [k for k in (keys or config) if k in config]
    body = ", ".join(f"{k}={config[k]}" for k in keys)
    return "\n".join(textwrap.wrap(f"run {stem}: {body}", width))


def caption(fig, stem: str, config: dict, keys=None, fontsize: float = 7) -> int:
    """Write the run's configuration under the axes, wrapped to the figure's width; returns its
    number of lines (pass it to :func:`save_figure` as ``caption_lines`` to keep the axes clear
    of it)."""
    width = int(0.97 * fig.get_figwidth() * 72 / (0.61 * fontsize))   # monospace advance
    text = caption_text(stem, config, keys, width)
    fig.text(0.01, 0.005, text, ha="left", va="bottom", fontsize=fontsize, color="0.3",
             family="monospace")
    return text.count("\n") + 1


def integer_ticks(axis) -> None:
    """Ticks only at integers on ``axis`` (epochs, iterations)."""
    from matplotlib.ticker import MaxNLocator
    axis.set_major_locator(MaxNLocator(integer=True))


def save_figure(fig, path, dpi: int = 100, caption_lines: int = 0):
    """Tight layout leaving room for ``caption_lines`` of caption (7 pt), then write ``path``
    (format from its suffix)."""
    lines = caption_lines
    bottom = min(0.4, (lines * 7 * 1.35 + 6) / 72 / fig.get_figheight()) if lines else 0
    fig.tight_layout(rect=(0, bottom, 1, 1))
    fig.savefig(path, dpi=dpi)


def draw(options, plot) -> int:
    """Call ``plot() -> path`` after the HDF5 is written; returns an exit status.

    Skipped with a note when ``options.plot`` is False (``--no-plot``); a failure is reported in
    one line (status 1) and the results stay.
    """
    if not options.plot:
        log("figures skipped (--no-plot); the HDF5 results are complete", options.quiet)
        return 0
    try:
        path = plot()
    except Exception as err:  # noqa: BLE001 - the results are saved: report and go on
        print(f"figure not drawn ({type(err).__name__}: {err}); the HDF5 results are saved",
              flush=True)
        return 1
    log(f"figure: {path}", options.quiet)
    return 0
