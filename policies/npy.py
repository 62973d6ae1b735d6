"""The one ``.npy`` request decoder of the serving code: total (every input gets an array or a PayloadError).

Validates the header (format version, numeric dtype, a shape of non-negative Python integers, at most two
dimensions, its size computed with Python integers and bounded by the caller's element cap) and that the data
is exactly as long as the header says, before anything is allocated; the array is then a view on the body.
Never unpickles, never trusts a header.
"""

from __future__ import annotations

import io
import math

import numpy as np

from market.errors import DataError

__all__ = ["MAX_HEADER_BYTES", "PayloadError", "decode_npy"]

#: A ``.npy`` header longer than this is refused (numpy writes a few hundred bytes at most).
MAX_HEADER_BYTES = 4096


class PayloadError(DataError):
    """A request body or value that cannot be served (answered with HTTP 422 and this message)."""


def _header(buf: io.BytesIO) -> tuple[object, bool, np.dtype]:
    try:
        version = np.lib.format.read_magic(buf)
    except Exception as exc:  # numpy raises ValueError or EOFError for a body that is not .npy
        raise PayloadError(f"body is not a .npy array ({type(exc).__name__}: {exc})") from None
    if version not in ((1, 0), (2, 0)):
        raise PayloadError(f"unsupported .npy format version {version}")
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    try:
        return read(buf, max_header_size=MAX_HEADER_BYTES)
    except Exception as exc:  # ValueError, EOFError, SyntaxError... for a garbage or oversized header
        raise PayloadError(f"body is not a .npy array ({type(exc).__name__}: {str(exc)[:200]})") from None


def decode_npy(body: bytes, *, max_elements: int | None = None) -> np.ndarray:
    """Read a ``.npy`` body into an array view (``[S]`` or ``[B, S]``, numeric), refusing anything else.

    Parameters
    ----------
    body : bytes
        The request body.
    max_elements : int, optional
        The most values one request may hold (``max_rows x state_size`` for a policy); checked on the
        header, before the data is looked at.

    Raises
    ------
    PayloadError
        Empty body, not a ``.npy`` file, an unsupported version or an oversized header, an object,
        structured or non-numeric dtype, a shape with a negative, non-integer or too many dimensions, more
        values than ``max_elements``, or data of another length than the header says.
    """
    if not body:
        raise PayloadError("empty body: expected a .npy array [B, S] float32")
    buf = io.BytesIO(body)
    shape, fortran, dtype = _header(buf)
    if (
        not isinstance(dtype, np.dtype)
        or dtype.hasobject
        or dtype.fields is not None
        or dtype.subdtype is not None  # a sub-array dtype ("(70,)<f4") hides dimensions the shape does not show
        or dtype.kind not in "iuf"
    ):
        raise PayloadError(f"states must be float32, got dtype {getattr(dtype, 'str', dtype)!r}")
    if not isinstance(shape, tuple) or not all(type(d) is int and d >= 0 for d in shape):  # bool is no dimension
        raise PayloadError(f".npy shape {str(shape)[:100]} is not made of non-negative integers")
    if len(shape) > 2:
        raise PayloadError(f"states must be [S] or [B, S], got shape {shape} (.npy shape of {len(shape)} dimensions)")
    count = math.prod(shape)  # Python ints: (2**32, 2**32) does not wrap around to 0
    if max_elements is not None and count > max_elements:
        raise PayloadError(f".npy shape {shape} holds {count} values; at most {max_elements} per request")
    data = len(body) - buf.tell()
    if data != count * dtype.itemsize:
        raise PayloadError(
            f".npy header says shape {shape} {dtype.str} ({count * dtype.itemsize} bytes), body has {data}"
        )
    try:
        array = np.frombuffer(body, dtype=dtype, count=count, offset=buf.tell())
        return array.reshape(shape, order="F" if fortran else "C")
    except ValueError as exc:  # numpy's own limits on what the header claims: a refusal, never a 5xx
        raise PayloadError(f".npy body does not read as shape {shape} {dtype.str}: {exc}") from None
