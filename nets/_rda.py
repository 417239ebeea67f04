"""Reaction-diffusion-advection (RDA) step on 2-D kernels, exact in Fourier space, and its VJP.

The PDE of ANODEV2's weight network (Zhang et al. [1]_, eq. (8)) acts on each kernel slice
``w(x0, x1)`` (the last two axes of ``w``), periodic in both directions::

    w_t = tau Lap w + v . grad w + rho w,      v . grad w = v0 dw/dx0 + v1 dw/dx1.

One step of size ``dt`` (their eq. (12)-(13)) solves the linear part exactly in Fourier space and
then applies the nonlinearity ``sigma``::

    u      = Re F^{-1}[ exp(dt s(k)) F[w] ],       w_next = sigma(u),
    s(k)   = -tau |k|^2 + i (v0 k0 + v1 k1) + rho.

Wavenumber convention
---------------------
``F`` is ``xp.fft.fft2`` over the last two axes (unnormalised forward transform,
``F[w](k) = sum_x w(x) exp(-i k . x)``) and the wavenumbers are angular::

    k0 = 2 pi * fftfreq(kh, d=spacing),    k1 = 2 pi * fftfreq(kw, d=spacing),

so a sample ``w[..., a, b]`` sits at ``x = (a * spacing, b * spacing)`` and ``F[d w / d x0] =
i k0 F[w]`` for band-limited ``w``. With the default ``spacing=1`` the grid is the integer
pixel grid of the kernel. Since ``exp(i k v t)`` multiplies ``F[w]``, pure advection gives
``w(x, t) = w(x + v t, 0)``: the *pattern moves by* ``-v t`` (``np.roll(w, -v t)`` for integer
``v t / spacing``).

The real part and the Nyquist modes
-----------------------------------
The full complex ``fft2`` is used and the real part taken. For odd sizes ``exp(dt s)`` is
Hermitian, ``exp(dt s(-k)) = conj(exp(dt s(k)))``, so the inverse transform is real anyway.
For even sizes the Nyquist wavenumber ``-pi/spacing`` is its own mirror image, and taking the
real part replaces ``exp(i v k dt)`` there by ``cos(v k dt)`` - the exact evolution of the
trigonometric interpolant ``cos(pi x / spacing)``, which is why integer shifts stay exact.
The price: on even grids, steps with non-integer advection ``v dt / spacing`` do not compose
exactly (``cos(a/2)**2 != cos(a)`` on the Nyquist lines); on odd grids (3x3, 5x5 kernels) the
steps form an exact semigroup.
(``rfft2``/``irfft2`` would instead keep one half of the spectrum and treat the mirrored Nyquist
lines asymmetrically.)

VJP (derived; real inner products, ``N = kh * kw``)
----------------------------------------------------
Let ``E = exp(dt s)``, ``W = F[w]``, ``u_bar = sigma'(u) * w_next_bar`` and ``U = F[u_bar]``.
The map ``w -> u`` is ``Re(A)`` with ``A = F^{-1} diag(E) F``; its transpose is
``Re(A^H) = Re(F^{-1} diag(conj E) F)``, so::

    w_bar = Re F^{-1}[ conj(E) U ].

For a coefficient ``c`` of the symbol, ``<u_bar, du/dc> = Re sum_k P(k) ds/dc(k)`` with
``P = dt E W conj(U) / N`` (Parseval), hence::

    tau_bar = -Re sum_k |k|^2 P,   v_j_bar = -sum_k k_j Im P,   rho_bar = Re sum_k P,

summed over the kernel axes and over every batch axis that ``tau``/``v``/``rho`` were broadcast
along. (``rho_bar = dt <u_bar, u>``, a check used by the tests.)

References
----------
.. [1] T. Zhang, Z. Yao, A. Gholami, K. Keutzer, J. Gonzalez, G. Biros, M. Mahoney,
   "ANODEV2: A coupled neural ODE framework", NeurIPS 2019, arXiv:1906.04596.
.. [2] L. N. Trefethen, *Spectral Methods in MATLAB*, SIAM 2000, ch. 3 (Nyquist modes of odd
   derivatives).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import DTypeLike, NDArray

from adjointcore.backend import Array, get_array_module, real_dtype
from adjointcore.errors import ParameterError, check_array, check_generator

from ._rda_checks import (
    SIGMAS,
    _activation,
    _check_dt,
    _check_spacing,
    _coefficients,
    _sum_to_shape,
)

__all__ = ["SIGMAS", "RDACache", "RDAGrads", "RDAEvolution", "RDAEvolutionCache", "wavenumbers",
           "symbol", "rda_multiplier", "rda_step", "rda_step_vjp", "adjoint_multiplier"]


class RDACache(NamedTuple):
    """Cache of :func:`rda_step`: what :func:`rda_step_vjp` needs.

    Attributes
    ----------
    w_hat : ndarray, complex, shape (..., kh, kw)
        ``F[w]``.
    multiplier : ndarray, complex, shape (..., kh, kw)
        ``E = exp(dt s(k))`` (batch axes as broadcast from ``tau``, ``v``, ``rho``).
    k0, k1 : ndarray, shapes (kh, 1) and (1, kw)
        Angular wavenumbers.
    dt : float
    sigma : str
    act_cache : NamedTuple or None
        Cache of the activation layer (``None`` for the identity).
    shapes : tuple
        Shapes of ``tau``, ``v``, ``rho`` as given (gradients are reduced to them).
    """
    w_hat: Array
    multiplier: Array
    k0: Array
    k1: Array
    dt: float
    sigma: str
    act_cache: Any
    shapes: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]


class RDAGrads(NamedTuple):
    """Cotangents of the RDA coefficients, each with the shape of the argument it belongs to."""
    tau: Array
    v: Array
    rho: Array


def adjoint_multiplier(multiplier: Array) -> Array:
    """Fourier multiplier of the transposed linear step: ``conj(E)`` (see module notes)."""
    return multiplier.conj()


def wavenumbers(shape: Sequence[int], spacing: float = 1.0, xp: Any = np,
                dtype: DTypeLike = np.float64) -> tuple[Array, Array]:
    """Angular wavenumbers ``(k0, k1) = 2 pi fftfreq(n, d=spacing)``, shaped to broadcast.

    Parameters
    ----------
    shape : (int, int)
        Kernel size ``(kh, kw)``.
    spacing : float
        Grid spacing ``d > 0`` of both axes.
    xp : module
        ``numpy`` or ``cupy``.
    dtype : dtype
        Real dtype of the result.

    Returns
    -------
    k0 : ndarray, shape (kh, 1)
    k1 : ndarray, shape (1, kw)
    """
    spacing = _check_spacing(spacing)
    return _wavenumbers(tuple(int(n) for n in shape), spacing, xp, np.dtype(dtype))


@lru_cache(maxsize=64)
def _wavenumbers(shape: tuple[int, ...], spacing: float, xp: Any,
                 dtype: np.dtype[Any]) -> tuple[Array, Array]:
    """:func:`wavenumbers`, built on the host and moved to the device once per kernel size,
    spacing, array module and dtype (not once per step). Read-only by convention."""
    kh, kw = shape
    k0 = 2.0 * np.pi * np.fft.fftfreq(kh, d=spacing)
    k1 = 2.0 * np.pi * np.fft.fftfreq(kw, d=spacing)
    return (xp.asarray(k0.reshape(kh, 1), dtype=dtype),
            xp.asarray(k1.reshape(1, kw), dtype=dtype))


def symbol(k0: Array, k1: Array, tau: Array, v: Array, rho: Array) -> Array:
    """Fourier symbol ``s = -tau |k|^2 + i (v0 k0 + v1 k1) + rho`` of ``tau Lap + v.grad + rho``.

    ``tau``, ``rho`` have batch shape ``b`` and ``v`` shape ``b + (2,)`` (already arrays on the
    backend of ``k0``); the result has shape ``b + (kh, kw)``.
    """
    t, r = tau[..., None, None], rho[..., None, None]
    v0, v1 = v[..., 0, None, None], v[..., 1, None, None]
    return -t * (k0 * k0 + k1 * k1) + 1j * (v0 * k0 + v1 * k1) + r


def rda_multiplier(shape: Sequence[int], dt: float, tau: Any, v: Any, rho: Any,
                   spacing: float = 1.0, xp: Any = np, dtype: DTypeLike = np.float64) -> Array:
    """``E = exp(dt s(k))`` for a kernel of size ``shape``; see :func:`symbol`."""
    k0, k1 = wavenumbers(shape, spacing, xp, dtype)
    tau, v, rho = _coefficients(tau, v, rho, xp, dtype, batch=None)
    return xp.exp(dt * symbol(k0, k1, tau, v, rho))


def rda_step(w: Array, dt: float, tau: Any, v: Any, rho: Any, sigma: str = "identity",
             spacing: float = 1.0, check_values: bool = True) -> tuple[Array, RDACache]:
    """One ANODEV2 RDA step ``w_next = sigma(Re F^{-1}[exp(dt s(k)) F[w]])`` (eq. (13)).

    Parameters
    ----------
    w : ndarray, shape (..., kh, kw)
        Real kernels (float32/float64, NumPy or CuPy); the last two axes are the periodic grid.
    dt : float
        Step size (finite).
    tau : float or ndarray
        Diffusion ``>= 0``; scalar or broadcastable to the batch shape ``w.shape[:-2]``
        (e.g. shape ``(out, 1)`` for one coefficient per output channel of a conv weight).
    v : array_like, shape (..., 2)
        Advection velocity ``(v0, v1)`` along axes ``(-2, -1)``; leading axes broadcast to the
        batch shape.
    rho : float or ndarray
        Reaction rate, broadcastable to the batch shape.
    sigma : str
        Name in :data:`SIGMAS` (``"identity"``, ``"tanh"``, ``"sigmoid"``, ``"relu"``, ...).
    spacing : float
        Grid spacing ``d`` of the wavenumber convention (module notes).
    check_values : bool
        Check that ``tau``, ``v``, ``rho`` are finite and ``tau >= 0`` (one device read for
        device arrays). False when the caller has checked them already (shapes are always
        checked): :class:`RDAEvolution` checks its parameters once per block call.

    Returns
    -------
    w_next : ndarray, shape (..., kh, kw)
    cache : RDACache
    """
    xp = get_array_module(w)
    check_array("w", w, ndim=tuple(range(2, 33)), allow_complex=False,
                fix="Pass kernels with the two spatial axes last, e.g. (out, in, kh, kw).")
    act = _activation(sigma)
    dt = _check_dt(dt)
    dtype = real_dtype(w.dtype)
    shapes = (np.shape(tau), np.shape(v), np.shape(rho))
    k0, k1 = wavenumbers(w.shape[-2:], spacing, xp, dtype)
    tau_a, v_a, rho_a = _coefficients(tau, v, rho, xp, dtype, batch=w.shape[:-2],
                                      check_values=check_values)
    multiplier = xp.exp(dt * symbol(k0, k1, tau_a, v_a, rho_a))
    w_hat = xp.fft.fft2(w, axes=(-2, -1))
    u = xp.fft.ifft2(multiplier * w_hat, axes=(-2, -1)).real.astype(w.dtype, copy=False)
    act_cache = None
    if act is not None:
        u, act_cache = act.forward(None, u)
    return u, RDACache(w_hat, multiplier, k0, k1, dt, sigma, act_cache, shapes)


def rda_step_vjp(cache: RDACache, w_next_bar: Array,
                 need_params: bool = True) -> tuple[Array, RDAGrads | None]:
    """VJP of :func:`rda_step` (module notes).

    Returns
    -------
    w_bar : ndarray, shape (..., kh, kw)
    grads : RDAGrads or None
        Cotangents of ``tau``, ``v``, ``rho`` with the shapes they were given in (``None`` when
        ``need_params`` is false).
    """
    xp = get_array_module(w_next_bar)
    batch = cache.w_hat.shape
    check_array("w_next_bar", w_next_bar, shape=tuple(batch), allow_complex=False,
                fix="Pass the cotangent of w_next (same shape).")
    act = _activation(cache.sigma)
    u_bar = w_next_bar if act is None else act.vjp(None, cache.act_cache, w_next_bar)[0]
    u_hat = xp.fft.fft2(u_bar, axes=(-2, -1))
    w_bar = xp.fft.ifft2(adjoint_multiplier(cache.multiplier) * u_hat, axes=(-2, -1))
    w_bar = w_bar.real.astype(w_next_bar.dtype, copy=False)
    if not need_params:
        return w_bar, None
    n = batch[-2] * batch[-1]
    p = (cache.dt / n) * cache.multiplier * cache.w_hat * u_hat.conj()
    k0, k1 = cache.k0, cache.k1
    tau_bar = -(p.real * (k0 * k0 + k1 * k1)).sum(axis=(-2, -1))
    v_bar = xp.stack([-(p.imag * k0).sum(axis=(-2, -1)), -(p.imag * k1).sum(axis=(-2, -1))],
                     axis=-1)
    rho_bar = p.real.sum(axis=(-2, -1))
    s_tau, s_v, s_rho = cache.shapes
    dtype = w_next_bar.dtype
    return w_bar, RDAGrads(_sum_to_shape(tau_bar, s_tau).astype(dtype, copy=False),
                           _sum_to_shape(v_bar, s_v).astype(dtype, copy=False),
                           _sum_to_shape(rho_bar, s_rho).astype(dtype, copy=False))


# -- the RDA evolution of a flat weight vector -----------------------------------------------------
class RDAEvolutionCache(NamedTuple):
    """Cache of :meth:`RDAEvolution.step`: one :class:`RDACache` per kernel tensor."""
    kernels: tuple[RDACache, ...]


class RDAEvolution:
    """The evolution step ``w_{j+1} = RDA(w_j; p, dt)`` on a flat weight vector (ANODEV2 eq. (13)).

    Every convolution kernel tensor ``(out, in, kh, kw)`` inside the flat vector evolves by
    :func:`rda_step` over its last two axes; every other entry (biases, dense weights) is held
    constant (``q = 0`` there).

    Parameters
    ----------
    param_shapes : dict or layer
        Ordered ``{name: shape}`` of the flat vector (e.g. ``f.param_shapes`` of the activation
        network, or the network itself).
    sigma : str
        Nonlinearity of :data:`SIGMAS` (the paper uses ``"tanh"``).
    spacing : float
        Grid spacing of the wavenumbers (module notes).
    per_channel : bool
        One ``tau`` per output channel of each kernel tensor instead of one per tensor.
    kernels : sequence of str, optional
        Names of the evolving tensors (default: every 4-D tensor).

    Notes
    -----
    ``p`` holds, for each evolving tensor in order, ``[tau (1 or out), v0, v1, rho]``.
    Protocol of an evolution (shared with :class:`nets.anodev2.LayerEvolution`)::

        n_params; init(rng, dtype) -> p
        step(p, w, t, dt) -> (w_next, cache)
        step_vjp(p, cache, w_next_bar, need_params=True) -> (w_bar, p_bar)
    """

    def __init__(self, param_shapes: Mapping[str, Sequence[int]] | Any, sigma: str = "tanh",
                 spacing: float = 1.0, per_channel: bool = False,
                 kernels: Sequence[str] | None = None) -> None:
        shapes = getattr(param_shapes, "param_shapes", param_shapes)
        if not isinstance(shapes, dict):
            raise TypeError(f"`param_shapes` must be a dict {{name: shape}} or a layer with "
                            f"param_shapes, got {type(param_shapes).__name__}.")
        _activation(sigma)
        self.sigma, self.spacing = sigma, _check_spacing(spacing)
        self.per_channel = bool(per_channel)
        names = [k for k, s in shapes.items() if len(s) == 4] if kernels is None \
            else list(kernels)
        unknown = [k for k in names if k not in shapes or len(shapes[k]) < 2]
        if unknown or not names:
            raise ValueError(f"`kernels` {unknown or names} must name tensors with at least two "
                             f"axes among {list(shapes)}; the RDA evolution needs conv kernels.")
        offsets, o = {}, 0
        for k, s in shapes.items():
            offsets[k] = (o, tuple(int(d) for d in s))
            o += math.prod(s)
        self.n_weights = o
        self._kernels = tuple((k,) + offsets[k] for k in names)
        self._tau_sizes = tuple(s[0] if self.per_channel else 1 for _, _, s in self._kernels)

    @property
    def n_params(self) -> int:
        return sum(n + 3 for n in self._tau_sizes)

    def init(self, rng: np.random.Generator | None = None, dtype: DTypeLike = np.float64,
             tau: float = 0.05, v: Sequence[float] = (0.0, 0.0), rho: float = 0.0,
             spread: float = 0.0) -> NDArray[Any]:
        """Coefficients ``[tau, v0, v1, rho]`` for every kernel tensor; deterministic by default.

        Parameters
        ----------
        rng : numpy.random.Generator or None
            Drawn from only when ``spread > 0`` (then required); with ``spread = 0`` it is
            accepted and left untouched, so ``ANODEV2Block.init`` draws ``w0`` from the same
            stream as ``f.init`` would.
        dtype : dtype
            float64 (default) or float32.
        tau : float
            Diffusion ``>= 0`` (centre of the draw).
        v : pair of float
            Advection velocity ``(v0, v1)`` (centre).
        rho : float
            Reaction rate (centre).
        spread : float
            ``0`` (default): every kernel gets exactly ``(tau, v, rho)``. ``> 0``: one call
            ``u = rng.uniform(-spread, spread, n_params)`` perturbs the centres, ``tau + |u|``
            (one-sided, so diffusion stays ``>= 0``), ``v + u``, ``rho + u``.

        Returns
        -------
        p : ndarray, shape (n_params,)

        Notes
        -----
        Why deterministic by default: ``tau, v, rho`` are a handful of physical coefficients
        per kernel tensor (eq. (8)), not a weight matrix whose units need random values to break
        their symmetry; the randomness of an ANODEV2 block already sits in ``w0 = f.init(rng)``,
        and the paper gives no initialisation for them. The default starts every kernel under a
        gentle isotropic diffusion with no transport and no growth: random ``v`` would give each
        kernel an arbitrary drift direction and random ``rho > 0`` exponential growth of the
        weights, and a negative ``tau`` is ill-posed. ``spread > 0`` draws them instead (e.g. to
        start kernels on different dynamics).
        """
        if isinstance(spread, bool) or not isinstance(spread, (int, float, np.integer,
                                                               np.floating)) \
                or not math.isfinite(spread) or spread < 0:
            raise ValueError(f"`spread` must be a finite number >= 0, got {spread!r}; use 0 for "
                             f"the deterministic coefficients or e.g. 0.1 to draw them.")
        if rng is not None or spread > 0:
            check_generator(rng)
        centre = np.concatenate([np.r_[np.full(n, tau), v, rho] for n in self._tau_sizes])
        if spread > 0:
            # checked above: a Generator
            u = rng.uniform(-spread, spread, centre.shape[0])  # type: ignore[union-attr]
            is_tau = np.concatenate([np.r_[np.ones(n, bool), np.zeros(3, bool)]
                                     for n in self._tau_sizes])
            centre = centre + np.where(is_tau, np.abs(u), u)
        return centre.astype(dtype)

    def coefficients(self, p: Array) -> list[tuple[Array, Array, Array]]:
        """``[(tau, v, rho)]`` per kernel tensor: views into ``p`` shaped for :func:`rda_step`."""
        if not hasattr(p, "shape") or p.shape != (self.n_params,):
            raise ParameterError(f"`p` must be a flat array of length {self.n_params} (per "
                                 f"kernel: tau, v0, v1, rho), got "
                                 f"{getattr(p, 'shape', type(p).__name__)}; use init().")
        out, o = [], 0
        for n, (_, _, shape) in zip(self._tau_sizes, self._kernels, strict=True):
            tau = p[o:o + n].reshape((n,) + (1,) * (len(shape) - 3)) if self.per_channel \
                else p[o].reshape(())
            out.append((tau, p[o + n:o + n + 2], p[o + n + 2].reshape(())))
            o += n + 3
        return out

    def _check_w(self, w: Array) -> None:
        check_array("w", w, shape=(self.n_weights,), allow_complex=False,
                    fix="Pass the flat weight vector of the activation network.")

    def check_params(self, p: Array) -> None:
        """Check ``p``'s values once (finite, ``tau >= 0``; one read on a device), so that a
        caller stepping many times can pass ``checked=True`` to :meth:`step`."""
        xp = get_array_module(p)
        dtype = real_dtype(p.dtype)
        for tau, v, rho in self.coefficients(p):
            _coefficients(tau, v, rho, xp, dtype, batch=None)

    def step(self, p: Array, w: Array, t: float = 0.0, dt: float = 1.0,
             checked: bool = False) -> tuple[Array, RDAEvolutionCache]:
        """``w_next``: kernels advanced by one RDA step, other entries copied.

        ``checked=True``: ``p``'s values were checked by :meth:`check_params` (shapes are
        always checked), so a device step reads nothing back.
        """
        self._check_w(w)
        w_next, caches = w.copy(), []
        for (_, o, shape), (tau, v, rho) in zip(self._kernels, self.coefficients(p), strict=True):
            n = math.prod(shape)
            y, c = rda_step(w[o:o + n].reshape(shape), dt, tau, v, rho, self.sigma,
                            self.spacing, check_values=not checked)
            w_next[o:o + n] = y.reshape(-1)
            caches.append(c)
        return w_next, RDAEvolutionCache(tuple(caches))

    def step_vjp(self, p: Array, cache: RDAEvolutionCache, w_next_bar: Array,
                 need_params: bool = True) -> tuple[Array, Array | None]:
        """``(w_bar, p_bar)`` of :meth:`step`."""
        self._check_w(w_next_bar)
        xp = get_array_module(w_next_bar)
        w_bar, parts = w_next_bar.copy(), []
        for (_, o, shape), c in zip(self._kernels, cache.kernels, strict=True):
            n = math.prod(shape)
            wb, g = rda_step_vjp(c, w_next_bar[o:o + n].reshape(shape), need_params)
            w_bar[o:o + n] = wb.reshape(-1)
            if need_params:
                # need_params: the grads
                parts += [g.tau.reshape(-1), g.v.reshape(-1), g.rho.reshape(-1)]  # type: ignore[union-attr]
        return w_bar, (xp.concatenate(parts) if need_params else None)

    def __repr__(self) -> str:
        names = [k for k, _, _ in self._kernels]
        return (f"RDAEvolution(kernels={names}, sigma={self.sigma!r}, spacing={self.spacing}, "
                f"per_channel={self.per_channel})")
