"""Helpers of the forward-mode and second-order protocols (:mod:`adjointcore.layers.base`,
"Forward mode" and "Second order").

- :class:`SecondOrderBars`: the result of ``jvp_vjp``, the VJP of the tangent-lifted layer
  ``(x, params, t, x_dot, params_dot) -> (y, y_dot)``.
- :func:`tangent_sum` (a sum of tangents, in place where that keeps the dtype) and
  :func:`add_time_bar` (a sum of ``t_bar`` values, ``None`` meaning no dependence on ``t``),
  used by the layers' ``jvp``/``jvp_vjp`` and by composites chaining their children's.
- :func:`linear_jvp_vjp` and the mixin :class:`LinearSecondOrder`: the second-order VJP of a
  parameter-free layer that is linear given its cache (pooling, dropout, reshapes), whose
  second derivative vanishes.

The dispatch to a child's ``jvp_vjp`` (:func:`~adjointcore.layers.base.call_jvp_vjp`) tells a
layer's own method from the :class:`~adjointcore.layers.base.Layer` default, so it lives in
:mod:`adjointcore.layers.base`, which also re-exports every name here.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ..backend import Array, get_array_module

__all__ = ["SecondOrderBars", "tangent_sum", "add_time_bar", "linear_jvp_vjp", "LinearSecondOrder"]


def tangent_sum(a: Array, b: Array) -> Array:
    """``a + b`` with NumPy promotion; added in place into ``a`` when that keeps ``a``'s dtype
    (``a`` must then be a fresh array the caller owns, never an input or a cache entry)."""
    if np.result_type(a.dtype, b.dtype) == a.dtype \
            and np.broadcast_shapes(a.shape, b.shape) == tuple(a.shape):
        a += b
        return a
    return a + b


class SecondOrderBars(NamedTuple):
    """Result of ``jvp_vjp``: the VJP of the tangent-lifted map
    ``(x, params, t, x_dot, params_dot) -> (y, y_dot)``.

    Attributes
    ----------
    x_bar : ndarray, shape of ``x``
    params_bar : ndarray, shape (n_params,)
    x_dot_bar : ndarray, shape of ``x``
    params_dot_bar : ndarray, shape (n_params,)
    t_bar : 0-d ndarray or None
        None for a layer that does not depend on ``t``.
    """

    x_bar: Array
    params_bar: Array
    x_dot_bar: Array
    params_dot_bar: Array
    t_bar: Array | None


def add_time_bar(a: Array | None, b: Array | None) -> Array | None:
    """Sum of two ``t_bar`` values where ``None`` means "no dependence on ``t``"."""
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def missing_method(layer: Any, where: str, what: str) -> NotImplementedError:
    """The error for a layer without an optional protocol method: ``"{who} has no {what}"``,
    ``who`` naming ``where`` (the caller's context, may be empty) and the layer's class."""
    who = f"{where} ({type(layer).__name__})" if where else type(layer).__name__
    return NotImplementedError(f"{who} has no {what}")


def _no_jvp_vjp(layer: Any, where: str = "") -> NotImplementedError:
    return missing_method(layer, where, "second-order jvp_vjp(params, cache, x_dot, params_dot, "
                          "y_dot_bar, y_bar=None); add one (see docs/protocols.md, 'Second "
                          "order') or keep the layer out of divergence gradients.")


def linear_jvp_vjp(layer: Any, params: Array | None, cache: Any, x_shape: Sequence[int],
                   x_dot: Array, y_dot_bar: Array, y_bar: Array | None = None) -> SecondOrderBars:
    """Second-order VJP of a parameter-free layer that is linear in ``x`` given its cache.

    For ``y = J x`` with ``J`` fixed by the cache (a pooling window's weights, a max-pool's
    argmax, a dropout mask, a reshape) the tangent map is ``y_dot = J x_dot``, independent of
    ``x``: the second derivative vanishes, and the VJP of ``(x, x_dot) -> (y, y_dot)`` is the
    layer's own VJP applied to each cotangent.

    Parameters
    ----------
    layer : layer with ``apply_vjp``
    params : None or ndarray, shape (0,)
    cache : NamedTuple
        From the layer's taped forward.
    x_shape : tuple
        Shape of the forward input (of ``x_bar``).
    x_dot : ndarray, shape ``x_shape``
        Only its dtype is used (the tangent does not enter the cotangents).
    y_dot_bar : ndarray, shape of ``y``
    y_bar : ndarray, shape of ``y``, optional

    Returns
    -------
    SecondOrderBars
        ``(J^T y_bar or zeros, empty, J^T y_dot_bar, empty, None)``; ``x_dot_bar`` may be a view
        of ``y_dot_bar`` (or ``y_dot_bar`` itself) exactly when the layer's VJP returns one.
    """
    xp = get_array_module(y_dot_bar)
    x_dot_bar = layer.apply_vjp(params, cache, y_dot_bar)
    if y_bar is None:
        x_bar = xp.zeros(tuple(x_shape), dtype=np.result_type(y_dot_bar.dtype, x_dot.dtype))
    else:
        x_bar = layer.apply_vjp(params, cache, y_bar)
    empty = xp.zeros(0, dtype=x_bar.dtype)
    return SecondOrderBars(x_bar, empty, x_dot_bar, empty, None)


class LinearSecondOrder:
    """Mixin: ``jvp_vjp`` of a parameter-free layer that is linear given its cache, whose cache
    records the input shape as ``x_shape``."""

    def jvp_vjp(self, params: Array | None, cache: Any, x_dot: Array, params_dot: Array | None,
                y_dot_bar: Array, y_bar: Array | None = None) -> SecondOrderBars:
        """Second-order VJP (see :func:`linear_jvp_vjp`): the checks of :meth:`jvp`
        (``params``, ``x_dot`` of the cached input's shape, ``params_dot``), then those of
        :meth:`Layer.jvp_vjp <adjointcore.layers.Layer.jvp_vjp>` (``y_dot_bar``, ``y_bar``).

        Returns
        -------
        SecondOrderBars
            ``(x_bar, empty, x_dot_bar, empty, None)``.

        Raises
        ------
        ShapeError, ParameterError, TypeError
            Naming ``params``, ``x_dot``, ``params_dot``, ``y_dot_bar`` or ``y_bar``.
        """
        self._check_no_params(params)  # type: ignore[attr-defined]  # a mixin of Layer subclasses
        # a mixin of Layer subclasses
        self._check_tangents(x_dot, cache.x_shape, params_dot)  # type: ignore[attr-defined]
        # a mixin: the next class in the MRO is a Layer
        return super().jvp_vjp(params, cache, x_dot, params_dot, y_dot_bar, y_bar)  # type: ignore[misc]

    def apply_jvp_vjp(self, params: Array | None, cache: Any, x_dot: Array,
                      params_dot: Array | None, y_dot_bar: Array,
                      y_bar: Array | None = None) -> SecondOrderBars:
        """Unchecked :meth:`jvp_vjp`: ``x_dot_bar = J^T y_dot_bar``, ``x_bar = J^T y_bar``
        (zero without ``y_bar``); no second-order term (:func:`linear_jvp_vjp`)."""
        return linear_jvp_vjp(self, params, cache, cache.x_shape, x_dot, y_dot_bar, y_bar)
