"""Content fingerprints of data files and arrays, for run records and snapshots.

A fingerprint changes when any byte changes and never depends on paths, mtimes or read order.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def files_fingerprint(paths: Iterable[Path]) -> str:
    """One fingerprint over several files: the hash of their sorted (name, size, sha256) entries."""
    entries = sorted((Path(p).name, Path(p).stat().st_size, file_sha256(Path(p))) for p in paths)
    digest = hashlib.sha256()
    for name, size, sha in entries:
        digest.update(f"{name}\0{size}\0{sha}\n".encode())
    return digest.hexdigest()


def array_fingerprint(*arrays: np.ndarray) -> str:
    """Fingerprint of arrays by dtype, shape and bytes (C order)."""
    digest = hashlib.sha256()
    for arr in arrays:
        arr = np.ascontiguousarray(arr)
        digest.update(str(arr.dtype.descr).encode())
        digest.update(str(arr.shape).encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()
