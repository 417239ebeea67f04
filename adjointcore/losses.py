"""Losses as pure functions returning ``(value, grad)`` with respect to the prediction.

Every loss accepts ``reduction`` in {"mean", "sum", "none"}. With "mean"/"sum" the value is a
0-d array (no device synchronisation on CuPy; ``float(value)`` gives a Python number) and the
gradient is that of the scalar; with "none" the value has one entry per sample (per element for
:func:`mse` and :func:`gaussian_nll`) and the gradient stacks the per-sample gradients.
"""
from __future__ import annotations

import math

import numpy as np

from .backend import Array, get_array_module
from .errors import ShapeError, check_array, check_finite

__all__ = ["softmax_cross_entropy", "log_softmax", "mse", "gaussian_nll"]

_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"`reduction` must be one of {_REDUCTIONS}, got {reduction!r}.")


def _check_same_shape(name: str, a: Array, ref_name: str, ref: Array) -> None:
    if tuple(a.shape) != tuple(ref.shape):
        raise ShapeError(f"`{name}` has shape {tuple(a.shape)} but `{ref_name}` has shape "
                         f"{tuple(ref.shape)}; they must match exactly (no broadcasting). "
                         f"Reshape `{name}` to {tuple(ref.shape)}.")


def _reduce(values: Array, grads: tuple[Array, ...], reduction: str,
            n: int) -> tuple[Array, tuple[Array, ...]]:
    """Apply ``reduction`` to per-item ``values``; scale each of ``grads`` to match."""
    if reduction == "none":
        return values, grads
    if reduction == "sum":
        return values.sum(), grads
    return values.sum() / n, tuple(g / n for g in grads)


def log_softmax(logits: Array) -> Array:
    """Row-wise ``log softmax`` of (N, K) logits, shifted by the row maximum (real part).

    Parameters
    ----------
    logits : ndarray, shape (N, K)

    Returns
    -------
    ndarray, shape (N, K)
    """
    xp = get_array_module(logits)
    z = logits - logits.real.max(axis=1, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=1, keepdims=True))


def softmax_cross_entropy(logits: Array, labels: Array,
                          reduction: str = "mean") -> tuple[Array, Array]:
    """Cross-entropy of softmax probabilities and integer class labels.

    ``loss_i = logsumexp(logits_i) - logits_i[labels_i]`` evaluated with the max-shift, so it is
    finite for any finite logits; the gradient is ``softmax(logits) - onehot(labels)`` (divided
    by N for "mean").

    Parameters
    ----------
    logits : ndarray, shape (N, K)
        Unnormalised class scores (finite; complex allowed for the complex step).
    labels : ndarray of int, shape (N,)
        Class indices in ``[0, K)``.
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    value : ndarray, shape () or (N,)
    grad : ndarray, shape (N, K)
        Derivative of ``value`` (of each ``value[i]`` for "none") w.r.t. ``logits``.
    """
    _check_reduction(reduction)
    check_array("logits", logits, ndim=2, fix="Layout is (N, K): batch, classes.")
    xp = get_array_module(logits)
    if not hasattr(labels, "dtype") or not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"`labels` must be an integer array of class indices, got "
                        f"{getattr(labels, 'dtype', type(labels).__name__)}; use "
                        f"labels.astype(np.int64) (or argmax for one-hot targets).")
    n, k = logits.shape
    if n == 0 or k == 0:
        raise ShapeError(f"`logits` must have at least one row and one class, got shape "
                         f"{tuple(logits.shape)}.")
    if tuple(labels.shape) != (n,):
        raise ShapeError(f"`labels` must have shape ({n},) to match `logits` "
                         f"{tuple(logits.shape)}, got {tuple(labels.shape)}; pass one class "
                         f"index per row.")
    labels = xp.asarray(labels)
    # Finite logits and labels in range: one read on a device (the messages may read more).
    if not bool(xp.isfinite(logits).all() & (labels.min() >= 0) & (labels.max() < k)):
        check_finite("logits", logits)
        lo, hi = int(labels.min()), int(labels.max())
        raise ValueError(f"`labels` must lie in [0, {k}) for {k} classes, got range "
                         f"[{lo}, {hi}].")
    logp = log_softmax(logits)
    rows = xp.arange(n)
    values = -logp[rows, labels]
    grad = xp.exp(logp)
    grad[rows, labels] -= 1
    value, (grad,) = _reduce(values, (grad,), reduction, n)
    return value, grad


def mse(pred: Array, target: Array, reduction: str = "mean") -> tuple[Array, Array]:
    """Squared error ``(pred - target)**2`` reduced over all elements.

    Parameters
    ----------
    pred, target : ndarray, same shape
    reduction : {"mean", "sum", "none"}
        "mean" divides by the number of elements (not by the batch size).

    Returns
    -------
    value : ndarray, shape () or shape of ``pred``
    grad : ndarray, shape of ``pred``
        ``2 (pred - target)`` (divided by ``pred.size`` for "mean").
    """
    _check_reduction(reduction)
    check_array("pred", pred, finite=True)
    check_array("target", target, finite=True)
    _check_same_shape("target", target, "pred", pred)
    r = pred - target
    value, (grad,) = _reduce(r * r, (2 * r,), reduction, max(pred.size, 1))
    return value, grad


def gaussian_nll(pred_mean: Array, target: Array, log_var: Array, reduction: str = "mean",
                 full: bool = False) -> tuple[Array, tuple[Array, ...]]:
    """Negative log-likelihood of ``target`` under ``N(pred_mean, exp(log_var))``, elementwise.

    ``nll = 0.5 * (log_var + (target - pred_mean)**2 * exp(-log_var))`` (+ ``0.5 log(2 pi)`` if
    ``full``), reduced over all elements.

    Parameters
    ----------
    pred_mean, target, log_var : ndarray, same shape
        Predicted mean, observation and predicted log-variance.
    reduction : {"mean", "sum", "none"}
    full : bool, default False
        Include the constant ``0.5 log(2 pi)``.

    Returns
    -------
    value : ndarray, shape () or shape of ``pred_mean``
    (grad_mean, grad_log_var) : tuple of ndarray, shape of ``pred_mean``
        ``(pred_mean - target) exp(-log_var)`` and ``0.5 (1 - (target - pred_mean)**2
        exp(-log_var))`` (divided by the number of elements for "mean").
    """
    _check_reduction(reduction)
    check_array("pred_mean", pred_mean, finite=True)
    check_array("target", target, finite=True)
    check_array("log_var", log_var, finite=True,
                fix="Predict the log-variance, not the variance.")
    _check_same_shape("target", target, "pred_mean", pred_mean)
    _check_same_shape("log_var", log_var, "pred_mean", pred_mean)
    xp = get_array_module(pred_mean)
    r = pred_mean - target
    precision = xp.exp(-log_var)
    w = r * r * precision
    values = 0.5 * (log_var + w)
    if full:
        values = values + 0.5 * math.log(2 * math.pi)
    n = max(pred_mean.size, 1)
    return _reduce(values, (r * precision, 0.5 * (1 - w)), reduction, n)
