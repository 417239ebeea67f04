"""The IDX file format of MNIST-style data: reading and writing, raw or gzipped.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the rank), one big-endian
``uint32`` per dimension, then the elements in C order, big-endian. :func:`read_idx` checks all
of it and names the file in every error (:class:`~experiments.data_errors.IDXFormatError`);
:func:`write_idx` writes reproducible files (gzip without name or time stamp).

See Also
--------
experiments.data : the data sets and loaders that read their IDX files with this module (and
    re-export :func:`read_idx` and :func:`write_idx`).
experiments.datafetch : fetching MNIST and FashionMNIST, which writes and checks IDX files.
experiments.data_errors : the exceptions raised here.
"""
from __future__ import annotations

import gzip
import hashlib
import struct
import zlib
from pathlib import Path

import numpy as np

from .data_errors import IDXFormatError

__all__ = ["read_idx", "write_idx"]

_IDX_TYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_IDX_CODES = {dt.newbyteorder("=") if dt.itemsize > 1 else dt: code
              for code, dt in _IDX_TYPES.items()}


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
