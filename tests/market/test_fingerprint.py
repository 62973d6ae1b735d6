"""Fingerprints change with any byte and do not depend on order or paths."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from market.fingerprint import array_fingerprint, files_fingerprint


def test_files_fingerprint_is_order_free_and_changes_with_one_byte(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_bytes(b"1,2,3\n")
    b.write_bytes(b"4,5,6\n")
    first = files_fingerprint([a, b])
    assert first == files_fingerprint([b, a])
    b.write_bytes(b"4,5,7\n")
    assert files_fingerprint([a, b]) != first


def test_array_fingerprint_sees_values_dtype_and_shape() -> None:
    x = np.arange(6, dtype=np.float64)
    base = array_fingerprint(x)
    assert base == array_fingerprint(x.copy())
    assert base != array_fingerprint(x.astype(np.float32))
    assert base != array_fingerprint(x.reshape(2, 3))
    y = x.copy()
    y[3] = np.nextafter(y[3], 10)
    assert base != array_fingerprint(y)
