"""Shared pieces of the linear multistep steppers: history state, start-up steps, their adjoint.

A multistep stepper's state is ``(y_n, h_1, ..., h_m)``: the current value and ``m`` history
slots (past ``f`` values for Adams methods, ``y_{n-1}`` for two-step methods). ``init`` fills
the history with zero placeholders, which the first ``n_startup`` steps, explicit Runge-Kutta
steps (``solvers._rk.rk_step``), shift out. A start-up step hands ``k_1 = f(t_n, y_n)`` on as
history, so its adjoint takes an extra cotangent on that stage; the placeholders are constants,
so ``init_vjp`` drops their cotangents.

References
----------
E. Hairer, S. P. Norsett, G. Wanner, *Solving Ordinary Differential Equations I*, 2nd ed.,
Springer (1993), Ch. II (Runge-Kutta methods) and Ch. III (multistep methods and their
starting values). A. Sandu, "Reverse automatic differentiation of linear multistep methods",
in *Advances in Automatic Differentiation*, LNCSE 64, Springer (2008).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ._rk import RKStages, rk_step
from ._xp import Array, get_array_module
from .tableaux import TABLEAUX

__all__ = ["MultistepStepper", "add", "check_step_index", "rk_startup_step", "rk_startup_vjp"]


def add(a: Array | None, b: Array | None) -> Array | None:
    """``a + b`` where ``None`` means zero (never in place: inputs may be stored states)."""
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def check_step_index(n: int) -> None:
    """Raise ``ValueError`` unless ``n`` is a non-negative int (a step index)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"step: n must be a non-negative int (the step index), got {n!r}.")


def rk_startup_step(field: Any, tab_name: str | None, t: float, h: float, y: Array,
                    params: Any) -> tuple[Array, Array, RKStages]:
    """One explicit RK start-up step; returns ``(y1, f(t, y), stages)``.

    ``f(t, y)`` is copied out of the stage buffer so that the next state owns its arrays.
    """
    # a stepper with start-up steps names its method
    y1, _, stages = rk_step(field, TABLEAUX[tab_name], t, y, h, params, full=False)  # type: ignore[index]
    return y1, stages.k[0].copy(), stages


def rk_startup_vjp(field: Any, tab_name: str | None, h: float, stages: RKStages, y1_bar: Array,
                   k0_bar: Array | None, need_params: bool) -> tuple[Array, Array | None]:
    """Adjoint of an explicit RK step with an extra cotangent ``k0_bar`` on ``k_1 = f(t, y)``.

    The stepper hands ``k_1`` on as history, so its cotangent gets that extra term; the stage
    loop is written out here (rather than calling ``rk_step_vjp``) to keep one field VJP per
    stage. Stage equations: ``Y_i = y + h sum_{j<i} a_ij k_j``, ``k_i = f(t + c_i h, Y_i)``,
    ``y1 = y + h sum_i b_i k_i``. Returns ``(y_bar, params_bar)``.
    """
    # a stepper with start-up steps names its method
    tab = TABLEAUX[tab_name]  # type: ignore[index]
    s = len(stages.caches)
    k_bar = [float(h * tab.b[i]) * y1_bar for i in range(s)]
    k_bar[0] = add(k_bar[0], k0_bar)
    y_bar, params_bar = y1_bar, None
    for i in range(s - 1, -1, -1):
        stage_bar, p_bar, _ = field.vjp(stages.caches[i], k_bar[i], need_params)
        y_bar = y_bar + stage_bar
        params_bar = add(params_bar, p_bar)
        for j in range(i):
            a_ij = float(tab.a[i][j])
            if a_ij != 0.0:
                k_bar[j] = k_bar[j] + (h * a_ij) * stage_bar
    return y_bar, params_bar


class MultistepStepper:
    """Base of the multistep steppers: state ``(y_n,)`` plus ``n_history`` history slots.

    Subclasses set ``n_history``, ``n_startup`` and ``startup_method`` and define ``step`` and
    ``step_vjp``. ``uniform_grid = True``: the coefficients assume one step size (drivers refuse
    other grids). No trainable method parameters unless a subclass overrides ``method_params``.
    """

    uniform_grid = True
    n_history = 0

    @property
    def method_params(self) -> dict[str, float]:
        """No trainable method parameters: ``{}``."""
        return {}

    def init(self, field: Any, t0: float, y0: Array, params: Any) -> tuple[Array, ...]:
        """Initial state ``(y0, 0, ..., 0)`` with ``n_history`` zero placeholders."""
        xp = get_array_module(y0)
        return (y0,) + tuple(xp.zeros_like(y0) for _ in range(self.n_history))

    def init_vjp(self, field: Any, t0: float, y0: Array, params: Any,
                 state_bar: tuple[Array, ...]) -> tuple[Array, None]:
        """Adjoint of ``init``: ``(state_bar[0], None)`` (``init`` does not touch ``params``;
        the zero placeholders are constants, so their cotangents are dropped)."""
        return state_bar[0], None
