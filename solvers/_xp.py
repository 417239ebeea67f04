"""Array-module lookup for ``solvers`` (kept local: ``solvers`` imports nothing from this repo)."""
import numpy as np


def get_array_module(*arrays):
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``."""
    for x in arrays:
        if x is not None and type(x).__module__.split(".")[0] == "cupy":
            import cupy
            return cupy
    return np
