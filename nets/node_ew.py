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
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike, DTypeLike

from adjointcore.backend import Array, get_array_module
from adjointcore.errors import ShapeError
from adjointcore.layers.binding import call_vjp
from adjointcore.sensitivity import check_cotangents, trajectory_gradient
from solvers import Work

__all__ = ["CoupledLayout", "CoupledField", "CoupledCache", "NodeEWGradient", "pack_state",
           "unpack_state", "node_ew_adjoint_rhs", "node_ew_gradient", "printed_eq5"]


class CoupledLayout(NamedTuple):
    """Where ``x`` and ``theta`` live in the flat coupled state.

    Attributes
    ----------
    x_shape : tuple of int
        Shape of the activation state, e.g. ``(N, d)``.
    n_theta : int
        Length of ``theta`` (``f_layer.n_params``).
    """

    x_shape: tuple[int, ...]
    n_theta: int

    @property
    def n_x(self) -> int:
        """Number of entries of ``x``."""
        return math.prod(self.x_shape)

    @property
    def size(self) -> int:
        """Length of the flat state ``[x.ravel(), theta]``."""
        return self.n_x + self.n_theta


def pack_state(layout: CoupledLayout, x: Array, theta: Array) -> Array:
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


def unpack_state(layout: CoupledLayout, y: Array) -> tuple[Array, Array]:
    """Views ``(x, theta)`` of a flat state; the inverse of :func:`pack_state`."""
    if tuple(y.shape) != (layout.size,):
        raise ShapeError(f"the coupled state must be flat with {layout.size} entries "
                         f"(x {layout.x_shape} + theta ({layout.n_theta},)), got shape "
                         f"{tuple(y.shape)}; build it with pack_state(layout, x, theta).")
    return y[:layout.n_x].reshape(layout.x_shape), y[layout.n_x:]


def _call(layer: Any, params: Array | None, x: Array, t: Any) -> tuple[Array, Any]:
    if getattr(layer, "time_dependent", False):
        return layer.forward(params, x, t=t)
    return layer.forward(params, x)


class CoupledCache(NamedTuple):
    """What :meth:`CoupledField.vjp` needs: ``theta``, ``theta1`` and both layer caches."""

    theta: Array
    theta1: Array | None
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
        Shape of the activation state (``(N, d)`` or ``(N, C, H, W)``). A leading ``None``
        (``(None, C, H, W)``) leaves the batch free: each call takes it from its own state
        (``(y.size - n_theta) / prod(x_shape[1:])``), so training and evaluation batches of
        different sizes share one field.
    coupling : bool
        False drops ``(df/dtheta)^T dx_bar`` from the VJP's ``theta`` cotangent: the seed's
        printed eq. (5), as a field (see :func:`printed_eq5`); for comparison only.

    Notes
    -----
    State: ``y = [x.ravel(), theta]`` (flat, :func:`pack_state`); field parameters: ``theta1``.
    ``vjp`` returns ``y_bar = [(df/dx)^T dx_bar, (df/dtheta)^T dx_bar + (dg/dtheta)^T dth_bar]``
    and ``params_bar = (dg/dtheta1)^T dth_bar``; ``t_bar`` is None.
    """

    def __init__(self, f_layer: Any, g_layer: Any, x_shape: Sequence[int],
                 coupling: bool = True) -> None:
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
        free = len(x_shape) > 0 and x_shape[0] is None
        sizes = tuple(int(s) for s in x_shape[1 if free else 0:])
        if (not sizes and not free) or (sizes and min(sizes) < 1):
            raise ShapeError(f"`x_shape` must be a non-empty shape of positive sizes (a leading "
                             f"None leaves the batch free), got {x_shape!r}; e.g. (batch, "
                             f"features) or (None, features).")
        self.f_layer = f_layer
        self.g_layer = g_layer
        self.coupling = bool(coupling)
        shape: tuple = ((None,) if free else ()) + sizes
        #: The layout; with a free batch its ``x_shape`` starts with None (see :meth:`layout_of`).
        self.layout = CoupledLayout(shape, int(f_layer.n_params))

    def layout_of(self, size: int) -> CoupledLayout:
        """The layout of a flat state of ``size`` entries: :attr:`layout` for a fixed batch, the
        batch ``(size - n_theta) / prod(x_shape[1:])`` for a free one.

        Raises
        ------
        ShapeError
            A free batch that ``size`` does not give as a positive integer.
        """
        lay = self.layout
        if lay.x_shape[:1] != (None,):
            return lay
        sample = lay.x_shape[1:]
        n_x, per = size - lay.n_theta, math.prod(sample)
        if n_x < per or n_x % per:
            raise ShapeError(f"a coupled state of {size} entries does not hold theta "
                             f"({lay.n_theta},) and a whole batch of samples {sample}; build it "
                             f"with pack(x, theta).")
        return CoupledLayout((n_x // per, *sample), lay.n_theta)

    def _layout_of_x(self, x_shape: tuple) -> CoupledLayout:
        """The layout whose activations have shape ``x_shape`` (a free batch taken from it)."""
        lay = self.layout
        if lay.x_shape[:1] != (None,) or not x_shape:
            return lay
        return CoupledLayout((x_shape[0], *lay.x_shape[1:]), lay.n_theta)

    @property
    def n_params(self) -> int:
        """Length of ``theta1`` (0 when ``g_layer`` is None)."""
        return 0 if self.g_layer is None else int(self.g_layer.n_params)

    def pack(self, x: Array, theta: Array) -> Array:
        """Flat state from ``x`` (``x_shape``) and ``theta`` (``(n_theta,)``)."""
        return pack_state(self._layout_of_x(tuple(x.shape)), x, theta)

    def unpack(self, y: Array) -> tuple[Array, Array]:
        """``(x, theta)`` views of a flat state."""
        return unpack_state(self.layout_of(int(y.size)), y)

    def init(self, rng: np.random.Generator, dtype: DTypeLike = np.float64) -> tuple[Array, Array]:
        """``(theta0, theta1)`` from the layers' initialisers (``theta1`` length 0 if g = 0)."""
        theta0 = self.f_layer.init(rng, dtype)
        theta1 = (np.zeros(0, dtype=dtype) if self.g_layer is None
                  else self.g_layer.init(rng, dtype))
        return theta0, theta1

    # -- in an ODEBlock: x in, x(T) out, block parameters [theta0, theta1] ---------------------
    @property
    def n_state_params(self) -> int:
        """``theta0`` is the leading part of an :class:`~nets.ODEBlock`'s parameters."""
        return self.layout.n_theta

    def initial_state(self, x: Array, theta0: Array) -> Array:
        """The block's initial state ``[x.ravel(), theta0]``."""
        return self.pack(x, theta0)

    def initial_state_vjp(self, y0_bar: Array) -> tuple[Array, Array]:
        """``(x_bar, theta0_bar)`` from the initial state's cotangent."""
        return self.unpack(y0_bar)

    def output(self, y1: Array) -> Array:
        """The block's output: ``x(T)``."""
        return self.unpack(y1)[0]

    def output_vjp(self, x_bar: Array) -> Array:
        """The final state's cotangent ``[x_bar, 0]``."""
        xp = get_array_module(x_bar)
        return self.pack(x_bar, xp.zeros(self.layout.n_theta, dtype=x_bar.dtype))

    def forward(self, t: Any, y: Array, params: Array | None) -> tuple[Array, CoupledCache]:
        """``dy = [f(x, t, theta).ravel(), g(theta, t, theta1)]``; returns ``(dy, cache)``."""
        x, theta = self.unpack(y)
        dx, f_cache = _call(self.f_layer, theta, x, t)
        if dx.shape != x.shape:
            raise ShapeError(f"f_layer must map x {tuple(x.shape)} to the same shape, got "
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

    def vjp(self, cache: CoupledCache, dy_bar: Array,
            need_params: bool = True) -> tuple[Array, Array | None, None]:
        """Return ``(y_bar, params_bar, None)`` (see the class notes)."""
        dx_bar, dtheta_bar = self.unpack(dy_bar)
        x_bar, theta_bar = call_vjp(self.f_layer, cache.theta, cache.f_cache, dx_bar,
                                    self.coupling)
        xp = get_array_module(dy_bar)
        params_bar = None
        if self.g_layer is not None:
            th_bar_g, params_bar = call_vjp(self.g_layer, cache.theta1, cache.g_cache,
                                            dtheta_bar[None, :], need_params)
            theta_bar = th_bar_g[0] if theta_bar is None else theta_bar + th_bar_g[0]
        elif need_params:
            params_bar = xp.zeros(0, dtype=dy_bar.dtype)
        if theta_bar is None:                       # no coupling and g = 0
            theta_bar = xp.zeros(self.layout.n_theta, dtype=dy_bar.dtype)
        y_bar = xp.concatenate([xp.reshape(x_bar, (-1,)), theta_bar])
        return y_bar, params_bar, None

    def __repr__(self) -> str:
        extra = "" if self.coupling else ", coupling=False"
        return (f"CoupledField(f={self.f_layer!r}, g={self.g_layer!r}, "
                f"x_shape={self.layout.x_shape}{extra})")


def printed_eq5(field: CoupledField) -> CoupledField:
    """``field`` with the VJP of the paper's printed eq. (5): no coupling term.

    Passed to a continuous adjoint it integrates ``b' = -(dg/dtheta)^T b`` instead of
    ``b' = -(df/dtheta)^T a - (dg/dtheta)^T b``; since ``b(T) = 0``, ``b`` stays 0 and the
    ``theta0``/``theta1`` gradients come out 0 (for comparison with the derived system only).
    """
    return CoupledField(field.f_layer, field.g_layer, field.layout.x_shape, coupling=False)


# -- Algorithm 1, corrected ------------------------------------------------------------------------
def node_ew_adjoint_rhs(field: CoupledField, t: Any, x: Array, theta: Array, a: Array, b: Array,
                        theta1: Array | None,
                        printed: bool = False) -> tuple[Array, Array, Array, Array, Array]:
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
    # need_params=True: an array
    db = xp.zeros_like(theta) if printed else -a_theta  # type: ignore[operator]
    if g is None:
        return dx, xp.zeros_like(theta), -a_x, db, xp.zeros(0, dtype=x.dtype)
    dtheta, g_cache = _call(g, theta1, theta[None, :], t)
    b_theta, b_theta1 = call_vjp(g, theta1, g_cache, b[None, :])
    # need_params=True: an array
    return dx, dtheta[0], -a_x, db - b_theta[0], -b_theta1  # type: ignore[operator]


class NodeEWGradient(NamedTuple):
    """Result of :func:`node_ew_gradient`: ``dL/dx0``, ``dL/dtheta0``, ``dL/dtheta1``, the
    work (:class:`solvers.Work`), and the reconstructed ``x(0)``, ``theta(0)`` of the backward
    solve."""

    x0_bar: Array
    theta0_bar: Array
    theta1_bar: Array
    stats: Work
    x0_reconstructed: Array
    theta0_reconstructed: Array


def node_ew_gradient(field: CoupledField, x0: Array, theta0: Array, theta1: Array | None,
                     t_obs: ArrayLike, x_bars: Array, *, t0: float = 0.0, method: str = "dopri5",
                     printed: bool = False, **solve_options: Any) -> NodeEWGradient:
    """Algorithm 1 (backsolve) for ``L = sum_k l_k(x(t_obs[k]))``, with the coupling term.

    The continuous backsolve adjoint of :class:`CoupledField`
    (:func:`adjointcore.sensitivity.trajectory_gradient` with ``gradient="backsolve"``): its
    backward state ``[x, theta, a, b, c]`` is Algorithm 1's, ``a`` jumps by ``x_bars[k]`` at
    each observation time and ``x``, ``theta`` restart from the forward values there.

    Parameters
    ----------
    field : CoupledField
    x0 : ndarray, shape ``x_shape``;  theta0 : ndarray, (n_theta,);  theta1 : ndarray or None
    t_obs : array_like, shape (K,), increasing, all > ``t0``
    x_bars : ndarray, shape ``(K, *x_shape)``
        Cotangents ``dl_k/dx(t_obs[k])``.
    method : str
    printed : bool
        Use the printed eq. (5) (no coupling term, :func:`printed_eq5`) instead of the derived
        system.
    **solve_options
        ``rtol``/``atol`` (adaptive), or ``steps`` (fixed steps of the forward solve and of
        each backward interval).

    Returns
    -------
    NodeEWGradient
    """
    t_obs = np.atleast_1d(np.asarray(t_obs, dtype=np.float64))
    if t_obs.ndim != 1 or np.any(np.diff(t_obs) <= 0) or t_obs[0] <= t0:
        raise ValueError(f"`t_obs` must be increasing and after t0={t0!r}, got {t_obs}.")
    y0 = field.pack(x0, theta0)
    lay = field.layout_of(int(y0.size))
    x_bars = check_cotangents("x_bars", x_bars, y0, (t_obs.size, *lay.x_shape),
                              fix="Stack one cotangent dl_k/dx per observation time.")
    xp = get_array_module(y0)
    y_bars = xp.zeros((t_obs.size, lay.size), dtype=y0.dtype)
    y_bars[:, :lay.n_x] = xp.reshape(x_bars, (t_obs.size, -1))
    g = trajectory_gradient(printed_eq5(field) if printed else field, y0, theta1, t_obs, y_bars,
                            t0=t0, gradient="backsolve", method=method, **solve_options)
    x0_bar, theta0_bar = field.unpack(g.y0_bar)
    x_rec, theta_rec = field.unpack(g.y0_reconstructed)
    theta1_bar = g.params_bar if theta1 is not None else xp.zeros(0, dtype=y0.dtype)
    return NodeEWGradient(x0_bar, theta0_bar, theta1_bar, g.stats, x_rec, theta_rec)
