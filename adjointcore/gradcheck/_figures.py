"""The figures :func:`~adjointcore.gradcheck.check_layer` reports for one layer: the
finite-difference, complex-step and dot-product figures of an input block
(:func:`block_figures`) and the Taylor min rate along a joint direction (:func:`taylor_figure`),
with the random unit directions they are taken along (:func:`random_direction`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from ..backend import Array, get_array_module
from ._complex import complex_step
from ._dot import _norm, dot_product_test, inner
from ._fd import central_difference, machine_eps, relative_error, richardson_difference
from ._taylor import ROUNDOFF_FACTOR, taylor_test

__all__ = ["random_direction", "block_figures", "TAYLOR_ATTEMPTS", "taylor_figure"]


def random_direction(rng: np.random.Generator, shape: Sequence[int], dtype: DTypeLike,
                     xp: Any) -> Array:
    """A random direction of unit 2-norm, drawn in float64 from ``rng`` and cast to ``dtype``
    on ``xp``."""
    g = rng.standard_normal(shape)
    g /= np.linalg.norm(g.ravel())
    return xp.asarray(g.astype(dtype))


def block_figures(key: str, point: Array, fun: Callable[[Array], Array], bar: Array, u: Array,
                   y_bar: Array, wanted: tuple[str, ...], analytic: bool) -> dict[str, float]:
    """``fd_<key>``, ``complex_<key>``, ``dot_<key>`` for one input block (``x`` or params).

    ``a = <bar, u>`` (VJP) is compared with ``b = <y_bar, J u>`` (JVP) relative to
    ``max(|a|, |b|, |y_bar| |J u|, |bar| |u|)``: the last two are the Cauchy-Schwarz bounds of
    ``b`` and ``a``, so the figure is meaningful when both are small by cancellation.
    """
    out = {}
    vjp_value = inner(bar, u)
    bound_a = _norm(bar) * _norm(u)
    if "fd" in wanted:
        ju = central_difference(fun, point, u)
        out[f"fd_{key}"] = relative_error(vjp_value, inner(y_bar, ju),
                                          max(_norm(y_bar) * _norm(ju), bound_a))
    ju_c = complex_step(fun, point, u) if analytic and ("complex" in wanted or "dot" in wanted) \
        else None
    if "complex" in wanted and analytic:
        out[f"complex_{key}"] = relative_error(vjp_value, inner(y_bar, ju_c),
                                               max(_norm(y_bar) * _norm(ju_c), bound_a))
    if "dot" in wanted:
        if analytic:
            jvp = ju_c
        elif point.dtype == np.float32:     # 4th-order steps (eps_mach**(1/5) = 4e-2) too long
            jvp = ju if "fd" in wanted else central_difference(fun, point, u)
        else:
            jvp = richardson_difference(fun, point, u)
        out[f"dot_{key}"] = dot_product_test(jvp, bar, u, y_bar)
    return out


TAYLOR_ATTEMPTS = 3     # fresh directions tried when the remainder reaches roundoff too early


def taylor_figure(forward: Callable[[Array, Array], tuple[Array, Any]], x: Array, params: Array,
                   y_bar: Array, x_bar: Array, p_bar: Array,
                   draw: np.random.Generator) -> tuple[float, str]:
    """Taylor min rate of ``<y_bar, f(params, x)>`` along a joint direction in ``(x, params)``.

    Returns ``(min_rate, "")`` or ``(nan, reason)`` when inconclusive. The largest step moves each
    coordinate by at most 1e-3 of the point's scale (kinks kept at a margin >= 1e-2 are never
    crossed). The roundoff floor is ``1e3 eps_mach |y_bar| max|y|`` over the points visited, a
    bound on the rounding of the sum. A cancellation between the second- and third-order terms
    of the remainder is specific to the direction, a gradient error is not: when the rates have
    not settled before roundoff, up to three fresh directions are tried; if none settles the
    check is reported as inconclusive with the first-order error bound it still implies.
    """
    xp = get_array_module(x)
    n_x = x.size
    m = xp.concatenate([x.ravel(), params.ravel()])
    grad = xp.concatenate([x_bar.ravel(), p_bar.ravel()])

    def scalar(z: Array) -> float:
        return inner(y_bar, forward(z[n_x:], z[:n_x].reshape(x.shape))[0])

    eps_mach = machine_eps(x.dtype)
    y_norm = _norm(forward(params, x)[0])
    bound = 0.0
    for _ in range(TAYLOR_ATTEMPTS):
        dm = random_direction(draw, m.shape, x.dtype, xp)
        eps0 = 1e-3 * max(1.0, float(xp.max(xp.abs(m)))) / float(xp.max(xp.abs(dm)))
        far = _norm(forward(m[n_x:] + eps0 * dm[n_x:],
                            (m[:n_x] + eps0 * dm[:n_x]).reshape(x.shape))[0])
        floor = ROUNDOFF_FACTOR * eps_mach * _norm(y_bar) * max(y_norm, far)
        res = taylor_test(scalar, grad, m, dm, eps0=eps0, n=4, floor=floor, strict=False)
        if res.converged:
            return res.min_rate, ""
        bound = max(bound, float(np.max(res.r1 / res.eps)))
    return float("nan"), (f"inconclusive: in {TAYLOR_ATTEMPTS} directions R1 reached roundoff "
                          f"before its rates settled (max R1/eps = {bound:.1e} bounds any "
                          f"first-order error)")
