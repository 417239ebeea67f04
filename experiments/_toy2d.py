"""Two-dimensional toy densities generated in code (for the ``cnf2d`` flow experiment).

Each sampler draws ``n`` points of shape ``(n, 2)`` (float64) from a passed
``numpy.random.Generator``, so a seed fixes the sample. The shapes are the usual benchmarks of
2-D normalizing flows (Grathwohl et al. 2019, FFJORD, Fig. 2; Chen et al. 2018), written here
from their geometric descriptions at a common scale: every data set has most of its mass in
``[-3, 3]^2`` and a per-axis standard deviation between about 1.0 and 1.8, so one base
``N(0, I)`` and one grid suit them all.

========================  =================================================================
``two_moons``             two interleaved half circles of radius 1 (upper centred at
                          ``(0, 0)``, lower at ``(1, 0.5)``), Gaussian noise 0.08, then
                          centred and scaled by 2
``circles``               two concentric circles of radii 1 and 2 (each point on either with
                          probability 1/2), radial Gaussian noise 0.08
``eight_gaussians``       a mixture of 8 equal isotropic Gaussians (std 0.15) with means on the
                          circle of radius 2 at angles ``k pi / 4``
``spiral``                two arms: radius ``2.6 u``, angle ``3 pi u + k pi`` (arm k = 0, 1,
                          1.5 turns out from the centre) for ``u = sqrt(U(0, 1))``, Gaussian
                          noise 0.1
``checkerboard``          uniform on the 8 dark unit squares of a 4 x 4 board on
                          ``[-2, 2]^2`` (cell ``(i, j)`` dark when ``i + j`` is even)
========================  =================================================================

The exact log-density is known in closed form for ``checkerboard`` (``-log 8`` on its
support) and ``eight_gaussians`` (:func:`log_density`); the others are noisy curves whose
density has no closed form.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["DATASETS", "sample", "log_density", "fit_gaussian", "gaussian_nll",
           "DESCRIPTIONS"]


def _check(n, rng):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"`n` must be an integer >= 1 (points to draw), got {n!r}.")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"`rng` must be a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}.")
    return int(n)


def two_moons(n, rng):
    """Two interleaved half circles, noise 0.08, centred and scaled by 2."""
    n = _check(n, rng)
    lower = rng.random(n) < 0.5
    angle = math.pi * rng.random(n)
    x = np.where(lower, 1.0 - np.cos(angle), np.cos(angle))
    y = np.where(lower, 0.5 - np.sin(angle), np.sin(angle))
    pts = np.stack([x, y], axis=1) + 0.08 * rng.standard_normal((n, 2))
    return 2.0 * (pts - np.array([0.5, 0.25]))


def circles(n, rng):
    """Concentric circles of radii 1 and 2 (equal mass), radial noise 0.08."""
    n = _check(n, rng)
    radius = np.where(rng.random(n) < 0.5, 1.0, 2.0) + 0.08 * rng.standard_normal(n)
    angle = 2.0 * math.pi * rng.random(n)
    return np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)


EIGHT_RADIUS, EIGHT_STD = 2.0, 0.15


def _eight_means():
    angle = np.arange(8) * math.pi / 4
    return EIGHT_RADIUS * np.stack([np.cos(angle), np.sin(angle)], axis=1)


def eight_gaussians(n, rng):
    """Mixture of 8 Gaussians (std 0.15) on the circle of radius 2."""
    n = _check(n, rng)
    k = rng.integers(0, 8, size=n)
    return _eight_means()[k] + EIGHT_STD * rng.standard_normal((n, 2))


def spiral(n, rng):
    """Two spiral arms winding 1.5 turns outwards, point symmetric, noise 0.1."""
    n = _check(n, rng)
    u = np.sqrt(rng.random(n))                 # uniform along the arm's area, denser outside
    arm = rng.integers(0, 2, size=n)
    angle = 3.0 * math.pi * u + math.pi * arm
    radius = 2.6 * u
    pts = np.stack([radius * np.cos(angle), radius * np.sin(angle)], axis=1)
    return pts + 0.1 * rng.standard_normal((n, 2))


def checkerboard(n, rng):
    """Uniform on the 8 dark unit cells of a 4 x 4 board on [-2, 2]^2."""
    n = _check(n, rng)
    cells = np.array([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0],
                     dtype=np.float64)
    k = rng.integers(0, len(cells), size=n)
    return cells[k] - 2.0 + rng.random((n, 2))


DATASETS = {"two_moons": two_moons, "circles": circles, "eight_gaussians": eight_gaussians,
            "spiral": spiral, "checkerboard": checkerboard}

DESCRIPTIONS = {
    "two_moons": "two interleaved half circles, noise 0.08, centred, scaled by 2",
    "circles": "concentric circles r = 1, 2, radial noise 0.08",
    "eight_gaussians": "8 Gaussians (std 0.15) on the circle r = 2",
    "spiral": "two arms r = 2.6 u, angle 3 pi u + k pi, u = sqrt(U), noise 0.1",
    "checkerboard": "uniform on the 8 dark cells of a 4 x 4 board on [-2, 2]^2",
}


def sample(name: str, n: int, rng) -> np.ndarray:
    """``n`` points of the data set ``name`` (a key of :data:`DATASETS`), shape ``(n, 2)``.

    Raises
    ------
    ValueError
        Unknown ``name`` (the message lists the data sets) or ``n`` < 1.
    TypeError
        ``rng`` is not a ``numpy.random.Generator``.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown 2-D data set {name!r}; choose from {sorted(DATASETS)}.")
    return DATASETS[name](n, rng)


def log_density(name: str, x) -> np.ndarray:
    """The exact log-density where it has a closed form (``checkerboard``,
    ``eight_gaussians``), shape ``(n,)``; ``-inf`` off the checkerboard's support.

    Raises
    ------
    ValueError
        For the data sets without a closed form.
    """
    x = np.asarray(x, dtype=np.float64)
    if name == "checkerboard":
        cell = np.floor(x + 2.0)
        inside = np.all((cell >= 0) & (cell <= 3), axis=1) & (cell.sum(axis=1) % 2 == 0)
        return np.where(inside, -math.log(8.0), -np.inf)
    if name == "eight_gaussians":
        d2 = ((x[:, None, :] - _eight_means()[None]) ** 2).sum(axis=2)
        comp = -0.5 * d2 / EIGHT_STD ** 2 - math.log(2 * math.pi * EIGHT_STD ** 2)
        top = comp.max(axis=1)
        return top + np.log(np.exp(comp - top[:, None]).sum(axis=1)) - math.log(8.0)
    raise ValueError(f"no closed-form density for {name!r} (only 'checkerboard' and "
                     f"'eight_gaussians').")


def fit_gaussian(x):
    """Maximum-likelihood Gaussian ``(mean (2,), covariance (2, 2))`` of the rows of ``x``."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    return mean, centred.T @ centred / len(x)


def gaussian_nll(x, mean, cov) -> float:
    """Mean negative log-likelihood (nats per point) of the rows of ``x`` under
    ``N(mean, cov)``."""
    x = np.asarray(x, dtype=np.float64)
    d = x.shape[1]
    diff = x - mean
    sol = np.linalg.solve(cov, diff.T).T
    _, logdet = np.linalg.slogdet(cov)
    return float(0.5 * np.mean(np.sum(diff * sol, axis=1)) + 0.5 * logdet
                 + 0.5 * d * math.log(2 * math.pi))
