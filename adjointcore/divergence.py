"""Divergence of a vector field with respect to its state, and its hand-derived VJP.

For a field ``dz = f(t, z, params)`` acting on a batch of ``N`` independent samples (state of
shape ``(N, ...)``, ``D`` values per sample), the divergence per sample is
``div[n] = tr(d f[n] / d z[n])``, shape ``(N,)``: the quantity a continuous normalizing flow
integrates as ``d log p / dt = -div`` (Chen et al. 2018; Grathwohl et al. 2019).

Methods
-------
``"exact"``       ``tr(J) = sum_k e_k^T J e_k``: the batch is tiled ``D`` times, copy ``k``
                  carrying the unit tangent ``e_k``, and one forward plus one forward-mode
                  product (``apply_jvp``) run on the ``D N`` rows. Where the field is the
                  one-hidden-layer tanh MLP ``Sequential(L1, Tanh(), L2)`` (``L1``, ``L2``
                  :class:`~adjointcore.layers.Linear` or
                  :class:`~adjointcore.layers.ConcatLinear`, state ``(N, d)``) the closed form
                  ``div = tanh'(a) @ s``, ``a = z W1x^T (+ t w1t) + b1``, ``s_k = sum_i W1x[k, i]
                  W2x[i, k]`` is used instead (``closed_form=None``: automatically; ``False``:
                  always tile).
``"hutchinson"``  ``v^T J v`` for caller-supplied probes ``v`` (Gaussian or Rademacher,
                  :func:`draw_probes`), shape ``(N, ...)`` (one probe per sample) or
                  ``(M, N, ...)`` (the mean over ``M`` probes); unbiased since ``E[v v^T] = I``.
                  The probes are data, not state: the caller draws them once per solve and passes
                  the same array to the forward solve and to its adjoint.

Both are ``div = w sum_m sum_j V[m, n, j] (J V[m])[n, j]`` with tangents ``V`` (``e_k`` or the
probes) and weight ``w`` (1, or ``1 / M``).

Gradient
--------
:func:`divergence_vjp` returns ``(z_bar, params_bar, t_bar)`` for a cotangent ``div_bar`` (N,):
``d(sum_n div_bar[n] div[n]) / d(z, params, t)``. With ``V`` fixed, ``div`` is
``<y_dot_bar, y_dot>`` for ``y_dot = J(z, params, t) V`` and ``y_dot_bar = w div_bar[n] V``,
so its gradient is the layer's second-order VJP ``jvp_vjp(params, cache, V, None, y_dot_bar)``
(:meth:`adjointcore.layers.Layer.jvp_vjp`), summed over the tiled copies. Passing ``dz_bar``
adds the ordinary VJP of the field value ``dz`` (the CNF's augmented field needs both).

The per-sample divergence assumes the field treats samples independently (no batch
statistics: ``BatchNorm`` in train mode couples them; ``GroupNorm`` does not).
"""
from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import DTypeLike, NDArray

from .backend import Array, get_array_module
from .errors import ShapeError, check_array, check_generator, check_params
from .layers.activation import Tanh, tanh_derivative
from .layers.base import call_jvp_vjp, kernel_jvp, layer_kernel
from .layers.compose import Sequential
from .layers.linear import Linear

__all__ = ["divergence", "divergence_vjp", "draw_probes", "DivergenceCache", "DivergenceBars",
           "METHODS", "PROBES"]

METHODS = ("exact", "hutchinson")
PROBES = ("gaussian", "rademacher")


class DivergenceCache(NamedTuple):
    """What :func:`divergence_vjp` needs.

    Attributes
    ----------
    kernel : object
        Fast-path kernel of the layer (:func:`~adjointcore.layers.base.layer_kernel`).
    params : ndarray, shape (n_params,)
    t : float or None
    z_shape : tuple
        ``(N, ...)``.
    tangents : ndarray, shape (M * N, ...) or None
        The tiled tangents ``V`` (None for the closed form).
    weight : float
        ``1`` (exact) or ``1 / M`` (Hutchinson).
    layer_cache : object
        The layer's cache on the tiled batch (or on ``z`` for the closed form).
    closed : tuple or None
        ``(a, g, s)`` of the closed form: pre-activation, ``tanh'(a)`` and ``s``.
    dz : ndarray, shape of ``z``
        The field value ``f(t, z)`` (from the first tiled copy, or the plain forward for the
        closed form).
    method : str
    """

    kernel: Any
    params: Array
    t: Any
    z_shape: tuple[int, ...]
    tangents: Array
    weight: float
    layer_cache: Any
    closed: Any
    dz: Array
    method: str


class DivergenceBars(NamedTuple):
    """Result of :func:`divergence_vjp`: ``z_bar`` (shape of ``z``), ``params_bar``
    (n_params,), ``t_bar`` (0-d, or None for a field without time)."""

    z_bar: Array
    params_bar: Array
    t_bar: Array | None


def draw_probes(rng: np.random.Generator, shape: int | Sequence[int], kind: str = "gaussian",
                dtype: DTypeLike = np.float64) -> NDArray[Any]:
    """Hutchinson probes with ``E[v v^T] = I``, drawn from ``rng``.

    Parameters
    ----------
    rng : numpy.random.Generator
    shape : tuple
        ``z.shape`` for one probe per sample, ``(M,) + z.shape`` for ``M``.
    kind : {"gaussian", "rademacher"}
        Standard normal entries, or +-1 with probability 1/2 (smaller variance:
        ``Var = 2 sum_{i != j} J_ij^2`` against ``2 |J|_F^2`` for Gaussian probes of a
        symmetric ``J``).
    dtype : dtype

    Returns
    -------
    ndarray, shape ``shape`` (NumPy; move it with :func:`adjointcore.backend.to_device`).
    """
    check_generator(rng)
    if kind == "gaussian":
        return rng.standard_normal(shape).astype(dtype)
    if kind == "rademacher":
        return (2.0 * rng.integers(0, 2, size=shape) - 1.0).astype(dtype)
    raise ValueError(f"`kind` must be one of {PROBES}, got {kind!r}.")


def _as_layer(field_or_layer: Any) -> Any:
    layer = getattr(field_or_layer, "layer", field_or_layer)
    for attr in ("forward", "n_params"):
        if not hasattr(layer, attr):
            raise TypeError(f"`field_or_layer` must be a layer or a LayerField; "
                            f"{type(field_or_layer).__name__} lacks `{attr}`.")
    return layer


def _mlp_parts(layer: Any, z: Array) -> tuple[Linear, Linear] | None:
    """``(L1, L2)`` if ``layer`` is ``Sequential(L1, Tanh(), L2)`` with dense ``L1: d -> h``
    and ``L2: h -> d`` acting on ``z`` of shape (N, d); else None."""
    if not isinstance(layer, Sequential) or len(layer) != 3 or z.ndim != 2:
        return None
    l1, act, l2 = layer.layers
    if not (isinstance(l1, Linear) and isinstance(l2, Linear) and type(act) is Tanh):
        return None
    if type(l1).apply_jvp_vjp is not Linear.apply_jvp_vjp \
            or type(l2).apply_jvp_vjp is not Linear.apply_jvp_vjp:
        return None
    d = z.shape[1]
    if l1.in_features != d or l2.out_features != d or l1.out_features != l2.in_features:
        return None
    return l1, l2


def _tangents(method: str, z: Array, probes: Array | None, xp: Any) -> tuple[Array, float]:
    """``(V (M, N, ...), weight)``."""
    n, rest = z.shape[0], tuple(z.shape[1:])
    if method == "exact":
        d = prod(rest)
        eye = xp.eye(d, dtype=z.dtype).reshape((d, 1) + rest)
        return xp.broadcast_to(eye, (d, n) + rest), 1.0
    if probes is None:
        raise ValueError("method='hutchinson' needs `probes` (shape z.shape or (M,) + z.shape): "
                         "draw them once per solve with draw_probes(rng, z.shape) and pass the "
                         "same array to the forward and the adjoint.")
    probes = check_array("probes", probes, fix="Draw them with draw_probes(rng, z.shape).")
    if tuple(probes.shape) == tuple(z.shape):
        probes = probes[None]
    if tuple(probes.shape[1:]) != tuple(z.shape) or probes.shape[0] < 1:
        raise ShapeError(f"`probes` must have shape z.shape {tuple(z.shape)} or (M,) + z.shape, "
                         f"got {tuple(probes.shape)}.")
    return probes.astype(z.dtype, copy=False), 1.0 / probes.shape[0]


def divergence(field_or_layer: Any, t: Any, z: Array, params: Array, method: str = "exact",
               probes: Array | None = None,
               closed_form: bool | None = None) -> tuple[Array, DivergenceCache]:
    """Per-sample divergence ``tr(df/dz)`` (exact) or its Hutchinson estimate ``v^T (df/dz) v``.

    Parameters
    ----------
    field_or_layer : layer or LayerField
        The field ``f(t, z, params)`` (a :class:`~adjointcore.fields.LayerField` is unwrapped to
        its layer). Its layers need forward mode (``jvp``) for the tiled path, and second-order
        VJPs (``jvp_vjp``) for :func:`divergence_vjp`.
    t : float or None
        Time (passed to time-dependent layers; a constant).
    z : ndarray, shape (N, ...)
        State: ``N`` independent samples; the output of ``f`` has the same shape.
    params : ndarray, shape (n_params,)
    method : {"exact", "hutchinson"}
    probes : ndarray, shape z.shape or (M,) + z.shape
        Required for ``"hutchinson"`` (held fixed by the caller).
    closed_form : bool or None
        ``"exact"`` only: None uses the MLP closed form when the structure matches; False always
        tiles; True requires the closed form (ValueError otherwise).

    Returns
    -------
    div : ndarray, shape (N,)
    cache : DivergenceCache
        ``cache.dz`` is the field value ``f(t, z)`` (shape of ``z``).

    Raises
    ------
    ValueError
        Unknown ``method``; ``"hutchinson"`` without probes; ``closed_form=True`` for a field
        without the MLP structure; a field not preserving the state's shape.
    ShapeError
        ``probes`` of the wrong shape; ``z`` with fewer than 2 axes.
    """
    if method not in METHODS:
        raise ValueError(f"`method` must be one of {METHODS}, got {method!r}.")
    layer = _as_layer(field_or_layer)
    z = check_array("z", z, fix="Pass the state batch (N, ...).")
    if z.ndim < 2:
        raise ShapeError(f"`z` must be a batch (N, ...) with at least 2 axes, got shape "
                         f"{tuple(z.shape)}; use z[:, None] for a scalar state per sample.")
    check_params("params", params, layer.n_params, owner=layer)
    if getattr(layer, "time_dependent", False) and t is None:
        raise ValueError(f"{type(layer).__name__} is time-dependent: pass t.")
    xp = get_array_module(z)
    kernel = layer_kernel(layer)
    parts = _mlp_parts(layer, z) if method == "exact" and closed_form is not False else None
    if closed_form and parts is None:
        raise ValueError("closed_form=True needs a field Sequential(Linear|ConcatLinear(d, h), "
                         "Tanh(), Linear|ConcatLinear(h, d)) on a state (N, d).")
    if parts is not None:
        return _closed_form(layer, kernel, parts, t, z, params)
    tangents, weight = _tangents(method, z, probes, xp)
    m, n = tangents.shape[0], z.shape[0]
    rest = tuple(z.shape[1:])
    z_rep = xp.ascontiguousarray(xp.broadcast_to(z, (m,) + tuple(z.shape))).reshape(
        (m * n,) + rest)
    v = xp.ascontiguousarray(tangents).reshape((m * n,) + rest)
    y, layer_cache = kernel.apply(params, z_rep, t, None, True)
    if tuple(y.shape) != tuple(z_rep.shape):
        raise ValueError(f"the field must return dz with the shape of z; "
                         f"{type(layer).__name__} mapped {tuple(z_rep.shape)} to "
                         f"{tuple(y.shape)}.")
    y_dot = kernel_jvp(kernel, params, layer_cache, v, None, "layer")
    div = (v * y_dot).reshape(m, n, -1).sum(axis=2).sum(axis=0)
    if weight != 1.0:
        div = div * weight
    cache = DivergenceCache(kernel, params, t, tuple(z.shape), v, weight, layer_cache, None,
                            y[:n], method)
    return div, cache


def _closed_form(layer: Sequential, kernel: Any, parts: tuple[Linear, Linear], t: Any, z: Array,
                 params: Array) -> tuple[Array, DivergenceCache]:
    """``div = tanh'(a) @ s`` for ``Sequential(L1, Tanh(), L2)`` (see the module notes)."""
    l1, l2 = parts
    s1, s2 = layer._slices[0], layer._slices[2]
    w1, _ = l1._weights(params[s1])
    w2, _ = l2._weights(params[s2])
    d, h = l1.in_features, l1.out_features
    dz, layer_cache = kernel.apply(params, z, t, None, True)
    a = layer_cache[1].x                                   # pre-activation (N, h)
    g = tanh_derivative(a)                                 # 1 - tanh(a)**2
    s = (w1[:, :d] * w2[:, :h].T).sum(axis=1)              # s_k = sum_i W1[k, i] W2[i, k]
    div = g @ s
    cache = DivergenceCache(kernel, params, t, tuple(z.shape), None, 1.0, layer_cache,
                            (a, g, s, parts), dz, "exact")
    return div, cache


def divergence_vjp(cache: DivergenceCache, div_bar: Array,
                   dz_bar: Array | None = None) -> DivergenceBars:
    """Cotangents of ``sum_n div_bar[n] div[n]`` (plus ``<dz_bar, dz>`` if given).

    Parameters
    ----------
    cache : DivergenceCache
        From :func:`divergence`.
    div_bar : ndarray, shape (N,)
    dz_bar : ndarray, shape of ``z``, optional
        Cotangent of the field value ``cache.dz``; adds the ordinary VJP of the field.

    Returns
    -------
    DivergenceBars
        ``(z_bar (shape of z), params_bar (n_params,), t_bar (0-d) or None)``; ``t_bar`` is
        None when no layer depends on ``t``.

    Notes
    -----
    Tiled path: ``y_dot_bar = w div_bar[n] V[m, n]`` and, with ``dz_bar``, ``y_bar`` equal to
    ``dz_bar`` on the first copy (zero elsewhere); one ``jvp_vjp`` of the layer on the tiled
    batch; ``z_bar`` sums the copies.

    Closed form (``L1 = (W1x, w1t, b1)``, ``L2 = (W2x, w2t, b2)``): with
    ``A = div_bar[:, None] * tanh''(a) * s`` (``tanh'' = -2 tanh tanh'``) and
    ``q_k = sum_n div_bar[n] tanh'(a)[n, k]``:
    ``z_bar = A @ W1x``, ``W1x_bar = A^T z + q[:, None] * W2x^T``, ``b1_bar = sum_n A``,
    ``w1t_bar = t sum_n A``, ``t_bar = sum(A * w1t)``, ``W2x_bar = q[None, :] * W1x^T``,
    ``b2_bar = w2t_bar = 0``.
    """
    if not isinstance(cache, DivergenceCache):
        raise TypeError(f"`cache` must be the DivergenceCache from divergence(), got "
                        f"{type(cache).__name__}.")
    n = cache.z_shape[0]
    div_bar = check_array("div_bar", div_bar, shape=(n,),
                          fix="Pass one cotangent per sample (shape (N,)).")
    if dz_bar is not None:
        check_array("dz_bar", dz_bar, shape=cache.z_shape, fix="Pass the cotangent of dz.")
    if cache.closed is not None:
        return _closed_form_vjp(cache, div_bar, dz_bar)
    xp = get_array_module(div_bar)
    v = cache.tangents
    m = v.shape[0] // n
    rest = tuple(cache.z_shape[1:])
    scale = div_bar * cache.weight if cache.weight != 1.0 else div_bar
    y_dot_bar = (v.reshape((m, n, -1)) * scale[None, :, None]).reshape(v.shape)
    y_bar = None
    if dz_bar is not None:
        y_bar = xp.zeros(v.shape, dtype=xp.result_type(dz_bar, v))
        y_bar[:n] = dz_bar
    r = call_jvp_vjp(cache.kernel, cache.params, cache.layer_cache, v, None, y_dot_bar, y_bar,
                     "layer")
    z_bar = r.x_bar.reshape((m, n) + rest).sum(axis=0)
    return DivergenceBars(z_bar, r.params_bar, r.t_bar)


def _closed_form_vjp(cache: DivergenceCache, div_bar: Array,
                     dz_bar: Array | None) -> DivergenceBars:
    xp = get_array_module(div_bar)
    a, g, s, (l1, l2) = cache.closed
    layer = cache.kernel
    params, t = cache.params, cache.t
    s1, s2 = layer._slices[0], layer._slices[2]
    d, h = l1.in_features, l1.out_features
    w1, _ = l1._weights(params[s1])
    w2, _ = l2._weights(params[s2])
    z = cache.layer_cache[0].x
    big_a = (div_bar[:, None] * (-2 * xp.tanh(a) * g)) * s[None, :]     # (N, h)
    q = (div_bar[:, None] * g).sum(axis=0)                               # (h,)
    dtype = xp.result_type(big_a, z, params)
    params_bar = xp.zeros(params.shape[0], dtype=dtype)
    g1w, g1b = l1._weights(params_bar[s1])
    g2w, _ = l2._weights(params_bar[s2])
    z_bar = big_a @ w1[:, :d]
    g1w[:, :d] = big_a.T @ z + q[:, None] * w2[:, :h].T
    a_sum = big_a.sum(axis=0)
    t_bar = None
    if l1._extra_inputs:
        g1w[:, -1] = t * a_sum
        t_bar = (big_a * w1[:, -1]).sum()
    if g1b is not None:
        g1b[...] = a_sum
    g2w[:, :h] = q[None, :] * w1[:, :d].T
    if l2._extra_inputs and t_bar is None:
        t_bar = xp.zeros((), dtype=dtype)
    if dz_bar is not None:
        zero = xp.zeros(cache.z_shape, dtype=dtype)
        r = call_jvp_vjp(layer, params, cache.layer_cache, zero, None, zero, dz_bar, "layer")
        z_bar = z_bar + r.x_bar
        params_bar = params_bar + r.params_bar
        if r.t_bar is not None:
            t_bar = r.t_bar if t_bar is None else t_bar + r.t_bar
    return DivergenceBars(z_bar, params_bar, t_bar)
