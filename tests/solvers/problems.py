"""Initial-value problems with closed-form solutions, shared by the solver tests.

Each problem is a :class:`Problem` with ``f(t, y)`` (array-module agnostic: NumPy or CuPy),
``y0`` (float64 NumPy array), ``t_span`` and ``exact(t)``. ``exact`` accepts a scalar ``t``
(returns shape ``y0.shape``) or a 1-D array of times (returns shape ``(len(t), *y0.shape)``).

``PROBLEMS`` maps names to problems; ``NONSTIFF`` lists the names used by order and accuracy
tests, ``STIFF`` the mildly stiff ones (explicit methods are stability-limited there).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from adjointcore.backend import get_array_module


@dataclass(frozen=True, eq=False)
class Problem:
    """An initial-value problem ``y' = f(t, y)``, ``y(t_span[0]) = y0`` with known solution.

    Attributes
    ----------
    name : str
    f : callable ``(t, y) -> dy`` with ``dy.shape == y.shape``
    y0 : ndarray, float64
    t_span : tuple of float ``(t0, t1)``
    exact_fn : callable ``(t: ndarray shape (m,)) -> ndarray shape (m, *y0.shape)``
    lipschitz : float, rough size of ``|df/dy|`` (documentation for step-size choices)
    """

    name: str
    f: Callable
    y0: np.ndarray
    t_span: tuple
    exact_fn: Callable
    lipschitz: float = 1.0

    def exact(self, t):
        """Exact solution at scalar ``t`` (shape ``y0.shape``) or 1-D ``t`` (``(m, *y0.shape)``)."""
        t_arr = np.asarray(t, dtype=np.float64)
        out = self.exact_fn(np.atleast_1d(t_arr))
        return out[0] if t_arr.ndim == 0 else out


def _linear(name, a_matrix, y0, t_span):
    """``y' = A y`` with solution ``expm(A (t - t0)) y0``."""
    a_matrix = np.asarray(a_matrix, dtype=np.float64)
    y0 = np.asarray(y0, dtype=np.float64)
    t0 = float(t_span[0])

    def f(t, y):
        return _matvec(a_matrix, y)

    lam, vecs = np.linalg.eig(a_matrix)          # all problems here are diagonalisable
    coef = np.linalg.solve(vecs, y0.astype(complex))

    def exact_fn(t):
        # expm(A (t - t0)) y0 = V diag(exp(lam (t - t0))) V^{-1} y0, vectorised over t.
        return ((np.exp(np.outer(t - t0, lam)) * coef) @ vecs.T).real

    return Problem(name, f, y0, tuple(map(float, t_span)), exact_fn,
                   lipschitz=float(np.max(np.abs(lam))))


def _matvec(a_matrix, y):
    """``A @ y`` with ``A`` moved to the array module of ``y`` (CuPy and device-emulation safe;
    a test field, so the per-call upload does not matter)."""
    xp = get_array_module(y)
    if xp is np:
        return a_matrix @ y
    return xp.asarray(a_matrix, dtype=y.real.dtype) @ y


def _rotation_decay():
    # Damped rotation: eigenvalues -0.1 +- i, solution e^{-0.1 t} (cos t, sin t).
    return _linear("rotation_decay", [[-0.1, -1.0], [1.0, -0.1]], [1.0, 0.0], (0.0, 5.0))


def _linear4():
    # Fixed non-normal 4x4 system with eigenvalues {-0.5, -1, -0.2 +- 2i} (similarity transform).
    rng = np.random.default_rng(4)
    s = np.eye(4) + 0.3 * rng.standard_normal((4, 4))
    d = np.array([[-0.5, 0, 0, 0], [0, -1.0, 0, 0], [0, 0, -0.2, 2.0], [0, 0, -2.0, -0.2]])
    return _linear("linear4", s @ d @ np.linalg.inv(s), [1.0, -0.5, 0.25, 2.0], (0.0, 3.0))


def _stiff_linear():
    # Mildly stiff: eigenvalues -1 and -200 (rotated basis). The fast mode decays at once,
    # afterwards explicit methods are limited by stability (h * 200 inside the stability
    # region), so an adaptive controller oscillates at the boundary and rejects steps.
    q = np.array([[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]])
    return _linear("stiff_linear", q @ np.diag([-1.0, -200.0]) @ q.T, [1.0, 1.0], (0.0, 10.0))


def _logistic():
    # y' = y (1 - y), y(0) = 0.1: y(t) = 1 / (1 + 9 e^{-t}).
    def f(t, y):
        return y * (1.0 - y)

    def exact_fn(t):
        return (1.0 / (1.0 + 9.0 * np.exp(-t)))[:, None]

    return Problem("logistic", f, np.array([0.1]), (0.0, 6.0), exact_fn)


def _riccati():
    # y' = -y^2, y(0) = 1: y(t) = 1 / (1 + t).
    def f(t, y):
        return -y * y

    def exact_fn(t):
        return (1.0 / (1.0 + t))[:, None]

    return Problem("riccati", f, np.array([1.0]), (0.0, 4.0), exact_fn)


def _nonautonomous():
    # y' = y cos t, y(0) = (1, 2): y(t) = y0 exp(sin t). Exercises the stage times t + c_i h.
    def f(t, y):
        return y * np.cos(t)

    def exact_fn(t):
        return np.exp(np.sin(t))[:, None] * np.array([1.0, 2.0])

    return Problem("nonautonomous", f, np.array([1.0, 2.0]), (0.0, 4.0), exact_fn)


PROBLEMS = {p.name: p for p in (_rotation_decay(), _linear4(), _logistic(), _riccati(),
                                 _nonautonomous(), _stiff_linear())}
NONSTIFF = ("rotation_decay", "linear4", "logistic", "riccati", "nonautonomous")
STIFF = ("stiff_linear",)


def get_problem(name):
    """Return ``PROBLEMS[name]`` with a helpful error for unknown names."""
    try:
        return PROBLEMS[name]
    except KeyError:
        raise KeyError(f"unknown problem {name!r}; known: {sorted(PROBLEMS)}") from None
