"""The thesis' image classifiers (seed 003: Bijsterbosch, *The Parameter Efficiency of Neural
ODEs*, sections 7.3 and 8): models, parameter counts, the thesis' tables and ablations.

Trained by the loop of :mod:`experiments._image` (``thesis_efficiency`` and
``thesis_eval_solvers``).

Models (:func:`build_model`, ``cfg["model"]``)
----------------------------------------------
Simple architecture (section 7.3.1, Table 7.4). ``C = width``, ``a = augment``, ``W = C + a``::

    odenet        Conv2d(1, C, 1x1) -> [pre_activation] -> ODEBlock(augment=a, field =
                  [Conv2d(W, W, 3x3, pad 1), GroupNorm(groups, W), activation])
                  -> AvgPool2d(pool) -> Flatten -> Linear(., 10)
    resnet_small  Conv2d(1, W, 1x1) -> [pre_activation] -> 1 x Residual([Conv2d(W, W, 3x3),
                  GroupNorm, activation]) -> AvgPool2d(pool) -> Flatten -> Linear(., 10)
    resnet_large  the same with ``blocks_large`` (3) residual blocks of their own weights

(``activation`` ReLU and no ``pre_activation`` unless set: the ablations of Tables 7.1-7.2,
:data:`ABLATIONS`; the ODE block integrates over ``[0, t1]``, Table 7.3)

so the three match in structure: the ODE block's field *is* the residual block (the thesis'
ODEnet has 64 + 2 channels, its ResNets 66). ``downsample = d > 1`` (a CPU-scale option; 1 in
the thesis) makes the stem a ``d x d`` convolution with stride ``d`` (a linear map of each
``d x d`` patch, so no pixel is dropped) and the block runs on ``28/d x 28/d`` images. With
``H = 28 / d`` and ``S = (H / pool)^2`` the parameter counts are (:func:`simple_formula`)::

    odenet:        (d^2 + 1) C   +     (9 W^2 + W) + 2 W      + (10 W S + 10)
    resnet (k):    (d^2 + 1) W   + k [(9 W^2 + W) + 2 W]      + (10 W S + 10)

(with ``time_conv`` the ODE field's convolution also sees a constant time channel: ``+ 9 W``).
At the thesis' scale (C = 64, a = 2, H = 28, pool 2) this gives
168,900 / 168,904 / 247,708 parameters of which 39,530 / 39,534 / 118,338 outside the fully
connected layer; the thesis reports 169,000 / 169,000 / 248,000 and 40,000 / 40,100 / 119,000.

Complex architecture (section 7.3.2, Table 7.5), widths ``c1, c2, c3``, each stage a
convolution, max pooling (2x2, padded when the size is odd), GroupNorm and ReLU; channels grow by
zero padding, not by 1x1 convolutions::

    complex_resnet  per stage: ChannelPad(c_i - c_{i-1}) -> Residual([ChannelUnpad,
                    Conv2d(c_{i-1}, c_i, 3x3)]) (the skip is the zero-padded input, taken before
                    the pooling) -> MaxPool2d -> GroupNorm -> ReLU; then Flatten -> Linear
    complex_odenet  ODEBlock(augment = c3 - 1) on (c3, 28, 28) states; field = [ChannelUnpad
                    (keeps the image channel and one zero channel), the three stages (first
                    convolution 2 -> c1), SpatialPad back to 28 x 28]; after the block
                    SpatialCrop to the last stage's size -> Flatten -> Linear

as in the thesis: zero channels in front of the block, removed (all but one) inside the field,
and zero spatial padding of the field's output so that the state keeps its dimensions. Here
``downsample = d > 1`` is a ``d x d`` average pool in front of the network.

"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import numpy as np

from adjointcore.layers import (
    AvgPool2d,
    ChannelPad,
    ChannelUnpad,
    ConcatConv2d,
    Conv2d,
    Flatten,
    GroupNorm,
    Linear,
    MaxPool2d,
    ParameterFree,
    ReLU,
    Residual,
    Sequential,
    Softplus,
    Tanh,
)
from nets.odeblock import ODEBlock

from ._image import image_size

__all__ = ["SIMPLE_MODELS", "COMPLEX_MODELS", "MODELS", "ODE_MODELS", "THESIS_TABLE_8_1",
           "THESIS_TABLE_7_4", "THESIS_TABLE_7_5", "THESIS_ABLATIONS", "THESIS_SCALE",
           "ABLATIONS", "SpatialPad", "SpatialCrop", "build_model", "simple_formula",
           "param_counts", "count_table"]

SIMPLE_MODELS = ("odenet", "resnet_small", "resnet_large")
COMPLEX_MODELS = ("complex_odenet", "complex_resnet")
MODELS = SIMPLE_MODELS + COMPLEX_MODELS
ODE_MODELS = ("odenet", "complex_odenet")

#: Table 8.1 of the thesis (FashionMNIST rows): test accuracy (%), test loss, mean epoch time
#: (one K80 GPU).
THESIS_TABLE_8_1 = {
    "odenet": (90.36, 0.2706, "4 min"), "resnet_small": (90.56, 0.2686, "17 s"),
    "resnet_large": (90.30, 0.2695, "24 s"), "complex_odenet": (90.80, 0.2523, "18 min"),
    "complex_resnet": (90.73, 0.2552, "23 s"),
}
#: Tables 7.4 / 7.5 (FashionMNIST): parameters, and parameters outside the fully connected layer
#: (the thesis gives one count for both complex models).
THESIS_TABLE_7_4 = {"odenet": (169_000, 40_000), "resnet_small": (169_000, 40_100),
                    "resnet_large": (248_000, 119_000)}
THESIS_TABLE_7_5 = {"complex_odenet": (394_000, 353_000), "complex_resnet": (394_000, 353_000)}
#: Tables 7.1-7.3 (FashionMNIST, 10k-subset mode): the ablations, as rows (table, setting,
#: accuracy %, loss, FNFE, BNFE; 0 where not reported). 7.1: activation before the ODE block
#: (``pre_activation``); 7.2: inside it (``activation``); 7.3: final time ``t1``.
THESIS_ABLATIONS = [
    ("7.1", "pre_activation=softplus", 86.06, 0.3520, 0, 0),
    ("7.1", "pre_activation=relu", 87.06, 0.2920, 0, 0),
    ("7.1", "pre_activation=tanh", 87.04, 0.2932, 0, 27),
    ("7.1", "pre_activation=none", 86.90, 0.2953, 0, 27),
    ("7.2", "activation=softplus", 81.54, 0.5343, 0, 0),
    ("7.2", "activation=tanh", 87.1, 0.3666, 0, 0),
    ("7.2", "activation=relu", 88.3, 0.3369, 0, 0),
    ("7.3", "t1=1", 88.02, 0.3417, 26, 27), ("7.3", "t1=2", 87.86, 0.3506, 32, 39),
    ("7.3", "t1=5", 86.88, 0.3850, 38, 63), ("7.3", "t1=10", 85.36, 0.4431, 50, 80),
]   # Table 7.3, t1=10: "the BNFE increased from 75 to 80 during training"; 7.1: only tanh and
#     no activation have a BNFE in the text (27)
#: The thesis' widths (simple: 64 + 2 channels; complex: inferred, see experiments README).
THESIS_SCALE = {"width": 64, "augment": 2, "groups": 2, "blocks_large": 3, "pool": 2,
                "downsample": 1, "complex_widths": [64, 128, 256], "time_conv": False}


#: Ablation settings of the simple models (thesis Tables 7.1-7.2; Table 7.3's final time is
#: ``t1``): name -> (default, choices). They enter a run's configuration only when set to
#: something other than the default, so the identity of default runs does not depend on them.
ABLATIONS = {"activation": ("relu", ("relu", "tanh", "softplus")),
             "pre_activation": ("none", ("none", "relu", "tanh", "softplus"))}



# ------------------------------------------------------------------------------- layers
class _ShapeCache(NamedTuple):
    x_shape: tuple


def _zero_pad(x, shape):
    """``x`` (N, C, h, w) in the top-left corner of zeros of ``shape`` (N, C, H, W)."""
    y = np.zeros(shape, dtype=x.dtype)
    y[:, :, :x.shape[2], :x.shape[3]] = x
    return y


def _crop(x, height: int, width: int):
    """The top-left ``(height, width)`` of H and W of ``x``, contiguous."""
    return np.ascontiguousarray(x[:, :, :height, :width])


class _SpatialResize(ParameterFree):
    """Shared plumbing of :class:`SpatialPad` and :class:`SpatialCrop`: linear maps of H and W
    to ``(height, width)``, checked by ``output_shape``; the JVP is the map itself."""

    analytic = True

    def __init__(self, height: int, width: int):
        self.height, self.width = int(height), int(width)

    def forward(self, params, x, **context):
        self.output_shape(x.shape)
        return self.apply(params, x)

    def vjp(self, params, cache, y_bar, need_params=True):
        return self.apply_vjp(params, cache, y_bar), self._params_bar(y_bar, need_params)

    def apply_jvp(self, params, cache, x_dot, params_dot=None):
        return self.apply(params, x_dot)[0]

    jvp = apply_jvp


class SpatialPad(_SpatialResize):
    """Zero padding at the bottom/right of H and W up to ``(height, width)``: the complex
    ODEnet's way of giving the field's pooled output the state's dimensions (thesis 7.3.2).
    Linear; the VJP crops the cotangent."""

    def output_shape(self, input_shape):
        n, c, h, w = input_shape
        if h > self.height or w > self.width:
            raise ValueError(f"SpatialPad to {self.height}x{self.width} got a larger input "
                             f"{h}x{w}.")
        return (n, c, self.height, self.width)

    def apply(self, params, x, t=None, rng=None, tape=True):
        n, c = x.shape[:2]
        return _zero_pad(x, (n, c, self.height, self.width)), _ShapeCache(tuple(x.shape))

    def apply_vjp(self, params, cache, y_bar, params_bar=None):
        return _crop(y_bar, *cache.x_shape[2:])


class SpatialCrop(_SpatialResize):
    """The top-left ``(height, width)`` of H and W (removes :class:`SpatialPad`'s zeros after
    the block). Linear; the VJP pads the cotangent with zeros."""

    def output_shape(self, input_shape):
        n, c, h, w = input_shape
        if h < self.height or w < self.width:
            raise ValueError(f"SpatialCrop to {self.height}x{self.width} got a smaller input "
                             f"{h}x{w}.")
        return (n, c, self.height, self.width)

    def apply(self, params, x, t=None, rng=None, tape=True):
        return _crop(x, self.height, self.width), _ShapeCache(tuple(x.shape))

    def apply_vjp(self, params, cache, y_bar, params_bar=None):
        return _zero_pad(y_bar, cache.x_shape)


# ------------------------------------------------------------------------------- models
def _pooled(size: int) -> tuple:
    """``(padding, output size)`` of a 2x2 max pool: padded by one when ``size`` is odd."""
    pad = size % 2
    return pad, (size + 2 * pad - 2) // 2 + 1


def _ode_block(field, cfg, augment: int, monitor) -> ODEBlock:
    return ODEBlock(field, t_span=(0.0, float(cfg["t1"])), method=cfg["solver"],
                    steps=cfg.get("steps"), rtol=cfg["rtol"], atol=cfg["atol"],
                    gradient=cfg["gradient"], augment=augment, monitor=monitor)


def _activation(name: str):
    return {"relu": ReLU, "tanh": Tanh, "softplus": Softplus}[name]()


def _pre(cfg) -> list:
    """The activation between the stem and the block (Table 7.1; none by default)."""
    name = cfg.get("pre_activation", "none")
    return [] if name == "none" else [_activation(name)]


def _conv3(cin, cout, time_conv: bool):
    return (ConcatConv2d if time_conv else Conv2d)(cin, cout, 3, padding=1)


def _simple(cfg, kind: str, monitor) -> Sequential:
    c, a = cfg["width"], cfg["augment"]
    w, size = c + a, image_size(cfg)
    d = cfg["downsample"]
    head = ([AvgPool2d(cfg["pool"])] if cfg["pool"] > 1 else []) + [
        Flatten(), Linear(w * (size // cfg["pool"]) ** 2, 10)]
    if kind == "odenet":
        field = Sequential(_conv3(w, w, cfg["time_conv"]), GroupNorm(cfg["groups"], w),
                           _activation(cfg.get("activation", "relu")))
        return Sequential(Conv2d(1, c, d, stride=d), *_pre(cfg),
                          _ode_block(field, cfg, a, monitor), *head)
    k = 1 if kind == "resnet_small" else cfg["blocks_large"]
    blocks = [Residual(Sequential(Conv2d(w, w, 3, padding=1), GroupNorm(cfg["groups"], w),
                                  _activation(cfg.get("activation", "relu"))))
              for _ in range(k)]
    return Sequential(Conv2d(1, w, d, stride=d), *_pre(cfg), *blocks, *head)


def _stages(widths, c_in: int, size: int, groups: int, residual: bool, time_conv: bool):
    """The complex architecture's three conv / max-pool / GroupNorm / ReLU stages."""
    layers, prev = [], c_in
    for c in widths:
        pad, size = _pooled(size)
        if residual:
            grow = c - prev
            conv = Conv2d(prev, c, 3, padding=1)
            layers += [ChannelPad(grow), Residual(Sequential(ChannelUnpad(grow), conv))]
        else:
            layers.append(_conv3(prev, c, time_conv))
        layers += [MaxPool2d(2, padding=pad), GroupNorm(min(groups, c), c), ReLU()]
        prev = c
    return layers, size


def _complex(cfg, kind: str, monitor) -> Sequential:
    widths = [int(c) for c in cfg["complex_widths"]]
    size0 = image_size(cfg)
    pre = [AvgPool2d(cfg["downsample"])] if cfg["downsample"] > 1 else []
    if kind == "complex_resnet":
        stages, size = _stages(widths, 1, size0, cfg["groups"], True, False)
        return Sequential(*pre, *stages, Flatten(), Linear(widths[-1] * size * size, 10))
    c3 = widths[-1]
    stages, size = _stages(widths, 2, size0, cfg["groups"], False, cfg["time_conv"])
    field = Sequential(ChannelUnpad(c3 - 2), *stages, SpatialPad(size0, size0))
    block = _ode_block(field, cfg, c3 - 1, monitor)
    return Sequential(*pre, block, SpatialCrop(size, size), Flatten(),
                      Linear(c3 * size * size, 10))


def build_model(cfg, monitor: Optional[Callable] = None) -> Sequential:
    """The network ``cfg["model"]`` (module notes); ``monitor(phase, work)`` goes to its ODE
    block (if any)."""
    kind = cfg["model"]
    if kind in SIMPLE_MODELS:
        return _simple(cfg, kind, monitor)
    return _complex(cfg, kind, monitor)


def simple_formula(kind: str, width: int, augment: int, size: int = 28, pool: int = 2,
                   blocks_large: int = 3, time_conv: bool = False) -> dict:
    """Closed-form parameter counts of the simple models (module notes): ``{"total", "fc",
    "not_fc"}``."""
    w = width + augment
    d = 28 // size
    fc = 10 * w * (size // pool) ** 2 + 10
    block = 9 * w * w + w + 2 * w
    if kind == "odenet":
        not_fc = (d * d + 1) * width + block + (9 * w if time_conv else 0)
    else:
        not_fc = (d * d + 1) * w + (1 if kind == "resnet_small" else blocks_large) * block
    return {"total": not_fc + fc, "fc": fc, "not_fc": not_fc}


def param_counts(model) -> dict:
    """``{"total", "fc", "not_fc"}`` of a built model (its last layer is the classifier)."""
    total = int(model.n_params)
    fc = int(model.layers[-1].n_params)
    return {"total": total, "fc": fc, "not_fc": total - fc}


def count_table(cfg) -> list:
    """Parameter counts of all five models at this run's widths and at the thesis' (Tables 7.4
    and 7.5), with the thesis' reported figures."""
    rows = []
    for kind in MODELS:
        ours = param_counts(build_model({**cfg, "model": kind}))
        thesis_scale = param_counts(build_model({**cfg, **THESIS_SCALE, "model": kind}))
        reported = {**THESIS_TABLE_7_4, **THESIS_TABLE_7_5}[kind]
        rows.append({"model": kind, "params": ours["total"], "params_fc": ours["fc"],
                     "params_not_fc": ours["not_fc"],
                     "thesis_scale_params": thesis_scale["total"],
                     "thesis_scale_params_not_fc": thesis_scale["not_fc"],
                     "thesis_reported_params": reported[0],
                     "thesis_reported_params_not_fc": reported[1]})
    return rows
