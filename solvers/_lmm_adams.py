"""Adams-Bashforth and Adams-Bashforth-Moulton (PECE) steppers and their exact adjoints.

State ``(y_n, f_{n-1}, ..., f_{n-p+1})`` for order ``p``. A main step evaluates
``f_n = f(t_n, y_n)`` and applies the explicit Adams-Bashforth formula, optionally followed by
one Adams-Moulton correction (predict, evaluate, correct; the final evaluation of PECE is the
next step's ``f_{n+1}``). The first ``p - 1`` steps are Runge-Kutta start-up steps
(``solvers._lmm_base``). Coefficients come exact from ``solvers._lmm_coeffs``.

References
----------
E. Hairer, S. P. Norsett, G. Wanner, *Solving Ordinary Differential Equations I*, 2nd ed.,
Springer (1993), Sections III.1 (Adams methods, predictor-corrector) and III.2 (order).
A. Sandu, "Reverse automatic differentiation of linear multistep methods", in *Advances in
Automatic Differentiation*, LNCSE 64, Springer (2008).
"""
from __future__ import annotations

from typing import Any

from ._lmm_base import MultistepStepper, add, check_step_index, rk_startup_step, rk_startup_vjp
from ._lmm_coeffs import adams_bashforth, adams_moulton
from ._xp import Array, get_array_module

__all__ = ["AdamsStepper"]

# Start-up Runge-Kutta method per Adams order: an order >= p one-step method keeps global order p
# (p-1 start-up steps with local error O(h^(q+1)), q >= p). RK4 suffices for order 5 because its
# local error is O(h^5) and there are only four start-up steps (verified in
# tests/solvers/test_lmm.py).
_ADAMS_STARTUP = {1: None, 2: "heun", 3: "rk3", 4: "rk4", 5: "rk4"}


class AdamsStepper(MultistepStepper):
    """Adams-Bashforth of order ``p`` or Adams-Bashforth-Moulton PECE of order ``p``.

    ``uniform_grid = True``: its coefficients assume one step size (drivers refuse other grids).

    State ``(y_n, f_{n-1}, ..., f_{n-p+1})`` (``p-1`` history slots). A main step evaluates
    ``f_n = f(t_n, y_n)`` and

    * AB:  ``y_{n+1} = y_n + h sum_{j<p} beta_j f_{n-j}``                      (1 NFE);
    * ABM: predict ``y* `` with AB ``p``, evaluate ``f* = f(t_{n+1}, y*)``, correct with AM ``p``:
      ``y_{n+1} = y_n + h (beta*_0 f* + sum_{j=1}^{p-1} beta*_j f_{n+1-j})``  (2 NFE).
      The final E of PECE is the ``f_{n+1}`` evaluated at the start of the next step.

    Steps ``n < p-1`` are RK start-up steps (order ``>= p``, see ``_ADAMS_STARTUP``) whose first
    stage is ``f_n`` (no extra NFE).

    Parameters
    ----------
    order : int
        ``p`` in ``[1, 5]`` (AB) or ``[2, 5]`` (ABM).
    corrector : bool
        ``True`` for ABM PECE.
    """

    def __init__(self, order: int, corrector: bool = False):
        lowest = 2 if corrector else 1
        if isinstance(order, bool) or order not in range(lowest, 6):
            raise ValueError(f"AdamsStepper: order must be an int in [{lowest}, 5] "
                             f"(corrector={corrector}), got {order!r}.")
        self.order = order
        self.corrector = corrector
        self.name = f"{'abm' if corrector else 'ab'}{order}"
        self.n_history = order - 1
        self.n_startup = order - 1
        self.startup_method = _ADAMS_STARTUP[order]
        self.beta = tuple(float(b) for b in adams_bashforth(order))
        self.beta_corrector = tuple(float(b) for b in adams_moulton(order)) if corrector else ()

    def __repr__(self) -> str:
        return f"AdamsStepper(order={self.order}, corrector={self.corrector})"

    def step(self, field: Any, n: int, t: float, h: float, state: tuple[Array, ...],
             params: Any) -> tuple[tuple[Array, ...], int]:
        """Advance ``state`` from ``t`` to ``t + h``; returns ``(state_next, nfe)``."""
        check_step_index(n)
        h = float(h)
        y, hist = state[0], state[1:]
        if n < self.n_startup:
            y1, f_n, stages = rk_startup_step(field, self.startup_method, t, h, y, params)
            return (y1, f_n) + hist[:-1], len(stages.k)
        f_n, _ = field.forward(t, y, params)
        fs = (f_n,) + hist
        y1 = self._predict(y, h, fs)
        nfe = 1
        if self.corrector:
            f_star, _ = field.forward(t + h, y1, params)
            y1 = self._correct(y, h, f_star, fs)
            nfe = 2
        return (y1,) + fs[:-1], nfe

    def _predict(self, y: Array, h: float, fs: tuple[Array, ...]) -> Array:
        out = y
        for beta_j, f_j in zip(self.beta, fs, strict=True):
            out = out + (h * beta_j) * f_j
        return out

    def _correct(self, y: Array, h: float, f_star: Array, fs: tuple[Array, ...]) -> Array:
        out = y + (h * self.beta_corrector[0]) * f_star
        # AM p has p coefficients: beta*_1.. pair with f_n..f_{n-p+2}; the oldest f is unused
        for beta_j, f_j in zip(self.beta_corrector[1:], fs, strict=False):
            out = out + (h * beta_j) * f_j
        return out

    def step_vjp(self, field: Any, n: int, t: float, h: float, state: tuple[Array, ...],
                 params: Any, state_next_bar: tuple[Array, ...], need_params: bool = True
                ) -> tuple[tuple[Array, ...], Array | None, dict[str, Any]]:
        """Exact adjoint of ``step``; returns ``(state_bar, params_bar, {})``.

        ``state_next_bar = (y_{n+1}_bar, f_n_bar, ..., f_{n-p+2}_bar)`` (cotangents of the next
        state); the history shift transposes to a shift back, ``f_n`` is pulled back through one
        field VJP (plus one for ``f*`` in ABM).
        """
        check_step_index(n)
        h = float(h)
        y, hist = state[0], state[1:]
        y1_bar, hist_next_bar = state_next_bar[0], tuple(state_next_bar[1:])
        m = self.order - 1
        f_n_hist_bar = hist_next_bar[0] if m else None
        shifted_bar = hist_next_bar[1:] + (None,) if m else ()  # cotangents of f_{n-1..n-p+1}
        if n < self.n_startup:
            _, _, stages = rk_startup_step(field, self.startup_method, t, h, y, params)
            y_bar, params_bar = rk_startup_vjp(field, self.startup_method, h, stages, y1_bar,
                                               f_n_hist_bar, need_params)
            xp = get_array_module(y)
            hist_bar = tuple(xp.zeros_like(y) if b is None else b for b in shifted_bar)
            return (y_bar,) + hist_bar, params_bar, {}

        f_n, cache_n = field.forward(t, y, params)
        fs = (f_n,) + hist
        fs_bar = [(h * beta_j) * y1_bar for beta_j in self.beta]
        y_bar, params_bar = y1_bar, None
        if self.corrector:
            y_pred = self._predict(y, h, fs)
            _, cache_star = field.forward(t + h, y_pred, params)
            pred_bar, params_bar, _ = field.vjp(cache_star, (h * self.beta_corrector[0]) * y1_bar,
                                                need_params)
            fs_bar = [(h * b_p) * pred_bar for b_p in self.beta]
            for j, b_c in enumerate(self.beta_corrector[1:]):
                fs_bar[j] = fs_bar[j] + (h * b_c) * y1_bar
            y_bar = y_bar + pred_bar
        for j in range(m):
            fs_bar[j] = add(fs_bar[j], hist_next_bar[j])
        dy_bar, p_bar, _ = field.vjp(cache_n, fs_bar[0], need_params)
        y_bar = y_bar + dy_bar
        params_bar = add(params_bar, p_bar)
        return (y_bar,) + tuple(fs_bar[1:]), params_bar, {}
