"""Window geometry and the im2col / col2im kernels behind convolution and pooling.

All kernels work on NumPy and CuPy arrays alike: windows are *views* built with
``xp.lib.stride_tricks.as_strided`` (no copy until a caller reshapes them), and the only loops
run over the ``kh * kw`` kernel offsets, never over pixels or batch elements.

Layout used by :mod:`adjointcore.layers.conv`: the padded input is stored channel-major,
``(C, N, Hp, Wp)``, so that the column matrix ``(C*kh*kw, N*Ho*Wo)`` is one contiguous copy of
a window view and every convolution reduces to one (or one per group) large GEMM.

References
----------
.. [1] K. Chellapilla, S. Puri, P. Simard, "High performance convolutional neural networks for
   document processing", IWFHR 2006 (the im2col + GEMM formulation).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..backend import get_array_module
from ..errors import ShapeError

__all__ = ["Geometry", "as_pair", "make_geometry", "output_length", "output_hw", "pad_hw",
           "crop_hw", "pad_channel_major", "windows", "accumulate_windows"]


class Geometry(NamedTuple):
    """Static window geometry: pairs ``(along H, along W)`` of ints."""
    kernel: tuple
    stride: tuple
    padding: tuple


def as_pair(name: str, value, *, minimum: int) -> tuple:
    """Return ``value`` (int or pair of ints) as a pair of ints ``>= minimum``.

    Raises
    ------
    ValueError
        Naming ``name`` and showing ``value``.
    """
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    ok = len(pair) == 2 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= minimum for v in pair)
    if not ok:
        raise ValueError(f"`{name}` must be an integer >= {minimum} or a pair of them "
                         f"(along H, W), got {value!r}.")
    return int(pair[0]), int(pair[1])


def make_geometry(kernel_size, stride, padding) -> Geometry:
    """Validated :class:`Geometry` from int-or-pair arguments."""
    return Geometry(as_pair("kernel_size", kernel_size, minimum=1),
                    as_pair("stride", stride, minimum=1),
                    as_pair("padding", padding, minimum=0))


def output_length(n: int, k: int, s: int, p: int) -> int:
    """Number of window positions along one axis: ``(n + 2p - k) // s + 1`` (may be <= 0)."""
    return (n + 2 * p - k) // s + 1


def output_hw(geom: Geometry, hw, owner: str) -> tuple:
    """Output spatial size ``(Ho, Wo)`` for input size ``hw``; ShapeError if the input is too small.
    """
    h, w = int(hw[0]), int(hw[1])
    (kh, kw), (sh, sw), (ph, pw) = geom
    if h + 2 * ph < kh or w + 2 * pw < kw:
        raise ShapeError(
            f"{owner}: the padded input of spatial size {h + 2 * ph}x{w + 2 * pw} (`x` is "
            f"{h}x{w}, padding {ph, pw}) is smaller than the kernel {kh}x{kw}; use a larger "
            f"input, more padding or a smaller kernel_size.")
    return output_length(h, kh, sh, ph), output_length(w, kw, sw, pw)


def pad_hw(x, padding, value=0.0):
    """Pad the last two axes of ``x`` by ``padding = (ph, pw)`` on both sides with ``value``."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    xp = get_array_module(x)
    out = xp.full(x.shape[:-2] + (x.shape[-2] + 2 * ph, x.shape[-1] + 2 * pw), value,
                  dtype=x.dtype)
    out[..., ph:ph + x.shape[-2], pw:pw + x.shape[-1]] = x
    return out


def pad_channel_major(x, padding, extra=None, dtype=None):
    """Zero-pad NCHW ``x`` and store it channel-major: ``(C[+1], N, H + 2ph, W + 2pw)``.

    One copy does the transpose, the padding and (for :class:`ConcatConv2d`) the constant
    channel ``extra`` appended after the last channel (inside the padding border only, exactly as
    if the concatenated tensor had been zero-padded).

    Parameters
    ----------
    x : ndarray, shape (N, C, H, W)
    padding : pair of int
    extra : scalar or 0-d array, optional
        Value of an appended constant channel.
    dtype : dtype, optional
        Output dtype (default ``x.dtype``).

    Returns
    -------
    ndarray, shape (C + (extra is not None), N, Hp, Wp)
    """
    xp = get_array_module(x)
    n, c, h, w = x.shape
    ph, pw = padding
    c_out = c + (extra is not None)
    out_shape = (c_out, n, h + 2 * ph, w + 2 * pw)
    dtype = x.dtype if dtype is None else dtype
    out = xp.zeros(out_shape, dtype=dtype) if (ph or pw) else xp.empty(out_shape, dtype=dtype)
    out[:c, :, ph:ph + h, pw:pw + w] = x.transpose(1, 0, 2, 3)
    if extra is not None:
        out[c, :, ph:ph + h, pw:pw + w] = extra
    return out


def windows(x, geom: Geometry, out_hw):
    """Strided view of all windows of the last two axes of ``x`` (no copy).

    Parameters
    ----------
    x : ndarray, shape (..., Hp, Wp)
        Already padded.
    geom : Geometry
        Only ``kernel`` and ``stride`` are used.
    out_hw : pair of int
        Number of window positions ``(Ho, Wo)``.

    Returns
    -------
    view, shape (..., kh, kw, Ho, Wo)
        ``view[..., a, b, i, j] = x[..., i*sh + a, j*sw + b]``. Read-only use only.
    """
    xp = get_array_module(x)
    (kh, kw), (sh, sw) = geom.kernel, geom.stride
    s_h, s_w = x.strides[-2], x.strides[-1]
    shape = x.shape[:-2] + (kh, kw) + tuple(out_hw)
    strides = x.strides[:-2] + (s_h, s_w, s_h * sh, s_w * sw)
    return xp.lib.stride_tricks.as_strided(x, shape=shape, strides=strides)


def accumulate_windows(cols, padded_hw, geom: Geometry, dtype=None):
    """Adjoint of :func:`windows` (col2im): scatter-add window values back onto the image.

    Loops over the ``kh * kw`` kernel offsets only; each offset is one vectorised strided add,
    which also handles overlapping windows (stride < kernel).

    Parameters
    ----------
    cols : ndarray, shape (..., kh, kw, Ho, Wo)
        May be a broadcast view.
    padded_hw : pair of int
        ``(Hp, Wp)`` of the padded image.
    geom : Geometry

    Returns
    -------
    ndarray, shape (..., Hp, Wp)
        Still padded; the caller crops the border.
    """
    xp = get_array_module(cols)
    (kh, kw), (sh, sw) = geom.kernel, geom.stride
    ho, wo = cols.shape[-2:]
    lead = cols.shape[:-4]
    out = xp.zeros(lead + tuple(padded_hw), dtype=cols.dtype if dtype is None else dtype)
    for a in range(kh):
        for b in range(kw):
            rows = slice(a, a + sh * (ho - 1) + 1, sh)
            columns = slice(b, b + sw * (wo - 1) + 1, sw)
            out[..., rows, columns] += cols[..., a, b, :, :]
    return out


def crop_hw(x, padding, hw):
    """Inverse of :func:`pad_hw` for the last two axes (a view)."""
    ph, pw = padding
    return x[..., ph:ph + hw[0], pw:pw + hw[1]]
