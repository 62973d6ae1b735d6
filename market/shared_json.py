"""JSON in and out, safely: a body or file parsed with a check of its top-level type, a file written atomically.

A parse error names where the JSON came from and shows a bounded snippet of it; a write never leaves a partial
file where a reader can see it (the old file or the new one, nothing between).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, TypeVar

import orjson

from .datasets import fsync_dir
from .errors import DataError

__all__ = ["SNIPPET_CHARS", "parse_json", "replacing", "write_json"]

#: How much of a bad body an error message quotes.
SNIPPET_CHARS = 160

_T = TypeVar("_T", dict, list)
_JSON_NAMES = {dict: "object", list: "list"}


def parse_json(raw: bytes | str, expected: type[_T], where: str, error: type[Exception] = DataError) -> _T:
    """The JSON value of ``raw``, which must be a JSON object (``expected=dict``) or list (``expected=list``).

    Parameters
    ----------
    raw : bytes or str
    expected : dict or list
    where : str
        What ``raw`` is, for messages (``"checkpoint file .../meta.json"``, ``"GET .../historicalTrades: body"``).
    error : exception class
        Raised on bad input, with one message argument.

    Raises
    ------
    error
        ``"<where> is not JSON (<reason>): <snippet>"`` or ``"<where>: expected a JSON <kind>, got <snippet>"``.
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise error(f"{where} is not JSON ({exc}): {raw[:SNIPPET_CHARS]!r}") from None
    if not isinstance(value, expected):
        raise error(f"{where}: expected a JSON {_JSON_NAMES[expected]}, got {str(value)[:SNIPPET_CHARS]!r}")
    return value


@contextmanager
def replacing(path: Path) -> Iterator[BinaryIO]:
    """A binary file to write that takes the place of ``path`` when the block ends without an error.

    The bytes go to a temporary file beside ``path``, are flushed to the disk, then renamed over ``path`` and the
    folder is synced; on an error the temporary file is removed and ``path`` is left as it was. Parent folders are
    created.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json(path: Path, value: object, *, indent: bool = False) -> Path:
    """Write ``value`` as JSON to ``path`` atomically (see :func:`replacing`); NaN is written as null.

    Returns
    -------
    Path
        ``path``.
    """
    data = orjson.dumps(value, option=orjson.OPT_INDENT_2 if indent else None)
    with replacing(path) as fh:
        fh.write(data)
    return path
