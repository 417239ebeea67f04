"""Dot-product (adjoint) test: ``<J u, w> == <u, J^T w>``.

Normalisation
-------------
The mismatch is reported relative to ``(|J u| |w| + |u| |J^T w|) / 2``. By Cauchy-Schwarz each
of ``<J u, w>`` and ``<u, J^T w>`` is bounded by its own product, so the measure is at most 2,
is invariant to scaling ``u`` or ``w``, and stays meaningful when the two inner products are
small through cancellation (where ``|a - b| / |a|`` would blow up).

References
----------
J. F. Claerbout, *Earth Soundings Analysis: Processing versus Inversion*, "dot-product test";
the same check as ``jax.test_util.check_vjp`` and torch's ``gradcheck(fast_mode=True)``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..backend import Array, get_array_module

__all__ = ["dot_product_test", "inner"]


def inner(a: Any, b: Any) -> float:
    """Real inner product ``sum(a * b)`` (no conjugation; both arrays real, same shape)."""
    xp = get_array_module(a, b)
    return float(xp.sum(xp.asarray(a) * xp.asarray(b)))


def _norm(a: Any) -> float:
    """Euclidean norm without underflow/overflow (scaled by the largest magnitude)."""
    xp = get_array_module(a)
    a = xp.asarray(a).ravel()
    big = float(xp.max(xp.abs(a))) if a.size else 0.0
    if big == 0.0 or not np.isfinite(big):
        return big
    return big * float(xp.linalg.norm(a / big))


def dot_product_test(jvp: Callable[[Array], Array] | Array, vjp: Callable[[Array], Array] | Array,
                     u: Array, w: Array) -> float:
    """Relative mismatch of the adjoint identity ``<J u, w> = <u, J^T w>``.

    Parameters
    ----------
    jvp : callable or ndarray
        ``jvp(u) -> J u`` (e.g. ``lambda u: complex_step(f, x, u)`` or a finite difference),
        or the precomputed array ``J u``.
    vjp : callable or ndarray
        ``vjp(w) -> J^T w`` (the hand-written VJP under test), or the precomputed ``J^T w``.
    u : ndarray
        Input-space direction.
    w : ndarray
        Output-space cotangent, shape of ``J u``.

    Returns
    -------
    float
        ``|<J u, w> - <u, J^T w>| / ((|J u| |w| + |u| |J^T w|) / 2)``; 0.0 when both products
        vanish. About ``eps_mach`` for an exact pair evaluated with a complex-step JVP.

    Raises
    ------
    ValueError
        If ``J u`` and ``w`` (or ``J^T w`` and ``u``) differ in shape.
    """
    ju = jvp(u) if callable(jvp) else jvp
    jtw = vjp(w) if callable(vjp) else vjp
    for name, a, b in (("J u", ju, w), ("J^T w", jtw, u)):
        if tuple(a.shape) != tuple(b.shape):
            raise ValueError(f"dot_product_test: `{name}` has shape {tuple(a.shape)} but its "
                             f"partner has shape {tuple(b.shape)}; `jvp` must map u to the output "
                             f"space and `vjp` map w back to the input space.")
    lhs, rhs = inner(ju, w), inner(u, jtw)
    scale = 0.5 * (_norm(ju) * _norm(w) + _norm(u) * _norm(jtw))
    if scale == 0.0:
        return 0.0 if lhs == rhs else float("inf")
    return abs(lhs - rhs) / scale
