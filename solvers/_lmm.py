"""Linear multistep steppers on a uniform grid: the method registry and the grid check.

Methods (registry ``LMM_STEPPERS``): Adams-Bashforth ``"ab1"..."ab5"``, Adams-Bashforth-Moulton
PECE ``"abm2"..."abm5"`` (``solvers._lmm_adams``), the explicit two-step midpoint rule
``"leapfrog"`` and the LM-ResNet step ``"lm"`` (``solvers._lmm_twostep``); shared state and
start-up pieces live in ``solvers._lmm_base``, exact coefficients in ``solvers._lmm_coeffs``.
All follow the stepper protocol of ``docs/protocols.md``:

    state = stepper.init(field, t0, y0, params)
    state, nfe = stepper.step(field, n, t_n, h, state, params)            # n = 0, 1, ...
    state_bar, params_bar, extra_bar = stepper.step_vjp(field, n, t_n, h, state, params,
                                                         state_next_bar)

A state is a fixed-length tuple of arrays, element 0 the current ``y_n``; the rest is history
(past ``f`` values for Adams methods, ``y_{n-1}`` for two-step methods), zero-filled until the
start-up steps ``n < n_startup`` (explicit Runge-Kutta steps, ``solvers._rk.rk_step``) have
filled it. ``step_vjp`` is the transpose of the linearisation of the *whole* state map
``state_n -> state_{n+1}``, placeholders included, so chaining it backwards gives the exact
gradient of the discrete solution. It recomputes the forward pass from ``state`` and calls
``field.vjp`` once per field evaluation of the step. Nothing is stored on ``self``.

The steps assume a constant ``h`` (``uniform_grid = True``): ``solve(method=..., steps=N)``
integrates with ``N`` equal steps, and a driver that replays a given grid must refuse a
non-uniform one (the discrete adjoints do: ``adjointcore.sensitivity`` checks ``grid``).

References
----------
E. Hairer, S. P. Norsett, G. Wanner, *Solving Ordinary Differential Equations I*, 2nd ed. (1993),
Ch. III. Y. Lu, A. Zhong, Q. Li, B. Dong, "Beyond finite layer neural networks: bridging deep
architectures and numerical differential equations", ICML 2018 (LM-architecture, eq. (1)).
A. Sandu, "Reverse automatic differentiation of linear multistep methods", LNCSE 64 (2008).
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from ._lmm_adams import AdamsStepper
from ._lmm_base import MultistepStepper
from ._lmm_twostep import LeapfrogStepper, LMStepper

__all__ = ["AdamsStepper", "LeapfrogStepper", "LMStepper", "LMM_STEPPERS", "get_lmm_stepper"]


def _without_options(name: str,
                     build: Callable[[], MultistepStepper]) -> Callable[..., MultistepStepper]:
    """Factory for a method that takes no options (clear error instead of a bare TypeError)."""
    def factory(**options: Any) -> MultistepStepper:
        if options:
            raise TypeError(f"{name!r} takes no options, got {sorted(options)}; of the linear "
                            f"multistep methods only 'lm' has one (k=...).")
        return build()
    return factory


LMM_STEPPERS = {
    **{f"ab{p}": _without_options(f"ab{p}", partial(AdamsStepper, p)) for p in range(1, 6)},
    **{f"abm{p}": _without_options(f"abm{p}", partial(AdamsStepper, p, corrector=True))
       for p in range(2, 6)},
    "leapfrog": _without_options("leapfrog", LeapfrogStepper),
    "lm": LMStepper,
}


def get_lmm_stepper(method: str, **options: Any) -> MultistepStepper:
    """Build the linear multistep stepper ``method`` (a key of ``LMM_STEPPERS``) with
    ``options``."""
    if method not in LMM_STEPPERS:
        raise ValueError(f"get_lmm_stepper: unknown method {method!r}; choose one of "
                         f"{sorted(LMM_STEPPERS)}.")
    return LMM_STEPPERS[method](**options)
