"""Quick mode of the ANODEV2 Figure 3 experiment, read back from HDF5."""
import numpy as np

from experiments import rda_evolution
from experiments.results import find_runs, load
from tests.experiments._record import assert_run_record


def test_quick_run_writes_figure_and_readable_results(tmp_path):
    status = rda_evolution.run(quick=True, out=str(tmp_path), seed=3)
    assert status == 0
    (path,) = find_runs(tmp_path, "rda_evolution", quick=True, seed=3)
    assert path.with_suffix(".png").stat().st_size > 1000
    assert path.with_name(path.stem + "_tanh.png").stat().st_size > 1000
    res = load(path)
    assert_run_record(res, "rda_evolution", 3)
    cfg = res["config"]
    assert cfg["quick"] is True
    m = res["metrics"]
    assert np.array_equal(m["rda_steps"], [2 * cfg["n_w"]] * 4)
    n, n_t = cfg["n"], cfg["n_w"] // cfg["every"] + 1
    assert m["kernels"].shape == (4, n_t, n, n) == m["kernels_tanh"].shape
    np.testing.assert_allclose(m["times"], np.linspace(0.0, cfg["t1"], n_t), rtol=0,
                               atol=1e-15)
    # Every row starts from the same unit Gaussian (peak 1 at the centre).
    assert np.all(m["kernels"][:, 0] == m["kernels"][0, 0])
    assert m["kernels"][0, 0, n // 2, n // 2] == 1.0
    # Linear rows agree with the closed form to roundoff; reaction grows the peak by exp(rho t).
    assert m["closed_form_error"].shape == (4, n_t)
    assert m["closed_form_error"].max() < 1e-13
    np.testing.assert_allclose(m["peak"][2], np.exp(0.7 * m["times"]), rtol=1e-13)
    # Diffusion lowers the peak as s^2 / (s^2 + 2 tau t) with tau = 1 (infinite plane; the
    # periodic images of the quick box, side L = 12.3, add exp(-L^2 / 6) ~ 1e-11 at t = 1).
    np.testing.assert_allclose(m["peak"][0], 1.0 / (1.0 + 2.0 * m["times"]), rtol=1e-10)
    # tanh squashes: |tanh(u)| <= |u| for every kernel value.
    assert np.all(np.abs(m["kernels_tanh"]) <= np.abs(m["kernels"]).max() + 1e-15)
    rows = {r["case"]: r for r in res["tables"]["cases"]}
    assert set(rows) == {"diffusion", "advection", "reaction", "all three"}
    assert rows["advection"]["v0"] == -3.0
    # The quick box (side 12.3) is too small for the 'all three' row: it wraps around, and says so.
    assert rows["all three"]["wraps_around"] is True and rows["diffusion"]["wraps_around"] is False
