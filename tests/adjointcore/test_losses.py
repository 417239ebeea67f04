"""Losses: reference values, gradients against FD and complex step, stability, bad input."""
import numpy as np
import pytest
from scipy.special import logsumexp, softmax
from scipy.stats import norm

from adjointcore.backend import to_host
from adjointcore.errors import NonFiniteError, ShapeError
from adjointcore.gradcheck import central_difference, complex_step, relative_error
from adjointcore.losses import gaussian_nll, log_softmax, mse, softmax_cross_entropy

REDUCTIONS = ["mean", "sum", "none"]


def grad_errors(fun, x, grad, w, rng):
    """Relative errors of the directional derivative ``<w, grad v>`` against central FD and
    complex step of ``<w, fun(x)>`` along a random ``v``; ``w`` weights the items of a
    "none" reduction (None for a scalar loss)."""
    v = rng.standard_normal(x.shape)
    if w is None:
        scalar, g = fun, np.sum(grad * v)
    else:
        w_grad = w.reshape(w.shape + (1,) * (grad.ndim - w.ndim))
        scalar, g = (lambda z: np.sum(w * fun(z))), np.sum(w_grad * grad * v)
    return (relative_error(g, central_difference(scalar, x, v)),
            relative_error(g, complex_step(scalar, x, v)))


# -- cross-entropy --------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_matches_scipy(reduction, xp, rng):
    logits = rng.normal(0, 3, (7, 5))
    labels = rng.integers(0, 5, 7)
    value, grad = softmax_cross_entropy(xp.asarray(logits), xp.asarray(labels), reduction)
    per_row = logsumexp(logits, axis=1) - logits[np.arange(7), labels]
    want = {"mean": per_row.mean(), "sum": per_row.sum(), "none": per_row}[reduction]
    np.testing.assert_allclose(to_host(value), want, rtol=1e-14)  # same maths, other order
    onehot = np.eye(5)[labels]
    scale = 1 / 7 if reduction == "mean" else 1.0
    np.testing.assert_allclose(to_host(grad), scale * (softmax(logits, axis=1) - onehot),
                               rtol=1e-13, atol=1e-16)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_gradient(reduction, rng):
    logits = rng.normal(0, 2, (6, 4))
    labels = rng.integers(0, 4, 6)
    _, grad = softmax_cross_entropy(logits, labels, reduction)
    w = rng.standard_normal(6) if reduction == "none" else None
    fd_err, cs_err = grad_errors(lambda z: softmax_cross_entropy(z, labels, reduction)[0],
                                 logits, grad, w, rng)
    assert fd_err <= 1e-7   # central FD, eps ~ eps_mach**(1/3): measured ~1e-10
    assert cs_err <= 1e-13  # complex step is exact to roundoff


def test_cross_entropy_stable_at_extreme_logits():
    logits = np.array([[1000.0, 0.0, -1000.0], [-1e6, 1e6, 0.0]])
    value, grad = softmax_cross_entropy(logits, np.array([0, 0]), reduction="none")
    assert np.all(np.isfinite(value)) and np.all(np.isfinite(grad))
    np.testing.assert_array_equal(value, [0.0, 2e6])
    np.testing.assert_array_equal(grad, [[0.0, 0.0, 0.0], [-1.0, 1.0, 0.0]])
    np.testing.assert_allclose(np.exp(log_softmax(logits)).sum(axis=1), 1.0, rtol=1e-15)


def test_cross_entropy_bad_input():
    logits = np.zeros((3, 4))
    with pytest.raises(TypeError, match="`labels` must be an integer array"):
        softmax_cross_entropy(logits, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"`labels` must lie in \[0, 4\).*\[0, 4\]"):
        softmax_cross_entropy(logits, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match="`labels`"):
        softmax_cross_entropy(logits, np.array([0, -1, 1]))
    with pytest.raises(ShapeError, match=r"`labels` must have shape \(3,\)"):
        softmax_cross_entropy(logits, np.array([0, 1]))
    with pytest.raises(ShapeError, match="`logits` must have 2 dimensions"):
        softmax_cross_entropy(np.zeros(4), np.array([0]))
    with pytest.raises(ShapeError, match="`logits`"):
        softmax_cross_entropy(np.zeros((0, 4)), np.zeros(0, dtype=int))
    with pytest.raises(NonFiniteError, match="`logits`"):
        softmax_cross_entropy(np.array([[np.nan, 0.0]]), np.array([0]))
    with pytest.raises(ValueError, match="`reduction`"):
        softmax_cross_entropy(logits, np.array([0, 1, 2]), reduction="avg")


# -- mse ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse(reduction, xp, rng):
    pred, target = rng.standard_normal((2, 3, 4))
    value, grad = mse(xp.asarray(pred), xp.asarray(target), reduction)
    sq = (pred - target) ** 2
    want = {"mean": sq.mean(), "sum": sq.sum(), "none": sq}[reduction]
    np.testing.assert_allclose(to_host(value), want, rtol=1e-15)
    w = rng.standard_normal(pred.shape) if reduction == "none" else None
    fd_err, cs_err = grad_errors(lambda z: mse(z, target, reduction)[0], pred, to_host(grad), w,
                                 rng)
    assert fd_err <= 1e-7 and cs_err <= 1e-14  # quadratic: FD exact up to roundoff


def test_mse_bad_input():
    with pytest.raises(ShapeError, match="`target` has shape \\(3, 1\\) but `pred` has shape"):
        mse(np.zeros((3,)), np.zeros((3, 1)))
    with pytest.raises(NonFiniteError, match="`pred`"):
        mse(np.array([np.inf]), np.zeros(1))


# -- gaussian nll ---------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gaussian_nll(reduction, xp, rng):
    mean, target, log_var = rng.standard_normal((3, 5, 2))
    value, (g_mean, g_log_var) = gaussian_nll(xp.asarray(mean), xp.asarray(target),
                                              xp.asarray(log_var), reduction, full=True)
    nll = -norm.logpdf(target, loc=mean, scale=np.exp(0.5 * log_var))
    want = {"mean": nll.mean(), "sum": nll.sum(), "none": nll}[reduction]
    np.testing.assert_allclose(to_host(value), want, rtol=1e-14)
    w = rng.standard_normal(mean.shape) if reduction == "none" else None
    for x, grad, fun in [
        (mean, g_mean, lambda z: gaussian_nll(z, target, log_var, reduction)[0]),
        (log_var, g_log_var, lambda z: gaussian_nll(mean, target, z, reduction)[0]),
    ]:
        fd_err, cs_err = grad_errors(fun, x, to_host(grad), w, rng)
        assert fd_err <= 1e-7 and cs_err <= 1e-13


def test_gaussian_nll_constant_and_bad_input():
    z = np.zeros(4)
    v_full, _ = gaussian_nll(z, z, z, full=True)
    v, _ = gaussian_nll(z, z, z)
    assert v == 0.0 and v_full == pytest.approx(0.5 * np.log(2 * np.pi), rel=1e-15)
    with pytest.raises(ShapeError, match="`log_var`"):
        gaussian_nll(z, z, np.zeros(1))
    with pytest.raises(NonFiniteError, match="`log_var`"):
        gaussian_nll(z, z, np.full(4, -np.inf))
