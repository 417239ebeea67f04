"""The stable, complex-safe kernels of the activations (private to :mod:`.activation`, which
re-exports the public ones): a sign-split exponential, sigmoid and its complement, softplus,
and tanh's derivative to full relative accuracy (in place and on several cores when large).

Every formula selects its stable branch by ``x.real`` and is valid for complex arguments, so
the complex-step derivative applies to the layers built on them.
"""
from __future__ import annotations

import numpy as np

from ..backend import Array, get_array_module
from ._parallel import MIN_PARALLEL_SIZE, chunked

__all__ = ["sigmoid", "softplus", "tanh_derivative"]


def _signed_exp(z: Array) -> tuple[Array, Array]:
    """Return ``(pos, e)`` with ``pos = z.real >= 0`` and ``e = exp(-|z|)`` (complex-safe).

    ``e = exp(-z)`` where ``z.real >= 0`` and ``exp(z)`` elsewhere, so ``Re(log e) <= 0`` and
    the exponential never overflows.
    """
    xp = get_array_module(z)
    pos = z.real >= 0
    return pos, xp.exp(xp.where(pos, -z, z))


def _sigmoid_pair(z: Array) -> tuple[Array, Array]:
    """``(sigmoid(z), sigmoid(-z))``, each to full relative accuracy (no ``1 - y`` cancellation)."""
    xp = get_array_module(z)
    pos, e = _signed_exp(z)
    one = xp.ones((), dtype=e.dtype)
    big, small = one / (one + e), e / (one + e)
    return xp.where(pos, big, small), xp.where(pos, small, big)


def _log1p(e: Array) -> Array:
    """``log(1 + e)`` accurate for small ``|e|``, also for complex ``e`` with ``Re e > -1``.

    NumPy's complex ``log1p`` evaluates ``log(1 + e)`` naively (relative error up to 1e-3 at
    ``|e| = 1e-13``, and 0 below 1e-16). With ``a = Re e`` and ``b = Im e / (1 + a)``,
    ``log(1 + e) = log1p(a) + log(1 + i b) = log1p(a) + log1p(b**2) / 2 + i arctan(b)``.
    """
    xp = get_array_module(e)
    if not xp.iscomplexobj(e):
        return xp.log1p(e)
    a = e.real
    b = e.imag / (1 + a)
    return (xp.log1p(a) + 0.5 * xp.log1p(b * b)) + 1j * xp.arctan(b)


def sigmoid(z: Array) -> Array:
    """Logistic function ``1 / (1 + exp(-z))``, stable for large ``|z|``, complex-safe.

    Parameters
    ----------
    z : ndarray, any shape
        Real or complex input.

    Returns
    -------
    ndarray, shape of ``z``
    """
    return _sigmoid_pair(z)[0]


def softplus(z: Array) -> Array:
    """``log(1 + exp(z))`` evaluated as ``max(z, 0) + log1p(exp(-|z|))`` (complex-safe).

    Parameters
    ----------
    z : ndarray, any shape

    Returns
    -------
    ndarray, shape of ``z``
    """
    xp = get_array_module(z)
    pos, e = _signed_exp(z)
    return xp.where(pos, z, xp.zeros((), dtype=z.dtype)) + _log1p(e)


def tanh_derivative(x: Array, y_bar: Array | None = None) -> Array:
    """``1 - tanh(x)**2`` (times ``y_bar`` if given) to full relative accuracy.

    Evaluated as ``4 e / (1 + e)**2`` with ``e = exp(-2 |x|)`` (``exp(-2 s x)`` with ``s`` the
    sign of ``Re x`` for complex ``x``, which keeps it analytic away from ``Re x = 0``), not as
    ``1 - y**2``, whose relative error grows like ``eps / (1 - y**2)`` (1.1e-13 at ``x = 3.93``).
    Real arrays take in-place steps with the same roundings, on several cores when large
    (:func:`~adjointcore.layers._parallel.chunked`).

    Parameters
    ----------
    x : ndarray, any shape
    y_bar : ndarray, shape of ``x``, optional

    Returns
    -------
    ndarray, shape of ``x``
    """
    xp = get_array_module(x)
    real = x.dtype.kind != "c" and x.ndim > 0
    if y_bar is not None and real and y_bar.dtype != x.dtype \
            and xp.result_type(x, y_bar) != x.dtype:
        real = False
    if not real:
        e = xp.exp(-2 * xp.where(x.real >= 0, x, -x))
        d = 4 * e / ((1 + e) * (1 + e))
        return d if y_bar is None else y_bar * d
    out = xp.empty(x.shape, dtype=x.dtype)
    args = (out, x) if y_bar is None else (out, x, y_bar)
    if x.size < MIN_PARALLEL_SIZE:
        _tanh_derivative_into(*args)
    else:
        chunked(_tanh_derivative_into, *args)
    return out


def _tanh_derivative_into(e: Array, x: Array, y_bar: Array | None = None) -> None:
    """``e[...] = tanh'(x) (* y_bar)`` for real arrays, in place (see :func:`tanh_derivative`)."""
    xp = np if type(x) is np.ndarray else get_array_module(x)
    xp.abs(x, out=e)
    e *= -2
    xp.exp(e, out=e)
    d = e + 1
    d *= d
    e *= 4
    e /= d
    if y_bar is not None:
        e *= y_bar


def _tanh_into(y: Array, x: Array) -> None:
    get_array_module(x).tanh(x, out=y)
