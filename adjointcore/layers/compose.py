"""Composition: :class:`Sequential` chains (skip connections: :mod:`adjointcore.layers.residual`).

A composite owns one flat parameter vector, the concatenation of its children's, so a whole
network has one ``params`` and one ``params_bar``. Children are duck-typed: any object with
``n_params``, ``forward`` and ``vjp`` works; ``param_shapes``, ``output_shape``, ``init`` and the
flags ``analytic``/``time_dependent``/``needs_rng`` are read when present.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from ..backend import Array, as_dtype, get_array_module
from ..errors import ParameterError, check_array, check_generator, check_params
from ._checks import check_child_layer, check_params_dot, init_child, prefixed_shapes
from .base import Layer, call_jvp, call_jvp_vjp, kernel_jvp, layer_kernel
from .binding import BoundLayer, bind_layer, call_vjp
from .second_order import SecondOrderBars, add_time_bar

__all__ = ["Sequential"]

_CONTEXT_KEYS = frozenset(("t", "rng"))


def _child_context(child: Any, where: str | int, context: dict[str, Any]) -> dict[str, Any]:
    """Keywords ``child`` receives: ``t`` if time-dependent, ``rng`` if it needs one.
    ``where`` names the child in errors (an int ``i``: ``layers[i]``)."""
    if context and not context.keys() <= _CONTEXT_KEYS:
        unknown = sorted(set(context) - _CONTEXT_KEYS)
        raise TypeError(f"unknown context {unknown}; forward accepts only t= and rng=.")
    out = {}
    if getattr(child, "time_dependent", False):
        if context.get("t") is None:
            raise ValueError(f"{_where(where)} ({type(child).__name__}) is time-dependent: "
                             f"pass forward(params, x, t=t) with t a float or 0-d array.")
        out["t"] = context["t"]
    if getattr(child, "needs_rng", False):
        if context.get("rng") is None:
            raise ValueError(f"{_where(where)} ({type(child).__name__}) needs random numbers: "
                             f"pass forward(params, x, rng=np.random.default_rng(seed)).")
        out["rng"] = context["rng"]
    return out


def _where(where: str | int) -> str:
    return f"layers[{where}]" if isinstance(where, int) else where


def _child_params_bar(p_bar: Array | None, n: int, where: str, like: Array) -> Array:
    """A child's ``params_bar`` as a flat array of length ``n`` (empty array for ``None``, n=0).

    A child returning ``None`` or the wrong length would otherwise shift every later block of
    the concatenated gradient; the check reads only shapes (no device synchronisation).
    """
    if p_bar is None:
        if n:
            raise TypeError(f"{where}.vjp returned params_bar=None with need_params=True; it "
                            f"must return an array of length {n}.")
        return get_array_module(like).zeros(0, dtype=like.dtype)
    size = getattr(p_bar, "size", None)
    if size != n:
        raise ParameterError(f"{where}.vjp returned params_bar of shape "
                             f"{getattr(p_bar, 'shape', type(p_bar).__name__)}, expected {n} "
                             f"values (its n_params); fix the child's vjp.")
    return p_bar.reshape(-1)


def _child_tangent(params_dot: Array | None, sl: slice) -> Array | None:
    """A child's block of ``params_dot``; None for a zero tangent or a parameter-free child."""
    if params_dot is None or sl.start == sl.stop:
        return None
    return params_dot[sl]


class _Composite(Layer):
    """Bookkeeping shared by layers made of children with one flat parameter vector
    (:class:`Sequential`, :class:`~adjointcore.layers.elementwise.Parallel`): child ``i`` owns
    ``params[offsets[i]:offsets[i + 1]]`` (views ``"i.name"``); fast-path kernels and slices are
    built once; the flags are derived from the children.

    Subclasses name the attribute holding the children in ``_child_attr``.
    """

    _child_attr = "layers"

    def _set_children(self, children: Sequence[Any]) -> None:
        if len(children) == 1 and isinstance(children[0], (list, tuple)):
            children = tuple(children[0])
        setattr(self, self._child_attr, tuple(children))
        sizes = [check_child_layer(c, self._where(i)) for i, c in enumerate(self._children)]
        self._offsets = tuple(np.cumsum([0] + sizes).tolist())
        o = self._offsets
        self._kernels = tuple(layer_kernel(c) for c in self._children)
        self._slices = tuple(slice(o[i], o[i + 1]) for i in range(len(self._children)))

    @property
    def _children(self) -> tuple:
        return getattr(self, self._child_attr)

    def _where(self, i: int) -> str:
        return f"{self._child_attr}[{i}]"

    @property
    def analytic(self) -> bool:  # type: ignore[override]  # read-only: derived from the children
        return all(getattr(c, "analytic", False) for c in self._children)

    @property
    # read-only: derived from the children
    def time_dependent(self) -> bool:  # type: ignore[override]
        return any(getattr(c, "time_dependent", False) for c in self._children)

    @property
    def needs_rng(self) -> bool:  # type: ignore[override]  # read-only: derived from the children
        return any(getattr(c, "needs_rng", False) for c in self._children)

    @property
    # read-only: derived from the children
    def exact_vjp(self) -> bool | str:  # type: ignore[override]
        """True, or the first child's message saying why its VJP is not the exact derivative
        of its forward (see :func:`adjointcore.gradcheck.check_layer`)."""
        return next((m for m in (getattr(c, "exact_vjp", True) for c in self._children)
                     if m is not True), True)

    @property
    def n_params(self) -> int:
        return self._offsets[-1]

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return prefixed_shapes(self._children, self._offsets)

    def init(self, rng: np.random.Generator, dtype: DTypeLike = np.float64) -> Array:
        """Children's ``init`` called in order with the same ``rng``; concatenated (NumPy)."""
        check_generator(rng)
        dtype = as_dtype(dtype)
        o = self._offsets
        parts = [init_child(c, rng, dtype, o[i + 1] - o[i], self._where(i))
                 for i, c in enumerate(self._children)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)

    def _check_jvp_inputs(self, params: Array, x_dot: Array, params_dot: Array | None) -> None:
        """Checks shared by the composites' ``jvp``: ``params``, ``params_dot`` and ``x_dot``
        (an array; its shape is checked by the children that read it)."""
        check_params("params", params, self.n_params, owner=self)
        check_params_dot(params_dot, self.n_params, owner=self)
        check_array("x_dot", x_dot, fix="Pass the tangent of the forward input x (same shape).")


class Sequential(_Composite):
    """Chain of layers ``y = f_k(... f_1(f_0(x)))`` with one flat parameter vector.

    Parameters
    ----------
    *layers : layer objects
        Children, applied in order. Child ``i``'s parameters occupy the ``i``-th block of
        ``params``; its named views are ``"i.name"`` (``"i.params"`` for a child without
        ``param_shapes``).

    Notes
    -----
    ``forward(params, x, t=None, rng=None)`` passes ``t`` only to children with
    ``time_dependent`` and ``rng`` only to children with ``needs_rng``; its cache is the tuple
    of the children's caches. ``vjp`` walks the children backwards. The flags are derived:
    ``time_dependent``/``needs_rng`` if any child has them, ``analytic`` if all children do.
    """

    layers: tuple[Any, ...]      # the children (set by _set_children, named by _child_attr)

    def __init__(self, *layers: Any) -> None:
        self._set_children(layers)

    # -- structure ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> Any:
        return self.layers[i]

    def __iter__(self) -> Iterator[Any]:
        return iter(self.layers)

    def slices(self, params: Array) -> list[Array]:
        """Each child's block of ``params`` (views, in order)."""
        check_params("params", params, self.n_params, owner="Sequential")
        o = self._offsets
        return [params[o[i]:o[i + 1]] for i in range(len(self.layers))]

    def output_shape(self, input_shape: Sequence[int]) -> tuple:
        shape = tuple(input_shape)
        for i, child in enumerate(self.layers):
            if not hasattr(child, "output_shape"):
                raise TypeError(f"layers[{i}] ({type(child).__name__}) has no output_shape; "
                                f"add output_shape(input_shape) to it to infer shapes.")
            shape = tuple(child.output_shape(shape))
        return shape

    # -- evaluation --------------------------------------------------------------------------
    def forward(self, params: Array, x: Array, **context: Any) -> tuple[Array, tuple[Any, ...]]:
        """Apply the children in order; returns ``(y, caches)`` with one cache per child."""
        caches = []
        for i, (child, p) in enumerate(zip(self.layers, self.slices(params), strict=True)):
            kwargs = _child_context(child, i, context)
            x, cache = child.forward(p, x, **kwargs)
            caches.append(cache)
        return x, tuple(caches)

    def vjp(self, params: Array, cache: tuple[Any, ...], y_bar: Array,
            need_params: bool = True) -> tuple[Array, Array | None]:
        """Walk the children backwards; ``params_bar`` is the concatenation (None if not needed)."""
        if not isinstance(cache, tuple) or len(cache) != len(self.layers):
            raise TypeError(f"`cache` must be the tuple of {len(self.layers)} child caches "
                            f"returned by Sequential.forward, got {type(cache).__name__}.")
        slices = self.slices(params)
        bars = [None] * len(self.layers)
        for i in reversed(range(len(self.layers))):
            y_bar, p_bar = call_vjp(self.layers[i], slices[i], cache[i], y_bar, need_params)
            if need_params:
                p_bar = _child_params_bar(p_bar, self._offsets[i + 1] - self._offsets[i],
                                          f"layers[{i}]", y_bar)
            bars[i] = p_bar
        if not need_params:
            return y_bar, None
        if not bars:
            return y_bar, get_array_module(y_bar).zeros(0, dtype=y_bar.dtype)
        return y_bar, get_array_module(*bars).concatenate(bars)

    def apply(self, params: Array, x: Array, t: Any = None, rng: np.random.Generator | None = None,
              tape: bool = True) -> tuple[Array, tuple[Any, ...] | None]:
        """Unchecked :meth:`forward` (``tape=False``: no caches)."""
        caches = []
        for kernel, sl in zip(self._kernels, self._slices, strict=True):
            x, cache = kernel.apply(params[sl], x, t, rng, tape)
            caches.append(cache)
        return x, (tuple(caches) if tape else None)

    def bind(self, params: Array) -> BoundLayer:
        """The stack with ``params`` fixed: the children bound to their slices once
        (:class:`BoundSequential`, bitwise :meth:`apply`/:meth:`apply_vjp`); a subclass that
        overrides :meth:`apply` or :meth:`apply_vjp` gets the generic
        :class:`~adjointcore.layers.base.BoundLayer` through its own methods."""
        if type(self).apply is not Sequential.apply \
                or type(self).apply_vjp is not Sequential.apply_vjp:
            return Layer.bind(self, params)
        return BoundSequential(self, params)

    def apply_vjp(self, params: Array, cache: tuple[Any, ...], y_bar: Array,
                  params_bar: Array | None = None) -> Array:
        """Unchecked :meth:`vjp`; each child writes its parameter cotangent into its slice of
        ``params_bar``."""
        for i in range(len(self._kernels) - 1, -1, -1):
            sl = self._slices[i]
            y_bar = self._kernels[i].apply_vjp(params[sl], cache[i], y_bar,
                                               None if params_bar is None else params_bar[sl])
        return y_bar

    def jvp(self, params: Array, cache: tuple[Any, ...], x_dot: Array,
            params_dot: Array | None = None) -> Array:
        """Forward mode: the tangent walks the children in order, child ``i`` receiving its block
        of ``params_dot`` (None for a zero tangent).

        Parameters
        ----------
        params : ndarray, shape (n_params,)
        cache : tuple
            The children's caches, from :meth:`forward`.
        x_dot : ndarray, shape of ``x``
        params_dot : ndarray, shape (n_params,), optional

        Returns
        -------
        y_dot : ndarray, shape of the output ``y``

        Raises
        ------
        NotImplementedError
            A child has no ``jvp`` (the message names ``layers[i]``).
        """
        if not isinstance(cache, tuple) or len(cache) != len(self.layers):
            raise TypeError(f"`cache` must be the tuple of {len(self.layers)} child caches "
                            f"returned by Sequential.forward, got {type(cache).__name__}.")
        self._check_jvp_inputs(params, x_dot, params_dot)
        for i, (child, sl) in enumerate(zip(self.layers, self._slices, strict=True)):
            x_dot = call_jvp(child, params[sl], cache[i], x_dot, _child_tangent(params_dot, sl),
                             self._where(i))
        return x_dot

    def apply_jvp(self, params: Array, cache: tuple[Any, ...], x_dot: Array,
                  params_dot: Array | None = None) -> Array:
        """Unchecked :meth:`jvp` (children's fast paths)."""
        for i, (kernel, sl) in enumerate(zip(self._kernels, self._slices, strict=True)):
            x_dot = kernel_jvp(kernel, params[sl], cache[i], x_dot,
                               _child_tangent(params_dot, sl), self._where(i))
        return x_dot

    def apply_jvp_vjp(self, params: Array, cache: tuple[Any, ...], x_dot: Array,
                      params_dot: Array | None, y_dot_bar: Array,
                      y_bar: Array | None = None) -> SecondOrderBars:
        """Second-order VJP of the chain (unchecked :meth:`~adjointcore.layers.Layer.jvp_vjp`).

        For ``y = f_k(... f_0(x))`` the lifted map is the chain of the children's lifted maps
        ``(h_i, h_dot_i) -> (h_{i+1}, h_dot_{i+1})``. The intermediate tangents ``h_dot_i`` are
        recomputed first (one forward-mode sweep, ``apply_jvp``); then the children's
        ``jvp_vjp`` run backwards, child ``i`` receiving ``(y_bar, y_dot_bar) = (x_bar,
        x_dot_bar)`` of child ``i + 1``. ``params_bar``/``params_dot_bar`` are the
        concatenations, ``t_bar`` the sum over the time-dependent children.

        Returns
        -------
        SecondOrderBars

        Raises
        ------
        NotImplementedError
            A child has no second-order VJP (named ``layers[i]``).
        """
        n = len(self._kernels)
        tangents = [x_dot]
        for i in range(n - 1):
            sl = self._slices[i]
            tangents.append(kernel_jvp(self._kernels[i], params[sl], cache[i], tangents[-1],
                                       _child_tangent(params_dot, sl), self._where(i)))
        p_bars, pd_bars, t_bar = [None] * n, [None] * n, None
        g, y_b = y_dot_bar, y_bar
        for i in range(n - 1, -1, -1):
            sl = self._slices[i]
            r = call_jvp_vjp(self._kernels[i], params[sl], cache[i], tangents[i],
                             _child_tangent(params_dot, sl), g, y_b, self._where(i))
            y_b, g = r.x_bar, r.x_dot_bar
            t_bar = add_time_bar(t_bar, r.t_bar)
            p_bars[i], pd_bars[i] = r.params_bar.reshape(-1), r.params_dot_bar.reshape(-1)
        xp = get_array_module(g)
        if not n:
            empty = xp.zeros(0, dtype=g.dtype)
            return SecondOrderBars(xp.zeros_like(g) if y_b is None else y_b, empty, g, empty,
                                   None)
        return SecondOrderBars(y_b, xp.concatenate(p_bars), g, xp.concatenate(pd_bars), t_bar)

    def __repr__(self) -> str:
        inner = ",\n".join(f"  ({i}) {c!r}" for i, c in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)" if inner else "Sequential()"


class BoundSequential(BoundLayer):
    """:class:`Sequential` with its parameters fixed (:meth:`Sequential.bind`): each child bound
    to its slice of ``params`` once (:func:`~adjointcore.layers.base.bind_layer`)."""

    __slots__ = ("_children", "_slices")

    def __init__(self, layer: Sequential, params: Array) -> None:
        super().__init__(layer, params)
        self._slices = layer._slices
        self._children = tuple(bind_layer(kernel, params[sl])
                               for kernel, sl in zip(layer._kernels, self._slices, strict=True))

    def __call__(self, x: Array, t: Any = None) -> Array:
        """The children's forward-only maps in order."""
        for child in self._children:
            x = child(x, t)
        return x

    def forward(self, x: Array, t: Any = None) -> tuple[Array, tuple[Any, ...]]:
        """``(y, caches)`` with one cache per child (bitwise ``Sequential.apply``)."""
        caches = []
        for child in self._children:
            x, cache = child.forward(x, t)
            caches.append(cache)
        return x, tuple(caches)

    def vjp_into(self, cache: tuple[Any, ...], y_bar: Array,
                 params_bar: Array | None = None) -> Array:
        """The children's VJPs backwards, each writing into its slice of ``params_bar``
        (bitwise ``Sequential.apply_vjp``)."""
        children, slices = self._children, self._slices
        for i in range(len(children) - 1, -1, -1):
            y_bar = children[i].vjp_into(cache[i], y_bar,
                                         None if params_bar is None else params_bar[slices[i]])
        return y_bar
