"""What every experiment's HDF5 file must hold (README "Experiments", DESIGN.md sect. 8), and a
field that counts its own evaluations (to check the NFE the experiments report)."""
import numpy as np


def assert_run_record(res, experiment, seed):
    """Configuration, versions, git state, BLAS, backend, device, units and total wall time are
    recorded (issue 10, point 5)."""
    assert res["experiment"] == experiment and res["config"]["seed"] == seed
    assert {"python", "numpy", "scipy", "h5py", "adjointcore", "scikit-learn", "matplotlib",
            "threadpoolctl"} <= set(res["versions"])
    assert "quick" in res["config"] and res["status"] == "finished"
    assert res["run_id"].startswith(experiment) and res["run_id"].endswith(f"-seed{seed}")
    assert res["git_commit"] and res["backend"] == "numpy"
    assert isinstance(res["git_dirty"], bool) and len(res["git_diff_sha256"]) in (0, 64)
    assert res["blas_library"] and isinstance(res["blas_threads"], int)
    assert set(res["units"]) == set(res["metrics"]) and all(res["units"].values())
    assert res["units"]["wall_time_s"] == "s"
    assert res["device"].startswith("cpu (") and "usable cores" in res["device"]
    wall = res["metrics"]["wall_time_s"]
    assert np.ndim(wall) == 0 and 0 < wall < 120


class CountedField:
    """Vector field wrapper counting ``forward`` calls and VJPs in ``self.calls``."""

    def __init__(self, field):
        self.field, self.calls = field, {"forward": 0, "vjp": 0}

    def forward(self, t, y, params):
        self.calls["forward"] += 1
        return self.field.forward(t, y, params)

    def vjp(self, cache, y_bar, need_params=True):
        self.calls["vjp"] += 1
        return self.field.vjp(cache, y_bar, need_params=need_params)
