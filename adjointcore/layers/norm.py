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
from ._affine_norm import (
    _affine_jvp,
    _affine_param_bar,
    _AffineNorm,
    _channel,
    _normalise_jvp,
    _normalise_jvp_vjp,
    _normalise_vjp,
)
from ._checks import check_mode

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
