"""Pooling on NCHW images: :class:`MaxPool2d`, :class:`AvgPool2d`, :class:`GlobalAvgPool2d`.

Windows are strided views (:func:`~adjointcore.layers._im2col.windows`); VJPs scatter back with a
loop over the ``kh * kw`` kernel offsets only, which also handles overlapping windows.
Conventions follow PyTorch: ``stride`` defaults to ``kernel_size``, ``padding <= kernel_size // 2``,
max pooling pads with ``-inf``, average pooling pads with zeros and always divides by
``kh * kw`` (``count_include_pad=True``).

Second order (``jvp_vjp``): every pool is linear in ``x`` given its cache (average pooling
everywhere; max pooling where the argmax is locally constant, i.e. away from ties), so the
lifted map ``(x, x_dot) -> (y, y_dot) = (J x, J x_dot)`` has a constant ``J`` and no
second-derivative term: ``x_bar = J^T y_bar``, ``x_dot_bar = J^T y_dot_bar``
(:func:`~adjointcore.layers.base.linear_jvp_vjp`, the VJP applied twice).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ..backend import Array, get_array_module
from ..errors import ShapeError, check_array
from ._checks import check_y_bar
from ._im2col import (
    Geometry,
    accumulate_windows,
    crop_hw,
    make_geometry,
    output_hw,
    pad_hw,
    window_counts,
    windows,
)
from .base import ParameterFree
from .second_order import LinearSecondOrder

__all__ = ["MaxPool2d", "AvgPool2d", "GlobalAvgPool2d", "MaxPoolCache", "ShapeCache"]


class MaxPoolCache(NamedTuple):
    """Cache of :class:`MaxPool2d`.

    ``argmax`` (N, C, Ho, Wo): flat offset ``a * kw + b`` of the (first) maximum in each window,
    in the smallest unsigned integer type; ``x_shape``: the input shape.
    """
    argmax: Any
    x_shape: tuple


class ShapeCache(NamedTuple):
    """Cache of layers whose VJP needs only the input shape."""
    x_shape: tuple


class _Pool2d(LinearSecondOrder, ParameterFree):
    """Shared configuration and checks of the windowed pools."""

    def __init__(self, kernel_size: int | Sequence[int], stride: int | Sequence[int] | None = None,
                 padding: int | Sequence[int] = 0) -> None:
        geom = make_geometry(kernel_size, kernel_size if stride is None else stride, padding)
        (kh, kw), _, (ph, pw) = geom
        if ph > kh // 2 or pw > kw // 2:
            raise ValueError(f"`padding`={padding!r} must be at most half the kernel_size "
                             f"{geom.kernel} along each axis, so that every window holds an "
                             f"input value; reduce the padding.")
        self.kernel_size, self.stride, self.padding = geom

    @property
    def _geometry(self) -> Geometry:
        return Geometry(self.kernel_size, self.stride, self.padding)

    def output_shape(self, input_shape: Sequence[int]) -> tuple:
        shape = tuple(input_shape)
        if len(shape) != 4:
            raise ShapeError(f"{self!r} takes (N, C, H, W) images; got input_shape {shape}.")
        return shape[:2] + output_hw(self._geometry, shape[2:], repr(self))

    def _check_input(self, params: Array | None, x: Array) -> tuple[int, int]:
        self._check_no_params(params)
        check_array("x", x, ndim=4, allow_complex=self.analytic,
                    fix=f"{type(self).__name__} takes NCHW images (N, C, H, W).")
        return output_hw(self._geometry, x.shape[2:], repr(self))

    def _check_cotangent(self, y_bar: Array, x_shape: Sequence[int]) -> Array:
        return check_y_bar(y_bar, self.output_shape(x_shape))

    def forward(self, params: Array | None, x: Array, **context: Any) -> tuple[Array, Any]:
        """Returns ``(y (N, C, Ho, Wo), cache)``: the checks, then :meth:`apply`."""
        self._check_input(params, x)
        return self.apply(params, x)

    def vjp(self, params: Array | None, cache: Any, y_bar: Array,
            need_params: bool = True) -> tuple[Array, Array | None]:
        """Returns ``(x_bar (N, C, H, W), empty params_bar or None)``."""
        self._check_cotangent(y_bar, cache.x_shape)
        return self.apply_vjp(params, cache, y_bar), self._params_bar(y_bar, need_params)

    def jvp(self, params: Array | None, cache: Any, x_dot: Array,
            params_dot: Array | None = None) -> Array:
        """Forward mode; returns ``y_dot (N, C, Ho, Wo)`` for ``x_dot (N, C, H, W)``."""
        self._check_no_params(params)
        self._check_tangents(x_dot, cache.x_shape, params_dot)
        return self.apply_jvp(params, cache, x_dot, params_dot)


class MaxPool2d(_Pool2d):
    """Maximum over each ``kh x kw`` window.

    The VJP routes ``y_bar`` to the position of the maximum; among tied values the first in
    row-major window order wins. Not analytic (no complex input).

    Second order: ``y = x[argmax]`` window by window, so ``y_dot = x_dot[argmax]`` (the JVP
    routes through the cached argmax) and, the argmax being piecewise constant in ``x``, the
    second derivative is zero almost everywhere (everywhere but at ties, where the layer is not
    differentiable): ``x_dot_bar`` is ``y_dot_bar`` routed back to the argmax, ``x_bar`` is
    ``y_bar`` routed back (zero without it). The complex step does not apply (``max`` is not
    analytic); checks keep the window values apart.

    Parameters
    ----------
    kernel_size : int or (int, int)
    stride : int or (int, int), optional
        Default ``kernel_size`` (non-overlapping windows).
    padding : int or (int, int)
        ``-inf`` padding, at most ``kernel_size // 2``.
    """

    analytic = False

    def apply(self, params: Array | None, x: Array, t: Any = None,
              rng: np.random.Generator | None = None,
              tape: bool = True) -> tuple[Array, MaxPoolCache | None]:
        """Unchecked forward: ``(y (N, C, Ho, Wo), MaxPoolCache)`` (no cache with
        ``tape=False``)."""
        out_hw = window_counts(self._geometry, x.shape[2:])
        n, c = x.shape[:2]
        kh, kw = self.kernel_size
        x_padded = pad_hw(x, self.padding, value=-np.inf)
        flat = windows(x_padded, self._geometry, out_hw).reshape(n, c, kh * kw, *out_hw)
        if not tape:
            return flat.max(axis=2), None
        argmax = flat.argmax(axis=2).astype(np.min_scalar_type(kh * kw - 1))
        return flat.max(axis=2), MaxPoolCache(argmax, tuple(x.shape))

    def apply_vjp(self, params: Array | None, cache: MaxPoolCache, y_bar: Array,
                  params_bar: Array | None = None) -> Array:
        """Unchecked VJP: ``y_bar`` routed to each window's maximum."""
        xp = get_array_module(y_bar)
        (kh, kw), (sh, sw), padding = self._geometry
        n, c, h, w = cache.x_shape
        ho, wo = y_bar.shape[2:]
        x_bar = xp.zeros((n, c, h + 2 * padding[0], w + 2 * padding[1]), dtype=y_bar.dtype)
        zero = xp.zeros((), dtype=y_bar.dtype)
        for a in range(kh):
            for b in range(kw):
                routed = xp.where(cache.argmax == a * kw + b, y_bar, zero)
                x_bar[:, :, a:a + sh * (ho - 1) + 1:sh, b:b + sw * (wo - 1) + 1:sw] += routed
        x_bar = crop_hw(x_bar, padding, (h, w))
        if padding != (0, 0):
            x_bar = xp.ascontiguousarray(x_bar)
        return x_bar

    def apply_jvp(self, params: Array | None, cache: MaxPoolCache, x_dot: Array,
                  params_dot: Array | None = None) -> Array:
        """Unchecked JVP: each window's ``x_dot`` at the cached position of its maximum."""
        xp = get_array_module(x_dot)
        n, c = cache.x_shape[:2]
        kh, kw = self.kernel_size
        out_hw = tuple(cache.argmax.shape[2:])
        flat = windows(pad_hw(x_dot, self.padding), self._geometry, out_hw).reshape(
            n, c, kh * kw, *out_hw)
        index = cache.argmax.astype(np.intp)[:, :, None]
        return xp.take_along_axis(flat, index, axis=2)[:, :, 0]


class AvgPool2d(_Pool2d):
    """Mean over each ``kh x kw`` window (zero padding counted, divisor always ``kh * kw``).

    Parameters as :class:`MaxPool2d` (zero padding). Linear, hence analytic.
    """

    analytic = True

    def apply(self, params: Array | None, x: Array, t: Any = None,
              rng: np.random.Generator | None = None,
              tape: bool = True) -> tuple[Array, ShapeCache]:
        """Unchecked forward: ``(y (N, C, Ho, Wo), ShapeCache)``."""
        out_hw = window_counts(self._geometry, x.shape[2:])
        xp = get_array_module(x)
        kh, kw = self.kernel_size
        view = windows(pad_hw(x, self.padding), self._geometry, out_hw)
        y = xp.zeros(x.shape[:2] + out_hw, dtype=x.dtype)
        for a in range(kh):
            for b in range(kw):
                y += view[:, :, a, b]
        y *= 1.0 / (kh * kw)
        return y, ShapeCache(tuple(x.shape))

    def apply_vjp(self, params: Array | None, cache: ShapeCache, y_bar: Array,
                  params_bar: Array | None = None) -> Array:
        """Unchecked VJP: each window's share spread back over it."""
        xp = get_array_module(y_bar)
        kh, kw = self.kernel_size
        n, c, h, w = cache.x_shape
        share = (y_bar * (1.0 / (kh * kw)))[:, :, None, None]
        cols = xp.broadcast_to(share, (n, c, kh, kw) + tuple(y_bar.shape[2:]))
        padded_hw = (h + 2 * self.padding[0], w + 2 * self.padding[1])
        x_bar = crop_hw(accumulate_windows(cols, padded_hw, self._geometry), self.padding, (h, w))
        if self.padding != (0, 0):
            x_bar = xp.ascontiguousarray(x_bar)
        return x_bar

    def apply_jvp(self, params: Array | None, cache: ShapeCache, x_dot: Array,
                  params_dot: Array | None = None) -> Array:
        """Unchecked JVP: the layer is linear, so the window means of ``x_dot``."""
        return self.apply(params, x_dot, tape=False)[0]


class GlobalAvgPool2d(LinearSecondOrder, ParameterFree):
    """Spatial mean ``(N, C, H, W) -> (N, C)``. Linear, hence analytic."""

    analytic = True

    def output_shape(self, input_shape: Sequence[int]) -> tuple:
        shape = tuple(input_shape)
        if len(shape) != 4:
            raise ShapeError(f"{self!r} takes (N, C, H, W) images; got input_shape {shape}.")
        return shape[:2]

    def forward(self, params: Array | None, x: Array,
                **context: Any) -> tuple[Array, ShapeCache]:
        """Returns ``(y (N, C), ShapeCache)``."""
        self._check_no_params(params)
        check_array("x", x, ndim=4, fix="GlobalAvgPool2d takes NCHW images (N, C, H, W).")
        return self.apply(params, x)

    def apply(self, params: Array | None, x: Array, t: Any = None,
              rng: np.random.Generator | None = None,
              tape: bool = True) -> tuple[Array, ShapeCache]:
        """Unchecked forward: ``(y (N, C), ShapeCache)``."""
        return x.mean(axis=(2, 3)), ShapeCache(tuple(x.shape))

    def vjp(self, params: Array | None, cache: ShapeCache, y_bar: Array,
            need_params: bool = True) -> tuple[Array, Array | None]:
        """Returns ``(x_bar (N, C, H, W), empty params_bar or None)``."""
        check_y_bar(y_bar, cache.x_shape[:2])
        return self.apply_vjp(params, cache, y_bar), self._params_bar(y_bar, need_params)

    def jvp(self, params: Array | None, cache: ShapeCache, x_dot: Array,
            params_dot: Array | None = None) -> Array:
        """Forward mode: ``y_dot (N, C)`` is the spatial mean of ``x_dot (N, C, H, W)``."""
        self._check_no_params(params)
        self._check_tangents(x_dot, cache.x_shape, params_dot)
        return self.apply_jvp(params, cache, x_dot, params_dot)

    def apply_jvp(self, params: Array | None, cache: ShapeCache, x_dot: Array,
                  params_dot: Array | None = None) -> Array:
        """Unchecked :meth:`jvp`."""
        return x_dot.mean(axis=(2, 3))

    def apply_vjp(self, params: Array | None, cache: ShapeCache, y_bar: Array,
                  params_bar: Array | None = None) -> Array:
        """Unchecked VJP: the mean's cotangent spread evenly."""
        n, c, h, w = cache.x_shape
        xp = get_array_module(y_bar)
        x_bar = xp.empty(cache.x_shape, dtype=y_bar.dtype)
        x_bar[...] = (y_bar * (1.0 / (h * w)))[:, :, None, None]
        return x_bar
