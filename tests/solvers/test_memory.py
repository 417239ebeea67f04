"""Host memory reuse (``solvers._memory``): freed buffers come back without page faults."""
import os
import subprocess
import sys

import pytest

import solvers
from solvers._memory import _glibc

GLIBC = _glibc() is not None

#: Allocates and frees twenty 8 MiB arrays four times and prints the minor page faults of
#: each round (the first round maps the memory; later rounds can reuse it).
ROUNDS = """
import resource, numpy as np, solvers
def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    arrays = [np.ones(1 << 20) for _ in range(20)]
    del arrays
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(*[faults() for _ in range(4)])
"""


def _rounds(mode):
    env = dict(os.environ, ADJOINTCORE_HOST_MEMORY=mode)
    out = subprocess.run([sys.executable, "-c", ROUNDS], env=env, capture_output=True,
                         text=True, check=True)
    return [int(v) for v in out.stdout.split()]


@pytest.mark.skipif(not GLIBC, reason="mallopt is a glibc setting")
def test_import_keeps_freed_buffers_for_reuse():
    """With the default (``retain``), 160 MiB freed and allocated again costs no page fault
    after the first round; with ``system`` (glibc's own thresholds: buffers of 8 MiB are
    mapped and unmapped each time) every round faults its memory in again (10,268 faults a
    round here, with NumPy's huge-page advice on large buffers). The bounds sit a factor of
    five or more from both measurements."""
    retained, system = _rounds("retain"), _rounds("system")
    assert max(retained[1:]) < 1_000, retained
    assert min(system[1:]) > 5_000, system


def test_bad_environment_value_is_refused_at_import():
    env = dict(os.environ, ADJOINTCORE_HOST_MEMORY="fast")
    out = subprocess.run([sys.executable, "-c", "import solvers"], env=env,
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert "ADJOINTCORE_HOST_MEMORY must be 'retain'" in out.stderr and "'fast'" in out.stderr


@pytest.mark.parametrize("kwargs, name", [({"trim_threshold": 0}, "trim_threshold"),
                                          ({"trim_threshold": 1 << 31}, "trim_threshold"),
                                          ({"mmap_threshold": -5}, "mmap_threshold"),
                                          ({"mmap_threshold": 2.5e8}, "mmap_threshold"),
                                          ({"mmap_threshold": True}, "mmap_threshold")])
def test_bad_thresholds_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}` must be an int number of bytes"):
        solvers.retain_host_memory(**kwargs)


def test_settings_apply_exactly_where_the_c_library_is_glibc():
    assert solvers.retain_host_memory() is GLIBC
    assert isinstance(solvers.release_host_memory(), bool)
