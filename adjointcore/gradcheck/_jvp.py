"""``check_jvp``: the checks of a layer's forward mode, duck-typed on the layer protocol.

A layer's ``jvp(params, cache, x_dot, params_dot=None) -> y_dot`` is the directional derivative
of ``y = forward(params, x)`` along ``(x_dot, params_dot)``. It is checked along three random
unit directions drawn from ``np.random.default_rng(seed)``, in blocks:

``x``       ``(u_x, None)``: the state direction alone (``params_dot=None``, the zero-tangent path);
``params``  ``(0, u_p)``: the parameter direction alone (layers with parameters);
``joint``   ``(u_x, u_p)``: both at once (the two parts must add up).

What is compared
----------------
``fd``       ``y_dot`` against the central difference of the forward along the block's direction
             (step :func:`~adjointcore.gradcheck.auto_step`), as whole arrays:
             ``|y_dot - D u| / max(|y_dot|, |D u|)`` (Euclidean norms). The central difference is
             accurate to ``eps**2 |f'''| + eps_mach |f| / eps`` with ``eps ~ eps_mach**(1/3)``,
             i.e. about ``eps_mach**(2/3)`` = 4e-11 in float64 times a conditioning factor
             (``|f'''| / |f'|`` and ``|f| / |J u|``) of O(1-100) for the built-in layers (measured
             3e-12 .. 3e-10): the default tolerance 1e-8 keeps a factor >= 30 above the worst of
             them while a dropped term is an O(1) error.
``complex``  the same against the complex-step derivative ``Im f(z + i h u) / h`` (layers with
             ``analytic = True``, float64): exact to roundoff, so the two differ by a few
             ``eps_mach`` (measured <= 3e-16); tolerance 1e-13.
``dot``      the adjoint identity ``<J u, w> = <u, J^T w>`` between the hand-written JVP and the
             layer's own VJP (:func:`~adjointcore.gradcheck.dot_product_test`, ``w`` a random
             unit cotangent), per block (``joint``: ``u = (u_x, u_p)`` and ``J^T w = (x_bar,
             params_bar)``). Both sides are computed to roundoff, so a consistent pair agrees
             to about ``eps_mach`` times the length of the inner products; tolerance 1e-12.

float32: ``fd`` 1e-3 (``eps_mach**(2/3)`` = 2.4e-5 at best; the built-in catalog reaches
3e-4), ``dot`` 1e-5 (both sides rounded to float32, ``eps_mach`` = 1.2e-7, inner products summed
in float32; measured <= 1e-7); no complex step.

Protocol violations are reported as failures without figures: ``y_dot`` not an array of the
forward output's shape and dtype, or ``x_dot``/``params_dot`` modified in place.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from ..backend import Array, get_array_module, real_dtype
from ..errors import check_array
from ._complex import complex_step
from ._dot import dot_product_test
from ._fd import central_difference, relative_error
from ._figures import random_direction
from ._layer import (
    LayerReport,
    _call_vjp,
    _check_output,
    _layer_name,
    _make_forward,
    _protocol_failures,
    _tol_key,
    _what,
    checks_to_run,
    resolve_params,
)

__all__ = ["check_jvp", "JVP_CHECKS", "default_jvp_tolerances"]

JVP_CHECKS = ("fd", "complex", "dot")


def default_jvp_tolerances(dtype: DTypeLike) -> dict[str, float]:
    """Tolerances of :func:`check_jvp` per check for a computation in ``dtype``.

    float64: ``fd`` 1e-8, ``complex`` 1e-13, ``dot`` 1e-12; float32: ``fd`` 1e-3, ``dot`` 1e-5
    (see the module notes for the error each check can reach).
    """
    if np.dtype(real_dtype(dtype)) == np.float32:
        return {"fd": 1e-3, "dot": 1e-5}
    return {"fd": 1e-8, "complex": 1e-13, "dot": 1e-12}


def _resolve(checks: str | Iterable[str] | None, tol: dict[str, float] | None,
             dtype: DTypeLike) -> tuple[tuple[str, ...], dict[str, float]]:
    """``(checks to run, tolerances in force)``; unknown names and bad values raise, naming the
    argument and listing what is allowed."""
    wanted = checks_to_run(checks, JVP_CHECKS)
    tolerances = default_jvp_tolerances(dtype)
    if tol is None:
        return wanted, tolerances
    allowed = ", ".join(repr(k) for k in JVP_CHECKS)
    if not isinstance(tol, dict):
        raise TypeError(f"`tol` must be a dict of tolerances such as {{'fd': "
                        f"{tolerances['fd']}}}, got {_what(tol)}; allowed keys: {allowed}.")
    for k, v in tol.items():
        if k not in JVP_CHECKS:
            close = difflib.get_close_matches(k, JVP_CHECKS, n=1) if isinstance(k, str) else []
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"`tol` has the unknown key {k!r}{hint}; allowed keys: {allowed} "
                             f"(figures such as 'fd_x' share the tolerance of their check).")
        if isinstance(v, (bool, np.bool_)) or not isinstance(
                v, (int, float, np.integer, np.floating)) or not np.isfinite(v) or v <= 0:
            raise ValueError(f"`tol[{k!r}]` must be a positive finite number, got {_what(v)}; "
                             f"e.g. tol={{{k!r}: {default_jvp_tolerances(np.float64)[k]}}}.")
        tolerances[k] = float(v)
    return wanted, tolerances


def _call_jvp(layer: Any, params: Array, cache: Any, x_dot: Array, params_dot: Array | None,
              y: Array) -> tuple[Array, list[str]]:
    """``layer.jvp(...)`` on copies of the tangents; ``(y_dot, failures)`` where failures list
    a result that is not an array shaped and typed like ``y`` or a tangent written in place."""
    xd = x_dot.copy()
    pd = None if params_dot is None else params_dot.copy()
    y_dot = layer.jvp(params, cache, xd, pd)
    failures = []
    if not hasattr(y_dot, "shape") or tuple(y_dot.shape) != tuple(y.shape):
        failures.append(f"jvp returned y_dot = {_what(y_dot)}, expected an array of shape "
                        f"{tuple(y.shape)} (the shape of the forward output y); fix the layer's "
                        f"jvp")
    elif getattr(y_dot, "dtype", None) != y.dtype:
        failures.append(f"jvp returned y_dot of dtype {y_dot.dtype} for tangents of the input's "
                        f"dtype; expected the forward output's dtype {y.dtype} (keep the "
                        f"tangent in the layer's precision)")
    xp = get_array_module(x_dot)
    if not bool(xp.array_equal(xd, x_dot)):
        failures.append("jvp modified its argument x_dot in place; compute y_dot into a new "
                        "array (callers reuse their tangents)")
    if pd is not None and not bool(xp.array_equal(pd, params_dot)):
        failures.append("jvp modified its argument params_dot in place; read it only")
    return y_dot, failures


def check_jvp(layer: Any, x: Array, params: Array | None = None,
              rng: np.random.Generator | int | None = None, t: float | None = None,
              checks: str | Iterable[str] | None = None, tol: dict[str, float] | None = None,
              seed: int = 0) -> LayerReport:
    """Check a layer's forward mode ``jvp`` against finite differences, the complex step and its
    own VJP (the adjoint identity).

    Parameters
    ----------
    layer : object
        Has ``forward(params, x, **context) -> (y, cache)``, ``jvp(params, cache, x_dot,
        params_dot=None) -> y_dot``, ``vjp(params, cache, y_bar)`` (for the ``dot`` check) and
        ``init(rng, dtype)`` unless ``params`` is given. ``analytic``, ``time_dependent`` and
        ``needs_rng`` are read with default False. No inheritance needed. A layer whose
        ``exact_vjp`` is not True (its forward re-chooses a discretisation) is reported
        NOT CHECKED with that message.
    x : ndarray
        Input (NumPy or CuPy), float64 for verification or float32.
    params : ndarray, shape (n_params,), optional
        Default ``layer.init(np.random.default_rng(seed), dtype=x.dtype)``.
    rng : numpy.random.Generator or int, optional
        For ``needs_rng`` layers; every forward call gets a deep copy (the mask is frozen, as
        ``jvp`` holds the cached mask fixed). Default ``default_rng(seed + 1)``.
    t : float, optional
        Time of ``time_dependent`` layers (required for them); a constant, no tangent.
    checks : iterable of str, optional
        Subset of ``("fd", "complex", "dot")``; default all that apply.
    tol : dict, optional
        Overrides of :func:`default_jvp_tolerances` (keys ``fd``, ``complex``, ``dot``).
    seed : int
        Seed of the directions, the cotangent and default parameters.

    Returns
    -------
    LayerReport
        Figures ``fd_<block>``, ``complex_<block>``, ``dot_<block>`` for the blocks ``x``,
        ``params`` and ``joint`` (the last two for layers with parameters); ``passed`` is False
        when a figure exceeds its tolerance or ``jvp``/``vjp`` violate the protocol (listed in
        ``failures``).

    Raises
    ------
    TypeError
        ``x`` is not a float array; ``layer`` lacks ``forward``/``jvp`` (``vjp`` for the ``dot``
        check, ``init`` without ``params``); ``params`` is not a flat float array; bad
        ``checks``/``tol`` types; ``forward``/``vjp`` not returning pairs.
    ValueError
        ``x`` empty or not finite; unknown ``checks``/``tol`` keys or bad tolerance values;
        ``params`` disagreeing with ``n_params``; a time-dependent layer without ``t``.
    NotImplementedError
        From the layer's own ``jvp`` when it has none (e.g. a :class:`~adjointcore.layers.Layer`
        subclass that does not override it).
    """
    check_array("x", x, allow_complex=False, finite=True,
                fix="check_jvp takes a real float64 (verification) or float32 input; the "
                    "complex-step check makes its own complex copies.")
    if x.size == 0:
        raise ValueError(f"`x` is empty (shape {tuple(x.shape)}); pass at least one element.")
    xp = get_array_module(x)
    dtype = np.dtype(x.dtype)
    wanted, tolerances = _resolve(checks, tol, dtype)
    needed = ["forward", "jvp"] + (["vjp"] if "dot" in wanted else []) \
        + ([] if params is not None else ["init"])
    for attr in needed:
        if not callable(getattr(layer, attr, None)):
            raise TypeError(f"`layer` ({type(layer).__name__}) lacks `{attr}`; check_jvp needs "
                            f"{', '.join(needed)} (see docs/protocols.md, 'Forward mode').")
    draw = np.random.default_rng(seed)
    params = resolve_params(layer, params, xp, dtype, seed)
    n_params = int(params.shape[0])
    name = f"{_layer_name(layer)} (jvp)"
    inexact = getattr(layer, "exact_vjp", True)
    if inexact is not True:
        return LayerReport(name, True, {}, [], tolerances, {c: str(inexact) for c in wanted},
                           str(dtype))
    rng0 = np.random.default_rng(seed + 1) if rng is None else (
        rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng))
    forward = _make_forward(layer, t, rng0)

    y, cache = forward(params, x)
    _check_output(layer, y)
    u_x = random_direction(draw, x.shape, dtype, xp)
    u_p = random_direction(draw, params.shape, dtype, xp) if n_params else None
    w = random_direction(draw, y.shape, dtype, xp)
    n_x = x.size

    def joint(z: Array) -> Array:
        return forward(z[n_x:], z[:n_x].reshape(x.shape))[0]

    # (tangents passed to jvp, point, function, direction) per block
    blocks = {"x": ((u_x, None), x, lambda z: forward(params, z)[0], u_x)}
    if n_params:
        blocks["params"] = ((xp.zeros_like(x), u_p), params, lambda q: forward(q, x)[0], u_p)
        blocks["joint"] = ((u_x, u_p), xp.concatenate([x.ravel(), params]), joint,
                           xp.concatenate([u_x.ravel(), u_p]))
    tangents: dict[str, Any]
    failures: list[str]
    tangents, failures = {}, []
    for key, ((x_dot, params_dot), *_rest) in blocks.items():
        tangents[key], bad = _call_jvp(layer, params, cache, x_dot, params_dot, y)
        failures.extend(f"{key} block: {msg}" for msg in bad)
    if failures:
        return LayerReport(name, False, {}, sorted(set(failures), key=failures.index),
                           tolerances, {}, str(dtype))

    analytic = bool(getattr(layer, "analytic", False)) and dtype != np.float32
    figures, skipped = {}, {}
    if "complex" in wanted and not analytic:
        skipped["complex"] = ("float32 input" if getattr(layer, "analytic", False)
                              else "layer.analytic is False")
    if "dot" in wanted:
        x_bar, p_bar = _call_vjp(layer, params, cache, w)
        bad = _protocol_failures(x, x_bar, p_bar, n_params)
        if bad:
            return LayerReport(name, False, {}, bad, tolerances, skipped, str(dtype))
        bars = {"x": x_bar, "params": p_bar,
                "joint": xp.concatenate([x_bar.ravel(), p_bar.ravel()]) if n_params else None}
    for key, (_, point, fun, u) in blocks.items():
        y_dot = tangents[key]
        if "fd" in wanted:
            figures[f"fd_{key}"] = relative_error(y_dot, central_difference(fun, point, u))
        if "complex" in wanted and analytic:
            figures[f"complex_{key}"] = relative_error(y_dot, complex_step(fun, point, u))
        if "dot" in wanted:
            figures[f"dot_{key}"] = dot_product_test(y_dot, bars[key], u, w)

    for key, value in figures.items():
        bound = tolerances.get(_tol_key(key))
        if bound is not None and not value <= bound:
            failures.append(f"{key} = {value:.3e} violates <= {bound:.1e}")
    return LayerReport(name, not failures, figures, failures, tolerances, skipped, str(dtype))
