"""Small default examples of every built-in layer, for ``python -m adjointcore.gradcheck``.

Each example is ``(name, layer, x, kwargs)`` with ``kwargs`` the extra arguments of
:func:`~adjointcore.gradcheck.check_layer` (``params``, ``t``, ``rng``). Inputs of kinked layers
stay away from their kinks (``|x| >= 0.05`` for ReLU-type layers, max-pool values separated by
>= 0.075); parameters of norm layers are perturbed away from their init values (weight 1,
bias 0) so every term of the VJP is exercised.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import Array
from ..layers.activation import ELU, LeakyReLU, ReLU, Sigmoid, Softplus, Tanh
from ..layers.compose import Sequential
from ..layers.conv import ConcatConv2d, Conv2d
from ..layers.dropout import Dropout
from ..layers.elementwise import Parallel, Scale
from ..layers.linear import ConcatLinear, Linear
from ..layers.norm import BatchNorm, GroupNorm
from ..layers.pool import AvgPool2d, GlobalAvgPool2d, MaxPool2d
from ..layers.residual import Residual
from ..layers.shape import ChannelPad, ChannelUnpad, Flatten, Reshape
from ._values import away_from_kinks, distinct_values

__all__ = ["builtin_examples"]


def _perturbed(layer: Any, rng: np.random.Generator, scale: float = 0.3) -> dict[str, Any]:
    p = layer.init(rng)
    return {"params": p + scale * rng.standard_normal(p.shape)}


def _dense(rng: np.random.Generator) -> Array:
    return rng.uniform(-1.5, 1.5, (3, 4))


def _image(rng: np.random.Generator, c: int = 2, h: int = 5, w: int = 4) -> Array:
    return rng.uniform(-1.5, 1.5, (2, c, h, w))


def _elementwise(rng: np.random.Generator) -> list[tuple[str, Any, Array, dict[str, Any]]]:
    kinked = away_from_kinks(rng.uniform(-1.5, 1.5, (2, 3, 4)), 5e-2)
    smooth = rng.uniform(-3, 3, (2, 3, 4))
    return [
        ("ReLU", ReLU(), kinked, {}),
        ("LeakyReLU(0.1)", LeakyReLU(0.1), kinked, {}),
        ("Tanh", Tanh(), smooth, {}),
        ("Sigmoid", Sigmoid(), smooth, {}),
        ("Softplus(2)", Softplus(2.0), smooth, {}),
        ("ELU(0.7)", ELU(0.7), kinked, {}),
    ]


def _dense_and_conv(rng: np.random.Generator) -> list[tuple[str, Any, Array, dict[str, Any]]]:
    return [
        ("Linear(4, 3)", Linear(4, 3), _dense(rng), {}),
        ("Linear(4, 3, bias=False)", Linear(4, 3, bias=False), _dense(rng), {}),
        ("ConcatLinear(4, 3)", ConcatLinear(4, 3), _dense(rng), {"t": 0.7}),
        ("Conv2d(2, 3, 3, padding=1)", Conv2d(2, 3, 3, padding=1), _image(rng), {}),
        ("Conv2d(2, 4, 3, stride=2)", Conv2d(2, 4, 3, stride=2), _image(rng), {}),
        ("Conv2d(4, 4, (2, 3), stride=(2, 1), padding=(1, 2), groups=2)",
         Conv2d(4, 4, (2, 3), stride=(2, 1), padding=(1, 2), groups=2), _image(rng, c=4), {}),
        ("ConcatConv2d(2, 3, 3, padding=1)", ConcatConv2d(2, 3, 3, padding=1), _image(rng),
         {"t": -0.4}),
        ("ConcatConv2d(3, 2, 3, stride=2, groups=2)", ConcatConv2d(3, 2, 3, stride=2, groups=2),
         _image(rng, c=3), {"t": 0.25}),
    ]


def _pool_and_shape(rng: np.random.Generator) -> list[tuple[str, Any, Array, dict[str, Any]]]:
    peaks = distinct_values(rng, (2, 2, 5, 4), margin=0.1)
    return [
        ("MaxPool2d(2)", MaxPool2d(2), peaks, {}),
        ("MaxPool2d(3, stride=1, padding=1)", MaxPool2d(3, stride=1, padding=1), peaks, {}),
        ("AvgPool2d(2)", AvgPool2d(2), _image(rng), {}),
        ("AvgPool2d(3, stride=2, padding=1)", AvgPool2d(3, stride=2, padding=1), _image(rng), {}),
        ("GlobalAvgPool2d", GlobalAvgPool2d(), _image(rng), {}),
        ("Flatten", Flatten(), _image(rng), {}),
        ("Reshape((4, -1))", Reshape((4, -1)), _image(rng), {}),
        ("ChannelPad(2)", ChannelPad(2), _image(rng), {}),
        ("ChannelUnpad(1)", ChannelUnpad(1), _image(rng), {}),
    ]


def _norm_and_dropout(rng: np.random.Generator) -> list[tuple[str, Any, Array, dict[str, Any]]]:
    bn, gn = BatchNorm(2), GroupNorm(2, 4)
    bn_eval = BatchNorm(2, mode="eval", running=(rng.standard_normal(2), rng.uniform(0.5, 2, 2)))
    return [
        ("BatchNorm(2) train, dense", bn, distinct_values(rng, (4, 2), 0.2), _perturbed(bn, rng)),
        ("BatchNorm(2) train, images", bn, distinct_values(rng, (2, 2, 3, 3), 0.1),
         _perturbed(bn, rng)),
        ("BatchNorm(2) eval", bn_eval, _image(rng), _perturbed(bn_eval, rng)),
        ("GroupNorm(2, 4)", gn, distinct_values(rng, (2, 4, 3, 2), 0.1), _perturbed(gn, rng)),
        ("Dropout(0.3)", Dropout(0.3), _image(rng), {"rng": np.random.default_rng(7)}),
        ("Dropout(0.3, eval)", Dropout(0.3, mode="eval"), _image(rng), {}),
    ]


def _compositions(rng: np.random.Generator) -> list[tuple[str, Any, Array, dict[str, Any]]]:
    cnn = Sequential(Conv2d(2, 4, 3, padding=1), GroupNorm(2, 4), Tanh(),
                     Conv2d(4, 4, 3, stride=2, padding=1), GlobalAvgPool2d(), Linear(4, 3))
    mlp = Sequential(Linear(4, 8), Softplus(), Linear(8, 8), Tanh(), Linear(8, 2))
    ode_f = Sequential(ConcatLinear(4, 6), Tanh(), ConcatLinear(6, 4))
    res = Residual(Sequential(Conv2d(2, 2, 3, padding=1), Tanh(), Conv2d(2, 2, 3, padding=1)))
    drop = Sequential(Linear(4, 6), Dropout(0.5), Sigmoid(), Linear(6, 2))
    return [
        ("Sequential CNN (conv, groupnorm, tanh, conv, gap, linear)", cnn, _image(rng), {}),
        ("Sequential MLP (softplus, tanh)", mlp, _dense(rng), {}),
        ("Sequential ODE field (ConcatLinear, tanh)", ode_f, _dense(rng), {"t": 0.3}),
        ("Residual(conv, tanh, conv)", res, _image(rng), {}),
        ("Sequential with Dropout", drop, _dense(rng), {"rng": np.random.default_rng(3)}),
    ]


def _small_layers(rng: np.random.Generator) -> list[tuple[str, Any, Array, dict[str, Any]]]:
    scale, scale_img = Scale(4), Scale(2)
    branch = Sequential(Parallel(Scale(4), Linear(4, 4, bias=False)), Tanh())
    return [
        ("Scale(4)", scale, _dense(rng), _perturbed(scale, rng)),
        ("Scale(2), images", scale_img, _image(rng), _perturbed(scale_img, rng)),
        ("Parallel(Scale, Linear) + tanh (ANODEV2 activation field)", branch, _dense(rng),
         _perturbed(branch, rng)),
    ]


def builtin_examples(rng: np.random.Generator | None = None
                     ) -> list[tuple[str, Any, Array, dict[str, Any]]]:
    """Examples covering every built-in layer, with small default inputs.

    Parameters
    ----------
    rng : numpy.random.Generator, optional
        Source of inputs and parameter perturbations (default ``default_rng(0)``).

    Returns
    -------
    list of (name, layer, x, kwargs)
        ``check_layer(layer, x, **kwargs)`` runs the checks of one example.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    return (_elementwise(rng) + _dense_and_conv(rng) + _pool_and_shape(rng)
            + _norm_and_dropout(rng) + _compositions(rng) + _small_layers(rng))
