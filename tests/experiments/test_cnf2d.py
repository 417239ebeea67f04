"""The ``cnf2d`` experiment (issue 12, point 5): 2-D toy densities, quick mode end to end (HDF5,
PNG, read back), bitwise resume after a crash at any kind of checkpoint, and the pieces the
figures rest on (inverse solve, density normalisation, the Gaussian baseline)."""
from __future__ import annotations

import math

import numpy as np
import pytest

import solvers
from adjointcore.sensitivity import begin_trajectory_gradient
from experiments import _cnf2d_model, _toy2d, cnf2d, durable, registry, results
from experiments.__main__ import main
from nets import cnf_nll
from tests.experiments._harness import (
    QUIET,
    assert_same_run,
    crash_and_resume,
)
from tests.experiments._record import assert_run_record

#: 8 trainings of 3 epochs: 3 checkpoints each with --checkpoint-every 1 (2 mid-training, one
#: forced at its end), 24 in all.
TINY = {"epochs": 3, "grid": 8, "n_plot_samples": 40}


# ------------------------------------------------------------------------------ data sets
@pytest.mark.parametrize("name", sorted(_toy2d.DATASETS))
def test_samplers_are_seeded_and_on_scale(name):
    a = _toy2d.sample(name, 4000, np.random.default_rng(3))
    b = _toy2d.sample(name, 4000, np.random.default_rng(3))
    c = _toy2d.sample(name, 4000, np.random.default_rng(4))
    assert a.shape == (4000, 2) and a.dtype == np.float64 and np.all(np.isfinite(a))
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    std = a.std(axis=0)
    assert np.all((0.8 < std) & (std < 2.0)) and np.abs(a).max() < 4.0
    assert np.all(np.abs(a.mean(axis=0)) < 0.15)


def test_closed_form_densities():
    rng = np.random.default_rng(0)
    board = _toy2d.sample("checkerboard", 5000, rng)
    assert np.all(_toy2d.log_density("checkerboard", board) == -math.log(8.0))
    assert np.isneginf(_toy2d.log_density("checkerboard", np.array([[-1.5, -0.5]]))[0])
    # the mixture integrates to 1 (midpoint rule on a fine grid)
    axis = np.linspace(-3.5, 3.5, 701)
    h = axis[1] - axis[0]
    gx, gy = np.meshgrid(axis, axis)
    p = np.exp(_toy2d.log_density("eight_gaussians", np.stack([gx.ravel(), gy.ravel()], 1)))
    assert abs(p.sum() * h * h - 1.0) < 1e-6
    with pytest.raises(ValueError, match="no closed-form density"):
        _toy2d.log_density("spiral", board)


def test_gaussian_baseline_and_errors():
    x = np.random.default_rng(1).standard_normal((200_000, 2))
    mean, cov = _toy2d.fit_gaussian(x)
    # Sampling error with n = 2e5: standard error 2.2e-3 for the mean and about 3.2e-3 for the
    # covariance entries, so 1e-2 is 3-4.5 standard errors (fixed seed: deterministic).
    assert np.allclose(mean, 0, atol=1e-2) and np.allclose(cov, np.eye(2), atol=1e-2)
    assert abs(_toy2d.gaussian_nll(x, mean, cov) - (math.log(2 * math.pi) + 1)) < 1e-2
    # Exact properties, independent of sampling: the maximum-likelihood covariance divides by
    # n, and the fitted Gaussian's NLL on its own data is (d/2)(1 + log 2 pi) + logdet / 2.
    y = x[:50] @ np.array([[2.0, 0.0], [0.7, 0.5]]) + 3.0
    m_y, c_y = _toy2d.fit_gaussian(y)
    np.testing.assert_allclose(c_y, np.cov(y.T, bias=True), rtol=1e-12)
    expected = 1.0 + math.log(2 * math.pi) + 0.5 * np.linalg.slogdet(c_y)[1]
    assert abs(_toy2d.gaussian_nll(y, m_y, c_y) - expected) < 1e-12
    with pytest.raises(ValueError, match="unknown 2-D data set 'ring'"):
        _toy2d.sample("ring", 3, np.random.default_rng(0))
    with pytest.raises(ValueError, match="integer >= 1"):
        _toy2d.sample("circles", 0, np.random.default_rng(0))
    with pytest.raises(TypeError, match="Generator"):
        _toy2d.sample("circles", 3, 0)


# ------------------------------------------------------------------------------ configuration
def test_config_is_checked_and_registered():
    assert registry.CONFIGS["cnf2d"] is cnf2d.make_config and "cnf2d" in registry.CHECKPOINTED
    full = cnf2d.make_config(False, 0)
    assert (full["epochs"], full["batch"]) == (1000, 100)          # the paper's Fig. 3 setting
    assert full["datasets"] == list(_toy2d.DATASETS) and full["traces"] == ["exact", "hutchinson"]
    assert len(cnf2d.tasks(full)) == 20
    for bad in ({"datasets": ["ring"]}, {"models": []}, {"traces": ["exact", "exact"]},
                {"batch": 10**6}, {"lr": 0}, {"solver": "rk4"}):
        with pytest.raises(durable.ConfigError, match="cnf2d settings"):
            cnf2d.make_config(True, 0, bad)
    with pytest.raises(durable.ConfigError, match="no setting 'width'"):
        cnf2d.make_config(True, 0, {"width": 3})


# ------------------------------------------------------------------------------ pieces
def _trained_like(kind, seed=0):
    cfg = cnf2d.make_config(True, seed, {"grid": 40})
    model = cnf2d.build_model(cfg, kind)
    rng = np.random.default_rng(seed)
    params = model.init(rng, rng)
    if kind == "node_ew":                       # make g nonzero so theta really moves
        params[-model.n_theta:] = 0.3
    return cfg, model, params


@pytest.mark.parametrize("kind", cnf2d.MODELS)
def test_inverse_solve_inverts_the_flow(kind):
    """Base samples pushed back to data space and solved forward again land where they
    started (to the solver tolerance), and the learned density integrates to about 1."""
    cfg, model, params = _trained_like(kind)
    logp, theta_t1 = _cnf2d_model.learned_density(model, cfg, params)
    assert logp.shape == (40, 40) and np.all(np.isfinite(logp))
    h = 2 * cfg["plot_range"] / cfg["grid"]
    assert 0.97 < np.exp(logp).sum() * h * h < 1.01
    if kind == "node_ew":
        assert theta_t1.shape == (model.n_theta,) and not np.allclose(
            theta_t1, params[:model.n_theta])
    rng = np.random.default_rng(5)
    x = _cnf2d_model.inverse_samples(model, cfg, params, theta_t1, rng)
    z = np.random.default_rng(5).standard_normal((cfg["n_plot_samples"], 2))
    field = model.field(len(x))
    y0, p = model.initial(field, x, params)
    back = field.unpack_density(solvers.solve(field, y0, (0.0, cfg["t1"]), p, rtol=1e-5,
                                              atol=1e-5).ys[-1])[0]
    assert np.max(np.abs(back - z)) < 1e-2


def test_node_ew_gradient_matches_finite_differences():
    """The trained vector's gradient as the training step assembles it (NODE-EW: theta0 from
    the state's adjoint, then theta1) against central differences, on a fixed rk4 grid."""
    model = cnf2d.build_model(cnf2d.make_config(True, 0, {"hidden": 4}), "node_ew")
    rng = np.random.default_rng(2)
    params = model.init(rng, rng)
    params[model.n_theta:] += 0.1 * rng.standard_normal(params.size - model.n_theta)
    x = rng.standard_normal((6, 2))
    field = model.field(6)

    def loss_grad(p_vec):
        y0, p = model.initial(field, x, p_vec)
        sweep = begin_trajectory_gradient(field, y0, p, [1.0], t0=0.0, method="rk4", steps=4)
        value, y1_bar = cnf_nll(field, sweep.ys[0])
        g = sweep.gradient(y1_bar[None])
        return float(value), model.grad(field, g.y0_bar, g.params_bar)

    _, grad = loss_grad(params)
    v = rng.standard_normal(params.shape)
    eps = 1e-6
    fd = (loss_grad(params + eps * v)[0] - loss_grad(params - eps * v)[0]) / (2 * eps)
    assert abs(fd - grad @ v) <= 1e-7 * np.linalg.norm(grad) * np.linalg.norm(v)


# ------------------------------------------------------------------------------ end to end
def test_cnf2d_quick_writes_readable_results(tmp_path, capsys):
    assert main(["cnf2d", "--quick", "--out", str(tmp_path)]) == 0
    (path,) = results.find_runs(tmp_path, "cnf2d")
    assert path.name.startswith("cnf2d_quick-") and path.name.endswith("-seed0.h5")
    run = results.load(path)
    assert_run_record(run, "cnf2d", 0)
    cfg = run["config"]
    epochs, grid = cfg["epochs"], cfg["grid"]
    assert len(run["data"]["sha256"]) == 64 and set(run["data"]["datasets"]) == set(
        cfg["datasets"])
    m = run["metrics"]
    for task in cnf2d.tasks(cfg):
        k = task.key
        assert m[f"{k}.heldout_nll"].shape == (epochs + 1,)
        assert np.all(np.isfinite(m[f"{k}.heldout_nll"]))
        assert np.all(np.isfinite(m[f"{k}.train_nll"]))
        assert m[f"{k}.nfe_forward"].shape == (epochs,) and np.all(m[f"{k}.nfe_forward"] > 0)
        assert np.all(m[f"{k}.vjps"] > 0) and np.all(m[f"{k}.eval_nfe"] > 0)
        assert m[f"{k}.log_density"].shape == (grid, grid)
        assert m[f"{k}.samples"].shape == (cfg["n_plot_samples"], 2)
        # the held-out NLL after a short training is below the initial one (two moons: the
        # data are far from the base Gaussian, so a few Adam steps help for sure)
        if task.dataset == "two_moons":
            assert m[f"{k}.heldout_nll"][-1] < m[f"{k}.heldout_nll"][0] - 0.5
    for d in cfg["datasets"]:
        assert np.ndim(m[f"{d}.gaussian_nll"]) == 0 and 2.5 < m[f"{d}.gaussian_nll"] < 4.0
    assert abs(m["checkerboard.true_nll"] - math.log(8.0)) < 1e-12
    summary = run["tables"]["summary"]
    assert len(summary) == 8
    first = {(r["dataset"], r["trace"], r["model"]): r["initial_nll"] for r in summary}
    for d in cfg["datasets"]:     # NODE-EW starts as the NODE (g = 0 at first); the adaptive
        for t in cfg["traces"]:   # grids differ (theta is in the error norm): O(rtol) apart
            assert abs(first[(d, t, "NODE")] - first[(d, t, "NODE-EW")]) < 1e-5
    comparison = run["tables"]["comparison"]
    assert len(comparison) == 4 and all(r["node_epochs_to_level"] >= 0 for r in comparison)
    for suffix in (".png", ".hutchinson.png"):
        assert path.with_suffix(suffix).stat().st_size > 0
    ck = results.load_checkpoint(path)
    assert {f"params.{t.key}" for t in cnf2d.tasks(cfg)} == set(ck["arrays"])
    out = capsys.readouterr().out
    assert "epochs to NLL <=" in out and "figure:" in out


@pytest.fixture(scope="module")
def cnf2d_reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("cnf2d_ref")
    assert cnf2d.run(True, out, 0, overrides=TINY, options=QUIET) == 0
    (path,) = results.find_runs(out)
    return path


@pytest.mark.parametrize("crash_at", [1, 3, 4, 11, 13, 24])
def test_cnf2d_resume_is_bitwise(tmp_path, monkeypatch, cnf2d_reference, crash_at):
    """Checkpoint 1: mid first training; 3: its end (the next not started); 4: first epoch of
    the second; 11/13: around the change of trace and data set; 24: after the last training.
    Each resumes to the uninterrupted run's numbers, bitwise."""
    path = crash_and_resume(monkeypatch, tmp_path, cnf2d.run, TINY, crash_at)
    assert_same_run(path, cnf2d_reference)
