"""Checkpoint storage of training runs: a local directory or any ``pyarrow.fs`` URI (``s3://bucket/prefix``).

Owns the layout (one folder ``ckpt-<updates>`` per checkpoint, ``meta.json`` written last as the mark that
it is complete), finding the latest complete one and keeping only the newest M. Never interprets what the
files hold: the learner writes and reads them.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pyarrow.fs as pafs

from market.errors import ConfigError, DataError
from market.shared_json import parse_json

META = "meta.json"
"""Written last: a checkpoint folder without it is incomplete (a write cut short) and is never read."""

_NAME = re.compile(r"^ckpt-(\d{12})$")


@dataclass(frozen=True, slots=True)
class CheckpointInfo:
    """One complete checkpoint: its folder name, the learner updates it holds and its location."""

    name: str
    updates: int
    uri: str

    def file_uri(self, filename: str) -> str:
        """Location of one of its files (a path for local storage, a URI otherwise)."""
        return f"{self.uri}/{filename}"


def checkpoint_name(updates: int) -> str:
    """``ckpt-<updates, 12 digits>``: names sort in update order."""
    if not 0 <= updates < 10**12:
        raise ValueError(f"checkpoint updates {updates} outside [0, 1e12)")
    return f"ckpt-{updates:012d}"


def _split(uri: str | Path) -> tuple[pafs.FileSystem, str, str]:
    """(filesystem, path inside it, printable root) of a local directory or a URI."""
    text = str(uri).strip()
    if not text:
        raise ConfigError("checkpoint storage: empty location")
    if "://" not in text:
        local = Path(text).expanduser().resolve()
        return pafs.LocalFileSystem(), local.as_posix(), local.as_posix()
    try:
        fs, path = pafs.FileSystem.from_uri(text)
    except (ValueError, OSError) as exc:  # pyarrow: ArrowInvalid (a ValueError) or an OSError of the backend
        raise ConfigError(f"checkpoint storage {text!r}: not a filesystem URI pyarrow can open: {exc}") from exc
    return fs, path.rstrip("/"), text.rstrip("/")


class CheckpointStore:
    """The checkpoints of one experiment under ``uri``.

    Parameters
    ----------
    uri : str or Path
        A local directory (created on the first write) or a ``pyarrow.fs`` URI.
    keep_last : int
        Complete checkpoints kept after each write; older ones are deleted.
    """

    def __init__(self, uri: str | Path, keep_last: int = 3) -> None:
        if keep_last < 1:
            raise ConfigError(f"checkpoint keep_last must be >= 1 (got {keep_last})")
        self.fs, self.root, self.uri = _split(uri)
        self.keep_last = int(keep_last)
        self.local = isinstance(self.fs, pafs.LocalFileSystem)

    def _dir(self, name: str) -> str:
        return f"{self.root}/{name}"

    def _info(self, name: str) -> CheckpointInfo:
        match = _NAME.match(name)
        if match is None:
            raise DataError(f"{self.uri}: {name!r} is not a checkpoint folder name")
        return CheckpointInfo(name, int(match.group(1)), f"{self.uri}/{name}")

    def _folders(self) -> list[str]:
        try:
            entries = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        except OSError as exc:
            raise DataError(f"checkpoint storage {self.uri}: cannot list: {exc}") from exc
        return sorted(e.base_name for e in entries if e.type == pafs.FileType.Directory and _NAME.match(e.base_name))

    def _complete(self, name: str) -> bool:
        return self.fs.get_file_info(f"{self._dir(name)}/{META}").type == pafs.FileType.File

    def list(self) -> list[CheckpointInfo]:
        """Complete checkpoints, oldest first."""
        return [self._info(name) for name in self._folders() if self._complete(name)]

    def latest(self) -> CheckpointInfo | None:
        """The complete checkpoint with the most updates, or ``None`` when there is none."""
        found = self.list()
        return found[-1] if found else None

    def write(self, updates: int, files: Mapping[str, bytes | Path], meta: Mapping[str, Any]) -> CheckpointInfo:
        """Write one checkpoint: every file, then ``meta.json`` (which completes it), then prune old ones.

        Parameters
        ----------
        updates : int
            Learner updates the checkpoint holds (its name).
        files : mapping of file name -> bytes or local Path
            The payload; a Path is copied.
        meta : mapping
            JSON-ready description (counters, config...), also readable with :meth:`read_meta`.

        Returns
        -------
        CheckpointInfo
        """
        name = checkpoint_name(updates)
        folder = self._dir(name)
        if META in files:
            raise ValueError(f"{META} is written by the store itself")
        self.fs.create_dir(folder, recursive=True)
        for filename, payload in files.items():
            self._put(f"{folder}/{filename}", payload)
        self._put(f"{folder}/{META}", orjson.dumps(dict(meta), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
        self.prune()
        return self._info(name)

    def _put(self, path: str, payload: bytes | Path) -> None:
        tmp = path + ".tmp"
        if isinstance(payload, Path):
            with payload.open("rb") as src, self.fs.open_output_stream(tmp) as dst:
                shutil.copyfileobj(src, dst, length=8 << 20)
        else:
            with self.fs.open_output_stream(tmp) as dst:
                dst.write(payload)
        self.fs.move(tmp, path)

    def prune(self) -> list[CheckpointInfo]:
        """Delete all but the newest ``keep_last`` complete checkpoints, and incomplete folders older than
        the newest complete one (left by a write that was cut short); return the deleted complete ones."""
        folders = self._folders()
        complete = [n for n in folders if self._complete(n)]
        drop = complete[: max(0, len(complete) - self.keep_last)]
        newest = complete[-1] if complete else None
        stale = [n for n in folders if n not in complete and newest is not None and n < newest]
        for name in drop + stale:
            self.fs.delete_dir(self._dir(name))
        return [self._info(n) for n in drop]

    def read_bytes(self, info: CheckpointInfo, filename: str) -> bytes:
        """The bytes of one file of a checkpoint.

        Raises
        ------
        DataError
            When the file is missing or unreadable (the message names it).
        """
        path = f"{self._dir(info.name)}/{filename}"
        try:
            with self.fs.open_input_stream(path) as src:
                return src.read()
        except (FileNotFoundError, OSError) as exc:
            raise DataError(f"checkpoint file {info.file_uri(filename)} cannot be read: {exc}") from exc

    def read_meta(self, info: CheckpointInfo) -> dict[str, Any]:
        """The ``meta.json`` of a checkpoint.

        Raises
        ------
        DataError
            When it is not valid JSON.
        """
        return parse_json(self.read_bytes(info, META), dict, f"checkpoint file {info.file_uri(META)}")

    def local_path(self, info: CheckpointInfo, filename: str, scratch: Path) -> Path:
        """A local path holding one file of a checkpoint: the file itself for local storage, else a copy
        downloaded into ``scratch``."""
        if self.local:
            path = Path(self._dir(info.name)) / filename
            if not path.is_file():
                raise DataError(f"checkpoint file {path} does not exist")
            return path
        scratch.mkdir(parents=True, exist_ok=True)
        target = scratch / f"{info.name}-{filename}"
        target.write_bytes(self.read_bytes(info, filename))
        return target
