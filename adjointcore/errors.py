"""Exception types and input validation shared by the whole engine.

Every message names the argument, shows the offending value (or its shape/dtype)
and suggests a fix.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .backend import COMPLEX_DTYPES, FLOAT_DTYPES, Array, get_array_module

__all__ = ["ShapeError", "ParameterError", "NonFiniteError", "check_array", "check_params",
           "check_finite", "check_positive_int", "check_probability", "check_generator"]


class ShapeError(ValueError):
    """An array has the wrong number of dimensions or the wrong shape."""


class ParameterError(ValueError):
    """A flat parameter vector has the wrong length, rank or dtype."""


class NonFiniteError(FloatingPointError, ValueError):
    """An input that must be finite holds NaN or infinity."""


def _describe(x: Any) -> str:
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    if shape is None:
        return f"{type(x).__name__} {x!r}"
    return f"array of shape {tuple(shape)} and dtype {dtype}"


def check_array(name: str, x: Any, *, ndim: int | Sequence[int] | None = None,
                shape: Sequence[int | None] | None = None, allow_complex: bool = True,
                finite: bool = False, fix: str = "") -> Array:
    """Validate an input array and return it unchanged.

    Parameters
    ----------
    name : str
        Argument name used in the message (e.g. ``"x"``).
    x : ndarray
        NumPy or CuPy array.
    ndim : int or tuple of int, optional
        Allowed numbers of dimensions.
    shape : tuple, optional
        Expected shape; ``None`` entries match anything.
    allow_complex : bool
        Accept complex64/complex128 (complex-step checks).
    finite : bool
        Reject NaN/inf (costs one reduction).
    fix : str
        Suggestion appended to the message.

    Raises
    ------
    TypeError, ShapeError, NonFiniteError
    """
    if not hasattr(x, "dtype") or not hasattr(x, "shape"):
        raise TypeError(f"`{name}` must be a NumPy or CuPy array, got {_describe(x)}; "
                        f"wrap it with np.asarray(..., dtype=np.float64).")
    allowed = FLOAT_DTYPES + (COMPLEX_DTYPES if allow_complex else ())
    if x.dtype not in allowed:
        raise TypeError(f"`{name}` has dtype {x.dtype}; expected one of "
                        f"{', '.join(str(d) for d in allowed)}. Cast with "
                        f"`{name}.astype(np.float64)`.")
    if ndim is not None:
        dims = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in dims:
            raise ShapeError(f"`{name}` must have {' or '.join(map(str, dims))} dimensions, got "
                             f"{_describe(x)}. {fix}".rstrip())
    if shape is not None:
        if len(shape) != x.ndim or any(s is not None and s != d
                                       for s, d in zip(shape, x.shape, strict=True)):
            want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
            raise ShapeError(f"`{name}` must have shape {want}, got {_describe(x)}. {fix}".rstrip())
    if finite:
        check_finite(name, x)
    return x


def check_finite(name: str, x: Array) -> Array:
    """Raise :class:`NonFiniteError` if ``x`` contains NaN or inf; return ``x``."""
    xp = get_array_module(x)
    if not bool(xp.all(xp.isfinite(x))):
        n_bad = int(xp.sum(~xp.isfinite(x)))
        raise NonFiniteError(f"`{name}` ({_describe(x)}) contains {n_bad} non-finite value(s); "
                             f"check the data or lower the learning rate / step size.")
    return x


def check_params(name: str, params: Any, n_params: int, owner: object = "") -> Array:
    """Validate a flat parameter vector of length ``n_params``; return it.

    ``owner`` (a string or the owning object) is only formatted when the check fails, so the
    check costs nothing on the hot path.

    Raises
    ------
    ParameterError
        Wrong rank, length or dtype, with the expected length and the fix.
    """
    ok = (hasattr(params, "dtype") and hasattr(params, "shape") and params.ndim == 1
          and params.shape[0] == n_params and params.dtype in FLOAT_DTYPES + COMPLEX_DTYPES)
    if ok:
        return params
    who = f" of {owner if isinstance(owner, str) else repr(owner)}" if owner != "" else ""
    if not hasattr(params, "dtype") or not hasattr(params, "shape"):
        raise ParameterError(f"`{name}`{who} must be a flat array of length {n_params}, got "
                             f"{_describe(params)}; create it with layer.init(rng).")
    if params.ndim != 1:
        raise ParameterError(f"`{name}`{who} must be 1-D (flat), got {_describe(params)}; "
                             f"flatten with `{name}.ravel()` or use layer.init(rng).")
    if params.shape[0] != n_params:
        raise ParameterError(f"`{name}`{who} has length {params.shape[0]}, expected {n_params}; "
                             f"create it with layer.init(rng) for this layer's configuration.")
    raise ParameterError(f"`{name}`{who} has dtype {params.dtype}; expected float32 or "
                         f"float64. Cast with `{name}.astype(np.float64)`.")


def check_positive_int(name: str, value: Any, *, minimum: int = 1) -> int:
    """Return ``value`` as int if it is an integer >= ``minimum``; raise ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_probability(name: str, value: Any, *, allow_one: bool = False) -> float:
    """Return ``value`` as float if 0 <= value < 1 (or <= 1); raise ValueError otherwise."""
    real = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not real or not (0 <= value and (value <= 1 if allow_one else value < 1)):
        bound = "1]" if allow_one else "1)"
        raise ValueError(f"`{name}` must be a probability in [0, {bound}, got {value!r}.")
    return float(value)


def check_generator(rng: Any, name: str = "rng") -> np.random.Generator:
    """Return ``rng`` if it is a ``numpy.random.Generator``; TypeError with the fix otherwise."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"`{name}` must be a numpy.random.Generator, got {rng!r}; "
                        f"use np.random.default_rng(seed).")
    return rng
