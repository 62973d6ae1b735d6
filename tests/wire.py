"""What the HTTP tests put on the wire: a free port to serve on, and arrays as ``.npy`` bodies."""

from __future__ import annotations

import io
import os
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


def api_key_in_env(env: str, prefix: str = "test-key-") -> str:
    """The key the tests' apps require, from ``env``; a fresh random one is set there first when it is unset.

    Set at import, before the session's Ray starts, so the replicas inherit it through the environment.
    """
    os.environ.setdefault(env, prefix + os.urandom(12).hex())
    return os.environ[env]
