"""NODE-EW: neural ODE with evolutionary weights (He, Xie & Lin 2019).

The model couples the activation ODE with a weight ODE::

    x' = f(x, t, theta(t)),      x(0) = x0,
    theta' = g(theta, t, theta1), theta(0) = theta0,

where ``theta`` is the flat parameter vector of the layer stack ``f`` and ``theta1`` that of the
layer stack ``g`` (``g`` acts on ``theta`` as a ``(1, n_theta)`` batch). :class:`CoupledField`
is this system as one vector field on the flat state ``y = [x.ravel(), theta]`` with field
parameters ``theta1``, so every solver, the discrete adjoint and the continuous adjoint apply
unchanged. With ``g = 0`` (``g_layer=None``) ``theta`` stays ``theta0`` and the model is a plain
neural ODE.

Adjoint (derived from the Lagrangian)
-------------------------------------
For ``L = l(x(T))`` take ``L - int_0^T a^T (x' - f) + b^T (theta' - g) dt``. Integrating by parts
and asking for stationarity in ``x(t)`` and ``theta(t)`` gives, backwards from ``T``::

    a' = -(df/dx)^T a,                               a(T) = dl/dx(T),
    b' = -(df/dtheta)^T a - (dg/dtheta)^T b,          b(T) = 0,
    c' = -(dg/dtheta1)^T b,                          c(T) = 0,

and ``dL/dx0 = a(0)``, ``dL/dtheta0 = b(0)``, ``dL/dtheta1 = c(0) = int_0^T (dg/dtheta1)^T b dt``.
The paper's eq. (5) and Algorithm 1 omit the coupling term ``-(df/dtheta)^T a``: then ``b``
starts at zero and stays zero, so the printed system returns ``dL/dtheta0 = dL/dtheta1 = 0``.
:func:`node_ew_adjoint_rhs` implements the derived system (``printed=True`` reproduces the
printed one for comparison); it is exactly the generic augmented system of
:mod:`adjointcore.sensitivity` applied to :class:`CoupledField` (``a_y = [a, b]``,
``a_params = c``).

References
----------
L. He, X. Xie, Z. Lin, "Neural ordinary differential equations with envolutionary weights",
PRCV 2019, LNCS 11857, pp. 599-610 (eqs. (4)-(6), Algorithm 1, Sect. 3.2.2).
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

import solvers
from adjointcore.backend import get_array_module
from adjointcore.errors import ShapeError
from adjointcore.layers.base import call_vjp
from adjointcore.sensitivity import check_cotangents

__all__ = ["CoupledLayout", "CoupledField", "CoupledCache", "NodeEWAdjointField",
           "NodeEWGradient", "pack_state", "unpack_state", "node_ew_adjoint_rhs",
           "node_ew_gradient"]


class CoupledLayout(NamedTuple):
    """Where ``x`` and ``theta`` live in the flat coupled state.

    Attributes
    ----------
    x_shape : tuple of int
        Shape of the activation state, e.g. ``(N, d)``.
    n_theta : int
        Length of ``theta`` (``f_layer.n_params``).
    """

    x_shape: tuple
    n_theta: int

    @property
    def n_x(self) -> int:
        """Number of entries of ``x``."""
        return math.prod(self.x_shape)

    @property
    def size(self) -> int:
        """Length of the flat state ``[x.ravel(), theta]``."""
        return self.n_x + self.n_theta


def pack_state(layout: CoupledLayout, x, theta):
    """Flat state ``[x.ravel(), theta]``, shape ``(layout.size,)``.

    Raises
    ------
    ShapeError
        ``x`` or ``theta`` does not match ``layout``.
    """
    if tuple(x.shape) != layout.x_shape:
        raise ShapeError(f"`x` must have shape {layout.x_shape}, got {tuple(x.shape)}.")
    if tuple(theta.shape) != (layout.n_theta,):
        raise ShapeError(f"`theta` must have shape ({layout.n_theta},) (f_layer.n_params), got "
                         f"{tuple(theta.shape)}; pass the flat parameter vector of f.")
    xp = get_array_module(x, theta)
    return xp.concatenate([xp.reshape(x, (-1,)), theta])


def unpack_state(layout: CoupledLayout, y):
    """Views ``(x, theta)`` of a flat state; the inverse of :func:`pack_state`."""
    if tuple(y.shape) != (layout.size,):
        raise ShapeError(f"the coupled state must be flat with {layout.size} entries "
                         f"(x {layout.x_shape} + theta ({layout.n_theta},)), got shape "
                         f"{tuple(y.shape)}; build it with pack_state(layout, x, theta).")
    return y[:layout.n_x].reshape(layout.x_shape), y[layout.n_x:]


def _call(layer, params, x, t):
    if getattr(layer, "time_dependent", False):
        return layer.forward(params, x, t=t)
    return layer.forward(params, x)


class CoupledCache(NamedTuple):
    """What :meth:`CoupledField.vjp` needs: ``theta``, ``theta1`` and both layer caches."""

    theta: Any
    theta1: Any
    f_cache: Any
    g_cache: Any


class CoupledField:
    """The NODE-EW system ``(x, theta)' = (f(x, t, theta), g(theta, t, theta1))`` as a field.

    Parameters
    ----------
    f_layer : layer
        Maps ``x`` of shape ``x_shape`` to the same shape; its parameter vector is ``theta(t)``.
    g_layer : layer or None
        Maps ``(1, n_theta)`` to ``(1, n_theta)`` with parameters ``theta1``. ``None`` means
        ``g = 0`` (a plain neural ODE with constant weights; then ``params`` is ``None`` or a
        length-0 array).
    x_shape : tuple of int
        Shape of the activation state (``(N, d)`` or ``(N, C, H, W)``).

    Notes
    -----
    State: ``y = [x.ravel(), theta]`` (flat, :func:`pack_state`); field parameters: ``theta1``.
    ``vjp`` returns ``y_bar = [(df/dx)^T dx_bar, (df/dtheta)^T dx_bar + (dg/dtheta)^T dth_bar]``
    and ``params_bar = (dg/dtheta1)^T dth_bar``; ``t_bar`` is None.
    """

    def __init__(self, f_layer, g_layer, x_shape):
        for name, layer in (("f_layer", f_layer), ("g_layer", g_layer)):
            if layer is None and name == "g_layer":
                continue
            missing = [a for a in ("forward", "vjp", "n_params") if not hasattr(layer, a)]
            if missing:
                raise TypeError(f"`{name}` must follow the layer protocol; {layer!r} lacks "
                                f"{', '.join(missing)}.")
        if f_layer.n_params == 0:
            raise ValueError(f"`f_layer` {f_layer!r} has no parameters, so there is no theta(t) "
                             f"to evolve; use a layer stack with weights.")
        shape = tuple(int(s) for s in x_shape)
        if not shape or min(shape) < 1:
            raise ShapeError(f"`x_shape` must be a non-empty shape of positive sizes, got "
                             f"{x_shape!r}; e.g. (batch, features).")
        self.f_layer = f_layer
        self.g_layer = g_layer
        self.layout = CoupledLayout(shape, int(f_layer.n_params))

    @property
    def n_params(self) -> int:
        """Length of ``theta1`` (0 when ``g_layer`` is None)."""
        return 0 if self.g_layer is None else int(self.g_layer.n_params)

    def pack(self, x, theta):
        """Flat state from ``x`` (``x_shape``) and ``theta`` (``(n_theta,)``)."""
        return pack_state(self.layout, x, theta)

    def unpack(self, y):
        """``(x, theta)`` views of a flat state."""
        return unpack_state(self.layout, y)

    def init(self, rng, dtype=np.float64):
        """``(theta0, theta1)`` from the layers' initialisers (``theta1`` length 0 if g = 0)."""
        theta0 = self.f_layer.init(rng, dtype)
        theta1 = (np.zeros(0, dtype=dtype) if self.g_layer is None
                  else self.g_layer.init(rng, dtype))
        return theta0, theta1

    def forward(self, t, y, params):
        """``dy = [f(x, t, theta).ravel(), g(theta, t, theta1)]``; returns ``(dy, cache)``."""
        x, theta = self.unpack(y)
        dx, f_cache = _call(self.f_layer, theta, x, t)
        if tuple(dx.shape) != self.layout.x_shape:
            raise ShapeError(f"f_layer must map x {self.layout.x_shape} to the same shape, got "
                             f"{tuple(dx.shape)}; adjust its widths.")
        xp = get_array_module(y)
        if self.g_layer is None:
            dtheta, g_cache = xp.zeros_like(theta), None
        else:
            dtheta, g_cache = _call(self.g_layer, params, theta[None, :], t)
            if tuple(dtheta.shape) != (1, self.layout.n_theta):
                raise ShapeError(f"g_layer must map (1, {self.layout.n_theta}) to the same "
                                 f"shape, got {tuple(dtheta.shape)}.")
        dy = xp.concatenate([xp.reshape(dx, (-1,)), xp.reshape(dtheta, (-1,))])
        return dy, CoupledCache(theta, params, f_cache, g_cache)

    def vjp(self, cache: CoupledCache, dy_bar, need_params: bool = True):
        """Return ``(y_bar, params_bar, None)`` (see the class notes)."""
        dx_bar, dtheta_bar = self.unpack(dy_bar)
        x_bar, theta_bar = call_vjp(self.f_layer, cache.theta, cache.f_cache, dx_bar)
        xp = get_array_module(dy_bar)
        params_bar = None
        if self.g_layer is not None:
            th_bar_g, params_bar = call_vjp(self.g_layer, cache.theta1, cache.g_cache,
                                            dtheta_bar[None, :], need_params)
            theta_bar = theta_bar + th_bar_g[0]
        elif need_params:
            params_bar = xp.zeros(0, dtype=dy_bar.dtype)
        y_bar = xp.concatenate([xp.reshape(x_bar, (-1,)), theta_bar])
        return y_bar, params_bar, None

    def __repr__(self) -> str:
        return (f"CoupledField(f={self.f_layer!r}, g={self.g_layer!r}, "
                f"x_shape={self.layout.x_shape})")


# -- Algorithm 1, corrected ------------------------------------------------------------------------
def node_ew_adjoint_rhs(field: CoupledField, t, x, theta, a, b, theta1, printed: bool = False):
    """Right-hand side of NODE-EW's backward system (Algorithm 1's ``aug_dynamics``).

    Parameters
    ----------
    field : CoupledField
    t : float
    x : ndarray, shape ``field.layout.x_shape``
    theta : ndarray, shape (n_theta,)
    a : ndarray, shape of ``x``
        ``dL/dx(t)``.
    b : ndarray, shape (n_theta,)
        ``dL/dtheta(t)``.
    theta1 : ndarray, shape (n_params,) or None
    printed : bool
        Drop the coupling term ``-(df/dtheta)^T a`` from ``b'`` as the paper's eq. (5) does (for
        comparison only: it gives ``b = 0`` and wrong ``theta0``/``theta1`` gradients).

    Returns
    -------
    dx, dtheta, da, db, dc : ndarrays
        ``f``, ``g``, ``-(df/dx)^T a``, ``-(df/dtheta)^T a - (dg/dtheta)^T b`` and
        ``-(dg/dtheta1)^T b`` (``dc`` has length 0 when ``g = 0``).
    """
    xp = get_array_module(x, theta)
    f, g = field.f_layer, field.g_layer
    dx, f_cache = _call(f, theta, x, t)
    a_x, a_theta = call_vjp(f, theta, f_cache, a)
    db = xp.zeros_like(theta) if printed else -a_theta
    if g is None:
        return dx, xp.zeros_like(theta), -a_x, db, xp.zeros(0, dtype=x.dtype)
    dtheta, g_cache = _call(g, theta1, theta[None, :], t)
    b_theta, b_theta1 = call_vjp(g, theta1, g_cache, b[None, :])
    return dx, dtheta[0], -a_x, db - b_theta[0], -b_theta1


class NodeEWAdjointField:
    """Algorithm 1's backward system on the flat state ``s = [x, theta, a, b, c]``.

    ``forward(t, s, theta1)`` returns ``(ds, None)`` with :func:`node_ew_adjoint_rhs`
    (``printed`` selects the paper's eq. (5) without the coupling term). No VJP.
    """

    def __init__(self, field: CoupledField, printed: bool = False):
        self.field = field
        self.printed = bool(printed)
        lay = field.layout
        self.sizes = (lay.n_x, lay.n_theta, lay.n_x, lay.n_theta, field.n_params)
        self.bounds = tuple(np.cumsum((0,) + self.sizes).tolist())   # configuration, not state

    def split(self, s):
        """Views ``(x, theta, a, b, c)`` of a flat backward state."""
        lay = self.field.layout
        x, th, a, b, c = (s[lo:hi] for lo, hi in zip(self.bounds[:-1], self.bounds[1:]))
        return x.reshape(lay.x_shape), th, a.reshape(lay.x_shape), b, c

    def forward(self, t, s, theta1):
        x, theta, a, b, _ = self.split(s)
        parts = node_ew_adjoint_rhs(self.field, t, x, theta, a, b, theta1, self.printed)
        xp = get_array_module(s)
        return xp.concatenate([xp.reshape(p, (-1,)) for p in parts]), None

    def vjp(self, cache, ds_bar, need_params=True):
        raise NotImplementedError("NodeEWAdjointField has no VJP (second-order adjoints).")


class NodeEWGradient(NamedTuple):
    """Result of :func:`node_ew_gradient`: ``dL/dx0``, ``dL/dtheta0``, ``dL/dtheta1``, ``nfe``,
    and the reconstructed ``x(0)``, ``theta(0)`` of the backward solve."""

    x0_bar: Any
    theta0_bar: Any
    theta1_bar: Any
    nfe: int
    x0_reconstructed: Any
    theta0_reconstructed: Any


def node_ew_gradient(field: CoupledField, x0, theta0, theta1, t_obs, x_bars, *, t0=0.0,
                     method="dopri5", printed=False, **solve_options) -> NodeEWGradient:
    """Algorithm 1 (backsolve) for ``L = sum_k l_k(x(t_obs[k]))``, with the coupling term.

    The forward system is solved to ``t_obs[-1]``; Algorithm 1's state ``[x, theta, a, b, c]``
    is then integrated backwards interval by interval, ``a`` jumping by ``x_bars[k]`` at each
    observation time (``x`` and ``theta`` restarted from the forward values there).

    Parameters
    ----------
    field : CoupledField
    x0 : ndarray, shape ``x_shape``;  theta0 : ndarray, (n_theta,);  theta1 : ndarray or None
    t_obs : array_like, shape (K,), increasing, all > ``t0``
    x_bars : ndarray, shape (K, *x_shape)
        Cotangents ``dl_k/dx(t_obs[k])``.
    method : str
    printed : bool
        Use the printed eq. (5) (no coupling term) instead of the derived system.
    **solve_options
        Passed to every :func:`solvers.solve`: ``rtol``/``atol`` (adaptive), or ``steps``
        (fixed steps of the forward solve and of each backward interval).

    Returns
    -------
    NodeEWGradient
    """
    t_obs = np.atleast_1d(np.asarray(t_obs, dtype=np.float64))
    if t_obs.ndim != 1 or np.any(np.diff(t_obs) <= 0) or t_obs[0] <= t0:
        raise ValueError(f"`t_obs` must be increasing and after t0={t0!r}, got {t_obs}.")
    lay = field.layout
    y0 = field.pack(x0, theta0)
    x_bars = check_cotangents("x_bars", x_bars, y0, (t_obs.size, *lay.x_shape),
                              fix="Stack one cotangent dl_k/dx per observation time.")
    fwd = solvers.solve(field, y0, (float(t0), float(t_obs[-1])), theta1, method=method,
                        t_eval=t_obs, **solve_options)
    xp = get_array_module(y0)
    back_field = NodeEWAdjointField(field, printed)
    knots = [float(t0), *t_obs.tolist()]
    x, theta = field.unpack(fwd.ys[-1])
    a = xp.array(x_bars[-1], copy=True)
    b = xp.zeros_like(theta)
    c = xp.zeros(field.n_params, dtype=y0.dtype)
    nfe = 0
    for k in range(len(knots) - 1, 0, -1):
        s = xp.concatenate([xp.reshape(v, (-1,)) for v in (x, theta, a, b, c)])
        back = solvers.solve(back_field, s, (knots[k], knots[k - 1]), theta1, method=method,
                             dense_output=False, **solve_options)
        nfe += int(back.stats.nfe)
        x, theta, a, b, c = back_field.split(back.ys[-1])
        if k - 1 > 0:
            a = a + x_bars[k - 2]
            x, theta = field.unpack(fwd.ys[k - 2])
    return NodeEWGradient(xp.array(a, copy=True), xp.array(b, copy=True),
                          xp.array(c, copy=True), nfe, x, theta)
