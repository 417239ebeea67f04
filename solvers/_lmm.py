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
non-uniform one; ``check_uniform_grid`` validates such a grid.

References
----------
E. Hairer, S. P. Norsett, G. Wanner, *Solving Ordinary Differential Equations I*, 2nd ed. (1993),
Ch. III. Y. Lu, A. Zhong, Q. Li, B. Dong, "Beyond finite layer neural networks: bridging deep
architectures and numerical differential equations", ICML 2018 (LM-architecture, eq. (1)).
A. Sandu, "Reverse automatic differentiation of linear multistep methods", LNCSE 64 (2008).
"""
from __future__ import annotations

from functools import partial

import numpy as np

from ._lmm_adams import AdamsStepper
from ._lmm_twostep import LeapfrogStepper, LMStepper
from ._xp import to_host_float64

__all__ = ["AdamsStepper", "LeapfrogStepper", "LMStepper", "LMM_STEPPERS", "get_lmm_stepper",
           "check_uniform_grid"]


def _without_options(name, build):
    """Factory for a method that takes no options (clear error instead of a bare TypeError)."""
    def factory(**options):
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


def get_lmm_stepper(method: str, **options):
    """Build the linear multistep stepper ``method`` (a key of ``LMM_STEPPERS``) with ``options``."""
    if method not in LMM_STEPPERS:
        raise ValueError(f"get_lmm_stepper: unknown method {method!r}; choose one of "
                         f"{sorted(LMM_STEPPERS)}.")
    return LMM_STEPPERS[method](**options)


def check_uniform_grid(ts, name="ts"):
    """Validate a uniform, strictly monotone 1-D time grid; return ``(ts_host, h)``.

    Parameters
    ----------
    ts : array_like, shape (N+1,)
        Grid times, ``N >= 1``; may be decreasing (negative ``h``).

    Returns
    -------
    ts_host : ndarray of float64, h : float
        ``h = (ts[-1] - ts[0]) / N``. Spacing must match ``h`` to ``1e-9 |h|`` plus a few ulps of
        ``max |ts|`` (the rounding of ``np.linspace``).
    """
    try:
        ts_host = to_host_float64(ts)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a 1-D array of times, got {ts!r}.") from None
    if ts_host.ndim != 1 or ts_host.size < 2 or not np.all(np.isfinite(ts_host)):
        raise ValueError(f"{name} must be a finite 1-D grid with at least 2 times, got shape "
                         f"{ts_host.shape}; use np.linspace(t0, t1, n_steps + 1).")
    h = (ts_host[-1] - ts_host[0]) / (ts_host.size - 1)
    gaps = np.diff(ts_host)
    tol = 1e-9 * abs(h) + 16 * np.finfo(np.float64).eps * np.max(np.abs(ts_host))
    if h == 0.0 or np.max(np.abs(gaps - h)) > tol:
        raise ValueError(f"{name} must be uniform and strictly monotone for multistep methods: "
                         f"mean step {h!r}, spacing in [{gaps.min()!r}, {gaps.max()!r}]; use "
                         f"np.linspace(t0, t1, n_steps + 1) or a Runge-Kutta method.")
    return ts_host, float(h)
