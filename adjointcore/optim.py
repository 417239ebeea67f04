"""Optimisers with explicit state, and a step learning-rate schedule.

An optimiser holds only hyper-parameters. ``state = opt.init_state(params)`` creates its state
(a NamedTuple of arrays) and ``params, state = opt.step(params, grad, state)`` returns *new*
arrays; nothing is modified in place, so a training step can be replayed or checkpointed.
``params`` may be any array (normally the flat parameter vector of a network), NumPy or CuPy.
:class:`SGD` has classical and Nesterov momentum [1]_; :class:`Adam` is Kingma and Ba's method
[2]_.

References
----------
.. [1] I. Sutskever, J. Martens, G. Dahl, G. Hinton, "On the importance of initialization and
   momentum in deep learning", ICML 2013 (momentum and Nesterov momentum).
.. [2] D. P. Kingma, J. Ba, "Adam: a method for stochastic optimization", ICLR 2015.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from itertools import pairwise
from typing import Any, NamedTuple

import numpy as np

from .backend import Array, get_array_module
from .errors import ShapeError, check_array

__all__ = ["SGD", "SGDState", "Adam", "AdamState", "StepDecay"]


def _real(name: str, value: Any, ok: Callable[[float], bool], want: str) -> float:
    """``value`` as a finite float with ``ok(value)`` true; else an error saying ``want``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"`{name}` must be a real number {want}, got {value!r}.")
    v = float(value)
    if not (math.isfinite(v) and ok(v)):
        raise ValueError(f"`{name}` must be a finite number {want}, got {value!r}.")
    return v


def _int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _positive(v: float) -> bool:
    return v > 0


def _unit(v: float) -> bool:
    return 0 <= v < 1


def _nonnegative(v: float) -> bool:
    return v >= 0


def _lr(lr: float | None, default: float) -> float:
    return default if lr is None else _real("lr", lr, _positive, "> 0")


def _check_step_args(params: Array, grad: Array, state_arrays: dict[str, Array | None]) -> None:
    check_array("params", params, allow_complex=False)
    check_array("grad", grad, shape=tuple(params.shape), allow_complex=False,
                fix="Pass the gradient of the loss w.r.t. params (same shape).")
    for name, a in state_arrays.items():
        if a is None:
            continue
        check_array(f"state.{name}", a, allow_complex=False,
                    fix="Create the state with opt.init_state(params).")
        if tuple(a.shape) != tuple(params.shape):
            raise ShapeError(f"`state.{name}` has shape {tuple(a.shape)} but `params` has shape "
                             f"{tuple(params.shape)}; create the state with "
                             f"opt.init_state(params) for these parameters.")


class SGDState(NamedTuple):
    """State of :class:`SGD`: ``velocity`` (shape of params), or None without momentum."""
    velocity: Array | None


class SGD:
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.

    With ``g = grad + weight_decay * params``::

        v <- momentum * v + g
        params <- params - lr * (g + momentum * v   if nesterov else   v)

    (the convention of PyTorch's ``SGD`` with zero dampening; ``v`` starts at 0).

    Parameters
    ----------
    lr : float > 0
    momentum : float in [0, 1), default 0
    weight_decay : float >= 0, default 0
    nesterov : bool, default False
        Requires ``momentum > 0``.
    """

    def __init__(self, lr: float, momentum: float = 0.0, weight_decay: float = 0.0,
                 nesterov: bool = False) -> None:
        self.lr = _real("lr", lr, _positive, "> 0")
        self.momentum = _real("momentum", momentum, _unit, "in [0, 1)")
        self.weight_decay = _real("weight_decay", weight_decay, _nonnegative, ">= 0")
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError("`nesterov=True` requires `momentum` > 0, got momentum=0; set e.g. "
                             "momentum=0.9 or nesterov=False.")

    def init_state(self, params: Array) -> SGDState:
        """Zero velocity (None when ``momentum == 0``)."""
        check_array("params", params, allow_complex=False)
        if self.momentum == 0:
            return SGDState(None)
        return SGDState(get_array_module(params).zeros_like(params))

    def step(self, params: Array, grad: Array, state: SGDState,
             lr: float | None = None) -> tuple[Array, SGDState]:
        """One update; returns ``(new_params, new_state)``. ``lr`` overrides ``self.lr``."""
        lr = _lr(lr, self.lr)
        if not isinstance(state, SGDState):
            raise TypeError(f"`state` must be an SGDState from init_state, got "
                            f"{type(state).__name__}.")
        _check_step_args(params, grad, {"velocity": state.velocity})
        g = grad + self.weight_decay * params if self.weight_decay else grad
        if self.momentum == 0:
            return params - lr * g, state
        if state.velocity is None:
            raise TypeError("`state.velocity` is None but momentum > 0; create the state with "
                            "this optimiser's init_state(params).")
        v = self.momentum * state.velocity + g
        direction = g + self.momentum * v if self.nesterov else v
        return params - lr * direction, SGDState(v)

    def __repr__(self) -> str:
        return (f"SGD(lr={self.lr}, momentum={self.momentum}, weight_decay={self.weight_decay}, "
                f"nesterov={self.nesterov})")


class AdamState(NamedTuple):
    """State of :class:`Adam`: step count ``t`` and the moment estimates ``m``, ``v``."""
    t: int
    m: Array
    v: Array


class Adam:
    """Adam [2]_ with bias correction and optional L2 weight decay (added to the gradient).

    With ``g = grad + weight_decay * params`` and ``t`` counted from 1::

        m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g**2
        params <- params - lr * (m / (1 - b1**t)) / (sqrt(v / (1 - b2**t)) + eps)

    The first step is therefore ``lr * g / (|g| + eps)``, about ``lr * sign(g)``.

    Parameters
    ----------
    lr : float > 0, default 1e-3
    betas : (float, float) in [0, 1), default (0.9, 0.999)
    eps : float > 0, default 1e-8
    weight_decay : float >= 0, default 0
    """

    def __init__(self, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        self.lr = _real("lr", lr, _positive, "> 0")
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"`betas` must be a pair (beta1, beta2), got {betas!r}.")
        self.betas = (_real("betas[0]", betas[0], _unit, "in [0, 1)"),
                      _real("betas[1]", betas[1], _unit, "in [0, 1)"))
        self.eps = _real("eps", eps, _positive, "> 0")
        self.weight_decay = _real("weight_decay", weight_decay, _nonnegative, ">= 0")

    def init_state(self, params: Array) -> AdamState:
        """``t = 0`` and zero moments."""
        check_array("params", params, allow_complex=False)
        xp = get_array_module(params)
        return AdamState(0, xp.zeros_like(params), xp.zeros_like(params))

    def step(self, params: Array, grad: Array, state: AdamState,
             lr: float | None = None) -> tuple[Array, AdamState]:
        """One update; returns ``(new_params, new_state)``. ``lr`` overrides ``self.lr``."""
        lr = _lr(lr, self.lr)
        if not isinstance(state, AdamState):
            raise TypeError(f"`state` must be an AdamState from init_state, got "
                            f"{type(state).__name__}.")
        _check_step_args(params, grad, {"m": state.m, "v": state.v})
        if state.m is None or state.v is None:
            raise TypeError("`state.m` and `state.v` must be arrays; create the state with "
                            "Adam.init_state(params).")
        _int("state.t", state.t, 0)
        xp = get_array_module(params)
        b1, b2 = self.betas
        g = grad + self.weight_decay * params if self.weight_decay else grad
        t = state.t + 1
        m = b1 * state.m + (1 - b1) * g
        v = b2 * state.v + (1 - b2) * (g * g)
        m_hat = m / (1 - b1 ** t)
        v_hat = v / (1 - b2 ** t)
        return params - lr * m_hat / (xp.sqrt(v_hat) + self.eps), AdamState(t, m, v)

    def __repr__(self) -> str:
        return (f"Adam(lr={self.lr}, betas={self.betas}, eps={self.eps}, "
                f"weight_decay={self.weight_decay})")


class StepDecay:
    """Piecewise-constant schedule ``lr(epoch) = base_lr * gamma ** (#milestones <= epoch)``.

    Parameters
    ----------
    base_lr : float > 0
    milestones : sequence of int
        Strictly increasing epochs (>= 1) at which the rate is multiplied by ``gamma``.
    gamma : float in (0, 1], default 0.1
    """

    def __init__(self, base_lr: float, milestones: Iterable[int], gamma: float = 0.1) -> None:
        self.base_lr = _real("base_lr", base_lr, _positive, "> 0")
        self.gamma = _real("gamma", gamma, lambda v: 0 < v <= 1, "in (0, 1]")
        try:
            ms = tuple(milestones)
        except TypeError as exc:
            raise TypeError(f"`milestones` must be a sequence of epochs, got {milestones!r}.") \
                from exc
        ms = tuple(_int(f"milestones[{i}]", m, 1) for i, m in enumerate(ms))
        if any(b <= a for a, b in pairwise(ms)):
            raise ValueError(f"`milestones` must be strictly increasing, got {list(ms)}; "
                             f"e.g. milestones=[30, 60, 90].")
        self.milestones = ms

    def __call__(self, epoch: int) -> float:
        """Learning rate for ``epoch`` (0-based integer)."""
        epoch = _int("epoch", epoch, 0)
        return self.base_lr * self.gamma ** sum(m <= epoch for m in self.milestones)

    def __repr__(self) -> str:
        return f"StepDecay(base_lr={self.base_lr}, milestones={list(self.milestones)}, " \
               f"gamma={self.gamma})"
