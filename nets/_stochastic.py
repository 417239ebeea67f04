"""Stochastic training of residual stacks read as SDE discretisations (Lu et al. 2018, sec. 3).

Two pieces, used by :mod:`nets.lm_resnet`:

* the **stochastic-depth** schedule and gates: block ``n`` (0-based, ``N`` blocks) survives with
  probability ``p_n = 1 - (n + 1)/N (1 - p_L)`` (the linear decay rule of Huang et al. 2016; Lu et
  al. sec. 3.2 quote it as the *drop* probability ``l/L (1 - p_L)`` with ``l = n + 1``), so the
  last block survives with probability ``p_L``. In training the residual branch is multiplied by
  a Bernoulli gate ``eta_n ~ B(p_n)``; at test time by its mean ``p_n``, the drift of the SDE
  ``dX = p(t) f(X) dt + sqrt(p(t)(1 - p(t))) f(X) dB`` of which the training network is a weak
  (Delta t = 1) approximation;
* :class:`ShakeShake`, Gastaldi's two-branch residual function
  ``g(x) = c1 f1(x) + c2 f2(x)``, ``c1 = dt/2 + sqrt(dt) (alpha - 1/2)``,
  ``c2 = dt/2 - sqrt(dt) (alpha - 1/2)``, ``alpha ~ U[0, 1]`` (Lu et al. eq. (4); ``dt = 1`` is
  the original ``alpha f1 + (1 - alpha) f2``). Used as a block ``f_n`` of a
  :class:`~nets.lm_resnet.ResNetStack` (or :class:`~nets.lm_resnet.LMStack`), a step
  ``X + g(X)`` is one Euler-Maruyama step of
  ``dX = (f1 + f2)/2 dt + (f1 - f2)/sqrt(12) dB`` (the increment has mean ``dt (f1+f2)/2`` and
  variance ``dt (f1-f2)^2 / 12`` exactly, since ``Var U[0,1] = 1/12``). Eval mode uses
  ``alpha = 1/2``.

All random numbers come from the ``numpy.random.Generator`` passed as ``rng=`` (drawn on the host,
moved to the input's device), and what was drawn is kept in the cache, so the VJP is
deterministic and a finite-difference check reproduces the forward with an identically seeded
Generator.

References
----------
.. [1] Y. Lu, A. Zhong, Q. Li, B. Dong, "Beyond finite layer neural networks: bridging deep
   architectures and numerical differential equations", ICML 2018, sec. 3.1-3.2.
.. [2] G. Huang, Y. Sun, Z. Liu, D. Sedra, K. Weinberger, "Deep networks with stochastic
   depth", ECCV 2016.
.. [3] X. Gastaldi, "Shake-shake regularization", ICLR Workshop 2017.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import DTypeLike, NDArray

from adjointcore.backend import Array, as_dtype, get_array_module, real_dtype
from adjointcore.errors import check_array, check_params
from adjointcore.layers.base import Layer
from adjointcore.layers.binding import call_vjp

from ._blocks import (
    block_context,
    block_offsets,
    check_residual_shape,
    concat_param_bars,
    init_blocks,
    prefixed_shapes,
    split_params,
)

__all__ = ["linear_survival", "resolve_survival", "draw_gates", "check_mode", "ShakeShake",
           "ShakeShakeCache", "MODES", "GATE_LEVELS"]

MODES = ("train", "eval")
GATE_LEVELS = ("batch", "sample")


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"`mode` must be 'train' or 'eval', got {mode!r}.")
    return mode


# -- stochastic depth -----------------------------------------------------------------------------
def linear_survival(n_blocks: int, p_last: float) -> np.ndarray:
    """Survival probabilities of the linear decay rule, ``p_n = 1 - (n+1)/N (1 - p_last)``.

    Parameters
    ----------
    n_blocks : int
        ``N >= 1``.
    p_last : float in (0, 1]
        Survival probability ``p_L`` of the last block (Huang et al. and Lu et al. use 0.5; Lu et
        al. use 0.8 for LM-ResNet56).

    Returns
    -------
    ndarray, shape (N,), float64
        Decreasing from ``1 - (1 - p_last)/N`` to ``p_last``.
    """
    if isinstance(n_blocks, bool) or not isinstance(n_blocks, (int, np.integer)) or n_blocks < 1:
        raise ValueError(f"`n_blocks` must be an integer >= 1, got {n_blocks!r}.")
    p_last = _check_survival_value("p_last", p_last)
    n = np.arange(1, n_blocks + 1, dtype=np.float64)
    return 1.0 - n / n_blocks * (1.0 - p_last)


def _check_survival_value(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not (0.0 < float(value) <= 1.0):
        raise ValueError(f"`{name}` must be a survival probability in (0, 1], got {value!r}; "
                         f"the linear rule of Huang et al. uses p_last = 0.5.")
    return float(value)


def resolve_survival(survival: float | Sequence[float] | None,
                     n_blocks: int) -> NDArray[np.float64] | None:
    """``None`` (no stochastic depth), or a float64 array of ``N`` survival probabilities.

    ``survival`` is ``None``; a float ``p_L`` (linear rule :func:`linear_survival`); or a
    sequence of ``N`` values in (0, 1].
    """
    if survival is None:
        return None
    if isinstance(survival, (int, float, np.floating, np.integer)) and not isinstance(survival,
                                                                                       bool):
        return linear_survival(n_blocks, survival)
    values = np.asarray(survival, dtype=np.float64) if not isinstance(survival, str) else None
    if values is None or values.shape != (n_blocks,):
        raise ValueError(f"`survival` must be None, a float p_last in (0, 1] or a sequence of "
                         f"{n_blocks} probabilities (one per block), got {survival!r}.")
    if not np.all((values > 0.0) & (values <= 1.0)):
        raise ValueError(f"`survival` values must lie in (0, 1], got {values.tolist()}.")
    return values


def draw_gates(rng: np.random.Generator, survival: NDArray[np.float64], batch: int,
               level: str) -> np.ndarray:
    """Bernoulli gates ``eta_n ~ B(p_n)`` on the host (float64 0/1).

    One ``rng.random`` call: shape ``(N,)`` for ``level="batch"`` (a block is kept or dropped for
    the whole mini-batch, Huang et al.) or ``(N, batch)`` for ``level="sample"``.
    """
    shape = (len(survival),) if level == "batch" else (len(survival), batch)
    u = rng.random(shape)
    p = survival if level == "batch" else survival[:, None]
    return (u < p).astype(np.float64)


# -- shake-shake ----------------------------------------------------------------------------------
class ShakeShakeCache(NamedTuple):
    """Cache of :class:`ShakeShake`.

    ``cache1``/``cache2``: the branches' caches; ``alpha``: host float64 array of the forward
    draws (shape ``(batch,)`` or ``(1,)``; ``None`` in eval mode); ``beta``: the backward draws
    (only with ``exact_gradient=False``); ``c1``/``c2``: the coefficients the VJP applies
    (broadcastable to the output, on its device).
    """
    cache1: Any
    cache2: Any
    alpha: NDArray[np.float64] | None
    beta: NDArray[np.float64] | None
    c1: Array | float
    c2: Array | float


class ShakeShake(Layer):
    """Shake-shake residual function ``g(x) = c1 f1(x) + c2 f2(x)`` (no skip connection).

    Parameters
    ----------
    branch1, branch2 : layer objects
        Shape-preserving layers of the same output shape; parameters ``"0.*"`` then ``"1.*"``.
    mode : {"train", "eval"}
        "train" draws ``alpha ~ U[0, 1]``; "eval" uses ``alpha = 1/2`` (no ``rng`` needed).
    dt : float > 0
        Step of Lu et al. eq. (4): ``c1 = dt/2 + sqrt(dt)(alpha - 1/2)``,
        ``c2 = dt/2 - sqrt(dt)(alpha - 1/2)``; ``dt = 1`` is Gastaldi's scheme.
    level : {"sample", "batch"}
        One ``alpha`` per sample (Gastaldi's best "image" level, default) or per mini-batch.
    exact_gradient : bool
        True (default): the VJP is the exact gradient of the sampled forward map (it uses the
        forward's ``alpha``). False: Gastaldi's "shake-shake" backward, which replaces ``alpha``
        by an independent ``beta ~ U[0, 1]`` drawn in forward (after ``alpha``) and kept in the
        cache. That VJP is **not** the gradient of any forward map drawn here (it is a random
        reweighting of the two branch gradients); gradient checks apply only to the default.

    Notes
    -----
    ``forward(params, x, rng=None)`` draws ``alpha`` (then ``beta``) from ``rng`` before calling
    the branches, which get the same ``rng`` if they need one.
    """

    def __init__(self, branch1: Any, branch2: Any, mode: str = "train", dt: float = 1.0,
                 level: str = "sample", exact_gradient: bool = True) -> None:
        self.branches = (branch1, branch2)
        self._offsets = block_offsets(self.branches, "branch{}", start=1)
        self.mode = check_mode(mode)
        if isinstance(dt, bool) or not isinstance(dt, (int, float, np.floating)) or \
                not (math.isfinite(dt) and dt > 0):
            raise ValueError(f"`dt` must be a positive finite float, got {dt!r}; dt = 1 is the "
                             f"original shake-shake.")
        self.dt = float(dt)
        if level not in ("sample", "batch"):
            raise ValueError(f"`level` must be 'sample' or 'batch', got {level!r}.")
        self.level = level
        if not isinstance(exact_gradient, (bool, np.bool_)):
            raise TypeError(f"`exact_gradient` must be True or False, got {exact_gradient!r}.")
        self.exact_gradient = bool(exact_gradient)

    @property
    def needs_rng(self) -> bool:  # type: ignore[override]  # read-only: derived from the branches
        return self.mode == "train" or any(getattr(b, "needs_rng", False) for b in self.branches)

    @property
    def analytic(self) -> bool:  # type: ignore[override]  # read-only: derived from the branches
        return all(getattr(b, "analytic", False) for b in self.branches)

    @property
    def n_params(self) -> int:
        return self._offsets[-1]

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return prefixed_shapes(self.branches, self._offsets)

    def init(self, rng: np.random.Generator, dtype: DTypeLike = np.float64) -> NDArray[Any]:
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"`rng` must be a numpy.random.Generator, got {rng!r}; "
                            f"use np.random.default_rng(seed).")
        return np.concatenate(init_blocks(self.branches, rng, as_dtype(dtype), "branch{}", 1))

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(input_shape)

    def coefficients(self, alpha: Any, like: Array) -> tuple[Array, Array]:
        """``(c1, c2)`` for draws ``alpha`` (host array), shaped to broadcast against ``like``."""
        xp = get_array_module(like)
        shift = math.sqrt(self.dt) * (np.asarray(alpha, dtype=np.float64) - 0.5)
        shape = (-1,) + (1,) * (like.ndim - 1)
        dtype = real_dtype(like.dtype)
        c1 = xp.asarray((0.5 * self.dt + shift).astype(dtype).reshape(shape))
        c2 = xp.asarray((0.5 * self.dt - shift).astype(dtype).reshape(shape))
        return c1, c2

    def forward(self, params: Array, x: Array, rng: np.random.Generator | None = None,
                **context: Any) -> tuple[Array, ShakeShakeCache]:
        """``(c1 f1(x) + c2 f2(x), ShakeShakeCache)``."""
        check_params("params", params, self.n_params, owner="ShakeShake")
        check_array("x", x, ndim=tuple(range(1, 6)))
        alpha = beta = None
        if self.mode == "train":
            if not isinstance(rng, np.random.Generator):
                raise TypeError(f"ShakeShake(mode='train') draws alpha ~ U[0,1]: pass "
                                f"forward(params, x, rng=np.random.default_rng(seed)), got "
                                f"rng={rng!r}; or use mode='eval' (alpha = 1/2).")
            size = x.shape[0] if self.level == "sample" else 1
            alpha = rng.random(size)
            if not self.exact_gradient:
                beta = rng.random(size)
        outs, caches = [], []
        parts = split_params(params, self._offsets)
        for i, (branch, p) in enumerate(zip(self.branches, parts, strict=True)):
            ctx = block_context(branch, f"branch{i + 1}", rng)
            f, cache = branch.forward(p, x, **ctx)
            check_residual_shape(f, x, f"branch{i + 1}")
            outs.append(f)
            caches.append(cache)
        if alpha is None:
            c1 = c2 = 0.5 * self.dt
        else:
            c1, c2 = self.coefficients(alpha, x)
        y = c1 * outs[0] + c2 * outs[1]
        if beta is not None:
            c1, c2 = self.coefficients(beta, x)
        return y, ShakeShakeCache(caches[0], caches[1], alpha, beta, c1, c2)

    def vjp(self, params: Array, cache: ShakeShakeCache, y_bar: Array,
            need_params: bool = True) -> tuple[Array, Array | None]:
        """Branch VJPs of ``c1 y_bar`` and ``c2 y_bar``, summed (``c`` from the cache)."""
        check_params("params", params, self.n_params, owner="ShakeShake")
        x_bar, bars = None, []
        for branch, p, c, bc in zip(self.branches, split_params(params, self._offsets),
                                    (cache.c1, cache.c2), (cache.cache1, cache.cache2),
                                    strict=True):
            xb, pb = call_vjp(branch, p, bc, c * y_bar, need_params)
            x_bar = xb if x_bar is None else x_bar + xb
            bars.append(pb)
        if not need_params:
            return x_bar, None
        return x_bar, concat_param_bars(bars, self._offsets, y_bar, "branch{}", start=1)

    def __repr__(self) -> str:
        return (f"ShakeShake({self.branches[0]!r}, {self.branches[1]!r}, mode={self.mode!r}, "
                f"dt={self.dt}, level={self.level!r}, exact_gradient={self.exact_gradient})")
