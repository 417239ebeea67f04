"""Skip connections: :class:`Residual`, ``y = x + inner(x)``.

The inner layer's parameters are the residual's parameters (one flat vector, as in
:mod:`adjointcore.layers.compose`).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from ..backend import Array, as_dtype
from ..errors import ShapeError, check_array, check_generator, check_params
from ._checks import check_child_layer, check_params_dot, init_child
from .base import Layer, call_jvp, call_jvp_vjp, kernel_jvp, layer_kernel
from .binding import call_vjp
from .compose import _child_context, _child_params_bar
from .second_order import SecondOrderBars

__all__ = ["Residual", "ResidualCache"]


class ResidualCache(NamedTuple):
    """Cache of :class:`Residual`: the inner layer's cache."""
    inner: Any


class Residual(Layer):
    """Skip connection ``y = x + inner(x)``; ``inner`` must preserve the shape.

    Parameters
    ----------
    inner : layer object
        Any layer (e.g. a :class:`Sequential`); its parameters are this layer's parameters and
        its named views are kept unchanged.
    """

    def __init__(self, inner: Any) -> None:
        self._n = check_child_layer(inner, "inner")
        self.inner = inner
        self._kernel = layer_kernel(inner)

    @property
    def analytic(self) -> bool:  # type: ignore[override]  # read-only: derived from the children
        return getattr(self.inner, "analytic", False)

    @property
    # read-only: derived from the children
    def time_dependent(self) -> bool:  # type: ignore[override]
        return getattr(self.inner, "time_dependent", False)

    @property
    def needs_rng(self) -> bool:  # type: ignore[override]  # read-only: derived from the children
        return getattr(self.inner, "needs_rng", False)

    @property
    # read-only: derived from the children
    def exact_vjp(self) -> bool | str:  # type: ignore[override]
        """The inner layer's ``exact_vjp`` (True by default)."""
        return getattr(self.inner, "exact_vjp", True)

    @property
    def n_params(self) -> int:
        return self._n

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = getattr(self.inner, "param_shapes", None)
        if shapes is None:
            return {"params": (self._n,)} if self._n else {}
        return dict(shapes)

    def init(self, rng: np.random.Generator, dtype: DTypeLike = np.float64) -> Array:
        """The inner layer's ``init``."""
        check_generator(rng)
        dtype = as_dtype(dtype)
        return init_child(self.inner, rng, dtype, self._n, "inner")

    def output_shape(self, input_shape: Sequence[int]) -> tuple:
        shape = tuple(input_shape)
        if hasattr(self.inner, "output_shape"):
            out = tuple(self.inner.output_shape(shape))
            if out != shape:
                raise ShapeError(f"Residual needs a shape-preserving inner layer, but "
                                 f"{type(self.inner).__name__} maps {shape} to {out}.")
        return shape

    def forward(self, params: Array, x: Array, **context: Any) -> tuple[Array, ResidualCache]:
        """``(x + inner(x), ResidualCache)``."""
        check_params("params", params, self._n, owner="Residual")
        z, cache = self.inner.forward(params, x, **_child_context(self.inner, "inner", context))
        if tuple(z.shape) != tuple(x.shape):
            raise ShapeError(f"Residual needs a shape-preserving inner layer: input shape "
                             f"{tuple(x.shape)}, inner output shape {tuple(z.shape)}. Add a "
                             f"projection inside `inner` or drop the skip connection.")
        return x + z, ResidualCache(cache)

    def vjp(self, params: Array, cache: ResidualCache, y_bar: Array,
            need_params: bool = True) -> tuple[Array, Array | None]:
        x_bar, p_bar = call_vjp(self.inner, params, cache.inner, y_bar, need_params)
        if need_params:
            p_bar = _child_params_bar(p_bar, self._n, "inner", y_bar)
        return y_bar + x_bar, p_bar

    def apply(self, params: Array, x: Array, t: Any = None, rng: np.random.Generator | None = None,
              tape: bool = True) -> tuple[Array, ResidualCache | None]:
        """Unchecked :meth:`forward` (``tape=False``: no cache)."""
        z, cache = self._kernel.apply(params, x, t, rng, tape)
        return x + z, (ResidualCache(cache) if tape else None)

    def apply_vjp(self, params: Array, cache: ResidualCache, y_bar: Array,
                  params_bar: Array | None = None) -> Array:
        """Unchecked :meth:`vjp`."""
        return y_bar + self._kernel.apply_vjp(params, cache.inner, y_bar, params_bar)

    def jvp(self, params: Array, cache: ResidualCache, x_dot: Array,
            params_dot: Array | None = None) -> Array:
        """Forward mode ``y_dot = x_dot + inner.jvp(...)``.

        Parameters
        ----------
        params : ndarray, shape (n_params,)
        cache : ResidualCache
        x_dot : ndarray, shape of ``x``
        params_dot : ndarray, shape (n_params,), optional

        Returns
        -------
        y_dot : ndarray, shape of ``x``
        """
        if not isinstance(cache, ResidualCache):
            raise TypeError(f"`cache` must be the ResidualCache returned by Residual.forward, "
                            f"got {type(cache).__name__}.")
        check_params("params", params, self._n, owner="Residual")
        check_params_dot(params_dot, self._n, owner="Residual")
        check_array("x_dot", x_dot, fix="Pass the tangent of the forward input x (same shape).")
        z_dot = call_jvp(self.inner, params, cache.inner, x_dot, params_dot, "inner")
        if tuple(getattr(z_dot, "shape", ())) != tuple(x_dot.shape):
            raise ShapeError(f"Residual: inner.jvp returned y_dot of shape "
                             f"{tuple(getattr(z_dot, 'shape', ()))} for `x_dot` of shape "
                             f"{tuple(x_dot.shape)}; the inner layer must preserve the shape.")
        return x_dot + z_dot

    def apply_jvp(self, params: Array, cache: ResidualCache, x_dot: Array,
                  params_dot: Array | None = None) -> Array:
        """Unchecked :meth:`jvp`."""
        return x_dot + kernel_jvp(self._kernel, params, cache.inner, x_dot, params_dot, "inner")

    def apply_jvp_vjp(self, params: Array, cache: ResidualCache, x_dot: Array,
                      params_dot: Array | None, y_dot_bar: Array,
                      y_bar: Array | None = None) -> SecondOrderBars:
        """Second-order VJP of ``y = x + g(x)`` (``y_dot = x_dot + g_dot``): the inner layer's,
        plus ``y_bar`` on ``x_bar`` and ``y_dot_bar`` on ``x_dot_bar`` (the identity has no
        second derivative).

        Returns
        -------
        SecondOrderBars
        """
        r = call_jvp_vjp(self._kernel, params, cache.inner, x_dot, params_dot, y_dot_bar, y_bar,
                         "inner")
        x_bar = r.x_bar if y_bar is None else r.x_bar + y_bar
        return r._replace(x_bar=x_bar, x_dot_bar=r.x_dot_bar + y_dot_bar)

    def __repr__(self) -> str:
        return f"Residual({self.inner!r})"
