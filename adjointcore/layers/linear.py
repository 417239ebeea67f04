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

from typing import Any, NamedTuple

import numpy as np

from .. import init as initmod
from ..backend import get_array_module
from ..errors import ShapeError, check_array, check_positive_int
from ._checks import check_backends, check_flag, check_y_bar, out_dtype, time_value
from .base import Layer

__all__ = ["Linear", "ConcatLinear", "LinearCache", "ConcatLinearCache"]


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
        self.bias = check_flag("bias", bias)
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
        params_bar = xp.empty(params.shape[0], dtype=out_dtype(y_bar, x, params))
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
        params_bar = xp.empty(self.n_params, dtype=out_dtype(y_bar, x, params, t))
        g = self.views(params_bar)
        column_sum = y_bar.sum(axis=0)
        g["weight"][:, :-1] = xp.matmul(y_bar.T, x)
        g["weight"][:, -1] = t * column_sum
        if self.bias:
            g["bias"][...] = column_sum
        return x_bar, params_bar

