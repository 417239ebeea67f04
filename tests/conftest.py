"""Shared fixtures: array backends (NumPy always, CuPy when a GPU is present) and dtypes."""
import numpy as np
import pytest

from adjointcore.backend import gpu_available

BACKENDS = [
    pytest.param("numpy", id="numpy"),
    pytest.param("cupy", id="cupy", marks=[
        pytest.mark.gpu,
        pytest.mark.skipif(not gpu_available(), reason="CuPy with a CUDA device not available"),
    ]),
]


@pytest.fixture(params=BACKENDS)
def xp(request):
    """The array module under test (``numpy`` or ``cupy``)."""
    if request.param == "cupy":
        import cupy
        return cupy
    return np


@pytest.fixture
def rng():
    """A fixed-seed NumPy Generator (tests never use global random state)."""
    return np.random.default_rng(20261123)
