"""Helpers shared by the forward-mode and second-order layer tests."""
from __future__ import annotations

import copy

import numpy as np


def split_example(example, dtype=np.float64):
    """``(layer, x, params, context)`` of a catalog example in ``dtype`` (params from
    ``layer.init(default_rng(1))`` unless the example fixes them)."""
    name, layer, x, kwargs = example
    kwargs = dict(kwargs)
    params = kwargs.pop("params", None)
    if params is None:
        params = layer.init(np.random.default_rng(1))
    return layer, x.astype(dtype), params.astype(dtype), kwargs


def forward_fresh(layer, params, x, kwargs):
    """``layer.forward`` with a copy of the example's generator, so every call draws the same."""
    kw = dict(kwargs)
    if "rng" in kw:
        kw["rng"] = copy.deepcopy(kw["rng"])
    return layer.forward(params, x, **kw)


def assert_quadratic_form_gradient(layer, params, z, v, u, eps=1e-5, tol=1e-8):
    """``d(v^T J(z) v)/dz`` from ``jvp_vjp(x_dot=v, y_dot_bar=v)`` against a central difference
    along ``u`` (step ``eps``; relative ``tol``: float64 central differences of a smooth scalar
    reach about eps^2 ~ 1e-10)."""
    def quad(zz):
        _, c = layer.forward(params, zz)
        return float((v * layer.jvp(params, c, v)).sum())

    _, cache = layer.forward(params, z)
    z_bar = layer.jvp_vjp(params, cache, v, None, v).x_bar
    fd = (quad(z + eps * u) - quad(z - eps * u)) / (2 * eps)
    assert abs(fd - (z_bar * u).sum()) <= tol * max(abs(fd), 1.0)
