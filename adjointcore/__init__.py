"""adjointcore: a NumPy/CuPy engine for neural ODEs with hand-written VJPs and adjoints.

Subpackages: :mod:`~adjointcore.backend`, :mod:`~adjointcore.errors`, :mod:`~adjointcore.layers`,
:mod:`~adjointcore.fields`, :mod:`~adjointcore.losses`, :mod:`~adjointcore.optim`,
:mod:`~adjointcore.gradcheck`, :mod:`~adjointcore.checkpointing`,
:mod:`~adjointcore.sensitivity`.
"""
from . import backend, errors

__version__ = "0.1.0"
__all__ = ["backend", "errors", "__version__"]
