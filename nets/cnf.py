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
:class:`CoupledCNF` (:mod:`nets.coupled_cnf`, re-exported here) is the NODE-EW variant (He, Xie
& Lin 2019): the weights ``theta(t)`` of ``f`` follow their own ODE
``theta' = g(t, theta, theta1)`` and the state is ``[z.ravel(), theta, logp]``.

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
from adjointcore.divergence import DivergenceCache, divergence_vjp
from adjointcore.errors import check_array

from ._density import _DensityField, _zeros
from .coupled_cnf import CoupledCNF, CoupledCNFCache

__all__ = ["CNF", "CoupledCNF", "CNFCache", "CoupledCNFCache", "cnf_nll"]

_LOG_2PI = math.log(2.0 * math.pi)


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
