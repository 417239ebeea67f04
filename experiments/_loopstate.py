"""A training loop's state as a checkpoint stores it, and back.

- :func:`rng_state` and :func:`restore_rng`: a ``numpy.random.Generator`` as its bit
  generator's full state (JSON-serialisable), and a generator continuing exactly from it;
- :func:`optimizer_arrays` and :func:`restore_optimizer`: an optimiser's NamedTuple state as
  named arrays (``{prefix + field: array}``), and the state of the same type from them, scalars
  as the Python numbers they were.

A resumed run restored with these equals an uninterrupted one bitwise. All are importable from
:mod:`experiments.durable`.
"""
from __future__ import annotations

from typing import Any

import numpy as np


def rng_state(rng: np.random.Generator) -> dict:
    """The bit generator's full state (JSON-serialisable)."""
    return rng.bit_generator.state


def restore_rng(state: dict) -> np.random.Generator:
    """A Generator continuing exactly where the one with ``state`` stopped."""
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    return np.random.Generator(bit_generator)


def optimizer_arrays(prefix: str, state: Any) -> dict:
    """An optimiser's NamedTuple state as ``{prefix + field: array}`` (None fields left out)."""
    return {f"{prefix}{k}": np.asarray(v) for k, v in state._asdict().items() if v is not None}


def restore_optimizer(template: Any, arrays: dict, prefix: str) -> Any:
    """The optimiser state saved by :func:`optimizer_arrays`, of ``template``'s type.

    Scalars come back as the Python numbers they were (h5py reads a scalar dataset as a NumPy
    scalar, and ``b ** numpy.int64(t)`` can round differently from ``b ** t``: a resumed run
    would then drift from an uninterrupted one in the last bit).
    """
    fields = {}
    for name in template._fields:
        value = arrays.get(f"{prefix}{name}")
        if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
            value = value.item()
        fields[name] = value
    return type(template)(**fields)

