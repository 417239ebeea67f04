"""DTO-vs-OTD gradient accuracy experiment (quick mode): file content and convergence."""
import numpy as np
import pytest

from experiments import gradient_accuracy
from experiments.results import find_runs, load
from tests.experiments._record import CountedField, assert_run_record


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gradacc")
    assert gradient_accuracy.run(quick=True, out=str(out), seed=1) == 0
    (path,) = find_runs(out, "gradient_accuracy")
    return path, load(path)


def _errors(rows, system, family):
    return [r["rel_error"] for r in rows if r["system"] == system and r["family"] == family]


def test_file_content(quick_run):
    path, res = quick_run
    assert path.with_suffix(".png").stat().st_size > 10_000
    assert_run_record(res, "gradient_accuracy", 1)
    rows, m = res["tables"]["gradients"], res["metrics"]
    assert {r["system"] for r in rows} == {"node_ew", "node", "anodev2"}
    for key in ("rel_error", "forward_nfe", "backward_nfe", "wall_s"):
        assert m[key].shape == (len(rows),) and np.all(np.isfinite(m[key]))
    assert np.all(m["rel_error"] > 0) and np.all(m["forward_nfe"] > 0)
    assert all({"rel_error_x0", "rel_error_theta0"} <= set(r) for r in rows)
    assert all("rel_error_theta1" in r for r in rows if r["system"] == "node_ew")
    # The two references (interpolated at rtol 1e-11, RK4 on 256 steps) agree to ~1e-12.
    assert m["reference_agreement.node_ew"] < 1e-10 and m["reference_agreement.node"] < 1e-10


def test_errors_converge(quick_run):
    _, res = quick_run
    rows = res["tables"]["gradients"]
    for system in ("node_ew", "node"):
        e4, e16 = _errors(rows, system, "DTO euler")
        assert e16 / e4 < 0.35  # first order: 4x more steps -> about 4x smaller
        r2, r8 = _errors(rows, system, "DTO rk4")
        assert r8 / r2 < 0.01  # fourth order: 4x more steps -> about 256x smaller
        for family in ("OTD backsolve", "OTD interpolated", "OTD interpolated + seminorm"):
            loose, tight = _errors(rows, system, family)
            assert tight < 1e-7 and tight < 1e-2 * loose


def test_anodev2_equals_coupled_euler(quick_run):
    _, res = quick_run
    # Same arithmetic (forward Euler on the coupled system) in two codes: roundoff only.
    assert res["metrics"]["anodev2_vs_coupled_euler_max_rel"] <= 1e-12
    rows = res["tables"]["gradients"]
    assert np.allclose(_errors(rows, "anodev2", "DTO ANODEV2 (Euler)"),
                       _errors(rows, "node_ew", "DTO euler"), rtol=1e-10, atol=0)


@pytest.mark.parametrize("system", ["node_ew", "node"])
def test_discrete_rows_report_every_field_evaluation(system):
    """Forward + backward NFE of each DTO row = the field calls actually made (the Dopri5 row
    includes its adaptive solve *and* the replay of its grid inside the adjoint)."""
    sys_ = gradient_accuracy.build_systems(4, seed=0)
    field, y0, params, y_bar, split = gradient_accuracy._problem(sys_, system)
    for cfg in (dict(euler=[5], rk4=[], dopri5_rtol=[]), dict(euler=[], rk4=[3], dopri5_rtol=[]),
                dict(euler=[], rk4=[], dopri5_rtol=[1e-4])):
        counted = CountedField(field)
        ref = split(y0, params)   # any blocks of the right shapes: only the NFE is checked here
        (row,) = gradient_accuracy._discrete_rows(system, counted, y0, params, y_bar, split,
                                                  ref, cfg)
        assert row["forward_nfe"] + row["backward_nfe"] == sum(counted.calls.values()), cfg
        assert row["backward_nfe"] == counted.calls["vjp"]   # taped: no recomputation


def test_anodev2_nfe_are_measured(quick_run):
    """n_z = n_w = N: N evaluations of f forward; N VJPs backward (on the forward's caches); g
    steps the weights N times forward (to w(T)), and StoreAll replays, recomputes and
    differentiates the N - 1 steps that reach x(T)."""
    _, res = quick_run
    rows = [r for r in res["tables"]["gradients"] if r["system"] == "anodev2"]
    assert [r["forward_nfe"] for r in rows] == res["config"]["anodev2_steps"]
    for r, n in zip(rows, res["config"]["anodev2_steps"], strict=False):
        assert (r["backward_nfe"], r["g_forward_nfe"], r["g_backward_nfe"]) == (n, n,
                                                                                3 * (n - 1))
