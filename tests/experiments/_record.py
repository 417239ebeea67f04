"""What every experiment's HDF5 file must hold (README "Experiments", DESIGN.md sect. 8), and a
field that counts its own evaluations (to check the NFE the experiments report)."""
import numpy as np


def assert_run_record(res, experiment, seed):
    """Configuration, versions, git commit, backend, device and total wall time are recorded."""
    assert res["experiment"] == experiment and res["config"]["seed"] == seed
    assert {"python", "numpy", "scipy", "h5py", "adjointcore"} <= set(res["versions"])
    assert res["git_commit"] and res["backend"] == "numpy"
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
