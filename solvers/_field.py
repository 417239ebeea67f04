"""The vector-field protocol used by every solver, and ``as_field`` for plain callables.

A *field* is any object with

``forward(t, y, params) -> (dy, cache)``
    ``dy`` has the shape of ``y``; ``cache`` holds what the VJP needs.
``vjp(cache, dy_bar, need_params=True) -> (y_bar, params_bar, t_bar)``
    ``params_bar`` may be None when ``need_params`` is False; ``t_bar`` may be None.

Solvers never look inside ``cache``.
"""
from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Callable, NoReturn

import numpy as np
from numpy.typing import DTypeLike

from ._xp import Array, get_array_module


def is_field(obj: object) -> bool:
    """True if ``obj`` follows the field protocol (has callable ``forward`` and ``vjp``)."""
    return callable(getattr(obj, "forward", None)) and callable(getattr(obj, "vjp", None))


@dataclass(frozen=True)
class CallableField:
    """Field around a plain callable: ``f(t, y)`` when ``params`` is None, else ``f(t, y, params)``.

    The cache is None and :meth:`vjp` raises ``NotImplementedError``.
    """

    f: Callable

    def forward(self, t: float, y: Array, params: Any) -> tuple[Array, None]:
        """Return ``(f(t, y) or f(t, y, params), None)``."""
        dy = self.f(t, y) if params is None else self.f(t, y, params)
        return dy, None

    def vjp(self, cache: Any, dy_bar: Array, need_params: bool = True) -> NoReturn:
        """Not available: a plain callable has no hand-written VJP."""
        raise NotImplementedError(
            f"field {self.f!r} was built from a plain callable and plain callables have no VJP; "
            "pass an object with forward(t, y, params) -> (dy, cache) and "
            "vjp(cache, dy_bar, need_params) -> (y_bar, params_bar, t_bar) "
            "(e.g. adjointcore.fields.LayerField) to differentiate through the solver.")


def as_field(f: Any) -> Any:
    """Return ``f`` if it already follows the field protocol, else wrap the callable.

    Parameters
    ----------
    f : field or callable
        A field object, or ``f(t, y)`` / ``f(t, y, params)`` returning ``dy`` shaped like ``y``.

    Raises
    ------
    TypeError
        If ``f`` is neither a field nor callable.
    """
    if is_field(f):
        return f
    if callable(f):
        return CallableField(f)
    raise TypeError(f"`field` must be an object with forward/vjp methods or a callable "
                    f"f(t, y[, params]); got {type(f).__name__}: {f!r}")


class FieldKernel:
    """Per-call evaluator of a field: checks its first output, then runs unchecked; counts work.

    Every public entry point of the solvers and adjoints wraps the user's field in a fresh
    ``FieldKernel`` (never stored on the field). The first evaluation goes through the field's
    own ``forward`` (for :class:`adjointcore.fields.LayerField`, the layers' argument checks)
    and its output is checked once (shape and dtype, naming the field); later evaluations take
    the field's optional fast methods when it has them:

    ``evaluate(t, y, params) -> dy``
        Forward only: no cache, no derivative data (solves, checkpoint recomputation).
    ``forward_unchecked(t, y, params) -> (dy, cache)``
        What ``forward`` returns, without argument checks.
    ``vjp_into(cache, dy_bar, params_bar) -> y_bar``
        The VJP with the parameter cotangent written into ``params_bar`` (None: not needed).

    ``bind(params) -> bound``
        The field with ``params`` fixed (e.g. :class:`adjointcore.fields.BoundLayerField`:
        parameter views taken once): ``bound(t, y) -> dy``, and optionally ``bound.forward(t,
        y) -> (dy, cache)`` and ``bound.vjp_into(cache, dy_bar, params_bar) -> y_bar`` (which
        must accept any cache of the field), bitwise the unbound methods. The kernel binds
        once per ``params`` object it is called with and uses the bound methods from then on.

    A field without them is called through ``forward``/``vjp`` as before.

    Attributes
    ----------
    field : object
        The wrapped field.
    nfe, n_vjp : int
        Field evaluations (``evaluate`` + ``forward``) and VJPs made through this kernel.
    """

    def __init__(self, field: Any) -> None:
        self.field = field
        self.nfe = 0
        self.n_vjp = 0
        self._checked = False
        self._params_dtype: Any = None
        self._xp: Any = np
        self._buffers: tuple[Array, Array] | None = None
        self._stage_buffer: tuple[tuple[tuple[int, ...], Any], Array] | None = None
        self._evaluate = getattr(field, "evaluate", None)
        self._forward = getattr(field, "forward_unchecked", None) or field.forward
        self._vjp_into = getattr(field, "vjp_into", None)
        bind = getattr(field, "bind", None)
        self._bind = bind if callable(bind) else None
        self._bound: tuple[Any, Any, bool] | None = None
        self._vjp_bound: tuple[Any, Any, bool] | None = None

    @property
    def n_params(self) -> int | None:
        """The field's ``n_params`` when it declares one as an integer, else None."""
        n = getattr(self.field, "n_params", None)
        return int(n) if isinstance(n, (int, np.integer)) and not isinstance(n, bool) else None

    def _first(self, t: float, y: Array, params: Any) -> tuple[Array, Any]:
        try:
            out = self.field.forward(t, y, params)
        except TypeError as err:
            if _looks_like_layer(self.field):
                raise TypeError(f"`field` {type(self.field).__name__} is a layer "
                                f"(forward(params, x)), not a vector field (forward(t, y, "
                                f"params)); wrap it: adjointcore.fields.LayerField(layer).") \
                    from err
            raise
        if not isinstance(out, tuple) or len(out) != 2:
            raise TypeError(f"the field {self.field!r} returned {type(out).__name__} from "
                            f"forward; it must return the pair (dy, cache).")
        dy, cache = out
        check_field_output(dy, y, self.field)
        self._params_dtype = getattr(params, "dtype", None)
        self._xp = get_array_module(y)
        self._checked = True
        return dy, cache

    def _bound_to(self, params: Any) -> tuple[Any, Any, bool]:
        """``(params, bound, taped)``: the field bound to this ``params`` object (bound again
        when another object comes); ``taped`` when the bound field has ``forward`` and
        ``vjp_into``. Only for a checked field with ``bind``."""
        bound = self._bound
        if bound is None or bound[0] is not params:
            b = self._bind(params)               # type: ignore[misc]  # callers check _bind
            taped = callable(getattr(b, "forward", None)) and callable(getattr(b, "vjp_into",
                                                                               None))
            bound = self._bound = (params, b, taped)
        return bound

    def evaluate(self, t: float, y: Array, params: Any) -> Array:
        """``dy`` only (no cache kept)."""
        self.nfe += 1
        bound = self._bound
        if bound is not None and bound[0] is params:                # the common case
            return bound[1](t, y)
        if not self._checked:
            return self._first(t, y, params)[0]
        if self._bind is not None:
            return self._bound_to(params)[1](t, y)
        if self._evaluate is None:
            return self._forward(t, y, params)[0]
        return self._evaluate(t, y, params)

    def bind(self, params: Any) -> Callable[[float, Array], Array]:
        """``evaluate(t, y) -> dy`` with ``params`` fixed, counted like :meth:`evaluate`: the
        field's own bound map when it has ``bind`` (e.g. ``LayerField``: parameter views
        taken once), else :meth:`evaluate`. Bitwise :meth:`evaluate` either way; call it after
        the first evaluation, which checks the field."""
        if self._bind is None or not self._checked:
            return lambda t, y: self.evaluate(t, y, params)
        bound = self._bound_to(params)[1]

        def evaluate(t: float, y: Array) -> Array:
            self.nfe += 1
            return bound(t, y)
        return evaluate

    def forward(self, t: float, y: Array, params: Any) -> tuple[Array, Any]:
        """``(dy, cache)`` for a later VJP."""
        self.nfe += 1
        bound = self._bound
        if bound is not None and bound[0] is params and bound[2]:    # the common case
            return bound[1].forward(t, y)
        if not self._checked:
            return self._first(t, y, params)
        if self._bind is not None:
            _, b, taped = self._bound_to(params)
            if taped:
                return b.forward(t, y)
        return self._forward(t, y, params)

    def vjp(self, cache: Any, dy_bar: Array,
            need_params: bool = True) -> tuple[Array, Array | None, Any]:
        """The field's own ``vjp`` (protocol form, allocating ``params_bar``)."""
        self.n_vjp += 1
        return self.field.vjp(cache, dy_bar, need_params=need_params)

    def bind_vjp(self, params: Any, bound: Any = None) -> None:
        """Take the bound field's ``vjp_into`` for VJPs of caches made at ``params``, without
        an evaluation through this kernel (a sweep reversing stages that a solve evaluated and
        checked). ``bound``: the field already bound to ``params`` (the solve kernel's
        :meth:`bound_field`), taken instead of binding again. Evaluations still start with the
        checked first one. A no-op for a field without ``bind`` or once bound."""
        if self._bind is not None and self._bound is None:
            b = self._bind(params) if bound is None else bound
            self._vjp_bound = (params, b, callable(getattr(b, "vjp_into", None)))

    def bound_field(self, params: Any) -> Any:
        """The field as this kernel bound it to ``params`` (the same object), or None when it
        has not (no evaluation after the checked first one, another parameter object, or a
        field without ``bind``)."""
        bound = self._bound
        return bound[1] if bound is not None and bound[0] is params else None

    def vjp_into(self, cache: Any, dy_bar: Array, params_bar: Array | None) -> Array:
        """``y_bar``; the parameter cotangent is written into ``params_bar`` unless None."""
        self.n_vjp += 1
        bound = self._bound or self._vjp_bound
        if bound is not None and bound[2]:
            return bound[1].vjp_into(cache, dy_bar, params_bar)
        if self._vjp_into is not None:
            return self._vjp_into(cache, dy_bar, params_bar)
        y_bar, p_bar, _ = self.field.vjp(cache, dy_bar, need_params=params_bar is not None)
        if params_bar is not None and params_bar.size:
            if p_bar is None:
                params_bar[...] = 0
            else:
                params_bar[...] = p_bar.reshape(-1)
        return y_bar

    def stage_buffer(self, shape: Sequence[int], dtype: DTypeLike) -> Array:
        """A reusable array for a forward-only step's stage derivatives ``k`` (one per shape and
        dtype, kept for the life of this kernel). Only steps that keep no stages use it: the
        next step overwrites it."""
        key = (tuple(shape), dtype)
        if self._stage_buffer is None or self._stage_buffer[0] != key:
            self._stage_buffer = (key, self._xp.empty(shape, dtype=dtype))
        return self._stage_buffer[1]

    def param_buffers(self, like: Array) -> tuple[Array, Array] | None:
        """Two reusable parameter-cotangent buffers ``(step, stage)`` of length ``n_params``
        on the device of ``like`` (a state cotangent), or None when the field declares no
        ``n_params`` (then callers allocate per VJP).

        The dtype is that of combining the state and the parameters (what each layer's VJP
        would return), so accumulating in place gives the same numbers as adding fresh arrays.
        ``like`` decides the device: a taped sweep may reach its first VJP without a forward
        evaluation through this kernel (the stages came from the solve).
        """
        if self._buffers is not None:                   # made at the first call
            return self._buffers
        n = self.n_params
        if n is None:
            return None
        dtype = (np.result_type(like.dtype) if self._params_dtype is None
                 else np.result_type(like.dtype, self._params_dtype))
        xp = get_array_module(like)
        self._buffers = (xp.empty(int(n), dtype=dtype), xp.empty(int(n), dtype=dtype))
        return self._buffers


def _looks_like_layer(obj: Any) -> bool:
    """A layer's ``forward`` takes ``(params, x, ...)``; a field's takes ``(t, y, params)``."""
    try:
        names = list(inspect.signature(obj.forward).parameters)
    except (TypeError, ValueError):
        return False
    return bool(names) and names[0] == "params"


def check_field_output(dy: Any, y: Array, field: Any) -> None:
    """Raise unless the field's output ``dy`` is an array of the state's shape.

    Run once per solve or adjoint (on the first evaluation), so a wrong field fails with a
    message naming it instead of an error from deep inside a step.
    """
    shape = getattr(dy, "shape", None)
    if shape is None or getattr(dy, "dtype", None) is None:
        raise TypeError(f"the field {field!r} returned {type(dy).__name__} ({dy!r:.80}) from "
                        f"forward; it must return (dy, cache) with dy an array shaped like y "
                        f"{tuple(y.shape)}.")
    if tuple(shape) != tuple(y.shape):
        raise ValueError(f"the field {field!r} returned dy of shape {tuple(shape)} for y of "
                         f"shape {tuple(y.shape)}; a vector field must return dy shaped like y.")


def field_kernel(field: Any) -> FieldKernel:
    """A fresh :class:`FieldKernel` for ``field`` (``field`` itself if it is one)."""
    if isinstance(field, FieldKernel):
        return field
    return FieldKernel(field if callable(getattr(field, "forward", None)) else as_field(field))
