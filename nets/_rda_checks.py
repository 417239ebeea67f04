"""Argument checks and shape helpers of the RDA step of :mod:`nets._rda`.

Holds the table of nonlinearities :data:`SIGMAS` and its lookup, the checks of the step size,
the grid spacing and the coefficients ``tau`` (diffusion, ``>= 0``), ``v`` (advection, last axis
2) and ``rho`` (reaction) of ANODEV2's reaction-diffusion-advection PDE (Zhang et al. [1]_,
eq. (8)), and the reduction of a gradient to the shape a coefficient was broadcast from. The
step, its VJP and the evolution of a flat weight vector are in :mod:`nets._rda`, whose notes
give the wavenumber convention and the derivation.

References
----------
.. [1] T. Zhang, Z. Yao, A. Gholami, K. Keutzer, J. Gonzalez, G. Biros, M. Mahoney,
   "ANODEV2: A coupled neural ODE framework", NeurIPS 2019, arXiv:1906.04596.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import DTypeLike, NDArray

from adjointcore.backend import Array, to_host
from adjointcore.errors import ParameterError, ShapeError
from adjointcore.layers import ELU, ReLU, Sigmoid, Softplus, Tanh

__all__ = ["SIGMAS"]

#: Nonlinearities ``sigma`` by name (``None``: the identity, eq. (12) without sigma).
SIGMAS = {"identity": None, "tanh": Tanh(), "sigmoid": Sigmoid(), "relu": ReLU(),
          "softplus": Softplus(), "elu": ELU()}


# -- helpers --------------------------------------------------------------------------------------
def _activation(sigma: str) -> Any:
    if not isinstance(sigma, str) or sigma not in SIGMAS:
        raise ValueError(f"`sigma` must be one of {sorted(SIGMAS)}, got {sigma!r}; the paper "
                         f"uses 'tanh', and 'identity' gives the exact linear step (eq. (12)).")
    return SIGMAS[sigma]


def _check_dt(dt: Any) -> float:
    if isinstance(dt, bool) or not isinstance(dt, (int, float, np.integer, np.floating)) \
            or not math.isfinite(dt):
        raise ValueError(f"`dt` must be a finite real step size, got {dt!r}.")
    return float(dt)


def _check_spacing(spacing: Any) -> float:
    if isinstance(spacing, bool) or not isinstance(spacing, (int, float, np.integer,
                                                             np.floating)) \
            or not math.isfinite(spacing) or spacing <= 0:
        raise ValueError(f"`spacing` must be a positive finite grid spacing, got {spacing!r}; "
                         f"use 1.0 for the pixel grid of a kernel.")
    return float(spacing)


def _coefficients(tau: Any, v: Any, rho: Any, xp: Any, dtype: DTypeLike,
                  batch: Sequence[int] | None,
                  check_values: bool = True) -> tuple[Array, Array, Array]:
    """Validate ``tau``, ``v``, ``rho``; return them as backend arrays (``v`` last axis 2).

    Shapes are checked from metadata. Values (real, finite, ``tau >= 0``) are checked on the
    host for host inputs, and with one read for device arrays, which stay on the device;
    ``check_values=False`` skips the value checks (already done by the caller).
    """
    on_device = [getattr(value, "dtype", None) is not None and type(value) is not np.ndarray
                 and not np.isscalar(value) for value in (tau, v, rho)]
    hosts: tuple[Any, ...]            # host arrays, or (device) their shapes only
    if any(on_device):
        arrays = tuple(xp.asarray(a, dtype=dtype) for a in (tau, v, rho))
        for name, value in zip(("tau", "v", "rho"), (tau, v, rho), strict=True):
            if getattr(value, "dtype", np.dtype(float)).kind not in "fiu":
                raise ParameterError(f"`{name}` must be real, got dtype {value.dtype}.")
        if check_values:
            tau_a, v_a, rho_a = arrays
            ok = xp.isfinite(tau_a).all() & xp.isfinite(v_a).all() & \
                xp.isfinite(rho_a).all() & (tau_a >= 0).all()
            if not bool(ok):                  # one read; the message may read more
                _check_host_values(*(to_host(a) for a in arrays))
        hosts = tuple(_ShapeOnly(a.shape) for a in arrays)
    else:
        hosts = tuple(np.asarray(to_host(value)) for value in (tau, v, rho))
        for name, host, value in zip(("tau", "v", "rho"), hosts, (tau, v, rho), strict=True):
            if host.dtype.kind not in "fiu":
                raise ParameterError(f"`{name}` must be real, got dtype {host.dtype} "
                                     f"({value!r}).")
        if check_values:
            _check_host_values(*hosts)
        arrays = None
    # three shapes: tau, v, rho
    _check_coefficient_shapes(*(h.shape for h in hosts), batch)  # type: ignore[call-arg]
    return arrays if arrays is not None else tuple(xp.asarray(a, dtype=dtype) for a in hosts)


class _ShapeOnly(NamedTuple):
    shape: tuple[int, ...]


def _check_host_values(tau_h: NDArray[Any], v_h: NDArray[Any], rho_h: NDArray[Any]) -> None:
    for name, host in (("tau", tau_h), ("v", v_h), ("rho", rho_h)):
        if not np.all(np.isfinite(host)):
            raise ParameterError(f"`{name}` must be finite, got {host!r}.")
    if np.any(tau_h < 0):
        raise ParameterError(f"`tau` (diffusion) must be >= 0, got min {tau_h.min():.3g}; "
                             f"negative diffusion is the ill-posed backward heat equation. "
                             f"Project it with np.maximum(tau, 0) or parameterise tau = "
                             f"softplus(theta).")


def _check_coefficient_shapes(s_tau: tuple[int, ...], s_v: tuple[int, ...], s_rho: tuple[int, ...],
                              batch: Sequence[int] | None) -> None:
    if len(s_v) == 0 or s_v[-1] != 2:
        raise ShapeError(f"`v` must have a last axis of length 2 (v0 along axis -2, v1 along "
                         f"axis -1), got shape {s_v}; e.g. v=(0.5, -1.0).")
    if batch is not None:
        for name, shape in (("tau", s_tau), ("v", s_v[:-1]), ("rho", s_rho)):
            try:
                if np.broadcast_shapes(shape, tuple(batch)) != tuple(batch):
                    raise ValueError
            except ValueError:
                raise ShapeError(f"`{name}` of shape {shape} does not broadcast to the batch "
                                 f"shape {tuple(batch)} of w (its axes before the last two); "
                                 f"use a scalar or e.g. shape (out, 1) per output channel.") \
                    from None


def _sum_to_shape(g: Array, shape: Sequence[int]) -> Array:
    """Sum ``g`` over the axes that broadcasting added to an array of ``shape``."""
    shape = tuple(shape)
    lead = g.ndim - len(shape)
    if lead:
        g = g.sum(axis=tuple(range(lead)))
    # strict=False keeps the historical pairing when g has fewer axes than shape
    axes = tuple(i for i, (s, n) in enumerate(zip(shape, g.shape, strict=False))
                 if s == 1 and n != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g.reshape(shape)
