"""Small layers users reach for: an element-wise (diagonal) scale and a parallel sum of branches.

:class:`Scale` is the O(n) diagonal map ``y = x * w`` (``w`` per feature/channel, broadcast over
the batch and spatial axes); :class:`Parallel` sums the outputs of several branches applied to
the same input, e.g. ANODEV2's activation field ``tanh(z * w + z @ S)`` as
``Sequential(Parallel(Scale(n), Linear(n, n, bias=False)), Tanh())``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ..backend import Array, get_array_module
from ..errors import ShapeError, check_array, check_params, check_positive_int
from ._checks import check_y_bar, out_dtype
from .base import Layer, call_jvp, call_jvp_vjp, kernel_jvp, param_layout
from .compose import _child_tangent, _Composite
from .second_order import SecondOrderBars, add_time_bar, tangent_sum

__all__ = ["Scale", "Parallel", "ScaleCache", "ParallelCache"]


class ScaleCache(NamedTuple):
    """Cache of :class:`Scale`: the input ``x``."""
    x: Any


class Scale(Layer):
    """Element-wise scale ``y[:, i, ...] = w[i] * x[:, i, ...]`` (a diagonal linear map).

    Parameters
    ----------
    num_features : int
        Size of axis 1 (features of ``(N, d)``, channels of ``(N, C, H, W)``).
    init_value : float, default 1.0
        Initial value of every ``w[i]``.

    Notes
    -----
    Parameters: ``"weight"`` (num_features,). VJP: ``x_bar = w * y_bar``,
    ``w_bar[i] = sum over all axes but 1 of (y_bar * x)``. Analytic (complex step applies).
    """

    analytic = True

    def __init__(self, num_features: int, init_value: float = 1.0) -> None:
        self.num_features = check_positive_int("num_features", num_features)
        if isinstance(init_value, bool) or not isinstance(init_value, (int, float)) \
                or not np.isfinite(init_value):
            raise ValueError(f"`init_value` must be a finite number, got {init_value!r}.")
        self.init_value = float(init_value)
        self._layout = param_layout(self.param_shapes)

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {"weight": (self.num_features,)}

    def _init_views(self, rng: np.random.Generator, views: dict[str, Array]) -> None:
        views["weight"][...] = self.init_value

    def output_shape(self, input_shape: Sequence[int]) -> tuple:
        shape = tuple(input_shape)
        if len(shape) < 2 or shape[1] != self.num_features:
            raise ShapeError(f"{self!r} scales axis 1 of size {self.num_features}; got "
                             f"input_shape {shape}.")
        return shape

    def _weight(self, params: Array, ndim: int) -> Array:
        return params.reshape((1, -1) + (1,) * (ndim - 2))

    def forward(self, params: Array, x: Array, **context: Any) -> tuple[Array, ScaleCache]:
        """``(x * w, ScaleCache(x))``."""
        check_array("x", x, ndim=tuple(range(2, 9)), fix="Scale acts on (N, features, ...).")
        self.output_shape(x.shape)
        self.views(params)
        return self.apply(params, x)  # type: ignore[return-value]  # tape=True: a cache, never None

    def apply(self, params: Array, x: Array, t: Any = None, rng: np.random.Generator | None = None,
              tape: bool = True) -> tuple[Array, ScaleCache | None]:
        """Unchecked :meth:`forward`."""
        return x * self._weight(params, x.ndim), (ScaleCache(x) if tape else None)

    def vjp(self, params: Array, cache: ScaleCache, y_bar: Array,
            need_params: bool = True) -> tuple[Array, Array | None]:
        """Returns ``(x_bar, params_bar or None)``."""
        self.views(params)
        check_y_bar(y_bar, cache.x.shape)
        return self._vjp_via_apply(params, cache, y_bar, need_params,
                                   out_dtype(y_bar, cache.x, params))

    def apply_vjp(self, params: Array, cache: ScaleCache, y_bar: Array,
                  params_bar: Array | None = None) -> Array:
        """Unchecked :meth:`vjp`; ``w_bar`` is written into ``params_bar``."""
        if params_bar is not None:
            axes = (0,) + tuple(range(2, y_bar.ndim))
            params_bar[...] = (y_bar * cache.x).sum(axis=axes)
        return y_bar * self._weight(params, y_bar.ndim)

    def jvp(self, params: Array, cache: ScaleCache, x_dot: Array,
            params_dot: Array | None = None) -> Array:
        """Forward mode ``y_dot = x_dot * w + x * w_dot`` (``w`` on axis 1).

        Parameters
        ----------
        params : ndarray, shape (num_features,)
        cache : ScaleCache
        x_dot : ndarray, shape of ``x`` (N, num_features, ...)
        params_dot : ndarray, shape (num_features,), optional
            None means zero.

        Returns
        -------
        y_dot : ndarray, shape of ``x``
        """
        self.views(params)
        self._check_tangents(x_dot, cache.x.shape, params_dot)
        return self.apply_jvp(params, cache, x_dot, params_dot)

    def apply_jvp(self, params: Array, cache: ScaleCache, x_dot: Array,
                  params_dot: Array | None = None) -> Array:
        """Unchecked :meth:`jvp`."""
        y_dot = x_dot * self._weight(params, x_dot.ndim)
        if params_dot is None:
            return y_dot
        return tangent_sum(y_dot, cache.x * self._weight(params_dot, x_dot.ndim))

    def apply_jvp_vjp(self, params: Array, cache: ScaleCache, x_dot: Array,
                      params_dot: Array | None, y_dot_bar: Array,
                      y_bar: Array | None = None) -> SecondOrderBars:
        """Second-order VJP (unchecked :meth:`~adjointcore.layers.Layer.jvp_vjp`).

        ``y_dot = x_dot w + x w_dot``; with ``g = y_dot_bar`` and ``S`` the sum over every axis
        but 1: ``x_dot_bar = g w``, ``w_dot_bar = S(g x)``; second order ``x_bar = g w_dot``,
        ``w_bar = S(g x_dot)``; plus the ordinary VJP of ``y_bar`` (``x_bar += y_bar w``,
        ``w_bar += S(y_bar x)``). No ``t``.

        Parameters
        ----------
        params : ndarray, shape (num_features,)
        cache : ScaleCache
        x_dot, y_dot_bar : ndarray, shape of ``x`` (N, num_features, ...)
        params_dot : ndarray, shape (num_features,) or None
        y_bar : ndarray, shape of ``x``, optional

        Returns
        -------
        SecondOrderBars
            ``(x_bar, w_bar, x_dot_bar, w_dot_bar, None)``.
        """
        g, x, nd = y_dot_bar, cache.x, y_dot_bar.ndim
        axes = (0,) + tuple(range(2, nd))
        x_dot_bar = g * self._weight(params, nd)
        params_dot_bar = (g * x).sum(axis=axes)
        params_bar = (g * x_dot).sum(axis=axes)
        if params_dot is not None:
            x_bar = g * self._weight(params_dot, nd)
        else:
            x_bar = get_array_module(g).zeros(x.shape, dtype=params_bar.dtype)
        if y_bar is not None:
            x_bar = x_bar + y_bar * self._weight(params, nd)
            params_bar = params_bar + (y_bar * x).sum(axis=axes)
        return SecondOrderBars(x_bar, params_bar, x_dot_bar, params_dot_bar, None)


class ParallelCache(NamedTuple):
    """Cache of :class:`Parallel`: one cache per branch."""
    branches: tuple


class Parallel(_Composite):
    """Sum of branches applied to the same input: ``y = f_1(x) + f_2(x) + ...``.

    Parameters
    ----------
    *branches : layer objects
        At least one; every branch maps ``x`` to outputs of one common shape. Their flat
        parameters are concatenated in order (views ``"i.name"``, as in ``Sequential``).

    Notes
    -----
    VJP: every branch receives the same ``y_bar``; ``x_bar`` is the sum of the branches'
    input cotangents. Flags: ``analytic`` if all branches are, ``time_dependent`` /
    ``needs_rng`` if any is.
    """

    _child_attr = "branches"
    branches: tuple[Any, ...]    # the children (set by _set_children, named by _child_attr)

    def __init__(self, *branches: Any) -> None:
        self._set_children(branches)
        if not self.branches:
            raise ValueError("Parallel needs at least one branch, e.g. "
                             "Parallel(Scale(n), Linear(n, n)).")

    def output_shape(self, input_shape: Sequence[int]) -> tuple:
        shapes = {tuple(b.output_shape(input_shape)) for b in self.branches
                  if hasattr(b, "output_shape")}
        if len(shapes) > 1:
            raise ShapeError(f"Parallel branches map {tuple(input_shape)} to different shapes "
                             f"{sorted(shapes)}; every branch must give the same shape.")
        return shapes.pop() if shapes else tuple(input_shape)

    def forward(self, params: Array, x: Array, t: Any = None, rng: Any = None,
                **context: Any) -> tuple[Array, ParallelCache]:
        """``(sum of the branches' outputs, ParallelCache)``; checks each branch's output."""
        check_params("params", params, self.n_params, owner=self)
        y, caches = None, []
        for i, (branch, sl) in enumerate(zip(self.branches, self._slices, strict=True)):
            ctx = {}
            if getattr(branch, "time_dependent", False):
                ctx["t"] = t
            if getattr(branch, "needs_rng", False):
                ctx["rng"] = rng
            out, cache = branch.forward(params[sl], x, **ctx)
            if y is not None and tuple(out.shape) != tuple(y.shape):
                raise ShapeError(f"branches[{i}] ({type(branch).__name__}) returned shape "
                                 f"{tuple(out.shape)}, but branches[0] returned "
                                 f"{tuple(y.shape)}; every branch must give the same shape.")
            y = out if y is None else y + out
            caches.append(cache)
        return y, ParallelCache(tuple(caches))

    def apply(self, params: Array, x: Array, t: Any = None, rng: np.random.Generator | None = None,
              tape: bool = True) -> tuple[Array, ParallelCache | None]:
        """Unchecked :meth:`forward`."""
        y, caches = None, []
        for kernel, sl in zip(self._kernels, self._slices, strict=True):
            out, cache = kernel.apply(params[sl], x, t, rng, tape)
            y = out if y is None else y + out
            caches.append(cache)
        return y, (ParallelCache(tuple(caches)) if tape else None)

    def vjp(self, params: Array, cache: ParallelCache, y_bar: Array,
            need_params: bool = True) -> tuple[Array, Array | None]:
        """Returns ``(x_bar, params_bar or None)``."""
        if not isinstance(cache, ParallelCache) or len(cache.branches) != len(self.branches):
            raise TypeError(f"`cache` must be the ParallelCache of {len(self.branches)} "
                            f"branches returned by Parallel.forward, got "
                            f"{type(cache).__name__}.")
        return self._vjp_via_apply(params, cache, y_bar, need_params,
                                   out_dtype(y_bar, params))

    def apply_vjp(self, params: Array, cache: ParallelCache, y_bar: Array,
                  params_bar: Array | None = None) -> Array:
        """Unchecked :meth:`vjp`; each branch writes into its slice of ``params_bar``."""
        x_bar = None
        for kernel, sl, c in zip(self._kernels, self._slices, cache.branches, strict=True):
            xb = kernel.apply_vjp(params[sl], c, y_bar,
                                  None if params_bar is None else params_bar[sl])
            x_bar = xb if x_bar is None else x_bar + xb
        return x_bar

    def jvp(self, params: Array, cache: ParallelCache, x_dot: Array,
            params_dot: Array | None = None) -> Array:
        """Forward mode: the sum of the branches' tangents, branch ``i`` receiving its block of
        ``params_dot`` (None for a zero tangent).

        Parameters
        ----------
        params : ndarray, shape (n_params,)
        cache : ParallelCache
        x_dot : ndarray, shape of ``x``
        params_dot : ndarray, shape (n_params,), optional

        Returns
        -------
        y_dot : ndarray, shape of the output ``y``
        """
        if not isinstance(cache, ParallelCache) or len(cache.branches) != len(self.branches):
            raise TypeError(f"`cache` must be the ParallelCache of {len(self.branches)} "
                            f"branches returned by Parallel.forward, got "
                            f"{type(cache).__name__}.")
        self._check_jvp_inputs(params, x_dot, params_dot)
        y_dot = None
        for i, (branch, sl, c) in enumerate(zip(self.branches, self._slices, cache.branches,
                                                strict=True)):
            out = call_jvp(branch, params[sl], c, x_dot, _child_tangent(params_dot, sl),
                           self._where(i))
            if y_dot is not None and tuple(getattr(out, "shape", ())) != tuple(y_dot.shape):
                raise ShapeError(f"branches[{i}] ({type(branch).__name__}).jvp returned shape "
                                 f"{tuple(getattr(out, 'shape', ()))}, but branches[0] returned "
                                 f"{tuple(y_dot.shape)}; every branch must give the same shape.")
            y_dot = out if y_dot is None else y_dot + out
        return y_dot

    def apply_jvp(self, params: Array, cache: ParallelCache, x_dot: Array,
                  params_dot: Array | None = None) -> Array:
        """Unchecked :meth:`jvp`."""
        y_dot = None
        for i, (kernel, sl, c) in enumerate(zip(self._kernels, self._slices, cache.branches,
                                                strict=True)):
            out = kernel_jvp(kernel, params[sl], c, x_dot, _child_tangent(params_dot, sl),
                             self._where(i))
            y_dot = out if y_dot is None else y_dot + out
        return y_dot

    def apply_jvp_vjp(self, params: Array, cache: ParallelCache, x_dot: Array,
                      params_dot: Array | None, y_dot_bar: Array,
                      y_bar: Array | None = None) -> SecondOrderBars:
        """Second-order VJP: every branch gets the same ``(y_bar, y_dot_bar)``; ``x_bar``,
        ``x_dot_bar`` and ``t_bar`` are the sums over the branches, the parameter cotangents
        their concatenation (``y = sum_i f_i(x)`` is linear in the branch outputs).

        Returns
        -------
        SecondOrderBars
        """
        x_bar = x_dot_bar = t_bar = None
        p_bars, pd_bars = [], []
        for i, (kernel, sl, c) in enumerate(zip(self._kernels, self._slices, cache.branches,
                                                strict=True)):
            r = call_jvp_vjp(kernel, params[sl], c, x_dot, _child_tangent(params_dot, sl),
                             y_dot_bar, y_bar, self._where(i))
            x_bar = r.x_bar if x_bar is None else x_bar + r.x_bar
            x_dot_bar = r.x_dot_bar if x_dot_bar is None else x_dot_bar + r.x_dot_bar
            t_bar = add_time_bar(t_bar, r.t_bar)
            p_bars.append(r.params_bar.reshape(-1))
            pd_bars.append(r.params_dot_bar.reshape(-1))
        xp = get_array_module(x_bar)
        return SecondOrderBars(x_bar, xp.concatenate(p_bars), x_dot_bar,
                               xp.concatenate(pd_bars), t_bar)

    def __repr__(self) -> str:
        inner = ", ".join(repr(b) for b in self.branches)
        return f"Parallel({inner})"
