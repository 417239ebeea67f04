"""2-D convolution by im2col + GEMM: :class:`Conv2d` and the time-conditioned :class:`ConcatConv2d`.

Algorithm (NCHW in and out, channel-major inside)
-------------------------------------------------
Forward: copy the window view of the zero-padded, channel-major input ``(C, N, Hp, Wp)`` into
the column matrix ``cols`` of shape ``(groups, C/groups*kh*kw, N*Ho*Wo)`` and multiply by the
weight matrix ``(groups, O/groups, C/groups*kh*kw)``: one GEMM per group, batched by ``matmul``.

VJP, three products of the same shapes:

* ``W_bar = Y_bar @ cols^T`` (needs ``cols``: cached, or rebuilt from the cached input);
* ``b_bar = sum of y_bar over (N, Ho, Wo)``;
* ``x_bar``: for stride 1 (and ``padding <= kernel - 1``) as the *transposed convolution*, a
  correlation of the ``(k - 1 - p)``-padded ``y_bar`` with the flipped, channel-transposed
  kernel - again one im2col copy plus one GEMM, no scatter; otherwise ``cols_bar = W^T @ Y_bar``
  followed by col2im (a strided add per kernel offset, see
  :func:`~adjointcore.layers._im2col.accumulate_windows`).

Where the geometry allows (:func:`~adjointcore.layers._im2col.phase_plan`; e.g. k3, p1, stride
1 or 2), im2col and col2im work on *phase planes*: the image split into ``stride_h*stride_w``
planes of the output grid's shape, so each kernel offset is one shifted copy (or add) of long
contiguous rows instead of a strided one with rows of ``Wo`` elements. The terms reach every
element in the same order as the strided path, so results are bitwise the same; stride-2
forward+VJP went from 2.6x to 1.8-2.0x its GEMMs (1 BLAS thread). The phase planes are read
straight from the caller's NCHW input (a transposed view), so no padded copy of the input is
made, and the cache keeps that view
(:func:`~adjointcore.layers._conv_kernels.column_source`).

Both layers are analytic (complex input works; nothing is conjugated).

References
----------
.. [1] K. Chellapilla, S. Puri, P. Simard, "High performance convolutional neural networks for
   document processing", IWFHR 2006.
.. [2] V. Dumoulin, F. Visin, "A guide to convolution arithmetic for deep learning",
   arXiv:1603.07285, 2016 (transposed convolution as the input gradient).
.. [3] R. T. Q. Chen, Y. Rubanova, J. Bettencourt, D. Duvenaud, "Neural ordinary differential
   equations", NeurIPS 2018 (``ConcatConv2d``).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from .. import init as initmod
from ..backend import Array, get_array_module
from ..errors import ShapeError, check_array, check_positive_int
from ._checks import check_backends, check_flag, check_y_bar, out_dtype, time_value
from ._conv_kernels import (
    channel_major,
    column_source,
    columns,
    input_grad_col2im,
    input_grad_transposed,
)
from ._im2col import Geometry, make_geometry, output_hw, window_counts
from .base import Layer, param_layout
from .second_order import SecondOrderBars, tangent_sum

__all__ = ["Conv2d", "ConcatConv2d", "ConvCache"]


class ConvCache(NamedTuple):
    """Cache of :class:`Conv2d` / :class:`ConcatConv2d`.

    Attributes
    ----------
    x_cm : ndarray, shape (C_total, N, H, W)
        The input, channel-major and unpadded (``C_total = in_channels (+1 for the time
        channel)``), as :func:`~adjointcore.layers._conv_kernels.column_source` makes it: a
        transposed view of the caller's ``x`` where the columns come from phase planes, else a
        copy; ``None`` when ``cols`` is cached instead.
    cols : ndarray, shape (groups, C_total/groups*kh*kw, N*Ho*Wo) or None
        Column matrix (only with ``cache_cols=True``; costs ``kh*kw`` times the input memory).
    x_shape : tuple
        ``(N, C, H, W)`` of the input.
    """
    x_cm: Array | None
    cols: Array | None
    x_shape: tuple[int, ...]


# -- layers ---------------------------------------------------------------------------------------
class Conv2d(Layer):
    """2-D cross-correlation (deep-learning "convolution") on NCHW images.

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or (int, int)
    stride : int or (int, int)
    padding : int or (int, int)
        Zero padding on both sides of H and W.
    groups : int
        Divides ``in_channels`` and ``out_channels``; channel group ``g`` of the output sees only
        input group ``g``.
    bias : bool
    init : str
        Weight scheme of :data:`adjointcore.init.WEIGHT_SCHEMES` (default ``"kaiming_uniform"``,
        ``fan_in = in_channels/groups*kh*kw``, ``fan_out = out_channels/groups*kh*kw``); the bias
        is uniform on ``+-1/sqrt(fan_in)``.
    cache_cols : bool
        Keep the column matrix in the cache (saves one im2col copy in the VJP, costs ``kh*kw``
        times the input memory). Default False: the cache holds the padded input.

    Notes
    -----
    ``x`` (N, C, H, W) -> ``y`` (N, O, Ho, Wo), ``Ho = (H + 2 ph - kh) // sh + 1``.
    Parameters: ``"weight"`` (O, C/groups, kh, kw), ``"bias"`` (O,).
    ``y[n, o, i, j] = b[o] + sum_{c, a, b} W[o, c, a, b] x_pad[n, g(o)*C/groups + c, i sh + a,
    j sw + b]``.

    JVP (bilinear in ``(W, x)``): ``y_dot = conv(x_dot; W) + conv(x; W_dot) + b_dot``; the second
    term reuses the cached columns (or padded input), the first builds the columns of ``x_dot``
    (for :class:`ConcatConv2d` with a zero time channel: ``t`` is a constant).
    """

    analytic = True
    _extra_channels = 0   # ConcatConv2d appends one constant time channel

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | Sequence[int],
                 stride: int | Sequence[int] = 1, padding: int | Sequence[int] = 0, groups: int = 1,
                 bias: bool = True, init: str = "kaiming_uniform",
                 cache_cols: bool = False) -> None:
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.out_channels = check_positive_int("out_channels", out_channels)
        geom = make_geometry(kernel_size, stride, padding)
        self.kernel_size, self.stride, self.padding = geom
        self.groups = check_positive_int("groups", groups)
        total = self.in_channels + self._extra_channels
        if total % self.groups or self.out_channels % self.groups:
            what = "in_channels + 1 (the time channel)" if self._extra_channels else "in_channels"
            raise ValueError(f"`groups`={self.groups} must divide both {what}={total} and "
                             f"out_channels={self.out_channels}; choose a common divisor.")
        self.bias = check_flag("bias", bias)
        self.cache_cols = check_flag("cache_cols", cache_cols)
        self.init_scheme = initmod.check_scheme(init)
        layout = param_layout(self.param_shapes)
        bias_slice = layout["bias"][0] if self.bias else None
        self._layout = (*layout["weight"], bias_slice)

    # -- parameters ----------------------------------------------------------------------------
    @property
    def _geometry(self) -> Geometry:
        return Geometry(self.kernel_size, self.stride, self.padding)

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        cg = (self.in_channels + self._extra_channels) // self.groups
        shapes: dict[str, tuple[int, ...]] = {"weight": (self.out_channels, cg) + self.kernel_size}
        if self.bias:
            shapes["bias"] = (self.out_channels,)
        return shapes

    def _init_views(self, rng: np.random.Generator, views: dict[str, Array]) -> None:
        kh, kw = self.kernel_size
        fan_in = (self.in_channels + self._extra_channels) // self.groups * kh * kw
        fan_out = self.out_channels // self.groups * kh * kw
        w = views["weight"]
        w[...] = initmod.init_weight(self.init_scheme, rng, w.shape, fan_in, fan_out)
        if self.bias:
            views["bias"][...] = initmod.init_bias(rng, (self.out_channels,), fan_in)

    # -- shapes --------------------------------------------------------------------------------
    def output_shape(self, input_shape: Sequence[int]) -> tuple:
        shape = tuple(input_shape)
        if len(shape) != 4:
            raise ShapeError(f"{self!r} takes (N, C, H, W) images; got input_shape {shape}.")
        self._check_channels(shape)
        return (shape[0], self.out_channels) + output_hw(self._geometry, shape[2:], repr(self))

    def _check_channels(self, shape: Sequence[int]) -> None:
        if shape[1] != self.in_channels:
            raise ShapeError(f"`x` has {shape[1]} channels (axis 1 of shape {shape}) but "
                             f"{self!r} expects in_channels={self.in_channels}; images are "
                             f"NCHW.")

    def _check_input(self, params: Array, x: Array) -> tuple[dict[str, Array], tuple[int, int]]:
        check_array("x", x, ndim=4, fix="Conv2d takes NCHW images (N, C, H, W); add a channel "
                                        "axis with x[:, None] for single-channel data.")
        self._check_channels(tuple(x.shape))
        views = self.views(params)
        check_backends(self, params, x)
        return views, output_hw(self._geometry, x.shape[2:], repr(self))

    # -- evaluation ----------------------------------------------------------------------------
    def forward(self, params: Array, x: Array, **context: Any) -> tuple[Array, ConvCache]:
        """Convolve ``x`` (N, C, H, W); returns ``(y (N, O, Ho, Wo), ConvCache)``."""
        self._check_input(params, x)
        return self.apply(params, x)  # type: ignore[return-value]  # tape=True: a cache, never None

    def apply(self, params: Array, x: Array, t: Any = None, rng: np.random.Generator | None = None,
              tape: bool = True) -> tuple[Array, ConvCache | None]:
        """Unchecked :meth:`forward` (``t`` is used by :class:`ConcatConv2d` only; ``tape=False``
        keeps no cache)."""
        t = None if not self._extra_channels else (
            t if type(t) is float else time_value(t, type(self).__name__))
        ws, wshape, bs = self._layout
        out_hw = window_counts(self._geometry, x.shape[2:])
        xp = get_array_module(x)
        dtype = out_dtype(x, t) if t is not None else x.dtype
        x_cm = column_source(x, t, dtype, self._geometry, self.groups, out_hw)
        cols = columns(x_cm, self._geometry, self.groups, out_hw)
        w = params[ws].reshape(wshape)
        y = xp.matmul(w.reshape(self.groups, self.out_channels // self.groups, -1), cols)
        y = y.reshape(self.out_channels, -1)                         # (O, N*Ho*Wo)
        if bs is not None:
            y += params[bs][:, None]
        n = x.shape[0]
        y = xp.ascontiguousarray(y.reshape(self.out_channels, n, *out_hw).transpose(1, 0, 2, 3))
        if not tape:
            return y, None
        if self.cache_cols:
            return y, ConvCache(None, cols, tuple(x.shape))
        return y, ConvCache(x_cm, None, tuple(x.shape))

    def vjp(self, params: Array, cache: ConvCache, y_bar: Array,
            need_params: bool = True) -> tuple[Array, Array | None]:
        """Returns ``(x_bar (N, C, H, W), params_bar (n_params,) or None)``."""
        self.views(params)
        n, c, h, w_ = cache.x_shape
        out_hw = output_hw(self._geometry, (h, w_), repr(self))
        check_y_bar(y_bar, (n, self.out_channels) + out_hw)
        inputs = cache.cols if cache.cols is not None else cache.x_cm
        return self._vjp_via_apply(params, cache, y_bar, need_params,
                                   out_dtype(y_bar, inputs, params))

    def apply_vjp(self, params: Array, cache: ConvCache, y_bar: Array,
                  params_bar: Array | None = None) -> Array:
        """Unchecked :meth:`vjp`; the parameter cotangent is written into ``params_bar``."""
        ws, wshape, bs = self._layout
        n, c, h, w_ = cache.x_shape
        out_hw = window_counts(self._geometry, (h, w_))
        xp = get_array_module(y_bar)
        w = params[ws].reshape(wshape)
        g = self.groups
        y_mat = None
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        if self.stride == (1, 1) and ph <= kh - 1 and pw <= kw - 1:
            x_bar_cm = input_grad_transposed(w, y_bar, self._geometry, g, (h, w_))
        else:
            y_mat = channel_major(y_bar, g)                          # (g, Og, N*L)
            padded = (c + self._extra_channels, n, h + 2 * ph, w_ + 2 * pw)
            x_bar_cm = input_grad_col2im(w, y_mat, self._geometry, g, padded, out_hw, (h, w_))
        x_bar = xp.ascontiguousarray(x_bar_cm[:c].transpose(1, 0, 2, 3))
        if params_bar is None:
            return x_bar
        cols = cache.cols
        if cols is None:
            cols = columns(cache.x_cm, self._geometry, g, out_hw)
        if y_mat is None:
            y_mat = channel_major(y_bar, g)
        params_bar[ws].reshape(wshape)[...] = xp.matmul(y_mat, cols.transpose(0, 2, 1)).reshape(
            wshape)
        if bs is not None:
            params_bar[bs] = y_mat.reshape(self.out_channels, -1).sum(axis=1)
        return x_bar

    def jvp(self, params: Array, cache: ConvCache, x_dot: Array,
            params_dot: Array | None = None) -> Array:
        """Forward mode ``y_dot = conv(x_dot; W) + conv(x; W_dot) + b_dot``.

        Parameters
        ----------
        params : ndarray, shape (n_params,)
        cache : ConvCache
            From :meth:`forward` at the point of differentiation.
        x_dot : ndarray, shape (N, C, H, W)
            Input tangent (``t`` of :class:`ConcatConv2d` has none).
        params_dot : ndarray, shape (n_params,), optional
            None means zero.

        Returns
        -------
        y_dot : ndarray, shape (N, O, Ho, Wo)
        """
        self.views(params)
        self._check_tangents(x_dot, cache.x_shape, params_dot)
        return self.apply_jvp(params, cache, x_dot, params_dot)

    def apply_jvp(self, params: Array, cache: ConvCache, x_dot: Array,
                  params_dot: Array | None = None) -> Array:
        """Unchecked :meth:`jvp`."""
        ws, wshape, bs = self._layout
        n, _, h, w_ = cache.x_shape
        geom, g, o = self._geometry, self.groups, self.out_channels
        out_hw = window_counts(geom, (h, w_))
        xp = get_array_module(x_dot)
        zero_time = 0.0 if self._extra_channels else None      # the time channel is constant
        cols_dot = columns(column_source(x_dot, zero_time, x_dot.dtype, geom, g, out_hw), geom,
                            g, out_hw)
        y_dot = xp.matmul(params[ws].reshape(g, o // g, -1), cols_dot)   # (g, O/g, N*Ho*Wo)
        if params_dot is not None:
            cols = cache.cols
            if cols is None:
                cols = columns(cache.x_cm, geom, g, out_hw)
            y_dot = tangent_sum(y_dot, xp.matmul(params_dot[ws].reshape(g, o // g, -1), cols))
        y_dot = y_dot.reshape(o, -1)
        if params_dot is not None and bs is not None:
            y_dot = tangent_sum(y_dot, params_dot[bs][:, None])
        return xp.ascontiguousarray(y_dot.reshape(o, n, *out_hw).transpose(1, 0, 2, 3))


    def apply_jvp_vjp(self, params: Array, cache: ConvCache, x_dot: Array, params_dot: Array | None,
                      y_dot_bar: Array, y_bar: Array | None = None) -> SecondOrderBars:
        """Second-order VJP (unchecked :meth:`~adjointcore.layers.Layer.jvp_vjp`).

        Write ``C(x, W)`` for the bilinear convolution (``[x, t]`` for
        :class:`ConcatConv2d`, the time channel constant). ``y_dot = C([x_dot, 0], W) +
        C([x, t], W_dot) + b_dot``; with ``g = y_dot_bar``:

        * ``(x_dot_bar, W_dot_bar, b_dot_bar)`` = the ordinary VJP of ``g`` (:meth:`apply_vjp`);
        * second order (the weight-product terms): ``x_bar = C_x^T(g; W_dot)`` (the input
          gradient with the kernel ``W_dot``) and ``W_bar = g (x) cols([x_dot, 0])`` (the weight
          gradient with the tangent's columns; the time channel gets none);
        * ``t_bar = <g, C([0, 1], W_dot)> + <y_bar, C([0, 1], W)>`` (``ConcatConv2d``);
        * plus the ordinary VJP of ``y_bar``.

        Parameters
        ----------
        params : ndarray, shape (n_params,)
        cache : ConvCache
        x_dot : ndarray, shape (N, C, H, W)
        params_dot : ndarray, shape (n_params,) or None
        y_dot_bar : ndarray, shape (N, O, Ho, Wo)
        y_bar : ndarray, shape (N, O, Ho, Wo), optional

        Returns
        -------
        SecondOrderBars
        """
        ws, wshape, bs = self._layout
        n, c, h, w_ = cache.x_shape
        geom, g_, o = self._geometry, self.groups, self.out_channels
        out_hw = window_counts(geom, (h, w_))
        xp = get_array_module(y_dot_bar)
        inputs = cache.cols if cache.cols is not None else cache.x_cm
        dtype = out_dtype(y_dot_bar, x_dot, params, inputs,
                          *(() if params_dot is None else (params_dot,)),
                          *(() if y_bar is None else (y_bar,)))
        params_dot_bar = xp.zeros(self.n_params, dtype=dtype)
        x_dot_bar = self.apply_vjp(params, cache, y_dot_bar, params_dot_bar)
        timed = bool(self._extra_channels)
        zero_time = 0.0 if timed else None
        cols_dot = columns(column_source(x_dot, zero_time, x_dot.dtype, geom, g_, out_hw),
                            geom, g_, out_hw)
        g_mat = channel_major(y_dot_bar, g_)
        params_bar = xp.zeros(self.n_params, dtype=dtype)
        params_bar[ws] = xp.matmul(g_mat, cols_dot.transpose(0, 2, 1)).reshape(-1)
        if params_dot is not None:
            x_bar = self.apply_vjp(params_dot, cache, y_dot_bar).astype(dtype, copy=False)
        else:
            x_bar = xp.zeros((n, c, h, w_), dtype=dtype)
        t_bar = None
        if timed:
            ones_t = column_source(xp.zeros((n, c, h, w_), dtype=dtype), 1.0, dtype, geom, g_,
                                    out_hw)
            cols_t = columns(ones_t, geom, g_, out_hw)
            t_bar = xp.zeros((), dtype=dtype)
            if params_dot is not None:
                t_bar = t_bar + (g_mat * xp.matmul(params_dot[ws].reshape(g_, o // g_, -1),
                                                   cols_t)).sum()
            if y_bar is not None:
                t_bar = t_bar + (channel_major(y_bar, g_) * xp.matmul(
                    params[ws].reshape(g_, o // g_, -1), cols_t)).sum()
        if y_bar is not None:
            ordinary = xp.zeros(self.n_params, dtype=dtype)
            x_bar = x_bar + self.apply_vjp(params, cache, y_bar, ordinary)
            params_bar = params_bar + ordinary
        return SecondOrderBars(x_bar, params_bar, x_dot_bar, params_dot_bar, t_bar)


class ConcatConv2d(Conv2d):
    """Time-conditioned convolution (Chen et al. ``ConcatConv2d`` [3]_).

    The time ``t`` is a constant extra input channel appended *after* the ``in_channels`` image
    channels (Chen et al. prepend it; only the weight layout differs). The kernel therefore has
    ``in_channels + 1`` input channels, ``groups`` must divide ``in_channels + 1``, and the
    padding border of the time channel is zero, as if the concatenated tensor were padded.

    Parameters as :class:`Conv2d`; ``forward(params, x, t=t)`` requires ``t`` (float or 0-d
    array). ``t`` receives no gradient.
    """

    time_dependent = True
    _extra_channels = 1

    def forward(self, params: Array, x: Array, t: Any = None,
                **context: Any) -> tuple[Array, ConvCache]:
        """Convolve ``[x, t]`` (N, C+1, H, W); returns ``(y (N, O, Ho, Wo), ConvCache)``."""
        self._check_input(params, x)
        # tape=True: a cache, never None
        return self.apply(params, x, time_value(t, repr(self)))  # type: ignore[return-value]
