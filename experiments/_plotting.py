"""Figures without pyplot's global state: an Agg-backed ``Figure`` and one way to save it."""
from __future__ import annotations

__all__ = ["new_figure", "save_figure"]


def new_figure(figsize):
    """A ``matplotlib.figure.Figure`` on the Agg canvas (no display, no pyplot registry)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    import mpl_toolkits.mplot3d  # noqa: F401 - registers the "3d" projection

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, path, dpi: int = 100):
    """Tight layout, write ``path`` (format from its suffix)."""
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
