"""Parameter bookkeeping of layers built from sub-layers ("blocks") with one flat ``params``.

Shared by :class:`nets.lm_resnet.ResNetStack` / :class:`~nets.lm_resnet.LMStack` (blocks
``f_n``) and :class:`nets._stochastic.ShakeShake` (two branches): the blocks' parameter vectors
are concatenated in order, block ``i`` owning ``params[offsets[i]:offsets[i + 1]]`` with named
views ``"i.name"``. Block labels in messages are ``where.format(i + start)``, e.g.
``"blocks[{}]"`` (0-based) or ``"branch{}"`` (``start=1``).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from adjointcore.backend import Array, get_array_module
from adjointcore.errors import ShapeError
from adjointcore.layers.base import check_child_layer, init_child, prefixed_shapes

__all__ = ["check_block", "block_offsets", "split_params", "concat_param_bars", "block_context",
           "check_residual_shape", "init_blocks", "prefixed_shapes"]


def check_block(block: Any, where: str) -> int:
    """Validate a duck-typed, time-independent layer used as a residual function; return its
    ``n_params``."""
    n = check_child_layer(block, where)
    if getattr(block, "time_dependent", False):
        raise TypeError(f"{where} ({type(block).__name__}) is time-dependent; a residual stack "
                        f"gives every block its own parameters, so the layer index plays the "
                        f"role of time. Use a time-independent block (e.g. Linear, Conv2d).")
    return n


def block_context(block: Any, where: str, rng: Any) -> dict[str, Any]:
    """``{"rng": rng}`` for a block with ``needs_rng`` (error if missing), else ``{}``."""
    if not getattr(block, "needs_rng", False):
        return {}
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"{where} ({type(block).__name__}) needs random numbers: pass "
                        f"forward(params, x, rng=np.random.default_rng(seed)), got rng={rng!r}.")
    return {"rng": rng}


def check_residual_shape(fu: Array, u: Array, where: str) -> None:
    if tuple(fu.shape) != tuple(u.shape):
        raise ShapeError(f"{where} must preserve the shape of its input: got input "
                         f"{tuple(u.shape)} and output {tuple(fu.shape)}. Put projections "
                         f"(ChannelPad, strided Conv2d) between stacks, not inside a block.")


def init_blocks(blocks: Sequence[Any], rng: np.random.Generator, dtype: DTypeLike,
                where: str = "blocks[{}]", start: int = 0) -> list[Array]:
    """Each block's ``init(rng, dtype)`` in order (the same Generator), as NumPy arrays."""
    parts = []
    for i, block in enumerate(blocks):
        parts.append(init_child(block, rng, dtype, int(block.n_params), where.format(i + start)))
    return parts


def block_offsets(blocks: Sequence[Any], where: str = "blocks[{}]",
                  start: int = 0) -> tuple[int, ...]:
    """Validate the blocks (:func:`check_block`); return ``(0, n_0, n_0 + n_1, ..., total)``."""
    sizes = [check_block(b, where.format(i + start)) for i, b in enumerate(blocks)]
    return tuple(np.cumsum([0] + sizes).tolist())


def split_params(params: Array, offsets: Sequence[int]) -> list[Array]:
    """Each block's slice ``params[offsets[i]:offsets[i + 1]]`` (views, in order)."""
    return [params[lo:hi] for lo, hi in zip(offsets[:-1], offsets[1:], strict=True)]


def concat_param_bars(bars: Sequence[Array | None], offsets: Sequence[int], like: Array,
                      where: str = "blocks[{}]", start: int = 0) -> Array:
    """Flat ``params_bar`` from the blocks' gradients (inverse of :func:`split_params`).

    ``None`` stands for a block without parameters (a length-0 gradient); a block *with*
    parameters that returned ``None`` although asked for them is a protocol error.

    Parameters
    ----------
    bars : sequence of ndarray or None
        One gradient per block.
    offsets : tuple of int
        From :func:`block_offsets`.
    like : ndarray
        Fixes backend and dtype of the empty parts (e.g. the output cotangent).
    """
    xp = get_array_module(like)
    parts = []
    for i, (b, lo, hi) in enumerate(zip(bars, offsets[:-1], offsets[1:], strict=True)):
        if b is None:
            if hi > lo:
                raise TypeError(f"{where.format(i + start)}.vjp returned params_bar=None with "
                                f"need_params=True; it must return an array of length "
                                f"{hi - lo}.")
            b = xp.zeros(0, dtype=like.dtype)
        parts.append(b.reshape(-1))
    return xp.concatenate(parts) if parts else xp.zeros(0, dtype=like.dtype)
