"""Messages between the ingestion actor and the unified stream actor (plain frozen dataclasses).

Owns the wire contract between the two; holds no behaviour beyond summaries. Never imports Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class TradeGap:
    """Trade ids that never arrived and could not be backfilled (recorded, never papered over)."""

    symbol: str
    first_missing_id: int
    last_missing_id: int
    detected_ms: int
    reason: str


@dataclass(frozen=True, slots=True)
class TickBatch:
    """Ticks released by ingestion: per symbol in trade-id order and gap-free after the previous batch
    (except for the gaps listed in ``gaps``, which were recorded after a bounded wait).

    Attributes
    ----------
    source : str
        The ingestion that sent it (its endpoint).
    seq : int
        Increases by one per batch from one ingestion; a restarted stream may see a resent batch again.
    trades : dict of symbol -> TRADE_DTYPE array
    book_tickers : dict of symbol -> BOOK_TICKER_DTYPE array
    gaps : tuple of TradeGap
    sent_ms : int
        Wall time when ingestion released it (for lag figures).
    recv_ms : dict of symbol -> int64 array
        Local receive time of each trade (same order as ``trades``), for receive-to-bar latency.
    counters : dict of name -> int
        Ingestion's cumulative counters (``reconnects``, ``bad_frames``, ``backfilled_trades``, ...), which
        the stream reports in its stats and UI packet.
    """

    source: str
    seq: int
    trades: dict[str, np.ndarray]
    book_tickers: dict[str, np.ndarray] = field(default_factory=dict)
    gaps: tuple[TradeGap, ...] = ()
    sent_ms: int = 0
    recv_ms: dict[str, np.ndarray] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def n_trades(self) -> int:
        """Trades in the batch, all symbols."""
        return sum(int(a.size) for a in self.trades.values())


@dataclass(frozen=True, slots=True)
class StreamAck:
    """What the stream has persisted: ingestion may forget trades up to these ids and must resend the rest."""

    last_persisted_trade_id: dict[str, int]
    last_seq: int
    #: When the answering stream instance started; a new value tells ingestion the stream restarted and
    #: must be resent everything after ``last_persisted_trade_id``.
    epoch_ms: int = 0
