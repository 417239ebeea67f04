"""adjointcore: a NumPy/CuPy engine for neural ODEs with hand-written VJPs and adjoints."""
from . import backend, errors

__version__ = "0.1.0"
__all__ = ["backend", "errors", "__version__"]
