"""Normalisation layers: batch normalisation and group normalisation, with exact VJPs.

Both normalise ``x`` to ``xhat = (x - mean) / sqrt(var + eps)`` over a set of axes (biased
variance) and apply a per-channel affine map ``y = weight * xhat + bias``. The VJP of the
normalisation, with ``g = weight * y_bar`` and ``m`` the number of reduced entries, is

    x_bar = inv_std * (g - mean(g) - xhat * mean(g * xhat)),

which contains the terms through the batch mean and variance. Its forward-mode counterpart
(the same symmetric projection), with ``u = x_dot - mean(x_dot)``, is

    xhat_dot = inv_std * (u - xhat * mean(xhat * u)),

and ``y_dot = weight * xhat_dot + weight_dot * xhat + bias_dot``. Everything uses ``x * x`` (never
``abs``) and ``sqrt``, so the forward is analytic and accepts complex input (complex step).

Second order (``jvp_vjp``, the VJP of ``(x, params, x_dot, params_dot) -> (y, y_dot)``): the
tangent cotangents are the ordinary VJP of ``y_dot_bar``; the second-order terms in ``x`` come
from differentiating ``xhat_dot`` once more (:func:`_normalise_jvp_vjp`: the derivative of
``inv_std`` and that of the normalised-input product ``xhat * mean(xhat * u)``) and from the
weight products ``weight * xhat_dot``, ``weight_dot * xhat``.

References
----------
.. [1] S. Ioffe, C. Szegedy, "Batch normalization: accelerating deep network training by
   reducing internal covariate shift", ICML 2015.
.. [2] Y. Wu, K. He, "Group normalization", ECCV 2018.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ..backend import Array, get_array_module, real_dtype
from ..errors import ShapeError, check_array, check_positive_int, check_probability
from ._checks import check_flag, check_mode, finite_float, out_dtype
from .base import Layer
from .second_order import SecondOrderBars, tangent_sum

__all__ = ["BatchNorm", "GroupNorm", "BatchNormCache", "BatchNormEvalCache", "GroupNormCache",
           "update_running_stats"]


class BatchNormCache(NamedTuple):
    """Cache of :class:`BatchNorm` in train mode.

    Attributes
    ----------
    xhat : ndarray, shape of ``x``
        Normalised input.
    inv_std : ndarray, shape (C,)
        ``1 / sqrt(batch_var + eps)``.
    batch_mean, batch_var : ndarray, shape (C,)
        Batch statistics (``batch_var`` is the biased variance used for normalising).
    count : int
        Entries per channel, ``N * H * W``.
    """
    xhat: Any
    inv_std: Any
    batch_mean: Any
    batch_var: Any
    # the documented public field (read by tests/adjointcore/test_norm.py) shadows tuple.count
    count: int  # type: ignore[assignment]

    @property
    def unbiased_var(self) -> Array:
        """Unbiased batch variance ``batch_var * count / (count - 1)`` (for running statistics)."""
        return self.batch_var * (self.count / (self.count - 1))


class BatchNormEvalCache(NamedTuple):
    """Cache of :class:`BatchNorm` in eval mode: ``xhat`` and ``inv_std`` (C,) of running var."""
    xhat: Any
    inv_std: Any


class GroupNormCache(NamedTuple):
    """Cache of :class:`GroupNorm`: ``xhat`` (shape of x), ``inv_std`` of shape (N, G, 1, ...)."""
    xhat: Any
    inv_std: Any


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


# -- batch norm -----------------------------------------------------------------------------------
class BatchNorm(_AffineNorm):
    """Batch normalisation [1]_ over the batch (and spatial) axes of (N, C) or (N, C, H, W) input.

    Parameters
    ----------
    num_features : int
        Number of channels ``C`` (axis 1).
    eps : float, default 1e-5
        Added to the variance.
    mode : {"train", "eval"}
        "train" normalises with the biased batch statistics; "eval" with ``running``.
    running : tuple (mean, var) of ndarray, shape (C,), optional
        Fixed statistics, required for (and only accepted in) ``mode="eval"``.
    affine : bool, default True
        Learnable ``weight`` (C,) and ``bias`` (C,).

    Notes
    -----
    Train-mode VJP: ``x_bar = inv_std * (g - mean(g) - xhat * mean(g * xhat))`` with
    ``g = weight * y_bar``; eval mode is affine: ``x_bar = weight * inv_std * y_bar``.
    Running statistics are updated outside the layer by :func:`update_running_stats`.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, mode: str = "train",
                 running: Sequence[Array] | None = None, affine: bool = True) -> None:
        super().__init__(check_positive_int("num_features", num_features), eps, affine)
        self.num_features = self._channels
        self.mode = check_mode(mode)
        if mode == "eval" and running is None:
            raise ValueError("`running` is required with mode='eval': pass running=(mean, var) "
                             "arrays of shape (C,), e.g. from update_running_stats.")
        if mode == "train" and running is not None:
            raise ValueError("`running` is only used with mode='eval'; drop it, or build the "
                             "evaluation layer with layer.to_eval(running).")
        self.running = None if running is None else self._check_running(running)

    def _check_running(self, running: Any) -> tuple[Array, Array]:
        if not isinstance(running, (tuple, list)) or len(running) != 2:
            raise TypeError(f"`running` must be a (mean, var) pair of arrays of shape "
                            f"({self.num_features},), got {type(running).__name__}.")
        mean, var = running
        check_array("running[0] (mean)", mean, shape=(self.num_features,), allow_complex=False,
                    finite=True)
        check_array("running[1] (var)", var, shape=(self.num_features,), allow_complex=False,
                    finite=True)
        xp = get_array_module(var)
        if not bool(xp.all(var >= 0)):
            raise ValueError(f"`running[1]` (var) must be >= 0, got minimum {float(var.min())}; "
                             f"pass variances, not standard deviations or log-variances.")
        return (mean, var)

    def to_eval(self, running: Sequence[Array]) -> "BatchNorm":
        """A new eval-mode BatchNorm with the same configuration and statistics ``running``."""
        return BatchNorm(self.num_features, self.eps, "eval", running, self.affine)

    def forward(self, params: Array, x: Array, **context: Any) -> tuple[Array, Any]:
        """Normalise ``x``; returns ``(y, BatchNormCache)`` (train) or ``BatchNormEvalCache``."""
        self._check_input(x, (2, 3, 4))
        self._affine(params)
        count = x.size // self.num_features
        if self.mode == "train" and count < 2:
            raise ShapeError(f"`x` of shape {tuple(x.shape)} has {count} value per channel; "
                             f"train-mode BatchNorm needs at least 2 (use a batch of N >= 2 or "
                             f"mode='eval').")
        return self.apply(params, x)

    def _affine_unchecked(self, params: Array) -> tuple[Array | None, Array | None]:
        """``(weight, bias)`` slices of ``params``, or ``(None, None)`` (no checks)."""
        if not self.affine:
            return None, None
        c = self.num_features
        return params[:c], params[c:2 * c]

    def apply(self, params: Array, x: Array, t: Any = None, rng: np.random.Generator | None = None,
              tape: bool = True) -> tuple[Array, Any | None]:
        """Unchecked :meth:`forward` (``tape=False``: no cache)."""
        xp = get_array_module(x)
        weight, bias = self._affine_unchecked(params)
        axes = (0,) + tuple(range(2, x.ndim))
        if self.mode == "eval":
            rdt = real_dtype(x.dtype)
            # eval mode: __init__ requires `running`, so it is not None here
            mean = xp.asarray(self.running[0], dtype=rdt)  # type: ignore[index]
            inv_std = 1 / xp.sqrt(xp.asarray(self.running[1], dtype=rdt)  # type: ignore[index]
                                  + self.eps)
            xhat = (x - _channel(mean, x.ndim)) * _channel(inv_std, x.ndim)
            y = self._apply_affine(xhat, weight, bias)
            return y, (BatchNormEvalCache(xhat, inv_std) if tape else None)
        count = x.size // self.num_features
        mean = x.mean(axis=axes)
        xc = x - _channel(mean, x.ndim)
        var = (xc * xc).mean(axis=axes)
        inv_std = 1 / xp.sqrt(var + self.eps)
        xhat = xc * _channel(inv_std, x.ndim)
        y = self._apply_affine(xhat, weight, bias)
        return y, (BatchNormCache(xhat, inv_std, mean, var, count) if tape else None)

    def apply_vjp(self, params: Array, cache: BatchNormCache | BatchNormEvalCache, y_bar: Array,
                  params_bar: Array | None = None) -> Array:
        """Unchecked :meth:`vjp`; the affine cotangent is written into ``params_bar``."""
        weight, _ = self._affine_unchecked(params)
        axes = (0,) + tuple(range(2, y_bar.ndim))
        g = _affine_param_bar(y_bar, cache.xhat, weight, axes, params_bar)
        inv_std = _channel(cache.inv_std, y_bar.ndim)
        if isinstance(cache, BatchNormEvalCache):
            return g * inv_std
        return _normalise_vjp(g, cache.xhat, inv_std, axes)

    def apply_jvp(self, params: Array, cache: BatchNormCache | BatchNormEvalCache, x_dot: Array,
                  params_dot: Array | None = None) -> Array:
        """Unchecked :meth:`jvp` (eval mode: ``xhat_dot = x_dot * inv_std``)."""
        weight, _ = self._affine_unchecked(params)
        inv_std = _channel(cache.inv_std, x_dot.ndim)
        if isinstance(cache, BatchNormEvalCache):
            xhat_dot = x_dot * inv_std
        else:
            xhat_dot = _normalise_jvp(x_dot, cache.xhat, inv_std,
                                      (0,) + tuple(range(2, x_dot.ndim)))
        return _affine_jvp(xhat_dot, cache.xhat, weight, params_dot)

    def _normalise_second(self, cache: BatchNormCache | BatchNormEvalCache, x_dot: Array,
                          G: Array, K: Array | None) -> tuple[Array, Array]:
        """``(x_bar, xhat_dot)`` of :func:`_normalise_jvp_vjp` over the batch (and spatial)
        axes; eval mode (``xhat`` affine in ``x``): ``(inv_std K, inv_std x_dot)``, no
        second derivative."""
        inv_std = _channel(cache.inv_std, x_dot.ndim)
        if isinstance(cache, BatchNormEvalCache):
            xp = get_array_module(x_dot)
            x_bar = xp.zeros(x_dot.shape, dtype=G.dtype) if K is None else K * inv_std
            return x_bar, x_dot * inv_std
        return _normalise_jvp_vjp(x_dot, G, K, cache.xhat, inv_std,
                                  (0,) + tuple(range(2, x_dot.ndim)))

    def __repr__(self) -> str:
        return (f"BatchNorm(num_features={self.num_features}, eps={self.eps}, mode={self.mode!r}, "
                f"affine={self.affine})")


def update_running_stats(running: Sequence[Array] | None, cache: BatchNormCache,
                         momentum: float = 0.1) -> tuple[Array, Array]:
    """New running statistics after one train-mode BatchNorm forward (pure).

    ``mean <- (1 - momentum) * mean + momentum * batch_mean`` and likewise for the variance with
    the *unbiased* batch variance (the convention of PyTorch's ``BatchNorm``).

    Parameters
    ----------
    running : tuple (mean, var) of ndarray, shape (C,), or None
        Current statistics; ``None`` starts from ``(zeros, ones)``.
    cache : BatchNormCache
        Cache returned by a train-mode :meth:`BatchNorm.forward`.
    momentum : float in [0, 1], default 0.1
        Weight of the new batch.

    Returns
    -------
    (mean, var) : tuple of ndarray, shape (C,)
        New arrays; the inputs are not modified.
    """
    if not isinstance(cache, BatchNormCache):
        raise TypeError(f"`cache` must be the BatchNormCache of a train-mode BatchNorm forward, "
                        f"got {type(cache).__name__}; eval-mode caches carry no batch statistics.")
    momentum = check_probability("momentum", momentum, allow_one=True)
    xp = get_array_module(cache.batch_mean)
    if running is None:
        running = (xp.zeros_like(cache.batch_mean), xp.ones_like(cache.batch_var))
    if not isinstance(running, (tuple, list)) or len(running) != 2:
        raise TypeError(f"`running` must be a (mean, var) pair or None, got "
                        f"{type(running).__name__}.")
    shape = tuple(cache.batch_mean.shape)
    mean = check_array("running[0] (mean)", running[0], shape=shape)
    var = check_array("running[1] (var)", running[1], shape=shape)
    return ((1 - momentum) * mean + momentum * cache.batch_mean,
            (1 - momentum) * var + momentum * cache.unbiased_var)


# -- group norm -----------------------------------------------------------------------------------
class GroupNorm(_AffineNorm):
    """Group normalisation [2]_: statistics per sample over groups of channels (and space).

    Parameters
    ----------
    num_groups : int
        Number of groups ``G``; must divide ``num_channels``.
    num_channels : int
        Number of channels ``C`` (axis 1 of (N, C, ...) input).
    eps : float, default 1e-5
    affine : bool, default True
        Learnable per-channel ``weight`` (C,) and ``bias`` (C,).
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5,
                 affine: bool = True) -> None:
        num_groups = check_positive_int("num_groups", num_groups)
        num_channels = check_positive_int("num_channels", num_channels)
        if num_channels % num_groups:
            raise ValueError(f"`num_channels`={num_channels} is not divisible by "
                             f"`num_groups`={num_groups}; choose num_groups among the divisors "
                             f"{[d for d in range(1, num_channels + 1) if num_channels % d == 0]}.")
        super().__init__(num_channels, eps, affine)
        self.num_groups, self.num_channels = num_groups, num_channels

    def _grouped(self, a: Array) -> Array:
        return a.reshape((a.shape[0], self.num_groups, -1) + tuple(a.shape[2:]))

    def forward(self, params: Array, x: Array, **context: Any) -> tuple[Array, GroupNormCache]:
        """Normalise each (sample, group); returns ``(y, GroupNormCache)``."""
        self._check_input(x, tuple(range(2, 9)))
        self._affine(params)
        return self.apply(params, x)  # type: ignore[return-value]  # tape=True: a cache, never None

    def apply(self, params: Array, x: Array, t: Any = None, rng: np.random.Generator | None = None,
              tape: bool = True) -> tuple[Array, GroupNormCache | None]:
        """Unchecked :meth:`forward` (``tape=False``: no cache)."""
        xp = get_array_module(x)
        weight, bias = self._affine_unchecked(params)
        xg = self._grouped(x)
        axes = tuple(range(2, xg.ndim))
        xc = xg - xg.mean(axis=axes, keepdims=True)
        inv_std = 1 / xp.sqrt((xc * xc).mean(axis=axes, keepdims=True) + self.eps)
        xhat = (xc * inv_std).reshape(x.shape)
        y = self._apply_affine(xhat, weight, bias)
        return y, (GroupNormCache(xhat, inv_std) if tape else None)

    def apply_vjp(self, params: Array, cache: GroupNormCache, y_bar: Array,
                  params_bar: Array | None = None) -> Array:
        """Unchecked :meth:`vjp`; the affine cotangent is written into ``params_bar``."""
        weight, _ = self._affine_unchecked(params)
        channel_axes = (0,) + tuple(range(2, y_bar.ndim))
        g = _affine_param_bar(y_bar, cache.xhat, weight, channel_axes, params_bar)
        gg, xh = self._grouped(g), self._grouped(cache.xhat)
        x_bar = _normalise_vjp(gg, xh, cache.inv_std, tuple(range(2, gg.ndim)))
        return x_bar.reshape(y_bar.shape)

    def apply_jvp(self, params: Array, cache: GroupNormCache, x_dot: Array,
                  params_dot: Array | None = None) -> Array:
        """Unchecked :meth:`jvp`."""
        weight, _ = self._affine_unchecked(params)
        xd, xh = self._grouped(x_dot), self._grouped(cache.xhat)
        xhat_dot = _normalise_jvp(xd, xh, cache.inv_std, tuple(range(2, xd.ndim)))
        return _affine_jvp(xhat_dot.reshape(x_dot.shape), cache.xhat, weight, params_dot)

    def _normalise_second(self, cache: GroupNormCache, x_dot: Array, G: Array,
                          K: Array | None) -> tuple[Array, Array]:
        """``(x_bar, xhat_dot)`` of :func:`_normalise_jvp_vjp` per (sample, group)."""
        grouped = self._grouped
        xd = grouped(x_dot)
        x_bar, xhat_dot = _normalise_jvp_vjp(xd, grouped(G), None if K is None else grouped(K),
                                             grouped(cache.xhat), cache.inv_std,
                                             tuple(range(2, xd.ndim)))
        return x_bar.reshape(x_dot.shape), xhat_dot.reshape(x_dot.shape)

    def __repr__(self) -> str:
        return (f"GroupNorm(num_groups={self.num_groups}, num_channels={self.num_channels}, "
                f"eps={self.eps}, affine={self.affine})")
