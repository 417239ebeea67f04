"""Exact Adams coefficients, derived from Lagrange interpolation in rational arithmetic.

A linear multistep method (LMM) on a uniform grid reads

    sum_{i=0}^{q} alpha_i y_{n+1-i} = h sum_{i=0}^{q} beta_i f_{n+1-i},

with ``rho(z) = sum_i alpha_i z^{q-i}`` and ``sigma(z) = sum_i beta_i z^{q-i}``. Adams methods
have ``rho(z) = z^q - z^{q-1}`` and obtain ``beta`` by integrating the polynomial that
interpolates past ``f`` values over one step. Everything here is exact (``fractions.Fraction``);
the steppers convert to float once.

References
----------
E. Hairer, S. P. Norsett, G. Wanner, *Solving Ordinary Differential Equations I*, 2nd ed.,
Springer (1993), Sections III.1-III.2 (Adams methods, order conditions, error constants).
"""
from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from functools import lru_cache

__all__ = ["adams_bashforth", "adams_moulton", "lmm_error_constants", "MAX_ADAMS_ORDER"]

MAX_ADAMS_ORDER = 5  # highest order offered; higher Adams methods are valid but not needed here


def _poly_mul(p: list[Fraction], q: list[Fraction]) -> list[Fraction]:
    """Product of two polynomials given as coefficient lists (index = power)."""
    out = [Fraction(0)] * (len(p) + len(q) - 1)
    for i, a in enumerate(p):
        for j, b in enumerate(q):
            out[i + j] += a * b
    return out


def _integrate_lagrange_basis(nodes: list[Fraction], j: int) -> Fraction:
    """Exact ``int_0^1 l_j(s) ds`` for the Lagrange basis polynomial ``l_j`` on ``nodes``."""
    poly = [Fraction(1)]
    for i, s_i in enumerate(nodes):
        if i != j:
            scale = Fraction(1) / (nodes[j] - s_i)
            poly = _poly_mul(poly, [-s_i * scale, scale])
    # a sum of Fractions is a Fraction
    return sum(c / (power + 1) for power, c in enumerate(poly))  # type: ignore[return-value]


def _check_order(name: str, order: int, lowest: int) -> None:
    if (isinstance(order, bool) or not isinstance(order, int)
            or not lowest <= order <= MAX_ADAMS_ORDER):
        raise ValueError(f"{name}: order must be an int in [{lowest}, {MAX_ADAMS_ORDER}], got "
                         f"{order!r}; pick one of {list(range(lowest, MAX_ADAMS_ORDER + 1))}.")


@lru_cache(maxsize=None)
def adams_bashforth(order: int) -> tuple[Fraction, ...]:
    """Adams-Bashforth weights ``beta_j`` of ``y_{n+1} = y_n + h sum_j beta_j f_{n-j}``.

    Parameters
    ----------
    order : int
        Order ``p`` in ``[1, 5]``; the method uses ``p`` past values ``f_n, ..., f_{n-p+1}``.

    Returns
    -------
    tuple of Fraction, length ``p``
        ``beta_j = int_0^1 l_j(s) ds`` with ``l_j`` the Lagrange basis on nodes ``s = 0, -1, ...,
        -(p-1)`` (``s = (t - t_n)/h``). E.g. order 2 gives ``(3/2, -1/2)``.
    """
    _check_order("adams_bashforth", order, 1)
    nodes = [Fraction(-i) for i in range(order)]
    return tuple(_integrate_lagrange_basis(nodes, j) for j in range(order))


@lru_cache(maxsize=None)
def adams_moulton(order: int) -> tuple[Fraction, ...]:
    """Adams-Moulton weights ``beta_j`` of ``y_{n+1} = y_n + h sum_j beta_j f_{n+1-j}``.

    Parameters
    ----------
    order : int
        Order ``p`` in ``[1, 5]``; the method is implicit in ``f_{n+1}`` and uses ``p`` values
        ``f_{n+1}, f_n, ..., f_{n-p+2}`` (order 1 is backward Euler, order 2 the trapezoidal rule).

    Returns
    -------
    tuple of Fraction, length ``p``
        Integrals of the Lagrange basis on nodes ``s = 1, 0, ..., -(p-2)``; order 3 gives
        ``(5/12, 8/12, -1/12)``.
    """
    _check_order("adams_moulton", order, 1)
    nodes = [Fraction(1 - i) for i in range(order)]
    return tuple(_integrate_lagrange_basis(nodes, j) for j in range(order))


def lmm_error_constants(alpha: Sequence[Fraction], beta: Sequence[Fraction],
                        n_terms: int) -> list[Fraction]:
    """Order-condition residuals ``C_0, ..., C_{n_terms-1}`` of a linear multistep method.

    Parameters
    ----------
    alpha, beta : sequence of Fraction, length ``q+1``
        Coefficients of ``y_{n+1-i}`` and ``h f_{n+1-i}``, ``i = 0..q`` (index 0 is the newest).
    n_terms : int
        Number of constants returned.

    Returns
    -------
    list of Fraction
        ``C_m = sum_i alpha_i x_i^m / m! - sum_i beta_i x_i^(m-1) / (m-1)!`` with ``x_i = q - i``
        (the local residual of the exact solution expanded about ``t_{n+1-q}``). The method has
        order ``p`` iff ``C_0 = ... = C_p = 0``; the error constant is ``C_{p+1} / sigma(1)``.
    """
    q = len(alpha) - 1
    xs = [Fraction(q - i) for i in range(q + 1)]
    out = []
    factorial = 1
    for m in range(n_terms):
        if m > 0:
            factorial *= m
        c = sum(a * x ** m for a, x in zip(alpha, xs, strict=True)) / factorial
        if m > 0:
            c -= sum(b * x ** (m - 1) for b, x in zip(beta, xs, strict=True)) * m / factorial
        out.append(c)
    return out  # type: ignore[return-value]  # Fraction sums over int factorials stay Fractions
