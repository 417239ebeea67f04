"""The user-facing gradient check for solves (frozen accepted grid) and its mutation test."""
import numpy as np
import pytest

from adjointcore.fields import LayerField
from adjointcore.layers import Linear, Sequential, Softplus, Tanh
from adjointcore.sensitivity import check_solve_gradient


def mlp_field(rng, d=3, hidden=6):
    field = LayerField(Sequential(Linear(d, hidden), Tanh(), Linear(hidden, d)))
    return field, field.layer.init(rng)


@pytest.mark.parametrize("method,steps", [("dopri5", None), ("tsit5", None), ("bosh3", None),
                                          ("rk4", 12), ("ab4", 16), ("lm", 10)])
def test_correct_adjoint_passes_on_frozen_grid(method, steps, rng):
    field, params = mlp_field(rng)
    y0 = rng.standard_normal((2, 3))
    opts = {"k": -0.1} if method == "lm" else None
    report = check_solve_gradient(field, y0, params, (0.0, 1.5), method=method, steps=steps,
                                  rtol=1e-5, atol=1e-8, method_options=opts)
    assert report.passed, report.figures
    assert report.figures["fd_y0"] <= 1e-8 and report.figures["fd_params"] <= 1e-8
    assert abs(report.figures["taylor_min_rate"] - 2.0) <= 0.05 or \
        report.figures["taylor_min_rate"] > 2.0
    if steps is None:
        assert report.grid.size > 2 and report.grid[-1] == 1.5   # the adaptive grid, frozen


def test_frozen_grid_is_what_makes_fd_valid(rng):
    """FD of the *adaptive* solve (grid re-chosen at every evaluation, so the controller's
    dependence on the parameters enters) misses the gradient of the frozen discrete map by
    O(rtol) - measured 1.1e-5 at rtol 1e-3 - while FD on the frozen grid agrees to < 1e-8."""
    import solvers
    from adjointcore.gradcheck import central_difference, relative_error
    from adjointcore.sensitivity import discrete_adjoint
    field, params = mlp_field(rng)
    y0, y_bar = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    opts = {"rtol": 1e-3, "atol": 1e-6}
    grid = solvers.solve(field, y0, (0.0, 3.0), params=params, **opts).grid
    g = discrete_adjoint(field, y0, params, grid, y_bar, method="dopri5")
    v = rng.standard_normal(params.shape)

    def adaptive_loss(p):
        return float(np.sum(y_bar * solvers.solve(field, y0, (0.0, 3.0), params=p, **opts).ys[-1]))
    assert relative_error(g.params_bar @ v, central_difference(adaptive_loss, params, v)) > 1e-7
    report = check_solve_gradient(field, y0, params, (0.0, 3.0), **opts)
    assert report.passed and report.figures["fd_params"] < 1e-8
    assert np.array_equal(report.grid, grid)


class BrokenField:
    """Mutant: a field whose VJP drops the parameter gradient of its second layer's bias."""

    def __init__(self, field):
        self.inner = field
        self.n_params = field.n_params

    def forward(self, t, y, params):
        return self.inner.forward(t, y, params)

    def vjp(self, cache, dy_bar, need_params=True):
        y_bar, p_bar, t_bar = self.inner.vjp(cache, dy_bar, need_params)
        if p_bar is not None:
            p_bar = p_bar.copy()
            p_bar[-3:] = 0.0
        return y_bar, p_bar, t_bar


class SignFlipField(BrokenField):
    """Mutant: the state cotangent has the wrong sign."""

    def vjp(self, cache, dy_bar, need_params=True):
        y_bar, p_bar, t_bar = self.inner.vjp(cache, dy_bar, need_params)
        return -y_bar, p_bar, t_bar


@pytest.mark.parametrize("mutant", [BrokenField, SignFlipField])
@pytest.mark.parametrize("method,steps", [("dopri5", None), ("rk4", 8), ("abm3", 10)])
def test_broken_field_vjp_is_caught(mutant, method, steps, rng):
    field = LayerField(Sequential(Linear(3, 5), Softplus(), Linear(5, 3)))
    params = field.layer.init(rng)
    y0 = rng.standard_normal((2, 3))
    report = check_solve_gradient(mutant(field), y0, params, (0.0, 1.0), method=method,
                                  steps=steps)
    assert not report.passed
    worst = max(report.figures["fd_y0"], report.figures["fd_params"])
    assert worst > 1e-4
