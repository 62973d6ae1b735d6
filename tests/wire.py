"""What the HTTP tests put on the wire: a free port to serve on, and arrays as ``.npy`` bodies."""

from __future__ import annotations

import io
import socket

import numpy as np


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on at ``host`` now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def npy_bytes(array: np.ndarray, **kwargs: object) -> bytes:
    """``array`` as the bytes of a ``.npy`` file (``kwargs`` go to ``np.save``, e.g. ``allow_pickle``)."""
    buf = io.BytesIO()
    np.save(buf, array, **kwargs)
    return buf.getvalue()
