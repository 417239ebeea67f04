"""Data sets available without internet: scikit-learn's bundled digits, generated 2-D toys,
and a CIFAR-10 loader for the standard python batch files (which cannot ship here)."""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = ["Split", "load_digits_split", "load_cifar10"]


class Split(NamedTuple):
    """Train/test arrays: features ``(N, ...)`` float, labels ``(N,)`` int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits_split(seed: int = 0, n_test: int = 297, dtype=np.float64) -> Split:
    """scikit-learn's 8x8 digits (1797 images, shipped with the package), scaled to [0, 1].

    Parameters
    ----------
    seed : int
        Seeds the train/test permutation.
    n_test : int
        Test-set size (default: the last 297 of a permutation, leaving 1500 for training).
    dtype : dtype

    Returns
    -------
    Split
        ``x`` of shape ``(N, 64)``.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - scikit-learn is a declared dependency
        raise ImportError("the digits data ships with scikit-learn: pip install "
                          "'adjointcore[data]'") from exc
    data = load_digits()
    x = (data.data / 16.0).astype(dtype)
    y = data.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(y))
    test, train = perm[:n_test], perm[n_test:]
    return Split(x[train], y[train], x[test], y[test])


def load_cifar10(root, dtype=np.float32) -> Split:
    """CIFAR-10 from the standard python batches (``data_batch_1..5``, ``test_batch``).

    Parameters
    ----------
    root : str or Path
        Folder holding the extracted ``cifar-10-batches-py`` files.

    Returns
    -------
    Split
        ``x`` of shape ``(N, 3, 32, 32)`` scaled to [0, 1].

    Raises
    ------
    FileNotFoundError
        Naming the missing file and where to put the data.
    """
    root = Path(root)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    missing = [n for n in names if not (root / n).exists()]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 batches {missing} not found in {str(root)!r}. Download "
            f"cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html on a machine "
            f"with internet, extract it, and pass the `cifar-10-batches-py` folder as `root`.")

    def read(name):
        with open(root / name, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        x = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        return (x / 255.0).astype(dtype), np.asarray(batch["labels"], dtype=np.int64)

    parts = [read(n) for n in names[:5]]
    x_test, y_test = read(names[5])
    return Split(np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
                 x_test, y_test)
