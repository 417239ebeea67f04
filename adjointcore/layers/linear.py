"""Dense layers: :class:`Linear` and the time-concatenating :class:`ConcatLinear`.

Both are analytic (complex input is accepted, no conjugation anywhere), so the complex-step
derivative applies. VJPs are three GEMM-shaped products written straight into the flat
``params_bar`` vector through its named views.

References
----------
.. [1] R. T. Q. Chen, Y. Rubanova, J. Bettencourt, D. Duvenaud, "Neural ordinary differential
   equations", NeurIPS 2018 (``ConcatLinear`` / ``ConcatConv2d`` time conditioning).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from .. import init as initmod
from ..backend import Array, get_array_module
from ..errors import ShapeError, check_array, check_params, check_positive_int
from ._checks import check_backends, check_flag, check_y_bar, out_dtype, time_value
from .base import Layer, param_layout
from .binding import BoundLayer
from .second_order import SecondOrderBars, tangent_sum

__all__ = ["Linear", "ConcatLinear", "LinearCache", "ConcatLinearCache"]


# -- caches ---------------------------------------------------------------------------------------
class LinearCache(NamedTuple):
    """Cache of :class:`Linear`: the input ``x`` (N, in_features)."""
    x: Array


class ConcatLinearCache(NamedTuple):
    """Cache of :class:`ConcatLinear`: the input ``x`` (N, in_features) and the time ``t``."""
    x: Array
    t: Any


# -- layers ---------------------------------------------------------------------------------------
class Linear(Layer):
    """Affine map ``y = x @ W.T + b``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
        Include the bias ``b`` (default True).
    init : str
        Weight scheme, one of :data:`adjointcore.init.WEIGHT_SCHEMES` (default
        ``"kaiming_uniform"``); the bias is uniform on ``+-1/sqrt(fan_in)``.

    Notes
    -----
    Shapes: ``x`` (N, in_features) -> ``y`` (N, out_features). Parameters (flat, in order):
    ``"weight"`` (out_features, in_features), ``"bias"`` (out_features,).

    VJP: ``x_bar = y_bar @ W``, ``W_bar = y_bar.T @ x``, ``b_bar = y_bar.sum(0)``.
    JVP: ``y_dot = x_dot @ W.T + x @ W_dot.T + b_dot``.
    """

    analytic = True
    _extra_inputs = 0  # ConcatLinear: one extra weight column for t

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 init: str = "kaiming_uniform") -> None:
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        self.bias = check_flag("bias", bias)
        self.init_scheme = initmod.check_scheme(init)
        layout = param_layout(self.param_shapes)
        bias = layout.get("bias")  # type: ignore[assignment]  # the name now holds the bias slot
        # the bias slot (see above)
        self._layout = (*layout["weight"], None if bias is None else bias[0])  # type: ignore[index]

    @property
    def n_params(self) -> int:
        """``out (in [+1]) [+ out]``: where the last block of the flat layout ends."""
        ws, _, bs = self._layout
        return (ws if bs is None else bs).stop

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        fan_in = self.in_features + self._extra_inputs
        shapes: dict[str, tuple[int, ...]] = {"weight": (self.out_features, fan_in)}
        if self.bias:
            shapes["bias"] = (self.out_features,)
        return shapes

    def _init_views(self, rng: np.random.Generator, views: dict[str, Array]) -> None:
        fan_in = self.in_features + self._extra_inputs
        shape = views["weight"].shape
        views["weight"][...] = initmod.init_weight(self.init_scheme, rng, shape, fan_in,
                                                   self.out_features)
        if self.bias:
            views["bias"][...] = initmod.init_bias(rng, (self.out_features,), fan_in)

    def output_shape(self, input_shape: Sequence[int]) -> tuple:
        shape = tuple(input_shape)
        if len(shape) != 2 or shape[1] != self.in_features:
            raise ShapeError(f"{self!r} maps (N, {self.in_features}) to (N, "
                             f"{self.out_features}); got input_shape {shape}.")
        return shape[0], self.out_features

    def _check_input(self, params: Array, x: Array) -> None:
        x = check_array("x", x, ndim=2, fix=f"{type(self).__name__} takes (N, in_features); "
                                            f"flatten images with Flatten() first.")
        if x.shape[1] != self.in_features:
            raise ShapeError(f"`x` has {x.shape[1]} features (shape {tuple(x.shape)}) but "
                             f"{self!r} expects in_features={self.in_features}.")
        check_params("params", params, self.n_params, owner=self)
        check_backends(self, params, x)

    def _weights(self, params: Array) -> tuple[Array, Array | None]:
        """``(W, b or None)`` views of a flat ``params`` (unchecked)."""
        ws, wshape, bs = self._layout
        return params[ws].reshape(wshape), (None if bs is None else params[bs])

    def forward(self, params: Array, x: Array, **context: Any) -> tuple[Array, Any]:
        """``y = x @ W.T + b``; returns ``(y, LinearCache(x))``.

        Parameters
        ----------
        params : ndarray, shape (n_params,)
        x : ndarray, shape (N, in_features)
        """
        self._check_input(params, x)
        return self.apply(params, x)

    def apply(self, params: Array, x: Array, t: Any = None, rng: np.random.Generator | None = None,
              tape: bool = True) -> tuple[Array, Any | None]:
        """Unchecked :meth:`forward` (``tape=False``: no cache)."""
        ws, wshape, bs = self._layout
        y = _affine(x, params[ws].reshape(wshape).T, None if bs is None else params[bs])
        return y, (LinearCache(x) if tape else None)

    def bind(self, params: Array) -> BoundLayer:
        """The layer with ``params`` fixed, the views ``W``, ``W.T`` and ``b`` taken once
        (:class:`BoundLinear`, bitwise :meth:`apply`/:meth:`apply_vjp`); a subclass that
        overrides :meth:`apply` or :meth:`apply_vjp` (``ConcatLinear``) gets the generic
        :class:`~adjointcore.layers.base.BoundLayer` through its own methods."""
        if type(self).apply is not Linear.apply or type(self).apply_vjp is not Linear.apply_vjp:
            return Layer.bind(self, params)
        return BoundLinear(self, params)

    def vjp(self, params: Array, cache: Any, y_bar: Array,
            need_params: bool = True) -> tuple[Array, Array | None]:
        """Returns ``(x_bar (N, in_features), params_bar (n_params,) or None)``."""
        self.views(params)
        check_y_bar(y_bar, (cache.x.shape[0], self.out_features))
        return self._vjp_via_apply(params, cache, y_bar, need_params,
                                   out_dtype(y_bar, cache.x, params))

    def apply_vjp(self, params: Array, cache: Any, y_bar: Array,
                  params_bar: Array | None = None) -> Array:
        """Unchecked :meth:`vjp`; the parameter cotangent is written into ``params_bar``."""
        ws, wshape, _ = self._layout
        return _affine_vjp(y_bar, cache.x, params[ws].reshape(wshape), self._layout, params_bar)

    def jvp(self, params: Array, cache: Any, x_dot: Array,
            params_dot: Array | None = None) -> Array:
        """Forward mode: ``y_dot = x_dot @ W.T + x @ W_dot.T + b_dot``.

        Parameters
        ----------
        params : ndarray, shape (n_params,)
        cache : LinearCache
            From :meth:`forward` at the point of differentiation.
        x_dot : ndarray, shape (N, in_features)
            Input tangent.
        params_dot : ndarray, shape (n_params,), optional
            Parameter tangent (``"weight"`` then ``"bias"``); None means zero.

        Returns
        -------
        y_dot : ndarray, shape (N, out_features)
        """
        self.views(params)
        self._check_tangents(x_dot, cache.x.shape, params_dot)
        return self.apply_jvp(params, cache, x_dot, params_dot)

    def apply_jvp(self, params: Array, cache: Any, x_dot: Array,
                  params_dot: Array | None = None) -> Array:
        """Unchecked :meth:`jvp`."""
        ws, wshape, bs = self._layout
        y_dot = x_dot @ params[ws].reshape(wshape).T
        if params_dot is None:
            return y_dot
        y_dot = tangent_sum(y_dot, cache.x @ params_dot[ws].reshape(wshape).T)
        if bs is not None:
            y_dot = tangent_sum(y_dot, params_dot[bs])
        return y_dot


    def apply_jvp_vjp(self, params: Array, cache: Any, x_dot: Array, params_dot: Array | None,
                      y_dot_bar: Array, y_bar: Array | None = None) -> SecondOrderBars:
        """Second-order VJP (unchecked :meth:`~adjointcore.layers.Layer.jvp_vjp`).

        The tangent map ``y_dot = x_dot @ Wx.T + x @ Wx_dot.T (+ t w_t_dot) + b_dot`` is
        bilinear in ``(x, W)`` and ``(x_dot, W_dot)``; with ``g = y_dot_bar`` (N, out):

        * ``x_dot_bar = g @ Wx``, ``Wx_dot_bar = g.T @ x``, ``w_t_dot_bar = t g.sum(0)``,
          ``b_dot_bar = g.sum(0)`` (the ordinary VJP of ``g``);
        * second order, the weight-product terms: ``x_bar = g @ Wx_dot`` and
          ``Wx_bar = g.T @ x_dot``; ``b`` and ``w_t`` get none (``y_dot`` does not depend on
          them); ``t_bar = <g, 1 w_t_dot>`` (``ConcatLinear``);
        * plus the ordinary VJP of ``y_bar``: ``x_bar += y_bar @ Wx``, ``Wx_bar += y_bar.T @ x``,
          ``w_t_bar = t y_bar.sum(0)``, ``b_bar = y_bar.sum(0)``, ``t_bar += <y_bar, 1 w_t>``.

        ``Wx = W[:, :in_features]`` and ``w_t = W[:, -1]`` (``ConcatLinear`` only).

        Parameters
        ----------
        params : ndarray, shape (n_params,)
        cache : LinearCache or ConcatLinearCache
        x_dot : ndarray, shape (N, in_features)
        params_dot : ndarray, shape (n_params,) or None
        y_dot_bar : ndarray, shape (N, out_features)
        y_bar : ndarray, shape (N, out_features), optional

        Returns
        -------
        SecondOrderBars
            ``x_bar``, ``x_dot_bar`` (N, in_features); ``params_bar``, ``params_dot_bar``
            (n_params,); ``t_bar`` (0-d, ``ConcatLinear``) or None.
        """
        xp = get_array_module(y_dot_bar)
        n_in, timed = self.in_features, bool(self._extra_inputs)
        x = cache.x
        t = cache.t if timed else None
        g = y_dot_bar
        w, _ = self._weights(params)
        wx = w[:, :n_in]
        dtype = out_dtype(g, x, x_dot, params, *(() if params_dot is None else (params_dot,)),
                          *(() if y_bar is None else (y_bar,)), *(() if t is None else (t,)))
        g_sum = g.sum(axis=0)
        # ordinary VJP of g: the tangent cotangents
        x_dot_bar = g @ wx
        params_dot_bar = xp.zeros(self.n_params, dtype=dtype)
        gw, gb = self._weights(params_dot_bar)
        gw[:, :n_in] = g.T @ x
        if timed:
            gw[:, -1] = t * g_sum
        if gb is not None:
            gb[...] = g_sum
        # second order: the weight-product terms
        params_bar = xp.zeros(self.n_params, dtype=dtype)
        hw, hb = self._weights(params_bar)
        hw[:, :n_in] = g.T @ x_dot
        t_bar = None
        if params_dot is not None:
            wd, _ = self._weights(params_dot)
            x_bar = g @ wd[:, :n_in]
            if timed:
                t_bar = (g * wd[:, -1]).sum()
        else:
            x_bar = xp.zeros(x.shape, dtype=dtype)
        if timed and t_bar is None:
            t_bar = xp.zeros((), dtype=dtype)
        # ordinary VJP of y_bar
        if y_bar is not None:
            x_bar = x_bar + y_bar @ wx
            hw[:, :n_in] += y_bar.T @ x
            y_sum = y_bar.sum(axis=0)
            if timed:
                hw[:, -1] = t * y_sum
                t_bar = t_bar + (y_bar * w[:, -1]).sum()
            if hb is not None:
                hb[...] = y_sum
        return SecondOrderBars(x_bar, params_bar, x_dot_bar, params_dot_bar, t_bar)


class BoundLinear(BoundLayer):
    """:class:`Linear` with its parameters fixed (:meth:`Linear.bind`): ``W``, ``W.T`` and ``b``
    are views taken once; the parameter cotangent's layout is the layer's."""

    __slots__ = ("_w", "_w_t", "_b", "_layout")

    def __init__(self, layer: Linear, params: Array) -> None:
        super().__init__(layer, params)
        ws, wshape, bs = self._layout = layer._layout
        self._w = params[ws].reshape(wshape)
        self._w_t = self._w.T
        self._b = None if bs is None else params[bs]

    def __call__(self, x: Array, t: Any = None) -> Array:
        """``x @ W.T + b`` (bitwise ``Linear.apply(..., tape=False)``)."""
        return _affine(x, self._w_t, self._b)

    def forward(self, x: Array, t: Any = None) -> tuple[Array, LinearCache]:
        """``(x @ W.T + b, LinearCache(x))`` (bitwise ``Linear.apply``; the cache made
        without the NamedTuple constructor's Python frame)."""
        return _affine(x, self._w_t, self._b), tuple.__new__(LinearCache, (x,))

    def vjp_into(self, cache: Any, y_bar: Array, params_bar: Array | None = None) -> Array:
        """Bitwise ``Linear.apply_vjp`` (:func:`_affine_vjp`)."""
        return _affine_vjp(y_bar, cache.x, self._w, self._layout, params_bar)


def _affine(x: Array, w_t: Array, b: Array | None) -> Array:
    """``x @ w_t + b`` (``b`` None: no bias), the bias added in place."""
    y = x @ w_t
    if b is not None:
        y += b
    return y


def _affine_vjp(y_bar: Array, x: Array, w: Array, layout: tuple[slice, tuple[int, ...],
                slice | None], params_bar: Array | None) -> Array:
    """``x_bar = y_bar @ w``; ``y_bar.T @ x`` and ``sum(y_bar, axis=0)`` written into the
    weight and bias slices (``layout``: ``Linear._layout``) of ``params_bar`` unless None."""
    x_bar = y_bar @ w
    if params_bar is not None:
        ws, wshape, bs = layout
        if type(y_bar) is np.ndarray:     # host: the ufuncs themselves (sum is add.reduce)
            np.matmul(y_bar.T, x, out=params_bar[ws].reshape(wshape))
            if bs is not None:
                np.add.reduce(y_bar, 0, None, params_bar[bs])
        else:
            get_array_module(y_bar).matmul(y_bar.T, x, out=params_bar[ws].reshape(wshape))
            if bs is not None:
                y_bar.sum(axis=0, out=params_bar[bs])
    return x_bar


class ConcatLinear(Linear):
    """Time-conditioned dense layer ``y = [x, t] @ W.T + b`` (Chen et al. ``ConcatLinear`` [1]_).

    ``t`` is appended as the last input column: ``weight`` has shape
    (out_features, in_features + 1) and its last column multiplies ``t``. Computed without
    building the concatenated input: ``y = x @ W[:, :-1].T + t * W[:, -1] + b``.

    Parameters and init as :class:`Linear` (``fan_in = in_features + 1``).
    ``forward(params, x, t=t)`` requires ``t`` (float or 0-d array); ``t`` receives no gradient,
    and in forward mode it is a constant (no ``t_dot``): ``jvp`` is the partial derivative in
    ``(x, params)`` at the cached ``t``, ``y_dot = x_dot @ W[:, :-1].T + x @ W_dot[:, :-1].T +
    t W_dot[:, -1] + b_dot``.
    """

    time_dependent = True
    _extra_inputs = 1

    def forward(self, params: Array, x: Array, t: Any = None,
                **context: Any) -> tuple[Array, ConcatLinearCache]:
        """``y = x @ W[:, :-1].T + t W[:, -1] + b``; returns ``(y, ConcatLinearCache(x, t))``."""
        self._check_input(params, x)
        # tape=True: a cache, never None
        return self.apply(params, x, t=time_value(t, repr(self)))  # type: ignore[return-value]

    def apply(self, params: Array, x: Array, t: Any = None, rng: np.random.Generator | None = None,
              tape: bool = True) -> tuple[Array, ConcatLinearCache | None]:
        """Unchecked :meth:`forward` (``tape=False``: no cache). A ``t`` that is not a Python
        float (a NumPy scalar from a time grid) is converted as :meth:`forward` converts it, so
        it never widens a float32 output."""
        if type(t) is not float:
            t = time_value(t, type(self).__name__)
        w, b = self._weights(params)
        y = x @ w[:, :-1].T
        if isinstance(t, complex) and y.dtype.kind != "c":
            y = y.astype(np.result_type(y.dtype, np.complex64))
        y += t * w[:, -1]
        if b is not None:
            y += b
        return y, (ConcatLinearCache(x, t) if tape else None)

    def vjp(self, params: Array, cache: ConcatLinearCache, y_bar: Array,
            need_params: bool = True) -> tuple[Array, Array | None]:
        """Returns ``(x_bar (N, in_features), params_bar or None)``; no gradient for ``t``."""
        self.views(params)
        x, t = cache
        check_y_bar(y_bar, (x.shape[0], self.out_features))
        return self._vjp_via_apply(params, cache, y_bar, need_params,
                                   out_dtype(y_bar, x, params, t))

    def apply_vjp(self, params: Array, cache: ConcatLinearCache, y_bar: Array,
                  params_bar: Array | None = None) -> Array:
        """Unchecked :meth:`vjp`; the parameter cotangent is written into ``params_bar``."""
        w, _ = self._weights(params)
        x, t = cache
        x_bar = y_bar @ w[:, :-1]
        if params_bar is not None:
            g_w, g_b = self._weights(params_bar)
            column_sum = y_bar.sum(axis=0)
            g_w[:, :-1] = y_bar.T @ x
            g_w[:, -1] = t * column_sum
            if g_b is not None:
                g_b[...] = column_sum
        return x_bar

    def jvp(self, params: Array, cache: ConcatLinearCache, x_dot: Array,
            params_dot: Array | None = None) -> Array:
        """Forward mode at the cached time ``t`` (a constant: no ``t_dot``).

        Parameters
        ----------
        params : ndarray, shape (n_params,)
        cache : ConcatLinearCache
        x_dot : ndarray, shape (N, in_features)
        params_dot : ndarray, shape (n_params,), optional
            None means zero.

        Returns
        -------
        y_dot : ndarray, shape (N, out_features)
            ``x_dot @ W[:, :-1].T + x @ W_dot[:, :-1].T + t W_dot[:, -1] + b_dot``.
        """
        self.views(params)
        self._check_tangents(x_dot, cache.x.shape, params_dot)
        return self.apply_jvp(params, cache, x_dot, params_dot)

    def apply_jvp(self, params: Array, cache: ConcatLinearCache, x_dot: Array,
                  params_dot: Array | None = None) -> Array:
        """Unchecked :meth:`jvp`."""
        w, _ = self._weights(params)
        x, t = cache
        y_dot = x_dot @ w[:, :-1].T
        if params_dot is None:
            return y_dot
        w_dot, b_dot = self._weights(params_dot)
        term = x @ w_dot[:, :-1].T
        term = tangent_sum(term, t * w_dot[:, -1])
        if b_dot is not None:
            term = tangent_sum(term, b_dot)
        return tangent_sum(y_dot, term)
