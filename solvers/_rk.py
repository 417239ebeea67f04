"""One explicit Runge-Kutta step and its exact discrete adjoint (vector-Jacobian product).

Forward (``s`` stages, step ``h`` from ``(t, y)``)::

    Y_i = y + h sum_{j<i} a_ij k_j,   k_i = f(t + c_i h, Y_i, params),   i = 1..s
    y1  = y + h sum_i b_i k_i,        y_err = h sum_i b_err_i k_i

Reverse, given ``y1_bar`` (processing stages ``i = s..1``)::

    kappa_i = h (b_i y1_bar + sum_{j>i} a_ji w_j)          # total cotangent of k_i
    (w_i, g_i) = VJP of f at stage i applied to kappa_i      # one field VJP per stage
    y_bar = y1_bar + sum_i w_i,   params_bar = sum_i g_i

No division by ``b_i`` (Dopri5 and Tsit5 have ``b_7 = 0``, Dopri5 also ``b_2 = 0``), and stages
whose cotangent is structurally zero (``tab.live`` False: the FSAL stage) get no VJP. The step
times are frozen (no derivative with respect to ``t`` or ``h``).

References
----------
Hager, "Runge-Kutta methods in optimal control and the transformed adjoint system",
Numer. Math. 87 (2000) 247-282; Sandu, "On the properties of Runge-Kutta discrete adjoints",
ICCS 2006, LNCS 3994, 550-557; Zhang, Constantinescu & Smith, "PETSc TSAdjoint",
arXiv:1912.07696 (``TSAdjointStep_RK``).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from ._field import field_kernel
from ._tableau import ButcherTableau
from ._xp import Array, get_array_module, real_dtype


class RKStages(NamedTuple):
    """What one RK step keeps for its VJP.

    Attributes
    ----------
    t, h : float
        Step start and (signed) size.
    y : array, shape ``y.shape``
        Step start state (not copied).
    k : array, shape ``(n, *y.shape)``
        Stage derivatives; ``n == tab.n_stages``, or ``tab.n_live`` for ``full=False``.
    caches : tuple of length ``n``
        The field cache of each stage (None for a stage passed in as a bare ``f0`` array).
    """

    t: float
    y: Array
    h: float
    k: Array
    caches: tuple[Any, ...]


@lru_cache(maxsize=64)
def rk_coefficients(tab: ButcherTableau, xp: Any,
                    dtype: DTypeLike) -> tuple[Array, Array, Array | None]:
    """``(a, b, b_err)`` of ``tab`` as ``xp`` arrays of real ``dtype`` (cached per module/dtype)."""
    b_err = None if tab.b_err is None else xp.asarray(tab.b_err, dtype=dtype)
    return xp.asarray(tab.a, dtype=dtype), xp.asarray(tab.b, dtype=dtype), b_err


class StagePlan(NamedTuple):
    """A tableau's coefficients laid out for the step loops (:func:`stage_plan`).

    Attributes
    ----------
    rows : tuple
        ``rows[i]``: ``a[i, :i]`` as a ``(1, i)`` view (``rows[0]`` None), the left factor
        of the one ``dot`` that forms stage ``i``'s input.
    b_live : array, shape (1, n_live)
        ``b[:n_live]``, the weights of ``y1``.
    b_err : array, shape (1, n_stages), or None
    dot : callable
        ``dot(weights, stack2d)``: ``ndarray.dot`` on the host (no dispatch), ``xp.dot``
        elsewhere; the product of ``numpy.tensordot(weights, stack, axes=1)``, whose roundings
        every stage combination keeps.
    """

    rows: tuple[Array | None, ...]
    b_live: Array
    b_err: Array | None
    dot: Any


def _dot(xp: Any) -> Any:
    """``ndarray.dot`` on the host (the product of ``numpy.dot`` without its dispatch),
    ``xp.dot`` elsewhere."""
    return np.ndarray.dot if xp is np else xp.dot


@lru_cache(maxsize=64)
def stage_plan(tab: ButcherTableau, xp: Any, dtype: np.dtype[Any]) -> StagePlan:
    """:class:`StagePlan` of ``tab`` in ``xp`` and real ``dtype`` (cached per module/dtype);
    the values are :func:`rk_coefficients`', so products with them round as before."""
    a, b, b_err = rk_coefficients(tab, xp, dtype)
    rows = (None,) + tuple(a[i, :i].reshape(1, i) for i in range(1, tab.n_stages))
    return StagePlan(rows, b[:tab.n_live].reshape(1, tab.n_live),
                     None if b_err is None else b_err.reshape(1, -1), _dot(xp))


@lru_cache(maxsize=64)
def _reverse_plan(tab: ButcherTableau, xp: Any, dtype: np.dtype[Any],
                  n: int) -> tuple[tuple[int, Any, Array | None], ...]:
    """The live stages of an ``n``-stage tape in reverse order, each as ``(i, b_i, column)``:
    ``b_i = b[i]`` (an ``xp`` scalar) and ``column = a[i+1:n, i]`` as a ``(1, n-i-1)`` view
    of ``a`` (None for the last stage), for :func:`rk_step_vjp`. The column stays a strided
    view: BLAS takes a strided vector through another kernel than a contiguous copy, and
    the products must round as they always have."""
    a, b, _ = rk_coefficients(tab, xp, dtype)
    return tuple((i, b[i], None if i + 1 >= n else a[i + 1:n, i].reshape(1, n - i - 1))
                 for i in range(n - 1, -1, -1) if tab.live[i])


def rk_step(field: Any, tab: ButcherTableau, t: float, y: Array, h: float, params: Any,
            f0: Array | tuple[Array, Any] | None = None, full: bool = True,
            tape: bool = True) -> tuple[Array, Array | None, RKStages]:
    """Take one explicit RK step.

    Parameters
    ----------
    field : object with ``forward(t, y, params) -> (dy, cache)``
        Wrapped once per call in a :class:`~solvers._field.FieldKernel` (drivers pass their
        own kernel, which evaluates without re-checking).
    tab : ButcherTableau
    t, h : float
        Step start and signed step size.
    y : array
        State at ``t`` (any shape; NumPy or CuPy).
    params : object or None
        Passed through to ``field.forward``.
    f0 : array or tuple ``(dy, cache)``, optional
        ``f(t, y)`` if already known (FSAL or previous step); saves one evaluation. A bare array
        leaves ``stages.caches[0] = None`` (fine for forward solves; the VJP then needs a cache).
    full : bool
        If True evaluate every stage (needed for ``y_err`` and for FSAL reuse). If False evaluate
        only the ``tab.n_live`` stages that ``y1`` depends on and return ``y_err = None``;
        ``y1`` is bitwise the same either way.
    tape : bool
        Keep each stage's field cache for :func:`rk_step_vjp` (default). False evaluates the
        field forward-only (no caches, no derivative data); ``stages.caches`` is then empty and
        ``stages.k`` is the field kernel's reusable stage buffer: a driver that passes its own
        :class:`~solvers._field.FieldKernel` must use ``stages.k`` before the next step.

    Returns
    -------
    y1 : array, shape ``y.shape``
    y_err : array or None
        Embedded error estimate ``h sum b_err_i k_i`` (None without ``b_err`` or if not ``full``).
    stages : RKStages
    """
    kernel = field_kernel(field)
    xp = get_array_module(y)
    plan = stage_plan(tab, xp, real_dtype(y.dtype))
    with np.errstate(invalid="ignore", over="ignore"):
        return rk_step_unchecked(kernel, tab, plan, float(t), y, float(h), params, f0, full, tape)


def rk_step_unchecked(kernel: Any, tab: ButcherTableau, plan: StagePlan, t: float, y: Array,
                      h: float, params: Any, f0: Array | tuple[Array, Any] | None, full: bool,
                      tape: bool) -> tuple[Array, Array | None, RKStages]:
    """The body of :func:`rk_step` for drivers that validated once: ``kernel`` a
    :class:`~solvers._field.FieldKernel`, ``plan`` the tableau's :func:`stage_plan` in ``y``'s
    real dtype, ``t`` and ``h`` floats. Stage ``i``'s input is one ``dot`` of ``plan.rows[i]``
    with the stages before it, scaled by ``h``, then ``y`` added in place (``y1`` and ``y_err``
    alike). The caller mutes NumPy's overflow and invalid warnings: a non-finite stage (an
    overflowing trial step) makes ``0 * inf = nan`` here, and the driver, which checks ``y1``,
    rejects the step or reports ``Status.NON_FINITE``."""
    n_eval = tab.n_stages if full else tab.n_live
    c, rows, dot = tab.c_floats, plan.rows, plan.dot
    if f0 is None:
        dy, cache = kernel.forward(t, y, params) if tape else (kernel.evaluate(t, y, params),
                                                               None)
    else:
        dy, cache = f0 if isinstance(f0, tuple) else (f0, None)
    shape = (n_eval,) + tuple(dy.shape)
    xp = get_array_module(y)
    k = xp.empty(shape, dtype=dy.dtype) if tape else kernel.stage_buffer(shape, dy.dtype)
    k[0] = dy
    caches: list[Any] = [cache] if tape else []
    flat = k.reshape(n_eval, -1)
    y_shape = dy.shape
    for i in range(1, n_eval):
        y_i = dot(rows[i], flat[:i]).reshape(y_shape)
        y_i *= h
        y_i += y
        if tape:
            dy, cache = kernel.forward(t + c[i] * h, y_i, params)
            caches.append(cache)
        else:
            dy = kernel.evaluate(t + c[i] * h, y_i, params)
        k[i] = dy
    # Summing over the live stages only makes y1 bitwise equal to the FSAL stage input
    # (a[-1, :n_live] == b[:n_live]) and independent of `full`.
    n_live = tab.n_live
    y1 = dot(plan.b_live, flat[:n_live]).reshape(y_shape)
    y1 *= h
    y1 += y
    y_err = None
    if plan.b_err is not None and full:
        y_err = dot(plan.b_err, flat).reshape(y_shape)
        y_err *= h
        y_err = 0.0 + y_err
    return y1, y_err, RKStages(t, y, h, k, tuple(caches))


def rk_step_vjp(field: Any, tab: ButcherTableau, stages: RKStages, y1_bar: Array,
                need_params: bool = True) -> tuple[Array, Array | None]:
    """Exact VJP of the map ``(y, params) -> y1`` of :func:`rk_step` (times frozen).

    Parameters
    ----------
    field : object with ``vjp(cache, dy_bar, need_params) -> (y_bar, params_bar, t_bar)``
    tab : ButcherTableau
        The tableau used for the forward step.
    stages : RKStages
        As returned by :func:`rk_step` (with ``tape=True``).
    y1_bar : array, shape ``y.shape``
        Cotangent of ``y1``.
    need_params : bool
        Whether to accumulate the parameter cotangent.

    Returns
    -------
    y_bar : array, shape ``y.shape``
    params_bar : array or None
        Sum of the stage parameter cotangents (None if not needed or the field has none). When
        ``field`` is a driver's :class:`~solvers._field.FieldKernel`, this is the kernel's
        reusable step buffer: consume it before the next call.

    Notes
    -----
    Exactly one field VJP per live stage, in reverse stage order. The stage parameter
    cotangents are summed in that order: the last live stage's VJP writes into the step buffer,
    each earlier one into a stage buffer that is then added (the same roundings as adding
    freshly allocated vectors).
    """
    kernel = field_kernel(field)
    xp = get_array_module(y1_bar)
    n, caches, h = stages.k.shape[0], stages.caches, stages.h
    plan = _reverse_plan(tab, xp, real_dtype(stages.k.dtype), n)
    for i, _, _ in plan:
        if i >= len(caches) or caches[i] is None:
            raise ValueError(f"rk_step_vjp: stage {i} has no field cache (it was passed to rk_step "
                             "as a bare f0 array, or taken with tape=False); call rk_step "
                             "without f0, or with f0=(dy, cache).")
    dot = _dot(xp)
    buffers = kernel.param_buffers(y1_bar) if need_params else None
    w: Any = None
    flat: Any = None
    params_bar = None
    for i, b_i, column in plan:
        kappa = b_i * y1_bar
        if w is not None and column is not None:      # sum_{j>i} a_ji w_j, one dot
            kappa += dot(column, flat[i + 1:]).reshape(w.shape[1:])
        kappa *= h
        if buffers is not None:
            first = params_bar is None
            w_i = kernel.vjp_into(caches[i], kappa, buffers[0] if first else buffers[1])
            if first:
                params_bar = buffers[0]
            else:
                params_bar += buffers[1]
        else:
            w_i, g_i, _ = kernel.vjp(caches[i], kappa, need_params=need_params)
            if need_params and g_i is not None:
                params_bar = g_i if params_bar is None else params_bar + g_i
        if w is None:
            w = xp.zeros((n,) + tuple(w_i.shape), dtype=xp.result_type(w_i, y1_bar))
            flat = w.reshape(n, -1)
        w[i] = w_i
    y_bar = y1_bar + w.sum(axis=0) if w is not None else y1_bar
    return y_bar, params_bar


__all__ = ["RKStages", "rk_step", "rk_step_vjp"]
