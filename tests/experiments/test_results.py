"""HDF5 results: the reader returns what the writer was given; file naming; the CLI's checks."""
import numpy as np
import pytest

from experiments import registry, results
from experiments.__main__ import main
from tests.experiments._record import assert_run_record


def test_load_returns_numpy_values_as_written(tmp_path):
    config = {"steps": np.int64(5), "tol": np.float32(0.5), "flag": np.bool_(True),
              "grid": np.arange(3), "path": tmp_path}
    rows = [{"passed": np.bool_(False), "nfe": np.int64(7), "err": np.float64(1e-3)}]
    metrics = {"loss": np.array([3.0, 2.0]), "ok": np.array([True, False]),
               "total": np.float64(4.5)}
    res = results.load(results.save(tmp_path / "r.h5", "x", config, metrics,
                                    tables={"rows": rows}))
    assert res["config"] == {"steps": 5, "tol": 0.5, "flag": True, "grid": [0, 1, 2],
                             "path": str(tmp_path)}
    assert type(res["config"]["steps"]) is int and type(res["config"]["flag"]) is bool
    assert res["tables"]["rows"] == [{"passed": False, "nfe": 7, "err": 1e-3}]
    assert type(res["tables"]["rows"][0]["passed"]) is bool
    assert np.array_equal(res["metrics"]["loss"], [3.0, 2.0])
    assert res["metrics"]["ok"].dtype == bool and res["metrics"]["total"] == 4.5


def test_save_rejects_text_metrics_naming_them(tmp_path):
    with pytest.raises(ValueError, match="'names'.*tables"):
        results.save(tmp_path / "r.h5", "x", {}, {"names": ["a", "b"]})


def test_quick_runs_do_not_overwrite_full_results(tmp_path):
    assert results.output_path(tmp_path, "digits", False) == tmp_path / "digits.h5"
    assert results.output_path(tmp_path, "digits", True) == tmp_path / "digits_quick.h5"
    assert results.output_path(tmp_path, "x", True, ".png").name == "x_quick.png"


@pytest.mark.parametrize("seed", ["-1", "x", "1.5"])
def test_cli_rejects_bad_seed(seed, capsys):
    with pytest.raises(SystemExit):
        main(["rda_evolution", "--quick", "--seed", seed])
    err = capsys.readouterr().err
    assert "--seed" in err and "non-negative integer" in err and repr(seed) in err


def test_cli_rejects_out_that_is_a_file(tmp_path, capsys):
    (tmp_path / "f").write_text("")
    assert main(["rda_evolution", "--quick", "--out", str(tmp_path / "f")]) == 2
    assert "is an existing file" in capsys.readouterr().err


def test_cli_list_names_every_experiment(capsys):
    assert main(["--list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == list(registry.EXPERIMENTS)


def test_gradcheck_report_quick(tmp_path):
    assert main(["gradcheck", "--quick", "--out", str(tmp_path), "--seed", "2"]) == 0
    (path,) = results.find_runs(tmp_path, "gradcheck", seed=2)
    res = results.load(path)
    assert_run_record(res, "gradcheck", 2)
    rows = res["tables"]["report"]
    assert rows and all(r["passed"] is True for r in rows)
    assert res["metrics"]["wall_s"].shape == (len(rows),) and np.all(res["metrics"]["wall_s"] > 0)


def test_files_in_the_format_before_issue_10_still_load(tmp_path):
    """Tables as JSON attributes, no units, no status: what `save` wrote before issue 10."""
    import json

    import h5py
    path = tmp_path / "digits.h5"
    with h5py.File(path, "w") as f:
        for key, value in {"experiment": "digits", "config": '{"seed": 0}',
                           "versions": '{"numpy": "2.0"}', "git_commit": "abc",
                           "backend": "numpy", "device": "cpu (x86_64, 2 usable cores)",
                           "created": "2025-01-01T00:00:00+00:00"}.items():
            f.attrs[key] = value
        f.create_group("metrics").create_dataset("loss", data=np.array([2.0, 1.0]))
        f.create_group("tables").attrs["rows"] = json.dumps([{"a": 1, "b": "x"}])
    res = results.load(path)
    assert res["tables"] == {"rows": [{"a": 1, "b": "x"}]} and res["status"] == "finished"
    assert res["units"] == {"loss": None} and res["git_dirty"] is None
    assert np.array_equal(res["metrics"]["loss"], [2.0, 1.0])


def test_tables_round_trip_as_compound_datasets(tmp_path):
    import h5py
    rows = [{"name": "a", "n": 1, "ok": True, "err": 0.5},
            {"name": "b", "n": 2, "ok": False, "extra": [1, 2]}]        # 'err' missing in row 2
    path = results.save(tmp_path / "r.h5", "x", {}, {"m": np.zeros(1)}, tables={"t": rows})
    assert results.load(path)["tables"]["t"] == rows
    with h5py.File(path, "r") as f:
        ds = f["tables/t"]
        assert ds.dtype.names == ("name", "n", "ok", "err", "extra")
        assert ds["n"].tolist() == [1, 2] and ds.attrs["present"][1].tolist() == [
            True, True, True, False, True]
        assert list(ds.attrs["json_columns"]) == ["extra"]


def test_moved_names_stay_importable_from_results():
    """Provenance moved to experiments.provenance, the sweep index to experiments.sweepindex
    and the run-file names to experiments._runfiles; ``experiments.results.run_metadata``,
    ``.sweep_table``, ``.find_runs`` and the other names of its ``__all__`` (documented there)
    are the same objects."""
    from experiments import _runfiles, provenance, sweepindex
    from experiments.results import find_runs, output_path, run_metadata, sweep_table
    assert run_metadata is provenance.run_metadata and sweep_table is sweepindex.sweep_table
    assert find_runs is _runfiles.find_runs and output_path is _runfiles.output_path
    for name in sweepindex.__all__:
        assert getattr(results, name) is getattr(sweepindex, name)
    assert set(results.__all__) >= set(sweepindex.__all__) - {"SWEEP_FORMAT"}
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        results.no_such_name  # noqa: B018


@pytest.mark.parametrize("statement", ["import experiments.sweepindex",
                                       "from experiments.results import sweep_table",
                                       "from experiments.sweep import plan_sweep"])
def test_new_modules_import_first_in_a_fresh_process(statement):
    """experiments.sweepindex imports experiments.results, which resolves the sweep-index
    names lazily: either may be imported first."""
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-c", statement], cwd=root, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
