"""``check_jvp_vjp``: the checks of a layer's second-order VJP, duck-typed on the layer protocol.

A layer's ``jvp_vjp(params, cache, x_dot, params_dot, y_dot_bar, y_bar=None)`` is the VJP of its
tangent-lifted map ``L: (x, params, t, x_dot, params_dot) -> (y, y_dot)``. With random unit
cotangents ``(y_bar, g)`` it is the gradient of the scalar

    phi(x, params, t, x_dot, params_dot) = <y_bar, f(params, x; t)> + <g, y_dot>,

``y_dot = jvp(params, cache(params, x; t), x_dot, params_dot)``. The check differentiates
``phi`` along random unit directions drawn from ``np.random.default_rng(seed)``, in blocks:

``x``, ``params``, ``t``  second-order terms alone (``y_bar = 0``): ``d<g, y_dot>/d(x, p, t)``,
                          at a random ``(x_dot, params_dot)`` (``params_dot`` nonzero, so the
                          weight-product terms of bilinear layers are exercised);
``x_dot``, ``params_dot`` the tangent cotangents ``J^T g`` (``y_bar = 0``);
``full``                  every input at once with ``y_bar != 0`` (the ordinary VJP included).

What is compared (``a = <bar, u>``, ``b`` the derivative of ``phi`` along ``u``)
------------------------------------------------------------------------------
``fd``       central difference of ``phi`` (step :func:`~adjointcore.gradcheck.auto_step`),
             relative to ``max(|a|, |b|, |bar| |u|)`` (the Cauchy-Schwarz bound keeps the figure
             meaningful under cancellation). ``phi`` is built from the forward *and* the JVP,
             whose third derivatives are those of ``f`` to fourth order (tanh'''' is O(10)),
             so the error is about ``eps_mach**(2/3)`` = 4e-11 times an O(1-100) conditioning
             factor; measured <= 1e-9 on the built-in layers, tolerance 1e-8 (float64). A
             dropped term is an O(1) error.
``complex``  the complex-step derivative of ``phi`` (layers with ``analytic = True``, float64:
             the forward and the JVP both propagate complex input), exact to roundoff;
             tolerance 1e-13.
``taylor``   the Taylor remainder of ``phi`` along the ``full`` direction:
             ``|phi(s + eps u) - phi(s) - eps a| = O(eps**2)``; the least-squares slope over the
             asymptotic points must be 2.00 +- 0.05 (figure ``taylor_slope``, ``|slope - 2|``
             compared with 0.05).

float32: ``fd`` 5e-3 (second differences of float32 products; measured <= 1e-3); no complex
step, no Taylor test.
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from ..backend import Array, get_array_module, real_dtype
from ..errors import check_array
from ..layers.base import call_jvp_vjp, kernel_jvp, layer_kernel
from ..layers.second_order import SecondOrderBars
from ._complex import complex_step
from ._dot import _norm, inner
from ._fd import central_difference, relative_error
from ._figures import random_direction
from ._layer import LayerReport, _layer_name, _what, checks_to_run
from ._taylor import taylor_test

__all__ = ["check_jvp_vjp", "SECOND_ORDER_CHECKS", "default_second_order_tolerances"]

SECOND_ORDER_CHECKS = ("fd", "complex", "taylor")


def default_second_order_tolerances(dtype: DTypeLike) -> dict[str, float]:
    """float64: ``fd`` 1e-8, ``complex`` 1e-13, ``taylor`` 0.05 (on ``|slope - 2|``);
    float32: ``fd`` 5e-3 (see the module notes)."""
    if np.dtype(real_dtype(dtype)) == np.float32:
        return {"fd": 5e-3}
    return {"fd": 1e-8, "complex": 1e-13, "taylor": 0.05}


def _cplx_sum(a: Array, b: Array) -> Array:
    """``sum(a * b)`` without conjugation, kept complex (for the complex step)."""
    return (a * b).sum()


def check_jvp_vjp(layer: Any, x: Array, params: Array | None = None, t: float | None = None,
                  rng: np.random.Generator | None = None, checks: str | Iterable[str] | None = None,
                  tol: dict[str, float] | None = None, seed: int = 0) -> LayerReport:
    """Check a layer's second-order VJP ``jvp_vjp`` against finite differences, the complex step
    and a Taylor test of the lifted scalar ``phi`` (see the module notes).

    Parameters
    ----------
    layer : object
        Has ``forward``, ``jvp`` (or ``apply_jvp``), ``jvp_vjp`` (or ``apply_jvp_vjp``) and
        ``init`` unless ``params`` is given. ``analytic``, ``time_dependent``, ``needs_rng`` are
        read with default False.
    x : ndarray
        Real float64 (verification) or float32 input.
    params : ndarray, shape (n_params,), optional
        Default ``layer.init(np.random.default_rng(seed), dtype=x.dtype)``.
    t : float, optional
        Time of a ``time_dependent`` layer (required for it); its block ``t`` is checked.
    rng : numpy.random.Generator, optional
        For ``needs_rng`` layers (each forward gets a deep copy: the mask is frozen).
    checks : iterable of str, optional
        Subset of ``("fd", "complex", "taylor")``; default all that apply.
    tol : dict, optional
        Overrides of :func:`default_second_order_tolerances`.
    seed : int
        Seed of the tangents, cotangents and directions.

    Returns
    -------
    LayerReport
        Figures ``fd_<block>``, ``complex_<block>`` for the blocks ``x``, ``params``, ``t``,
        ``x_dot``, ``params_dot``, ``full`` (those that apply) and ``taylor_slope``
        (``|slope - 2|``).

    Raises
    ------
    TypeError
        ``x`` not a real float array; unknown check names or a non-dict ``tol``.
    ValueError
        A time-dependent layer without ``t``.
    NotImplementedError
        The layer has no second-order VJP.
    """
    check_array("x", x, allow_complex=False, finite=True)
    xp = get_array_module(x)
    dtype = np.dtype(x.dtype)
    wanted = checks_to_run(checks, SECOND_ORDER_CHECKS)
    tolerances = default_second_order_tolerances(dtype)
    if tol is not None:
        if not isinstance(tol, dict):
            raise TypeError(f"`tol` must be a dict such as {{'fd': 1e-8}}, got {_what(tol)}.")
        tolerances.update({k: float(v) for k, v in tol.items()})
    timed = bool(getattr(layer, "time_dependent", False))
    if timed and t is None:
        raise ValueError(f"{_layer_name(layer)} is time-dependent: pass `t=` (a float).")
    draw = np.random.default_rng(seed)
    if params is None:
        params = xp.asarray(layer.init(np.random.default_rng(seed), dtype=dtype))
    n_params = int(params.shape[0])
    rng0 = np.random.default_rng(seed + 1) if rng is None else rng
    kernel = layer_kernel(layer)
    name = f"{_layer_name(layer)} (jvp_vjp)"

    def forward(p: Array, z: Array, tt: Any) -> tuple[Array, Any]:
        ctx = {}
        if timed:
            ctx["t"] = tt
        if getattr(layer, "needs_rng", False):
            ctx["rng"] = copy.deepcopy(rng0)
        return layer.forward(p, z, **ctx)

    y, cache = forward(params, x, t)
    u = {"x": random_direction(draw, x.shape, dtype, xp),
         "x_dot": random_direction(draw, x.shape, dtype, xp)}
    x_dot = random_direction(draw, x.shape, dtype, xp)
    p_dot = random_direction(draw, params.shape, dtype, xp) if n_params else None
    if n_params:
        u["params"] = random_direction(draw, params.shape, dtype, xp)
        u["params_dot"] = random_direction(draw, params.shape, dtype, xp)
    if timed:
        u["t"] = xp.ones((), dtype=dtype)
    g = random_direction(draw, y.shape, dtype, xp)
    y_bar = random_direction(draw, y.shape, dtype, xp)

    # the point s = (x, params, t, x_dot, params_dot) flattened, in this order
    sizes = [("x", x.size), ("params", n_params), ("t", 1 if timed else 0),
             ("x_dot", x.size), ("params_dot", n_params)]
    offsets, o = {}, 0
    for key, size in sizes:
        offsets[key] = slice(o, o + size)
        o += size
    parts = [x.ravel(), params, xp.asarray([t if timed else 0.0], dtype=dtype)[:int(timed)],
             x_dot.ravel(), p_dot if n_params else params[:0]]
    point = xp.concatenate(parts)

    def unpack(s: Array) -> tuple[Array, Array, Any, Array, Array | None]:
        z = s[offsets["x"]].reshape(x.shape)
        p = s[offsets["params"]]
        tt: Any = s[offsets["t"]][0] if timed else None
        if timed:
            tt = complex(tt) if xp.iscomplexobj(s) else float(tt)
        zd = s[offsets["x_dot"]].reshape(x.shape)
        pd = s[offsets["params_dot"]] if n_params else None
        return z, p, tt, zd, pd

    def phi_fn(with_y_bar: bool) -> Callable[[Array], Array]:
        def phi(s: Array) -> Array:
            z, p, tt, zd, pd = unpack(s)
            yy, c = forward(p, z, tt)
            y_dot = kernel_jvp(kernel, p, c, zd, pd)
            out = _cplx_sum(g, y_dot)
            if with_y_bar:
                out = out + _cplx_sum(y_bar, yy)
            return out
        return phi

    def direction(keys: Iterable[str]) -> Array:
        d = xp.zeros_like(point)
        for key in keys:
            if key in u:
                d[offsets[key]] = u[key].ravel()
        return d

    failures, figures, skipped = [], {}, {}
    bars0 = call_jvp_vjp(kernel, params, cache, x_dot, p_dot, g, None)
    bars1 = call_jvp_vjp(kernel, params, cache, x_dot, p_dot, g, y_bar)
    for bars, label in ((bars0, "y_bar=None"), (bars1, "y_bar")):
        failures.extend(_protocol(bars, x, n_params, timed, dtype, label))
    if failures:
        return LayerReport(name, False, {}, failures, tolerances, {}, str(dtype))

    def flat_bar(bars: SecondOrderBars) -> Array:
        tb = bars.t_bar
        pieces = [bars.x_bar.ravel(), bars.params_bar.ravel(),
                  xp.asarray([0.0 if tb is None else tb], dtype=dtype)[:int(timed)],
                  bars.x_dot_bar.ravel(), bars.params_dot_bar.ravel()]
        return xp.concatenate(pieces)

    grad0, grad1 = flat_bar(bars0), flat_bar(bars1)
    analytic = bool(getattr(layer, "analytic", False)) and dtype == np.float64
    if "complex" in wanted and not analytic:
        skipped["complex"] = "float32 input" if getattr(layer, "analytic", False) \
            else "layer.analytic is False"
    bound: float | None          # a Cauchy-Schwarz bound, later a tolerance
    blocks: list[tuple[str, tuple[str, ...], Array, bool]]
    blocks = [(k, (k,), grad0, False) for k in ("x", "params", "t", "x_dot", "params_dot")
              if k in u]
    blocks.append(("full", tuple(u), grad1, True))
    for key, keys, grad, with_y_bar in blocks:
        d = direction(keys)
        a = inner(grad, d)
        bound = _norm(grad) * _norm(d)
        phi = phi_fn(with_y_bar)
        if "fd" in wanted:
            b = float(central_difference(phi, point, d))
            figures[f"fd_{key}"] = relative_error(a, b, bound)
        if "complex" in wanted and analytic:
            b = float(complex_step(phi, point, d))
            figures[f"complex_{key}"] = relative_error(a, b, bound)
        if key == "full" and "taylor" in wanted and dtype == np.float64:
            eps0 = 1e-2 * max(1.0, float(xp.max(xp.abs(point)))) / float(xp.max(xp.abs(d)))
            # a lambda binding `phi` by default
            res = taylor_test(lambda s, phi=phi: float(phi(s)), grad, point, d, eps0=eps0, n=4,  # type: ignore[misc]
                              strict=False)
            if res.converged and np.isfinite(res.slope1):
                figures["taylor_slope"] = abs(res.slope1 - 2.0)
            elif res.converged:           # every remainder at roundoff: phi linear along d
                figures["taylor_slope"] = 0.0
            else:
                skipped["taylor"] = "inconclusive: the remainder reached roundoff early"
    for key, value in figures.items():
        bound = tolerances.get(key.split("_")[0])
        if bound is not None and not value <= bound:
            failures.append(f"{key} = {value:.3e} violates <= {bound:.1e}")
    return LayerReport(name, not failures, figures, failures, tolerances, skipped, str(dtype))


def _protocol(bars: Any, x: Array, n_params: int, timed: bool, dtype: DTypeLike,
              label: str) -> list[str]:
    """Shape/dtype violations of a ``jvp_vjp`` result (reported as failures)."""
    out = []
    if not isinstance(bars, SecondOrderBars):
        return [f"{label}: jvp_vjp returned {_what(bars)}, expected SecondOrderBars"]
    for field, shape in (("x_bar", x.shape), ("x_dot_bar", x.shape),
                         ("params_bar", (n_params,)), ("params_dot_bar", (n_params,))):
        value = getattr(bars, field)
        if not hasattr(value, "shape") or tuple(value.shape) != tuple(shape):
            out.append(f"{label}: {field} = {_what(value)}, expected shape {tuple(shape)}")
        elif value.size and value.dtype != dtype:
            out.append(f"{label}: {field} has dtype {value.dtype}, expected {dtype} (keep the "
                       f"layer's precision)")
    if timed and bars.t_bar is None:
        out.append(f"{label}: t_bar is None for a time-dependent layer")
    if not timed and bars.t_bar is not None:
        out.append(f"{label}: t_bar is {_what(bars.t_bar)} for a layer without time (want None)")
    return out
