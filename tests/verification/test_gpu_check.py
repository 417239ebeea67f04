"""The GPU verification script runs end to end on the device emulation (quick sizes), so it is
ready for the first machine with a GPU; its gradient comparison there is <= 1e-12 relative,
here bitwise (the emulation computes with NumPy)."""
import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"


def test_gpu_check_runs_on_the_emulated_device(tmp_path):
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "summary.json"
    assert module.main(["--backend", "emulated", "--quick", "--repeat", "1",
                        "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["passed"] and len(summary["gradients"]) == 8
    assert all(row[key] == 0.0 for row in summary["gradients"]
               for key in ("y", "x_bar", "params_bar"))
    assert len(summary["timings"]) == 5
