"""Butcher tableaux of explicit Runge-Kutta methods, validated on creation.

References
----------
J. C. Butcher, *Numerical Methods for Ordinary Differential Equations*, 3rd ed., Wiley 2016,
ch. 3 (rooted trees, elementary weights, order conditions).
E. Hairer, S. P. Norsett, G. Wanner, *Solving Ordinary Differential Equations I*, 2nd ed.,
Springer 1993, sec. II.2 (Table 2.2: the 1, 1, 2, 4, 9 conditions of orders 1..5).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._xp import Array

#: Absolute tolerance for the algebraic checks. Coefficients given as exact fractions satisfy
#: them to a few ulps; Tsit5's published 16-digit decimals to about 1e-15.
COEFF_TOL = 1e-12

#: Highest order for which the order conditions are enumerated (trees up to this order).
MAX_CHECKED_ORDER = 6


# --------------------------------------------------------------------------------------------
# Rooted trees. A tree is the sorted tuple of its children's trees; the single node is ().
# --------------------------------------------------------------------------------------------
def _canon(children: Iterable[tuple[Any, ...]]) -> tuple[Any, ...]:
    return tuple(sorted(children))


def _grow(tree: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
    """All trees obtained from ``tree`` by attaching one leaf to one of its nodes."""
    yield _canon(tree + ((),))
    for i, child in enumerate(tree):
        for grown in _grow(child):
            yield _canon(tree[:i] + (grown,) + tree[i + 1:])


@lru_cache(maxsize=None)
def rooted_trees(order: int) -> tuple[tuple[Any, ...], ...]:
    """Rooted trees with ``order`` nodes, as canonical nested tuples (sorted for determinism).

    The counts for orders 1..6 are 1, 1, 2, 4, 9, 20 (OEIS A000081).
    """
    if order < 1:
        raise ValueError(f"order must be >= 1, got {order}")
    if order == 1:
        return ((),)
    return tuple(sorted({g for t in rooted_trees(order - 1) for g in _grow(t)}))


def tree_order(tree: tuple[Any, ...]) -> int:
    """Number of nodes of ``tree``."""
    return 1 + sum(tree_order(c) for c in tree)


def tree_density(tree: tuple[Any, ...]) -> int:
    """Butcher's density gamma(t) = |t| * prod gamma(children)."""
    return tree_order(tree) * int(np.prod([tree_density(c) for c in tree]))


def elementary_weight(tree: tuple[Any, ...], a: NDArray[np.float64]) -> NDArray[np.float64]:
    """Internal elementary weight Phi_i(t), shape (s,): prod over children u of (a @ Phi(u))_i."""
    phi = np.ones(a.shape[0])
    for child in tree:
        phi = phi * (a @ elementary_weight(child, a))
    return phi


def order_residuals(a: NDArray[np.float64], b: NDArray[np.float64],
                    order: int) -> list[tuple[tuple[Any, ...], float]]:
    """Residuals ``b @ Phi(t) - 1/gamma(t)`` for every rooted tree ``t`` with ``|t| <= order``.

    Returns a list of ``(tree, residual)``; the method has order ``order`` iff all vanish.
    """
    return [(t, float(b @ elementary_weight(t, a)) - 1.0 / tree_density(t))
            for q in range(1, order + 1) for t in rooted_trees(q)]


def observed_algebraic_order(a: NDArray[np.float64], b: NDArray[np.float64], tol: float = COEFF_TOL,
                             max_order: int = MAX_CHECKED_ORDER) -> int:
    """Largest ``p <= max_order`` such that all order conditions up to ``p`` hold within ``tol``."""
    p = 0
    while p < max_order and all(abs(r) <= tol for _, r in order_residuals(a, b, p + 1)):
        p += 1
    return p


# --------------------------------------------------------------------------------------------
# The tableau.
# --------------------------------------------------------------------------------------------
def _as_host(name: str, value: Any, ndim: int) -> NDArray[np.float64]:
    arr = np.array(value, dtype=np.float64)
    if arr.ndim != ndim:
        raise ValueError(f"ButcherTableau: `{name}` must be {ndim}-D, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"ButcherTableau: `{name}` has non-finite entries: {arr}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class ButcherTableau:
    """Explicit Runge-Kutta method ``Y_i = y + h sum_j a_ij k_j``, ``k_i = f(t + c_i h, Y_i)``,
    ``y1 = y + h sum_i b_i k_i``, error estimate ``y_err = h sum_i b_err_i k_i``.

    Parameters
    ----------
    c : array_like, shape (s,)
        Nodes.
    a : array_like, shape (s, s)
        Dense, strictly lower-triangular coupling matrix.
    b : array_like, shape (s,)
        Propagating weights (order ``order``).
    b_err : array_like, shape (s,), optional
        Error weights ``b - b_hat`` (``b_hat`` the embedded method of order ``err_order``).
    order : int
        Classical order of ``b``; every rooted-tree condition up to it is checked.
    err_order : int, optional
        Order of ``b_hat = b - b_err``; required iff ``b_err`` is given.
    name : str
    dense : array_like, shape (s, m), optional
        Continuous extension ``b_i(theta) = sum_{q=1..m} dense[i, q-1] theta**q``; must satisfy
        ``b_i(1) = b_i`` and ``sum_i b_i(theta) = theta``.

    Derived attributes: ``n_stages``, ``fsal`` (``c[-1] == 1`` and ``a[-1] == b``: the last
    stage is ``f(t + h, y1)``, the next step's first stage), ``live`` (bool per stage: whether
    ``y1`` depends on the stage; Dopri5's FSAL stage is not live) and ``n_live`` (stages needed
    for ``y1``: ``1 + last live index``).

    Raises
    ------
    ValueError
        On any violated invariant, naming it and showing the offending values.
    """

    c: Array
    a: Array
    b: Array
    b_err: Array | None = None
    order: int = 0
    err_order: int | None = None
    name: str = ""
    dense: Array | None = None
    fsal: bool = field(init=False)
    live: Array = field(init=False)
    #: ``c`` as Python floats and the number of live stages, derived once (read on every step).
    c_floats: tuple[float, ...] = field(init=False, repr=False, compare=False)
    _n_live: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        put = object.__setattr__
        label = f"ButcherTableau {self.name!r}"
        c, a, b = _as_host("c", self.c, 1), _as_host("a", self.a, 2), _as_host("b", self.b, 1)
        s = c.shape[0]
        if a.shape != (s, s) or b.shape != (s,):
            raise ValueError(f"{label}: need c (s,), a (s, s), b (s,); got {c.shape}, {a.shape}, "
                             f"{b.shape}")
        if np.any(np.triu(a) != 0):
            raise ValueError(f"{label}: `a` must be strictly lower triangular (explicit method); "
                             f"nonzero entries at {np.argwhere(np.triu(a) != 0).tolist()}")
        _close(label, "a.sum(1) == c", a.sum(1), c)
        _close(label, "b.sum() == 1", b.sum(), 1.0)
        order_ok = isinstance(self.order, (int, np.integer)) and not isinstance(self.order, bool)
        if not order_ok or not 1 <= self.order <= MAX_CHECKED_ORDER:
            raise ValueError(f"{label}: `order` must be an int in 1..{MAX_CHECKED_ORDER}, "
                             f"got {self.order!r}")
        _check_order(label, "b", a, b, int(self.order))
        put(self, "c", c)
        put(self, "a", a)
        put(self, "b", b)
        put(self, "order", int(self.order))
        self._init_error(label, a, b)
        self._init_dense(label, b)
        put(self, "fsal", bool(s > 1 and c[-1] == 1.0 and np.array_equal(a[-1], b)))
        put(self, "live", _live_stages(a, b))
        put(self, "c_floats", tuple(float(v) for v in c))
        put(self, "_n_live", int(np.nonzero(self.live)[0][-1]) + 1)

    def _init_error(self, label: str, a: NDArray[np.float64], b: NDArray[np.float64]) -> None:
        if (self.b_err is None) != (self.err_order is None):
            raise ValueError(f"{label}: give both `b_err` and `err_order` or neither "
                             f"(got b_err={self.b_err!r}, err_order={self.err_order!r})")
        if self.b_err is None:
            return
        b_err = _as_host("b_err", self.b_err, 1)
        if b_err.shape != b.shape:
            raise ValueError(f"{label}: `b_err` shape {b_err.shape} != `b` shape {b.shape}")
        _close(label, "b_err.sum() == 0", b_err.sum(), 0.0)
        # set with b_err (checked above)
        if not 1 <= int(self.err_order) < self.order:  # type: ignore[arg-type]
            raise ValueError(f"{label}: `err_order` must be in 1..order-1, got {self.err_order}")
        # set with b_err (checked above)
        _check_order(label, "b - b_err", a, b - b_err, int(self.err_order))  # type: ignore[arg-type]
        object.__setattr__(self, "b_err", b_err)
        # set with b_err (checked above)
        object.__setattr__(self, "err_order", int(self.err_order))  # type: ignore[arg-type]

    def _init_dense(self, label: str, b: NDArray[np.float64]) -> None:
        if self.dense is None:
            return
        dense = _as_host("dense", self.dense, 2)
        if dense.shape[0] != b.shape[0]:
            raise ValueError(f"{label}: `dense` must have shape (s, m), got {dense.shape}")
        _close(label, "dense.sum(1) == b (interpolant ends at y1)", dense.sum(1), b)
        target = np.zeros(dense.shape[1])
        target[0] = 1.0
        _close(label, "dense.sum(0) == (1, 0, ..) (sum_i b_i(theta) = theta)", dense.sum(0), target)
        object.__setattr__(self, "dense", dense)

    @property
    def n_stages(self) -> int:
        """Number of stages ``s``."""
        return self.c.shape[0]

    @property
    def n_live(self) -> int:
        """Number of leading stages that ``y1`` needs (``s - 1`` for Dopri5/Tsit5, else ``s``)."""
        return self._n_live

    def __repr__(self) -> str:
        return (f"ButcherTableau(name={self.name!r}, stages={self.n_stages}, order={self.order}, "
                f"err_order={self.err_order}, fsal={self.fsal}, dense={self.dense is not None})")


def _close(label: str, what: str, got: Any, want: Any) -> None:
    if not np.allclose(got, want, rtol=0.0, atol=COEFF_TOL):
        raise ValueError(f"{label}: invariant {what} violated: got {got}, expected {want}")


def _check_order(label: str, which: str, a: NDArray[np.float64], b: NDArray[np.float64],
                 order: int) -> None:
    bad = [(t, r) for t, r in order_residuals(a, b, order) if abs(r) > COEFF_TOL]
    if bad:
        tree, res = bad[0]
        raise ValueError(f"{label}: weights `{which}` violate {len(bad)} order condition(s) up to "
                         f"the claimed order {order}; e.g. tree {tree} (order {tree_order(tree)}) "
                         f"has residual b.Phi - 1/gamma = {res:.3e}. Check the coefficients "
                         f"against the source or lower `order`.")


def _live_stages(a: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Stage ``i`` is live iff ``b_i != 0`` or some live later stage ``j`` has ``a_ji != 0``."""
    s = b.shape[0]
    live = b != 0
    for i in range(s - 1, -1, -1):
        live[i] = live[i] or bool(np.any((a[i + 1:, i] != 0) & live[i + 1:]))
    live.setflags(write=False)
    return live
