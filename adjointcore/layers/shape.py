"""Parameter-free shape layers: :class:`Flatten`, :class:`Reshape`, :class:`ChannelPad`,
:class:`ChannelUnpad`.

All are linear (hence analytic) and batch-first: axis 0 is never touched. ``ChannelPad`` /
``ChannelUnpad`` implement the augmented-ODE "dimension trick": zero channels appended to the
state on the way in and dropped on the way out (Dupont et al. [1]_).

``Flatten`` and ``Reshape`` return views of a contiguous input (no copy); the channel layers
return fresh arrays. No layer writes into its input.

Second order (``jvp_vjp``): linear layers have no second derivative; the tangent cotangent is
the VJP of ``y_dot_bar`` and ``x_bar`` the VJP of ``y_bar`` (zero without it), see
:func:`~adjointcore.layers.base.linear_jvp_vjp`.

References
----------
.. [1] E. Dupont, A. Doucet, Y. W. Teh, "Augmented neural ODEs", NeurIPS 2019.
"""
from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import Any

import numpy as np

from ..backend import Array, get_array_module
from ..errors import ShapeError, check_array, check_positive_int
from ._checks import check_y_bar
from .base import ParameterFree
from .pool import ShapeCache
from .second_order import LinearSecondOrder

__all__ = ["Flatten", "Reshape", "ChannelPad", "ChannelUnpad"]


class _ShapeLayer(LinearSecondOrder, ParameterFree):
    analytic = True

    def _check_input(self, params: Array | None, x: Array) -> Array:
        self._check_no_params(params)
        return check_array("x", x, ndim=tuple(range(2, 33)),
                           fix=f"{type(self).__name__} acts on batches (N, ...); add a batch "
                               f"axis with x[None].")

    def _check_input_shape(self, input_shape: Sequence[int]) -> tuple:
        shape = tuple(input_shape)
        if len(shape) < 2:
            raise ShapeError(f"{self!r} acts on batches (N, ...); got input_shape {shape}.")
        return shape

    def forward(self, params: Array | None, x: Array,
                **context: Any) -> tuple[Array, ShapeCache]:
        """Returns ``(y, ShapeCache)``; see the class for the shapes."""
        self._check_input(params, x)
        # rejects impossible shapes with a ShapeError (every concrete subclass defines it)
        self.output_shape(x.shape)  # type: ignore[attr-defined]
        return self.apply(params, x)

    def vjp(self, params: Array | None, cache: ShapeCache, y_bar: Array,
            need_params: bool = True) -> tuple[Array, Array | None]:
        """Returns ``(x_bar (shape of x), empty params_bar or None)``."""
        # every concrete subclass defines output_shape
        check_y_bar(y_bar, self.output_shape(cache.x_shape))  # type: ignore[attr-defined]
        return self.apply_vjp(params, cache, y_bar), self._params_bar(y_bar, need_params)

    def apply_vjp(self, params: Array | None, cache: ShapeCache, y_bar: Array,
                  params_bar: Array | None = None) -> Array:
        """Unchecked :meth:`vjp` (no parameters)."""
        # every concrete subclass defines _backward
        return self._backward(y_bar, cache.x_shape)  # type: ignore[attr-defined]

    def jvp(self, params: Array | None, cache: ShapeCache, x_dot: Array,
            params_dot: Array | None = None) -> Array:
        """Forward mode: the layer is linear, so ``y_dot`` is the layer applied to ``x_dot``.

        Parameters
        ----------
        params : None or ndarray, shape (0,)
        cache : ShapeCache
        x_dot : ndarray, shape of ``x``
        params_dot : None or ndarray, shape (0,)

        Returns
        -------
        y_dot : ndarray, shape ``output_shape(x.shape)`` (a view of ``x_dot`` for
            :class:`Flatten`/:class:`Reshape` of a contiguous tangent, as their forward)
        """
        self._check_no_params(params)
        self._check_tangents(x_dot, cache.x_shape, params_dot)
        return self.apply_jvp(params, cache, x_dot, params_dot)

    def apply_jvp(self, params: Array | None, cache: ShapeCache, x_dot: Array,
                  params_dot: Array | None = None) -> Array:
        """Unchecked :meth:`jvp`."""
        return self.apply(params, x_dot, tape=False)[0]


class Flatten(_ShapeLayer):
    """``(N, d1, d2, ...) -> (N, d1*d2*...)``."""

    def output_shape(self, input_shape: Sequence[int]) -> tuple:
        shape = self._check_input_shape(input_shape)
        return shape[0], prod(shape[1:])

    def apply(self, params: Array | None, x: Array, t: Any = None,
              rng: np.random.Generator | None = None,
              tape: bool = True) -> tuple[Array, ShapeCache]:
        """Unchecked forward: ``(y (N, prod(x.shape[1:])), ShapeCache)``."""
        return x.reshape(x.shape[0], -1), ShapeCache(tuple(x.shape))

    def _backward(self, y_bar: Array, x_shape: Sequence[int]) -> Array:
        return y_bar.reshape(x_shape)


class Reshape(_ShapeLayer):
    """Reshape every sample: ``(N, ...) -> (N, *shape)``.

    Parameters
    ----------
    shape : tuple of int
        Per-sample target shape (batch axis excluded); at most one entry may be ``-1``.
    """

    def __init__(self, shape: int | tuple[int, ...] | list[int]) -> None:
        dims = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
        ok = all(isinstance(d, int) and not isinstance(d, bool) and (d >= 1 or d == -1)
                 for d in dims)
        if not dims or not ok or dims.count(-1) > 1:
            raise ValueError(f"`shape` must be a non-empty tuple of positive integers with at "
                             f"most one -1 (per-sample shape, batch axis excluded), got "
                             f"{shape!r}.")
        self.shape = dims

    def output_shape(self, input_shape: Sequence[int]) -> tuple:
        shape = self._check_input_shape(input_shape)
        size = prod(shape[1:])
        known = prod(d for d in self.shape if d != -1)
        if -1 in self.shape and size % known == 0:
            target = tuple(size // known if d == -1 else d for d in self.shape)
        else:
            target = self.shape
        if prod(target) != size:
            raise ShapeError(f"{self!r} cannot reshape samples of shape {shape[1:]} "
                             f"({size} values) to {self.shape}; the sizes must match.")
        return (shape[0],) + target

    def apply(self, params: Array | None, x: Array, t: Any = None,
              rng: np.random.Generator | None = None,
              tape: bool = True) -> tuple[Array, ShapeCache]:
        """Unchecked forward: ``(y (N, *shape), ShapeCache)``."""
        return x.reshape((x.shape[0],) + self.shape), ShapeCache(tuple(x.shape))

    def _backward(self, y_bar: Array, x_shape: Sequence[int]) -> Array:
        return y_bar.reshape(x_shape)


class _ChannelLayer(_ShapeLayer):
    """Adds or drops ``extra`` channels on axis 1."""

    def __init__(self, extra: int) -> None:
        self.extra = check_positive_int("extra", extra, minimum=0)


class ChannelPad(_ChannelLayer):
    """Append ``extra`` zero channels on axis 1: ``(N, C, ...) -> (N, C + extra, ...)``.

    Works for dense ``(N, C)`` and image ``(N, C, H, W)`` batches. The VJP drops the cotangent
    of the padded channels.

    Parameters
    ----------
    extra : int, >= 0
    """

    def output_shape(self, input_shape: Sequence[int]) -> tuple:
        shape = self._check_input_shape(input_shape)
        return (shape[0], shape[1] + self.extra) + shape[2:]

    def apply(self, params: Array | None, x: Array, t: Any = None,
              rng: np.random.Generator | None = None,
              tape: bool = True) -> tuple[Array, ShapeCache]:
        """Unchecked forward: ``(y (N, C + extra, ...), ShapeCache)``."""
        xp = get_array_module(x)
        shape = tuple(x.shape)
        y = xp.zeros((shape[0], shape[1] + self.extra) + shape[2:], dtype=x.dtype)
        y[:, :shape[1]] = x
        return y, ShapeCache(shape)

    def _backward(self, y_bar: Array, x_shape: Sequence[int]) -> Array:
        return y_bar[:, :x_shape[1]].copy()


class ChannelUnpad(_ChannelLayer):
    """Drop the last ``extra`` channels on axis 1: ``(N, C, ...) -> (N, C - extra, ...)``.

    The inverse of :class:`ChannelPad`; its VJP appends zero cotangent channels.

    Parameters
    ----------
    extra : int, >= 0
    """

    def output_shape(self, input_shape: Sequence[int]) -> tuple:
        shape = self._check_input_shape(input_shape)
        if shape[1] <= self.extra:
            raise ShapeError(f"{self!r} needs more than {self.extra} channels on axis 1, got "
                             f"input_shape {shape}; lower `extra`.")
        return (shape[0], shape[1] - self.extra) + shape[2:]

    def apply(self, params: Array | None, x: Array, t: Any = None,
              rng: np.random.Generator | None = None,
              tape: bool = True) -> tuple[Array, ShapeCache]:
        """Unchecked forward: ``(y (N, C - extra, ...), ShapeCache)``."""
        return x[:, :x.shape[1] - self.extra].copy(), ShapeCache(tuple(x.shape))

    def _backward(self, y_bar: Array, x_shape: Sequence[int]) -> Array:
        xp = get_array_module(y_bar)
        x_bar = xp.zeros(x_shape, dtype=y_bar.dtype)
        x_bar[:, :y_bar.shape[1]] = y_bar
        return x_bar
