"""Calling a layer's reverse mode through the protocol, and layers with their parameters bound.

The parts of the fast path (:mod:`adjointcore.layers.base`, "Fast path") that do not depend on
the :class:`~adjointcore.layers.base.Layer` class, which uses them:

- :func:`call_vjp`: ``layer.vjp(params, cache, y_bar)`` of a duck-typed layer, passing
  ``need_params`` only to a ``vjp`` that takes it (:func:`accepts_need_params`; the documented
  minimal protocol is ``vjp(params, cache, y_bar)``).
- ``_vjp_into``: a ``vjp`` serving as ``apply_vjp``: the parameter cotangent is written into the
  caller's ``params_bar`` (a composite's slice of one flat buffer), its length checked. The
  default ``apply_vjp`` of :class:`~adjointcore.layers.base.Layer` and of
  :class:`~adjointcore.layers.base.ProtocolKernel`.
- :class:`BoundLayer` and :func:`bind_layer`: a layer kernel with its parameters fixed
  (``bind(params)``), bitwise the same results as ``apply``/``apply_vjp`` with those
  ``params``.

:mod:`adjointcore.layers.base` re-exports the public names.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from ..backend import Array
from ..errors import ParameterError

__all__ = ["accepts_need_params", "call_vjp", "BoundLayer", "bind_layer"]


def accepts_need_params(vjp: Callable[..., Any]) -> bool:
    """Whether a layer's ``vjp`` takes the optional ``need_params`` keyword (or ``**kwargs``);
    the documented minimal protocol is ``vjp(params, cache, y_bar)``. Looked up once per
    function (cached on the underlying function object, not on any layer)."""
    return _function_accepts_need_params(getattr(vjp, "__func__", vjp))


@lru_cache(maxsize=512)
def _function_accepts_need_params(func: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):       # no signature: call with the minimal protocol
        return False
    return any(p.name == "need_params" or p.kind is inspect.Parameter.VAR_KEYWORD
               for p in parameters)


def call_vjp(layer: Any, params: Array, cache: Any, y_bar: Array, need_params: bool = True,
             takes_flag: bool | None = None) -> tuple[Array, Array | None]:
    """``layer.vjp(params, cache, y_bar)``, with ``need_params`` only if the layer takes it
    (``takes_flag``: the precomputed :func:`accepts_need_params`)."""
    if takes_flag is None:
        takes_flag = accepts_need_params(layer.vjp)
    if takes_flag:
        return layer.vjp(params, cache, y_bar, need_params=need_params)
    return layer.vjp(params, cache, y_bar)


def _vjp_into(layer: Any, n_params: int, params: Array, cache: Any, y_bar: Array,
              params_bar: Array | None, takes_flag: bool = True) -> Array:
    """``layer.vjp`` with its parameter cotangent copied into ``params_bar`` (if given), its
    length checked (a wrong one would shift every later block of a composite's gradient)."""
    need = params_bar is not None
    x_bar, p_bar = call_vjp(layer, params, cache, y_bar, need, takes_flag)
    if need and n_params:
        if getattr(p_bar, "size", None) != n_params:
            raise ParameterError(f"{type(layer).__name__}.vjp returned params_bar of shape "
                                 f"{getattr(p_bar, 'shape', type(p_bar).__name__)}, expected "
                                 f"{n_params} values (its n_params); fix the layer's vjp.")
        # `need`: params_bar is given; a layer with n_params returns p_bar
        params_bar[...] = p_bar.reshape(-1)  # type: ignore[index,union-attr]
    return x_bar


class BoundLayer:
    """A layer kernel with its parameters fixed (``bind(params)``; see the module notes).

    This default calls the kernel's ``apply``/``apply_vjp`` with the stored ``params``;
    ``Linear`` and ``Sequential`` return subclasses that take their parameter views once.

    Parameters
    ----------
    kernel : layer kernel
        Has ``apply`` and ``apply_vjp`` (:func:`layer_kernel`).
    params : array, shape (n_params,)
        Kept by reference (not copied).
    evaluate : callable, optional
        ``evaluate(x, t=None) -> y``, a forward-only map to use instead of ``apply`` (a user
        layer's ``bind`` that returns a bare callable).
    """

    __slots__ = ("kernel", "params", "_evaluate")

    def __init__(self, kernel: Any, params: Array,
                 evaluate: Callable[..., Array] | None = None) -> None:
        self.kernel, self.params, self._evaluate = kernel, params, evaluate

    def __call__(self, x: Array, t: Any = None) -> Array:
        """``y`` without a tape: bitwise ``apply(params, x, t, None, tape=False)[0]``."""
        if self._evaluate is not None:
            return self._evaluate(x, t)
        return self.kernel.apply(self.params, x, t, None, False)[0]

    def forward(self, x: Array, t: Any = None) -> tuple[Array, Any]:
        """``(y, cache)``: bitwise ``apply(params, x, t)``."""
        return self.kernel.apply(self.params, x, t, None, True)

    def vjp_into(self, cache: Any, y_bar: Array, params_bar: Array | None = None) -> Array:
        """``x_bar``, the parameter cotangent written into ``params_bar`` (None: skipped):
        bitwise ``apply_vjp(params, cache, y_bar, params_bar)``."""
        return self.kernel.apply_vjp(self.params, cache, y_bar, params_bar)


def bind_layer(kernel: Any, params: Array) -> BoundLayer:
    """A layer kernel (see :func:`layer_kernel`) with ``params`` fixed: the kernel's own
    ``bind`` when it has one, else :class:`BoundLayer` (bitwise the same results either way).
    A ``bind`` returning a bare ``evaluate(x, t=None)`` callable serves the forward-only map;
    ``forward`` and ``vjp_into`` then go through ``apply``/``apply_vjp``."""
    bind = getattr(kernel, "bind", None)
    if not callable(bind):
        return BoundLayer(kernel, params)
    bound = bind(params)
    if isinstance(bound, BoundLayer) or (callable(getattr(bound, "forward", None))
                                         and callable(getattr(bound, "vjp_into", None))):
        return bound
    return BoundLayer(kernel, params, evaluate=bound)
