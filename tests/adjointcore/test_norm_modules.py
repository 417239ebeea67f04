"""Where the normalisation layers' pieces live: :mod:`adjointcore.layers._affine_norm` holds the
shared kernels and the ``_AffineNorm`` base, :mod:`adjointcore.layers.norm` the layers, their
caches and ``update_running_stats``. The moved names stay importable from ``norm`` (the same
objects), and each module imports on its own in a fresh interpreter (no import cycle)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from adjointcore.layers import _affine_norm, norm

MOVED = ["_channel", "_normalise_vjp", "_normalise_jvp", "_normalise_jvp_vjp", "_affine_jvp",
         "_affine_param_bar", "_AffineNorm"]


@pytest.mark.parametrize("name", MOVED)
def test_norm_reexports_the_moved_names_as_the_same_objects(name):
    assert getattr(norm, name) is getattr(_affine_norm, name)


def test_the_layers_and_their_public_names_stay_in_norm():
    for name in norm.__all__:
        assert getattr(norm, name).__module__ == "adjointcore.layers.norm", name
    assert issubclass(norm.BatchNorm, _affine_norm._AffineNorm)
    assert issubclass(norm.GroupNorm, _affine_norm._AffineNorm)


@pytest.mark.parametrize("module", ["adjointcore.layers._affine_norm", "adjointcore.layers.norm"])
def test_module_imports_first_in_a_fresh_interpreter(module):
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
