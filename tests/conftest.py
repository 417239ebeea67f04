"""Shared fixtures: array backends (NumPy and the device emulation always, CuPy when a GPU is
present) and dtypes."""
import os

import numpy as np
import pytest
from hypothesis import settings

from adjointcore.backend import gpu_available

# The default run is derandomized: hypothesis draws the same examples on every machine (for a given
# hypothesis version, which pyproject.toml therefore bounds), so a CI
# failure reproduces locally. `HYPOTHESIS_PROFILE=explore` searches fresh random examples.
settings.register_profile("default", derandomize=True, deadline=None)
settings.register_profile("explore", derandomize=False, deadline=None, max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

BACKENDS = [
    pytest.param("numpy", id="numpy"),
    pytest.param("emulated", id="emulated"),
    pytest.param("cupy", id="cupy", marks=[
        pytest.mark.gpu,
        pytest.mark.skipif(not gpu_available(), reason="CuPy with a CUDA device not available"),
    ]),
]


@pytest.fixture(params=BACKENDS)
def xp(request):
    """The array module under test: ``numpy``, the CPU device emulation
    (:mod:`adjointcore.device_emulation`: CuPy's rules, NumPy's arithmetic) or ``cupy``."""
    if request.param == "cupy":
        import cupy
        return cupy
    if request.param == "emulated":
        from adjointcore.device_emulation import xp as emulated
        return emulated
    return np


@pytest.fixture
def rng():
    """A fixed-seed NumPy Generator (tests never use global random state)."""
    return np.random.default_rng(20261123)
