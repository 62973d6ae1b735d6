"""``rayscalp stream``: the live data path on Ray (exchange when replaying, ingestion, unified stream).

Starts or joins Ray, starts the local replay exchange in a background thread when the source is the
replay, then the ingestion and stream actors, and shows a live status line until stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from actors.ingestion_config import IngestionConfig
from cluster.exchange.server import ExchangeConfig, ReplayExchange
from market.errors import DataError

from .config import ExperimentConfig

STREAM_ACTOR = "rayscalp-stream"
INGESTION_ACTOR = "rayscalp-ingestion"


class ExchangeThread:
    """The replay exchange on its own event loop in a daemon thread (so the CLI's thread stays free)."""

    def __init__(self, config: ExchangeConfig) -> None:
        self.config = config
        self.exchange = ReplayExchange(config)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="replay-exchange", daemon=True)

    def start(self, timeout_s: float = 60.0) -> tuple[str, int]:
        """Start the exchange; return its (host, port)."""
        self._thread.start()
        return asyncio.run_coroutine_threadsafe(self.exchange.start(), self._loop).result(timeout_s)

    def stop(self) -> None:
        """Stop the exchange and its loop."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.exchange.stop(), self._loop).result(30)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


@dataclass(slots=True)
class LiveStream:
    """Handles of a running live data path."""

    stream: Any
    ingestion: Any
    exchange: ExchangeThread | None = None
    ws_url: str = ""
    extras: dict[str, Any] = field(default_factory=dict)

    def stop(self) -> None:
        """Stop ingestion, then the exchange (the stream actor keeps its Parquet for the next start)."""
        import ray

        with contextlib.suppress(Exception):  # best effort on the way out
            ray.get(self.ingestion.stop.remote(), timeout=30)
        if self.exchange is not None:
            self.exchange.stop()


def start_live_stream(
    config: ExperimentConfig,
    *,
    source: Literal["replay", "binance"] = "replay",
    speed: str = "1x",
    storage_dir: Path | None = None,
    exchange_overrides: dict[str, Any] | None = None,
    kline_files: tuple[Path, ...] | None = None,
) -> LiveStream:
    """Start the exchange (replay only), the stream actor and the ingestion actor on the running Ray.

    Parameters
    ----------
    config : ExperimentConfig
        Symbols, bars, indicators and endpoints (``binance`` uses ``config.endpoints``).
    source : {"replay", "binance"}
    speed : str
        Replay speed (``1x``, ``Nx``, ``max``).
    storage_dir : Path, optional
        Where the stream persists Parquet (default ``<output_dir>/stream``).
    kline_files : tuple of Path, optional
        Replay ticks synthesized inside these kline files (tagged synthetic) instead of the recorded captures.
    """
    import ray

    from actors.ingestion import IngestionActor
    from actors.stream import StreamConfig, UnifiedStreamActor

    exchange = None
    if source == "replay":
        shared = config.data.shared_dir / "binance"
        captures = () if kline_files else tuple(sorted((shared / "ws").glob("spot_*usdt_*.gz")))
        if captures:
            ex_cfg = ExchangeConfig(source="capture", capture_files=captures, speed=speed, **(exchange_overrides or {}))
        else:
            klines = kline_files or tuple(sorted((shared / "klines").glob("*USDT-1m-*.csv")))
            if not klines:
                raise DataError(f"nothing to replay: no captures or 1m kline files under {shared}")
            ex_cfg = ExchangeConfig(source="klines", kline_files=klines, speed=speed, **(exchange_overrides or {}))
        exchange = ExchangeThread(ex_cfg)
        host, port = exchange.start()
        ws_url, rest_url = f"ws://{host}:{port}", f"http://{host}:{port}"
    else:
        ws_url, rest_url = config.endpoints.ws_url, config.endpoints.rest_url
    stream_cfg = StreamConfig(
        storage_dir=storage_dir or (config.output_dir / "stream"),
        symbols=config.symbols,
        bars=config.bars,
        indicators=config.indicators,
    )
    stream = UnifiedStreamActor.options(name=STREAM_ACTOR, get_if_exists=True).remote(stream_cfg)
    ack = ray.get(stream.ack.remote(), timeout=120)
    ingestion = IngestionActor.options(name=INGESTION_ACTOR, get_if_exists=True).remote(
        IngestionConfig(symbols=config.symbols.all, ws_url=ws_url, rest_url=rest_url)
    )
    ray.get(ingestion.start.remote(stream, resume_after=ack.last_persisted_trade_id), timeout=120)
    return LiveStream(stream=stream, ingestion=ingestion, exchange=exchange, ws_url=ws_url)


def status_line(stream_stats: Any, ingestion_stats: Any, rate: float, *, replay: bool = False) -> str:
    """One line: ticks/s, bars per timeframe, lag (data time in a replay), reconnects, gaps, bad frames."""
    symbols = stream_stats.symbols
    bars = (
        "/".join(
            f"{tf}:{sum(s.bars_closed.get(tf, 0) for s in symbols.values())}"
            for tf in next(iter(symbols.values())).bars_closed
        )
        if symbols
        else "-"
    )
    if replay:
        last = max((s.last_trade_ms for s in symbols.values()), default=-1)
        clock = "data " + (time.strftime("%H:%M:%S", time.gmtime(last / 1000)) if last > 0 else "-")
    else:
        clock = f"lag {max((s.lag_ms for s in symbols.values()), default=-1) / 1000:6.1f}s"
    reconnects = getattr(ingestion_stats, "reconnects", 0)
    gaps = sum(s.gaps for s in symbols.values())
    bad = sum(getattr(ingestion_stats, "bad_frames", {}).values()) if ingestion_stats else 0
    return (
        f"{stream_stats.status:<5} ticks/s {rate:8.1f}  bars {bars}  {clock}  "
        f"reconnects {reconnects}  gaps {gaps}  bad frames {bad}"
    )


def watch(live: LiveStream, *, duration_s: float | None, echo: Callable[[str], None], every_s: float = 1.0) -> Any:
    """Print the status line every ``every_s`` until ``duration_s`` passes (or Ctrl-C); return final stats."""
    import ray

    started = time.monotonic()
    last_ticks, last_t = 0, started
    stats = None
    while duration_s is None or time.monotonic() - started < duration_s:
        time.sleep(every_s)
        stats = ray.get(live.stream.stats.remote(), timeout=60)
        ingest = ray.get(live.ingestion.stats.remote(), timeout=60)
        ticks = sum(s.ticks_received for s in stats.symbols.values())
        now = time.monotonic()
        rate = (ticks - last_ticks) / max(now - last_t, 1e-9)
        echo(status_line(stats, ingest, rate, replay=live.exchange is not None))
        last_ticks, last_t = ticks, now
    return stats
