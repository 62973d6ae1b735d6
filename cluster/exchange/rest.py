"""REST side of the local replay exchange: Binance's ``/api/v3`` market-data endpoints, status codes and errors.

A pure function from a request path and the replay's position to a status, headers and a JSON body, so it
is tested without sockets. Never serves a trade the replay has not released (it cannot serve the future).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

import orjson

from .capture import ReplaySource, historical_trades, klines

#: Intervals Binance's klines endpoint accepts that have a fixed length (``1w`` and ``1M`` are calendar-aligned
#: there and are refused here as invalid).
KLINE_INTERVALS_MS: dict[str, int] = {
    "1s": 1_000,
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
    "3d": 259_200_000,
}
DEFAULT_LIMIT = 500
MAX_LIMIT = 1000
_LONG = re.compile(r"^[0-9]{1,20}$")
_SYMBOL = re.compile(r"^[A-Z0-9-_.]{1,20}$")
_PARAMS = {
    "/api/v3/historicalTrades": ("symbol", "limit", "fromId"),
    "/api/v3/trades": ("symbol", "limit"),
    "/api/v3/klines": ("symbol", "interval", "startTime", "endTime", "limit", "timeZone"),
    "/api/v3/ping": (),
    "/api/v3/time": (),
}
_REFUSALS = {
    418: (
        -1003,
        "Way too many requests; IP(127.0.0.1) banned until {until}. Please use WebSocket Streams for live "
        "updates to avoid bans.",
    ),
    429: (
        -1003,
        "Too many requests; current limit of IP(127.0.0.1) is 6000 requests per 1 MINUTE. Please use "
        "WebSocket Streams for live updates to avoid polling the API.",
    ),
    500: (-1000, "An unknown error occurred while processing the request."),
}

Answer = tuple[int, list[tuple[str, str]], bytes]


class ApiError(Exception):
    """A Binance error answer: HTTP status, Binance code and message."""

    def __init__(self, status: int, code: int, msg: str) -> None:
        super().__init__(f"{status} {code} {msg}")
        self.status, self.code, self.msg = status, code, msg


def _json(status: int, body: object, headers: list[tuple[str, str]] | None = None) -> Answer:
    return status, [("Content-Type", "application/json;charset=UTF-8"), *(headers or [])], orjson.dumps(body)


def _error(exc: ApiError) -> Answer:
    return _json(exc.status, {"code": exc.code, "msg": exc.msg})


def _long(params: dict[str, str], name: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if not _LONG.match(value):
        raise ApiError(400, -1100, f"Illegal characters found in parameter '{name}'; legal range is '^[0-9]{{1,20}}$'.")
    return int(value)


def _limit(params: dict[str, str]) -> int:
    limit = _long(params, "limit")
    if limit is None:
        return DEFAULT_LIMIT
    if limit < 1:
        raise ApiError(400, -1130, "Data sent for parameter 'limit' is not valid.")
    return min(limit, MAX_LIMIT)  # Binance clamps a limit above the maximum


def _required(params: dict[str, str], name: str) -> str:
    value = params.get(name)
    if not value:
        raise ApiError(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")
    return value


def _params(query: str, allowed: tuple[str, ...]) -> dict[str, str]:
    pairs = parse_qsl(query, keep_blank_values=True)
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise ApiError(400, -1101, "Duplicate values for a parameter detected.")
        params[name] = value
    unread = [name for name in params if name not in allowed]
    if unread:
        read = len(params) - len(unread)
        raise ApiError(
            400, -1104, f"Not all sent parameters were read; read '{read}' parameter(s) but was sent '{len(params)}'."
        )
    return params


def answer(
    target: str,
    source: ReplaySource,
    position: int,
    *,
    clock_ms: int | None = None,
    refusal: int | None = None,
    retry_after: str = "60",
) -> Answer:
    """Answer one ``GET`` of Binance's REST API from the replay as it stands.

    Parameters
    ----------
    target : str
        The request target, path and query (``/api/v3/klines?symbol=ETHUSDT&interval=1m``).
    source : ReplaySource
        The replay's data.
    position : int
        Frames released so far; only trades they carry are known.
    clock_ms : int, optional
        The replay clock, for ``/api/v3/time``.
    refusal : {418, 429, 500}, optional
        Refuse every request with this status and Binance's error body (tests of unfillable gaps).
    retry_after : str
        The refusal's ``Retry-After`` header, as sent (tests send ``inf``, negative or garbage values).

    Returns
    -------
    (status, headers, body)
        Body is JSON: the endpoint's answer or ``{"code": ..., "msg": ...}``.
    """
    parts = urlsplit(target)
    path = parts.path.rstrip("/")
    if path not in _PARAMS:
        return _json(404, {"code": -1000, "msg": f"Unknown endpoint {parts.path!r}."})
    if refusal is not None:
        code, msg = _REFUSALS[refusal]
        until = (clock_ms or 0) + 60_000
        return _json(refusal, {"code": code, "msg": msg.format(until=until)}, [("Retry-After", retry_after)])
    try:
        params = _params(parts.query, _PARAMS[path])
        if path == "/api/v3/ping":
            return _json(200, {})
        if path == "/api/v3/time":
            return _json(200, {"serverTime": clock_ms if clock_ms is not None else 0})
        table = _table(source, params)
        if path == "/api/v3/klines":
            interval = _required(params, "interval")
            if interval not in KLINE_INTERVALS_MS:
                raise ApiError(400, -1120, "Invalid interval.")
            start, end, limit = _long(params, "startTime"), _long(params, "endTime"), _limit(params)
            return _json(
                200,
                klines(table, position, KLINE_INTERVALS_MS[interval], start, end, limit, synthetic=source.synthetic),
            )
        from_id = _long(params, "fromId") if path == "/api/v3/historicalTrades" else None
        limit = _limit(params)
        return _json(200, historical_trades(table, position, from_id, limit, synthetic=source.synthetic))
    except ApiError as exc:
        return _error(exc)


def _table(source: ReplaySource, params: dict[str, str]):
    symbol = _required(params, "symbol")
    if not _SYMBOL.match(symbol):
        raise ApiError(
            400, -1100, "Illegal characters found in parameter 'symbol'; legal range is '^[A-Z0-9-_.]{1,20}$'."
        )
    table = source.trades.get(symbol)
    if table is None:
        raise ApiError(400, -1121, "Invalid symbol.")
    return table
