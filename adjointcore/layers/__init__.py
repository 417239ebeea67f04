"""Layers with hand-written forward and vector-Jacobian products (see docs/protocols.md)."""
from .activation import ELU, LeakyReLU, ReLU, Sigmoid, Softplus, Tanh
from .base import Layer, ParameterFree
from .compose import Sequential
from .conv import ConcatConv2d, Conv2d
from .dropout import Dropout
from .elementwise import Parallel, Scale
from .linear import ConcatLinear, Linear
from .norm import BatchNorm, GroupNorm, update_running_stats
from .pool import AvgPool2d, GlobalAvgPool2d, MaxPool2d
from .residual import Residual
from .shape import ChannelPad, ChannelUnpad, Flatten, Reshape

__all__ = [
    "Layer", "ParameterFree",
    "Linear", "ConcatLinear", "Conv2d", "ConcatConv2d",
    "MaxPool2d", "AvgPool2d", "GlobalAvgPool2d",
    "Flatten", "Reshape", "ChannelPad", "ChannelUnpad",
    "BatchNorm", "GroupNorm", "update_running_stats",
    "ReLU", "LeakyReLU", "Tanh", "Sigmoid", "Softplus", "ELU",
    "Dropout", "Sequential", "Residual", "Scale", "Parallel",
]
