"""Steppers: every method as a uniform fixed-grid stepper (``docs/protocols.md``, "Steppers").

``state`` is a tuple whose element 0 is the current ``y``; for Runge-Kutta methods it is just
``(y,)``: a step recomputes its stages from ``y`` alone (no FSAL reuse across steps), so any
stored state restarts the integration exactly.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ._rk import RKStages, rk_step, rk_step_vjp
from ._tableau import ButcherTableau
from ._xp import Array
from .tableaux import TABLEAUX


@dataclass(frozen=True)
class RKStepper:
    """Explicit Runge-Kutta method ``tab`` as a stepper.

    A step evaluates the ``tab.n_live`` stages that ``y1`` depends on (Dopri5/Tsit5 skip the
    FSAL stage, which only feeds the error estimate), so ``nfe == tab.n_live`` per step and
    ``step_vjp`` makes exactly ``tab.n_live`` field VJPs.
    """

    tab: ButcherTableau

    @property
    def method_params(self) -> dict[str, float]:
        """No method parameters: ``{}``."""
        return {}

    def init(self, field: Any, t0: float, y0: Array, params: Any) -> tuple[Array, ...]:
        """Initial state ``(y0,)``."""
        return (y0,)

    def step(self, field: Any, n: int, t: float, h: float, state: tuple[Array, ...],
             params: Any) -> tuple[tuple[Array, ...], int]:
        """One step from ``(t, state[0])``, forward only (no caches); returns ``((y1,), nfe)``."""
        y1, _, stages = rk_step(field, self.tab, t, state[0], h, params, full=False, tape=False)
        return (y1,), len(stages.k)

    def step_vjp(self, field: Any, n: int, t: float, h: float, state: tuple[Array, ...],
                 params: Any, state_next_bar: tuple[Array, ...], need_params: bool = True
                ) -> tuple[tuple[Array, ...], Array | None, dict[str, Any]]:
        """Adjoint of :meth:`step`: recompute the stages from ``state``, then ``rk_step_vjp``.

        Returns
        -------
        state_bar : tuple ``(y_bar,)``
        params_bar : array or None
        extra_bar : dict, empty (no method parameters)
        """
        _, _, stages = rk_step(field, self.tab, t, state[0], h, params, full=False)
        y_bar, params_bar = rk_step_vjp(field, self.tab, stages, state_next_bar[0],
                                        need_params=need_params)
        return (y_bar,), params_bar, {}

    def step_taped(self, field: Any, n: int, t: float, h: float, state: tuple[Array, ...],
                   params: Any) -> tuple[tuple[Array, ...], int, RKStages]:
        """:meth:`step` that also returns its stages (the "tape"), so that :meth:`vjp_taped`
        needs no recomputation (store-all discrete adjoints). Returns ``((y1,), nfe, stages)``."""
        y1, _, stages = rk_step(field, self.tab, t, state[0], h, params, full=False)
        return (y1,), len(stages.k), stages

    def vjp_taped(self, field: Any, stages: RKStages, params: Any,
                  state_next_bar: tuple[Array, ...], need_params: bool = True
                 ) -> tuple[tuple[Array, ...], Array | None, dict[str, Any]]:
        """Adjoint of a :meth:`step_taped` step from its stages; same result as :meth:`step_vjp`
        bit for bit (the stages are what :meth:`step_vjp` recomputes)."""
        y_bar, params_bar = rk_step_vjp(field, self.tab, stages, state_next_bar[0],
                                        need_params=need_params)
        return (y_bar,), params_bar, {}

    def init_vjp(self, field: Any, t0: float, y0: Array, params: Any,
                 state_bar: tuple[Array, ...]) -> tuple[Array, None]:
        """Adjoint of :meth:`init`: ``(state_bar[0], None)`` (init does not touch params)."""
        return state_bar[0], None


def _lmm_registry() -> dict[str, Callable[..., Any]]:
    try:
        from ._lmm import LMM_STEPPERS
    except ImportError as err:  # pragma: no cover - only while solvers/_lmm.py is absent
        raise ImportError(f"linear multistep steppers unavailable: solvers._lmm failed to import "
                          f"({err})") from err
    return LMM_STEPPERS


def is_rk_method(method: object) -> bool:
    """True for a ``ButcherTableau`` or a name in ``TABLEAUX``."""
    return isinstance(method, ButcherTableau) or (isinstance(method, str) and method in TABLEAUX)


def get_stepper(method: str | ButcherTableau, **options: Any) -> Any:
    """Stepper for ``method``: a ``TABLEAUX`` name or ``ButcherTableau`` (RK), or a linear
    multistep name from ``solvers._lmm.LMM_STEPPERS`` (e.g. ``"ab3"``, ``"abm4"``,
    ``"leapfrog"``, ``"lm"`` with ``k=...``).

    Raises
    ------
    TypeError
        For options given to a method that takes none (every RK method).
    ValueError
        For an unknown method name, listing the known ones.
    """
    if is_rk_method(method):
        if options:
            raise TypeError(f"get_stepper: Runge-Kutta method {method!r} takes no options; got "
                            f"{sorted(options)}")
        tab = method if isinstance(method, ButcherTableau) else TABLEAUX[method]
        return RKStepper(tab)
    registry = _lmm_registry()
    if method not in registry:
        raise ValueError(f"get_stepper: unknown method {method!r}; Runge-Kutta: "
                         f"{sorted(TABLEAUX)}; "
                         f"linear multistep: {sorted(registry)}")
    return registry[method](**options)
