"""Host memory reuse: freed NumPy buffers stay in the process for the next solve.

A neural-ODE solve allocates the same large temporaries again and again: every field
evaluation's pre-activations and hidden layer, and a taped sweep's whole tape, freed at the end
of each reverse sweep. With glibc's default settings these come back from the operating system
as fresh pages each time. Buffers above the mmap threshold (128 KiB at start, raised
dynamically up to 32 MiB) are unmapped on ``free``, and the top of the heap is returned once
more than the trim threshold is free. Every new page is then a page fault that the kernel
zero-fills. Measured on the P1 MLP (``benchmarks/bench_p1.py``; 2 cores, float64), glibc's
settings against these:

- large forward solve, one process before and after ``mallopt``: 514k page faults (2.4 s of
  system time) and 5.3 s, against 0 faults and 2.7 s;
- medium taped forward and gradient, separate processes: 64k faults and 376-544 ms, against 0
  faults and 251-285 ms.

:func:`retain_host_memory` raises both thresholds with ``mallopt`` (glibc only), so freed
buffers are reused from the heap. It changes no result, only where memory comes from.
``import solvers`` applies it with the defaults unless the environment variable
``ADJOINTCORE_HOST_MEMORY`` is ``system``. The cost is memory: up to ``trim_threshold`` bytes of
freed memory may stay with the process (:func:`release_host_memory` hands it back).

References
----------
glibc manual, "Malloc Tunable Parameters" (``M_MMAP_THRESHOLD``, ``M_TRIM_THRESHOLD``);
``mallopt(3)``.
"""
from __future__ import annotations

import ctypes
import os
from typing import Any

__all__ = ["retain_host_memory", "release_host_memory", "HOST_MEMORY_ENV",
           "DEFAULT_TRIM_THRESHOLD", "DEFAULT_MMAP_THRESHOLD"]

#: Environment variable read at import: ``retain`` (the default) or ``system``.
HOST_MEMORY_ENV = "ADJOINTCORE_HOST_MEMORY"
#: Default ``M_TRIM_THRESHOLD``: free memory at the top of the heap kept for reuse (bytes;
#: the largest value ``mallopt`` takes, 2 GiB - 1). The large P1 problem's float32 tape and
#: temporaries take 1-2 GB: with 1 GiB its taped gradient faulted its memory in anew each
#: call (4.7-5.0 s against 3.5 s).
DEFAULT_TRIM_THRESHOLD = (1 << 31) - 1
#: Default ``M_MMAP_THRESHOLD``: allocations at least this large are mapped on their own.
DEFAULT_MMAP_THRESHOLD = 256 << 20
#: ``mallopt`` parameter numbers (glibc ``malloc.h``).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
#: ``mallopt`` takes a C ``int``.
_MAX_BYTES = (1 << 31) - 1
#: glibc's documented ceiling of the dynamic mmap threshold on 64-bit systems; used when a
#: C library refuses a larger ``mmap_threshold``.
_FALLBACK_MMAP_THRESHOLD = 32 << 20


def _glibc() -> Any:
    """The process's C library when it is glibc (it has ``mallopt``), else None."""
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return None
    except (AttributeError, ValueError, OSError):  # not a glibc system
        return None
    libc = ctypes.CDLL(None)
    return libc if hasattr(libc, "mallopt") else None


def _check_bytes(name: str, value: Any, upper: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= upper:
        raise ValueError(f"`{name}` must be an int number of bytes in (0, {upper}], got "
                         f"{value!r}; e.g. {name}=256 << 20 for 256 MiB.")
    return value


def retain_host_memory(trim_threshold: int = DEFAULT_TRIM_THRESHOLD,
                       mmap_threshold: int = DEFAULT_MMAP_THRESHOLD) -> bool:
    """Keep freed host buffers for reuse instead of returning them to the operating system.

    Parameters
    ----------
    trim_threshold : int
        Bytes of free memory the top of the heap may hold before glibc returns it
        (``M_TRIM_THRESHOLD``; glibc's default is 128 KiB, raised dynamically).
    mmap_threshold : int
        Allocations of at least this many bytes get their own mapping, unmapped again on
        ``free`` (``M_MMAP_THRESHOLD``). Below it, buffers come from the heap. A C library
        that refuses the value gets glibc's 64-bit ceiling of the dynamic threshold, 32 MiB.

    Returns
    -------
    bool
        Whether the settings were applied (False where the C library is not glibc).

    Raises
    ------
    ValueError
        A threshold that is not a positive int below 2**31 (``mallopt`` takes a C int).

    Notes
    -----
    Process-wide: it also serves NumPy arrays outside this library. Setting either threshold
    turns off glibc's dynamic adjustment of both.
    """
    trim = _check_bytes("trim_threshold", trim_threshold, _MAX_BYTES)
    mmap = _check_bytes("mmap_threshold", mmap_threshold, _MAX_BYTES)
    libc = _glibc()
    if libc is None:
        return False
    mapped = libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(mmap)) or \
        libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(min(mmap, _FALLBACK_MMAP_THRESHOLD)))
    trimmed = libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(trim))
    return bool(mapped and trimmed)


def release_host_memory() -> bool:
    """Return the free heap memory kept by :func:`retain_host_memory` to the operating system
    (glibc ``malloc_trim(0)``). Returns whether any memory was released (False without glibc).
    """
    libc = _glibc()
    return bool(libc is not None and libc.malloc_trim(0))


def _apply_from_environment() -> bool:
    """At import: :func:`retain_host_memory` unless ``ADJOINTCORE_HOST_MEMORY=system``."""
    mode = os.environ.get(HOST_MEMORY_ENV, "retain").strip().lower()
    if mode == "system":
        return False
    if mode != "retain":
        raise ValueError(f"{HOST_MEMORY_ENV} must be 'retain' (the default: freed buffers are "
                         f"reused) or 'system' (glibc's own settings), got {mode!r}; unset it "
                         f"or set one of those.")
    return retain_host_memory()
