"""Elementwise activations with hand-written VJPs.

Every activation is parameter-free, accepts inputs of any shape and returns an output of the
same shape. Smooth activations (:class:`Tanh`, :class:`Sigmoid`, :class:`Softplus`,
:class:`ELU`) accept complex input so the complex-step derivative applies: their stable branches
are selected by ``x.real`` and every formula is valid for complex arguments.

The cache of each layer holds only what its VJP needs: the output for tanh; the output and its
complement ``1 - y`` (computed without cancellation) for sigmoid; ``sigmoid(beta x)`` for
softplus; the slope for ELU; the sign mask for the piecewise-linear ones. ``params`` may be a
length-0 array or None.

References
----------
.. [1] D.-A. Clevert, T. Unterthiner, S. Hochreiter, "Fast and accurate deep network learning by
   exponential linear units (ELUs)", ICLR 2016.
.. [2] A. L. Maas, A. Y. Hannun, A. Y. Ng, "Rectifier nonlinearities improve neural network
   acoustic models", ICML 2013 (leaky ReLU).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from ..backend import Array, get_array_module
from ..errors import check_array
from ._checks import finite_float
from ._parallel import MIN_PARALLEL_SIZE, chunked
from ._stable import (
    _sigmoid_pair,
    _tanh_derivative_into,
    _tanh_into,
    sigmoid,
    softplus,
    tanh_derivative,
)
from .base import ParameterFree
from .binding import BoundLayer
from .second_order import SecondOrderBars

__all__ = ["ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Softplus", "ELU", "tanh_derivative",
           "MaskCache", "TanhCache", "SigmoidCache", "LogisticCache", "ELUCache",
           "sigmoid", "softplus"]


# -- caches ---------------------------------------------------------------------------------------
class MaskCache(NamedTuple):
    """Cache of ReLU / leaky ReLU: ``positive`` is the boolean mask ``x > 0``."""
    positive: Array


class TanhCache(NamedTuple):
    """Cache of tanh: the input ``x``; the VJP evaluates ``dy/dx`` from it
    (:func:`tanh_derivative`)."""
    x: Array


class SigmoidCache(NamedTuple):
    """Cache of sigmoid: ``y = sigmoid(x)`` and ``y_c = sigmoid(-x) = 1 - y`` (``dy/dx = y y_c``).

    Keeping ``y_c`` avoids the cancellation in ``1 - y`` for large ``x``.
    """
    y: Array
    y_c: Array


class LogisticCache(NamedTuple):
    """Cache of softplus: ``s = sigmoid(beta * x)``, the derivative of softplus."""
    s: Array


class ELUCache(NamedTuple):
    """Cache of ELU: the derivative ``slope = dy/dx`` (1, or ``alpha exp(x)`` for ``x <= 0``).

    ``y + alpha`` would give the same value but cancels for ``x << 0``.
    """
    slope: Array


# -- base -----------------------------------------------------------------------------------------
class _Elementwise(ParameterFree):
    """Shared plumbing: parameter/input checks, shape-preserving ``output_shape``."""

    def output_shape(self, input_shape: Sequence[int]) -> tuple:
        return tuple(input_shape)

    def forward(self, params: Array, x: Array, **context: Any) -> tuple[Array, Any]:
        self._check_no_params(params)
        check_array("x", x, allow_complex=self.analytic)
        return self.apply(params, x)

    def vjp(self, params: Array, cache: Any, y_bar: Array,
            need_params: bool = True) -> tuple[Array, Array | None]:
        self._check_y_bar(y_bar, cache[0])
        return self.apply_vjp(params, cache, y_bar), self._params_bar(y_bar, need_params)

    def jvp(self, params: Array, cache: Any, x_dot: Array,
            params_dot: Array | None = None) -> Array:
        """Forward mode ``y_dot = f'(x) * x_dot`` (element-wise) from the forward cache.

        Parameters
        ----------
        params : None or ndarray, shape (0,)
        cache : NamedTuple
            From :meth:`forward` (taped).
        x_dot : ndarray, shape of ``x``
        params_dot : None or ndarray, shape (0,)

        Returns
        -------
        y_dot : ndarray, shape of ``x``
        """
        self._check_no_params(params)
        self._check_tangents(x_dot, cache[0].shape, params_dot)
        return self.apply_jvp(params, cache, x_dot, params_dot)


    def apply_jvp_vjp(self, params: Array, cache: Any, x_dot: Array, params_dot: Array | None,
                      y_dot_bar: Array, y_bar: Array | None = None) -> SecondOrderBars:
        """Second-order VJP (unchecked :meth:`~adjointcore.layers.Layer.jvp_vjp`).

        For ``y = f(x)`` element-wise, ``y_dot = f'(x) x_dot``; with ``g = y_dot_bar``:
        ``x_dot_bar = f'(x) g`` and ``x_bar = f''(x) x_dot g (+ f'(x) y_bar)``; no parameters,
        no ``t``. ``f''`` per layer: tanh ``-2 y f'``; sigmoid ``y (1 - y) (1 - 2 y)``;
        softplus ``beta s (1 - s)``, ``s = sigmoid(beta x)``; ELU 0 for ``x > 0`` and
        ``alpha exp(x)`` otherwise; ReLU / leaky ReLU 0 (almost everywhere).

        Parameters
        ----------
        params : None or ndarray, shape (0,)
        cache : NamedTuple
            From :meth:`forward` (taped).
        x_dot, y_dot_bar : ndarray, shape of ``x``
        params_dot : None or ndarray, shape (0,)
        y_bar : ndarray, shape of ``x``, optional

        Returns
        -------
        SecondOrderBars
            ``(x_bar, empty, x_dot_bar, empty, None)``.
        """
        xp = get_array_module(y_dot_bar)
        x_dot_bar = self.apply_vjp(params, cache, y_dot_bar)
        x_bar = self._second_term(cache, x_dot * y_dot_bar)
        if y_bar is not None:
            x_bar = x_bar + self.apply_vjp(params, cache, y_bar)
        empty = xp.zeros(0, dtype=x_bar.dtype)
        return SecondOrderBars(x_bar, empty, x_dot_bar, empty, None)

    def _second_term(self, cache: Any, q: Array) -> Array:
        """``f''(x) * q``; default: 0 (piecewise-linear activations)."""
        return get_array_module(q).zeros_like(q)


# -- layers ---------------------------------------------------------------------------------------
class ReLU(_Elementwise):
    """Rectified linear unit ``y = max(x, 0)``; the derivative at ``x = 0`` is taken as 0."""

    def apply(self, params: Array, x: Array, t: Any = None, rng: np.random.Generator | None = None,
              tape: bool = True) -> tuple[Array, MaskCache | None]:
        xp = get_array_module(x)
        positive = x > 0
        return xp.where(positive, x, xp.zeros((), dtype=x.dtype)), MaskCache(positive)

    def apply_vjp(self, params: Array, cache: MaskCache, y_bar: Array,
                  params_bar: Array | None = None) -> Array:
        xp = get_array_module(y_bar)
        return xp.where(cache.positive, y_bar, xp.zeros((), dtype=y_bar.dtype))

    def apply_jvp(self, params: Array, cache: MaskCache, x_dot: Array,
                  params_dot: Array | None = None) -> Array:
        """Unchecked :meth:`jvp`: ``x_dot`` where ``x > 0``, else 0."""
        xp = get_array_module(x_dot)
        return xp.where(cache.positive, x_dot, xp.zeros((), dtype=x_dot.dtype))


class LeakyReLU(_Elementwise):
    """Leaky ReLU ``y = x`` for ``x > 0`` and ``negative_slope * x`` otherwise [2]_.

    Parameters
    ----------
    negative_slope : float, default 0.01
        Slope on the negative half-line (finite; any sign is allowed).
    """

    def __init__(self, negative_slope: float = 0.01) -> None:
        self.negative_slope = finite_float("negative_slope", negative_slope)

    def apply(self, params: Array, x: Array, t: Any = None, rng: np.random.Generator | None = None,
              tape: bool = True) -> tuple[Array, MaskCache | None]:
        xp = get_array_module(x)
        positive = x > 0
        return xp.where(positive, x, self.negative_slope * x), MaskCache(positive)

    def apply_vjp(self, params: Array, cache: MaskCache, y_bar: Array,
                  params_bar: Array | None = None) -> Array:
        xp = get_array_module(y_bar)
        return xp.where(cache.positive, y_bar, self.negative_slope * y_bar)

    def apply_jvp(self, params: Array, cache: MaskCache, x_dot: Array,
                  params_dot: Array | None = None) -> Array:
        """Unchecked :meth:`jvp`: ``x_dot`` where ``x > 0``, else ``negative_slope * x_dot``."""
        xp = get_array_module(x_dot)
        return xp.where(cache.positive, x_dot, self.negative_slope * x_dot)


class Tanh(_Elementwise):
    """Hyperbolic tangent ``y = tanh(x)``; ``dy/dx = 1 - y**2 = sech(x)**2``.

    The forward computes ``tanh`` only and keeps ``x``; the VJP evaluates the derivative from
    ``x`` to full relative accuracy (:func:`tanh_derivative`), so forward-only sweeps pay for no
    derivative.
    """

    analytic = True

    def apply(self, params: Array, x: Array, t: Any = None, rng: np.random.Generator | None = None,
              tape: bool = True) -> tuple[Array, TanhCache | None]:
        xp = get_array_module(x)
        if x.size < MIN_PARALLEL_SIZE or x.dtype.kind not in "f":
            return xp.tanh(x), (TanhCache(x) if tape else None)
        y = xp.empty(x.shape, dtype=x.dtype)
        chunked(_tanh_into, y, x)
        return y, (TanhCache(x) if tape else None)

    def apply_vjp(self, params: Array, cache: TanhCache, y_bar: Array,
                  params_bar: Array | None = None) -> Array:
        return tanh_derivative(cache.x, y_bar)

    def bind(self, params: Array) -> BoundLayer:
        """:class:`BoundTanh`: small real host arrays skip the dispatch of :meth:`apply` and
        :meth:`apply_vjp` (bitwise the same results)."""
        return BoundTanh(self, params)

    def apply_jvp(self, params: Array, cache: TanhCache, x_dot: Array,
                  params_dot: Array | None = None) -> Array:
        """Unchecked :meth:`jvp`: ``tanh'(x) x_dot`` (:func:`tanh_derivative`)."""
        return tanh_derivative(cache.x, x_dot)

    def _second_term(self, cache: TanhCache, q: Array) -> Array:
        """``tanh''(x) q = -2 tanh(x) tanh'(x) q`` (``tanh'`` from :func:`tanh_derivative`)."""
        xp = get_array_module(cache.x)
        return -2 * xp.tanh(cache.x) * tanh_derivative(cache.x, q)



def _small_real_host(x: Array) -> bool:
    """A NumPy float array of at least one dimension below ``MIN_PARALLEL_SIZE`` entries: the
    case where tanh and its derivative take the plain in-place path on one core."""
    return type(x) is np.ndarray and x.dtype.kind == "f" and 0 < x.ndim and \
        x.size < MIN_PARALLEL_SIZE


class BoundTanh(BoundLayer):
    """:class:`Tanh` bound (:meth:`Tanh.bind`): on small real host arrays the forward is
    ``numpy.tanh`` and the VJP :func:`tanh_derivative`'s in-place arithmetic, called directly;
    anything else goes through :meth:`Tanh.apply` / :meth:`Tanh.apply_vjp`. Bitwise the same
    results either way."""

    __slots__ = ()

    def __call__(self, x: Array, t: Any = None) -> Array:
        if _small_real_host(x):
            return np.tanh(x)
        return self.kernel.apply(self.params, x, t, None, False)[0]

    def forward(self, x: Array, t: Any = None) -> tuple[Array, TanhCache]:
        if _small_real_host(x):
            return np.tanh(x), tuple.__new__(TanhCache, (x,))  # TanhCache(x), in C
        return self.kernel.apply(self.params, x, t, None, True)

    def vjp_into(self, cache: TanhCache, y_bar: Array, params_bar: Array | None = None) -> Array:
        x = cache.x
        if _small_real_host(x) and type(y_bar) is np.ndarray and y_bar.dtype == x.dtype:
            out = np.empty(x.shape, dtype=x.dtype)
            _tanh_derivative_into(out, x, y_bar)
            return out
        return self.kernel.apply_vjp(self.params, cache, y_bar, params_bar)


class Sigmoid(_Elementwise):
    """Logistic sigmoid ``y = 1 / (1 + exp(-x))``, stable for large ``|x|``.

    ``dy/dx = y (1 - y)``, evaluated as ``sigmoid(x) sigmoid(-x)`` from the cache.
    """

    analytic = True

    def apply(self, params: Array, x: Array, t: Any = None, rng: np.random.Generator | None = None,
              tape: bool = True) -> tuple[Array, SigmoidCache | None]:
        y, y_c = _sigmoid_pair(x)
        return y, SigmoidCache(y, y_c)

    def apply_vjp(self, params: Array, cache: SigmoidCache, y_bar: Array,
                  params_bar: Array | None = None) -> Array:
        return y_bar * (cache.y * cache.y_c)

    def apply_jvp(self, params: Array, cache: SigmoidCache, x_dot: Array,
                  params_dot: Array | None = None) -> Array:
        """Unchecked :meth:`jvp`: ``x_dot * y (1 - y)``."""
        return x_dot * (cache.y * cache.y_c)

    def _second_term(self, cache: SigmoidCache, q: Array) -> Array:
        """``sigmoid''(x) q = y y_c (y_c - y) q`` with ``y_c = 1 - y`` from the cache."""
        return q * ((cache.y * cache.y_c) * (cache.y_c - cache.y))


class Softplus(_Elementwise):
    """Softplus ``y = log(1 + exp(beta x)) / beta`` (no overflow for large ``x``).

    Parameters
    ----------
    beta : float, default 1
        Sharpness, ``beta > 0``; ``dy/dx = sigmoid(beta x)``.
    """

    analytic = True

    def __init__(self, beta: float = 1.0) -> None:
        self.beta = finite_float("beta", beta)
        if self.beta <= 0:
            raise ValueError(f"`beta` must be > 0, got {beta!r}; use e.g. Softplus(beta=1.0).")

    def apply(self, params: Array, x: Array, t: Any = None, rng: np.random.Generator | None = None,
              tape: bool = True) -> tuple[Array, LogisticCache | None]:
        z = self.beta * x
        return softplus(z) / self.beta, (LogisticCache(sigmoid(z)) if tape else None)

    def apply_vjp(self, params: Array, cache: LogisticCache, y_bar: Array,
                  params_bar: Array | None = None) -> Array:
        return y_bar * cache.s

    def apply_jvp(self, params: Array, cache: LogisticCache, x_dot: Array,
                  params_dot: Array | None = None) -> Array:
        """Unchecked :meth:`jvp`: ``x_dot * sigmoid(beta x)``."""
        return x_dot * cache.s

    def _second_term(self, cache: LogisticCache, q: Array) -> Array:
        """``softplus_beta''(x) q = beta s (1 - s) q``, ``s = sigmoid(beta x)`` (cached; ``1 - s``
        loses relative accuracy where ``s -> 1``, absolute error ``eps``)."""
        return q * (self.beta * cache.s * (1 - cache.s))


class ELU(_Elementwise):
    """Exponential linear unit [1]_: ``y = x`` for ``x > 0``, ``alpha (exp(x) - 1)`` otherwise.

    The branch is chosen by ``x.real``, so the complex step is exact away from ``x = 0`` (and at
    0 for ``alpha = 1``, where ELU is continuously differentiable).

    Parameters
    ----------
    alpha : float, default 1.0
        Saturation value ``-alpha`` for ``x -> -inf``; ``alpha >= 0``.
    """

    analytic = True

    def __init__(self, alpha: float = 1.0) -> None:
        self.alpha = finite_float("alpha", alpha)
        if self.alpha < 0:
            raise ValueError(f"`alpha` must be >= 0, got {alpha!r}; use e.g. ELU(alpha=1.0).")

    def apply(self, params: Array, x: Array, t: Any = None, rng: np.random.Generator | None = None,
              tape: bool = True) -> tuple[Array, ELUCache | None]:
        xp = get_array_module(x)
        positive = x.real > 0
        negative_part = xp.where(positive, xp.zeros((), dtype=x.dtype), x)
        y = xp.where(positive, x, self.alpha * xp.expm1(negative_part))
        if not tape:
            return y, None
        slope = xp.where(positive, xp.ones((), dtype=x.dtype), self.alpha * xp.exp(negative_part))
        return y, ELUCache(slope)

    def apply_vjp(self, params: Array, cache: ELUCache, y_bar: Array,
                  params_bar: Array | None = None) -> Array:
        return y_bar * cache.slope

    def apply_jvp(self, params: Array, cache: ELUCache, x_dot: Array,
                  params_dot: Array | None = None) -> Array:
        """Unchecked :meth:`jvp`: ``x_dot * slope``."""
        return x_dot * cache.slope

    def _second_term(self, cache: ELUCache, q: Array) -> Array:
        """``ELU''(x) q``: 0 where ``x > 0``, ``alpha exp(x) q = slope q`` elsewhere.

        The branch is read from the cached slope (``slope == 1`` exactly on ``x > 0``); the
        measure-zero points ``x <= 0`` with ``alpha exp(x) == 1`` in floating point (``x = -log
        alpha``; for ``alpha = 1``, ``-1.1e-16 < x <= 0``, where ELU is not twice
        differentiable anyway) are taken as the right branch.
        """
        xp = get_array_module(q)
        slope = cache.slope
        return xp.where(slope == 1, xp.zeros((), dtype=slope.dtype), slope) * q
