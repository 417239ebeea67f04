"""Any field in any block (issue 9, point 2): user fields, any state shape, NODE-EW's
CoupledField, plain functions refused by name."""
import numpy as np
import pytest

from adjointcore.gradcheck import check_layer
from adjointcore.layers import Linear, Sequential, Softplus, Tanh
from nets import ODEBlock
from nets.node_ew import CoupledField, node_ew_gradient


class DiagonalDecay:
    """User field on any state shape: dy/dt = -exp(w) * y + b (w, b scalars), with its VJP."""

    n_params = 2

    def init(self, rng, dtype=np.float64):
        return rng.standard_normal(2).astype(dtype)

    def forward(self, t, y, params):
        rate = np.exp(params[0])
        return -rate * y + params[1], (y, rate)

    def vjp(self, cache, dy_bar, need_params=True):
        y, rate = cache
        params_bar = np.array([-rate * np.sum(dy_bar * y), np.sum(dy_bar)]) if need_params \
            else None
        return -rate * dy_bar, params_bar, None


def test_user_field_with_a_3d_state_passes_check_layer():
    rng = np.random.default_rng(0)
    block = ODEBlock(DiagonalDecay(), method="rk4", steps=6)
    x = rng.standard_normal((2, 3, 4))
    report = check_layer(block, x=x, params=block.init(rng))
    assert report.passed, str(report)


class WrongDecay(DiagonalDecay):
    """Mutant: the parameter cotangent of the rate loses its minus sign."""

    def vjp(self, cache, dy_bar, need_params=True):
        y_bar, params_bar, t_bar = super().vjp(cache, dy_bar, need_params)
        if params_bar is not None:
            params_bar[0] = -params_bar[0]
        return y_bar, params_bar, t_bar


def test_user_field_with_a_wrong_vjp_fails_check_layer():
    rng = np.random.default_rng(1)
    block = ODEBlock(WrongDecay(), method="rk4", steps=6)
    report = check_layer(block, x=rng.standard_normal((2, 3)), params=block.init(rng))
    assert not report.passed


def _node_ew(rng, n=3, d=2):
    f = Sequential(Linear(d, 4), Tanh(), Linear(4, d))
    g = Sequential(Linear(f.n_params, f.n_params), Softplus())
    return CoupledField(f, g, (n, d))


def test_node_ew_in_an_ode_block_passes_check_layer():
    rng = np.random.default_rng(2)
    field = _node_ew(rng)
    block = ODEBlock(field, method="rk4", steps=5)
    theta0, theta1 = field.init(rng)
    params = block.init(np.random.default_rng(3))
    assert params.shape == (block.n_params,) == (theta0.size + theta1.size,)
    assert block.param_shapes == {"state_params": theta0.shape, "params": theta1.shape}
    x = rng.standard_normal((3, 2))
    y, _ = block.forward(params, x)
    assert y.shape == x.shape == block.output_shape(x.shape)
    # The block is not analytic (no complex step through the solver), so the dot check falls
    # back to fourth-order central differences: measured 2.9e-12 on this 30-dimensional coupled
    # map, whose 22 x 22 weight ODE has larger fifth derivatives than the MLP blocks' (<= 1e-12
    # there). The finite-difference and Taylor checks keep their defaults.
    report = check_layer(block, x=x, params=0.5 * params, tol={"dot": 1e-11})
    assert report.passed, str(report)


def test_node_ew_block_backsolve_is_algorithm_1_bitwise():
    rng = np.random.default_rng(4)
    """The block's backsolve gradient is node_ew_gradient's (both through one entry point)."""
    field = _node_ew(rng)
    block = ODEBlock(field, method="dopri5", rtol=1e-8, atol=1e-10, gradient="backsolve")
    theta0, theta1 = field.init(rng)
    x = rng.standard_normal((3, 2))
    y, cache = block.forward(np.concatenate([theta0, theta1]), x)
    y_bar = rng.standard_normal(y.shape)
    x_bar, p_bar = block.vjp(np.concatenate([theta0, theta1]), cache, y_bar)
    alg = node_ew_gradient(field, x, theta0, theta1, [1.0], y_bar[None], rtol=1e-8, atol=1e-10)
    assert np.array_equal(x_bar, alg.x0_bar)
    assert np.array_equal(p_bar, np.concatenate([alg.theta0_bar, alg.theta1_bar]))


def test_plain_function_is_refused_at_construction():
    with pytest.raises(TypeError, match="`field`.*plain function has no VJP"):
        ODEBlock(lambda t, y, p: -y, method="rk4", steps=4)
