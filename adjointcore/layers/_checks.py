"""Argument checks shared by the built-in layers (private; one owner for each rule).

Every message names the argument, shows the value and suggests the fix (see
:mod:`adjointcore.errors`, which holds the array-level checks these build on).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Number
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from ..backend import Array, is_cupy_array
from ..errors import NonFiniteError, ParameterError, ShapeError, check_array, check_params

__all__ = ["init_child", "prefixed_shapes", "check_child_layer", "check_backends", "check_flag",
           "check_mode", "check_y_bar", "finite_float", "out_dtype", "time_value", "check_x_dot",
           "check_params_dot"]


def check_backends(owner: object, params: Array, x: Array) -> None:
    """Raise TypeError if ``params`` and ``x`` live on different devices (NumPy vs CuPy)."""
    if is_cupy_array(params) != is_cupy_array(x):
        where = lambda a: "GPU (CuPy)" if is_cupy_array(a) else "host (NumPy)"  # noqa: E731
        raise TypeError(f"{owner}: `params` is on the {where(params)} but `x` is on the "
                        f"{where(x)}; move both with adjointcore.backend.to_device(..., "
                        f"'gpu' or 'cpu').")


def check_y_bar(y_bar: Array, shape: Sequence[int]) -> Array:
    """``y_bar`` must be a float/complex array of the forward output's ``shape``."""
    return check_array("y_bar", y_bar, shape=tuple(shape),
                       fix="Pass the cotangent of the forward output y (same shape).")


def check_x_dot(x_dot: Array, shape: Sequence[int]) -> Array:
    """``x_dot`` must be a float/complex array of the forward input's ``shape`` (forward mode)."""
    return check_array("x_dot", x_dot, shape=tuple(shape),
                       fix="Pass the tangent of the forward input x (same shape).")


def check_params_dot(params_dot: Array | None, n_params: int, owner: object = "") -> Array | None:
    """``params_dot`` must be ``None`` (zero parameter tangent) or a flat array of length
    ``n_params``; returned unchanged."""
    if params_dot is None:
        return None
    return check_params("params_dot", params_dot, n_params, owner=owner)


def check_flag(name: str, value: Any) -> bool:
    """``value`` as a Python bool; TypeError unless it is ``True``/``False`` (or NumPy bool)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False, got {value!r}.")
    return bool(value)


def check_mode(mode: str) -> str:
    """``mode`` if it is ``"train"`` or ``"eval"``; ValueError otherwise."""
    if mode not in ("train", "eval"):
        raise ValueError(f"`mode` must be 'train' or 'eval', got {mode!r}.")
    return mode


def finite_float(name: str, value: Any) -> float:
    """``value`` (a real number, not a bool) as a finite Python float.

    Raises
    ------
    TypeError
        Not a real number.
    ValueError
        NaN or infinite.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer,
                                                                     np.floating)):
        raise TypeError(f"`{name}` must be a real number, got {value!r}.")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"`{name}` must be finite, got {value!r}.")
    return out


def out_dtype(*arrays_or_scalars: Any) -> np.dtype[Any]:
    """Result dtype of combining arrays (and Python scalars, which do not widen)."""
    dtypes = [a.dtype for a in arrays_or_scalars if hasattr(a, "dtype")]
    if any(isinstance(a, complex) for a in arrays_or_scalars):
        dtypes.append(np.complex64)
    return np.result_type(*dtypes)


def time_value(t: Any, owner: object) -> Any:
    """Validate the time ``t`` of a time-dependent layer and return it as a scalar.

    NumPy/Python scalars and 0-d arrays come back as Python ``float`` (``complex`` if complex, for
    complex-step checks), so they never change the output dtype; a 0-d CuPy array is returned
    as is (no device synchronisation).

    Raises
    ------
    TypeError
        ``t`` missing or not numeric.
    ShapeError
        ``t`` not a scalar.
    NonFiniteError
        ``t`` is NaN or infinite (host values only).
    """
    if t is None:
        raise TypeError(f"{owner} is time-dependent: call forward(params, x, t=t) with t a "
                        f"float or a 0-d array.")
    if is_cupy_array(t):
        if t.ndim != 0:
            raise ShapeError(f"`t` of {owner} must be a scalar (0-d), got shape {t.shape}.")
        return t
    if isinstance(t, (bool, np.bool_)) or not isinstance(t, (Number, np.ndarray, np.generic)):
        raise TypeError(f"`t` of {owner} must be a real number or 0-d array, got {t!r}.")
    arr = np.asarray(t)
    if arr.ndim != 0:
        raise ShapeError(f"`t` of {owner} must be a scalar (0-d), got an array of shape "
                         f"{arr.shape}; pass t as a float.")
    if arr.dtype.kind not in "iufc":
        raise TypeError(f"`t` of {owner} must be numeric, got dtype {arr.dtype}.")
    value = complex(arr) if arr.dtype.kind == "c" else float(arr)
    if not np.isfinite(value):
        raise NonFiniteError(f"`t` of {owner} is {value!r}; pass a finite time.")
    return value


def check_child_layer(child: Any, where: str) -> int:
    """Validate a duck-typed layer used inside a composite; return its ``n_params``.

    Raises
    ------
    TypeError
        Naming ``where`` when ``child`` lacks ``n_params``/``forward``/``vjp`` or has a bad
        ``n_params``.
    """
    missing = [a for a in ("n_params", "forward", "vjp") if not hasattr(child, a)]
    if missing:
        raise TypeError(f"{where} ({type(child).__name__}) is not a layer: it lacks "
                        f"{', '.join(missing)}. A layer needs n_params, forward(params, x, "
                        f"**context) and vjp(params, cache, y_bar, need_params); see "
                        f"docs/protocols.md.")
    n = child.n_params
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise TypeError(f"{where}.n_params must be an integer >= 0, got {n!r}.")
    return int(n)


def prefixed_shapes(children: Sequence[Any], offsets: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """``{"i.name": shape}`` over the children of a composite whose flat parameters are the
    concatenation of theirs (child ``i`` owns ``params[offsets[i]:offsets[i + 1]]``); a child
    without ``param_shapes`` gets one view ``"i.params"`` (omitted when it has no parameters)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for i, child in enumerate(children):
        n = offsets[i + 1] - offsets[i]
        own = getattr(child, "param_shapes", None)
        if own is None:
            if n:
                shapes[f"{i}.params"] = (n,)
            continue
        shapes.update({f"{i}.{name}": tuple(s) for name, s in own.items()})
    return shapes


def init_child(child: Any, rng: np.random.Generator, dtype: DTypeLike, n: int, where: str) -> Array:
    """``child.init(rng, dtype)`` checked to be a flat array of length ``n`` (empty for n = 0)."""
    if n == 0:
        return np.zeros(0, dtype=dtype)
    if not hasattr(child, "init"):
        raise TypeError(f"{where} ({type(child).__name__}) has {n} parameters but no "
                        f"init(rng, dtype); initialise its slice of params yourself.")
    p = np.asarray(child.init(rng, dtype=dtype))
    if p.shape != (n,):
        raise ParameterError(f"{where}.init returned shape {tuple(p.shape)}, expected ({n},).")
    return p.astype(dtype, copy=False)
