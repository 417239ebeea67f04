"""``experiments.results.load`` on paths that are not results files (issue 9, point 6).

Each case raises the project's own exception (``ResultsFileError``, a ValueError; missing paths
FileNotFoundError) naming the path, saying what is wrong and how to regenerate the file, instead
of h5py's errors, which omit the path.
"""
from __future__ import annotations

import sys
import types

import h5py
import numpy as np
import pytest

from experiments import results
from experiments.results import ResultsFileError


@pytest.fixture
def registry(monkeypatch):
    """A stand-in registry, so the hint's exact command does not depend on importing every
    experiment module."""
    fake = types.ModuleType("experiments.registry")
    fake.EXPERIMENTS = {"digits": None, "theorem1": None}
    monkeypatch.setitem(sys.modules, "experiments.registry", fake)
    monkeypatch.setattr(sys.modules["experiments"], "registry", fake, raising=False)
    return fake


def _saved(path):
    return results.save(path, "digits", {"steps": 3}, {"loss": np.linspace(1.0, 0.0, 500)},
                        tables={"rows": [{"a": 1}]})


def _message(path) -> str:
    with pytest.raises(ResultsFileError) as info:
        results.load(path)
    msg = str(info.value)
    assert f"`path` {str(path)!r}" in msg, msg
    return msg


def test_results_file_error_is_a_value_error():
    assert issubclass(ResultsFileError, ValueError)


def test_valid_file_still_loads(tmp_path):
    res = results.load(_saved(tmp_path / "digits.h5"))
    assert res["experiment"] == "digits" and res["config"] == {"steps": 3}
    assert res["tables"] == {"rows": [{"a": 1}]} and res["metrics"]["loss"].shape == (500,)


def test_truncated_file(tmp_path, registry):
    path = _saved(tmp_path / "digits_quick.h5")
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    msg = _message(path)
    assert "truncated or corrupt" in msg and "truncated file" in msg   # HDF5's own detail kept
    assert f"python -m experiments digits --quick --out {str(tmp_path)!r}" in msg


def test_empty_file(tmp_path, registry):
    path = tmp_path / "theorem1.h5"
    path.write_bytes(b"")
    msg = _message(path)
    assert "is empty (0 bytes)" in msg and "interrupted" in msg
    assert f"python -m experiments theorem1 --out {str(tmp_path)!r}" in msg


def test_text_file(tmp_path, registry):
    path = tmp_path / "notes.h5"
    path.write_text("loss: 0.1\n")
    msg = _message(path)
    assert "is not an HDF5 file" in msg and "b'loss: 0.1\\n'" in msg
    assert "rerun the experiment that wrote it" in msg and "--list" in msg
    assert f"python -m experiments NAME [--quick] --out {str(tmp_path)!r}" in msg


def test_foreign_hdf5_file(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["weights"] = np.zeros(3)
        f.attrs["experiment"] = "someone else's"
    msg = _message(path)
    assert "not a results file written by experiments.results.save" in msg
    assert "'config'" in msg and "'experiment'" not in msg.split("lacks")[1].split("]")[0]
    assert "the group 'metrics'" in msg and "read it with h5py directly" in msg


def test_hdf5_file_with_damaged_attribute(tmp_path, registry):
    path = _saved(tmp_path / "digits.h5")
    with h5py.File(path, "a") as f:
        f.attrs["config"] = "{not json"
    msg = _message(path)
    assert "is damaged: the attribute 'config' cannot be read (JSONDecodeError" in msg
    assert "python -m experiments digits --out" in msg


def test_directory(tmp_path):
    _saved(tmp_path / "digits.h5")
    msg = _message(tmp_path)
    assert "is a directory, not a results file" in msg and "['digits.h5']" in msg
    assert "output_path(" in msg


def test_missing_path(tmp_path):
    path = tmp_path / "absent.h5"
    with pytest.raises(FileNotFoundError) as info:
        results.load(path)
    msg = str(info.value)
    assert f"`path` {str(path)!r} does not exist" in msg and "python -m experiments" in msg


def test_path_of_wrong_type():
    with pytest.raises(TypeError, match=r"`path` must be a str or os.PathLike.*got int 3"):
        results.load(3)


def test_hint_falls_back_when_the_registry_cannot_be_imported(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "experiments.registry", None)   # import raises ImportError
    path = tmp_path / "digits.h5"
    path.write_bytes(b"")
    msg = _message(path)
    assert "is empty (0 bytes)" in msg
    assert f"python -m experiments NAME [--quick] --out {str(tmp_path)!r}" in msg


def test_truncated_run_file_hint_names_seed_and_mode(tmp_path, registry):
    """Run files are named NAME[_quick]-HASH-seedN[.ckpt].h5 since issue 10: the hint gives the
    seed, the mode, and --resume for a checkpoint."""
    path = _saved(tmp_path / "digits_quick-0123456789-seed3.h5")
    path.write_bytes(path.read_bytes()[:200])
    msg = _message(path)
    assert f"python -m experiments digits --quick --seed 3 --out {str(tmp_path)!r}" in msg
    assert "same --set options" in msg
    ckpt = tmp_path / "digits-0123456789-seed0.ckpt.h5"
    ckpt.write_bytes(b"")
    assert f"digits --seed 0 --out {str(tmp_path)!r} --resume" in _message(ckpt)
