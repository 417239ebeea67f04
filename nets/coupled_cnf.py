"""The NODE-EW continuous normalizing flow (He, Xie & Lin 2019): :class:`CoupledCNF`.

The weights ``theta(t)`` of the CNF's field ``f`` (:class:`nets.cnf.CNF`) follow their own ODE
``theta' = g(t, theta, theta1)``; :class:`CoupledCNF` is the field

    dz/dt     = f(t, z, theta),                 z: (N, ...) (N independent samples)
    dtheta/dt = g(t, theta, theta1),            theta: (n_theta,) (f's parameter vector)
    dlogp/dt  = -div_z f(t, z, theta),          logp: (N,)

on the flat state ``[z.ravel(), theta, logp]`` with field parameters ``theta1``, following the
conventions of :class:`nets.node_ew.CoupledField` (in an :class:`~nets.ODEBlock`: block
parameters ``[theta0, theta1]``). The divergence settings (exact trace or Hutchinson probes held
by the field), the field VJP's derivation and the loss :func:`nets.cnf.cnf_nll` are those of
:mod:`nets.cnf`, which re-exports :class:`CoupledCNF` and :class:`CoupledCNFCache`; the
divergence's parameter cotangent is the ``theta`` block of the state cotangent.

References
----------
L. He, X. Xie, Z. Lin, "Neural ordinary differential equations with envolutionary weights",
PRCV 2019.
W. Grathwohl, R. T. Q. Chen, J. Bettencourt, I. Sutskever, D. Duvenaud, "FFJORD: free-form
continuous dynamics for scalable reversible generative models", ICLR 2019.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import DTypeLike

from adjointcore.backend import Array, get_array_module
from adjointcore.divergence import DivergenceCache, divergence_vjp
from adjointcore.errors import ShapeError, check_array
from adjointcore.layers.binding import call_vjp

from ._density import _check_layer, _check_output_shape, _DensityField, _zeros

__all__ = ["CoupledCNF", "CoupledCNFCache"]


def _layer_call(layer: Any, params: Array | None, x: Array, t: Any) -> tuple[Array, Any]:
    if getattr(layer, "time_dependent", False):
        return layer.forward(params, x, t=t)
    return layer.forward(params, x)


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
