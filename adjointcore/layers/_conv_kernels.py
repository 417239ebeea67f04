"""The im2col / col2im kernels of :mod:`adjointcore.layers.conv`: the column matrix of a
channel-major input, the two input-gradient algorithms, and the layout helpers.

Stateless functions on NumPy and CuPy arrays; the geometry helpers and the phase-plane copies they
call are in :mod:`adjointcore.layers._im2col`.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..backend import Array, get_array_module
from ._im2col import (
    Geometry,
    accumulate_windows,
    columns_are_view,
    crop_hw,
    pad_channel_major,
    phase_accumulate,
    phase_columns,
    phase_plan,
    windows,
)

__all__ = ["from_planes", "column_source", "columns", "channel_major", "input_grad_transposed",
           "input_grad_col2im"]


def from_planes(shape: Sequence[int], geom: Geometry, groups: int,
                out_hw: tuple[int, int]) -> bool:
    """Whether the columns of a channel-major input of ``shape`` (C, N, H, W) are built from
    its phase planes (:func:`~adjointcore.layers._im2col.phase_columns`, which read the
    unpadded input with any strides): they are not a free view of the padded input (1x1
    kernels, degenerate sizes) and :func:`~adjointcore.layers._im2col.phase_plan` accepts both
    axes."""
    c, n, h, w = shape
    (kh, kw), (sh, sw), (ph, pw) = geom
    ho, wo = out_hw
    padded = (c, n, h + 2 * ph, w + 2 * pw)
    strides = (n * padded[2] * padded[3], padded[2] * padded[3], padded[3], 1)  # C-contiguous
    if columns_are_view(padded, strides, geom, out_hw,
                        (groups, c // groups * kh * kw, n * ho * wo)):
        return False
    return phase_plan(kh, sh, ph, h, ho) is not None and phase_plan(kw, sw, pw, w, wo) is not None


def column_source(x: Array, extra: Array | float | None, dtype: Any, geom: Geometry,
                  groups: int, out_hw: tuple[int, int]) -> Array:
    """``x`` (N, C, H, W) channel-major and unpadded, ``(C[+1], N, H, W)``, with the constant
    channel ``extra`` appended (:class:`ConcatConv2d`): what :func:`columns` reads and a
    cache keeps.

    A transposed view of ``x`` (no copy) where the columns come from phase planes
    (:func:`from_planes`) and nothing is appended or cast; otherwise one C-contiguous copy, so
    that columns which are a view of it stay free (as the padded copy was before).
    """
    n, c, h, w = x.shape
    if extra is None and dtype == x.dtype and from_planes((c, n, h, w), geom, groups, out_hw):
        return x.transpose(1, 0, 2, 3)
    return pad_channel_major(x, (0, 0), extra=extra, dtype=dtype)


def columns(x_cm: Array, geom: Geometry, groups: int, out_hw: tuple[int, int]) -> Array:
    """Column matrix ``(groups, C/groups*kh*kw, N*Ho*Wo)`` of the channel-major, *unpadded*
    input ``x_cm`` (C, N, H, W), any strides; ``geom`` includes the padding.

    Built from phase planes (:func:`~adjointcore.layers._im2col.phase_columns`: long
    contiguous copies) where :func:`from_planes` says so; otherwise a window view of the
    zero-padded input (C-contiguous; ``x_cm`` itself when it is C-contiguous and there is no
    padding), reshaped: a view where the reshape needs no copy, else one copy. Same values and
    layout either way.
    """
    c, n, _, _ = x_cm.shape
    (kh, kw), (ph, pw), (ho, wo) = geom.kernel, geom.padding, out_hw
    shape = (groups, c // groups * kh * kw, n * ho * wo)
    if from_planes(x_cm.shape, geom, groups, out_hw):
        return phase_columns(x_cm, geom, out_hw).reshape(shape)  # type: ignore[union-attr]
    x_padded = x_cm if (not (ph or pw) and x_cm.flags.c_contiguous) else \
        pad_channel_major(x_cm.transpose(1, 0, 2, 3), (ph, pw))
    view = windows(x_padded, geom, out_hw)              # (C, N, kh, kw, Ho, Wo)
    return view.transpose(0, 2, 3, 1, 4, 5).reshape(shape)


def channel_major(y_bar: Array, groups: int) -> Array:
    """``y_bar`` (N, O, Ho, Wo) as the matrix ``(groups, O/groups, N*Ho*Wo)`` (one copy)."""
    n, o, ho, wo = y_bar.shape
    return y_bar.transpose(1, 0, 2, 3).reshape(groups, o // groups, n * ho * wo)


def input_grad_transposed(w: Array, y_bar: Array, geom: Geometry, groups: int,
                          x_hw: tuple[int, int]) -> Array:
    """Stride-1 input gradient as a correlation of padded ``y_bar`` with the flipped kernel.

    The im2col of the padded ``y_bar`` is built straight from ``y_bar`` through phase planes
    (no padded copy) where the geometry allows; same values and layout either way.
    Returns ``x_bar`` channel-major, shape (C_total, N, H, W).
    """
    xp = get_array_module(y_bar)
    o, cg, kh, kw = w.shape
    (ph, pw) = geom.padding
    n = y_bar.shape[0]
    pad = (kh - 1 - ph, kw - 1 - pw)
    unit = Geometry(geom.kernel, (1, 1), pad)
    y_cols = columns(y_bar.transpose(1, 0, 2, 3), unit, groups, x_hw)  # (g, Og*kh*kw, N*H*W)
    w_t = w.reshape(groups, o // groups, cg, kh, kw)[:, :, :, ::-1, ::-1]
    w_t = w_t.transpose(0, 2, 1, 3, 4).reshape(groups, cg, o // groups * kh * kw)
    x_bar = xp.matmul(w_t, y_cols)                                    # (g, Cg, N*H*W)
    return x_bar.reshape(groups * cg, n, x_hw[0], x_hw[1])


def input_grad_col2im(w: Array, y_mat: Array, geom: Geometry, groups: int,
                      padded_shape: Sequence[int], out_hw: tuple[int, int],
                      x_hw: tuple[int, int]) -> Array:
    """General input gradient: ``cols_bar = W^T @ Y_bar`` then col2im; channel-major output.

    col2im goes through phase planes where the geometry allows
    (:func:`~adjointcore.layers._im2col.phase_accumulate`, bitwise the same sums); the result is
    then a transposed view of a C-contiguous NCHW array, so the caller's NCHW copy is free.
    """
    xp = get_array_module(y_mat)
    o, cg, kh, kw = w.shape
    c_total, n, hp, wp = padded_shape
    w_mat = w.reshape(groups, o // groups, cg * kh * kw)
    cols_bar = xp.matmul(w_mat.transpose(0, 2, 1), y_mat)             # (g, Cg*kh*kw, N*L)
    x_bar = phase_accumulate(cols_bar.reshape(c_total, kh, kw, -1), geom, out_hw, x_hw)
    if x_bar is not None:                                             # (N, C_total, H, W)
        return x_bar.transpose(1, 0, 2, 3)
    cols_bar = cols_bar.reshape(c_total, kh, kw, n, *out_hw).transpose(0, 3, 1, 2, 4, 5)
    x_bar_padded = accumulate_windows(cols_bar, (hp, wp), geom)       # (C_total, N, Hp, Wp)
    return crop_hw(x_bar_padded, geom.padding, x_hw)
