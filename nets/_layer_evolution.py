"""The general weight evolution of :class:`nets.anodev2.ANODEV2Block`: forward Euler on
``w' = q(w; p)`` for any shape-preserving layer ``q`` (the RDA evolution of the paper is
:mod:`nets._rda`). Re-exported by :mod:`nets.anodev2`.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from adjointcore.backend import Array
from adjointcore.errors import (
    ShapeError,
    check_array,
)
from adjointcore.layers.binding import call_vjp

__all__ = ["LayerEvolution", "LayerEvolutionCache"]


class LayerEvolutionCache(NamedTuple):
    """Cache of :meth:`LayerEvolution.step`: the layer cache and the step size."""
    q_cache: Any
    dt: float


class LayerEvolution:
    """Forward Euler step ``w_{j+1} = w_j + dt q(w_j; p)`` of a general evolution ODE.

    Parameters
    ----------
    q : layer object
        Any layer (e.g. a :class:`adjointcore.layers.Sequential` of ``Linear``/``Tanh``) mapping
        the flat weight vector, seen as a batch of one ``(1, n_weights)``, to the same shape.
        Time-dependent layers receive ``t=`` the step's start time. ``p`` is its parameter
        vector.

    Notes
    -----
    Same protocol as :class:`nets._rda.RDAEvolution`; ``step_vjp`` returns
    ``(w_bar + q_x^T (dt w_bar), q_p^T (dt w_bar))``.
    """

    def __init__(self, q: Any) -> None:
        for attr in ("n_params", "forward", "vjp"):
            if not hasattr(q, attr):
                raise TypeError(f"`q` ({type(q).__name__}) is not a layer: it lacks {attr}.")
        self.q = q

    @property
    def n_params(self) -> int:
        return int(self.q.n_params)

    def init(self, rng: np.random.Generator, dtype: DTypeLike = np.float64) -> Array:
        """``q.init(rng, dtype)``."""
        return self.q.init(rng, dtype=dtype)

    def step(self, p: Array, w: Array, t: float = 0.0,
             dt: float = 1.0) -> tuple[Array, LayerEvolutionCache]:
        """``(w + dt q(w; p), cache)``."""
        check_array("w", w, ndim=1, allow_complex=False, fix="Pass the flat weight vector.")
        ctx = {"t": t} if getattr(self.q, "time_dependent", False) else {}
        y, cache = self.q.forward(p, w[None, :], **ctx)
        if tuple(y.shape) != (1, w.shape[0]):
            raise ShapeError(f"`q` must map the weights (1, {w.shape[0]}) to the same shape, "
                             f"got {tuple(y.shape)}; end q with Linear(h, {w.shape[0]}).")
        return w + dt * y[0], LayerEvolutionCache(cache, float(dt))

    def step_vjp(self, p: Array, cache: LayerEvolutionCache, w_next_bar: Array,
                 need_params: bool = True) -> tuple[Array, Array | None]:
        """``(w_bar, p_bar)`` of :meth:`step`."""
        x_bar, p_bar = call_vjp(self.q, p, cache.q_cache, cache.dt * w_next_bar[None, :],
                                need_params)
        return w_next_bar + x_bar[0], p_bar

    def __repr__(self) -> str:
        return f"LayerEvolution({self.q!r})"
