"""Shared pieces of the normalisation layers: the normalisation kernels and the affine base class.

:mod:`adjointcore.layers.norm` holds the layers (:class:`~adjointcore.layers.norm.BatchNorm`,
:class:`~adjointcore.layers.norm.GroupNorm`), their caches and ``update_running_stats``; this
module holds what both build on: the VJP, JVP and second-order VJP of the normalisation
``xhat = (x - mean) * inv_std`` over a set of axes (:func:`_normalise_vjp`,
:func:`_normalise_jvp`, :func:`_normalise_jvp_vjp`), the tangent and cotangent of the per-channel
affine map ``y = weight * xhat + bias`` (:func:`_affine_jvp`, :func:`_affine_param_bar`), and
``_AffineNorm``, the base class with the affine parameters, the checks and the shared
``vjp`` / ``jvp`` / ``jvp_vjp`` / ``apply_jvp_vjp``. The formulas are derived in the notes of
:mod:`adjointcore.layers.norm`.

References
----------
.. [1] S. Ioffe, C. Szegedy, "Batch normalization: accelerating deep network training by
   reducing internal covariate shift", ICML 2015.
.. [2] Y. Wu, K. He, "Group normalization", ECCV 2018.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..backend import Array, get_array_module
from ..errors import ShapeError, check_array
from ._checks import check_flag, finite_float, out_dtype
from .base import Layer
from .second_order import SecondOrderBars, tangent_sum

__all__: list[str] = []


# -- shared kernels -------------------------------------------------------------------------------
def _channel(v: Array, ndim: int) -> Array:
    """Reshape a per-channel vector (C,) to broadcast against (N, C, ...) of rank ``ndim``."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _normalise_vjp(g: Array, xhat: Array, inv_std: Array, axes: tuple[int, ...]) -> Array:
    """Cotangent of ``xhat = (x - mean) * inv_std`` over ``axes`` (``inv_std`` broadcastable)."""
    g_mean = g.mean(axis=axes, keepdims=True)
    gx_mean = (g * xhat).mean(axis=axes, keepdims=True)
    return inv_std * (g - g_mean - xhat * gx_mean)


def _normalise_jvp(x_dot: Array, xhat: Array, inv_std: Array, axes: tuple[int, ...]) -> Array:
    """Tangent of ``xhat = (x - mean) * inv_std`` over ``axes`` along ``x_dot``:
    ``inv_std * (u - xhat * mean(xhat * u))`` with ``u = x_dot - mean(x_dot)`` (the mean
    term is the derivative of the mean, the second one that of ``inv_std``)."""
    u = x_dot - x_dot.mean(axis=axes, keepdims=True)
    return inv_std * (u - xhat * (xhat * u).mean(axis=axes, keepdims=True))


def _normalise_jvp_vjp(x_dot: Array, G: Array, K: Array | None, xhat: Array, inv_std: Array,
                       axes: tuple[int, ...]) -> tuple[Array, Array]:
    """Second-order VJP of ``xhat = (x - mean) * inv_std`` over ``axes``.

    Returns ``(x_bar, xhat_dot)``: ``xhat_dot`` (:func:`_normalise_jvp`, recomputed) and the
    gradient in ``x`` of ``<G, xhat_dot(x; x_dot)> + <K, xhat(x)>`` (``K=None``: zero).

    Derivation (per normalisation set of ``m`` entries, ``M`` the mean over it, ``s =
    inv_std``): with ``u = x_dot - M(x_dot)`` (independent of ``x``) and ``a = M(xhat u)``,
    ``xhat_dot = s u - s a xhat``. The differentials in ``x`` are ``ds = -s**2 M(xhat dx)``
    (``d var = 2 M(xc dx)``, ``ds = -s**3 d var / 2``) and ``d xhat = P(dx) = s (dx - M(dx) -
    xhat M(xhat dx))``, a symmetric projection (its adjoint is :func:`_normalise_vjp`). Then

        d<G, xhat_dot> = ds <G, u - a xhat>                        (the inv_std term)
                         - s M(G xhat) <u, d xhat> - s a <G, d xhat>  (the xhat a product:
                                                                  d a = M(u d xhat), d xhat)

    and ``<G, u - a xhat> = m M(G xhat_dot) / s``, so

        x_bar = -s M(G xhat_dot) xhat + P^T(K - s (M(G xhat) u + a G)).

    Dropping the first term (the variance term) or either part of the second leaves an O(1)
    error (mutation tests).
    """
    u = x_dot - x_dot.mean(axis=axes, keepdims=True)
    a = (xhat * u).mean(axis=axes, keepdims=True)
    xhat_dot = inv_std * (u - xhat * a)
    k = inv_std * ((G * xhat).mean(axis=axes, keepdims=True) * u + a * G)
    k = -k if K is None else K - k
    curvature = inv_std * (G * xhat_dot).mean(axis=axes, keepdims=True)
    return _normalise_vjp(k, xhat, inv_std, axes) - curvature * xhat, xhat_dot


def _affine_jvp(xhat_dot: Array, xhat: Array, weight: Array | None,
                params_dot: Array | None) -> Array:
    """Tangent of ``y = weight * xhat + bias`` (per channel, axis 1): ``weight * xhat_dot``
    plus ``weight_dot * xhat + bias_dot`` when ``params_dot`` (``[weight_dot, bias_dot]``)
    is given; ``xhat_dot`` itself without affine parameters."""
    if weight is None:
        return xhat_dot
    ndim = xhat_dot.ndim
    y_dot = xhat_dot * _channel(weight, ndim)
    if params_dot is None:
        return y_dot
    c = weight.shape[0]
    term = xhat * _channel(params_dot[:c], ndim)
    term = tangent_sum(term, _channel(params_dot[c:2 * c], ndim))
    return tangent_sum(y_dot, term)


def _affine_param_bar(y_bar: Array, xhat: Array, weight: Array | None, axes: tuple[int, ...],
                      params_bar: Array | None) -> Array:
    """Cotangent ``g`` of ``xhat`` under ``y = weight * xhat + bias``; the cotangents of
    ``(weight, bias)`` are written into ``params_bar`` (when given and affine)."""
    if weight is None:
        return y_bar
    if params_bar is not None:
        c = weight.shape[0]
        params_bar[:c] = (y_bar * xhat).sum(axis=axes)
        params_bar[c:2 * c] = y_bar.sum(axis=axes)
    return y_bar * _channel(weight, y_bar.ndim)


class _AffineNorm(Layer):
    """Per-channel affine parameters ``weight`` (init 1) and ``bias`` (init 0)."""

    analytic = True

    def __init__(self, num_channels: int, eps: float, affine: bool) -> None:
        self._channels = num_channels
        self.eps = finite_float("eps", eps)
        if not self.eps > 0:
            raise ValueError(f"`eps` must be > 0, got {eps!r}; the default 1e-5 is usual.")
        self.affine = check_flag("affine", affine)

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        if not self.affine:
            return {}
        return {"weight": (self._channels,), "bias": (self._channels,)}

    def _init_views(self, rng: np.random.Generator, views: dict[str, Array]) -> None:
        if self.affine:
            views["weight"][...] = 1.0
            views["bias"][...] = 0.0

    def output_shape(self, input_shape: Sequence[int]) -> tuple:
        return tuple(input_shape)

    def _affine(self, params: Array | None) -> tuple[Array | None, Array | None]:
        """``(weight, bias)`` views, or ``(None, None)`` without affine parameters."""
        if not self.affine:
            self._check_no_params(params)
            return None, None
        v = self.views(params)
        return v["weight"], v["bias"]

    def _check_input(self, x: Array, ndim: int | Sequence[int]) -> Any:
        check_array("x", x, ndim=ndim, fix="Layout is (N, C) or (N, C, H, W).")
        if x.shape[1] != self._channels:
            raise ShapeError(f"`x` has {x.shape[1]} channels (axis 1, shape {tuple(x.shape)}), "
                             f"but {self!r} expects {self._channels}; fix the layer's channel "
                             f"count or the input layout (channels on axis 1).")
        return get_array_module(x)

    def _apply_affine(self, xhat: Array, weight: Array | None, bias: Array | None) -> Array:
        if weight is None:
            return xhat
        return xhat * _channel(weight, xhat.ndim) + _channel(bias, xhat.ndim)

    def _affine_unchecked(self, params: Array) -> tuple[Array | None, Array | None]:
        """``(weight, bias)`` slices of ``params``, or ``(None, None)`` (no checks)."""
        if not self.affine:
            return None, None
        c = self._channels
        return params[:c], params[c:2 * c]

    def vjp(self, params: Array, cache: Any, y_bar: Array,
            need_params: bool = True) -> tuple[Array, Array | None]:
        """Returns ``(x_bar, params_bar)``: the checks, then :meth:`apply_vjp`."""
        self._affine(params)
        self._check_y_bar(y_bar, cache.xhat)
        if not need_params:
            return self.apply_vjp(params, cache, y_bar), None
        if not self.affine:
            xp = get_array_module(y_bar)
            return self.apply_vjp(params, cache, y_bar), xp.zeros(0, dtype=y_bar.dtype)
        return self._vjp_via_apply(params, cache, y_bar, True,
                                   get_array_module(y_bar).result_type(y_bar, cache.xhat))

    def jvp(self, params: Array, cache: Any, x_dot: Array,
            params_dot: Array | None = None) -> Array:
        """Forward mode from the cached ``xhat`` and ``inv_std`` (see the module notes).

        Parameters
        ----------
        params : ndarray, shape (n_params,)
            ``[weight (C,), bias (C,)]``, or empty without affine parameters.
        cache : NamedTuple
            From :meth:`forward` (taped).
        x_dot : ndarray, shape of ``x``
        params_dot : ndarray, shape (n_params,), optional
            None means zero.

        Returns
        -------
        y_dot : ndarray, shape of ``x``
        """
        self._affine(params)
        self._check_tangents(x_dot, cache.xhat.shape, params_dot)
        return self.apply_jvp(params, cache, x_dot, params_dot)

    def jvp_vjp(self, params: Array | None, cache: Any, x_dot: Array, params_dot: Array | None,
                y_dot_bar: Array, y_bar: Array | None = None) -> SecondOrderBars:
        """Second-order VJP (see :meth:`apply_jvp_vjp`): the checks of :meth:`jvp` (``params``,
        ``x_dot`` of the cached input's shape, ``params_dot``), then those of
        :meth:`Layer.jvp_vjp <adjointcore.layers.Layer.jvp_vjp>` (``y_dot_bar``, ``y_bar``).

        Raises
        ------
        ShapeError, ParameterError, TypeError
            Naming ``params``, ``x_dot``, ``params_dot``, ``y_dot_bar`` or ``y_bar``.
        """
        self._affine(params)
        self._check_tangents(x_dot, cache.xhat.shape, params_dot)
        return super().jvp_vjp(params, cache, x_dot, params_dot, y_dot_bar, y_bar)

    def apply_jvp_vjp(self, params: Array | None, cache: Any, x_dot: Array,
                      params_dot: Array | None, y_dot_bar: Array,
                      y_bar: Array | None = None) -> SecondOrderBars:
        """Second-order VJP (unchecked :meth:`~adjointcore.layers.Layer.jvp_vjp`).

        ``y_dot = w xhat_dot + w_dot xhat + b_dot`` (``w``, ``b`` per channel; ``xhat_dot`` as
        in the module notes). With ``g = y_dot_bar`` and ``S`` the sum over every axis but 1:

        * ``x_dot_bar``, ``params_dot_bar = [S(g xhat), S(g)]``: the ordinary VJP of ``g``
          (:meth:`apply_vjp`, bit for bit);
        * ``x_bar``: the gradient of ``<w g, xhat_dot> + <g w_dot + w y_bar, xhat>``, i.e. the
          normalisation's own second derivative with ``G = w g`` (the ``inv_std`` and the
          normalised-input-product terms, :func:`_normalise_jvp_vjp`; none in BatchNorm eval
          mode, where ``xhat`` is affine in ``x``) plus the weight-product term ``g w_dot``
          and ``y_bar``'s ordinary VJP, both through the first-order map ``P^T``;
        * ``params_bar = [S(g xhat_dot) + S(y_bar xhat), S(y_bar)]`` (the weight product
          ``w xhat_dot``; the bias has no second-order term).

        Without affine parameters ``w = 1`` and both parameter bars are empty. No ``t``.

        Parameters
        ----------
        params : ndarray, shape (n_params,)
        cache : NamedTuple
            From :meth:`forward` (taped).
        x_dot, y_dot_bar : ndarray, shape of ``x``
        params_dot : ndarray, shape (n_params,) or None
        y_bar : ndarray, shape of ``x``, optional

        Returns
        -------
        SecondOrderBars
            ``(x_bar, params_bar, x_dot_bar, params_dot_bar, None)``.
        """
        xp = get_array_module(y_dot_bar)
        weight, _ = self._affine_unchecked(params)
        g, xhat, nd = y_dot_bar, cache.xhat, y_dot_bar.ndim
        affine = weight is not None
        dtype = out_dtype(g, x_dot, xhat, *((weight,) if affine else ()),
                          *((params_dot,) if affine and params_dot is not None else ()),
                          *(() if y_bar is None else (y_bar,)))
        params_dot_bar = xp.zeros(self.n_params, dtype=dtype)
        x_dot_bar = self.apply_vjp(params, cache, g, params_dot_bar if affine else None)
        if affine:
            c = self._channels
            G = g * _channel(weight, nd)
            K = None
            if params_dot is not None:
                K = g * _channel(params_dot[:c], nd)
            if y_bar is not None:
                yw = y_bar * _channel(weight, nd)
                K = yw if K is None else K + yw
        else:
            G, K = g, y_bar
        # every concrete subclass (BatchNorm, GroupNorm) defines _normalise_second
        x_bar, xhat_dot = self._normalise_second(cache, x_dot, G, K)  # type: ignore[attr-defined]
        params_bar = xp.zeros(self.n_params, dtype=dtype)
        if affine:
            axes = (0,) + tuple(range(2, nd))
            params_bar[:c] = (g * xhat_dot).sum(axis=axes)
            if y_bar is not None:
                params_bar[:c] += (y_bar * xhat).sum(axis=axes)
                params_bar[c:2 * c] = y_bar.sum(axis=axes)
        return SecondOrderBars(x_bar.astype(dtype, copy=False), params_bar, x_dot_bar,
                               params_dot_bar, None)
