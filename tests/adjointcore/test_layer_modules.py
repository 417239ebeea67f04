"""Where the layer protocol's helpers live: :mod:`adjointcore.layers.base` keeps ``Layer``,
``ParameterFree`` and the dispatch, :mod:`adjointcore.layers.binding` and
:mod:`adjointcore.layers.second_order` hold the helpers that do not depend on ``Layer``. Every
name of ``base.__all__`` stays importable from ``base`` (the same object as in its new home), and
each module imports on its own in a fresh interpreter (no import cycle)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from adjointcore.layers import base, binding, second_order


@pytest.mark.parametrize("module", [binding, second_order], ids=lambda m: m.__name__)
def test_base_reexports_the_moved_names_as_the_same_objects(module):
    for name in module.__all__:
        assert name in base.__all__, name
        assert getattr(base, name) is getattr(module, name), name


def test_every_name_of_base_all_is_importable_from_base():
    missing = [name for name in base.__all__ if not hasattr(base, name)]
    assert not missing


@pytest.mark.parametrize("module", ["adjointcore.layers.binding",
                                    "adjointcore.layers.second_order",
                                    "adjointcore.layers.base"])
def test_module_imports_first_in_a_fresh_interpreter(module):
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
