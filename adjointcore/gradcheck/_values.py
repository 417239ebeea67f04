"""Test-point helpers shared by the catalog and the hypothesis strategies (NumPy/CuPy)."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import DTypeLike, NDArray

from ..backend import Array

__all__ = ["away_from_kinks", "distinct_values"]


def away_from_kinks(x: Array, margin: float = 1e-2) -> Array:
    """Map ``x -> sign(x) (|x| + margin)`` with ``sign(0) = +1``, so ``|result| >= margin``.

    A finite-difference step smaller than ``margin`` then never crosses a kink at 0 (ReLU,
    leaky ReLU, ELU). Works on NumPy and CuPy arrays; keeps the dtype.
    """
    sign = (x >= 0) * 2.0 - 1.0
    return (sign * (abs(x) + margin)).astype(x.dtype)


def distinct_values(rng: np.random.Generator, shape: int | Sequence[int], margin: float = 5e-2,
                    dtype: DTypeLike = np.float64) -> NDArray[Any]:
    """Array of ``shape`` whose entries are pairwise separated by at least ``0.75 * margin``.

    A random permutation of equally spaced levels ``margin * (k - (size-1)/2)`` plus a jitter in
    ``[0, margin/4)``: no ties for a max-pool, and a variance bounded away from 0 for norms.
    """
    size = int(np.prod(shape))
    levels = (np.arange(size) - (size - 1) / 2.0) * margin
    values = rng.permutation(levels) + rng.uniform(0.0, margin / 4.0, size)
    return values.reshape(shape).astype(dtype)
