"""Validation of loss cotangents shared by the discrete and continuous adjoint drivers."""
from __future__ import annotations

from typing import Any

from ..backend import Array, get_array_module
from ..errors import check_array

__all__ = ["check_cotangents"]


def check_cotangents(name: str, bars: Any, like: Array, shape: tuple, fix: str = "") -> Array:
    """Validate cotangents ``bars`` of states like ``like`` and cast them to ``like.dtype``.

    Parameters
    ----------
    name : str
        Argument name for messages (e.g. ``"y_bars"``).
    bars : ndarray
        Cotangents; must live on the same backend (NumPy or CuPy) as ``like``.
    like : ndarray
        A primal state (e.g. ``y0``): the gradients take its dtype, so float64 cotangents of a
        float32 solve give float32 gradients, as the forward pass does.
    shape : tuple
        Expected shape of ``bars``.
    fix : str
        Suggestion appended to a shape error.

    Returns
    -------
    ndarray
        ``bars`` (no copy when the dtype already matches).

    Raises
    ------
    TypeError
        ``bars`` on another backend than ``like``, or complex cotangents of a real state.
    ShapeError
        Wrong shape.
    """
    check_array(name, bars, shape=shape, fix=fix)
    xp = get_array_module(like)
    if get_array_module(bars) is not xp:
        raise TypeError(f"`{name}` is a {type(bars).__module__}.{type(bars).__name__} but the "
                        f"state is a {type(like).__module__}.{type(like).__name__}; move it "
                        f"with adjointcore.backend.to_device(...) first.")
    if bars.dtype == like.dtype:
        return bars
    if not xp.can_cast(bars.dtype, like.dtype, casting="same_kind"):
        raise TypeError(f"`{name}` has dtype {bars.dtype} but the state has dtype "
                        f"{like.dtype}; pass real cotangents for a real state.")
    return bars.astype(like.dtype)
