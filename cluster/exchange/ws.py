"""Binance's websocket market-stream protocol as the local replay exchange speaks it, without sockets.

Owns stream paths (``/ws/<stream>``, ``/stream?streams=a/b``), one connection's subscriptions and its
replies to SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS / SET_PROPERTY / GET_PROPERTY, and the seeded
malformed frames of fault injection. Never sends anything itself.
"""

from __future__ import annotations

import random
import string
from collections.abc import Mapping
from urllib.parse import parse_qs, urlsplit

import orjson

METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_GARBAGE = string.ascii_letters + string.digits + string.punctuation + " "


def stream_request(target: str) -> tuple[list[str], bool] | None:
    """Streams and combined flag of a websocket path (``/ws/<s>[/<s>...]``, ``/ws``, ``/stream?streams=a/b``).

    None when the path is none of Binance's stream endpoints.
    """
    parts = urlsplit(target)
    path = parts.path.rstrip("/")
    if path == "/stream":
        return [s for v in parse_qs(parts.query).get("streams", []) for s in v.split("/") if s], True
    if path == "/ws":
        return [], False
    if path.startswith("/ws/"):
        return [s for s in path[4:].split("/") if s], False
    return None


def _error(code: int, msg: str, rid: object = None) -> dict[str, object]:
    return {"error": {"code": code, "msg": msg}, "id": rid}


def _valid_id(rid: object) -> bool:
    # Binance accepts an integer, an alphanumeric string of at most 36 characters, or null.
    if rid is None or (isinstance(rid, int) and not isinstance(rid, bool)):
        return True
    return isinstance(rid, str) and len(rid) <= 36 and rid.isalnum()


class StreamSession:
    """One connection's subscriptions (in subscription order) and its combined-payload flag.

    Parameters
    ----------
    stream_index : mapping of str to int
        Stream names the replay has, to their ids; a subscription to another name is accepted and silent,
        as Binance does for a stream with no traffic.
    streams : list of str
        Streams named in the connection's path.
    combined : bool
        True for ``/stream`` connections (``{"stream":..,"data":..}`` payloads), False for ``/ws``.
    """

    def __init__(self, stream_index: Mapping[str, int], streams: list[str], combined: bool) -> None:
        self._index = stream_index
        self.combined = combined
        self.names: dict[str, None] = {}
        self.ids: set[int] = set()
        for name in streams:
            self.subscribe(name)

    def subscribe(self, name: str) -> None:
        """Add a stream (idempotent)."""
        self.names[name] = None
        if name in self._index:
            self.ids.add(self._index[name])

    def unsubscribe(self, name: str) -> None:
        """Remove a stream (a stream not subscribed is ignored)."""
        self.names.pop(name, None)
        self.ids.discard(self._index.get(name, -1))

    def handle(self, message: str | bytes) -> dict[str, object]:
        """Apply one client request and return Binance's reply.

        ``{"result": ..., "id": ...}`` on success; ``{"error": {"code": c, "msg": ...}, "id": ...}`` with
        Binance's codes otherwise: 0 unknown property, 1 wrong value type, 2 invalid request, 3 invalid JSON.
        """
        try:
            request = orjson.loads(message)
        except orjson.JSONDecodeError as exc:
            return _error(3, f"Invalid JSON: {exc}")
        if not isinstance(request, dict):
            return _error(2, f"Invalid request: invalid type: {type(request).__name__}, expected a map")
        rid = request.get("id")
        if not _valid_id(rid):
            return _error(2, "Invalid request: request ID must be an unsigned integer")
        method = request.get("method")
        if method is None:
            return _error(2, "Invalid request: missing field `method`", rid)
        if method not in METHODS:
            expected = ", ".join(f"`{m}`" for m in METHODS)
            return _error(2, f"Invalid request: unknown variant `{method}`, expected one of {expected}", rid)
        params = request.get("params", [])
        if not isinstance(params, list):
            return _error(2, f"Invalid request: invalid type: {type(params).__name__}, expected a sequence", rid)
        if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
            if not all(isinstance(p, str) and p for p in params):
                return _error(2, "Invalid request: stream names must be non-empty strings", rid)
            for name in params:
                (self.subscribe if method == "SUBSCRIBE" else self.unsubscribe)(name)
            return {"result": None, "id": rid}
        if method == "LIST_SUBSCRIPTIONS":
            return {"result": list(self.names), "id": rid}
        return self._property(method, params, rid)

    def _property(self, method: str, params: list, rid: object) -> dict[str, object]:
        if not params or not isinstance(params[0], str):
            return _error(2, "Invalid request: property name must be a string", rid)
        if params[0] != "combined":
            return _error(0, "Unknown property", rid)
        wanted = 1 if method == "GET_PROPERTY" else 2
        if len(params) > wanted:
            return _error(2, "Invalid request: too many parameters", rid)
        if method == "GET_PROPERTY":
            return {"result": self.combined, "id": rid}
        if len(params) < wanted or not isinstance(params[1], bool):
            return _error(1, "Invalid value type: expected Boolean", rid)
        self.combined = params[1]
        return {"result": None, "id": rid}


def corrupt_frame(payload: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One malformed version of ``payload`` and its kind, drawn from ``rng``.

    ``malformed_garbage`` (text that is not JSON), ``malformed_truncated`` (a strict prefix, never valid
    JSON) or, for trade events only, ``malformed_nan`` (the price replaced by ``"NaN"``). Always valid
    UTF-8, so it travels as a text frame like the real ones.
    """
    price_at = payload.find(b'"p":"')
    kinds = ["malformed_garbage", "malformed_truncated"] + (["malformed_nan"] if price_at >= 0 else [])
    kind = rng.choice(kinds)
    if kind == "malformed_garbage":
        return kind, ("<" + "".join(rng.choice(_GARBAGE) for _ in range(rng.randint(1, 64)))).encode()
    if kind == "malformed_truncated":
        return kind, payload[: rng.randint(1, len(payload) - 1)]
    end = payload.index(b'"', price_at + 5)
    return kind, payload[: price_at + 5] + b"NaN" + payload[end:]
