"""Continuous normalizing flows (CNF) as vector fields on the augmented state ``(z, log p)``.

A CNF (Chen et al. 2018; Grathwohl et al. 2019, FFJORD) transports samples ``z`` by
``dz/dt = f(t, z)`` and tracks the change of their log-density by the instantaneous change of
variables ``d log p(z(t)) / dt = -tr(df/dz)``. :class:`CNF` is the pair

    dz/dt    = f(t, z, params),                 z: (N, ...) (N independent samples)
    dlogp/dt = -div_z f(t, z, params),          logp: (N,)

as **one** vector field on the flat state ``y = [z.ravel(), logp]`` (:meth:`CNF.pack`,
:meth:`CNF.unpack`), so every solver, the discrete adjoint under every checkpoint schedule and the
continuous adjoints (whose adjoint state then carries the log-density channel) apply unchanged:
nothing in :mod:`solvers` or :mod:`adjointcore.sensitivity` knows it is a CNF.
:class:`CoupledCNF` is the NODE-EW variant (He, Xie & Lin 2019): the weights ``theta(t)`` of
``f`` follow their own ODE ``theta' = g(t, theta, theta1)`` and the state is
``[z.ravel(), theta, logp]``.

Field VJP (derivation)
----------------------
For the cotangent ``dy_bar = [dz_bar, dlogp_bar]`` of ``dy = [f, -div]`` the VJP is the
gradient of ``<dz_bar, f(t, z, p)> - <dlogp_bar, div(t, z, p)>``: the ordinary VJP of ``f``
plus the divergence's second-order VJP with ``div_bar = -dlogp_bar``, both given by one call
of :func:`adjointcore.divergence.divergence_vjp` (``dz_bar`` passed along). ``dy`` does not
depend on ``logp``, so the ``logp`` block of ``y_bar`` is zero and the adjoint of ``logp`` is
constant in time (it stays ``dL/dlogp(T)``), as in FFJORD's adjoint.

Hutchinson probes
-----------------
With ``divergence="hutchinson"`` the divergence is the estimate ``v^T (df/dz) v`` for probes
``v`` held by the field object: the same ``v`` at every stage of every step of a solve and in
its adjoint, so the solve is a deterministic map and its discrete gradient is exact for that
map (the estimator's randomness is outside it). To redraw the probes per training iteration,
build a new field from the old one and use it for that iteration's solve *and* gradient::

    rng = np.random.default_rng(seed)
    for it in range(n_iter):
        field = cnf.redraw(rng)             # or cnf.with_probes(draw_probes(rng, cnf.z_shape))
        sweep = begin_trajectory_gradient(field, cnf.pack(x), params, [t1], t0=t0, ...)
        value, y1_bar = cnf_nll(field, sweep.ys[0])
        grad = sweep.gradient(y1_bar[None]).params_bar

``logp(T)`` is linear in the per-stage estimates and ``z(t)`` does not depend on the probes,
so for probes with ``E[v v^T] = I`` both the discrete ``logp(T)`` and its gradient are unbiased
estimates of the exact-trace ones (of the same discrete map).

Loss
----
:func:`cnf_nll`, the mean negative log-likelihood; the sign convention is stated there.

References
----------
R. T. Q. Chen, Y. Rubanova, J. Bettencourt, D. Duvenaud, "Neural ordinary differential
equations", NeurIPS 2018 (Theorem 1, instantaneous change of variables).
W. Grathwohl, R. T. Q. Chen, J. Bettencourt, I. Sutskever, D. Duvenaud, "FFJORD: free-form
continuous dynamics for scalable reversible generative models", ICLR 2019.
L. He, X. Xie, Z. Lin, "Neural ordinary differential equations with envolutionary weights",
PRCV 2019.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from adjointcore.backend import Array, get_array_module
from adjointcore.divergence import METHODS, DivergenceCache, divergence_vjp, draw_probes
from adjointcore.divergence import divergence as field_divergence
from adjointcore.errors import ShapeError, check_array
from adjointcore.layers.binding import call_vjp

__all__ = ["CNF", "CoupledCNF", "CNFCache", "CoupledCNFCache", "cnf_nll"]

_LOG_2PI = math.log(2.0 * math.pi)


# -- configuration checks (run in the constructors, before any compute) ---------------------------
def _check_layer(name: str, layer: Any) -> None:
    missing = [a for a in ("forward", "vjp", "n_params", "init") if not hasattr(layer, a)]
    if missing:
        raise TypeError(f"`{name}` must follow the layer protocol; {layer!r:.80} lacks "
                        f"{', '.join(missing)}.")


def _check_state_shape(state_shape: Sequence[int]) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in state_shape)
        ok = all(int(s) == s for s in state_shape)
    except (TypeError, ValueError):
        shape, ok = (), False
    if not ok or len(shape) < 2 or min(shape) < 1:
        raise ShapeError(f"`state_shape` must be the shape (N, ...) of the sample batch z with at "
                         f"least 2 positive sizes (e.g. (N, d)), got {state_shape!r}.")
    return shape


def _check_output_shape(name: str, layer: Any, shape: tuple[int, ...]) -> None:
    out = getattr(layer, "output_shape", None)
    if not callable(out):
        return
    try:
        got = tuple(out(shape))
    except (NotImplementedError, TypeError):
        return
    except ValueError as err:
        raise ShapeError(f"`{name}` {layer!r:.80} does not accept states of `state_shape` "
                         f"{shape}: {err}") from err
    if got != shape:
        raise ShapeError(f"`{name}` must map z of `state_shape` {shape} to the same shape (a "
                         f"vector field), but it maps it to {got}; adjust its widths.")


def _check_divergence(divergence: str, probes: Array | None, shape: tuple[int, ...],
                      closed_form: bool | None) -> tuple[str, Array | None]:
    """Validated ``(method, probes)``."""
    if divergence not in METHODS:
        raise ValueError(f"`divergence` must be one of {METHODS}, got {divergence!r}.")
    if closed_form not in (None, True, False):
        raise ValueError(f"`closed_form` must be None, True or False, got {closed_form!r}.")
    if divergence == "exact":
        if probes is not None:
            raise ValueError("`probes` only apply to divergence='hutchinson'; drop them for the "
                             "exact trace.")
        return divergence, None
    if closed_form:
        raise ValueError("`closed_form=True` applies to divergence='exact' only.")
    if probes is None:
        raise ValueError(f"divergence='hutchinson' needs `probes` of shape {shape} (one per "
                         f"sample) or (M,) + {shape}: draw them with "
                         f"draw_probes(rng, {shape}) or use CNF.redraw(rng).")
    check_array("probes", probes, allow_complex=False, finite=True,
                fix=f"Draw them with draw_probes(rng, {shape}).")
    got = tuple(probes.shape)
    if got != shape and (len(got) != len(shape) + 1 or got[1:] != shape or got[0] < 1):
        raise ShapeError(f"`probes` must have shape `state_shape` {shape} or (M,) + {shape}, got "
                         f"{got}; draw them with draw_probes(rng, {shape}).")
    return divergence, probes


def _zeros(xp: Any, n: int, like: Array) -> Array:
    return xp.zeros(n, dtype=like.dtype)


def _layer_call(layer: Any, params: Array | None, x: Array, t: Any) -> tuple[Array, Any]:
    if getattr(layer, "time_dependent", False):
        return layer.forward(params, x, t=t)
    return layer.forward(params, x)


class _DensityField:
    """What :class:`CNF` and :class:`CoupledCNF` share: the divergence settings, the sample
    shape, probe handling and the ``(z, logp)`` blocks of the state."""

    def _set_divergence(self, layer_name: str, layer: Any, state_shape: Sequence[int],
                        divergence: str, probes: Array | None, closed_form: bool | None) -> None:
        _check_layer(layer_name, layer)
        shape = _check_state_shape(state_shape)
        method, probes = _check_divergence(divergence, probes, shape, closed_form)
        _check_output_shape(layer_name, layer, shape)
        self.z_shape = shape
        self.divergence = method
        self.probes = probes
        self.closed_form = closed_form

    @property
    def n_samples(self) -> int:
        """``N``: samples in the batch, one log-density each."""
        return self.z_shape[0]

    @property
    def n_z(self) -> int:
        """Entries of ``z``."""
        return math.prod(self.z_shape)

    def _divergence(self, layer: Any, t: Any, z: Array,
                    params: Array) -> tuple[Array, DivergenceCache]:
        return field_divergence(layer, t, z, params, method=self.divergence, probes=self.probes,
                                closed_form=self.closed_form)

    def redraw(self, rng: np.random.Generator, n_probes: int = 1, kind: str = "gaussian",
               dtype: DTypeLike = np.float64) -> Any:
        """A copy holding fresh Hutchinson probes ``draw_probes(rng, ...)``.

        Parameters
        ----------
        rng : numpy.random.Generator
        n_probes : int
            ``M``: probes per sample (the estimate is their mean); ``M = 1`` gives probes of
            shape ``z_shape``, ``M > 1`` of shape ``(M,) + z_shape``.
        kind : {"gaussian", "rademacher"}
        dtype : dtype

        Returns
        -------
        Same class, with ``divergence="hutchinson"`` (NumPy probes; for CuPy use
        :meth:`with_probes` with probes moved by :func:`adjointcore.backend.to_device`).
        """
        if isinstance(n_probes, bool) or not isinstance(n_probes, (int, np.integer)) \
                or n_probes < 1:
            raise ValueError(f"`n_probes` must be an integer >= 1, got {n_probes!r}.")
        shape = self.z_shape if n_probes == 1 else (int(n_probes),) + self.z_shape
        # CNF and CoupledCNF define with_probes
        return self.with_probes(draw_probes(rng, shape, kind, dtype))  # type: ignore[attr-defined]


# -- plain CNF -------------------------------------------------------------------------------------
class CNFCache(NamedTuple):
    """What :meth:`CNF.vjp` needs: the divergence cache (it holds the layer's cache, ``params``,
    ``t`` and the field value)."""

    div_cache: DivergenceCache


class CNF(_DensityField):
    """The CNF field ``(z, logp)' = (f(t, z), -div_z f(t, z))`` on ``y = [z.ravel(), logp]``.

    Parameters
    ----------
    layer : layer
        ``f``: maps ``z`` of shape ``state_shape`` to the same shape, samples independently
        (e.g. ``Sequential(ConcatLinear(d, h), Tanh(), ConcatLinear(h, d))``). ``t=`` is passed
        when ``layer.time_dependent``. Needs forward mode (``jvp``) and second-order VJPs
        (``jvp_vjp``) unless the MLP closed form applies
        (:func:`adjointcore.divergence.divergence`).
    state_shape : tuple of int
        ``(N, ...)``: shape of the sample batch ``z`` (``(N, d)``, or ``(N, C, H, W)``).
    divergence : {"exact", "hutchinson"}
        Exact trace (tiled unit tangents, or the MLP closed form) or Hutchinson's estimate.
    probes : ndarray, shape ``state_shape`` or ``(M,) + state_shape``
        Hutchinson probes (required for, and only for, ``"hutchinson"``), held fixed for every
        solve and adjoint that uses this field; see the module notes for redrawing them.
    closed_form : bool or None
        Exact trace only: ``None`` uses the MLP closed form when ``layer`` has its structure,
        ``False`` always tiles, ``True`` requires it.

    Attributes
    ----------
    layer, z_shape, divergence, probes, closed_form
    size : int
        Length of the flat state, ``prod(state_shape) + N``.

    Notes
    -----
    ``forward(t, y, params) -> (dy, CNFCache)`` with ``dy = [f.ravel(), -div]``;
    ``vjp(cache, dy_bar, need_params) -> (y_bar, params_bar, t_bar)``:
    ``y_bar = [(df/dz)^T dz_bar - d<dlogp_bar, div>/dz, 0]``,
    ``params_bar = (df/dp)^T dz_bar - d<dlogp_bar, div>/dp``, ``t_bar`` the same for ``t``
    (None when ``f`` has no time input). The object keeps no state between calls.

    Raises
    ------
    TypeError, ShapeError, ValueError
        At construction, naming the argument: a non-layer ``layer``, a bad ``state_shape``
        (or a ``layer`` that does not preserve it), an unknown ``divergence``, missing /
        misshapen / unexpected ``probes``.
    """

    def __init__(self, layer: Any, state_shape: Sequence[int], divergence: str = "exact",
                 probes: Array | None = None, closed_form: bool | None = None) -> None:
        self._set_divergence("layer", layer, state_shape, divergence, probes, closed_form)
        self.layer = layer

    # -- layout ------------------------------------------------------------------------------
    @property
    def n_params(self) -> int:
        """Length of ``f``'s parameter vector."""
        return int(self.layer.n_params)

    @property
    def size(self) -> int:
        """Length of the flat state ``[z.ravel(), logp]``."""
        return self.n_z + self.n_samples

    def init(self, rng: np.random.Generator, dtype: DTypeLike = np.float64) -> Array:
        """``f``'s initial parameters (``layer.init``)."""
        return self.layer.init(rng, dtype)

    def with_probes(self, probes: Array) -> CNF:
        """A copy (same layer, shape and ``closed_form``) with ``divergence="hutchinson"`` and
        these probes (shape ``z_shape`` or ``(M,) + z_shape``)."""
        return CNF(self.layer, self.z_shape, "hutchinson", probes)

    def pack(self, z: Array, logp: Array | None = None) -> Array:
        """Flat state ``[z.ravel(), logp]``, shape ``(size,)``.

        Parameters
        ----------
        z : ndarray, shape ``z_shape``
        logp : ndarray, shape (N,), optional
            Defaults to zeros (the CNF's ``logp(t0) = 0``).

        Raises
        ------
        ShapeError
            ``z`` or ``logp`` of the wrong shape (named).
        """
        check_array("z", z, shape=self.z_shape, fix="Pass the sample batch of `state_shape`.")
        xp = get_array_module(z)
        if logp is None:
            logp = _zeros(xp, self.n_samples, z)
        check_array("logp", logp, shape=(self.n_samples,), fix="One log-density per sample.")
        return xp.concatenate([xp.reshape(z, (-1,)), logp])

    def unpack(self, y: Array) -> tuple[Array, Array]:
        """Views ``(z (z_shape), logp (N,))`` of a flat state; inverse of :meth:`pack`.

        Raises
        ------
        ShapeError
            ``y`` is not flat with ``size`` entries.
        """
        check_array("y", y, shape=(self.size,),
                    fix=f"The CNF state is flat: z {self.z_shape} then logp ({self.n_samples},); "
                        f"build it with cnf.pack(z, logp).")
        return y[:self.n_z].reshape(self.z_shape), y[self.n_z:]

    def unpack_density(self, y: Array) -> tuple[Array, Array]:
        """``(z, logp)`` of a state (the same as :meth:`unpack` for the plain CNF)."""
        return self.unpack(y)

    def pack_density_bar(self, z_bar: Array, logp_bar: Array) -> Array:
        """The state cotangent with ``z_bar`` and ``logp_bar`` in place (:meth:`pack`)."""
        return self.pack(z_bar, logp_bar)

    # -- field -------------------------------------------------------------------------------
    def forward(self, t: Any, y: Array, params: Array) -> tuple[Array, CNFCache]:
        """``dy = [f(t, z, params).ravel(), -div_z f]``; returns ``(dy, CNFCache)``.

        Parameters
        ----------
        t : float
        y : ndarray, shape (size,)
        params : ndarray, shape (n_params,)
        """
        z, _ = self.unpack(y)
        div, cache = self._divergence(self.layer, t, z, params)
        xp = get_array_module(y)
        return xp.concatenate([xp.reshape(cache.dz, (-1,)), -div]), CNFCache(cache)

    def vjp(self, cache: CNFCache, dy_bar: Array,
            need_params: bool = True) -> tuple[Array, Array | None, Array | None]:
        """``(y_bar (size,), params_bar (n_params,) or None, t_bar or None)`` (class notes)."""
        if not isinstance(cache, CNFCache):
            raise TypeError(f"`cache` must be the CNFCache returned by CNF.forward, got "
                            f"{type(cache).__name__}.")
        check_array("dy_bar", dy_bar, shape=(self.size,), fix="The cotangent of dy.")
        dz_bar, dlogp_bar = dy_bar[:self.n_z].reshape(self.z_shape), dy_bar[self.n_z:]
        bars = divergence_vjp(cache.div_cache, -dlogp_bar, dz_bar)
        xp = get_array_module(bars.z_bar)
        y_bar = xp.concatenate([xp.reshape(bars.z_bar, (-1,)),
                                _zeros(xp, self.n_samples, bars.z_bar)])
        return y_bar, (bars.params_bar if need_params else None), bars.t_bar

    def __repr__(self) -> str:
        return (f"CNF({self.layer!r}, state_shape={self.z_shape}, "
                f"divergence={self.divergence!r})")


# -- NODE-EW CNF -----------------------------------------------------------------------------------
class CoupledCNFCache(NamedTuple):
    """What :meth:`CoupledCNF.vjp` needs: the divergence cache of ``f`` (at ``theta``),
    ``theta1`` and ``g``'s cache (None when ``g = 0``)."""

    div_cache: DivergenceCache
    theta1: Array | None
    g_cache: Any


class CoupledCNF(_DensityField):
    """NODE-EW CNF: ``(z, theta, logp)' = (f(t, z, theta), g(t, theta, theta1), -div_z f)``.

    Parameters
    ----------
    f_layer : layer
        ``f``, as :class:`CNF`'s ``layer``; its parameter vector is the state block ``theta``.
    g_layer : layer or None
        Maps ``(1, n_theta)`` to ``(1, n_theta)`` with parameters ``theta1`` (``t=`` passed
        when time-dependent); None means ``g = 0`` (constant weights, a plain CNF; ``params``
        is then None or a length-0 array).
    state_shape, divergence, probes, closed_form
        As :class:`CNF` (the divergence is with respect to ``z`` only).

    Notes
    -----
    State ``y = [z.ravel(), theta, logp]`` (:meth:`pack`), field parameters ``theta1``; the
    conventions of :class:`~nets.node_ew.CoupledField` (``init -> (theta0, theta1)``,
    ``n_params`` = ``g``'s, ``n_state_params = n_theta`` in an :class:`~nets.ODEBlock`).
    ``theta`` enters ``f`` as its parameters, so the divergence's parameter cotangent is the
    ``theta`` cotangent: with ``dy_bar = [dz_bar, dth_bar, dlogp_bar]``,
    ``y_bar = [(df/dz)^T dz_bar - d<dlogp_bar, div>/dz,
    (df/dtheta)^T dz_bar - d<dlogp_bar, div>/dtheta + (dg/dtheta)^T dth_bar, 0]`` and
    ``params_bar = (dg/dtheta1)^T dth_bar``; ``t_bar`` is None (as ``CoupledField``).

    In an ODEBlock the block's input is the sample batch ``z0`` (``state_shape``), its
    parameters ``[theta0, theta1]``, the initial state ``[z0, theta0, 0]`` and its output the
    whole final state (so :func:`cnf_nll` applies to it).
    """

    def __init__(self, f_layer: Any, g_layer: Any, state_shape: Sequence[int],
                 divergence: str = "exact", probes: Array | None = None,
                 closed_form: bool | None = None) -> None:
        self._set_divergence("f_layer", f_layer, state_shape, divergence, probes, closed_form)
        if g_layer is not None:
            _check_layer("g_layer", g_layer)
        if int(f_layer.n_params) == 0:
            raise ValueError(f"`f_layer` {f_layer!r} has no parameters, so there is no theta(t) "
                             f"to evolve; use a layer stack with weights.")
        self.f_layer, self.g_layer = f_layer, g_layer
        self.n_theta = int(f_layer.n_params)
        if g_layer is not None:
            _check_output_shape("g_layer", g_layer, (1, self.n_theta))

    @property
    def n_params(self) -> int:
        """Length of ``theta1`` (0 when ``g = 0``)."""
        return 0 if self.g_layer is None else int(self.g_layer.n_params)

    @property
    def size(self) -> int:
        """Length of the flat state ``[z.ravel(), theta, logp]``."""
        return self.n_z + self.n_theta + self.n_samples

    def init(self, rng: np.random.Generator, dtype: DTypeLike = np.float64) -> tuple[Array, Array]:
        """``(theta0, theta1)`` from the layers' initialisers (``theta1`` length 0 if g = 0)."""
        theta0 = self.f_layer.init(rng, dtype)
        theta1 = (np.zeros(0, dtype=dtype) if self.g_layer is None
                  else self.g_layer.init(rng, dtype))
        return theta0, theta1

    def with_probes(self, probes: Array) -> CoupledCNF:
        """A copy (same layers and shape) with ``divergence="hutchinson"`` and these probes."""
        return CoupledCNF(self.f_layer, self.g_layer, self.z_shape, "hutchinson", probes)

    def pack(self, z: Array, theta: Array, logp: Array | None = None) -> Array:
        """Flat state ``[z.ravel(), theta, logp]`` (``logp`` defaults to zeros).

        Raises
        ------
        ShapeError
            ``z``, ``theta`` or ``logp`` of the wrong shape (named).
        """
        check_array("z", z, shape=self.z_shape, fix="Pass the sample batch of `state_shape`.")
        check_array("theta", theta, shape=(self.n_theta,),
                    fix="Pass the flat parameter vector of f_layer.")
        xp = get_array_module(z, theta)
        if logp is None:
            logp = _zeros(xp, self.n_samples, z)
        check_array("logp", logp, shape=(self.n_samples,), fix="One log-density per sample.")
        return xp.concatenate([xp.reshape(z, (-1,)), theta, logp])

    def unpack(self, y: Array) -> tuple[Array, Array, Array]:
        """Views ``(z, theta, logp)`` of a flat state; inverse of :meth:`pack`."""
        check_array("y", y, shape=(self.size,),
                    fix=f"The coupled CNF state is flat: z {self.z_shape}, theta "
                        f"({self.n_theta},), logp ({self.n_samples},); build it with pack().")
        a, b = self.n_z, self.n_z + self.n_theta
        return y[:a].reshape(self.z_shape), y[a:b], y[b:]

    def unpack_density(self, y: Array) -> tuple[Array, Array]:
        """``(z, logp)`` of a state."""
        z, _, logp = self.unpack(y)
        return z, logp

    def pack_density_bar(self, z_bar: Array, logp_bar: Array) -> Array:
        """State cotangent ``[z_bar, 0, logp_bar]``."""
        xp = get_array_module(z_bar)
        return self.pack(z_bar, _zeros(xp, self.n_theta, z_bar), logp_bar)

    # -- in an ODEBlock: z0 in, final state out, block parameters [theta0, theta1] ------------
    @property
    def n_state_params(self) -> int:
        """``theta0`` is the leading part of an :class:`~nets.ODEBlock`'s parameters."""
        return self.n_theta

    def initial_state(self, x: Array, theta0: Array) -> Array:
        """``[x.ravel(), theta0, 0]`` for samples ``x`` of ``state_shape``."""
        return self.pack(x, theta0)

    def initial_state_vjp(self, y0_bar: Array) -> tuple[Array, Array]:
        """``(x_bar, theta0_bar)`` (``logp(t0) = 0`` is a constant)."""
        z_bar, theta_bar, _ = self.unpack(y0_bar)
        return z_bar, theta_bar

    def output(self, y1: Array) -> Array:
        """The block's output: the whole final state (for :func:`cnf_nll`)."""
        return y1

    def output_vjp(self, out_bar: Array) -> Array:
        """Identity."""
        check_array("out_bar", out_bar, shape=(self.size,), fix="The final state's cotangent.")
        return out_bar

    # -- field -------------------------------------------------------------------------------
    def forward(self, t: Any, y: Array, params: Array | None) -> tuple[Array, CoupledCNFCache]:
        """``dy = [f(t, z, theta).ravel(), g(t, theta, theta1), -div_z f]``; returns
        ``(dy, CoupledCNFCache)``."""
        z, theta, _ = self.unpack(y)
        div, cache = self._divergence(self.f_layer, t, z, theta)
        xp = get_array_module(y)
        if self.g_layer is None:
            dtheta, g_cache = xp.zeros_like(theta), None
        else:
            dtheta, g_cache = _layer_call(self.g_layer, params, theta[None, :], t)
            if tuple(dtheta.shape) != (1, self.n_theta):
                raise ShapeError(f"g_layer must map (1, {self.n_theta}) to the same shape, got "
                                 f"{tuple(dtheta.shape)}.")
        dy = xp.concatenate([xp.reshape(cache.dz, (-1,)), xp.reshape(dtheta, (-1,)), -div])
        return dy, CoupledCNFCache(cache, params, g_cache)

    def vjp(self, cache: CoupledCNFCache, dy_bar: Array,
            need_params: bool = True) -> tuple[Array, Array | None, None]:
        """``(y_bar, params_bar, None)`` (class notes)."""
        if not isinstance(cache, CoupledCNFCache):
            raise TypeError(f"`cache` must be the CoupledCNFCache returned by "
                            f"CoupledCNF.forward, got {type(cache).__name__}.")
        dz_bar, dth_bar, dlogp_bar = self.unpack(dy_bar)
        bars = divergence_vjp(cache.div_cache, -dlogp_bar, dz_bar)
        theta_bar = bars.params_bar
        xp = get_array_module(bars.z_bar)
        params_bar = None
        if self.g_layer is not None:
            th_bar_g, params_bar = call_vjp(self.g_layer, cache.theta1, cache.g_cache,
                                            dth_bar[None, :], need_params)
            theta_bar = theta_bar + th_bar_g[0]
        elif need_params:
            params_bar = xp.zeros(0, dtype=bars.z_bar.dtype)
        y_bar = xp.concatenate([xp.reshape(bars.z_bar, (-1,)), theta_bar,
                                _zeros(xp, self.n_samples, bars.z_bar)])
        return y_bar, params_bar, None

    def __repr__(self) -> str:
        return (f"CoupledCNF(f={self.f_layer!r}, g={self.g_layer!r}, state_shape={self.z_shape}, "
                f"divergence={self.divergence!r})")


# -- loss ------------------------------------------------------------------------------------------
def cnf_nll(cnf: CNF | CoupledCNF, y1: Array) -> tuple[Array, Array]:
    """Mean negative log-likelihood of the data under a CNF, and its gradient w.r.t. ``y1``.

    Convention: the data ``x`` is the state at the start ``t0`` of the solve, ``z(t0) = x``,
    ``logp(t0) = 0``, and the solve runs to ``t1`` where the base density ``N(0, I)`` sits.
    ``logp`` integrates ``dlogp/dt = -div f``, so by the instantaneous change of variables
    ``log p_t1(z(t1)) = log p_t0(x) + logp(t1)``, i.e.::

        log p_x(x) = log N(z(t1); 0, I) - logp(t1),

    and for ``N`` samples with ``D`` values each::

        NLL = -(1/N) sum_n [log N(z_n(t1); 0, I) - logp_n(t1)]
            = (1/N) sum_n [|z_n(t1)|^2 / 2 + (D/2) log(2 pi) + logp_n(t1)].

    (A field that contracts the data towards the origin has ``div < 0``, so ``logp(t1) > 0``
    is a volume loss the likelihood pays for.) Gradient: ``dNLL/dz_n = z_n / N``,
    ``dNLL/dlogp_n = 1 / N``.

    Parameters
    ----------
    cnf : CNF or CoupledCNF
        The field whose state ``y1`` is (only its layout is used).
    y1 : ndarray, shape (cnf.size,)
        The final state of the solve (``sweep.ys[0]``, ``Solution.ys[-1]``).

    Returns
    -------
    value : 0-d ndarray
        The NLL in nats per sample (``float(value)`` for a Python number).
    y1_bar : ndarray, shape (cnf.size,)
        ``dNLL/dy1`` (zero on ``theta`` for a :class:`CoupledCNF`).

    Raises
    ------
    TypeError
        ``cnf`` is not a CNF field.
    ShapeError
        ``y1`` is not a flat state of ``cnf``.
    """
    if not isinstance(cnf, _DensityField):
        raise TypeError(f"`cnf` must be a CNF or CoupledCNF (it gives the layout of `y1`), got "
                        f"{type(cnf).__name__}.")
    check_array("y1", y1, shape=(cnf.size,),
                fix="Pass the final state of the solve (e.g. sweep.ys[0] or Solution.ys[-1]).")
    z, logp = cnf.unpack_density(y1)
    n = cnf.n_samples
    d = cnf.n_z // n
    xp = get_array_module(y1)
    sq = xp.reshape(z * z, (n, -1)).sum(axis=1)
    value = (0.5 * sq + logp).sum() / n + 0.5 * d * _LOG_2PI
    z_bar = z / n
    logp_bar = xp.full(n, 1.0 / n, dtype=y1.dtype)
    return value, cnf.pack_density_bar(z_bar, logp_bar)
