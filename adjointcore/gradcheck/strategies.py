"""Hypothesis strategies for gradient property tests (requires ``hypothesis``).

Design rules (see ``shared/notes/verification-checkpointing.md`` sec. 1.5): values bounded, finite
and without subnormals; directions of unit norm; kinks (ReLU at 0, ties of a max) excluded by
construction rather than by ``assume``, so no example is wasted; randomness from drawn seeds
(never global state).

Examples
--------
>>> from hypothesis import given, settings
>>> from adjointcore.gradcheck import strategies as gs
>>> @settings(max_examples=20, deadline=None)
... @given(x=gs.arrays_float((2, 3)))
... def test_bounded(x):
...     assert abs(x).max() <= 2
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.typing import DTypeLike, NDArray

from ._values import away_from_kinks, distinct_values

__all__ = ["arrays_float", "batch_sizes", "image_shapes", "away_from_kinks", "unit_directions",
           "seeds", "distinct_arrays", "distinct_values", "kink_free_arrays", "scalars"]

SEED_MAX = 2**32 - 1


def _as_strategy(value: Any) -> st.SearchStrategy[Any]:
    return value if isinstance(value, st.SearchStrategy) else st.just(value)


def arrays_float(shape: Sequence[int] | st.SearchStrategy[Any], min_value: float = -2.0,
                 max_value: float = 2.0, dtype: DTypeLike = np.float64,
                 tiny: float = 1e-30) -> st.SearchStrategy[Any]:
    """Arrays of ``shape`` (tuple or strategy of tuples) with finite values in ``[min, max]``.

    No NaN, no infinity, no subnormals; ``dtype`` float64 (default) or float32 (values are
    drawn exactly representable in float32 then). Magnitudes below ``tiny`` are flushed to 0:
    values like 1e-288 are legal floats but make the complex step's imaginary parts
    (``h * x`` with ``h = 1e-30``) underflow, which says nothing about the layer.
    """
    dtype = np.dtype(dtype)
    elements = st.floats(min_value=min_value, max_value=max_value, allow_nan=False,
                         allow_infinity=False, allow_subnormal=False,
                         width=32 if dtype == np.float32 else 64)
    return hnp.arrays(dtype, _as_strategy(shape), elements=elements).map(
        lambda x: np.where(np.abs(x) < tiny, dtype.type(0), x))


def scalars(min_value: float = -2.0, max_value: float = 2.0,
            tiny: float = 1e-30) -> st.SearchStrategy[float]:
    """Finite floats in ``[min, max]`` (e.g. times ``t``), no subnormals, ``|v| < tiny`` -> 0."""
    return st.floats(min_value=min_value, max_value=max_value, allow_nan=False,
                     allow_infinity=False, allow_subnormal=False).map(
        lambda v: 0.0 if abs(v) < tiny else v)


def batch_sizes(min_size: int = 1, max_size: int = 3) -> st.SearchStrategy[int]:
    """Batch sizes ``N`` in ``[min_size, max_size]`` (tiny by default: property tests are cheap)."""
    return st.integers(min_value=min_size, max_value=max_size)


def image_shapes(batch: int | st.SearchStrategy[int] | None = None, channels: Any = (1, 3),
                 side: Any = (1, 5),
                 square: bool = False) -> st.SearchStrategy[tuple[int, int, int, int]]:
    """NCHW shapes ``(N, C, H, W)``.

    Parameters
    ----------
    batch : int or strategy, optional
        Default :func:`batch_sizes`.
    channels, side : int, (lo, hi) or strategy
        Channel count and spatial side ranges (inclusive).
    square : bool
        Force ``H == W``.
    """
    def ints(spec: Any) -> st.SearchStrategy[int]:
        if isinstance(spec, st.SearchStrategy):
            return spec
        if isinstance(spec, int):
            return st.just(spec)
        return st.integers(min_value=spec[0], max_value=spec[1])

    n = batch_sizes() if batch is None else ints(batch)
    c, h = ints(channels), ints(side)
    if square:
        return st.tuples(n, c, h).map(lambda s: (s[0], s[1], s[2], s[2]))
    return st.tuples(n, c, h, ints(side))


def kink_free_arrays(shape: Sequence[int] | st.SearchStrategy[Any], margin: float = 1e-2,
                     min_value: float = -2.0, max_value: float = 2.0,
                     dtype: DTypeLike = np.float64) -> st.SearchStrategy[Any]:
    """:func:`arrays_float` mapped through :func:`away_from_kinks` (``|x| >= margin``)."""
    return arrays_float(shape, min_value, max_value, dtype).map(
        lambda x: away_from_kinks(x, margin))


def distinct_arrays(shape: Sequence[int] | st.SearchStrategy[Any], margin: float = 5e-2,
                    dtype: DTypeLike = np.float64) -> st.SearchStrategy[Any]:
    """Arrays whose entries are pairwise separated by at least ``0.75 * margin`` (no ties).

    The order of the values is drawn (a random permutation of equally spaced levels centred at
    zero) plus a jitter below ``margin / 4``; magnitudes stay below ``margin * size / 2 + 1``.
    """
    def build(seed_shape: tuple[int, Any]) -> NDArray[Any]:
        seed, shp = seed_shape
        return distinct_values(np.random.default_rng(seed), shp, margin, dtype)

    return st.tuples(seeds(), _as_strategy(shape)).map(build)


def unit_directions(shape: Sequence[int] | st.SearchStrategy[Any],
                    dtype: DTypeLike = np.float64) -> st.SearchStrategy[Any]:
    """Random directions of unit Euclidean norm (never zero), from a drawn seed."""
    def build(seed_shape: tuple[int, Any]) -> NDArray[Any]:
        seed, shp = seed_shape
        g = np.random.default_rng(seed).standard_normal(shp)
        return (g / np.linalg.norm(g.ravel())).astype(dtype)

    return st.tuples(seeds(), _as_strategy(shape)).map(build)


def seeds() -> st.SearchStrategy[int]:
    """Seeds for ``np.random.default_rng`` (uniform over 32-bit integers)."""
    return st.integers(min_value=0, max_value=SEED_MAX)
