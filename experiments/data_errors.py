"""Exceptions of the data code: :class:`DataError` and its subclasses.

Every error derives from :class:`DataError` and also from the built-in exception that fits
(``FileNotFoundError``, ``ValueError`` or ``RuntimeError``); each message names the path or
argument at fault and the fix. :mod:`experiments.data` re-exports them all.

See Also
--------
experiments.data : the data sets, their recorded checksums, the cache folders and the loaders.
experiments.idx : reading and writing IDX files.
experiments.datafetch : fetching MNIST and FashionMNIST into the cache, and the command line
    ``python -m experiments.data fetch ...``.
"""
from __future__ import annotations

__all__ = ["DataError", "DataMissingError", "IDXFormatError", "DataChecksumError", "FetchError"]


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
