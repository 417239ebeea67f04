"""Fixtures shared by the experiment tests."""
from __future__ import annotations

import numpy as np
import pytest

from experiments import data


@pytest.fixture(scope="session")
def idx_dir(tmp_path_factory):
    """Standard IDX files of a learnable toy problem: class k is a bright 6x6 square at one of
    ten positions, plus noise (256 training, 128 test images)."""
    folder = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(0)
    for part, n in (("train", 256), ("test", 128)):
        y = np.arange(n) % 10
        rng.shuffle(y)
        x = rng.integers(0, 60, size=(n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(y):
            r, c = 2 + 8 * (k // 4), 2 + 6 * (k % 4)
            x[i, r:r + 6, c:c + 6] = 220
        data.write_idx(folder / f"{data.IDX_FILES[part + '_images']}.gz", x)
        data.write_idx(folder / f"{data.IDX_FILES[part + '_labels']}.gz", y.astype(np.uint8))
    return str(folder)
