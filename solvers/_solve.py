"""The ``solve`` driver: adaptive or fixed-step integration over a time span.

Adaptive solves (embedded RK pairs) use a pure controller (``_controller.py``); fixed-step solves
(``steps=N``) run any RK method with ``rk_step`` (FSAL stage reused) or any linear multistep
method through its stepper. Every solve records the accepted grid, which is what discrete
adjoints replay: step ``n`` goes from ``grid[n]`` with size ``step_sizes[n]``, and with FSAL
``grid[n + 1] == grid[n] + step_sizes[n]`` exactly except possibly at the last step (set to
``t1``), so the FSAL stage and the next step's first stage see the same time and a replay with
``RKStepper`` reproduces the trajectory bitwise.

NFE (every ``field.forward`` call), for an RK method with ``s`` stages:

* adaptive, FSAL (dopri5, tsit5, bosh3): ``1 + [first_step is None] + (s-1)(n_acc + n_rej)``;
* adaptive, not FSAL: the above ``+ n_acc - 1 + [Hermite dense output]``;
* fixed, FSAL: ``1 + (s-1) N``; fixed, not FSAL: ``s N + [Hermite dense output]``;
* multistep: the steppers' counts ``+ (N + 1)`` for the Hermite dense output.

``[Hermite dense output]`` is 1 when ``dense_output`` or ``t_eval`` asks for it and the method
has no continuous extension (the slope at ``t1``). Fixed-step solves build no dense output unless
``dense_output=True`` is passed, so a fixed-step RK4 solve of ``N`` steps costs exactly ``4 N``
evaluations. With ``t_eval`` and ``dense_output=False``
the outputs are streamed: each step's interpolant is built only when an output time lies
strictly inside it (times on the grid are the states themselves) and then dropped, so that
slope is computed only when the last step has an interior output time.

Device reads (CuPy, and the emulation of :mod:`adjointcore.device_emulation`): an adaptive
step reads one scalar back to the host, its error norm with the finiteness of ``y1`` folded in
(inf when not finite); fixed steps read nothing: their finiteness is computed on the device and
read once at the end of the solve (streaming solves: once per ``FINITE_CHECK_EVERY`` steps),
and a failed solve is then cut at its first non-finite step, keeping the same finite prefix as
a host solve. A solve adds a few reads of its own (``y0`` and ``f(t0, y0)`` finite, the initial
step). Tolerance arrays and dense-output coefficients are moved to the device once per solve.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Any

import numpy as np

from ._controller import PIController, initial_step, rms_norm
from ._dense import hermite_coefficients, tableau_coefficients
from ._field import FieldKernel, field_kernel
from ._inputs import (
    check_first_step,
    check_positive_int,
    check_t_eval,
    check_t_span,
    check_tolerance_shape,
    check_y0,
)
from ._record import _finite, _finite_muted, _FiniteWatch, _Record, _solution
from ._result import Solution, SolveError, Status
from ._rk import rk_step_unchecked, stage_plan
from ._stepper import get_stepper, is_rk_method
from ._tableau import ButcherTableau
from ._xp import Array, get_array_module, real_dtype
from .tableaux import TABLEAUX, get_tableau

#: Default tolerances of adaptive solves.
DEFAULT_RTOL = 1e-6
DEFAULT_ATOL = 1e-9
#: A step is too small when below this many ulps of the time scale (see ``_too_small``).
UNDERFLOW_ULPS = 10
#: Appended to the NON_FINITE message when the very first evaluation fails.
NONFINITE_F0 = (" Here the field is already non-finite at the initial point: f(t0, y0) has "
                "inf/NaN entries, so no step was attempted; check the field and `params`.")


def _device_error_norm(ctrl: Any, y_err: Array, y: Array, y1: Array,
                       norm: Callable[[Array], Any] | None) -> float:
    """The error norm of a device step with its finiteness in one read: inf when ``y1`` is not
    finite (the step is then rejected as non-finite). The norm is the controller's, evaluated
    on the device (``norm.on_device``, which ``rms_norm`` and the seminorm have); a norm without
    it, or a controller without ``scaled_error``, costs a second read."""
    measure = rms_norm if norm is None else norm
    on_device = getattr(measure, "on_device", None)
    if on_device is None or not callable(getattr(ctrl, "scaled_error", None)):
        return ctrl.error_norm(y_err, y, y1, norm) if _finite(y1) else np.inf
    xp = get_array_module(y1)
    scaled = ctrl.scaled_error(y_err, y, y1)
    return float(xp.where(xp.isfinite(y1).all(), on_device(scaled), xp.inf))


def _too_small(h_abs: float, t: float, t0: float, t1: float, direction: float) -> bool:
    """True when a step of ``h_abs`` from ``t`` is below the resolution of the time axis:
    ``UNDERFLOW_ULPS`` ulps of ``max(|t|, |t1 - t0|)`` (scipy uses ``|t|`` alone, whose ulps
    near ``t = 0`` are denormal, so a failing solve there would shrink the step ~460 times
    before stopping). A step that reaches ``t1`` is never too small: the span itself may be
    only a few ulps long."""
    if h_abs >= abs(t1 - t):
        return False
    scale = max(abs(t), abs(t1 - t0))
    return h_abs < UNDERFLOW_ULPS * abs(np.nextafter(scale, direction * np.inf) - scale)


def _fixed_time(t0: float, t1: float, n_fixed: int, n: int) -> float:
    """Grid point ``n`` of ``n_fixed`` equal steps, as ``np.linspace(t0, t1, n_fixed + 1)``
    computes it (no drift, ``t1`` exact). Steps take ``h`` as the difference of neighbours, so a
    replay of ``grid`` reproduces a solve bit for bit and the last step's ``c = 1`` stage sits
    exactly at ``t1``."""
    return t1 if n == n_fixed else t0 + n * ((t1 - t0) / n_fixed)


def _rk_loop(field: FieldKernel, tab: ButcherTableau, t0: float, t1: float, y0: Array, params: Any,
             h_abs: float | None, max_steps: int, dense: bool, ctrl: Any = None,
             n_fixed: int | None = None, norm: Callable[[Array], Any] | None = None,
             # every caller passes `rec`
             rec: _Record = None) -> _Record:  # type: ignore[assignment]
    """Integrate with tableau ``tab`` into ``rec``: adaptive if ``ctrl`` is given (``h_abs`` the
    first step or None for Hairer's guess), else ``n_fixed`` steps of size ``h_abs``."""
    direction = 1.0 if t1 > t0 else -1.0
    taped = rec.stages is not None
    xp = get_array_module(y0)
    watch = _FiniteWatch(xp, rec.stream is not None, y0) if xp is not np and ctrl is None \
        else None
    f = field.forward(t0, y0, params) if taped else field.evaluate(t0, y0, params)
    rec.nfe += 1
    if not _finite(f[0] if taped else f):
        rec.status, rec.detail = Status.NON_FINITE, NONFINITE_F0
        return rec
    if ctrl is not None and h_abs is None:
        h_abs = min(initial_step(field, t0, y0, params, tab.order, ctrl.rtol, ctrl.atol,
                                 f[0] if taped else f, direction, norm), abs(t1 - t0))
        rec.nfe += 1
    state = ctrl.init(tab.err_order) if ctrl is not None else None
    t, y, n_acc, last_nonfinite = t0, y0, 0, False
    plan_dtype, plan = None, None
    land = UNDERFLOW_ULPS * np.spacing(abs(t1))     # closer to t1 than this: land on t1
    # n_fixed is given without ctrl
    while (n_acc < n_fixed) if ctrl is None else (t != t1):  # type: ignore[operator]
        if n_acc + rec.n_rejected >= max_steps:
            rec.status = Status.MAX_STEPS
            break
        if ctrl is not None:
            # h_abs is set by now with ctrl
            if _too_small(h_abs, t, t0, t1, direction):  # type: ignore[arg-type]
                rec.status = Status.NON_FINITE if last_nonfinite else Status.STEP_UNDERFLOW
                break
            t_new = t + direction * h_abs  # type: ignore[operator]  # h_abs is set by now with ctrl
            # Land on t1 exactly (also when only a few ulps would be left for a last step).
            # Otherwise snap: t_new = t + h exactly, the time of the FSAL stage (c_s = 1).
            if direction * (t1 - t_new) <= land:
                t_new, h = t1, t1 - t
            else:
                h = t_new - t
                t_new = t + h
        else:
            # n_fixed is given without ctrl
            t_new = _fixed_time(t0, t1, n_fixed, n_acc + 1)  # type: ignore[arg-type]
            h = t_new - t
        if plan is None or y.dtype != plan_dtype:     # as rk_step: in y's real dtype
            plan_dtype = y.dtype
            plan = stage_plan(tab, xp, real_dtype(plan_dtype))
        with np.errstate(invalid="ignore", over="ignore"):     # as rk_step (see rk_step_unchecked)
            y1, y_err, stages = rk_step_unchecked(field, tab, plan, float(t), y, float(h),
                                                  params, f, True, taped)
            finite = xp is not np or _finite_muted(y1)    # a device step: read below
        rec.nfe += len(stages.k) - 1
        if watch is not None:                 # device, fixed steps: read back per window
            accept = True
            watch.add(y1)
        elif ctrl is None:                    # host (a device one has a watch)
            accept = finite
            if not accept:
                rec.status = Status.NON_FINITE
        else:
            if xp is np:
                err = ctrl.error_norm(y_err, y, y1, norm) if finite else np.inf
            else:                             # device: one read per step
                err = _device_error_norm(ctrl, y_err, y, y1, norm)
                finite = bool(np.isfinite(err))
            accept, h_next, state = ctrl.propose(h, err, state)
            h_abs, last_nonfinite = abs(h_next), not finite
        if not accept:
            rec.n_rejected += 1
            if ctrl is None:
                break
            continue
        done = (n_acc + 1 == n_fixed) if ctrl is None else (t_new == t1)
        interp = dense if rec.stream is None else rec.interior_pending(t, t_new)
        # FSAL: the next step's f0. Copied out of a forward-only step's reused stage buffer,
        # which the next (possibly rejected) trial step overwrites.
        f1 = (stages.k[-1] if taped else stages.k[-1].copy()) if tab.fsal else None
        if f1 is None and (not done or (interp and tab.dense is None)):
            f1 = field.evaluate(t_new, y1, params)
            rec.nfe += 1
        coeffs = None
        if interp:
            coeffs = (tableau_coefficients(tab, h, stages.k) if tab.dense is not None
                      else hermite_coefficients(h, y, y1, stages.k[0], f1))
        rec.accept(t_new, y1, h, coeffs)
        if taped:
            rec.keep(stages, tab.n_live)
            f1 = (f1, stages.caches[-1])
        t, y, f, n_acc = t_new, y1, f1, n_acc + 1
        if watch is not None and watch.due(done):
            bad = watch.first_bad()
            if bad is not None:
                watch.cut(rec, n_acc, bad, direction)
                break
    return rec


def _fixed_rk_forward(field: FieldKernel, tab: ButcherTableau, t0: float, t1: float, y0: Array,
                      params: Any, n_fixed: int, max_steps: int, rec: _Record) -> _Record:
    """``n_fixed`` equal RK steps of a host solve that keeps no stages, builds no dense output
    and streams nothing: the arithmetic of :func:`rk_step` (stage inputs, update) with the
    field bound to ``params`` once (:meth:`FieldKernel.bind`), the tableau rows sliced once
    per state dtype (in that dtype's real type, as :func:`rk_step` takes them) and each new
    state written in place into its row of one trajectory array (``rec.ys_rows``) when the
    field keeps the state's dtype. ``rec`` is filled as :func:`_rk_loop` fills it, bit for bit
    (states, grid, NFE, status); the embedded error estimate, which fixed steps do not use, is
    not formed."""
    f = field.evaluate(t0, y0, params)
    rec.nfe += 1
    if not _finite(f):
        rec.status, rec.detail = Status.NON_FINITE, NONFINITE_F0
        return rec
    evaluate = field.bind(params)
    s, n_live, c = tab.n_stages, tab.n_live, tab.c_floats
    shape = tuple(f.shape)
    k = np.empty((s,) + shape, dtype=f.dtype)
    flat = k.reshape(s, -1)
    plan_dtype: Any = None
    rows: tuple[Any, ...] = ()
    if f.dtype == y0.dtype:                 # each y1 is computed in place in its row
        rec.ys_rows = np.empty((n_fixed + 1,) + shape, dtype=y0.dtype)
        rec.ys_rows[0] = y0
        ys_flat = rec.ys_rows.reshape(n_fixed + 1, 1, -1)
    t, y = t0, y0
    with np.errstate(invalid="ignore", over="ignore"):      # as rk_step (see rk_step_unchecked)
        for n in range(n_fixed):
            if n >= max_steps:
                rec.status = Status.MAX_STEPS
                break
            if y.dtype != plan_dtype or not rows:   # as rk_step: y's real dtype (it changes
                plan_dtype = y.dtype                # once if the field widens y)
                plan = stage_plan(tab, np, real_dtype(plan_dtype))
                rows, b_live = plan.rows, plan.b_live
                # the stage inputs: one reused buffer each, in the dtype of their dot (the
                # product into it is rk_step's), seen as (1, size) and as the state
                inputs = np.empty((s, 1, flat.shape[1]),
                                  dtype=np.result_type(b_live.dtype, k.dtype))
                in_shaped = inputs.reshape((s,) + shape)
            t_new = _fixed_time(t0, t1, n_fixed, n + 1)
            h = t_new - t
            k[0] = f
            for i in range(1, s):
                np.ndarray.dot(rows[i], flat[:i], inputs[i])
                y_i = in_shaped[i]
                y_i *= h
                y_i += y
                k[i] = evaluate(t + c[i] * h, y_i)
            if rec.ys_rows is None:             # the field widens y: a new array each step
                y1 = np.ndarray.dot(b_live, flat[:n_live]).reshape(shape)
            else:
                np.ndarray.dot(b_live, flat[:n_live], ys_flat[n + 1])
                y1 = rec.ys_rows[n + 1]
            y1 *= h
            y1 += y
            rec.nfe += s - 1
            if not _finite_muted(y1):
                rec.status, rec.n_rejected = Status.NON_FINITE, rec.n_rejected + 1
                break
            if tab.fsal:
                f = k[-1].copy()
            elif n + 1 < n_fixed:
                f = evaluate(t_new, y1)
                rec.nfe += 1
            rec.accept(t_new, y1, h, None)
            t, y = t_new, y1
    return rec


def _stepper_loop(field: FieldKernel, stepper: Any, t0: float, t1: float, y0: Array, params: Any,
                  n_fixed: int, max_steps: int, dense: bool, rec: _Record) -> _Record:
    """``n_fixed`` equal steps of a protocol stepper (linear multistep methods)."""
    h = (t1 - t0) / n_fixed
    state = stepper.init(field, t0, y0, params)
    xp = get_array_module(y0)
    watch = _FiniteWatch(xp, rec.stream is not None, y0) if xp is not np else None
    t = t0
    for n in range(n_fixed):
        if n >= max_steps:
            rec.status = Status.MAX_STEPS
            break
        state_next, nfe = stepper.step(field, n, t, h, state, params)
        rec.nfe += nfe
        if watch is not None:
            watch.add(state_next[0])
        elif not _finite(state_next[0]):
            rec.status, rec.n_rejected = Status.NON_FINITE, 1
            break
        t_new = t1 if n == n_fixed - 1 else t + h
        rec.accept(t_new, state_next[0], h, None)
        t, state = t_new, state_next
        if watch is not None and watch.due(n == n_fixed - 1):
            bad = watch.first_bad()
            if bad is not None:
                watch.cut(rec, n + 1, bad, 1.0 if t1 > t0 else -1.0)
                break
    if dense and len(rec.hs):
        fs = [field.forward(ti, yi, params)[0] for ti, yi in zip(rec.grid, rec.ys, strict=True)]
        rec.nfe += len(fs)
        rec.coeffs = [hermite_coefficients(hi, rec.ys[i], rec.ys[i + 1], fs[i], fs[i + 1])
                      for i, hi in enumerate(rec.hs)]
    return rec


def adaptive_methods() -> list[str]:
    """Names of the ``TABLEAUX`` methods with an embedded error estimate (adaptive steps)."""
    return sorted(name for name, tab in TABLEAUX.items() if tab.b_err is not None)


@lru_cache(maxsize=32)
def _float_controller(rtol: float, atol: float) -> PIController:
    """The default controller for scalar tolerances: checked once per pair of values and
    shared (it is immutable and keeps no state between steps)."""
    return PIController(rtol, atol)


def _controller(controller: Any, rtol: Any, atol: Any, y0: Array) -> Any:
    if controller is not None:
        if rtol is not None or atol is not None:
            raise ValueError("give tolerances either as `rtol`/`atol` or inside `controller`, not "
                             f"both (got rtol={rtol!r}, atol={atol!r}, controller={controller!r})")
        methods_ok = all(callable(getattr(controller, m, None))
                         for m in ("init", "propose", "error_norm"))
        if not (methods_ok and hasattr(controller, "rtol") and hasattr(controller, "atol")):
            raise TypeError(f"`controller` must have init/propose/error_norm methods and "
                            f"rtol/atol attributes (e.g. PIController), got {controller!r}")
    else:
        rtol = DEFAULT_RTOL if rtol is None else rtol
        atol = DEFAULT_ATOL if atol is None else atol
        if type(rtol) is float and type(atol) is float:
            return _float_controller(rtol, atol)        # nothing to broadcast or move
        controller = PIController(rtol, atol)
    check_tolerance_shape("rtol", controller.rtol, y0.shape)
    check_tolerance_shape("atol", controller.atol, y0.shape)
    on_device = getattr(controller, "on_device", None)
    return controller if on_device is None else on_device(y0)


def solve(field: Any, y0: Any, t_span: Any, params: Any = None,
          method: str | ButcherTableau = "dopri5", t_eval: Any = None, rtol: Any = None,
          atol: Any = None, steps: int | None = None, max_steps: int = 10_000,
          first_step: float | None = None, norm: Callable[[Array], Any] | None = None,
          controller: Any = None, dense_output: bool | None = None, raise_on_failure: bool = True,
          keep_stages: bool = False) -> Solution:
    """Integrate ``y' = f(t, y, params)`` from ``t_span[0]`` to ``t_span[1]``.

    Parameters
    ----------
    field : field object (``forward``/``vjp``) or callable ``f(t, y)`` / ``f(t, y, params)``
    y0 : array, any shape (NumPy or CuPy; float or complex)
    t_span : pair of float ``(t0, t1)``; ``t1 < t0`` integrates backwards
    params : object, optional
        Passed to every ``field.forward``.
    method : str or ButcherTableau
        A ``TABLEAUX`` name (adaptive: ``"dopri5"``, ``"tsit5"``, ``"bosh3"``; any with ``steps``)
        or a linear multistep name (``"ab3"``, ``"abm4"``, ... ; needs ``steps``).
    t_eval : array_like, shape (T,), optional
        Output times within ``t_span``, sorted in the direction of integration (repeats
        allowed; NumPy or CuPy), evaluated by dense output. On failure only those reached
        are returned.
    rtol, atol : float or array broadcastable to ``y0``, optional
        Adaptive tolerances (defaults ``1e-6``, ``1e-9``); see ``block_tolerance``.
    steps : int, optional
        Number of equal fixed steps; None means adaptive.
    max_steps : int
        Maximum number of attempted (accepted + rejected) steps.
    first_step : float, optional
        Initial step magnitude (adaptive); None uses Hairer's rule (one extra evaluation).
    norm : callable ``(scaled_error) -> float``, optional
        Replaces the RMS error norm (e.g. a seminorm that ignores some channels).
    controller : PIController or IController, optional
        Replaces the default ``PIController(rtol, atol)`` (then leave ``rtol``/``atol`` unset).
    dense_output : bool, optional
        Build ``Solution.sol``; False saves memory (and, for methods without a continuous
        extension, one or more evaluations). Default (None): True for adaptive solves, False
        for fixed ``steps`` (whose ``NFE`` is then exactly ``stages * steps``, FSAL aside).
    raise_on_failure : bool
        Raise ``SolveError`` (with ``.result``) on failure instead of returning it.
    keep_stages : bool
        Adaptive FSAL Runge-Kutta solves only: keep each accepted step's live stages and field
        caches in ``Solution.stages`` (the taped forward of a discrete adjoint on the accepted
        grid, which then needs no replay). Memory: every stage's cache.

    Returns
    -------
    Solution

    Raises
    ------
    ValueError, TypeError
        For invalid arguments, naming the argument.
    SolveError
        If the solve fails and ``raise_on_failure`` is True.
    """
    field = field_kernel(field)
    y0 = check_y0(y0)
    t0, t1 = check_t_span(t_span)
    t_eval = check_t_eval(t_eval, t0, t1)
    # not None without allow_none
    max_steps = check_positive_int("max_steps", max_steps)  # type: ignore[assignment]
    steps = check_positive_int("steps", steps, allow_none=True)
    rk = is_rk_method(method)
    if dense_output is None:
        dense_output = steps is None
    dense = bool(dense_output) or t_eval is not None
    stream = t_eval if (rk and t_eval is not None and not dense_output) else None
    rec = _Record(t0, y0, stream)
    if steps is not None:
        adaptive_only = dict(rtol=rtol, atol=atol, controller=controller, first_step=first_step,
                             norm=norm, keep_stages=keep_stages or None)
        given = sorted(k for k, v in adaptive_only.items() if v is not None)
        if given:
            raise ValueError(f"{given} only apply to adaptive solves; drop them or set steps=None")
        h_abs = abs(t1 - t0) / steps
        if rk and not dense and get_array_module(y0) is np:
            _fixed_rk_forward(field, get_tableau(method), t0, t1, y0, params, steps, max_steps,
                              rec)
        elif rk:
            _rk_loop(field, get_tableau(method), t0, t1, y0, params, h_abs, max_steps, dense,
                     n_fixed=steps, rec=rec)
        else:
            _stepper_loop(field, get_stepper(method), t0, t1, y0, params, steps, max_steps,
                          dense, rec)
    else:
        if not rk:
            get_stepper(method)  # unknown names raise here, listing every method
            raise ValueError(f"method {method!r} is a fixed-step multistep method; pass steps=N")
        tab = get_tableau(method)
        if tab.b_err is None:
            raise ValueError(f"method {tab.name!r} has no embedded error estimate, so it cannot "
                             f"adapt its step; pass steps=N or use one of {adaptive_methods()}")
        if norm is not None and not callable(norm):
            raise TypeError(f"`norm` must be a callable (scaled_error) -> float, got {norm!r}")
        ctrl = _controller(controller, rtol, atol, y0)
        if keep_stages:
            if not tab.fsal:
                raise ValueError(f"keep_stages=True needs an FSAL pair ('dopri5', 'tsit5', "
                                 f"'bosh3'), got method {tab.name!r}.")
            rec.stages = []
        _rk_loop(field, tab, t0, t1, y0, params, check_first_step(first_step, t0, t1), max_steps,
                 dense, ctrl=ctrl, norm=norm, rec=rec)
    name = method.name if hasattr(method, "name") else str(method)
    result = _solution(rec, name, t_eval, dense_output, dense, y0)
    if raise_on_failure and not result.success:
        raise SolveError(result)
    return result
