"""Dense layers: :class:`Linear` and the time-concatenating :class:`ConcatLinear`.

Both are analytic (complex input is accepted, no conjugation anywhere), so the complex-step
derivative applies. VJPs are three GEMM-shaped products written straight into the flat
``params_bar`` vector through its named views.

References
----------
.. [1] R. T. Q. Chen, Y. Rubanova, J. Bettencourt, D. Duvenaud, "Neural ordinary differential
   equations", NeurIPS 2018 (``ConcatLinear`` / ``ConcatConv2d`` time conditioning).
"""
from __future__ import annotations

from numbers import Number
from typing import Any, NamedTuple

import numpy as np

from .. import init as initmod
from ..backend import get_array_module, is_cupy_array
from ..errors import NonFiniteError, ShapeError, check_array, check_positive_int
from .base import Layer

__all__ = ["Linear", "ConcatLinear", "LinearCache", "ConcatLinearCache", "time_value",
           "check_backends", "check_y_bar"]


# -- helpers shared with conv.py ------------------------------------------------------------------
def check_backends(owner, params, x) -> None:
    """Raise TypeError if ``params`` and ``x`` live on different devices (NumPy vs CuPy)."""
    if is_cupy_array(params) != is_cupy_array(x):
        where = lambda a: "GPU (CuPy)" if is_cupy_array(a) else "host (NumPy)"  # noqa: E731
        raise TypeError(f"{owner}: `params` is on the {where(params)} but `x` is on the "
                        f"{where(x)}; move both with adjointcore.backend.to_device(..., "
                        f"'gpu' or 'cpu').")


def time_value(t, owner):
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


def check_y_bar(y_bar, shape):
    """``y_bar`` must be a float/complex array of the forward output's ``shape``."""
    return check_array("y_bar", y_bar, shape=tuple(shape),
                       fix="Pass the cotangent of the forward output y (same shape).")


def _out_dtype(*arrays_or_scalars):
    """Result dtype of combining arrays (and Python scalars, which do not widen)."""
    dtypes = [a.dtype for a in arrays_or_scalars if hasattr(a, "dtype")]
    if any(isinstance(a, complex) for a in arrays_or_scalars):
        dtypes.append(np.complex64)
    return np.result_type(*dtypes)


# -- caches ---------------------------------------------------------------------------------------
class LinearCache(NamedTuple):
    """Cache of :class:`Linear`: the input ``x`` (N, in_features)."""
    x: Any


class ConcatLinearCache(NamedTuple):
    """Cache of :class:`ConcatLinear`: the input ``x`` (N, in_features) and the time ``t``."""
    x: Any
    t: Any


# -- layers ---------------------------------------------------------------------------------------
class Linear(Layer):
    """Affine map ``y = x @ W.T + b``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
        Include the bias ``b`` (default True).
    init : str
        Weight scheme, one of :data:`adjointcore.init.WEIGHT_SCHEMES` (default
        ``"kaiming_uniform"``); the bias is uniform on ``+-1/sqrt(fan_in)``.

    Notes
    -----
    Shapes: ``x`` (N, in_features) -> ``y`` (N, out_features). Parameters (flat, in order):
    ``"weight"`` (out_features, in_features), ``"bias"`` (out_features,).

    VJP: ``x_bar = y_bar @ W``, ``W_bar = y_bar.T @ x``, ``b_bar = y_bar.sum(0)``.
    """

    analytic = True
    _extra_inputs = 0  # ConcatLinear: one extra weight column for t

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 init: str = "kaiming_uniform"):
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"`bias` must be True or False, got {bias!r}.")
        self.bias = bool(bias)
        self.init_scheme = initmod.check_scheme(init)

    @property
    def param_shapes(self):
        fan_in = self.in_features + self._extra_inputs
        shapes = {"weight": (self.out_features, fan_in)}
        if self.bias:
            shapes["bias"] = (self.out_features,)
        return shapes

    def _init_views(self, rng, views):
        fan_in = self.in_features + self._extra_inputs
        shape = views["weight"].shape
        views["weight"][...] = initmod.init_weight(self.init_scheme, rng, shape, fan_in,
                                                   self.out_features)
        if self.bias:
            views["bias"][...] = initmod.init_bias(rng, (self.out_features,), fan_in)

    def output_shape(self, input_shape) -> tuple:
        shape = tuple(input_shape)
        if len(shape) != 2 or shape[1] != self.in_features:
            raise ShapeError(f"{self!r} maps (N, {self.in_features}) to (N, "
                             f"{self.out_features}); got input_shape {shape}.")
        return shape[0], self.out_features

    def _check_input(self, params, x):
        x = check_array("x", x, ndim=2, fix=f"{type(self).__name__} takes (N, in_features); "
                                            f"flatten images with Flatten() first.")
        if x.shape[1] != self.in_features:
            raise ShapeError(f"`x` has {x.shape[1]} features (shape {tuple(x.shape)}) but "
                             f"{self!r} expects in_features={self.in_features}.")
        views = self.views(params)
        check_backends(repr(self), params, x)
        return views

    def forward(self, params, x, **context):
        """``y = x @ W.T + b``; returns ``(y, LinearCache(x))``.

        Parameters
        ----------
        params : ndarray, shape (n_params,)
        x : ndarray, shape (N, in_features)
        """
        v = self._check_input(params, x)
        xp = get_array_module(x)
        y = xp.matmul(x, v["weight"].T)
        if self.bias:
            y += v["bias"]
        return y, LinearCache(x)

    def vjp(self, params, cache, y_bar, need_params=True):
        """Returns ``(x_bar (N, in_features), params_bar (n_params,) or None)``."""
        v = self.views(params)
        x = cache.x
        check_y_bar(y_bar, (x.shape[0], self.out_features))
        xp = get_array_module(y_bar)
        x_bar = xp.matmul(y_bar, v["weight"])
        if not need_params:
            return x_bar, None
        params_bar = xp.empty(params.shape[0], dtype=_out_dtype(y_bar, x, params))
        g = self.views(params_bar)
        g["weight"][...] = xp.matmul(y_bar.T, x)
        if self.bias:
            y_bar.sum(axis=0, out=g["bias"])
        return x_bar, params_bar


class ConcatLinear(Linear):
    """Time-conditioned dense layer ``y = [x, t] @ W.T + b`` (Chen et al. ``ConcatLinear`` [1]_).

    ``t`` is appended as the last input column: ``weight`` has shape
    (out_features, in_features + 1) and its last column multiplies ``t``. Computed without
    building the concatenated input: ``y = x @ W[:, :-1].T + t * W[:, -1] + b``.

    Parameters and init as :class:`Linear` (``fan_in = in_features + 1``).
    ``forward(params, x, t=t)`` requires ``t`` (float or 0-d array); ``t`` receives no gradient.
    """

    time_dependent = True
    _extra_inputs = 1

    def forward(self, params, x, t=None, **context):
        """``y = x @ W[:, :-1].T + t W[:, -1] + b``; returns ``(y, ConcatLinearCache(x, t))``."""
        v = self._check_input(params, x)
        t = time_value(t, repr(self))
        xp = get_array_module(x)
        w = v["weight"]
        y = xp.matmul(x, w[:, :-1].T)
        if isinstance(t, complex) and y.dtype.kind != "c":
            y = y.astype(np.result_type(y.dtype, np.complex64))
        y += t * w[:, -1]
        if self.bias:
            y += v["bias"]
        return y, ConcatLinearCache(x, t)

    def vjp(self, params, cache, y_bar, need_params=True):
        """Returns ``(x_bar (N, in_features), params_bar or None)``; no gradient for ``t``."""
        v = self.views(params)
        x, t = cache
        check_y_bar(y_bar, (x.shape[0], self.out_features))
        xp = get_array_module(y_bar)
        x_bar = xp.matmul(y_bar, v["weight"][:, :-1])
        if not need_params:
            return x_bar, None
        params_bar = xp.empty(self.n_params, dtype=_out_dtype(y_bar, x, params, t))
        g = self.views(params_bar)
        column_sum = y_bar.sum(axis=0)
        g["weight"][:, :-1] = xp.matmul(y_bar.T, x)
        g["weight"][:, -1] = t * column_sum
        if self.bias:
            g["bias"][...] = column_sum
        return x_bar, params_bar

