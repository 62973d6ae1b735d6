"""Configuration of live ingestion: which streams, which endpoints, and every bound on waiting and retrying.

A pydantic model only (validated on construction, unknown keys refused); imports neither Ray nor websockets,
so an experiment config can validate it anywhere. Never opens a connection itself.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator, model_validator

from market.config import EndpointsConfig, StrictModel, SymbolsConfig

_SYMBOL = re.compile(r"^[A-Z0-9]{5,20}$")
_DEFAULT_ENDPOINTS = EndpointsConfig()
_DEFAULT_SYMBOLS = SymbolsConfig()


def _base_url(value: str, schemes: tuple[str, ...]) -> str:
    """``value`` without a trailing slash, when it starts with one of ``schemes``."""
    if not value.startswith(schemes):
        raise ValueError(f"must start with {' or '.join(schemes)} (got {value!r})")
    return value.rstrip("/")


class IngestionConfig(StrictModel):
    """Live ingestion of Binance's combined stream (``<sym>@trade`` and ``<sym>@bookTicker`` per symbol).

    ``ws_url`` and ``rest_url`` default to Binance's public spot endpoints
    (``wss://stream.binance.com:9443``, ``https://api.binance.com``). Binance refuses connections from some
    regions (HTTP 451 on the handshake, or a closed socket); point them elsewhere in that case: the
    market-data-only mirrors ``wss://data-stream.binance.vision`` and ``https://data-api.binance.vision``,
    or the local replay exchange (``rayscalp exchange`` prints ``ws://127.0.0.1:<port>`` and
    ``http://127.0.0.1:<port>``). ``ws_url`` is the base: ``/stream?streams=...`` is appended.

    Attributes
    ----------
    symbols : tuple of str
        Upper-case Binance symbols; trades are released per symbol (default: the traded, then the
        reference symbol of ``SymbolsConfig``).
    book_ticker : bool
        Also subscribe to ``<sym>@bookTicker`` (best bid/ask, for the spread).
    batch_interval_ms : int
        A tick batch is sent at most this often.
    backoff_initial_s, backoff_max_s, backoff_multiplier : float
        Reconnect (and REST/sink retry) delays: attempt ``k`` waits a uniform draw in
        ``[0, min(max, initial * multiplier**k)]`` (full jitter), from a generator seeded by ``seed``.
    gap_wait_ms : int
        How long trades after a missing trade id are held back while REST backfills it, from the receipt
        of the first trade past the gap; the wait restarts whenever a backfill request brings new trades,
        and a request in flight is waited for (``rest_timeout_s`` bounds it). After it the gap is recorded
        as a ``TradeGap``, never papered over.
    backfill_limit : int
        Trades per ``historicalTrades`` request (Binance's maximum is 1000).
    quiet_probe_ms : int
        After a bad frame or a reconnect, a symbol that stays silent this long is caught up over REST
        (a lost last trade would otherwise show as a gap only when the next one arrives).
    max_held_back : int
        Trades held back per symbol behind a gap; beyond it the gap is recorded at once.
    max_unacked : int
        Trades per symbol kept for resending until the stream acknowledges them as persisted.
    resend_fill_limit : int
        When a restarted stream has less than was acknowledged, at most this many already-forgotten trades
        per symbol are fetched again over REST for the resend; more is recorded as a gap.
    max_connection_s : float
        Binance closes a connection after 24 h: a new one is opened before this age, and the old one is
        closed ``connection_overlap_s`` later (duplicates of the overlap are dropped by trade id).
    rest_requests_per_min, rest_burst : int
        Client-side limit on REST requests (Binance weighs ``historicalTrades`` 25 of 6000 per minute and
        bans an IP that keeps going after HTTP 429); ``Retry-After`` of a 418/429 is honoured on top.
    max_retry_after_s : float
        A ``Retry-After`` is honoured up to this many seconds; a longer, infinite, negative or non-numeric
        one is capped (or ignored) and counted, so one bad header cannot stop REST for good.
    max_clock_skew_s : float or None
        A websocket trade whose exchange time, less its receive time, differs by more than this from the
        exchange clock's offset (the median over the trades received with it) is refused and counted.
        None turns the check off (a replay faster than real time spreads exchange time over a batch).
    max_id_jump : int
        A websocket trade more than this many ids beyond the highest id known (the next expected one,
        or one REST answered with) waits for REST to confirm that the exchange has it; one REST does not
        know within ``gap_wait_ms`` is refused and counted, so a forged far-ahead id never moves release.
    silence_other_s, silence_all_s : float or None
        The silence watchdog: a connection that is open but brings no trade of one symbol for
        ``silence_other_s`` while another symbol trades, or no frame at all for ``silence_all_s``, is
        probed over REST and reconnected (counted as a silence). None turns either check off.
    """

    symbols: tuple[str, ...] = _DEFAULT_SYMBOLS.all
    book_ticker: bool = True
    ws_url: str = _DEFAULT_ENDPOINTS.ws_url
    rest_url: str = _DEFAULT_ENDPOINTS.rest_url
    batch_interval_ms: int = Field(100, ge=1, le=60_000)
    backoff_initial_s: float = Field(0.5, gt=0.0, le=600.0)
    backoff_max_s: float = Field(30.0, gt=0.0, le=3600.0)
    backoff_multiplier: float = Field(2.0, ge=1.0, le=10.0)
    seed: int = Field(0, ge=0, lt=2**63)
    gap_wait_ms: int = Field(2_000, ge=0, le=600_000)
    backfill_limit: int = Field(1000, ge=1, le=1000)
    quiet_probe_ms: int = Field(1_000, ge=0, le=600_000)
    max_held_back: int = Field(200_000, ge=1)
    max_unacked: int = Field(500_000, ge=1)
    resend_fill_limit: int = Field(100_000, ge=0)
    max_connection_s: float = Field(23.5 * 3600, gt=0.0, le=24 * 3600)
    connection_overlap_s: float = Field(5.0, ge=0.0, le=600.0)
    open_timeout_s: float = Field(10.0, gt=0.0, le=600.0)
    ping_interval_s: float | None = Field(20.0, gt=0.0)
    ping_timeout_s: float | None = Field(20.0, gt=0.0)
    rest_timeout_s: float = Field(10.0, gt=0.0, le=600.0)
    rest_requests_per_min: int = Field(200, ge=1)
    rest_burst: int = Field(20, ge=1)
    max_retry_after_s: float = Field(300.0, gt=0.0, le=86_400.0)
    max_clock_skew_s: float | None = Field(300.0, gt=0.0, le=86_400.0)
    max_id_jump: int = Field(1_000, ge=1)
    silence_other_s: float | None = Field(15.0, gt=0.0, le=3_600.0)
    silence_all_s: float | None = Field(30.0, gt=0.0, le=3_600.0)

    @field_validator("symbols")
    @classmethod
    def _symbols(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in value if not _SYMBOL.match(s)]
        if bad or not value:
            raise ValueError(f"must be upper-case Binance symbols such as ETHUSDT (got {list(value)})")
        if len(set(value)) != len(value):
            raise ValueError(f"must be distinct (got {list(value)})")
        return value

    @field_validator("ws_url")
    @classmethod
    def _ws_url(cls, value: str) -> str:
        value = _base_url(value, ("ws://", "wss://"))
        if "?" in value or value.endswith(("/stream", "/ws")):
            raise ValueError(f"must be the endpoint's base, without /stream or a query (got {value!r})")
        return value

    @field_validator("rest_url")
    @classmethod
    def _rest_url(cls, value: str) -> str:
        return _base_url(value, ("http://", "https://"))

    @model_validator(mode="after")
    def _backoff_order(self) -> IngestionConfig:
        if self.backoff_max_s < self.backoff_initial_s:
            raise ValueError(
                f"backoff_max_s must be >= backoff_initial_s (got {self.backoff_max_s} < {self.backoff_initial_s})"
            )
        return self

    @property
    def streams(self) -> tuple[str, ...]:
        """Stream names subscribed to: ``<sym>@trade`` per symbol, then ``<sym>@bookTicker`` per symbol."""
        trades = tuple(f"{s.lower()}@trade" for s in self.symbols)
        books = tuple(f"{s.lower()}@bookTicker" for s in self.symbols) if self.book_ticker else ()
        return trades + books

    @property
    def stream_url(self) -> str:
        """The combined-stream URL (``<ws_url>/stream?streams=a/b/c``)."""
        return f"{self.ws_url}/stream?streams={'/'.join(self.streams)}"
