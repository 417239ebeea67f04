"""DTO-vs-OTD gradient accuracy experiment (quick mode): file content and convergence."""
import numpy as np
import pytest

from experiments import gradient_accuracy
from experiments.results import load


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gradacc")
    assert gradient_accuracy.run(quick=True, out=str(out), seed=1) == 0
    return out, load(out / "gradient_accuracy_quick.h5")


def _errors(rows, system, family):
    return [r["rel_error"] for r in rows if r["system"] == system and r["family"] == family]


def test_file_content(quick_run):
    out, res = quick_run
    assert (out / "gradient_accuracy_quick.png").stat().st_size > 10_000
    assert res["experiment"] == "gradient_accuracy" and res["config"]["seed"] == 1
    rows, m = res["tables"]["gradients"], res["metrics"]
    systems = {r["system"] for r in rows}
    assert {"node_ew", "node"} <= systems
    assert ("anodev2" in systems) == res["config"]["anodev2"]
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
    assert res["config"]["anodev2"]  # nets.anodev2 is part of the package
    # Same arithmetic (forward Euler on the coupled system) in two codes: roundoff only.
    assert res["metrics"]["anodev2_vs_coupled_euler_max_rel"] <= 1e-12
    rows = res["tables"]["gradients"]
    assert np.allclose(_errors(rows, "anodev2", "DTO ANODEV2 (Euler)"),
                       _errors(rows, "node_ew", "DTO euler"), rtol=1e-10, atol=0)
