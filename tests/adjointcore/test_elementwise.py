"""Scale (element-wise, O(n) parameters) and Parallel (sum of branches), issue 9 point 5."""
from __future__ import annotations

import numpy as np
import pytest

from adjointcore.errors import ShapeError
from adjointcore.layers import Linear, Parallel, Scale, Sequential, Tanh


def test_scale_is_the_diagonal_of_a_dense_stand_in():
    """``tanh(z * w + z @ S)`` with Scale + Parallel equals the dense n x n stand-in users had to
    write (diag(w) + S), with n parameters for the diagonal instead of n**2."""
    rng = np.random.default_rng(0)
    n = 5
    field = Sequential(Parallel(Scale(n), Linear(n, n, bias=False)), Tanh())
    params = field.init(rng) + 0.2 * rng.standard_normal(field.n_params)
    w, s = params[:n], params[n:].reshape(n, n)
    z = rng.standard_normal((3, n))
    y, _ = field.forward(params, z)
    np.testing.assert_allclose(y, np.tanh(z @ (np.diag(w) + s.T)), rtol=1e-14, atol=1e-15)
    assert Scale(n).n_params == n


def test_flatten_and_views_round_trip():
    """The documented parameter (un)flattening: ``views`` are named views into the flat vector
    and ``flatten`` packs them back."""
    layer = Parallel(Scale(3), Linear(3, 3))
    params = layer.init(np.random.default_rng(1))
    views = layer.views(params)
    assert sorted(views) == ["0.weight", "1.bias", "1.weight"]
    views["0.weight"][...] = 2.0                           # writes go through
    assert np.all(params[:3] == 2.0)
    assert np.array_equal(layer.flatten(views), params)


@pytest.mark.parametrize("make, x, match", [
    (lambda: Scale(3), np.ones((2, 4)), "scales axis 1 of size 3"),
    (lambda: Parallel(Scale(3), Linear(3, 2)), np.ones((2, 3)), "must give the same shape"),
])
def test_shape_errors_are_named(make, x, match):
    layer = make()
    with pytest.raises(ShapeError, match=match):
        layer.forward(layer.init(np.random.default_rng(2)), x)


def test_bad_construction_is_named():
    with pytest.raises(ValueError, match="at least one branch"):
        Parallel()
    with pytest.raises(ValueError, match="`init_value` must be a finite number"):
        Scale(3, init_value=float("inf"))
    with pytest.raises(TypeError, match=r"branches\[1\]"):
        Parallel(Scale(2), object())
