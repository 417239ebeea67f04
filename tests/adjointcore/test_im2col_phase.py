"""Phase-plane im2col / col2im equal the strided window kernels bit for bit.

The conv layer picks the phase-plane kernels whenever :func:`phase_plan` accepts the geometry,
so these tests pin them against the reference kernels they replace (:func:`windows`,
:func:`accumulate_windows`) on random data with signed zeros, infinities and NaNs.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from adjointcore.layers._im2col import (
    accumulate_windows,
    crop_hw,
    make_geometry,
    output_hw,
    pad_channel_major,
    phase_accumulate,
    phase_columns,
    phase_plan,
    windows,
)

GEOMETRIES = [  # (kernel, stride, padding, H, W)
    ((3, 3), (1, 1), (1, 1), 6, 5), ((3, 3), (2, 2), (1, 1), 8, 8), ((3, 3), (2, 2), (1, 1), 7, 9),
    ((2, 3), (2, 1), (1, 2), 6, 5), ((5, 5), (2, 2), (2, 2), 9, 10), ((3, 1), (3, 1), (1, 0), 9, 4),
    ((4, 4), (2, 2), (1, 1), 8, 6),
]


def _data(rng, shape, dtype):
    x = rng.standard_normal(shape).astype(dtype)
    flat = x.reshape(-1)
    flat[::17] = -0.0
    flat[5::53] = np.inf
    flat[11::71] = np.nan
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kernel,stride,padding,h,w", GEOMETRIES)
def test_phase_kernels_equal_strided_kernels_bitwise(dtype, kernel, stride, padding, h, w):
    rng = np.random.default_rng(sum(kernel) + 10 * sum(stride) + h * w)
    geom = make_geometry(kernel, stride, padding)
    ho, wo = output_hw(geom, (h, w), "test")
    assert phase_plan(kernel[0], stride[0], padding[0], h, ho) is not None
    c, n = 3, 2
    x = _data(rng, (n, c, h, w), dtype)
    x_padded = pad_channel_major(x, padding)                       # (C, N, Hp, Wp)
    view = windows(x_padded, geom, (ho, wo))                       # (C, N, kh, kw, Ho, Wo)
    ref_cols = view.transpose(0, 2, 3, 1, 4, 5).reshape(c, kernel[0], kernel[1], n * ho * wo)
    cols = phase_columns(x.transpose(1, 0, 2, 3), geom, (ho, wo))
    assert cols.tobytes() == np.ascontiguousarray(ref_cols).tobytes()

    cols_bar = _data(rng, (c, kernel[0], kernel[1], n * ho * wo), dtype)
    hp, wp = h + 2 * padding[0], w + 2 * padding[1]
    strided = cols_bar.reshape(c, kernel[0], kernel[1], n, ho, wo).transpose(0, 3, 1, 2, 4, 5)
    ref = crop_hw(accumulate_windows(strided, (hp, wp), geom), padding, (h, w))   # (C, N, H, W)
    got = phase_accumulate(cols_bar.copy(), geom, (ho, wo), (h, w))               # (N, C, H, W)
    assert got.tobytes() == np.ascontiguousarray(ref.transpose(1, 0, 2, 3)).tobytes()


def test_phase_plan_rejects_planes_that_cannot_hold_the_image():
    """ceil(H / s) must fit the output grid: stride 2, no padding, k 1 on H = 5 gives Ho = 3 =
    ceil(5/2) (accepted); k 3 on H = 5 gives Ho = 2 < 3 (rejected, strided path)."""
    assert phase_plan(1, 2, 0, 5, 3) is not None
    assert phase_plan(3, 2, 0, 5, 2) is None
    assert list(itertools.chain(*phase_plan(3, 2, 1, 8, 4))) == [1, -1, 0, 0, 1, 0]
