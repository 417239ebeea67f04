"""Where the RDA step's pieces live: :mod:`nets._rda_checks` holds ``SIGMAS`` and the argument
checks and shape helpers, :mod:`nets._rda` the step, its VJP and ``RDAEvolution``. The moved
names stay importable from ``nets._rda`` (the same objects), the functions the tests
monkeypatch (``symbol``, ``adjoint_multiplier``) are still looked up in ``nets._rda``, and each
module imports on its own in a fresh interpreter (no import cycle)."""
from __future__ import annotations

import subprocess
import sys

import pytest

import nets._rda as rda
import nets._rda_checks as rda_checks

MOVED = ["SIGMAS", "_activation", "_check_dt", "_check_spacing", "_coefficients",
         "_sum_to_shape"]


@pytest.mark.parametrize("name", MOVED)
def test_rda_reexports_the_moved_names_as_the_same_objects(name):
    assert getattr(rda, name) is getattr(rda_checks, name)


def test_every_name_of_rda_all_is_importable_from_rda():
    assert not [name for name in rda.__all__ if not hasattr(rda, name)]
    assert "SIGMAS" in rda.__all__


def test_the_patched_functions_stay_in_rda():
    for name in ("symbol", "adjoint_multiplier", "rda_step", "rda_step_vjp"):
        assert getattr(rda, name).__module__ == "nets._rda", name
        assert not hasattr(rda_checks, name), name


@pytest.mark.parametrize("module", ["nets._rda_checks", "nets._rda"])
def test_module_imports_first_in_a_fresh_interpreter(module):
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
