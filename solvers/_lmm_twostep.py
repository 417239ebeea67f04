"""Explicit two-step steppers ``y_{n+1} = a0 y_n + a1 y_{n-1} + h beta f(t_n, y_n)``.

Two methods share this form and its exact adjoint: the explicit midpoint rule ("leapfrog",
``a0, a1, beta = 0, 1, 2``) and the LM-ResNet step of Lu et al. (``1 - k, k, 1``), whose
coefficient ``k`` is a trainable method parameter with its own cotangent. State
``(y_n, y_{n-1})``; step 0 is one Runge-Kutta start-up step (``solvers._lmm_base``).

References
----------
E. Hairer, S. P. Norsett, G. Wanner, *Solving Ordinary Differential Equations I*, 2nd ed.,
Springer (1993), Sections III.1 (explicit midpoint rule) and III.3 (zero-stability, root
condition). Y. Lu, A. Zhong, Q. Li, B. Dong, "Beyond finite layer neural networks: bridging deep
architectures and numerical differential equations", ICML 2018 (LM-architecture, eq. (1), and
its modified equation (3)).
"""
from __future__ import annotations

import math
from typing import Any

from ._lmm_base import MultistepStepper, check_step_index, rk_startup_step, rk_startup_vjp
from ._xp import Array, get_array_module

__all__ = ["LeapfrogStepper", "LMStepper"]


class _TwoStepStepper(MultistepStepper):
    """Shared machinery of ``y_{n+1} = a0 y_n + a1 y_{n-1} + h beta f(t_n, y_n)``.

    State ``(y_n, y_{n-1})``; step 0 is one RK step of ``self.startup_method`` giving
    ``(y_1, y_0)`` from ``(y_0, placeholder)``. Subclasses set ``_coefficients()``.
    """

    n_history = 1
    n_startup = 1
    startup_method: str | None = None

    def _coefficients(self) -> tuple[float, float, float]:
        raise NotImplementedError

    def step(self, field: Any, n: int, t: float, h: float, state: tuple[Array, ...],
             params: Any) -> tuple[tuple[Array, ...], int]:
        """Advance ``(y_n, y_{n-1})`` to ``(y_{n+1}, y_n)``; returns ``(state_next, nfe)``."""
        check_step_index(n)
        h = float(h)
        y, y_prev = state
        if n < self.n_startup:
            y1, _, stages = rk_startup_step(field, self.startup_method, t, h, y, params)
            return (y1, y), len(stages.k)
        a0, a1, beta = self._coefficients()
        f_n, _ = field.forward(t, y, params)
        return (a0 * y + a1 * y_prev + (h * beta) * f_n, y), 1

    def step_vjp(self, field: Any, n: int, t: float, h: float, state: tuple[Array, ...],
                 params: Any, state_next_bar: tuple[Array, ...], need_params: bool = True
                ) -> tuple[tuple[Array, ...], Array | None, dict[str, Any]]:
        """Exact adjoint of ``step``; returns ``(state_bar, params_bar, extra_bar)``."""
        check_step_index(n)
        h = float(h)
        y, y_prev = state
        y1_bar, y_copy_bar = state_next_bar
        if n < self.n_startup:
            _, _, stages = rk_startup_step(field, self.startup_method, t, h, y, params)
            y_bar, params_bar = rk_startup_vjp(field, self.startup_method, h, stages, y1_bar,
                                               None, need_params)
            extra = {name: 0.0 for name in self.method_params}
            return (y_bar + y_copy_bar, get_array_module(y).zeros_like(y)), params_bar, extra
        a0, a1, beta = self._coefficients()
        _, cache = field.forward(t, y, params)
        dy_bar, params_bar, _ = field.vjp(cache, (h * beta) * y1_bar, need_params)
        y_bar = a0 * y1_bar + y_copy_bar + dy_bar
        return (y_bar, a1 * y1_bar), params_bar, self._extra_bar(y, y_prev, y1_bar)

    def _extra_bar(self, y: Array, y_prev: Array, y1_bar: Array) -> dict[str, Any]:
        return {}


class LeapfrogStepper(_TwoStepStepper):
    """Explicit two-step midpoint rule ``y_{n+1} = y_{n-1} + 2 h f(t_n, y_n)`` (order 2).

    ``rho(z) = z^2 - 1`` has the simple roots ``+-1``: zero-stable but only weakly stable (the
    parasitic root ``-1`` makes it unsuitable for long dissipative runs). Start-up: one Heun
    (RK2) step, whose local error ``O(h^3)`` keeps global order 2. NFE: 2 for step 0, then 1.
    """

    name = "leapfrog"
    order = 2
    startup_method = "heun"

    def _coefficients(self) -> tuple[float, float, float]:
        return 0.0, 1.0, 2.0

    def __repr__(self) -> str:
        return "LeapfrogStepper()"


class LMStepper(_TwoStepStepper):
    """LM-architecture step ``u_{n+1} = (1 - k) u_n + k u_{n-1} + h f(t_n, u_n)`` (Lu et al. 2018).

    Local residual of a smooth ``v`` (Taylor about ``t_n``)::

        v(t+h) - (1-k) v(t) - k v(t-h) - h f(t, v)
            = h [(1 + k) v' - f] + (1 - k) h^2/2 v'' + (1 + k) h^3/6 v''' + O(h^4).

    Hence (i) the step is consistent with ``u' = f`` **only for k = 0** (then it is forward
    Euler); (ii) for any admissible ``k`` it is a consistent method of **order 1** for the
    rescaled ODE ``v' = f / (1 + k)`` (attribute ``rhs_scale = 1/(1+k)``), with error constant
    ``(1 - k) / (2 (1 + k))``; it is the Lu et al. "modified equation" (3) read as an ODE. (The
    ``h^2`` term vanishes only at ``k = 1``, a leapfrog in disguise; the Euler start-up below
    would still cap it at order 1.) For ``k != 0`` the solution does *not* converge to that of
    ``u' = f``: the gap is O(1).

    Zero-stability: ``rho(z) = z^2 - (1-k) z - k = (z - 1)(z + k)`` has roots ``1`` and ``-k``;
    the root condition holds iff ``-1 < k <= 1`` (``k = -1`` gives a double root at 1 and is also
    inconsistent since ``1 + k = 0``). Lu et al. initialise ``k ~ U[-0.1, 0]``.

    Start-up: ``u_1 = u_0 + h f(t_0, u_0)`` (one forward-Euler step, the plain ResNet block as
    in the LM-ResNet). Its O(h) deviation from ``v`` when ``k != 0`` leaves a persistent O(h)
    error component, which is compatible with order 1.

    Parameters
    ----------
    k : float
        The LM coefficient, in ``(-1, 1]``; default 0 (forward Euler).
    """

    name = "lm"
    order = 1
    startup_method = "euler"

    def __init__(self, k: float = 0.0):
        try:
            k_value = float(k)
        except (TypeError, ValueError):
            raise TypeError(f"LMStepper: k must be a real number, got {k!r}.") from None
        if not math.isfinite(k_value) or not -1.0 < k_value <= 1.0:
            raise ValueError(
                f"LMStepper: k={k!r} is not zero-stable: rho(z) = (z - 1)(z + k) needs "
                f"-1 < k <= 1 (root -k inside the unit disc, or simple on it). Use k in "
                f"(-1, 1]; Lu et al. use k in [-0.1, 0] at initialisation.")
        self.k = k_value
        self.rhs_scale = 1.0 / (1.0 + k_value)

    @property
    def method_params(self) -> dict[str, float]:
        """``{"k": k}``; ``step_vjp``'s ``extra_bar`` holds ``{"k": dL/dk}`` for the step."""
        return {"k": self.k}

    def _coefficients(self) -> tuple[float, float, float]:
        return 1.0 - self.k, self.k, 1.0

    def _extra_bar(self, y: Array, y_prev: Array, y1_bar: Array) -> dict[str, Any]:
        """``{"k": dL/dk}`` of the step, a 0-d array on the state's device (not read back: a
        reverse sweep accumulates it there)."""
        xp = get_array_module(y)
        return {"k": xp.sum(y1_bar * (y_prev - y)).real}

    def __repr__(self) -> str:
        return f"LMStepper(k={self.k!r})"
