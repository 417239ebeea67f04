"""``check_layer``: every gradient check of one layer, duck-typed on the layer protocol.

What is checked (``J`` = Jacobian of the forward w.r.t. ``x`` or the flat ``params``)
-------------------------------------------------------------------------------------
Random unit directions ``u_x``, ``u_p`` and a random unit cotangent ``y_bar`` are drawn from
``np.random.default_rng(seed)``; ``(x_bar, p_bar) = layer.vjp(params, cache, y_bar)``.

``fd``       ``<x_bar, u_x>`` against ``<y_bar, D u_x>``, ``D u_x`` the central difference of
             the forward (step :func:`auto_step`).
``complex``  the same with the complex-step JVP (layers with ``analytic = True``; float64 only).
``dot``      the dot-product test :func:`dot_product_test` with the most accurate JVP available:
             complex step where analytic (exact to roundoff), else the fourth-order Richardson
             difference (error ~ eps_mach**(4/5) ~ 3e-13 for a piecewise-smooth layer away from
             kinks). Second-order FD (~1e-10) would not resolve the 1e-12 tolerance. In float32
             the central difference is used (the 4th-order step, 4e-2, would cross kinks).
``taylor``   :func:`taylor_test` on the scalar ``<y_bar, f(params, x)>`` along ``(u_x, u_p)``
             jointly (float64 only: in float32 the remainder hits roundoff before it converges).

Relative error of ``fd`` / ``complex``: ``|a - b| / max(|a|, |b|, |y_bar| |J u|, |x_bar| |u|)``
with ``a = <x_bar, u>`` the VJP figure and ``b = <y_bar, J u>`` the JVP figure. The last two
terms are the Cauchy-Schwarz bounds of ``|b|`` and ``|a|`` (the "|y_bar| |J| |u|" scale, with
``|J|`` estimated from both sides), so the measure stays meaningful when both inner products
are tiny by cancellation; a wrong VJP cannot hide behind a large ``|x_bar|`` because ``a`` grows
with it (the directions are random).

Stochastic layers (``needs_rng``) get a deep copy of one fixed Generator on every forward call,
so the mask is frozen; time-dependent layers get ``t`` on every call.
"""
from __future__ import annotations

import copy
import difflib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from ..backend import FLOAT_DTYPES, Array, get_array_module, real_dtype
from ..errors import check_array
from ..layers.binding import call_vjp
from ._figures import block_figures, random_direction, taylor_figure

__all__ = ["check_layer", "LayerReport", "CHECKS", "default_tolerances"]

CHECKS = ("fd", "complex", "dot", "taylor")


def default_tolerances(dtype: DTypeLike) -> dict[str, float]:
    """Tolerances per check for a computation in ``dtype``.

    float64: ``fd`` 1e-7 (a correct layer reaches 1e-9..1e-11, eps_mach**(2/3)), ``complex``
    1e-13 (exact to roundoff), ``dot`` 1e-12 (complex-step or fourth-order JVP, ~1e-13),
    ``taylor_min_rate`` 1.9 (rate 2 expected, 1 for a wrong gradient).
    float32: ``fd`` 1e-3 (eps_mach**(2/3) = 2.4e-5 at best; conditioning of O(10) and the
    cotangent contraction leave a factor 40 margin), ``dot`` 1e-3 (same central-difference JVP);
    complex and Taylor skipped. Kinks need a margin above the float32 FD step
    (``4.9e-3 max(1, |x|_inf)``), e.g. 5e-2.
    """
    if np.dtype(real_dtype(dtype)) == np.float32:
        return {"fd": 1e-3, "dot": 1e-3}
    return {"fd": 1e-7, "complex": 1e-13, "dot": 1e-12, "taylor_min_rate": 1.9}


@dataclass(frozen=True)
class LayerReport:
    """Result of :func:`check_layer`.

    Attributes
    ----------
    name : str
        ``repr``-style name of the layer.
    passed : bool
        True when no check failed (also when every check was skipped: then ``figures`` is empty,
        ``skipped`` says why, and ``str(report)`` reads NOT CHECKED).
    figures : dict
        ``{figure: value}``: ``fd_x``, ``fd_params``, ``complex_x``, ``complex_params``,
        ``dot_x``, ``dot_params`` (relative errors) and ``taylor_min_rate``.
    failures : list of str
        One readable line per failed check or protocol violation.
    tolerances : dict
        Tolerances in force, keyed ``fd``, ``complex``, ``dot``, ``taylor_min_rate``.
    skipped : dict
        ``{check: reason}`` for checks that did not apply.
    dtype : str
        Dtype the layer ran in.
    """

    name: str
    passed: bool
    figures: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    tolerances: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    dtype: str = "float64"

    def __str__(self) -> str:
        status = "PASS" if self.passed else "FAIL"
        if self.passed and not self.figures and self.skipped:
            status = "NOT CHECKED"
        lines = [f"{self.name} [{self.dtype}]: {status}"]
        for key, value in self.figures.items():
            tol_key = _tol_key(key)
            bound = self.tolerances.get(tol_key)
            rel = ">=" if tol_key == "taylor_min_rate" else "<="
            limit = f"  ({rel} {bound:.1e})" if bound is not None else ""
            lines.append(f"  {key:<16} {value:10.3e}{limit}")
        for check, reason in self.skipped.items():
            lines.append(f"  {check:<16} skipped: {reason}")
        lines.extend(f"  FAILED: {msg}" for msg in self.failures)
        return "\n".join(lines)


def _tol_key(figure: str) -> str:
    return "taylor_min_rate" if figure.startswith("taylor") else figure.split("_")[0]


TOL_KEYS = ("fd", "complex", "dot", "taylor_min_rate")


def checks_to_run(checks: str | Iterable[str] | None, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """``checks`` (None: all of ``allowed``; a name; an iterable of names) as a tuple.

    Raises
    ------
    TypeError, ValueError
        Not a name or an iterable of names; an unknown name (the message lists ``allowed``).
    """
    if checks is None:
        return allowed
    try:
        wanted = (checks,) if isinstance(checks, str) else tuple(checks)
    except TypeError:
        raise TypeError(f"`checks` must be a check name or an iterable of them, got "
                        f"{checks!r}; choose from {allowed}.") from None
    unknown = [c for c in wanted if c not in allowed]
    if unknown:
        raise ValueError(f"`checks` has unknown entries {unknown}; choose from {allowed}.")
    return wanted


def _resolve_checks(checks: str | Iterable[str] | None, tol: dict[str, float] | None,
                    dtype: DTypeLike) -> tuple[tuple[str, ...], dict[str, float]]:
    """The checks to run and the tolerances in force (defaults updated with ``tol``).

    Raises
    ------
    TypeError
        ``checks`` is not a string or an iterable of strings, or ``tol`` is not a dict.
    ValueError
        An unknown check name or ``tol`` key, or a ``tol`` value that is not a positive finite
        real number; the message lists the allowed names/keys.
    """
    wanted = checks_to_run(checks, CHECKS)
    tolerances = default_tolerances(dtype)
    if tol is not None:
        allowed = ", ".join(repr(k) for k in TOL_KEYS)
        example = {"fd": tolerances["fd"]}
        if not isinstance(tol, dict):
            raise TypeError(f"`tol` must be a dict of tolerances such as {example}, got "
                            f"{_what(tol)}; allowed keys: {allowed}.")
        unknown = {k: v for k, v in tol.items() if k not in TOL_KEYS}
        if unknown:
            hints = [f"{close[0]!r} for {k!r}" for k in unknown if isinstance(k, str)
                     for close in [difflib.get_close_matches(k, TOL_KEYS, n=1)] if close]
            hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
            raise ValueError(f"`tol` has unknown keys {unknown}{hint}; allowed keys: {allowed} "
                             f"(figures such as 'fd_x' share the tolerance of their check, "
                             f"'fd').")
        for k, v in tol.items():
            if isinstance(v, (bool, np.bool_)) or not isinstance(
                    v, (int, float, np.integer, np.floating)) or not np.isfinite(v) or v <= 0:
                default = tolerances.get(k, default_tolerances(np.float64)[k])
                raise ValueError(f"`tol[{k!r}]` must be a positive finite number, got "
                                 f"{_what(v)}; e.g. tol={{{k!r}: {default}}}. Allowed keys: "
                                 f"{allowed}.")
            tolerances[k] = float(v)
    return wanted, tolerances


def _layer_name(layer: Any) -> str:
    try:
        return repr(layer)
    except Exception:  # noqa: BLE001 - a broken user __repr__ must not hide the report
        return type(layer).__name__


def _who(layer: Any) -> str:
    """The layer as named in an error message: its ``repr`` when its class defines one, else
    its class name (not ``<module.Class object at 0x...>``)."""
    if type(layer).__repr__ is object.__repr__:
        return type(layer).__name__
    return _layer_name(layer)


def _what(value: Any, depth: int = 0) -> str:
    """Short description of a returned value: type and shape/dtype (arrays), length and items
    (tuples/lists, one level), or a clipped ``repr``."""
    if value is None:
        return "None"
    if isinstance(value, (tuple, list)):
        if depth:
            return f"{type(value).__name__} of length {len(value)}"
        items = ", ".join(_what(v, depth + 1) for v in value[:4])
        more = ", ..." if len(value) > 4 else ""
        return f"{type(value).__name__} of length {len(value)} ({items}{more})"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a broken user __repr__ must not hide the message
        text = "<unprintable>"
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{type(value).__name__} {text}"


def _make_forward(layer: Any, t: float | None,
                  rng0: np.random.Generator) -> Callable[[Array, Array], tuple[Array, Any]]:
    """``f(params, x) -> y`` with frozen context (same ``t``, same mask on every call)."""
    context = {}
    if getattr(layer, "time_dependent", False):
        if t is None:
            raise ValueError(f"{_layer_name(layer)} is time-dependent: pass `t=` (a float) to "
                             f"check_layer.")
        context["t"] = t
    needs_rng = getattr(layer, "needs_rng", False)

    def forward(params: Array, x: Array) -> tuple[Array, Any]:
        ctx = dict(context, rng=copy.deepcopy(rng0)) if needs_rng else context
        out = layer.forward(params, x, **ctx)
        if not isinstance(out, tuple) or len(out) != 2:
            raise TypeError(f"{_who(layer)}.forward returned {_what(out)}; the layer protocol "
                            f"wants the pair (y, cache): end forward with `return y, cache` "
                            f"(cache: what vjp needs, e.g. a tuple of inputs).")
        return out

    return forward


def _check_output(layer: Any, y: Any) -> None:
    """The forward output ``y`` must be a float (or complex) array: its shape sets ``y_bar``."""
    if not hasattr(y, "shape") or not hasattr(y, "dtype") or y.dtype.kind not in "fc":
        raise TypeError(f"{_who(layer)}.forward returned y = {_what(y)} as the first element of "
                        f"its (y, cache) pair; y must be a float NumPy or CuPy array: return "
                        f"`xp.asarray(y, dtype=x.dtype), cache` (and check the order y, cache).")


def _protocol_failures(x: Array, x_bar: Any, p_bar: Any, n_params: int) -> list[str]:
    """Shape violations of the VJP outputs (reported as failures instead of figures)."""
    out = []
    if not hasattr(x_bar, "shape") or tuple(x_bar.shape) != tuple(x.shape):
        out.append(f"vjp returned x_bar = {_what(x_bar)}, expected an array of shape "
                   f"{tuple(x.shape)} (the shape of x); fix the layer's vjp")
    if not hasattr(p_bar, "shape") or tuple(p_bar.shape) != (n_params,):
        out.append(f"vjp returned params_bar = {_what(p_bar)}, expected an array of shape "
                   f"({n_params},) (the shape of params; empty for a layer without parameters); "
                   f"fix the layer's vjp")
    return out


def _call_vjp(layer: Any, params: Array, cache: Any, y_bar: Array) -> tuple[Any, Any]:
    """``(x_bar, params_bar)`` from the layer's ``vjp`` as the README documents it,
    ``vjp(params, cache, y_bar)``; ``need_params=True`` is passed only to layers that accept it.
    A result that is not a pair raises a TypeError naming the layer and what it returned."""
    out = call_vjp(layer, params, cache, y_bar)
    if not isinstance(out, tuple) or len(out) != 2:
        raise TypeError(f"{_who(layer)}.vjp returned {_what(out)}; the layer protocol wants the "
                        f"pair (x_bar, params_bar): end vjp with `return x_bar, params_bar` "
                        f"(params_bar an empty array for a layer without parameters).")
    return out


def resolve_params(layer: Any, params: Array | None, xp: Any, dtype: DTypeLike, seed: int) -> Array:
    """``params`` checked (a flat float array agreeing with a declared ``n_params``), or the
    layer's ``init`` with ``seed`` when None.

    Raises
    ------
    TypeError, ValueError
        Naming ``params`` and saying how to build it.
    """
    if params is None:
        params = xp.asarray(layer.init(np.random.default_rng(seed), dtype=dtype))
    if not hasattr(params, "shape") or getattr(params, "ndim", None) != 1 \
            or getattr(params, "dtype", None) not in FLOAT_DTYPES:
        raise TypeError(f"`params` must be a flat 1-D float32/float64 array, got "
                        f"{_what(params)}; use layer.init(rng).")
    declared = getattr(layer, "n_params", None)
    if declared is not None and not callable(declared) and int(declared) != params.shape[0]:
        raise ValueError(f"`params` has {int(params.shape[0])} entries but "
                         f"{_layer_name(layer)}.n_params is {int(declared)}; pass parameters "
                         f"from layer.init(rng).")
    return params


def check_layer(layer: Any, x: Array, params: Array | None = None,
                rng: np.random.Generator | int | None = None, t: float | None = None,
                checks: str | Iterable[str] | None = None, tol: dict[str, float] | None = None,
                seed: int = 0) -> LayerReport:
    """Run the gradient checks on one layer (anything following the layer protocol).

    Parameters
    ----------
    layer : object
        Has ``forward(params, x, **context) -> (y, cache)`` and ``vjp(params, cache, y_bar) ->
        (x_bar, params_bar)`` (``need_params=True`` is passed only to a ``vjp`` that accepts it),
        and ``init(rng, dtype)`` unless ``params`` is given; ``n_params`` is then inferred from
        ``params`` (a declared ``n_params`` must agree). ``analytic``, ``time_dependent`` and
        ``needs_rng`` are read with default False. No inheritance needed. A layer whose VJP is
        not the derivative of its forward map (e.g. an adaptive :class:`nets.ODEBlock`, whose
        forward re-chooses its grid) sets ``exact_vjp`` to a message saying which check applies
        instead; the report then skips every check with that message.
    x : ndarray
        Input (NumPy or CuPy), float64 for verification or float32.
    params : ndarray, optional
        Flat parameters; default ``layer.init(np.random.default_rng(seed), dtype=x.dtype)``.
    rng : numpy.random.Generator or int, optional
        Generator for ``needs_rng`` layers; each forward call gets a deep copy of it so the
        random mask is identical across evaluations. Default ``default_rng(seed + 1)``.
    t : float, optional
        Time for ``time_dependent`` layers (required for them).
    checks : iterable of str, optional
        Subset of ``("fd", "complex", "dot", "taylor")``; default all that apply.
    tol : dict, optional
        Overrides of :func:`default_tolerances` (keys ``fd``, ``complex``, ``dot``,
        ``taylor_min_rate``).
    seed : int
        Seed of the directions, the cotangent and default parameters.

    Returns
    -------
    LayerReport
        A VJP result of the wrong shape (``x_bar`` not shaped like ``x``, ``params_bar`` not
        of length ``n_params``) is reported as a failure, without figures.

    Raises
    ------
    TypeError
        ``x`` is not a float32/float64 array; ``layer`` lacks ``forward``/``vjp`` (or ``init``
        without ``params``); ``params`` is not a flat float array; ``tol`` is not a dict;
        ``layer.forward`` does not return the pair ``(y, cache)`` with ``y`` a float array, or
        ``layer.vjp`` does not return the pair ``(x_bar, params_bar)`` (the message names the
        layer and describes what it returned).
    ValueError
        ``x`` is empty or not finite; unknown ``checks`` or ``tol`` keys; a ``tol`` value that
        is not a positive finite number (the message names the key and the value and lists the
        allowed keys); ``params`` disagreeing with a declared ``n_params``; a time-dependent
        layer without ``t``.
    """
    check_array("x", x, allow_complex=False, finite=True,
                fix="check_layer takes a real float64 (verification) or float32 input; the "
                    "complex-step check makes its own complex copies.")
    if x.size == 0:
        raise ValueError(f"`x` is empty (shape {tuple(x.shape)}); pass at least one element, "
                         f"e.g. np.random.default_rng(0).standard_normal((2, n_features)).")
    needed = ("forward", "vjp") if params is not None else ("forward", "vjp", "init")
    for attr in needed:
        if not callable(getattr(layer, attr, None)):
            raise TypeError(f"`layer` ({type(layer).__name__}) lacks `{attr}`; it must follow "
                            f"the layer protocol (init, forward, vjp; init only when `params` "
                            f"is not given).")
    xp = get_array_module(x)
    dtype = np.dtype(x.dtype)
    wanted, tolerances = _resolve_checks(checks, tol, dtype)
    draw = np.random.default_rng(seed)
    params = resolve_params(layer, params, xp, dtype, seed)
    n_params = int(params.shape[0])
    inexact = getattr(layer, "exact_vjp", True)
    if inexact is not True:
        return LayerReport(_layer_name(layer), True, {}, [], tolerances,
                           {c: str(inexact) for c in wanted}, str(dtype))
    rng0 = np.random.default_rng(seed + 1) if rng is None else (
        rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng))
    forward = _make_forward(layer, t, rng0)

    y, cache = forward(params, x)
    _check_output(layer, y)
    y_bar = random_direction(draw, y.shape, dtype, xp)
    x_bar, p_bar = _call_vjp(layer, params, cache, y_bar)
    failures = _protocol_failures(x, x_bar, p_bar, n_params)
    if failures:
        return LayerReport(_layer_name(layer), False, {}, failures, tolerances, {}, str(dtype))

    blocks = {"x": (x, lambda z: forward(params, z)[0], x_bar,
                    random_direction(draw, x.shape, dtype, xp))}
    if n_params > 0:
        blocks["params"] = (params, lambda q: forward(q, x)[0], p_bar,
                            random_direction(draw, params.shape, dtype, xp))
    analytic = bool(getattr(layer, "analytic", False)) and dtype != np.float32
    figures, skipped = {}, {}
    for key, block in blocks.items():
        figures.update(block_figures(key, *block, y_bar, wanted, analytic))
    if "complex" in wanted and not analytic:
        skipped["complex"] = ("float32 input" if getattr(layer, "analytic", False)
                              else "layer.analytic is False")
    if "taylor" in wanted:
        if dtype == np.float32:
            skipped["taylor"] = "float32 (remainder reaches roundoff before converging)"
        else:
            rate, reason = taylor_figure(forward, x, params, y_bar, x_bar, p_bar, draw)
            if reason:
                skipped["taylor"] = reason
            else:
                figures["taylor_min_rate"] = rate

    for key, value in figures.items():
        tk = _tol_key(key)
        bound = tolerances.get(tk)
        if bound is None:
            continue
        bad = not value >= bound if tk == "taylor_min_rate" else not value <= bound
        if bad:
            rel = ">=" if tk == "taylor_min_rate" else "<="
            failures.append(f"{key} = {value:.3e} violates {rel} {bound:.1e}")
    return LayerReport(_layer_name(layer), not failures, figures, failures, tolerances, skipped,
                       str(dtype))
