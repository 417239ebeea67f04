"""The layer protocol and a small base class implementing its bookkeeping.

Protocol (duck-typed: a user's class need not inherit from :class:`Layer`)
-------------------------------------------------------------------------
``n_params : int``
    Length of the flat parameter vector.
``init(rng, dtype=np.float64) -> params``
    ``params`` is a 1-D array of length ``n_params`` (NumPy; move it with
    :func:`adjointcore.backend.to_device`).
``forward(params, x, **context) -> (y, cache)``
    Pure. ``context`` may hold ``t`` (time, for layers with ``time_dependent = True``) and
    ``rng`` (a ``numpy.random.Generator``, for layers with ``needs_rng = True``).
    ``cache`` is a NamedTuple holding exactly what the VJP needs.
``vjp(params, cache, y_bar, need_params=True) -> (x_bar, params_bar)``
    ``params_bar`` has the shape of ``params``; it is ``None`` when ``need_params`` is false.

Fast path (optional; :func:`layer_kernel` adapts a layer without it)
--------------------------------------------------------------------
Solvers and adjoints validate their inputs once, at the public entry point, and then call

``apply(params, x, t=None, rng=None, tape=True) -> (y, cache)``
    The forward map without any argument check. ``t`` and ``rng`` are passed to every layer
    (layers ignore what they do not use). With ``tape=False`` (forward-only sweeps: solves,
    checkpoint recomputation, evaluation) the layer keeps nothing for a VJP and computes no
    derivative data; ``cache`` may then be ``None``.
``apply_vjp(params, cache, y_bar, params_bar=None) -> x_bar``
    The VJP without checks. When ``params_bar`` (a 1-D array of length ``n_params``) is given,
    the parameter cotangent is *written* into it (overwriting; composites hand each child its
    slice of one flat buffer), so no per-call gradient vector is allocated or concatenated.

``bind(params) -> bound`` (a :class:`BoundLayer`)
    The layer with its parameters fixed: parameter views are taken once, so a solver or an
    adjoint sweep that calls the same layer many times with the same ``params`` pays for them
    once. ``bound(x, t=None) -> y`` is bitwise ``apply(params, x, t, None, tape=False)[0]``,
    ``bound.forward(x, t=None) -> (y, cache)`` is bitwise ``apply(params, x, t)`` (the same
    cache) and ``bound.vjp_into(cache, y_bar, params_bar=None) -> x_bar`` is bitwise
    ``apply_vjp(params, cache, y_bar, params_bar)``. The parameters are read through views, so
    in-place changes of ``params`` show. :func:`bind_layer` gives this for any kernel (the
    default, :class:`BoundLayer`, goes through ``apply``/``apply_vjp``; a ``bind`` that returns
    a bare ``evaluate`` callable is accepted for the forward-only map).

For the built-in layers, ``forward``/``vjp`` are the checks followed by ``apply``/``apply_vjp``,
so both paths give bitwise identical results.

Forward mode (optional; every built-in layer has it)
----------------------------------------------------
``jvp(params, cache, x_dot, params_dot=None) -> y_dot``
    The directional derivative of ``y = forward(params, x)`` along ``(x_dot, params_dot)``,
    evaluated from the forward ``cache`` (no second forward). ``x_dot`` has the shape of ``x``;
    ``params_dot`` is ``None`` (zero parameter tangent) or a flat array of length ``n_params``;
    ``y_dot`` has the shape of ``y``. The context (``t``, the dropout mask) is held fixed: time
    has no tangent. Checked: wrong shapes raise :class:`~adjointcore.errors.ShapeError` /
    :class:`~adjointcore.errors.ParameterError` naming ``x_dot`` / ``params_dot``.
``apply_jvp(params, cache, x_dot, params_dot=None) -> y_dot``
    The same without checks (composites call it on their children); ``jvp`` is the checks
    followed by ``apply_jvp``, bit for bit. The :class:`Layer` default ``apply_jvp`` calls
    ``jvp``, so a subclass defining only ``jvp`` works inside composites; one defining neither
    raises ``NotImplementedError`` naming the class.

Second order (optional; every built-in layer has it)
----------------------------------------------------
``jvp_vjp(params, cache, x_dot, params_dot, y_dot_bar, y_bar=None)
-> SecondOrderBars(x_bar, params_bar, x_dot_bar, params_dot_bar, t_bar)``
    The VJP of the *tangent-lifted* layer ``(x, params, t, x_dot, params_dot) -> (y, y_dot)``
    (``y_dot = J_x x_dot + J_p params_dot``, ``t`` without tangent) at the forward point, for
    the cotangents ``(y_bar, y_dot_bar)`` (``y_bar=None``: zero). ``x_bar``/``params_bar``
    hold the second-order terms ``d<y_dot_bar, y_dot>/d(x, params)`` plus the ordinary VJP of
    ``y_bar``; ``x_dot_bar = J_x^T y_dot_bar`` and ``params_dot_bar = J_p^T y_dot_bar``;
    ``t_bar`` (0-d) is ``d(<y_bar, y> + <y_dot_bar, y_dot>)/dt`` for time-dependent layers
    and ``None`` otherwise. Composites chain it child by child (each child's ``(x_bar,
    x_dot_bar)`` is the previous child's ``(y_bar, y_dot_bar)``), so ``d(v^T J v)/d(x,
    params, t)`` is ``jvp_vjp(..., x_dot=v, params_dot=None, y_dot_bar=v)``.
``apply_jvp_vjp(...)``
    The same without checks.

Optional attributes read by tools: ``analytic`` (forward is real-analytic and accepts complex
input, so the complex-step check applies), ``time_dependent``, ``needs_rng``, ``param_shapes``
(ordered ``{name: shape}``), ``output_shape(input_shape)``.

Nothing is stored on ``self`` during a call: a layer can be evaluated many times per solver step
and recomputed under checkpointing.

The module holds :class:`Layer`, :class:`ParameterFree` and the dispatch over the optional
methods (:func:`layer_kernel`, :func:`call_jvp`, :func:`kernel_jvp`, :func:`call_jvp_vjp`, which
tell a layer's own method from the :class:`Layer` default). The helpers that do not depend on
:class:`Layer` live in :mod:`adjointcore.layers.binding` (:func:`call_vjp`,
:class:`BoundLayer`, :func:`bind_layer`) and :mod:`adjointcore.layers.second_order`
(:class:`SecondOrderBars`, :func:`tangent_sum`, :func:`add_time_bar`, :func:`linear_jvp_vjp`,
:class:`LinearSecondOrder`); every name of ``__all__`` is importable from here.
"""
from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from ..backend import Array, as_dtype, get_array_module
from ..errors import check_array, check_generator, check_params
from ._checks import (
    check_child_layer,
    check_params_dot,
    check_x_dot,
    check_y_bar,
    init_child,
    prefixed_shapes,
)
from .binding import BoundLayer, _vjp_into, accepts_need_params, bind_layer, call_vjp
from .second_order import (
    LinearSecondOrder,
    SecondOrderBars,
    _no_jvp_vjp,
    add_time_bar,
    linear_jvp_vjp,
    missing_method,
    tangent_sum,
)

__all__ = ["Layer", "ParameterFree", "ProtocolKernel", "layer_kernel", "BoundLayer", "bind_layer",
           "param_layout",
           "accepts_need_params", "call_vjp", "call_jvp", "kernel_jvp", "tangent_sum",
           "SecondOrderBars", "call_jvp_vjp", "add_time_bar", "linear_jvp_vjp",
           "LinearSecondOrder",
           # helpers for composites built outside this package (nets), defined in ._checks:
           "check_child_layer", "init_child", "prefixed_shapes"]


def param_layout(shapes: dict) -> dict:
    """``{name: (slice, shape)}`` locating each named tensor in a flat parameter vector.

    Built once per layer (from its constructor arguments), so the fast path takes a view with
    ``params[sl].reshape(shape)`` and never recomputes offsets.
    """
    out, offset = {}, 0
    for name, shape in shapes.items():
        size = prod(shape)
        out[name] = (slice(offset, offset + size), tuple(shape))
        offset += size
    return out


def _context(timed: bool, random: bool, t: Any, rng: np.random.Generator | None) -> dict[str, Any]:
    """The keywords a layer's ``forward`` takes: ``t`` if time-dependent, ``rng`` if random."""
    context = {}
    if timed:
        context["t"] = t
    if random:
        context["rng"] = rng
    return context


def _no_jvp(layer: Any, where: str = "") -> NotImplementedError:
    return missing_method(layer, where, "forward-mode jvp(params, cache, x_dot, params_dot=None) "
                          "-> y_dot; add one to the layer (see docs/protocols.md, 'Forward "
                          "mode') or keep it out of forward-mode computations.")


def call_jvp(layer: Any, params: Array, cache: Any, x_dot: Array, params_dot: Array | None = None,
             where: str = "") -> Array:
    """``layer.jvp(params, cache, x_dot, params_dot)`` (the checked forward-mode method).

    Raises
    ------
    NotImplementedError
        ``layer`` has no ``jvp``; the message names ``where`` (e.g. ``"layers[2]"``) and the
        layer's class.
    """
    jvp = getattr(layer, "jvp", None)
    if not callable(jvp) or getattr(jvp, "__func__", None) is Layer.jvp:   # the base default
        raise _no_jvp(layer, where)
    return jvp(params, cache, x_dot, params_dot)


def kernel_jvp(kernel: Any, params: Array, cache: Any, x_dot: Array,
               params_dot: Array | None = None, where: str = "") -> Array:
    """Unchecked forward mode of a fast-path ``kernel`` (:func:`layer_kernel`): its
    ``apply_jvp``, else its ``jvp`` (a duck-typed layer with ``apply``/``apply_vjp`` only)."""
    if isinstance(kernel, ProtocolKernel):
        return call_jvp(kernel.layer, params, cache, x_dot, params_dot, where)
    fn = getattr(kernel, "apply_jvp", None)
    if not callable(fn) or getattr(fn, "__func__", None) is Layer.apply_jvp:
        return call_jvp(kernel, params, cache, x_dot, params_dot, where)
    return fn(params, cache, x_dot, params_dot)


def call_jvp_vjp(layer: Any, params: Array | None, cache: Any, x_dot: Array,
                 params_dot: Array | None, y_dot_bar: Array, y_bar: Array | None = None,
                 where: str = "") -> SecondOrderBars:
    """Unchecked second-order VJP of a child: its ``apply_jvp_vjp`` (built-in layers), else its
    ``jvp_vjp``; ``NotImplementedError`` naming ``where`` and the class if it has neither.

    ``layer`` may be a fast-path kernel (:class:`ProtocolKernel` is unwrapped).
    """
    if isinstance(layer, ProtocolKernel):
        layer = layer.layer
    fn = getattr(layer, "apply_jvp_vjp", None)
    if callable(fn) and getattr(fn, "__func__", None) is not Layer.apply_jvp_vjp:
        return SecondOrderBars(*fn(params, cache, x_dot, params_dot, y_dot_bar, y_bar))
    fn = getattr(layer, "jvp_vjp", None)
    if callable(fn) and getattr(fn, "__func__", None) is not Layer.jvp_vjp:
        return SecondOrderBars(*fn(params, cache, x_dot, params_dot, y_dot_bar, y_bar))
    raise _no_jvp_vjp(layer, where)


class ProtocolKernel:
    """Fast-path methods (``apply``/``apply_vjp``) for a layer that only has ``forward``/``vjp``.

    Used for duck-typed user layers inside composites and fields: each call goes through the
    layer's own (checked) ``forward``/``vjp``; ``t``/``rng`` are passed only when the layer's
    ``time_dependent``/``needs_rng`` flag asks for them.
    """

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.n_params = int(layer.n_params)
        self._timed = bool(getattr(layer, "time_dependent", False))
        self._random = bool(getattr(layer, "needs_rng", False))
        self._takes_flag = accepts_need_params(layer.vjp)

    def apply(self, params: Array, x: Array, t: Any = None, rng: np.random.Generator | None = None,
              tape: bool = True) -> tuple[Array, Any]:
        return self.layer.forward(params, x, **_context(self._timed, self._random, t, rng))

    def apply_vjp(self, params: Array, cache: Any, y_bar: Array,
                  params_bar: Array | None = None) -> Array:
        return _vjp_into(self.layer, self.n_params, params, cache, y_bar, params_bar,
                         self._takes_flag)

    def apply_jvp(self, params: Array, cache: Any, x_dot: Array,
                  params_dot: Array | None = None) -> Array:
        """The layer's own (checked) ``jvp``; ``NotImplementedError`` if it has none."""
        return call_jvp(self.layer, params, cache, x_dot, params_dot)


def layer_kernel(layer: Any) -> Any:
    """``layer`` itself if it has the fast-path methods, else a :class:`ProtocolKernel`."""
    if callable(getattr(layer, "apply", None)) and callable(getattr(layer, "apply_vjp", None)):
        return layer
    return ProtocolKernel(layer)


class Layer:
    """Base class for built-in layers: flat parameters with named views, input checks.

    Subclasses define :attr:`param_shapes`, :meth:`_init_views` (fill the named views in place),
    :meth:`forward` and :meth:`vjp`.
    """

    analytic: bool = False
    time_dependent: bool = False
    needs_rng: bool = False
    #: True when ``vjp`` is the exact derivative of ``forward``; otherwise a message naming the
    #: check that applies (read by :func:`adjointcore.gradcheck.check_layer`).
    exact_vjp: bool | str = True

    # -- parameters -------------------------------------------------------------------------
    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        """Ordered ``{name: shape}`` of the tensors packed into the flat parameter vector."""
        return {}

    @property
    def n_params(self) -> int:
        return sum(prod(s) for s in self.param_shapes.values())

    def views(self, params: Array) -> dict[str, Array]:
        """Named reshaped *views* into a flat ``params`` (no copies; writes go through)."""
        shapes = self.param_shapes
        sizes = [prod(s) for s in shapes.values()]
        check_params("params", params, sum(sizes), owner=self)
        out, offset = {}, 0
        for (name, shape), size in zip(shapes.items(), sizes, strict=True):
            out[name] = params[offset:offset + size].reshape(shape)
            offset += size
        return out

    def flatten(self, tensors: dict[str, Array]) -> Array:
        """Inverse of :meth:`views`: pack ``{name: array}`` into one flat vector."""
        missing = set(self.param_shapes) - set(tensors)
        if missing:
            raise KeyError(f"`tensors` lacks {sorted(missing)} for {self!r}.")
        first = next(iter(tensors.values()), None)
        xp = get_array_module(first)
        if not self.param_shapes:
            return xp.zeros(0)
        return xp.concatenate([xp.asarray(tensors[k]).reshape(-1) for k in self.param_shapes])

    def init(self, rng: np.random.Generator, dtype: DTypeLike = np.float64) -> Array:
        """Fresh parameters drawn from ``rng`` (flat NumPy vector of ``dtype``)."""
        check_generator(rng)
        dtype = as_dtype(dtype)
        params = np.zeros(self.n_params, dtype=np.float64)
        self._init_views(rng, self.views(params))
        return params.astype(dtype)

    def _init_views(self, rng: np.random.Generator, views: dict[str, Array]) -> None:
        """Fill ``views`` (float64, host) in place. Default: nothing to fill."""

    def zeros_like_params(self, like: Array) -> Array:
        """Zero parameter vector on the backend and dtype of array ``like``."""
        xp = get_array_module(like)
        return xp.zeros(self.n_params, dtype=like.dtype)

    # -- fast path (defaults for layers that only define forward/vjp) --------------------------
    def apply(self, params: Array, x: Array, t: Any = None, rng: np.random.Generator | None = None,
              tape: bool = True) -> tuple[Array, Any]:
        """Unchecked forward (see the module notes); default: :meth:`forward` with the context
        the layer's flags ask for."""
        # every concrete layer defines forward
        return self.forward(params, x, **_context(self.time_dependent, self.needs_rng, t, rng))  # type: ignore[attr-defined]

    def apply_vjp(self, params: Array, cache: Any, y_bar: Array,
                  params_bar: Array | None = None) -> Array:
        """Unchecked VJP writing the parameter cotangent into ``params_bar`` (if given);
        default: :meth:`vjp`."""
        return _vjp_into(self, self.n_params, params, cache, y_bar, params_bar)

    def bind(self, params: Array) -> BoundLayer:
        """The layer with ``params`` fixed (module notes); default: a :class:`BoundLayer`
        calling :meth:`apply` and :meth:`apply_vjp`."""
        return BoundLayer(self, params)

    def jvp(self, params: Array, cache: Any, x_dot: Array,
            params_dot: Array | None = None) -> Array:
        """Forward mode ``y_dot = J_x x_dot + J_p params_dot`` (see the module notes).

        The default raises ``NotImplementedError`` naming the class; built-in layers override
        it with their checks followed by :meth:`apply_jvp`.
        """
        raise _no_jvp(self)

    def apply_jvp(self, params: Array, cache: Any, x_dot: Array,
                  params_dot: Array | None = None) -> Array:
        """Unchecked :meth:`jvp`; default: :meth:`jvp`."""
        return self.jvp(params, cache, x_dot, params_dot)

    def jvp_vjp(self, params: Array | None, cache: Any, x_dot: Array, params_dot: Array | None,
                y_dot_bar: Array, y_bar: Array | None = None) -> SecondOrderBars:
        """Second-order VJP: the VJP of ``(x, params, t, x_dot, params_dot) -> (y, y_dot)``.

        Parameters
        ----------
        params : ndarray, shape (n_params,) (None or length 0 for parameter-free layers)
        cache : NamedTuple
            From :meth:`forward` (taped) at the point of differentiation.
        x_dot : ndarray, shape of ``x``
            The input tangent of the forward-mode product being differentiated.
        params_dot : ndarray, shape (n_params,) or None
            The parameter tangent (None: zero).
        y_dot_bar : ndarray, shape of ``y``
            Cotangent of ``y_dot``.
        y_bar : ndarray, shape of ``y``, optional
            Cotangent of ``y`` (None: zero); adds the ordinary VJP.

        Returns
        -------
        SecondOrderBars
            ``(x_bar, params_bar, x_dot_bar, params_dot_bar, t_bar)``; see the module notes.

        Raises
        ------
        ShapeError, ParameterError, TypeError
            Bad shapes of ``x_dot``/``params_dot``/``y_dot_bar``/``y_bar`` (named).
        NotImplementedError
            The layer has no second-order VJP.
        """
        if type(self).apply_jvp_vjp is Layer.apply_jvp_vjp:
            raise _no_jvp_vjp(self)
        if self.n_params or params is not None:
            check_params("params", params, self.n_params, owner=self)
        check_params_dot(params_dot, self.n_params, owner=self)
        x_dot = check_array("x_dot", x_dot, fix="Pass the tangent of the forward input x.")
        shape = None
        if callable(getattr(self, "output_shape", None)):
            # checked callable above
            shape = tuple(self.output_shape(tuple(x_dot.shape)))  # type: ignore[attr-defined]
        check_array("y_dot_bar", y_dot_bar, shape=shape,
                    fix="Pass the cotangent of the output tangent y_dot (shape of y).")
        if y_bar is not None:
            check_y_bar(y_bar, y_dot_bar.shape)
        return SecondOrderBars(*self.apply_jvp_vjp(params, cache, x_dot, params_dot, y_dot_bar,
                                                   y_bar))

    def apply_jvp_vjp(self, params: Array | None, cache: Any, x_dot: Array,
                      params_dot: Array | None, y_dot_bar: Array,
                      y_bar: Array | None = None) -> SecondOrderBars:
        """Unchecked :meth:`jvp_vjp`; the default raises ``NotImplementedError``."""
        raise _no_jvp_vjp(self)

    def _vjp_via_apply(self, params: Array, cache: Any, y_bar: Array, need_params: bool,
                       dtype: DTypeLike) -> tuple[Array, Array | None]:
        """The checked ``vjp`` of a layer whose ``apply_vjp`` is its implementation: allocate
        ``params_bar`` (of ``dtype``) when needed and delegate."""
        if not need_params:
            return self.apply_vjp(params, cache, y_bar), None
        xp = get_array_module(y_bar)
        params_bar = xp.empty(self.n_params, dtype=dtype)
        return self.apply_vjp(params, cache, y_bar, params_bar), params_bar

    # -- input checks -----------------------------------------------------------------------
    def _check_x(self, x: Array, ndim: int | Sequence[int],
                 shape: Sequence[int | None] | None = None, fix: str = "") -> Array:
        return check_array("x", x, ndim=ndim, shape=shape, fix=fix)

    def _check_y_bar(self, y_bar: Array, like: Array) -> Array:
        """``y_bar`` must have the shape of the forward output ``like``."""
        return check_y_bar(y_bar, like.shape)

    def _check_tangents(self, x_dot: Array, x_shape: Sequence[int],
                        params_dot: Array | None) -> None:
        """Checks of a forward-mode call: ``x_dot`` shaped like the input, ``params_dot`` None
        or flat of length ``n_params``."""
        check_x_dot(x_dot, x_shape)
        check_params_dot(params_dot, self.n_params, owner=self)

    def _check_no_params(self, params: Array | None) -> None:
        """Parameter-free configurations take a length-0 ``params`` or ``None``."""
        if params is not None:
            check_params("params", params, 0, owner=self)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


class ParameterFree(Layer):
    """Base for layers without parameters: ``n_params == 0``, ``params_bar`` is empty."""

    def _params_bar(self, x_like: Array, need_params: bool) -> Array | None:
        if not need_params:
            return None
        xp = get_array_module(x_like)
        return xp.zeros(0, dtype=x_like.dtype)
