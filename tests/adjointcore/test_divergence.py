"""Divergence of a field and its gradient (issue 12, point 2 and the field level of point 3).

* exact divergence (tiled forward-mode products) against the trace of a central-difference
  Jacobian (error ~ eps_mach**(2/3) times the conditioning: <= 1e-8 relative) and of a
  complex-step Jacobian (<= 1e-13, analytic fields), and against the MLP closed form
  ``(1 - H^2) @ s`` (<= 1e-12 relative; measured ~3e-16);
* Hutchinson: a single probe equals ``v^T J v`` of the finite-difference Jacobian; the unit basis
  as probes gives ``div / d`` exactly; the mean over many Gaussian / Rademacher probes equals the
  exact divergence *within its standard error*, and so does the mean of the gradients;
* ``divergence_vjp`` (z, params, t) by central differences (<= 1e-8), the complex step
  (<= 1e-13) and a Taylor test (slope 2.00 +- 0.05), tiled and closed-form paths, exact and
  Hutchinson; ``dz_bar`` adds exactly the field's ordinary VJP;
* a field with tanh'' dropped is caught; float32 keeps its dtype.
"""
from __future__ import annotations

import numpy as np
import pytest

from adjointcore.divergence import divergence, divergence_vjp, draw_probes
from adjointcore.errors import ShapeError
from adjointcore.fields import LayerField
from adjointcore.gradcheck import taylor_test
from adjointcore.layers import (
    ELU,
    ConcatConv2d,
    ConcatLinear,
    Linear,
    Parallel,
    Residual,
    Scale,
    Sequential,
    Sigmoid,
    Softplus,
    Tanh,
)

N, D = 4, 3


def _fields():
    return {
        "mlp": (Sequential(Linear(D, 8), Tanh(), Linear(8, D)), None),
        "mlp-timed": (Sequential(ConcatLinear(D, 8), Tanh(), ConcatLinear(8, D)), 0.6),
        "deep": (Sequential(ConcatLinear(D, 6), Softplus(), Linear(6, 6), ELU(),
                            ConcatLinear(6, D)), -0.3),
        "residual": (Residual(Sequential(Linear(D, D), Sigmoid(), Scale(D, 0.7))), None),
        "anodev2": (Sequential(Parallel(Scale(D), Linear(D, D, bias=False)), Tanh()), None),
        "conv": (Sequential(ConcatConv2d(2, 2, 3, padding=1), Tanh(),
                            ConcatConv2d(2, 2, 3, padding=1)), 0.3),
    }


SHAPES = {"conv": (N, 2, 3, 3)}


FIELDS = _fields()
NAMES = list(FIELDS)


def _setup(name, seed=0):
    layer, t = FIELDS[name]
    rng = np.random.default_rng(seed)
    params = layer.init(rng)
    z = rng.standard_normal(SHAPES.get(name, (N, D)))
    return layer, t, params, z, rng


def _f(layer, t, params):
    ctx = {"t": t} if t is not None else {}
    return lambda zz: layer.forward(params, zz, **ctx)[0]


def _jacobian_trace(f, z, complex_step=False):
    """Per-sample trace of df/dz: central differences (eps 6e-6) or the complex step."""
    n = z.shape[0]
    tr = np.zeros(n)
    for k in range(z[0].size):
        e = np.zeros((n, z[0].size))
        e[:, k] = 1.0
        e = e.reshape(z.shape)
        if complex_step:
            col = f(z + 1e-30j * e).imag / 1e-30
        else:
            h = 6e-6
            col = (f(z + h * e) - f(z - h * e)) / (2 * h)
        tr += col.reshape(n, -1)[:, k]
    return tr


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


# -- the value --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_exact_divergence_is_the_jacobian_trace(name):
    layer, t, params, z, _ = _setup(name)
    div, cache = divergence(layer, t, z, params, closed_form=False)
    f = _f(layer, t, params)
    assert div.shape == (N,)
    assert _rel(div, _jacobian_trace(f, z)) <= 1e-8
    assert _rel(div, _jacobian_trace(f, z, complex_step=True)) <= 1e-13
    assert np.allclose(cache.dz, f(z), rtol=1e-14, atol=1e-15)
    div_field, _ = divergence(LayerField(layer), t, z, params, closed_form=False)
    assert np.array_equal(div, div_field)


@pytest.mark.parametrize("name", ["mlp", "mlp-timed"])
def test_closed_form_matches_tiled_path(name):
    layer, t, params, z, rng = _setup(name, 1)
    closed, cc = divergence(layer, t, z, params, closed_form=True)
    tiled, ct = divergence(layer, t, z, params, closed_form=False)
    assert cc.closed is not None and ct.closed is None
    assert _rel(closed, tiled) <= 1e-12
    # the closed form by hand: (1 - H^2) @ s, s_k = sum_i W1[k, i] W2[i, k]
    l1, l2 = layer.layers[0], layer.layers[2]
    w1 = l1._weights(params[layer._slices[0]])[0][:, :D]
    w2 = l2._weights(params[layer._slices[2]])[0][:, :8]
    h = np.tanh(cc.closed[0])
    assert _rel((1 - h ** 2) @ (w1 * w2.T).sum(axis=1), closed) <= 1e-12
    div_bar, dz_bar = np.linspace(-1, 1, N), rng.standard_normal((N, D))
    bars = [divergence_vjp(c, div_bar, dz_bar) for c in (cc, ct)]
    for u, v in zip(*bars, strict=True):
        if u is None:
            assert v is None
        else:
            assert _rel(u, v) <= 1e-12


def test_hutchinson_single_probe_and_basis():
    layer, t, params, z, rng = _setup("deep")
    v = draw_probes(rng, z.shape)
    est, _ = divergence(layer, t, z, params, method="hutchinson", probes=v)
    f = _f(layer, t, params)
    h = 6e-6
    jv = (f(z + h * v) - f(z - h * v)) / (2 * h)
    assert _rel(est, (v * jv).sum(axis=1)) <= 1e-8
    basis = np.broadcast_to(np.eye(D)[:, None, :], (D, N, D))
    est_basis, _ = divergence(layer, t, z, params, method="hutchinson", probes=basis)
    exact, _ = divergence(layer, t, z, params)
    assert _rel(D * est_basis, exact) <= 1e-14


Z_SCORE = 5.0     # |T_{K-1}| > 5 with K = 50 batch means: p = 7.6e-6 per figure


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_hutchinson_mean_within_standard_error(kind):
    """Unbiasedness as a statistical test with a stated false-alarm rate.

    ``K = 50`` batches of ``B = 40`` independent probes (seed fixed); the batch means are iid, so
    ``(mean - exact) / (sd(batch means) / sqrt(K))`` is Student-t with 49 degrees of freedom when
    the estimator is unbiased. Each figure (the divergence of each sample, each component of the
    parameter and state gradients of ``sum(div)``) is accepted below |t| = 5 (two-sided
    p = 7.6e-6); with the 4 + 40 + 12 = 56 figures tested here the family-wise false-alarm
    probability is <= 56 * 7.6e-6 = 4.3e-4 (Bonferroni). A biased estimator, e.g. probes scaled
    by 1.05 (a 10 % bias), fails it (checked below).
    """
    layer, t, params, z, _ = _setup("anodev2")
    exact, cache = divergence(layer, t, z, params)
    g_exact = divergence_vjp(cache, np.ones(N))
    draw = np.random.default_rng(12345)
    k_batches, b = 50, 40
    values, grads = [], []
    biased = []
    for _ in range(k_batches):
        v = draw_probes(draw, (b, N, D), kind)
        est, c = divergence(layer, t, z, params, method="hutchinson", probes=v)
        bars = divergence_vjp(c, np.ones(N))
        values.append(est)
        grads.append(np.concatenate([bars.params_bar, bars.z_bar.ravel()]))
        biased.append(divergence(layer, t, z, params, method="hutchinson", probes=1.05 * v)[0])
    for samples, target in ((np.array(values), exact),
                            (np.array(grads), np.concatenate([g_exact.params_bar,
                                                              g_exact.z_bar.ravel()]))):
        se = samples.std(axis=0, ddof=1) / np.sqrt(k_batches)
        t_stat = np.abs(samples.mean(axis=0) - target) / se
        assert np.all(t_stat < Z_SCORE), t_stat
    samples = np.array(biased)
    se = samples.std(axis=0, ddof=1) / np.sqrt(k_batches)
    assert np.max(np.abs(samples.mean(axis=0) - exact) / se) > Z_SCORE


# -- the gradient -----------------------------------------------------------------------------
CONFIGS = [(n, "exact", False) for n in NAMES] + [("mlp", "exact", True),
                                                  ("mlp-timed", "exact", True),
                                                  ("deep", "hutchinson", False),
                                                  ("anodev2", "hutchinson", False),
                                                  ("conv", "hutchinson", False)]
CONFIG_IDS = [f"{n}-{m}{'-closed' if c else ''}" for n, m, c in CONFIGS]


def _scalar_and_grad(name, method, closed, seed=0):
    """``J(m) = <div_bar, div(z, params, t)>`` on the flat point ``m = [z, params, (t)]``."""
    layer, t, params, z, rng = _setup(name, seed)
    probes = draw_probes(rng, (2,) + z.shape, "rademacher") if method == "hutchinson" else None
    div_bar = rng.standard_normal(N)
    nz, npar = z.size, params.size
    timed = t is not None

    def split(m):
        tt = (complex(m[-1]) if np.iscomplexobj(m) else float(m[-1])) if timed else None
        return m[:nz].reshape(z.shape), m[nz:nz + npar], tt

    def scalar(m):
        zz, pp, tt = split(m)
        div, _ = divergence(layer, tt, zz, pp, method=method, probes=probes,
                            closed_form=closed)
        return (div_bar * div).sum()

    div, cache = divergence(layer, t, z, params, method=method, probes=probes,
                            closed_form=closed)
    assert (cache.closed is not None) == closed
    bars = divergence_vjp(cache, div_bar)
    m = np.concatenate([z.ravel(), params] + ([[t]] if timed else []))
    grad = np.concatenate([bars.z_bar.ravel(), bars.params_bar]
                          + ([[bars.t_bar]] if timed else []))
    assert (bars.t_bar is not None) == timed
    return scalar, grad, m, rng


@pytest.mark.parametrize("name,method,closed", CONFIGS, ids=CONFIG_IDS)
def test_divergence_vjp_fd_complex_taylor(name, method, closed):
    scalar, grad, m, rng = _scalar_and_grad(name, method, closed)
    n_z = N * int(np.prod(SHAPES.get(name, (N, D))[1:]))
    blocks = {"z": slice(0, n_z), "params": slice(n_z, m.size - (FIELDS[name][1] is not None)),
              "all": slice(0, m.size)}
    if FIELDS[name][1] is not None:
        blocks["t"] = slice(m.size - 1, m.size)
    for key, sl in blocks.items():
        u = np.zeros_like(m)
        u[sl] = rng.standard_normal(sl.stop - sl.start)
        a = float(grad @ u)
        bound = np.linalg.norm(grad) * np.linalg.norm(u)
        eps = 6e-6 * max(1.0, np.abs(m).max()) / np.abs(u).max()
        fd = float(scalar(m + eps * u) - scalar(m - eps * u)) / (2 * eps)
        cs = float(np.imag(scalar(m + 1e-30j * u)) / 1e-30)
        assert abs(a - fd) <= 1e-8 * max(abs(a), abs(fd), bound), (key, a, fd)
        assert abs(a - cs) <= 1e-13 * max(abs(a), abs(cs), bound), (key, a, cs)
    u = rng.standard_normal(m.size)
    res = taylor_test(lambda p: float(scalar(p).real), grad, m, u, eps0=1e-2, n=4, strict=False)
    assert res.converged and abs(res.slope1 - 2.0) <= 0.05, res


@pytest.mark.parametrize("closed", [False, True])
def test_dz_bar_adds_the_ordinary_vjp(closed):
    layer, t, params, z, rng = _setup("mlp-timed", 2)
    dz_bar, div_bar = rng.standard_normal((N, D)), rng.standard_normal(N)
    _, cache = divergence(layer, t, z, params, closed_form=closed)
    both = divergence_vjp(cache, div_bar, dz_bar)
    only = divergence_vjp(cache, div_bar)
    _, c = layer.forward(params, z, t=t)
    x_bar, p_bar = layer.vjp(params, c, dz_bar)
    assert _rel(both.z_bar - only.z_bar, x_bar) <= 1e-13
    assert _rel(both.params_bar - only.params_bar, p_bar) <= 1e-13
    # t_bar of <dz_bar, f>: central difference in t
    h = 1e-5
    fd = ((dz_bar * (layer.forward(params, z, t=t + h)[0]
                     - layer.forward(params, z, t=t - h)[0])).sum() / (2 * h))
    assert abs((both.t_bar - only.t_bar) - fd) <= 1e-8 * max(1.0, abs(fd))


def test_dropped_tanh_second_derivative_is_caught():
    class TanhNoSecond(Tanh):
        def _second_term(self, cache, q):
            return np.zeros_like(q)

    rng = np.random.default_rng(7)
    layer = Sequential(Linear(D, 8), TanhNoSecond(), Linear(8, D))
    params = layer.init(rng)
    z = rng.standard_normal((N, D))
    div_bar = rng.standard_normal(N)
    _, cache = divergence(layer, None, z, params, closed_form=False)
    z_bar = divergence_vjp(cache, div_bar).z_bar
    u = rng.standard_normal(z.shape)
    eps = 6e-6

    def scalar(zz):
        return (div_bar * divergence(layer, None, zz, params, closed_form=False)[0]).sum()

    fd = (scalar(z + eps * u) - scalar(z - eps * u)) / (2 * eps)
    assert abs(fd - (z_bar * u).sum()) > 1e-3 * abs(fd)
    # and the closed form is not taken for the mutant (it would hide the mutation)
    assert divergence(layer, None, z, params)[1].closed is None


@pytest.mark.parametrize("closed", [False, True])
def test_float32_keeps_dtype(closed):
    layer, t, params, z, rng = _setup("mlp-timed", 3)
    d64, c64 = divergence(layer, t, z, params, closed_form=closed)
    d32, c32 = divergence(layer, t, z.astype(np.float32), params.astype(np.float32),
                          closed_form=closed)
    assert d32.dtype == np.float32 and c32.dz.dtype == np.float32
    assert _rel(d32, d64) <= 1e-5
    div_bar = rng.standard_normal(N)
    b64 = divergence_vjp(c64, div_bar)
    b32 = divergence_vjp(c32, div_bar.astype(np.float32), np.zeros((N, D), np.float32))
    for u, v in zip(b32, b64, strict=True):
        assert u.dtype == np.float32
        assert _rel(u, v) <= 1e-4


def test_errors():
    layer, t, params, z, rng = _setup("residual")
    with pytest.raises(ValueError, match="method"):
        divergence(layer, t, z, params, method="trace")
    with pytest.raises(ValueError, match="probes"):
        divergence(layer, t, z, params, method="hutchinson")
    with pytest.raises(ShapeError, match="probes"):
        divergence(layer, t, z, params, method="hutchinson", probes=np.ones((2, N, D + 1)))
    with pytest.raises(ValueError, match="closed_form"):
        divergence(layer, t, z, params, closed_form=True)
    with pytest.raises(ValueError, match="kind"):
        draw_probes(rng, z.shape, "uniform")
    _, cache = divergence(layer, t, z, params)
    with pytest.raises(ShapeError, match="div_bar"):
        divergence_vjp(cache, np.ones(N + 1))
    with pytest.raises(ValueError, match="time-dependent"):
        divergence(FIELDS["deep"][0], None, z, FIELDS["deep"][0].init(rng))
