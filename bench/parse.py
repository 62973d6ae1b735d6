"""Benchmark: the live trade path on the real recorded Binance frames, against bare ``orjson.loads``.

Ours: FrameParser over fixed batches of 256 frames, each batch's trades fed to IncrementalBars (1s, 1m,
1h, 1d) of their symbol. Peer: orjson.loads alone on the same frames, the floor any Python decoder pays.
Reads ../shared/data; prints a skip line when it is absent.
"""

from __future__ import annotations

import gzip
import statistics
import sys
from pathlib import Path

import orjson

from bench._common import SHARED_DATA, median_seconds, rate_line
from market.bars import DEFAULT_TIMEFRAMES, IncrementalBars
from market.binance import FrameParser

BATCH_FRAMES = 256
ROUNDS = 7
CAPTURES = (
    "spot_ethusdt_20240808.gz",
    "spot_ethusdt_20240809.gz",
    "spot_btcusdt_20240808.gz",
    "spot_btcusdt_20240809.gz",
)


def load_trade_frames(ws_dir: Path) -> tuple[list[bytes], list[int]]:
    """Raw JSON of every ``@trade`` line of both symbols' captures, merged in local receive order.

    Returns the frames and their receive times in ms (lines are ``<local receive ns> <json>``).
    """
    lines: list[tuple[int, bytes]] = []
    for name in CAPTURES:
        with gzip.open(ws_dir / name, "rb") as fh:
            for line in fh:
                ns, _, payload = line.rstrip(b"\n").partition(b" ")
                if b'@trade"' in payload[:40]:
                    lines.append((int(ns), payload))
    lines.sort(key=lambda item: item[0])  # the live combined stream interleaves the two symbols
    return [payload for _, payload in lines], [ns // 1_000_000 for ns, _ in lines]


def main() -> int:
    ws_dir = SHARED_DATA / "binance" / "ws"
    if not all((ws_dir / name).is_file() for name in CAPTURES):
        print(f"parse: skipped, real Binance captures not present under {ws_dir}")
        return 0
    frames, recv_ms = load_trade_frames(ws_dir)
    batches = [
        (frames[i : i + BATCH_FRAMES], recv_ms[i : i + BATCH_FRAMES]) for i in range(0, len(frames), BATCH_FRAMES)
    ]
    loads = orjson.loads

    def peer() -> None:
        for frame in frames:
            loads(frame)

    def parse_only() -> int:
        parser = FrameParser()
        for batch, recv in batches:
            parser.parse(batch, recv_time_ms=recv[-1])
        return parser.accepted

    def ours() -> dict[str, IncrementalBars]:
        parser = FrameParser()
        bars: dict[str, IncrementalBars] = {}
        for batch, recv in batches:
            for symbol, trades in parser.parse(batch, recv_time_ms=recv[-1]).trades.items():
                live = bars.get(symbol)
                if live is None:
                    live = bars[symbol] = IncrementalBars(DEFAULT_TIMEFRAMES)
                live.update(trades)
        return bars

    # The timed work must be the real work: every frame decoded, none rejected, every trade in a bar.
    check = FrameParser()
    decoded = sum(sum(map(len, check.parse(b, recv_time_ms=r[-1]).trades.values())) for b, r in batches)
    if decoded != len(frames) or check.rejected or check.ignored:
        print(f"parse: FAILED, decoded {decoded} of {len(frames)} trade frames, rejected {check.rejected}")
        return 1
    # ... and the bars count every trade: the 1s bars closed along the way, then by moving the clock on.
    parser = FrameParser()
    check_bars: dict[str, IncrementalBars] = {}
    ticks: dict[str, int] = {}
    for batch, recv in batches:
        for symbol, trades in parser.parse(batch, recv_time_ms=recv[-1]).trades.items():
            live = check_bars.setdefault(symbol, IncrementalBars(DEFAULT_TIMEFRAMES))
            ticks[symbol] = ticks.get(symbol, 0) + int(live.update(trades)["1s"]["tick_count"].sum())
    for symbol, live in check_bars.items():
        ticks[symbol] += int(live.advance_to(live.clock_ms + 1_000)["1s"]["tick_count"].sum())
    if sum(ticks.values()) != len(frames) or set(ticks) != {"ETHUSDT", "BTCUSDT"}:
        print(f"parse: FAILED, 1s bars hold {ticks} trades of {len(frames)}")
        return 1

    # Rounds alternate peer and ours so that load from other processes hits both alike.
    peer_s, ours_s, parse_s = [], [], []
    for i in range(ROUNDS):
        warm = 1 if i == 0 else 0
        peer_s.append(median_seconds(peer, repeats=3, warmup=warm))
        parse_s.append(median_seconds(parse_only, repeats=3, warmup=warm))
        ours_s.append(median_seconds(ours, repeats=3, warmup=warm))
    n = len(frames)
    peer_rate = n / statistics.median(peer_s)
    parse_rate = n / statistics.median(parse_s)
    ours_rate = n / statistics.median(ours_s)
    print(f"parse: {n} real trade frames (ETHUSDT + BTCUSDT, 11 min), batches of {BATCH_FRAMES}")
    print(f"parse alone (info): {parse_rate:,.0f} frames/s, {parse_rate / peer_rate:.2f} of orjson.loads")
    print(rate_line("parse", ours_rate, peer_rate, "orjson.loads", unit=" frames/s"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
