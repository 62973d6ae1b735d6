"""Exceptions of the market package.

Every message names where the bad input came from (file, row, key) and the value that was wrong.
"""

from __future__ import annotations


class RayscalpError(Exception):
    """Base class of every error this project raises on purpose."""


class DataError(RayscalpError, ValueError):
    """Input data is malformed, non-finite, negative, unsorted or corrupt."""


class ConfigError(RayscalpError, ValueError):
    """A configuration file or override has an unknown key, a wrong type or an out-of-range value."""


class FrameError(DataError):
    """One websocket frame could not be parsed; carries the reason used for counting."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)
