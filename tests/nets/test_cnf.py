"""CNF as a vector field on ``[z, log p]`` (issue 12, point 4): gradients of the CNF loss.

Measured on this machine (float64; FD errors are ``|fd - <g, v>| / (|g| |v|)``):

* discrete adjoint against central differences of the same discrete map (``grid_forward``;
  the frozen accepted grid ``sweep.grid`` for adaptive dopri5, 7-10 non-uniform steps at rtol
  1e-8): 2e-13 .. 1.3e-11 for euler, rk4, dopri5 (fixed and frozen-adaptive), closed-form and
  tiled exact traces (bound 1e-8); Taylor slopes 1.9952 (closed form) and 2.0006 (tiled)
  (bound 2.00 +- 0.05);
* every checkpoint schedule (taped, StoreAll, Uniform, Revolve, Online) and the ODEBlock give
  bitwise the same gradient; the ``logp`` adjoint is constant (``y0_bar[logp] = 1/N`` exactly);
* continuous adjoints against the discrete gradient of a dopri5 solve at rtol 1e-12 (itself
  within 7e-13 of rk4 with 400 steps), dopri5 at rtol = tol, atol = tol / 100, tol = 1e-3 ..
  1e-8: backsolve 4.4e-6 -> 9.0e-10, error ~ tol^0.74; interpolated 3.2e-6 -> 8.4e-10,
  error ~ tol^0.70 (least-squares slopes of log error against log tol; asserted >= 0.6 and
  monotone, finest error <= 1e-8);
* Hutchinson: with fixed probes (2 Rademacher per sample) the discrete gradient matches FD
  (1.7e-11); over K = 256 probe draws the mean value and gradient equal the exact-trace ones
  within the standard error (largest |z| = 2.1 against the Bonferroni threshold 4.32 for a
  family-wise false-alarm rate of 1e-3 over the 65 statistics, normal approximation); probes
  scaled by 1.2 (a 44 % biased trace) are rejected (|z| up to 8.7), so the test has power;
* NODE-EW CNF (``CoupledCNF``, through an ODEBlock with parameters ``[theta0, theta1]``): FD
  5e-13 .. 1.5e-11 (theta0, theta1, joint, z0; euler and rk4); with ``g = 0`` it reproduces
  the plain CNF;
* a CNF whose VJP drops the divergence's parameter term is caught (FD error 0.26).
"""
from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest

import solvers
from adjointcore.checkpointing import Online, Revolve, StoreAll, Uniform
from adjointcore.divergence import divergence, divergence_vjp, draw_probes
from adjointcore.errors import ParameterError, ShapeError
from adjointcore.gradcheck import central_difference, taylor_test
from adjointcore.layers import ConcatLinear, Linear, Sequential, Softplus, Tanh
from adjointcore.sensitivity import begin_trajectory_gradient, grid_forward
from nets import CNF, CoupledCNF, ODEBlock, cnf_nll
from nets.cnf import CNFCache

FD_TOL = 1e-8          # project bound for gradients of discrete maps (float64)
N, D, H = 5, 2, 6
T0, T1 = 0.0, 1.0


def _layer(kind):
    if kind == "closed":      # Sequential(ConcatLinear, Tanh, ConcatLinear): MLP closed form
        return Sequential(ConcatLinear(D, H), Tanh(), ConcatLinear(H, D))
    return Sequential(ConcatLinear(D, H), Softplus(), Linear(H, H), Tanh(),
                      ConcatLinear(H, D))   # tiled exact trace


def _setup(kind="closed", seed=0, scale=1.5, **cnf_options):
    rng = np.random.default_rng(seed)
    cnf = CNF(_layer(kind), (N, D), **cnf_options)
    params = scale * cnf.init(rng)
    x = rng.standard_normal((N, D))
    return cnf, params, x, rng


def _gradient(cnf, y0, params, **options):
    """``(NLL, dNLL/dy0, dNLL/dparams, sweep)`` through begin_trajectory_gradient."""
    sweep = begin_trajectory_gradient(cnf, y0, params, [T1], t0=T0, **options)
    value, y1_bar = cnf_nll(cnf, sweep.ys[0])
    g = sweep.gradient(y1_bar[None])
    return float(value), g.y0_bar, g.params_bar, sweep


def _loss_on_grid(cnf, grid, method):
    def loss(y0, params):
        ys, _ = grid_forward(cnf, y0, params, grid, method)
        return float(cnf_nll(cnf, ys[-1])[0])
    return loss


def _fd_error(fun, point, grad, v):
    fd = central_difference(fun, point, v)
    return abs(fd - float(np.sum(grad.ravel() * v.ravel()))) / (np.linalg.norm(grad)
                                                             * np.linalg.norm(v))


# -- the field itself ------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["closed", "tiled"])
def test_field_value_and_vjp(kind):
    """dy = [f, -div]; the VJP (y, params, t) against central differences of <w, dy>."""
    cnf, params, x, rng = _setup(kind)
    logp = rng.standard_normal(N)
    y = cnf.pack(x, logp)
    z, lp = cnf.unpack(y)
    assert np.array_equal(z, x) and np.array_equal(lp, logp)
    t = 0.3
    dy, cache = cnf.forward(t, y, params)
    f = cnf.layer.forward(params, x, t=t)[0]
    div = divergence(cnf.layer, t, x, params, closed_form=False)[0]
    dz, dlogp = cnf.unpack(dy)
    assert np.allclose(dz, f, rtol=0, atol=1e-14) and np.allclose(dlogp, -div, rtol=0, atol=1e-13)
    w = rng.standard_normal(y.shape)
    y_bar, p_bar, t_bar = cnf.vjp(cache, w)
    assert np.all(y_bar[-N:] == 0) and t_bar.shape == ()
    for point, grad, fun in [(y, y_bar, lambda v: float(w @ cnf.forward(t, v, params)[0])),
                             (params, p_bar, lambda v: float(w @ cnf.forward(t, y, v)[0])),
                             (np.array([t]), np.array([t_bar]),
                              lambda v: float(w @ cnf.forward(float(v[0]), y, params)[0]))]:
        assert _fd_error(fun, point, grad, rng.standard_normal(point.shape)) <= FD_TOL
    assert cnf.vjp(cache, w, need_params=False)[1] is None


# -- discrete adjoint: FD and Taylor ---------------------------------------------------------------
@pytest.mark.parametrize("kind", ["closed", "tiled"])
@pytest.mark.parametrize("method,steps", [("euler", 8), ("rk4", 4), ("dopri5", 3),
                                          ("dopri5", None)],
                         ids=["euler", "rk4", "dopri5", "dopri5-frozen"])
def test_discrete_gradient_fd_and_taylor(kind, method, steps):
    """dNLL/d(z0, params) through the discrete adjoint = central differences of the same map
    (the frozen accepted grid for the adaptive solve) to 1e-8; Taylor slope 2.00 +- 0.05."""
    cnf, params, x, rng = _setup(kind, seed=1)
    y0 = cnf.pack(x)
    grid_opts = {"steps": steps} if steps else {"rtol": 1e-8, "atol": 1e-10}
    value, y0_bar, p_bar, sweep = _gradient(cnf, y0, params, method=method, **grid_opts)
    grid = sweep.grid
    if steps is None:                            # a genuinely adaptive (non-uniform) grid
        assert grid.size > 6 and np.ptp(np.diff(grid)) > 1e-3
    loss = _loss_on_grid(cnf, grid, method)
    assert abs(loss(y0, params) - value) <= 1e-13 * abs(value)     # same discrete map
    assert np.all(y0_bar[-N:] == 1.0 / N)        # the logp adjoint is constant
    u = np.zeros_like(y0)
    u[:N * D] = rng.standard_normal(N * D)
    assert _fd_error(lambda v: loss(v, params), y0, y0_bar, u) <= FD_TOL
    for _ in range(2):
        v = rng.standard_normal(params.shape)
        assert _fd_error(lambda q: loss(y0, q), params, p_bar, v) <= FD_TOL
    # Taylor test in a joint (z0, params) direction
    m = np.concatenate([y0, params])
    grad = np.concatenate([y0_bar, p_bar])
    dm = np.concatenate([u, rng.standard_normal(params.shape)])
    res = taylor_test(lambda q: loss(q[:y0.size], q[y0.size:]), grad, m, dm)
    assert abs(res.slope1 - 2.0) <= 0.05, res


@pytest.mark.parametrize("method,steps", [("rk4", 6), ("dopri5", None)])
def test_every_checkpoint_schedule_bitwise_and_odeblock(method, steps):
    cnf, params, x, _ = _setup("closed", seed=2)
    y0 = cnf.pack(x)
    grid_opts = {"steps": steps} if steps else {"rtol": 1e-6, "atol": 1e-8}
    _, ref_y, ref_p, sweep = _gradient(cnf, y0, params, method=method, **grid_opts)
    for schedule in (StoreAll(), Uniform(every=2), Revolve(snapshots=2), Online(snapshots=2)):
        _, gy, gp, _ = _gradient(cnf, y0, params, method=method, schedule=schedule,
                                 **grid_opts)
        assert np.array_equal(gy, ref_y) and np.array_equal(gp, ref_p), schedule
    block = ODEBlock(cnf, t_span=(T0, T1), method=method, steps=steps,
                     **({} if steps else {"rtol": 1e-6, "atol": 1e-8}))
    y1, cache = block.forward(params, y0)
    assert np.array_equal(y1, sweep.ys[0])
    by, bp = block.vjp(params, cache, cnf_nll(cnf, y1)[1])
    assert np.array_equal(by, ref_y) and np.array_equal(bp, ref_p)


# -- continuous adjoints ---------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["backsolve", "interpolated"])
def test_continuous_adjoints_converge_to_discrete_gradient(variant):
    """Error of the continuous adjoint (dopri5, rtol = tol, atol = tol / 100) against the
    discrete gradient at rtol 1e-12: monotone in tol = 1e-3 .. 1e-8 with least-squares rate
    >= 0.6 (measured 0.74 backsolve, 0.70 interpolated); finest error <= 1e-8 (measured 9e-10,
    8e-10). The log-density channel is part of the adjoint state (its cotangent 1/N)."""
    rng = np.random.default_rng(1)
    cnf = CNF(Sequential(ConcatLinear(D, 8), Tanh(), ConcatLinear(8, D)), (6, D))
    params = 2.0 * cnf.init(rng)
    y0 = cnf.pack(rng.standard_normal((6, D)))
    _, ry, rp, _ = _gradient(cnf, y0, params, method="dopri5", rtol=1e-12, atol=1e-14)
    ref = np.concatenate([ry, rp])
    tols = np.array([1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8])
    errors = []
    for tol in tols:
        _, gy, gp, _ = _gradient(cnf, y0, params, method="dopri5", rtol=tol, atol=tol / 100,
                                 gradient=variant)
        assert np.allclose(gy[-6:], 1.0 / 6, rtol=1e-12)
        errors.append(np.linalg.norm(np.concatenate([gy, gp]) - ref) / np.linalg.norm(ref))
    errors = np.array(errors)
    rate = np.polyfit(np.log(tols), np.log(errors), 1)[0]
    assert np.all(np.diff(errors) < 0), errors
    assert rate >= 0.6 and errors[-1] <= 1e-8, (rate, errors)


# -- Hutchinson ------------------------------------------------------------------------------------
def test_hutchinson_fixed_probes_gradient_is_exact():
    cnf, params, x, rng = _setup("closed", seed=3)
    field = cnf.redraw(rng, n_probes=2, kind="rademacher")
    assert field.probes.shape == (2, N, D) and field.divergence == "hutchinson"
    y0 = field.pack(x)
    grid = np.linspace(T0, T1, 5)
    _, gy, gp, _ = _gradient(field, y0, params, method="rk4", steps=4)
    loss = _loss_on_grid(field, grid, "rk4")
    assert _fd_error(lambda q: loss(y0, q), params, gp, rng.standard_normal(params.shape)) \
        <= FD_TOL
    u = np.zeros_like(y0)
    u[:N * D] = rng.standard_normal(N * D)
    assert _fd_error(lambda v: loss(v, params), y0, gy, u) <= FD_TOL


def test_hutchinson_mean_equals_exact_within_standard_error():
    """K = 256 independent Gaussian probe draws (one probe per sample, rk4, 4 steps): the mean
    of the NLL and of its gradient (params, z0) equals the exact-trace one; each of the P = 65
    statistics ``z = (mean - exact) / se`` must satisfy ``|z| <= Phi^-1(1 - alpha / (2 P))``,
    alpha = 1e-3 (Bonferroni: family-wise false-alarm rate <= 1e-3 under the normal
    approximation of the mean). Unbiased because logp(T) is linear in the per-stage estimates
    and z(t) does not depend on the probes. Power: probes scaled by 1.2 (E[v v^T] = 1.44 I) are
    rejected."""
    rng = np.random.default_rng(3)
    cnf = CNF(Sequential(ConcatLinear(D, 8), Tanh(), ConcatLinear(8, D)), (6, D))
    params = 1.5 * cnf.init(rng)
    y0 = cnf.pack(rng.standard_normal((6, D)))

    def stats(field):
        value, gy, gp, _ = _gradient(field, y0, params, method="rk4", steps=4)
        return np.concatenate([[value], gp, gy[:-6]])

    exact = stats(cnf)
    threshold = NormalDist().inv_cdf(1 - 1e-3 / (2 * exact.size))
    k = 256
    worst = {}
    for scale in (1.0, 1.2):
        draws = np.array([stats(cnf.with_probes(scale * draw_probes(rng, (6, D))))
                          for _ in range(k)])
        se = draws.std(axis=0, ddof=1) / np.sqrt(k)
        assert np.all(se > 0)
        worst[scale] = np.max(np.abs(draws.mean(axis=0) - exact) / se)
    assert worst[1.0] <= threshold, (worst, threshold)
    assert worst[1.2] > threshold, (worst, threshold)


# -- NODE-EW CNF -----------------------------------------------------------------------------------
def _coupled(seed, with_g=True):
    rng = np.random.default_rng(seed)
    f = _layer("closed")
    g = Sequential(ConcatLinear(f.n_params, f.n_params), Tanh()) if with_g else None
    field = CoupledCNF(f, g, (N, D))
    theta0, theta1 = field.init(rng)
    return field, 1.5 * theta0, 0.3 * theta1, rng.standard_normal((N, D)), rng


@pytest.mark.parametrize("method,steps", [("euler", 6), ("rk4", 3)])
def test_coupled_cnf_gradient_fd(method, steps):
    """NODE-EW CNF in an ODEBlock (parameters [theta0, theta1], input z0): the discrete
    gradient of the NLL w.r.t. theta0, theta1 and z0 against central differences."""
    field, theta0, theta1, x, rng = _coupled(4)
    block = ODEBlock(field, t_span=(T0, T1), method=method, steps=steps)
    params = np.concatenate([theta0, theta1])
    assert block.n_params == params.size

    def loss(p, xx=x):
        return float(cnf_nll(field, block.forward(p, xx)[0])[0])

    y1, cache = block.forward(params, x)
    _, y1_bar = cnf_nll(field, y1)
    assert np.all(field.unpack(y1_bar)[1] == 0)
    x_bar, p_bar = block.vjp(params, cache, y1_bar)
    n = theta0.size
    for sl in (slice(0, n), slice(n, params.size), slice(0, params.size)):
        v = np.zeros_like(params)
        v[sl] = rng.standard_normal(sl.stop - sl.start)
        assert _fd_error(loss, params, p_bar, v) <= FD_TOL, sl
    u = rng.standard_normal(x.shape)
    assert _fd_error(lambda xx: loss(params, xx), x, x_bar.ravel(), u) <= FD_TOL


def test_coupled_cnf_without_g_is_the_plain_cnf():
    field, theta0, _, x, rng = _coupled(5, with_g=False)
    plain = CNF(field.f_layer, (N, D))
    a = solvers.solve(field, field.pack(x, theta0), (T0, T1), None, method="rk4", steps=4)
    b = solvers.solve(plain, plain.pack(x), (T0, T1), theta0, method="rk4", steps=4)
    z, theta, logp = field.unpack(a.ys[-1])
    assert np.array_equal(theta, theta0)
    assert np.allclose(plain.pack(z, logp), b.ys[-1], rtol=0, atol=1e-14)
    assert field.n_params == 0 and field.init(rng)[1].shape == (0,)


# -- mutation, dtype, errors -----------------------------------------------------------------------
class DropDivergenceParams(CNF):
    """Mutant: the parameter cotangent lacks the divergence's term d<dlogp_bar, div>/dp."""

    def vjp(self, cache, dy_bar, need_params=True):
        y_bar, _, t_bar = super().vjp(cache, dy_bar)
        dz_bar = dy_bar[:self.n_z].reshape(self.z_shape)
        ordinary = divergence_vjp(cache.div_cache, np.zeros(self.n_samples), dz_bar).params_bar
        return y_bar, ordinary, t_bar


def test_dropped_divergence_params_term_is_caught():
    cnf, params, x, rng = _setup("closed", seed=6)
    mutant = DropDivergenceParams(cnf.layer, (N, D))
    y0 = cnf.pack(x)
    loss = _loss_on_grid(mutant, np.linspace(T0, T1, 5), "rk4")
    _, _, gp_ok, _ = _gradient(cnf, y0, params, method="rk4", steps=4)
    _, _, gp_bad, _ = _gradient(mutant, y0, params, method="rk4", steps=4)
    v = rng.standard_normal(params.shape)
    assert _fd_error(lambda q: loss(y0, q), params, gp_ok, v) <= FD_TOL
    assert _fd_error(lambda q: loss(y0, q), params, gp_bad, v) > 1e-3


@pytest.mark.parametrize("divergence_method", ["exact", "hutchinson"])
def test_float32_keeps_dtype(divergence_method):
    cnf, params, x, rng = _setup("tiled", seed=7)
    if divergence_method == "hutchinson":
        cnf = cnf.redraw(rng, dtype=np.float32)
    y0 = cnf.pack(x)
    v64, gy64, gp64, _ = _gradient(cnf, y0, params, method="rk4", steps=4)
    v32, gy32, gp32, sweep = _gradient(cnf, y0.astype(np.float32), params.astype(np.float32),
                                       method="rk4", steps=4)
    assert sweep.ys.dtype == gy32.dtype == gp32.dtype == np.float32
    assert cnf_nll(cnf, sweep.ys[0])[1].dtype == np.float32
    assert abs(v32 - v64) <= 1e-5 * abs(v64)
    for a, b in ((gy32, gy64), (gp32, gp64)):
        assert np.linalg.norm(a - b) <= 1e-4 * np.linalg.norm(b)


def test_bad_inputs_raise_before_compute():
    layer = _layer("closed")
    rng = np.random.default_rng(8)
    with pytest.raises(ShapeError, match="state_shape"):
        CNF(layer, (N,))
    with pytest.raises(ShapeError, match="state_shape"):
        CNF(layer, (N, D + 1))                  # layer maps d=2 only
    with pytest.raises(ValueError, match="divergence"):
        CNF(layer, (N, D), divergence="trace")
    with pytest.raises(ValueError, match="probes"):
        CNF(layer, (N, D), divergence="hutchinson")
    with pytest.raises(ShapeError, match="probes"):
        CNF(layer, (N, D), divergence="hutchinson", probes=np.ones((N, D + 1)))
    with pytest.raises(ShapeError, match="probes"):
        CNF(layer, (N, D), divergence="hutchinson", probes=np.ones((2, N + 1, D)))
    with pytest.raises(ValueError, match="probes"):
        CNF(layer, (N, D), probes=np.ones((N, D)))
    with pytest.raises(TypeError, match="layer"):
        CNF(lambda z: z, (N, D))
    with pytest.raises(ShapeError, match="state_shape"):
        CoupledCNF(layer, None, (N, 3))
    cnf = CNF(layer, (N, D))
    params = cnf.init(rng)
    x = rng.standard_normal((N, D))
    with pytest.raises(ShapeError, match="`z`"):
        cnf.pack(x[:, :1])
    with pytest.raises(ShapeError, match="`logp`"):
        cnf.pack(x, np.zeros(N + 1))
    with pytest.raises(ShapeError, match="`y`"):
        begin_trajectory_gradient(cnf, x, params, [T1], t0=T0, method="rk4", steps=2)
    with pytest.raises(ShapeError, match="`y1`"):
        cnf_nll(cnf, x.ravel())
    with pytest.raises(ParameterError, match="params"):
        cnf.forward(0.0, cnf.pack(x), params[:-1])
    with pytest.raises(TypeError, match="cache"):
        cnf.vjp(None, cnf.pack(x))
    with pytest.raises(ValueError, match="n_probes"):
        cnf.redraw(rng, n_probes=0)
    assert isinstance(cnf.forward(0.0, cnf.pack(x), params)[1], CNFCache)


def test_coupled_cnf_module_and_old_import_paths():
    """CoupledCNF lives in nets.coupled_cnf; nets and nets.cnf export the same objects, and
    each module imports first in a fresh interpreter (no import cycle)."""
    import subprocess
    import sys

    import nets
    from nets import cnf as cnf_module
    from nets import coupled_cnf

    assert nets.CoupledCNF is cnf_module.CoupledCNF is coupled_cnf.CoupledCNF
    assert cnf_module.CoupledCNFCache is coupled_cnf.CoupledCNFCache
    assert nets.CNF is cnf_module.CNF and nets.cnf_nll is cnf_module.cnf_nll
    for module in ("nets.coupled_cnf", "nets.cnf", "nets._density"):
        done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, (module, done.stderr)
