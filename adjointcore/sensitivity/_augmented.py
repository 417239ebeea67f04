"""The augmented backward system of the continuous adjoint, as a vector field.

Derivation (optimise-then-discretise)
-------------------------------------
Let ``y' = f(t, y, theta)`` on ``[t0, t1]`` and ``L = l(y(t1))``. With the Lagrangian
``L - int_{t0}^{t1} a(t)^T (y' - f) dt``, integration by parts and stationarity in ``y(t)`` give
the adjoint ``a(t) = dL/dy(t)``::

    a(t1) = dl/dy(t1),        a' = -(df/dy)^T a,                       (backwards from t1)
    dL/dy0 = a(t0),           dL/dtheta = int_{t0}^{t1} (df/dtheta)^T a dt.

The quadrature is an extra channel ``a_params`` with ``a_params(t1) = 0`` and
``a_params' = -(df/dtheta)^T a``, so that ``a_params(t0) = dL/dtheta`` when the system is solved
backwards in time. Both right-hand sides are one vector-Jacobian product of ``f`` with ``a``:
one field ``forward`` plus one field ``vjp`` per evaluation.

Two variants differ in where ``y(t)`` comes from:

* ``"backsolve"`` (Chen et al. 2018): state ``(y, a, a_params)``; ``y`` is reconstructed by
  integrating ``y' = f`` backwards alongside the adjoint.
* ``"interpolated"`` (CVODES style, Hindmarsh et al. 2005): state ``(a, a_params)``; ``y(t)`` is
  read from the dense output of the forward solve, so nothing is integrated backwards in ``y``.

The state is structured at the boundary (:func:`pack_augmented`, :func:`unpack_augmented` for any
``y`` shape, e.g. ``(N, d)``) and one flat 1-D array in the kernels, so any solver integrates it.

References
----------
R. T. Q. Chen, Y. Rubanova, J. Bettencourt, D. Duvenaud, "Neural ordinary differential
equations", NeurIPS 2018, Appendix B.
P. Kidger, R. T. Q. Chen, T. Lyons, "'Hey, that's not an ODE': faster ODE adjoints via
seminorms", ICML 2021.
A. C. Hindmarsh et al., "SUNDIALS: suite of nonlinear and differential/algebraic equation
solvers", ACM TOMS 31(3), 2005 (CVODES adjoint module).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Callable, NamedTuple, NoReturn, Optional

from solvers import field_kernel, rms_norm

from ..backend import Array, get_array_module

__all__ = ["VARIANTS", "AugmentedLayout", "AugmentedState", "AugmentedField", "SemiNorm",
           "augmented_layout", "pack_augmented", "unpack_augmented", "adjoint_rhs"]

VARIANTS = ("interpolated", "backsolve")


class AugmentedLayout(NamedTuple):
    """Where each block of the flat augmented state lives.

    Attributes
    ----------
    y_shape : tuple of int
        Shape of the primal state ``y``.
    n_params : int
        Length of the flat parameter vector (0 for a parameter-free field).
    with_state : bool
        True for backsolve (``y`` is carried in the state), False for the interpolated variant.
    """

    y_shape: tuple[int, ...]
    n_params: int
    with_state: bool

    @property
    def n_y(self) -> int:
        """Number of entries of ``y`` (and of ``a``)."""
        return math.prod(self.y_shape)

    @property
    def n_error(self) -> int:
        """Length of the leading block a seminorm measures: ``y`` and ``a``, not ``a_params``."""
        return (2 if self.with_state else 1) * self.n_y

    @property
    def size(self) -> int:
        """Length of the flat augmented state."""
        return self.n_error + self.n_params


class AugmentedState(NamedTuple):
    """Structured view of the augmented state; ``y`` is None for the interpolated variant."""

    y: Array | None
    a: Array
    a_params: Array


def augmented_layout(y_shape: Sequence[int], n_params: int, variant: str) -> AugmentedLayout:
    """Build the layout for ``variant`` in :data:`VARIANTS`.

    Raises
    ------
    ValueError
        Unknown ``variant`` or negative ``n_params``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"`variant` must be one of {VARIANTS}, got {variant!r}.")
    if int(n_params) < 0:
        raise ValueError(f"`n_params` must be >= 0, got {n_params!r}.")
    return AugmentedLayout(tuple(int(s) for s in y_shape), int(n_params), variant == "backsolve")


def pack_augmented(layout: AugmentedLayout, y: Array | None, a: Array,
                   a_params: Array | None) -> Array:
    """Concatenate ``(y, a, a_params)`` (``y`` ignored without state) into one flat array.

    Parameters
    ----------
    layout : AugmentedLayout
    y, a : ndarray, shape ``layout.y_shape``
    a_params : ndarray, shape (n_params,) or None when ``n_params == 0``

    Returns
    -------
    z : ndarray, shape (layout.size,)
    """
    xp = get_array_module(a, y, a_params)
    blocks = [xp.reshape(y, (-1,))] if layout.with_state else []
    blocks.append(xp.reshape(a, (-1,)))
    if layout.n_params:
        blocks.append(xp.reshape(a_params, (-1,)))
    return xp.concatenate(blocks)


def unpack_augmented(layout: AugmentedLayout, z: Array) -> AugmentedState:
    """Split a flat state into views ``(y, a, a_params)``; the inverse of :func:`pack_augmented`.

    ``y`` is None for the interpolated layout; ``a_params`` has length 0 for ``n_params == 0``.
    """
    n = layout.n_y
    offset = n if layout.with_state else 0
    y = z[:n].reshape(layout.y_shape) if layout.with_state else None
    a = z[offset:offset + n].reshape(layout.y_shape)
    return AugmentedState(y, a, z[offset + n:])


def adjoint_rhs(field: Any, t: float, y: Array, a: Array, params: Array | None, da_out: Array,
                da_params_out: Array | None = None) -> Array:
    """Right-hand side of the adjoint system at ``(t, y)``: one forward and one VJP of ``field``.

    Parameters
    ----------
    field : vector field or :class:`solvers.FieldKernel`
    t : float
    y, a : ndarray, shape ``y_shape``
    params : ndarray or None
    da_out : ndarray, ``y.size`` elements
        Receives ``-(df/dy)^T a`` (flat).
    da_params_out : ndarray, shape (n_params,), optional
        Receives ``-(df/dparams)^T a``; None skips the parameter cotangent.

    Returns
    -------
    dy : ndarray, shape of ``y``
        ``f(t, y, params)``.
    """
    kernel = field_kernel(field)
    dy, cache = kernel.forward(t, y, params)
    y_bar = kernel.vjp_into(cache, a, da_params_out)
    xp = get_array_module(da_out)
    xp.negative(y_bar.reshape(-1), out=da_out)
    if da_params_out is not None:
        xp.negative(da_params_out, out=da_params_out)
    return dy


class AugmentedField:
    """The backward adjoint system as a vector field on the flat augmented state.

    Parameters
    ----------
    field : vector field
        ``forward(t, y, params) -> (dy, cache)``, ``vjp(cache, dy_bar, need_params) -> (y_bar,
        params_bar, t_bar)``.
    layout : AugmentedLayout
        From :func:`augmented_layout`; ``layout.with_state`` selects backsolve.
    trajectory : callable, optional
        ``trajectory(t) -> y(t)`` (e.g. the forward ``Solution.sol``); required for the
        interpolated variant and unused by backsolve.

    Notes
    -----
    ``forward(t, z, params)`` returns ``(dz, None)`` where ``dz`` is the time derivative of the
    augmented state (``(f, -(df/dy)^T a, -(df/dparams)^T a)``, the ``f`` block only with state);
    solving it from ``t1`` down to ``t0`` gives ``a(t0) = dL/dy0`` and
    ``a_params(t0) = dL/dparams``. ``vjp`` (second-order adjoints) is not implemented.
    """

    def __init__(self, field: Any, layout: AugmentedLayout,
                 trajectory: Optional[Callable] = None) -> None:
        for attr in ("forward", "vjp"):
            if not callable(getattr(field, attr, None)):
                raise TypeError(f"`field` must follow the vector-field protocol (forward, vjp); "
                                f"{field!r} lacks `{attr}`.")
        if not layout.with_state and trajectory is None:
            raise ValueError("the interpolated adjoint needs `trajectory` (t -> y(t)), e.g. the "
                             "forward Solution's dense output `solution.sol`.")
        self.field = field
        self.layout = layout
        self.trajectory = trajectory
        self._kernel = field_kernel(field)    # per adjoint call: checked once, then unchecked

    @property
    def variant(self) -> str:
        """``"backsolve"`` or ``"interpolated"``."""
        return "backsolve" if self.layout.with_state else "interpolated"

    def forward(self, t: float, z: Array, params: Array | None) -> tuple[Array, None]:
        """Evaluate the augmented dynamics; returns ``(dz, None)``."""
        return self.evaluate(t, z, params), None

    def evaluate(self, t: float, z: Array, params: Array | None) -> Array:
        """The augmented dynamics ``dz``: ``f`` (with state), ``-(df/dy)^T a`` and
        ``-(df/dparams)^T a`` written straight into one new flat array (no packing)."""
        layout = self.layout
        n = layout.n_y
        offset = n if layout.with_state else 0
        a = z[offset:offset + n].reshape(layout.y_shape)
        if layout.with_state:
            y = z[:n].reshape(layout.y_shape)
        else:
            # given for the interpolated variant
            y = self.trajectory(t).reshape(layout.y_shape)  # type: ignore[misc]
        dz = get_array_module(z).empty(z.shape, dtype=z.dtype)
        dy = adjoint_rhs(self._kernel, t, y, a, params, dz[offset:offset + n],
                         dz[offset + n:] if layout.n_params else None)
        if layout.with_state:
            dz[:n] = dy.reshape(-1)
        return dz

    def vjp(self, cache: Any, dz_bar: Array, need_params: bool = True) -> NoReturn:
        """Not implemented: differentiating the adjoint system (second order) is out of scope."""
        raise NotImplementedError("AugmentedField has no VJP (second-order adjoints are not "
                                  "implemented); differentiate the discrete solve instead.")

    def __repr__(self) -> str:
        return f"AugmentedField({self.field!r}, variant={self.variant!r})"


class SemiNorm:
    """RMS of the leading ``n_error`` entries of a scaled error; the rest are ignored.

    Passed as ``norm=`` to the backward solve, it leaves the ``a_params`` quadrature channels out
    of step acceptance: their error never feeds back into the dynamics (Kidger, Chen & Lyons 2021).
    The RMS is :func:`solvers.rms_norm` (overflow-safe: huge entries give a large finite norm).

    Parameters
    ----------
    n_error : int
        Number of leading entries of the flat state that are measured (``layout.n_error``).
    """

    def __init__(self, n_error: int) -> None:
        if int(n_error) < 1:
            raise ValueError(f"`n_error` must be >= 1, got {n_error!r}.")
        self.n_error = int(n_error)

    def __call__(self, scaled_err: Array) -> float:
        xp = get_array_module(scaled_err)
        return rms_norm(xp.reshape(scaled_err, (-1,))[:self.n_error])

    def on_device(self, scaled_err: Array) -> Array:
        """The same norm as a 0-d device array (no transfer; see ``solvers.rms_norm``)."""
        xp = get_array_module(scaled_err)
        # a function attribute (solvers)
        return rms_norm.on_device(xp.reshape(scaled_err, (-1,))[:self.n_error])  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        return f"SemiNorm(n_error={self.n_error})"
