"""ResNet and LM-ResNet stacks as layers, with stochastic depth (Lu et al. 2018).

``ResNetStack(blocks)`` computes ``u_{n+1} = u_n + f_n(u_n)`` (forward Euler, ``Delta t = 1``);
``LMStack(blocks)`` the LM-architecture, Lu et al. eq. (1),

    u_1     = u_0 + f_0(u_0)                                          (start-up, n = 0)
    u_{n+1} = (1 - k_n) u_n + k_n u_{n-1} + f_n(u_n),   n = 1, ..., N-1,

with one trainable ``k_n`` per block after the first. Start-up: eq. (1) needs ``u_{-1}``, which
the paper never defines; its stacks begin with a plain residual block, i.e. one forward-Euler
step, the same start-up as :class:`solvers.LMStepper`. Equivalently ``u_{-1} := u_0``, which
makes any ``k_0`` inert, so no ``k_0`` is stored: the ``"k"`` view has ``N - 1`` entries,
``k[n - 1]`` belongs to block ``n``. The two-step map is zero-stable iff ``-1 < k <= 1``
(``rho(z) = (z - 1)(z + k)``; see the :class:`solvers.LMStepper` docstring, which also shows
that for ``k != 0`` the stack is consistent with ``u' = f/(1+k)``, not with ``u' = f``).
``k_init`` outside that range is rejected; trained values are not policed (Lu et al. report them
mostly in ``(-1, 1)``): :func:`zero_stable` reports them.

Stochastic depth (``survival=``, see :mod:`nets._stochastic`) multiplies ``f_n(u_n)`` by a
Bernoulli gate ``eta_n`` in ``mode="train"`` and by ``p_n`` in ``mode="eval"``; for the LM stack
this is Lu et al. sec. 3.2, ``X_{n+1} = (2 + g_n) X_n - (1 + g_n) X_{n-1} + eta_n f(X_n)`` with
``k_n = -(1 + g_n)``: only the residual branch is gated, never the multistep terms. For affine
blocks the train-mode expectation equals the eval output exactly (the gates are independent of
the state they multiply); for nonlinear blocks the eval rule is the usual first-moment
approximation.

VJP (exact, hand-written): with ``s_n`` the gate/scale and ``J_n`` the block Jacobian at ``u_n``,
walking ``n = N-1, ..., 0`` with ``bar u_N = y_bar``::

    bar k_n      = <bar u_{n+1}, u_{n-1} - u_n>
    bar u_n     += (1 - k_n) bar u_{n+1} + s_n J_n^T bar u_{n+1}     (n >= 1)
    bar u_{n-1} += k_n bar u_{n+1}
    bar u_0     += bar u_1 + s_0 J_0^T bar u_1                      (start-up)

and ``bar theta_n`` from each block's VJP of ``s_n bar u_{n+1}`` (zero for a dropped block).

References
----------
.. [1] Y. Lu, A. Zhong, Q. Li, B. Dong, "Beyond finite layer neural networks: bridging deep
   architectures and numerical differential equations", ICML 2018, eq. (1), sec. 3.2.
.. [2] G. Huang, Y. Sun, Z. Liu, D. Sedra, K. Weinberger, "Deep networks with stochastic
   depth", ECCV 2016.
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
from ._stochastic import (
    GATE_LEVELS,
    ShakeShake,
    ShakeShakeCache,
    check_mode,
    draw_gates,
    linear_survival,
    resolve_survival,
)

__all__ = ["ResNetStack", "LMStack", "StackCache", "zero_stable", "linear_survival",
           "ShakeShake", "ShakeShakeCache", "K_INIT_PAPER"]

K_INIT_PAPER = (-0.1, 0.0)   # Lu et al. sec. 2.2: k_n ~ U[-0.1, 0]


class StackCache(NamedTuple):
    """Cache of :class:`ResNetStack` / :class:`LMStack`.

    Attributes
    ----------
    block_caches : tuple
        One per block; ``None`` where the block was dropped (train mode, ``gate_level="batch"``).
    scales : tuple
        Factor applied to ``f_n(u_n)``: ``None`` (1), a float (eval: ``p_n``; 0.0 = dropped) or
        an array of shape ``(batch, 1, ...)`` (per-sample gates).
    gates : ndarray or None
        Host float64 0/1 gates drawn in train mode, shape ``(N,)`` or ``(N, batch)``.
    states : tuple
        ``u_0, ..., u_{N-1}`` (LMStack; the ``k`` gradient needs them), ``()`` for ResNetStack.
    """
    block_caches: tuple[Any, ...]
    scales: tuple[Any, ...]
    gates: NDArray[np.float64] | None
    states: tuple[Array, ...]


def zero_stable(k: Any) -> Array:
    """Boolean mask of the LM coefficients satisfying the root condition ``-1 < k <= 1``
    (a NumPy or CuPy array, on the backend of ``k``)."""
    if not hasattr(k, "dtype"):
        k = np.asarray(k)
    return (k > -1.0) & (k <= 1.0)


# -- the step maps and their adjoints (module level: small, and replaceable by mutation tests) ----
def _euler_step(u: Array, fu: Array | None) -> Array:
    """``u + fu`` (``fu is None``: dropped block)."""
    return u if fu is None else u + fu


def _euler_vjp(u_next_bar: Array, g: Array | None) -> Array:
    """``bar u`` of ``u + f(u)`` given ``g = s J^T bar u_next`` (``None``: dropped block)."""
    return u_next_bar if g is None else u_next_bar + g


_startup_step = _euler_step      # u_1 = u_0 + f_0(u_0)
_startup_vjp = _euler_vjp


def _lm_step(u: Array, u_prev: Array, k: Any, fu: Array | None) -> Array:
    """``(1 - k) u + k u_prev + fu``."""
    v = (1 - k) * u + k * u_prev
    return v if fu is None else v + fu


def _lm_k_bar(u_next_bar: Array, u: Array, u_prev: Array) -> Array:
    """``d/dk <u_next_bar, u_next> = <u_next_bar, u_prev - u>`` (0-d array)."""
    xp = get_array_module(u_next_bar)
    return xp.sum(u_next_bar * (u_prev - u))


# -- stacks ---------------------------------------------------------------------------------------
class ResNetStack(Layer):
    """``N`` residual steps ``u_{n+1} = u_n + s_n f_n(u_n)``, optionally with stochastic depth.

    Parameters
    ----------
    blocks : sequence of layer objects
        Residual functions ``f_n`` (shape-preserving, time-independent), e.g.
        ``Sequential(Conv2d, BatchNorm, ReLU, Conv2d)`` or :class:`ShakeShake`. Parameters are
        concatenated in order, named views ``"n.name"``.
    survival : None, float or sequence of float
        ``None``: plain stack (``s_n = 1``). A float ``p_L`` in (0, 1]: linear rule
        ``p_n = 1 - (n+1)/N (1 - p_L)``. A sequence: the ``N`` survival probabilities.
    mode : {"train", "eval"}
        Stochastic depth only: "train" draws gates ``eta_n ~ B(p_n)`` from ``rng=``; "eval"
        scales ``f_n`` by ``p_n`` (deterministic, no ``rng``). Blocks keep their own modes.
    gate_level : {"batch", "sample"}
        One gate per block per call (Huang et al.; a dropped block is not evaluated) or one per
        sample (``f_n`` is evaluated and multiplied by a 0/1 mask).

    Notes
    -----
    ``forward(params, x, rng=None)`` draws all gates with one ``rng.random`` call before the
    first block, then runs the blocks in order, passing ``rng`` to blocks with ``needs_rng``.
    """

    _has_k = False

    def __init__(self, blocks: Sequence[Any], survival: float | Sequence[float] | None = None,
                 mode: str = "train", gate_level: str = "batch") -> None:
        blocks = tuple(blocks)
        if not blocks:
            raise ValueError("`blocks` is empty; pass at least one residual function.")
        self.blocks = blocks
        self._offsets = block_offsets(blocks)
        self.survival = resolve_survival(survival, len(blocks))
        self.mode = check_mode(mode)
        if gate_level not in GATE_LEVELS:
            raise ValueError(f"`gate_level` must be 'batch' or 'sample', got {gate_level!r}.")
        self.gate_level = gate_level

    # -- structure ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.blocks)

    @property
    def stochastic(self) -> bool:
        """True when forward draws stochastic-depth gates (train mode with ``survival``)."""
        return self.survival is not None and self.mode == "train"

    @property
    def needs_rng(self) -> bool:  # type: ignore[override]  # read-only: derived from the blocks
        return self.stochastic or any(getattr(b, "needs_rng", False) for b in self.blocks)

    @property
    def analytic(self) -> bool:  # type: ignore[override]  # read-only: derived from the blocks
        return all(getattr(b, "analytic", False) for b in self.blocks)

    @property
    def n_block_params(self) -> int:
        return self._offsets[-1]

    @property
    def n_k(self) -> int:
        return len(self.blocks) - 1 if self._has_k else 0

    @property
    def n_params(self) -> int:
        return self.n_block_params + self.n_k

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        shapes = prefixed_shapes(self.blocks, self._offsets)
        if self._has_k:
            shapes["k"] = (self.n_k,)
        return shapes

    def init(self, rng: np.random.Generator, dtype: DTypeLike = np.float64) -> NDArray[Any]:
        """Blocks' ``init`` in order with the same ``rng`` (then ``k``, for LMStack)."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(f"`rng` must be a numpy.random.Generator, got {rng!r}; "
                            f"use np.random.default_rng(seed).")
        dtype = as_dtype(dtype)
        parts = init_blocks(self.blocks, rng, dtype) + self._init_k(rng, dtype)
        return np.concatenate(parts)

    def _init_k(self, rng: np.random.Generator, dtype: DTypeLike) -> list[NDArray[Any]]:
        return []

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        shape = tuple(input_shape)
        for i, block in enumerate(self.blocks):
            if hasattr(block, "output_shape") and tuple(block.output_shape(shape)) != shape:
                raise ValueError(f"blocks[{i}] maps {shape} to {block.output_shape(shape)}; "
                                 f"residual blocks must preserve the shape.")
        return shape

    def block_params(self, params: Array) -> list[Array]:
        """Each block's slice of ``params`` (views)."""
        return split_params(params, self._offsets)

    # -- evaluation --------------------------------------------------------------------------
    def _scales(self, gates: NDArray[np.float64] | None, x: Array) -> tuple[Any, ...]:
        """Per-block factor on ``f_n`` (see :class:`StackCache`)."""
        n_blocks = len(self.blocks)
        if self.survival is None:
            return (None,) * n_blocks
        if self.mode == "eval":
            return tuple(None if p == 1.0 else float(p) for p in self.survival)
        if self.gate_level == "batch":
            # train mode: gates drawn
            return tuple(None if g == 1.0 else 0.0 for g in gates)  # type: ignore[union-attr]
        xp = get_array_module(x)
        shape = (-1,) + (1,) * (x.ndim - 1)
        dtype = real_dtype(x.dtype)
        # train mode: gates drawn
        return tuple(xp.asarray(g.astype(dtype).reshape(shape)) for g in gates)  # type: ignore[union-attr]

    def forward(self, params: Array, x: Array, rng: np.random.Generator | None = None,
                **context: Any) -> tuple[Array, StackCache]:
        """``(u_N, StackCache)``; ``rng`` is required when :attr:`needs_rng`."""
        unknown = set(context) - {"t"}
        if unknown:
            raise TypeError(f"unknown context {sorted(unknown)}; forward accepts only rng= "
                            f"(and t=, which is ignored: blocks are time-independent).")
        check_params("params", params, self.n_params, owner=type(self).__name__)
        check_array("x", x, ndim=tuple(range(1, 6)))
        gates = None
        if self.stochastic:
            if not isinstance(rng, np.random.Generator):
                raise TypeError(f"{type(self).__name__}(mode='train', survival=...) draws "
                                f"stochastic-depth gates: pass forward(params, x, "
                                f"rng=np.random.default_rng(seed)), got rng={rng!r}; or use "
                                f"mode='eval'.")
            # stochastic: survival is set
            gates = draw_gates(rng, self.survival, int(x.shape[0]), self.gate_level)  # type: ignore[arg-type]
        scales = self._scales(gates, x)
        k = self.views(params)["k"] if self._has_k else None
        caches, states = [], []
        u_prev, u = None, x
        for n, (block, p) in enumerate(zip(self.blocks, self.block_params(params), strict=True)):
            fu, cache = self._block_forward(n, block, p, u, scales[n], rng)
            caches.append(cache)
            if k is None:
                u_next = _euler_step(u, fu)
            else:
                states.append(u)
                u_next = _startup_step(u, fu) if n == 0 else _lm_step(u, u_prev, k[n - 1], fu)
            u_prev, u = u, u_next
        return u, StackCache(tuple(caches), scales, gates, tuple(states))

    @staticmethod
    def _block_forward(n: int, block: Any, p: Array, u: Array, scale: Any,
                       rng: np.random.Generator | None) -> tuple[Array | None, Any]:
        """``(s_n f_n(u), cache)``; ``(None, None)`` for a dropped block."""
        if isinstance(scale, float) and scale == 0.0:
            return None, None
        fu, cache = block.forward(p, u, **block_context(block, f"blocks[{n}]", rng))
        check_residual_shape(fu, u, f"blocks[{n}]")
        return (fu if scale is None else scale * fu), cache

    def vjp(self, params: Array, cache: StackCache, y_bar: Array,
            need_params: bool = True) -> tuple[Array, Array | None]:
        """Exact VJP w.r.t. the input, every block's parameters (and every ``k_n``)."""
        check_params("params", params, self.n_params, owner=type(self).__name__)
        if not isinstance(cache, StackCache) or len(cache.block_caches) != len(self.blocks):
            raise TypeError(f"`cache` must be the StackCache returned by "
                            f"{type(self).__name__}.forward for this stack, got "
                            f"{type(cache).__name__}.")
        xp = get_array_module(y_bar)
        k = self.views(params)["k"] if self._has_k else None
        slices = self.block_params(params)
        n_blocks = len(self.blocks)
        p_bars, k_bars = [None] * n_blocks, [None] * self.n_k
        bar, pending = y_bar, None          # bar u_{n+1}; k_{n+1} bar u_{n+2} awaiting u_n
        for n in reversed(range(n_blocks)):
            g, p_bars[n] = self._block_vjp(n, slices[n], cache, bar, need_params, xp)
            if k is None:
                bar = _euler_vjp(bar, g)
                continue
            if n == 0:
                u_bar = _startup_vjp(bar, g)
            else:
                u, u_prev = cache.states[n], cache.states[n - 1]
                if need_params:
                    k_bars[n - 1] = _lm_k_bar(bar, u, u_prev)
                u_bar = _euler_vjp((1 - k[n - 1]) * bar, g)
            u_bar = u_bar if pending is None else pending + u_bar
            pending = None if n == 0 else k[n - 1] * bar
            bar = u_bar
        if not need_params:
            return bar, None
        blocks_bar = concat_param_bars(p_bars, self._offsets, y_bar)
        if not self.n_k:
            return bar, blocks_bar
        return bar, xp.concatenate([blocks_bar, xp.stack(k_bars).astype(y_bar.dtype, copy=False)])

    def _block_vjp(self, n: int, p: Array, cache: StackCache, bar: Array, need_params: bool,
                   xp: Any) -> tuple[Array | None, Array | None]:
        """``(s_n J_n^T bar, s_n theta_n-bar)``; ``(None, zeros)`` for a dropped block (a
        ``None`` parameter gradient is checked by :func:`~nets._blocks.concat_param_bars`)."""
        block, scale = self.blocks[n], cache.scales[n]
        size = self._offsets[n + 1] - self._offsets[n]
        if cache.block_caches[n] is None:
            return None, (xp.zeros(size, dtype=bar.dtype) if need_params else None)
        return call_vjp(block, p, cache.block_caches[n], bar if scale is None else scale * bar,
                        need_params)

    def __repr__(self) -> str:
        inner = ", ".join(repr(b) for b in self.blocks)
        extra = "" if self.survival is None else (
            f", survival={np.round(self.survival, 6).tolist()}, mode={self.mode!r}, "
            f"gate_level={self.gate_level!r}")
        return f"{type(self).__name__}([{inner}]{extra})"


class LMStack(ResNetStack):
    """LM-architecture stack (Lu et al. eq. (1)) with trainable ``k_n`` (view ``"k"``, N-1 values).

    Parameters
    ----------
    blocks, survival, mode, gate_level
        As :class:`ResNetStack`.
    k_init : (float, float) or float
        ``k_n ~ U[low, high]`` drawn from the ``init`` Generator after the blocks' parameters
        (default Lu et al.'s ``(-0.1, 0.0)``), or a constant. Must lie in ``(-1, 1]``, where the
        LM step is zero-stable; a ``ValueError`` otherwise.

    Notes
    -----
    Start-up ``u_1 = u_0 + f_0(u_0)`` (module docstring). With every ``k_n = 0`` the stack equals
    :class:`ResNetStack` over the same blocks bitwise (``(1 - 0) u + 0 u_prev`` is exactly ``u``).
    """

    _has_k = True

    def __init__(self, blocks: Sequence[Any], k_init: float | tuple[float, float] = K_INIT_PAPER,
                 survival: float | Sequence[float] | None = None, mode: str = "train",
                 gate_level: str = "batch") -> None:
        super().__init__(blocks, survival=survival, mode=mode, gate_level=gate_level)
        self.k_init = _check_k_init(k_init)

    def _init_k(self, rng: np.random.Generator, dtype: DTypeLike) -> list[NDArray[Any]]:
        low, high = self.k_init
        k = np.full(self.n_k, low) if low == high else rng.uniform(low, high, self.n_k)
        return [k.astype(dtype)]


def _check_k_init(k_init: Any) -> tuple[float, ...]:
    """``(low, high)`` with ``-1 < low <= high <= 1``; a scalar ``c`` becomes ``(c, c)``."""
    def bad(why: str) -> ValueError:
        return ValueError(f"`k_init` {why}, got {k_init!r}. The LM step u_(n+1) = (1-k) u_n + "
                          f"k u_(n-1) + f is zero-stable iff -1 < k <= 1 (roots 1 and -k); use "
                          f"an interval inside (-1, 1], e.g. Lu et al.'s (-0.1, 0.0).")
    bounds: tuple[float, ...]
    if isinstance(k_init, (int, float, np.floating, np.integer)) and not isinstance(k_init, bool):
        bounds = (float(k_init), float(k_init))
    else:
        try:
            bounds = tuple(float(v) for v in k_init)
        except (TypeError, ValueError):
            raise bad("must be a float or a (low, high) pair") from None
        if len(bounds) != 2:
            raise bad("must be a float or a (low, high) pair")
    low, high = bounds
    if not all(math.isfinite(v) for v in bounds) or low > high:
        raise bad("must be finite with low <= high")
    if not (-1.0 < low and high <= 1.0):
        raise bad("lies outside the zero-stability range (-1, 1]")
    return bounds
