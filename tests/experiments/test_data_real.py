"""MNIST and FashionMNIST as fetched into the data cache: checksums, shapes, per-class counts and
the canonical pixel statistics. Skipped, naming the fetch command, where the cache lacks them
(`.ci/run` fetches both before the tests)."""
import hashlib

import numpy as np
import pytest

from experiments import data, idx

# Per-class counts (digits / Zalando classes 0..9) of the official files.
COUNTS = {
    "mnist": ([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949],
              [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]),
    "fashion-mnist": ([6000] * 10, [1000] * 10),
}
# Canonical training-set statistics of byte / 255, to 4 decimals.
STATS = {"mnist": (0.1307, 0.3081), "fashion-mnist": (0.2860, 0.3530)}
LOADERS = {"mnist": data.load_mnist, "fashion-mnist": data.load_fashion_mnist}


def _cached(name):
    folder = data.dataset_dir(name)
    missing = [f"{s}.gz" for s in data.IDX_FILES.values() if not (folder / f"{s}.gz").is_file()]
    if missing:
        pytest.skip(f"{data.DATASETS[name].title} is not in the data cache {folder} (missing "
                    f"{', '.join(missing)}); run `python -m experiments.data fetch {name}`")
    return folder


@pytest.fixture(scope="module", params=sorted(data.DATASETS))
def real(request):
    """``(name, folder, raw uint8 ImageSplit)`` for each data set present in the cache."""
    name = request.param
    folder = _cached(name)
    return name, folder, LOADERS[name](dtype=np.uint8, layout="nhw")


def _pixel_stats(images):
    """Exact mean and std of ``images / 255`` from the byte histogram."""
    hist = np.bincount(images.ravel(), minlength=256).astype(np.float64)
    values = np.arange(256) / 255.0
    mean = hist @ values / hist.sum()
    return mean, np.sqrt(hist @ (values - mean) ** 2 / hist.sum())


def test_real_files_match_recorded_checksums(real):
    name, folder, _ = real
    ds = data.DATASETS[name]
    for stem, digest in ds.sha256.items():
        assert hashlib.sha256(idx._read_idx_bytes(folder / f"{stem}.gz")).hexdigest() == digest
    # SHA256SUMS lists the .gz files as written (`sha256sum -c SHA256SUMS` passes).
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        digest, fname = line.split()
        assert hashlib.sha256((folder / fname).read_bytes()).hexdigest() == digest
    if name == "fashion-mnist":   # copied unchanged from the Debian package
        for stem, digest in data.FASHION_MNIST_GZ_SHA256.items():
            assert hashlib.sha256((folder / f"{stem}.gz").read_bytes()).hexdigest() == digest


def test_real_shapes_and_types(real):
    _, _, split = real
    assert split.x_train.shape == (60000, 28, 28) and split.x_test.shape == (10000, 28, 28)
    assert split.y_train.shape == (60000,) and split.y_test.shape == (10000,)
    assert split.x_train.dtype == np.uint8 and split.y_train.dtype == np.int64
    assert split.x_train.max() == 255 and split.x_train.min() == 0


def test_real_label_counts(real):
    name, _, split = real
    train, test = COUNTS[name]
    assert np.bincount(split.y_train, minlength=10).tolist() == train
    assert np.bincount(split.y_test, minlength=10).tolist() == test


def test_real_canonical_statistics(real):
    name, _, split = real
    mean, std = _pixel_stats(split.x_train)
    assert (round(mean, 4), round(std, 4)) == STATS[name]
    assert (data.DATASETS[name].mean, data.DATASETS[name].std) == STATS[name]


def test_real_float_loading_normalize_and_subset(real):
    name, _, raw = real
    split = LOADERS[name](normalize=True, n_train=10000, n_val=5000, n_test=2000, seed=0)
    assert split.x_train.shape == (10000, 1, 28, 28) and split.x_train.dtype == np.float32
    assert split.x_val.shape == (5000, 1, 28, 28) and split.x_test.shape == (2000, 1, 28, 28)
    # The 10k subset is a random draw: its standardized pixels are close to mean 0, std 1.
    assert abs(float(split.x_train.mean())) < 0.02 and abs(float(split.x_train.std()) - 1) < 0.02
    plain = LOADERS[name](split="test", dtype=np.float64, layout="flat")
    np.testing.assert_array_equal(plain.x_test, raw.x_test.reshape(10000, 784) / 255.0)
    assert plain.x_train.shape == (0, 784)


def test_fetch_again_finds_the_files_in_place(real):
    name, folder, _ = real
    lines = []
    assert data.fetch(name, log=lines.append) == folder
    assert lines == [f"{data.DATASETS[name].title}: already present and verified in {folder}"]
