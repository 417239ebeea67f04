"""Linear multistep steppers on a uniform grid and their exact discrete adjoints.

Methods (registry ``LMM_STEPPERS``): Adams-Bashforth ``"ab1"..."ab5"``, Adams-Bashforth-Moulton
PECE ``"abm2"..."abm5"``, the explicit two-step midpoint rule ``"leapfrog"`` and the LM-ResNet
step ``"lm"``. All follow the stepper protocol of ``docs/protocols.md``:

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

The steps assume a constant ``h``; ``lmm_integrate`` (and the ``solve`` driver) reject
non-uniform grids.

References
----------
E. Hairer, S. P. Norsett, G. Wanner, *Solving Ordinary Differential Equations I*, 2nd ed. (1993),
Ch. III. Y. Lu, A. Zhong, Q. Li, B. Dong, "Beyond finite layer neural networks: bridging deep
architectures and numerical differential equations", ICML 2018 (LM-architecture, eq. (1)).
A. Sandu, "Reverse automatic differentiation of linear multistep methods", LNCSE 64 (2008).
"""
from __future__ import annotations

import math
from functools import partial

import numpy as np

from ._lmm_coeffs import adams_bashforth, adams_moulton
from ._rk import rk_step
from ._xp import get_array_module, to_host_float64
from .tableaux import TABLEAUX

__all__ = ["AdamsStepper", "LeapfrogStepper", "LMStepper", "LMM_STEPPERS", "get_lmm_stepper",
           "lmm_integrate", "check_uniform_grid"]

# Start-up Runge-Kutta method per Adams order: an order >= p one-step method keeps global order p
# (p-1 start-up steps with local error O(h^(q+1)), q >= p). RK4 suffices for order 5 because its
# local error is O(h^5) and there are only four start-up steps (verified in tests/solvers/test_lmm.py).
_ADAMS_STARTUP = {1: None, 2: "heun", 3: "rk3", 4: "rk4", 5: "rk4"}


def _add(a, b):
    """``a + b`` where ``None`` means zero (never in place: inputs may be stored states)."""
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _check_step_index(n):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"step: n must be a non-negative int (the step index), got {n!r}.")


def _rk_startup_step(field, tab_name, t, h, y, params):
    """One explicit RK start-up step; returns ``(y1, f(t, y), stages)``.

    ``f(t, y)`` is copied out of the stage buffer so that the next state owns its arrays.
    """
    y1, _, stages = rk_step(field, TABLEAUX[tab_name], t, y, h, params, full=False)
    return y1, stages.k[0].copy(), stages


def _rk_startup_vjp(field, tab_name, h, stages, y1_bar, k0_bar, need_params):
    """Adjoint of an explicit RK step with an extra cotangent ``k0_bar`` on ``k_1 = f(t, y)``.

    The stepper hands ``k_1`` on as history, so its cotangent gets that extra term; the stage
    loop is written out here (rather than calling ``rk_step_vjp``) to keep one field VJP per
    stage. Stage equations: ``Y_i = y + h sum_{j<i} a_ij k_j``, ``k_i = f(t + c_i h, Y_i)``,
    ``y1 = y + h sum_i b_i k_i``.
    """
    tab = TABLEAUX[tab_name]
    s = len(stages.caches)
    k_bar = [float(h * tab.b[i]) * y1_bar for i in range(s)]
    k_bar[0] = _add(k_bar[0], k0_bar)
    y_bar, params_bar = y1_bar, None
    for i in range(s - 1, -1, -1):
        stage_bar, p_bar, _ = field.vjp(stages.caches[i], k_bar[i], need_params)
        y_bar = y_bar + stage_bar
        params_bar = _add(params_bar, p_bar)
        for j in range(i):
            a_ij = float(tab.a[i][j])
            if a_ij != 0.0:
                k_bar[j] = k_bar[j] + (h * a_ij) * stage_bar
    return y_bar, params_bar


class AdamsStepper:
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

    uniform_grid = True

    def __init__(self, order: int, corrector: bool = False):
        lowest = 2 if corrector else 1
        if isinstance(order, bool) or order not in range(lowest, 6):
            raise ValueError(f"AdamsStepper: order must be an int in [{lowest}, 5] "
                             f"(corrector={corrector}), got {order!r}.")
        self.order = order
        self.corrector = corrector
        self.name = f"{'abm' if corrector else 'ab'}{order}"
        self.n_startup = order - 1
        self.startup_method = _ADAMS_STARTUP[order]
        self.beta = tuple(float(b) for b in adams_bashforth(order))
        self.beta_corrector = tuple(float(b) for b in adams_moulton(order)) if corrector else ()

    @property
    def method_params(self):
        """No trainable method parameters: ``{}``."""
        return {}

    def __repr__(self):
        return f"AdamsStepper(order={self.order}, corrector={self.corrector})"

    def init(self, field, t0, y0, params):
        """Initial state ``(y0, 0, ..., 0)`` with ``p-1`` zero history placeholders."""
        xp = get_array_module(y0)
        return (y0,) + tuple(xp.zeros_like(y0) for _ in range(self.order - 1))

    def init_vjp(self, field, t0, y0, params, state_bar):
        """Adjoint of ``init``: ``(state_bar[0], None)`` (``init`` does not touch ``params``;
        the zero placeholders are constants, so their cotangents are dropped)."""
        return state_bar[0], None

    def step(self, field, n, t, h, state, params):
        """Advance ``state`` from ``t`` to ``t + h``; returns ``(state_next, nfe)``."""
        _check_step_index(n)
        h = float(h)
        y, hist = state[0], state[1:]
        if n < self.n_startup:
            y1, f_n, stages = _rk_startup_step(field, self.startup_method, t, h, y, params)
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

    def _predict(self, y, h, fs):
        out = y
        for beta_j, f_j in zip(self.beta, fs):
            out = out + (h * beta_j) * f_j
        return out

    def _correct(self, y, h, f_star, fs):
        out = y + (h * self.beta_corrector[0]) * f_star
        for beta_j, f_j in zip(self.beta_corrector[1:], fs):
            out = out + (h * beta_j) * f_j
        return out

    def step_vjp(self, field, n, t, h, state, params, state_next_bar, need_params=True):
        """Exact adjoint of ``step``; returns ``(state_bar, params_bar, {})``.

        ``state_next_bar = (y_{n+1}_bar, f_n_bar, ..., f_{n-p+2}_bar)`` (cotangents of the next
        state); the history shift transposes to a shift back, ``f_n`` is pulled back through one
        field VJP (plus one for ``f*`` in ABM).
        """
        _check_step_index(n)
        h = float(h)
        y, hist = state[0], state[1:]
        y1_bar, hist_next_bar = state_next_bar[0], tuple(state_next_bar[1:])
        m = self.order - 1
        f_n_hist_bar = hist_next_bar[0] if m else None
        shifted_bar = hist_next_bar[1:] + (None,) if m else ()  # cotangents of f_{n-1..n-p+1}
        if n < self.n_startup:
            _, _, stages = _rk_startup_step(field, self.startup_method, t, h, y, params)
            y_bar, params_bar = _rk_startup_vjp(field, self.startup_method, h, stages, y1_bar,
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
            fs_bar[j] = _add(fs_bar[j], hist_next_bar[j])
        dy_bar, p_bar, _ = field.vjp(cache_n, fs_bar[0], need_params)
        y_bar = y_bar + dy_bar
        params_bar = _add(params_bar, p_bar)
        return (y_bar,) + tuple(fs_bar[1:]), params_bar, {}


class _TwoStepStepper:
    """Shared machinery of ``y_{n+1} = a0 y_n + a1 y_{n-1} + h beta f(t_n, y_n)``.

    State ``(y_n, y_{n-1})``; step 0 is one RK step of ``self.startup_method`` giving
    ``(y_1, y_0)`` from ``(y_0, placeholder)``. Subclasses set ``_coefficients()``.
    """

    n_startup = 1
    startup_method = None
    uniform_grid = True       # the two-step coefficients assume one step size

    def _coefficients(self):
        raise NotImplementedError

    def init(self, field, t0, y0, params):
        """Initial state ``(y0, 0)``: the ``y_{-1}`` slot is a zero placeholder."""
        return (y0, get_array_module(y0).zeros_like(y0))

    def init_vjp(self, field, t0, y0, params, state_bar):
        """Adjoint of ``init``: ``(state_bar[0], None)`` (the placeholder is a constant)."""
        return state_bar[0], None

    def step(self, field, n, t, h, state, params):
        """Advance ``(y_n, y_{n-1})`` to ``(y_{n+1}, y_n)``; returns ``(state_next, nfe)``."""
        _check_step_index(n)
        h = float(h)
        y, y_prev = state
        if n < self.n_startup:
            y1, _, stages = _rk_startup_step(field, self.startup_method, t, h, y, params)
            return (y1, y), len(stages.k)
        a0, a1, beta = self._coefficients()
        f_n, _ = field.forward(t, y, params)
        return (a0 * y + a1 * y_prev + (h * beta) * f_n, y), 1

    def step_vjp(self, field, n, t, h, state, params, state_next_bar, need_params=True):
        """Exact adjoint of ``step``; returns ``(state_bar, params_bar, extra_bar)``."""
        _check_step_index(n)
        h = float(h)
        y, y_prev = state
        y1_bar, y_copy_bar = state_next_bar
        if n < self.n_startup:
            _, _, stages = _rk_startup_step(field, self.startup_method, t, h, y, params)
            y_bar, params_bar = _rk_startup_vjp(field, self.startup_method, h, stages, y1_bar,
                                                None, need_params)
            extra = {name: 0.0 for name in self.method_params}
            return (y_bar + y_copy_bar, get_array_module(y).zeros_like(y)), params_bar, extra
        a0, a1, beta = self._coefficients()
        _, cache = field.forward(t, y, params)
        dy_bar, params_bar, _ = field.vjp(cache, (h * beta) * y1_bar, need_params)
        y_bar = a0 * y1_bar + y_copy_bar + dy_bar
        return (y_bar, a1 * y1_bar), params_bar, self._extra_bar(y, y_prev, y1_bar)

    def _extra_bar(self, y, y_prev, y1_bar):
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

    @property
    def method_params(self):
        """No trainable method parameters: ``{}``."""
        return {}

    def _coefficients(self):
        return 0.0, 1.0, 2.0

    def __repr__(self):
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
    def method_params(self):
        """``{"k": k}``; ``step_vjp``'s ``extra_bar`` holds ``{"k": dL/dk}`` for the step."""
        return {"k": self.k}

    def _coefficients(self):
        return 1.0 - self.k, self.k, 1.0

    def _extra_bar(self, y, y_prev, y1_bar):
        xp = get_array_module(y)
        return {"k": float(xp.sum(y1_bar * (y_prev - y)).real)}

    def __repr__(self):
        return f"LMStepper(k={self.k!r})"


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


def lmm_integrate(stepper, field, y0, ts, params):
    """Run ``stepper`` over the uniform grid ``ts``.

    Parameters
    ----------
    stepper : stepper object (e.g. ``get_lmm_stepper("ab3")``; any protocol stepper works)
    field : vector field with ``forward(t, y, params) -> (dy, cache)``
    y0 : ndarray, any shape ``S``
    ts : array_like, shape (N+1,)
        Uniform grid (see ``check_uniform_grid``).
    params : ndarray or None

    Returns
    -------
    ys : ndarray, shape (N+1, *S)
        ``ys[n]`` approximates ``y(ts[n])``.
    nfe : int
        Number of field evaluations.
    """
    ts_host, h = check_uniform_grid(ts)
    xp = get_array_module(y0)
    state = stepper.init(field, float(ts_host[0]), y0, params)
    ys, nfe = [y0], 0
    for n in range(ts_host.size - 1):
        state, step_nfe = stepper.step(field, n, float(ts_host[n]), h, state, params)
        ys.append(state[0])
        nfe += step_nfe
    return xp.stack(ys), nfe
