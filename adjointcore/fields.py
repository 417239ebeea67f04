"""Vector fields: the protocol the solvers integrate, and adapters from layer stacks.

Protocol (duck-typed; :mod:`solvers` relies on nothing else)
------------------------------------------------------------
``forward(t, y, params) -> (dy, cache)``
``vjp(cache, dy_bar, need_params=True) -> (y_bar, params_bar, t_bar)``; ``t_bar`` may be ``None``.
``n_params`` (int) where parameters exist.

Optional fast methods, used by the solvers and adjoints after their first (checked) evaluation
(see :class:`solvers.FieldKernel`): ``evaluate(t, y, params) -> dy`` (forward only, no cache),
``forward_unchecked(t, y, params) -> (dy, cache)`` and ``vjp_into(cache, dy_bar, params_bar)
-> y_bar`` (parameter cotangent written into ``params_bar`` unless it is None), and ``bind(params)
-> bound`` with ``bound(t, y)``, ``bound.forward(t, y)`` and ``bound.vjp_into(cache, dy_bar,
params_bar)``: the same three with the parameters fixed (:class:`BoundLayerField`).

Forward mode (optional, :class:`LayerField` has it): ``jvp(cache, y_dot, params_dot=None) ->
dy_dot``, the directional derivative of ``dy = f(t, y, params)`` along ``(y_dot, params_dot)``
at fixed ``t``, from the cache of ``forward``.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from .backend import Array
from .layers.base import call_jvp, layer_kernel
from .layers.binding import bind_layer, call_vjp

__all__ = ["LayerField", "LayerFieldCache", "BoundLayerField", "BoundField"]


class LayerFieldCache(NamedTuple):
    """What :meth:`LayerField.vjp` needs: the parameters and the layer's own cache."""

    params: Array
    layer_cache: Any


#: The fast methods a field's bound form replaces.
_FAST_METHODS = ("evaluate", "forward_unchecked", "vjp_into")


class BoundField:
    """A field's own fast methods with ``params`` fixed (no views taken in advance): what
    :meth:`LayerField.bind` gives a subclass that overrides one of them."""

    __slots__ = ("field", "params")

    def __init__(self, field: Any, params: Array) -> None:
        self.field, self.params = field, params

    def __call__(self, t: float, y: Array) -> Array:
        """``field.evaluate(t, y, params)``."""
        return self.field.evaluate(t, y, self.params)

    def forward(self, t: float, y: Array) -> tuple[Array, Any]:
        """``field.forward_unchecked(t, y, params)``."""
        return self.field.forward_unchecked(t, y, self.params)

    def vjp_into(self, cache: Any, dy_bar: Array, params_bar: Array | None = None) -> Array:
        """``field.vjp_into(cache, dy_bar, params_bar)``."""
        return self.field.vjp_into(cache, dy_bar, params_bar)


class BoundLayerField:
    """A :class:`LayerField` with its parameters fixed (:meth:`LayerField.bind`).

    ``bound(t, y) -> dy``, ``bound.forward(t, y) -> (dy, cache)`` and ``bound.vjp_into(cache,
    dy_bar, params_bar) -> y_bar`` are bitwise the field's ``evaluate``, ``forward_unchecked``
    and ``vjp_into`` at these parameters. A cache made with other parameters (another array
    object) is differentiated at its own parameters, as :meth:`LayerField.vjp_into` does.
    """

    __slots__ = ("_kernel", "params", "_layer")

    def __init__(self, kernel: Any, params: Array) -> None:
        self._kernel, self.params = kernel, params
        self._layer = bind_layer(kernel, params)

    def __call__(self, t: float, y: Array) -> Array:
        """``dy`` (no cache)."""
        return self._layer(y, t)

    def forward(self, t: float, y: Array) -> tuple[Array, LayerFieldCache]:
        """``(dy, cache)`` for a later VJP (the cache made in C: ``tuple.__new__``)."""
        dy, cache = self._layer.forward(y, t)
        return dy, tuple.__new__(LayerFieldCache, (self.params, cache))

    def vjp_into(self, cache: LayerFieldCache, dy_bar: Array,
                 params_bar: Array | None = None) -> Array:
        """``y_bar``; the parameter cotangent is written into ``params_bar`` unless None."""
        if cache.params is self.params:
            return self._layer.vjp_into(cache.layer_cache, dy_bar, params_bar)
        return self._kernel.apply_vjp(cache.params, cache.layer_cache, dy_bar, params_bar)


class LayerField:
    """Adapt a layer (or ``Sequential``) ``f(params, y[, t])`` into a vector field.

    Parameters
    ----------
    layer : object following the layer protocol
        Maps a state batch to a tensor of the same shape. If ``layer.time_dependent`` is true,
        time is passed as ``t=`` (concatenated feature/channel, Chen et al. 2018).

    Notes
    -----
    ``t_bar`` is returned as ``None``: gradients with respect to the integration end points use
    ``f`` at those points (``dL/dt1 = a(t1) . f(t1, y1)``), not ``df/dt``.
    """

    def __init__(self, layer: Any) -> None:
        for attr in ("forward", "vjp", "n_params"):
            if not hasattr(layer, attr):
                raise TypeError(f"`layer` must follow the layer protocol (forward, vjp, n_params); "
                                f"{layer!r} lacks `{attr}`.")
        self.layer = layer
        self._kernel = layer_kernel(layer)

    @property
    def n_params(self) -> int:
        return self.layer.n_params

    def forward(self, t: float, y: Array, params: Array) -> tuple[Array, LayerFieldCache]:
        """Evaluate ``dy = layer(params, y[, t])``; returns ``(dy, cache)``."""
        if getattr(self.layer, "time_dependent", False):
            dy, cache = self.layer.forward(params, y, t=t)
        else:
            dy, cache = self.layer.forward(params, y)
        if dy.shape != y.shape:
            raise ValueError(f"a vector field must return dy with the shape of y {tuple(y.shape)}, "
                             f"but {self.layer!r} returned {tuple(dy.shape)}; add a ChannelPad/"
                             f"ChannelUnpad or adjust the layer widths.")
        return dy, LayerFieldCache(params, cache)

    def evaluate(self, t: float, y: Array, params: Array) -> Array:
        """``dy`` without argument checks or cache (forward-only sweeps)."""
        return self._kernel.apply(params, y, t, None, False)[0]

    def bind(self, params: Array) -> BoundLayerField | BoundField:
        """The field with ``params`` fixed (the layer bound once,
        :func:`~adjointcore.layers.base.bind_layer`): bitwise :meth:`evaluate`,
        :meth:`forward_unchecked` and :meth:`vjp_into`, without their per-call parameter
        views. A subclass that overrides one of those three gets a :class:`BoundField`
        calling its own methods."""
        if any(getattr(type(self), name) is not getattr(LayerField, name)
               for name in _FAST_METHODS):
            return BoundField(self, params)
        return BoundLayerField(self._kernel, params)

    def forward_unchecked(self, t: float, y: Array, params: Array) -> tuple[Array, LayerFieldCache]:
        """:meth:`forward` without argument checks."""
        dy, cache = self._kernel.apply(params, y, t, None, True)
        return dy, LayerFieldCache(params, cache)

    def vjp_into(self, cache: LayerFieldCache, dy_bar: Array,
                 params_bar: Array | None = None) -> Array:
        """``y_bar``; the parameter cotangent is written into ``params_bar`` unless None."""
        return self._kernel.apply_vjp(cache.params, cache.layer_cache, dy_bar, params_bar)

    def vjp(self, cache: LayerFieldCache, dy_bar: Array,
            need_params: bool = True) -> tuple[Array, Array | None, None]:
        """Return ``(y_bar, params_bar, None)``."""
        y_bar, params_bar = call_vjp(self.layer, cache.params, cache.layer_cache, dy_bar,
                                     need_params)
        return y_bar, params_bar, None

    def jvp(self, cache: LayerFieldCache, y_dot: Array, params_dot: Array | None = None) -> Array:
        """Forward mode of the field at fixed ``t``: ``dy_dot = (df/dy) y_dot + (df/dp)
        params_dot``, through the layer's (checked) ``jvp``.

        Parameters
        ----------
        cache : LayerFieldCache
            From :meth:`forward` or :meth:`forward_unchecked` at ``(t, y, params)``.
        y_dot : ndarray, shape of ``y``
            State tangent.
        params_dot : ndarray, shape (n_params,), optional
            Parameter tangent; None means zero.

        Returns
        -------
        dy_dot : ndarray, shape of ``y``

        Raises
        ------
        TypeError
            ``cache`` is not a :class:`LayerFieldCache`.
        NotImplementedError
            The layer (or one of its children) has no ``jvp``.
        ShapeError, ParameterError
            ``y_dot`` / ``params_dot`` of the wrong shape (named as the layer's ``x_dot`` /
            ``params_dot``).
        """
        if not isinstance(cache, LayerFieldCache):
            raise TypeError(f"`cache` must be the LayerFieldCache returned by "
                            f"LayerField.forward, got {type(cache).__name__}.")
        return call_jvp(self.layer, cache.params, cache.layer_cache, y_dot, params_dot, "layer")

    def __repr__(self) -> str:
        return f"LayerField({self.layer!r})"
