"""Window geometry and the im2col / col2im kernels behind convolution and pooling.

All kernels work on NumPy and CuPy arrays alike: windows are *views* built with
``xp.lib.stride_tricks.as_strided`` (no copy until a caller reshapes them), and the only loops
run over the ``kh * kw`` kernel offsets (and ``sh * sw`` phases), never over pixels or batch
elements.

Layout used by :mod:`adjointcore.layers.conv`: the padded input is stored channel-major,
``(C, N, Hp, Wp)``, so that the column matrix ``(C*kh*kw, N*Ho*Wo)`` is one contiguous copy of
a window view and every convolution reduces to one (or one per group) large GEMM.

Phase planes (:func:`phase_columns`, :func:`phase_accumulate`)
--------------------------------------------------------------
A window view copies (or, in col2im, adds) rows of only ``Wo`` elements, and NumPy's strided
kernels pay per row (binary ufuncs on non-contiguous operands even go through buffers), which
dominates small images. When the geometry allows it (:func:`phase_plan`), the unpadded image is
instead split into ``sh*sw`` *phase planes* ``P[py, px][n, u, v] = x[n, sh*u + py, sw*v + px]``,
each stored with exactly the window-grid shape ``(Ho, Wo)``. Kernel offset ``(a, b)`` of window
``(i, j)`` reads pixel ``(sh*(i + da) + py, sw*(j + db) + px)`` with
``da, py = divmod(a - ph, sh)`` (likewise along W), i.e. plane ``(py, px)`` shifted by
``(da, db)``. In flat ``(n, i, j)`` indexing that shift is the constant ``da*Wo + db``, so every
offset is one copy (im2col) or one add (col2im) of long contiguous rows of ``N*Ho*Wo`` elements.
Windows whose shifted target leaves the ``(Ho, Wo)`` grid wrap into a neighbouring row or image;
exactly those windows read / write the zero padding, so im2col zeroes them afterwards and col2im
zeroes them in its (private) column buffer beforehand. The col2im result is bitwise that of
:func:`accumulate_windows`: every pixel receives the same terms in the same kernel-offset order,
starting from ``+0.0``; the extra ``+0.0`` terms from the zeroed windows change nothing (a running
sum that starts at ``+0.0`` is never ``-0.0``, and ``s + 0.0 == s`` for every other ``s``, NaN
and inf included).

References
----------
.. [1] K. Chellapilla, S. Puri, P. Simard, "High performance convolutional neural networks for
   document processing", IWFHR 2006 (the im2col + GEMM formulation).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from ..backend import Array, get_array_module
from ..errors import ShapeError

__all__ = ["Geometry", "as_pair", "make_geometry", "output_length", "output_hw", "pad_hw",
           "crop_hw", "pad_channel_major", "windows", "accumulate_windows", "phase_plan",
           "phase_columns", "phase_accumulate", "reshape_is_view", "columns_are_view"]


class Geometry(NamedTuple):
    """Static window geometry: pairs ``(along H, along W)`` of ints."""
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]


def as_pair(name: str, value: int | Sequence[int], *, minimum: int) -> tuple[int, int]:
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


def make_geometry(kernel_size: int | Sequence[int], stride: int | Sequence[int],
                  padding: int | Sequence[int]) -> Geometry:
    """Validated :class:`Geometry` from int-or-pair arguments."""
    return Geometry(as_pair("kernel_size", kernel_size, minimum=1),
                    as_pair("stride", stride, minimum=1),
                    as_pair("padding", padding, minimum=0))


def output_length(n: int, k: int, s: int, p: int) -> int:
    """Number of window positions along one axis: ``(n + 2p - k) // s + 1`` (may be <= 0)."""
    return (n + 2 * p - k) // s + 1


def window_counts(geom: Geometry, hw: Sequence[int]) -> tuple[int, int]:
    """``(Ho, Wo)`` for input size ``hw``, unchecked (the fast paths' :func:`output_hw`)."""
    (kh, kw), (sh, sw), (ph, pw) = geom
    return output_length(hw[0], kh, sh, ph), output_length(hw[1], kw, sw, pw)


def output_hw(geom: Geometry, hw: Sequence[int], owner: str) -> tuple[int, int]:
    """Output spatial size ``(Ho, Wo)`` for input size ``hw``; ShapeError if the input is too small.
    """
    h, w = int(hw[0]), int(hw[1])
    (kh, kw), _, (ph, pw) = geom
    if h + 2 * ph < kh or w + 2 * pw < kw:
        raise ShapeError(
            f"{owner}: the padded input of spatial size {h + 2 * ph}x{w + 2 * pw} (`x` is "
            f"{h}x{w}, padding {ph, pw}) is smaller than the kernel {kh}x{kw}; use a larger "
            f"input, more padding or a smaller kernel_size.")
    return window_counts(geom, (h, w))


def pad_hw(x: Array, padding: tuple[int, int], value: float = 0.0) -> Array:
    """Pad the last two axes of ``x`` by ``padding = (ph, pw)`` on both sides with ``value``."""
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    xp = get_array_module(x)
    out = xp.full(x.shape[:-2] + (x.shape[-2] + 2 * ph, x.shape[-1] + 2 * pw), value,
                  dtype=x.dtype)
    out[..., ph:ph + x.shape[-2], pw:pw + x.shape[-1]] = x
    return out


def pad_channel_major(x: Array, padding: tuple[int, int], extra: Array | float | None = None,
                      dtype: DTypeLike | None = None) -> Array:
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


def windows(x: Array, geom: Geometry, out_hw: tuple[int, int]) -> Array:
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


def accumulate_windows(cols: Array, padded_hw: Sequence[int], geom: Geometry,
                       dtype: DTypeLike | None = None) -> Array:
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


def crop_hw(x: Array, padding: tuple[int, int], hw: Sequence[int]) -> Array:
    """Inverse of :func:`pad_hw` for the last two axes (a view)."""
    ph, pw = padding
    return x[..., ph:ph + hw[0], pw:pw + hw[1]]


# -- phase planes ---------------------------------------------------------------------------------
def phase_plan(k: int, s: int, p: int, n_in: int, n_out: int) -> list[tuple[int, int]] | None:
    """Phase and shift of each kernel offset along one axis, or None if phase planes do not apply.

    Unpadded pixel ``s*i + a - p`` of window ``i`` and offset ``a`` is pixel ``s*(i + shift) +
    phase`` with ``shift, phase = divmod(a - p, s)``: row ``i + shift`` of phase plane ``phase``.
    The planes have the window-grid length ``n_out``, so they must hold every pixel:
    ``ceil(n_in / s) <= n_out`` (true e.g. for ``p >= (k - 1) / 2`` when ``s`` divides ``n_in``).

    Returns
    -------
    list of (phase, shift) pairs, one per kernel offset ``a = 0 .. k-1``; or None.
    """
    if -(-n_in // s) > n_out:
        return None
    return [((a - p) % s, (a - p) // s) for a in range(k)]


def reshape_is_view(shape: Sequence[int], strides: Sequence[int], new_shape: Sequence[int]) -> bool:
    """Whether a C-order ``reshape`` of an array with ``shape`` and ``strides`` to ``new_shape``
    can return a view instead of a copy.

    A port of NumPy's ``_attempt_nocopy_reshape`` (size-1 axes ignored; adjacent axes merge when
    ``stride[k] == shape[k+1] * stride[k+1]``); empty arrays count as views. The kernels use it to
    keep the exact layout of a column matrix that an older code path returned as a view.
    """
    if 0 in tuple(shape):
        return True
    old = [(int(d), int(s)) for d, s in zip(shape, strides, strict=True) if d != 1]
    new = [int(d) for d in new_shape]
    oi, oj, ni, nj = 0, 1, 0, 1
    while ni < len(new) and oi < len(old):
        np_, op = new[ni], old[oi][0]
        while np_ != op:
            if np_ < op:
                np_ *= new[nj]
                nj += 1
            else:
                op *= old[oj][0]
                oj += 1
        for ok in range(oi, oj - 1):
            if old[ok][1] != old[ok + 1][0] * old[ok + 1][1]:
                return False
        ni, nj = nj, nj + 1
        oi, oj = oj, oj + 1
    return True


def columns_are_view(padded_shape: Sequence[int], padded_strides: Sequence[int], geom: Geometry,
                     out_hw: tuple[int, int], new_shape: Sequence[int]) -> bool:
    """Whether ``windows(x, geom, out_hw).transpose(0, 2, 3, 1, 4, 5).reshape(new_shape)`` is a
    view (no copy) for a channel-major padded ``x`` (C, N, Hp, Wp) of this shape and strides.
    """
    (kh, kw), (sh, sw) = geom.kernel, geom.stride
    c, n = padded_shape[:2]
    s_c, s_n, s_h, s_w = padded_strides
    shape = (c, kh, kw, n) + tuple(out_hw)
    strides = (s_c, s_h, s_w, s_n, s_h * sh, s_w * sw)
    return reshape_is_view(shape, strides, new_shape)


def _outside(shift: int, n: int) -> list[slice]:
    """Slices of window indices ``i`` in ``[0, n)`` with ``i + shift`` outside ``[0, n)``."""
    if shift < 0:
        return [slice(0, min(-shift, n))]
    if shift > 0:
        return [slice(max(n - shift, 0), n)]
    return []


def _zero_outside(block: Array, da: int, db: int) -> None:
    """Zero the windows of ``block`` (..., Ho, Wo) whose shifted position leaves the grid."""
    for rows in _outside(da, block.shape[-2]):
        block[..., rows, :] = 0
    for cols in _outside(db, block.shape[-1]):
        block[..., :, cols] = 0


def _phase_lengths(n_in: int, s: int) -> list[int]:
    """Number of pixels of each phase ``0 .. s-1`` along an axis of length ``n_in``."""
    return [-(-(n_in - q) // s) for q in range(s)]


CHUNK_BYTES = 1 << 19
"""Target size of one kernel offset's slice of a channel chunk in the phase kernels: on the CPU
they loop over channel chunks so that the copies / adds of all offsets reuse data still in cache
(512 KiB measured best on a 1 MiB-L2 core; it only changes speed, never a result)."""


def _channel_chunks(xp: Any, c: int, bytes_per_channel: int) -> list[slice]:
    """Slices of ``range(c)`` of about ``CHUNK_BYTES / bytes_per_channel`` channels each (one
    slice for CuPy, where chunking would only add kernel launches)."""
    if xp is not np:
        return [slice(0, c)]
    step = max(1, CHUNK_BYTES // max(bytes_per_channel, 1))
    return [slice(c0, min(c0 + step, c)) for c0 in range(0, c, step)]


def phase_columns(x: Array, geom: Geometry, out_hw: tuple[int, int]) -> Array | None:
    """im2col through phase planes: ``cols[c, a, b, n*Ho*Wo + i*Wo + j] = x_pad[c, n, sh*i + a,
    sw*j + b]``, with zero padding; the same values as a copy of :func:`windows`.

    Parameters
    ----------
    x : ndarray, shape (C, N, H, W)
        The *unpadded* input, channel-major; any strides (e.g. a transposed NCHW array or the
        interior of a padded one).
    geom : Geometry
        Including the padding.
    out_hw : pair of int
        ``(Ho, Wo)``.

    Returns
    -------
    ndarray, shape (C, kh, kw, N*Ho*Wo), C-contiguous; or None when :func:`phase_plan` rejects
    the geometry (use :func:`windows`).
    """
    (kh, kw), (sh, sw), (ph, pw) = geom
    c, n, h, w = x.shape
    ho, wo = int(out_hw[0]), int(out_hw[1])
    rows, cols = phase_plan(kh, sh, ph, h, ho), phase_plan(kw, sw, pw, w, wo)
    if rows is None or cols is None:
        return None
    xp = get_array_module(x)
    m = n * ho * wo
    out = xp.empty((c, kh, kw, m), dtype=x.dtype)
    # The offset with shift 0 of a phase ("home", a = phase + padding) copies its phase plane
    # verbatim, so its block of `out` serves as the plane; separate planes only if one is missing.
    home_a = {py: a for a, (py, da) in enumerate(rows) if da == 0}
    home_b = {px: b for b, (px, db) in enumerate(cols) if db == 0}
    need_a = [py for py in range(sh) if any(q == py and abs(d) < ho for q, d in rows)]
    need_b = [px for px in range(sw) if any(q == px and abs(d) < wo for q, d in cols)]
    homes = set(need_a) <= home_a.keys() and set(need_b) <= home_b.keys()
    planes = None if homes else xp.empty((c, sh, sw, n, ho, wo), dtype=x.dtype)
    hus, wus = _phase_lengths(h, sh), _phase_lengths(w, sw)

    def plane(blocks: Array, cs: slice, py: int, px: int) -> Array:
        # allocated unless `homes`
        return blocks[:, home_a[py], home_b[px]] if homes else planes[cs, py, px]  # type: ignore[index]

    for cs in _channel_chunks(xp, c, m * x.dtype.itemsize):    # keep each chunk cache-resident
        blocks = out[cs].reshape(-1, kh, kw, n, ho, wo)
        for py in need_a:
            for px in need_b:
                target, hu, wu = plane(blocks, cs, py, px), hus[py], wus[px]
                target[:, :, :hu, :wu] = x[cs, :, py::sh, px::sw]
                target[:, :, hu:, :] = 0                              # pixels beyond the image
                target[:, :, :hu, wu:] = 0
        for a, (py, da) in enumerate(rows):
            for b, (px, db) in enumerate(cols):
                if abs(da) >= ho or abs(db) >= wo:      # every window reads padding
                    blocks[:, a, b] = 0
                    continue
                if homes and a == home_a[py] and b == home_b[px]:
                    continue
                delta = da * wo + db
                lo, hi = max(0, -delta), min(m, m - delta)
                source = plane(blocks, cs, py, px).reshape(-1, m)
                out[cs, a, b, lo:hi] = source[:, lo + delta:hi + delta]
                _zero_outside(blocks[:, a, b], da, db)   # windows that wrapped read padding
    return out


def phase_accumulate(cols: Array, geom: Geometry, out_hw: tuple[int, int],
                     hw: Sequence[int]) -> Array | None:
    """col2im through phase planes, cropped and NCHW: bitwise ``crop_hw(accumulate_windows(...))``.

    Parameters
    ----------
    cols : ndarray, shape (C, kh, kw, N*Ho*Wo), C-contiguous
        Window values, ``cols[c, a, b, n*Ho*Wo + i*Wo + j]`` belongs to padded pixel
        ``(sh*i + a, sw*j + b)`` of image ``n``. **Overwritten** (windows that land in the
        padding are zeroed).
    geom : Geometry
    out_hw : pair of int
        ``(Ho, Wo)``.
    hw : pair of int
        ``(H, W)`` of the unpadded image.

    Returns
    -------
    ndarray, shape (N, C, H, W), C-contiguous; or None when :func:`phase_plan` rejects the
    geometry (use :func:`accumulate_windows`).
    """
    (kh, kw), (sh, sw), (ph, pw) = geom
    ho, wo = int(out_hw[0]), int(out_hw[1])
    h, w = int(hw[0]), int(hw[1])
    rows, cols_plan = phase_plan(kh, sh, ph, h, ho), phase_plan(kw, sw, pw, w, wo)
    if rows is None or cols_plan is None:
        return None
    xp = get_array_module(cols)
    cols = xp.ascontiguousarray(cols)                    # the reshapes below must be views
    c, m = cols.shape[0], cols.shape[-1]
    n = m // (ho * wo)
    blocks = cols.reshape(c, kh, kw, n, ho, wo)
    planes = xp.empty((c, sh, sw, m), dtype=cols.dtype)
    zero = cols.dtype.type(0)
    for cs in _channel_chunks(xp, c, m * cols.dtype.itemsize):  # keep each chunk cache-resident
        chunk, started = planes[cs], set()
        for a, (py, da) in enumerate(rows):              # kernel-offset order, as in
            if abs(da) >= ho:                            # accumulate_windows
                continue
            for b, (px, db) in enumerate(cols_plan):
                if abs(db) >= wo:
                    continue
                _zero_outside(blocks[cs, a, b], da, db)
                delta = da * wo + db
                lo, hi = max(0, -delta), min(m, m - delta)
                target = chunk[:, py, px, lo + delta:hi + delta]
                if (py, px) in started:
                    xp.add(target, cols[cs, a, b, lo:hi], out=target)
                else:                                    # first term: 0 + t == t + 0
                    started.add((py, px))
                    chunk[:, py, px, :lo + delta] = 0
                    chunk[:, py, px, hi + delta:] = 0
                    xp.add(cols[cs, a, b, lo:hi], zero, out=target)
        for py in range(sh):
            for px in range(sw):
                if (py, px) not in started:
                    chunk[:, py, px] = 0
    planes = planes.reshape(c, sh, sw, n, ho, wo)
    out = xp.empty((n, c, h, w), dtype=cols.dtype)
    for py, hu in enumerate(_phase_lengths(h, sh)):
        for px, wu in enumerate(_phase_lengths(w, sw)):
            if hu > 0 and wu > 0:
                out[:, :, py::sh, px::sw] = planes[:, py, px, :, :hu, :wu].transpose(1, 0, 2, 3)
    return out
