"""Theorem 1 experiment (quick mode) and the BP-then-adjoint training helpers."""
import numpy as np
import pytest

from adjointcore.gradcheck import central_difference, relative_error
from adjointcore.layers import Linear, Sequential, Tanh
from adjointcore.optim import Adam
from experiments import theorem1
from experiments._training import (
    GradientConfig,
    TrajectoryProblem,
    join_vars,
    loss_and_grad,
    train_bp_then_adjoint,
)
from experiments.results import find_runs, load
from nets.node_ew import CoupledField
from tests.experiments._record import CountedField, assert_run_record


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("theorem1")
    assert theorem1.run(quick=True, out=str(out), seed=3) == 0
    (path,) = find_runs(out, "theorem1")
    return path, load(path)


def test_quick_run_file_content(quick_run):
    path, res = quick_run
    cfg = theorem1.CONFIGS[True]
    assert path.with_suffix(".png").stat().st_size > 10_000
    assert_run_record(res, "theorem1", 3)
    assert res["config"]["width"] == cfg["width"]
    m = res["metrics"]
    n_bpa = cfg["bp_iterations"] + cfg["ft_iterations"]
    for key in ("loss", "forward_nfe", "backward_nfe", "wall_s", "phase"):
        assert m[f"bp_adjoint.{key}"].shape == (n_bpa,)
        assert m[f"adjoint.{key}"].shape == (cfg["adj_iterations"],)
    assert np.array_equal(m["t_obs"], np.arange(1, 101) / 100)
    assert np.allclose(m["target"], theorem1.target_curve(m["t_obs"]), rtol=0, atol=0)
    for key in ("trajectory.bp_adjoint", "trajectory.adjoint", "trajectory.bp_only"):
        assert m[key].shape == (100, 3) and np.all(np.isfinite(m[key]))
    # "Never reached" is stored explicitly: -1 (named by the dataset attribute) and a flag.
    reach = m.pop("adjoint_time_to_reach_bp_adjoint_loss_s")
    assert res["metric_attrs"]["adjoint_time_to_reach_bp_adjoint_loss_s"] == {
        "never_reached": -1.0}
    reached = m["adjoint_reached_bp_adjoint_loss"]
    assert (reach > 0) if reached else (reach == -1.0)
    assert all(np.all(np.isfinite(v)) for v in m.values())
    assert [r["run"] for r in res["tables"]["summary"]] == ["BP + adjoint", "BP only",
                                                            "pure adjoint"]
    assert {"bp_solver", "ft_solver", "variant", "rtol", "atol", "quick"} <= set(res["config"])


def test_quick_run_one_switch_and_loss_decrease(quick_run):
    _, res = quick_run
    m, cfg = res["metrics"], theorem1.CONFIGS[True]
    phase = m["bp_adjoint.phase"]
    assert np.array_equal(phase, [0] * cfg["bp_iterations"] + [1] * cfg["ft_iterations"])
    # BP phase: 100 Euler steps forward, 100 VJPs backward; adjoint phase: adaptive solves.
    assert np.all(m["bp_adjoint.forward_nfe"][phase == 0] == 100)
    assert np.all(m["bp_adjoint.backward_nfe"][phase == 0] == 100)
    assert np.all(m["bp_adjoint.backward_nfe"][phase == 1] > 100)
    loss = m["bp_adjoint.loss"]
    assert loss[-1] < 0.8 * loss[0]  # 22 Adam steps from a random init (measured 0.45-0.64)
    assert m["adjoint.loss"][-1] < m["adjoint.loss"][0]
    assert m["final_loss.bp_adjoint"] < m["final_loss.bp_only_ode"] < loss[0]
    assert m["wall_time_ratio_equal_iterations"] > 0


def _coupled_problem(rng):
    f = Sequential(Linear(2, 3), Tanh(), Linear(3, 2))
    g = Sequential(Linear(f.n_params, f.n_params), Tanh())
    field = CoupledField(f, g, (1, 2))
    theta0, theta1 = field.init(rng)
    t_obs = np.array([0.25, 0.5, 1.0])
    lay = field.layout
    problem = TrajectoryProblem(field, field.pack(rng.standard_normal((1, 2)), theta0), 0.0,
                                t_obs, rng.standard_normal((3, 2)), slice(0, lay.n_x),
                                trainable_y0=slice(lay.n_x, None))
    return problem, join_vars(problem, problem.y0, 0.3 * theta1), field.n_params


def test_loss_and_grad_discrete_matches_fd_with_trainable_theta0(rng):
    """Glue of the training loop (observation slice, factor 2, trainable theta0) vs central FD."""
    problem, z, n = _coupled_problem(rng)
    config = GradientConfig("discrete", "rk4", 8)
    loss, grad, info = loss_and_grad(problem, z, n, config)
    assert grad.shape == z.shape and info.forward_nfe == 32
    v = rng.standard_normal(z.shape)
    fd = central_difference(lambda q: loss_and_grad(problem, q, n, config)[0], z, v)
    # FD of a smooth float64 map: ~1e-10; 1e-8 is the project bound (Cauchy-Schwarz scaled).
    assert relative_error(fd, grad @ v, scale=np.linalg.norm(grad) * np.linalg.norm(v)) <= 1e-8


def test_continuous_config_gradient_close_to_fine_discrete(rng):
    problem, z, n = _coupled_problem(rng)
    _, g_fine, _ = loss_and_grad(problem, z, n, GradientConfig("discrete", "rk4", 200))
    for variant in ("backsolve", "interpolated"):
        cfg = GradientConfig(variant, "dopri5", None, rtol=1e-9, atol=1e-11)
        _, g, info = loss_and_grad(problem, z, n, cfg)
        # rtol 1e-9 adjoint vs a 200-step RK4 map (h^4 ~ 6e-10): agree to 1e-6 relative.
        assert relative_error(g, g_fine) <= 1e-6 and info.backward_nfe > 0


def test_train_bp_then_adjoint_switches_once(rng):
    problem, z, n = _coupled_problem(rng)
    seen = []
    z1, hist = train_bp_then_adjoint(problem, z, n, Adam(1e-2), 5, 2,
                                     GradientConfig("discrete", "euler", 8),
                                     on_switch=seen.append)
    assert hist.phase == [0] * 5 + [1] * 2 and len(seen) == 1
    assert hist.forward_nfe[:5] == [8] * 5 and z1.shape == z.shape
    assert hist.loss[-1] < hist.loss[0]


def test_gradient_config_rejects_inconsistent_settings():
    with pytest.raises(ValueError, match="steps=N"):
        GradientConfig("discrete", "euler", None)
    with pytest.raises(ValueError, match="steps=None"):
        GradientConfig("backsolve", "dopri5", 10)
    with pytest.raises(ValueError, match="gradient"):
        GradientConfig("adjoint")
    assert GradientConfig().with_config(gradient="interpolated", steps=None).method == "euler"


@pytest.mark.parametrize("method, taped", [("euler", True), ("rk4", True), ("ab3", False)])
def test_loss_and_grad_reports_every_field_evaluation(rng, method, taped):
    """StepInfo's NFE = the field calls made. RK methods tape one forward sweep that the adjoint
    reuses (it used to be swept twice, with only one sweep reported); multistep methods replay."""
    problem, z, n = _coupled_problem(rng)
    counted = CountedField(problem.field)
    _, _, info = loss_and_grad(problem._replace(field=counted), z, n,
                               GradientConfig("discrete", method, 8))
    assert info.forward_nfe + info.backward_nfe == sum(counted.calls.values())
    if taped:
        stages = {"euler": 1, "rk4": 4}[method]
        assert counted.calls == {"forward": 8 * stages, "vjp": 8 * stages}
        assert info == (info.loss, 8 * stages, 8 * stages)


def test_progress_counts_each_phase_against_its_own_total(capsys):
    from experiments._training import StepInfo
    report = theorem1._progress("BP+adj", (20, 2))
    for it in range(20):
        report(0, it, StepInfo(1.0, 100, 100))
    report(1, 0, StepInfo(1.0, 80, 900))
    report(1, 1, StepInfo(1.0, 80, 900))
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[4] == "1/20" and lines[-3].split()[4] == "20/20"
    assert [line.split()[4] for line in lines[-2:]] == ["1/2", "2/2"]
    assert len(lines) == 13   # every 2nd of 20, the last one, and both of phase 1
