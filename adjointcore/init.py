"""Weight initialisation schemes: pure functions of a ``numpy.random.Generator``.

Every function returns a new float64 host array of the requested ``shape``; layers cast and
move it. ``fan_in`` is the number of inputs feeding one output unit (``in_features`` for a
dense layer, ``in_channels/groups * kh * kw`` for a convolution). The Kaiming schemes follow
He et al. [1]_, the Xavier scheme Glorot and Bengio [2]_.

References
----------
.. [1] K. He, X. Zhang, S. Ren, J. Sun, "Delving deep into rectifiers: surpassing human-level
   performance on ImageNet classification", ICCV 2015 (Kaiming / He initialisation).
.. [2] X. Glorot, Y. Bengio, "Understanding the difficulty of training deep feedforward neural
   networks", AISTATS 2010 (Xavier / Glorot initialisation).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .errors import check_generator as _check_rng

__all__ = ["kaiming_normal", "kaiming_uniform", "uniform", "xavier_uniform", "zeros",
           "WEIGHT_SCHEMES", "check_scheme", "init_weight", "init_bias"]

_SQRT2 = math.sqrt(2.0)    # default Kaiming-normal gain (ReLU)
_SQRT5 = math.sqrt(5.0)    # default Kaiming-uniform `a` (PyTorch's Linear/Conv default)


# -- argument checks ------------------------------------------------------------------------------
def _check_shape(shape: Any) -> tuple[int, ...]:
    dims = (shape,) if isinstance(shape, (int, np.integer)) else shape
    try:
        dims = tuple(dims)
    except TypeError:
        dims = None
    if dims is None or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool)
                               and d >= 0 for d in dims):
        raise ValueError(f"`shape` must be a tuple of non-negative integers, got {shape!r}.")
    return tuple(int(d) for d in dims)


def _check_fan(name: str, fan: Any) -> int:
    if isinstance(fan, bool) or not isinstance(fan, (int, np.integer)) or fan < 1:
        raise ValueError(f"`{name}` must be an integer >= 1 (number of inputs per unit), "
                         f"got {fan!r}.")
    return int(fan)


def _check_nonneg(name: str, value: Any) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value < 0:
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}.")
    return float(value)


# -- schemes --------------------------------------------------------------------------------------
def uniform(rng: np.random.Generator, shape: int | Sequence[int],
            bound: float) -> NDArray[np.float64]:
    """Uniform on ``[-bound, bound)``.

    Parameters
    ----------
    rng : numpy.random.Generator
    shape : tuple of int
    bound : float, >= 0

    Returns
    -------
    ndarray, shape ``shape``, float64
    """
    _check_rng(rng)
    shape = _check_shape(shape)
    bound = _check_nonneg("bound", bound)
    return rng.uniform(-bound, bound, size=shape)


def kaiming_normal(rng: np.random.Generator, shape: int | Sequence[int], fan_in: int,
                   gain: float = _SQRT2) -> NDArray[np.float64]:
    """Normal with mean 0 and standard deviation ``gain / sqrt(fan_in)`` [1]_.

    The default gain ``sqrt(2)`` preserves the second moment through ReLU layers.

    Returns
    -------
    ndarray, shape ``shape``, float64
    """
    _check_rng(rng)
    shape = _check_shape(shape)
    fan_in = _check_fan("fan_in", fan_in)
    gain = _check_nonneg("gain", gain)
    return rng.normal(0.0, gain / math.sqrt(fan_in), size=shape)


def kaiming_uniform(rng: np.random.Generator, shape: int | Sequence[int], fan_in: int,
                    a: float = _SQRT5) -> NDArray[np.float64]:
    """Uniform with the variance of Kaiming-normal for a leaky ReLU of slope ``a`` [1]_.

    ``bound = gain * sqrt(3 / fan_in)`` with ``gain = sqrt(2 / (1 + a^2))``. The default
    ``a = sqrt(5)`` gives ``bound = 1 / sqrt(fan_in)``, PyTorch's default for ``Linear`` and
    ``Conv2d`` weights.

    Returns
    -------
    ndarray, shape ``shape``, float64
    """
    _check_rng(rng)
    fan_in = _check_fan("fan_in", fan_in)
    a = _check_nonneg("a", a)
    gain = math.sqrt(2.0 / (1.0 + a * a))
    return uniform(rng, shape, gain * math.sqrt(3.0 / fan_in))


def xavier_uniform(rng: np.random.Generator, shape: int | Sequence[int], fan_in: int,
                   fan_out: int) -> NDArray[np.float64]:
    """Uniform on ``[-b, b)`` with ``b = sqrt(6 / (fan_in + fan_out))`` [2]_.

    Returns
    -------
    ndarray, shape ``shape``, float64
    """
    _check_rng(rng)
    fan_in = _check_fan("fan_in", fan_in)
    fan_out = _check_fan("fan_out", fan_out)
    return uniform(rng, shape, math.sqrt(6.0 / (fan_in + fan_out)))


def zeros(shape: int | Sequence[int]) -> NDArray[np.float64]:
    """All zeros (float64 host array of ``shape``)."""
    return np.zeros(_check_shape(shape))


# -- what layers use ------------------------------------------------------------------------------
WEIGHT_SCHEMES = ("kaiming_uniform", "kaiming_normal", "xavier_uniform", "uniform")


def check_scheme(init: str) -> str:
    """Return ``init`` if it names a weight scheme; ValueError listing the choices otherwise."""
    if init not in WEIGHT_SCHEMES:
        raise ValueError(f"`init` must be one of {', '.join(map(repr, WEIGHT_SCHEMES))}, "
                         f"got {init!r}.")
    return init


def init_weight(init: str, rng: np.random.Generator, shape: int | Sequence[int], fan_in: int,
                fan_out: int) -> NDArray[np.float64]:
    """Draw a weight tensor with the scheme named ``init`` (see :data:`WEIGHT_SCHEMES`).

    ``"uniform"`` uses ``bound = 1 / sqrt(fan_in)``; the others use their defaults.
    """
    check_scheme(init)
    if init == "kaiming_uniform":
        return kaiming_uniform(rng, shape, fan_in)
    if init == "kaiming_normal":
        return kaiming_normal(rng, shape, fan_in)
    if init == "xavier_uniform":
        return xavier_uniform(rng, shape, fan_in, fan_out)
    return uniform(rng, shape, 1.0 / math.sqrt(_check_fan("fan_in", fan_in)))


def init_bias(rng: np.random.Generator, shape: int | Sequence[int],
              fan_in: int) -> NDArray[np.float64]:
    """Bias drawn uniformly on ``[-1/sqrt(fan_in), 1/sqrt(fan_in))`` (PyTorch's default)."""
    return uniform(rng, shape, 1.0 / math.sqrt(_check_fan("fan_in", fan_in)))
