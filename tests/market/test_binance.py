"""Tests of market/binance.py: event decoding (spot and USD-M), rejection accounting, real captures."""

from __future__ import annotations

import gzip
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from market import binance
from market.binance import (
    AGG_TRADE,
    BOOK_TICKER,
    IGNORED,
    KLINE,
    REJECT_REASONS,
    TRADE,
    FrameParser,
    ParsedFrames,
    parse_frame,
)
from market.errors import DataError, FrameError

# Hand-written frames in the exact shapes Binance sends (field letters as in ../shared/data/README.md
# and the Binance API docs); values are plausible, not recorded.
SPOT_TRADE = {
    "e": "trade",
    "E": 1723161255343,
    "s": "BTCUSDT",
    "t": 3735683259,
    "p": "61837.63000000",
    "q": "0.02000000",
    "T": 1723161255342,
    "m": True,
    "M": True,
}
USDM_TRADE = {
    "e": "trade",
    "E": 1723161255400,
    "T": 1723161255398,
    "s": "ETHUSDT",
    "t": 4521337001,
    "p": "2683.71",
    "q": "1.250",
    "X": "MARKET",
    "m": False,
}
SPOT_AGG_TRADE = {
    "e": "aggTrade",
    "E": 1723161255500,
    "s": "ETHUSDT",
    "a": 998877,
    "p": "2683.80000000",
    "q": "0.50000000",
    "f": 1520538925,
    "l": 1520538927,
    "T": 1723161255499,
    "m": True,
    "M": True,
}
USDM_AGG_TRADE = {
    "e": "aggTrade",
    "E": 1723161255600,
    "s": "BTCUSDT",
    "a": 2230001,
    "p": "61850.1",
    "q": "0.004",
    "f": 5187563120,
    "l": 5187563123,
    "T": 1723161255598,
    "m": False,
}
SPOT_KLINE = {
    "e": "kline",
    "E": 1723161256000,
    "s": "ETHUSDT",
    "k": {
        "t": 1723161240000,
        "T": 1723161299999,
        "s": "ETHUSDT",
        "i": "1m",
        "f": 1520538900,
        "L": 1520538950,
        "o": "2683.00000000",
        "c": "2683.80000000",
        "h": "2684.10000000",
        "l": "2682.50000000",
        "v": "40.00000000",
        "n": 51,
        "x": False,
        "q": "107340.00000000",
        "V": "25.00000000",
        "Q": "67087.50000000",
        "B": "0",
    },
}
USDM_KLINE = {
    "e": "kline",
    "E": 1723161300001,
    "s": "BTCUSDT",
    "k": {
        "t": 1723161299000,
        "T": 1723161299999,
        "s": "BTCUSDT",
        "i": "1s",
        "f": 5187563100,
        "L": 5187563099,
        "o": "61850.0",
        "c": "61850.0",
        "h": "61850.0",
        "l": "61850.0",
        "v": "0",
        "n": 0,
        "x": True,
        "q": "0",
        "V": "0",
        "Q": "0",
        "B": "0",
    },
}
SPOT_BOOK_TICKER = {
    "u": 35346513501,
    "s": "ETHUSDT",
    "b": "2683.80000000",
    "B": "3.02920000",
    "a": "2683.81000000",
    "A": "31.43950000",
}
USDM_BOOK_TICKER = {
    "e": "bookTicker",
    "u": 400900217,
    "E": 1723161255700,
    "T": 1723161255698,
    "s": "BTCUSDT",
    "b": "61850.00",
    "B": "3.100",
    "a": "61850.10",
    "A": "0.750",
}
DEPTH_UPDATE = {
    "e": "depthUpdate",
    "E": 1723161255308,
    "s": "ETHUSDT",
    "U": 35346513499,
    "u": 35346513505,
    "b": [["2683.80000000", "3.02920000"]],
    "a": [["2733.70000000", "0.00000000"]],
}
DEPTH_SNAPSHOT = {"lastUpdateId": 35346513512, "bids": [["2683.8", "3.0"]], "asks": [["2683.81", "31.4"]]}
SUBSCRIBE_REPLY = {"result": None, "id": 1}

TEMPLATES = {
    "spot_trade": SPOT_TRADE,
    "usdm_trade": USDM_TRADE,
    "spot_agg_trade": SPOT_AGG_TRADE,
    "usdm_agg_trade": USDM_AGG_TRADE,
    "spot_kline": SPOT_KLINE,
    "usdm_kline": USDM_KLINE,
    "spot_book_ticker": SPOT_BOOK_TICKER,
    "usdm_book_ticker": USDM_BOOK_TICKER,
}
RECV_MS = 1723161255999


def combined(event: dict, stream: str = "ethusdt@trade") -> bytes:
    return orjson.dumps({"stream": stream, "data": event})


def bare(event: object) -> bytes:
    return orjson.dumps(event)


def with_field(event: dict, key: str, value: object) -> dict:
    out = dict(event)
    out[key] = value
    return out


def without_field(event: dict, key: str) -> dict:
    return {k: v for k, v in event.items() if k != key}


def with_kline_field(key: str, value: object) -> dict:
    return {**SPOT_KLINE, "k": {**SPOT_KLINE["k"], key: value}}


# --- event types, spot and USD-M --------------------------------------------------------------------


def test_spot_trade_maps_trade_time_id_price_qty_and_maker_flag() -> None:
    ev = parse_frame(combined(SPOT_TRADE, "btcusdt@trade"))
    assert (ev.kind, ev.symbol, ev.interval) == (TRADE, "BTCUSDT", None)
    r = ev.record[0]
    assert r["time_ms"] == 1723161255342  # "T", the trade time, not the event time "E"
    assert r["trade_id"] == 3735683259
    assert r["price"] == 61837.63
    assert r["qty"] == 0.02
    assert bool(r["is_buyer_maker"]) is True


def test_usdm_trade_with_x_and_without_m_parses_and_m_false_maps_to_not_buyer_maker() -> None:
    ev = parse_frame(bare(USDM_TRADE))
    r = ev.record[0]
    assert (ev.kind, ev.symbol) == (TRADE, "ETHUSDT")
    assert (r["time_ms"], r["trade_id"], r["price"], r["qty"]) == (1723161255398, 4521337001, 2683.71, 1.25)
    assert bool(r["is_buyer_maker"]) is False


@pytest.mark.parametrize("event", [SPOT_AGG_TRADE, USDM_AGG_TRADE], ids=["spot", "usdm"])
def test_agg_trade_maps_every_id_and_value(event: dict) -> None:
    ev = parse_frame(combined(event))
    r = ev.record[0]
    assert (ev.kind, ev.symbol) == (AGG_TRADE, event["s"])
    assert r["time_ms"] == event["T"]
    assert (r["agg_id"], r["first_trade_id"], r["last_trade_id"]) == (event["a"], event["f"], event["l"])
    assert (r["price"], r["qty"]) == (float(event["p"]), float(event["q"]))
    assert bool(r["is_buyer_maker"]) is event["m"]


def test_spot_kline_fills_bar_buy_sell_volume_vwap_and_flags() -> None:
    ev = parse_frame(combined(SPOT_KLINE, "ethusdt@kline_1m"))
    r = ev.record[0]
    assert (ev.kind, ev.symbol, ev.interval) == (KLINE, "ETHUSDT", "1m")
    assert (r["open_time_ms"], r["close_time_ms"]) == (1723161240000, 1723161299999)
    assert (r["open"], r["high"], r["low"], r["close"]) == (2683.0, 2684.1, 2682.5, 2683.8)
    assert (r["volume"], r["tick_count"], r["buy_volume"]) == (40.0, 51, 25.0)
    assert r["sell_volume"] == 15.0
    assert r["vwap"] == pytest.approx(107340.0 / 40.0)
    assert bool(r["is_closed"]) is False
    assert r["event_time_ms"] == 1723161256000


def test_kline_with_zero_volume_takes_close_as_vwap() -> None:
    ev = parse_frame(bare(USDM_KLINE))
    r = ev.record[0]
    assert (ev.symbol, ev.interval) == ("BTCUSDT", "1s")
    assert r["volume"] == 0.0 and r["sell_volume"] == 0.0
    assert r["vwap"] == 61850.0
    assert bool(r["is_closed"]) is True


def test_spot_book_ticker_without_e_takes_the_callers_receive_time() -> None:
    ev = parse_frame(combined(SPOT_BOOK_TICKER, "ethusdt@bookTicker"), recv_time_ms=RECV_MS)
    r = ev.record[0]
    assert (ev.kind, ev.symbol) == (BOOK_TICKER, "ETHUSDT")
    assert (r["time_ms"], r["update_id"]) == (RECV_MS, 35346513501)
    assert (r["bid"], r["bid_qty"], r["ask"], r["ask_qty"]) == (2683.8, 3.0292, 2683.81, 31.4395)


def test_usdm_book_ticker_takes_its_transaction_time_not_the_receive_time() -> None:
    r = parse_frame(bare(USDM_BOOK_TICKER), recv_time_ms=RECV_MS).record[0]
    assert r["time_ms"] == 1723161255698
    no_t = without_field(USDM_BOOK_TICKER, "T")
    assert parse_frame(bare(no_t), recv_time_ms=RECV_MS).record[0]["time_ms"] == 1723161255700


def test_batch_groups_by_uppercase_symbol_in_arrival_order_and_klines_by_interval() -> None:
    lower = with_field(SPOT_TRADE, "s", "btcusdt")
    frames = [
        combined(SPOT_TRADE),
        combined(with_field(lower, "t", SPOT_TRADE["t"] + 1)),
        combined(with_field(SPOT_TRADE, "t", SPOT_TRADE["t"] + 2)),
        bare(USDM_TRADE),
        combined(SPOT_KLINE),
        combined({**SPOT_KLINE, "k": {**SPOT_KLINE["k"], "i": "1s"}}),
        bare(SPOT_BOOK_TICKER),
    ]
    out = FrameParser().parse(frames, recv_time_ms=RECV_MS)
    assert isinstance(out, ParsedFrames)
    assert set(out.trades) == {"BTCUSDT", "ETHUSDT"}
    assert out.trades["BTCUSDT"]["trade_id"].tolist() == [3735683259, 3735683260, 3735683261]
    assert out.trades["BTCUSDT"].dtype.names[:2] == ("time_ms", "trade_id")
    assert set(out.klines) == {("ETHUSDT", "1m"), ("ETHUSDT", "1s")}
    assert out.book_tickers["ETHUSDT"]["time_ms"].tolist() == [RECV_MS]
    assert (out.accepted, out.rejected, out.ignored) == (7, {}, {})


def test_per_frame_receive_times_reach_each_spot_book_ticker() -> None:
    frames = [bare(with_field(SPOT_BOOK_TICKER, "u", 10 + i)) for i in range(3)]
    out = FrameParser().parse(frames, recv_time_ms=[100, 200, 300])
    assert out.book_tickers["ETHUSDT"]["time_ms"].tolist() == [100, 200, 300]
    assert out.book_tickers["ETHUSDT"]["update_id"].tolist() == [10, 11, 12]


def test_receive_times_may_come_as_a_numpy_array() -> None:
    frames = [bare(with_field(SPOT_BOOK_TICKER, "u", 10 + i)) for i in range(3)]
    out = FrameParser().parse(frames, recv_time_ms=np.array([100, 200, 300], dtype=np.int64))
    assert out.book_tickers["ETHUSDT"]["time_ms"].tolist() == [100, 200, 300]
    out = FrameParser().parse(frames, recv_time_ms=np.int64(400))
    assert out.book_tickers["ETHUSDT"]["time_ms"].tolist() == [400] * 3


def test_a_receive_time_that_is_not_positive_rejects_only_the_spot_book_tickers_that_need_it() -> None:
    parser = FrameParser()
    parser.parse([bare(SPOT_BOOK_TICKER)], recv_time_ms=RECV_MS)  # the symbol is known from here on
    frames = [bare(SPOT_BOOK_TICKER), bare(USDM_BOOK_TICKER), combined(SPOT_TRADE)]
    out = parser.parse(frames, recv_time_ms=0)
    assert out.rejected == {"out_of_range": 1}
    assert out.book_tickers["BTCUSDT"]["time_ms"].tolist() == [USDM_BOOK_TICKER["T"]]
    assert "ETHUSDT" not in out.book_tickers and len(out.trades["BTCUSDT"]) == 1
    with pytest.raises(FrameError) as info:
        parse_frame(bare(SPOT_BOOK_TICKER), recv_time_ms=-5)
    assert info.value.reason == "out_of_range"


def test_receive_times_of_the_wrong_length_are_a_data_error_naming_both_lengths() -> None:
    with pytest.raises(DataError, match="2 times for 3 frames"):
        FrameParser().parse([b"{}"] * 3, recv_time_ms=[1, 2])


# --- rejections and ignored frames --------------------------------------------------------------------

MALFORMED = [
    ("bad_json", b'{"stream":"ethusdt@trade","data":{"e":"trade"'),
    ("bad_json", b"\xff\xfe garbage"),
    ("bad_json", b""),
    ("not_an_object", b"[1, 2, 3]"),
    ("not_an_object", b'"trade"'),
    ("not_an_object", b'{"stream":"ethusdt@trade","data":[1]}'),
    ("not_an_object", bare(with_field(SPOT_KLINE, "k", "1m"))),
    ("missing_field", combined(without_field(SPOT_TRADE, "p"))),
    ("missing_field", combined(without_field(SPOT_TRADE, "T"))),
    ("missing_field", bare(without_field(SPOT_BOOK_TICKER, "A"))),
    ("missing_field", bare(without_field(SPOT_KLINE, "k"))),
    ("missing_field", bare({**SPOT_KLINE, "k": without_field(SPOT_KLINE["k"], "V")})),
    ("bad_type", combined(with_field(SPOT_TRADE, "m", "true"))),
    ("bad_type", combined(with_field(SPOT_TRADE, "s", ""))),
    ("bad_type", combined(with_field(SPOT_TRADE, "s", 7))),
    ("non_numeric", combined(with_field(SPOT_TRADE, "p", "61837.6x"))),
    ("non_numeric", combined(with_field(SPOT_TRADE, "q", None))),
    ("non_numeric", combined(with_field(SPOT_TRADE, "q", True))),
    ("non_numeric", combined(with_field(SPOT_TRADE, "T", "1723161255342"))),
    ("non_numeric", combined(with_field(SPOT_TRADE, "t", 3735683259.5))),
    ("non_finite", combined(with_field(SPOT_TRADE, "p", "NaN"))),
    ("non_finite", combined(with_field(SPOT_TRADE, "p", "inf"))),
    ("non_finite", combined(with_field(SPOT_TRADE, "q", "-Infinity"))),
    ("non_finite", combined(with_field(SPOT_TRADE, "q", "1e999"))),
    ("non_finite", bare(with_field(SPOT_BOOK_TICKER, "a", "nan"))),
    ("non_positive_price", combined(with_field(SPOT_TRADE, "p", "0.00000000"))),
    ("non_positive_price", combined(with_field(SPOT_TRADE, "p", "-61837.63"))),
    ("non_positive_price", bare(with_kline_field("l", "-1"))),
    ("non_positive_price", bare(with_field(SPOT_BOOK_TICKER, "b", "0.00000000"))),
    ("non_positive_price", bare(with_field(USDM_BOOK_TICKER, "a", "-1"))),
    ("negative_quantity", combined(with_field(SPOT_TRADE, "q", "-0.02"))),
    ("negative_quantity", bare(with_field(SPOT_BOOK_TICKER, "B", "-3"))),
    ("negative_quantity", bare(with_kline_field("v", "-40"))),
    ("out_of_range", combined(with_field(SPOT_TRADE, "t", -1))),
    ("out_of_range", combined(with_field(SPOT_TRADE, "T", 0))),
    ("out_of_range", combined(with_field(SPOT_TRADE, "t", 2**63))),
    ("out_of_range", combined(with_field(SPOT_TRADE, "T", 2**64 - 1))),
    ("inconsistent", bare(with_kline_field("h", "2683.5"))),
    ("inconsistent", bare(with_kline_field("V", "41"))),
    ("inconsistent", bare(with_kline_field("T", 1723161239999))),
    ("unknown_event", bare({"e": "tradeX", "s": "ETHUSDT"})),
    ("unknown_event", bare({"e": 5})),
    ("unknown_event", b"{}"),
    ("unknown_event", b'{"stream":"ethusdt@trade"}'),
]


@pytest.mark.parametrize(("reason", "frame"), MALFORMED, ids=[f"{r}-{i}" for i, (r, _) in enumerate(MALFORMED)])
def test_each_malformed_frame_is_rejected_with_its_reason_and_counted_without_raising(
    reason: str, frame: bytes
) -> None:
    with pytest.raises(FrameError) as info:
        parse_frame(frame, recv_time_ms=RECV_MS)
    assert info.value.reason == reason
    assert reason in REJECT_REASONS
    parser = FrameParser()
    # The malformed frame sits between valid frames of the same symbols: it must cost nothing else.
    frames = [combined(SPOT_TRADE), bare(SPOT_BOOK_TICKER), frame, combined(SPOT_TRADE), bare(SPOT_BOOK_TICKER)]
    out = parser.parse(frames, recv_time_ms=RECV_MS)
    assert out.rejected == {reason: 1}
    assert out.accepted == 4
    assert len(out.trades["BTCUSDT"]) == 2 and len(out.book_tickers["ETHUSDT"]) == 2
    assert parser.rejected == {reason: 1}
    assert reason in out.details and out.details[reason]


def test_rejection_message_names_the_field_and_the_bad_value() -> None:
    with pytest.raises(FrameError, match=r"'p'.*'NaN'|'p'.*nan"):
        parse_frame(combined(with_field(SPOT_TRADE, "p", "NaN")))
    with pytest.raises(FrameError, match=r"no 'q'"):
        parse_frame(combined(without_field(SPOT_TRADE, "q")))


@pytest.mark.parametrize(
    ("frame", "name"),
    [
        (combined(DEPTH_UPDATE, "ethusdt@depth@100ms"), "depthUpdate"),
        (bare(DEPTH_SNAPSHOT), "depth_snapshot"),
        (bare(SUBSCRIBE_REPLY), "subscribe_reply"),
        (bare({"result": ["ethusdt@trade"], "id": 3}), "subscribe_reply"),
        (bare({"error": {"code": 2, "msg": "Invalid request"}, "id": 4}), "error_reply"),
    ],
)
def test_valid_but_unhandled_frames_are_ignored_by_kind_not_rejected(frame: bytes, name: str) -> None:
    ev = parse_frame(frame)
    assert (ev.kind, ev.ignored_as, ev.record) == (IGNORED, name, None)
    parser = FrameParser()
    out = parser.parse([frame, frame])
    assert (out.accepted, out.rejected, out.ignored) == (0, {}, {name: 2})
    assert parser.ignored == {name: 2}


def test_lifetime_counters_add_up_across_batches() -> None:
    parser = FrameParser()
    parser.parse([combined(SPOT_TRADE), b"nope", bare(DEPTH_SNAPSHOT)])
    parser.parse([combined(SPOT_TRADE), combined(with_field(SPOT_TRADE, "p", "nan")), b"[]"])
    assert parser.accepted == 2
    assert parser.rejected == {"bad_json": 1, "non_finite": 1, "not_an_object": 1}
    assert parser.ignored == {"depth_snapshot": 1}
    assert parser.frames == 6


# --- properties: nothing escapes, counts add up, the batch agrees with the one-frame path ---------------

JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=12,
)
NASTY_VALUES: list[object] = [
        "nan", "NaN", "inf", "-inf", "1e999", "-1", "-0.0", "0", "0.00000000", "abc", "", " 1.5 ", "1_0",
        None, True, False, 0, -1, 1.5, -2.5, 2**63, 2**64 - 1, [], {}, "1723161255342", "ETHUSDT", "btcusdt",
]  # fmt: skip
NASTY = st.sampled_from(NASTY_VALUES)


@st.composite
def mutated_frames(draw: st.DrawFn) -> bytes:
    """A real-format frame with one field dropped or replaced (nested kline fields too), maybe bare."""
    event = dict(draw(st.sampled_from(list(TEMPLATES.values()))))
    target = event
    if "k" in event and draw(st.booleans()):
        event["k"] = target = dict(event["k"])
    key = draw(st.sampled_from(sorted(target)))
    action = draw(st.sampled_from(["drop", "nasty", "any"]))
    if action == "drop":
        del target[key]
    else:
        target[key] = draw(NASTY if action == "nasty" else JSON_VALUES)
    return combined(event) if draw(st.booleans()) else bare(event)


ANY_FRAME = (
    st.binary(max_size=64)
    | JSON_VALUES.map(orjson.dumps)
    | mutated_frames()
    | st.sampled_from([bare(t) for t in TEMPLATES.values()] + [bare(DEPTH_UPDATE), bare(DEPTH_SNAPSHOT)])
)
VALID_PREFIX = [combined(t) for t in TEMPLATES.values()] + [bare(with_field(SPOT_TRADE, "s", "ETHUSDT"))]


def every_single_field_mutation() -> list[bytes]:
    """Each template with each field (nested kline ones too) dropped, or set or added as each NASTY value."""
    frames = []
    for event in TEMPLATES.values():
        for nested in (False, True) if "k" in event else (False,):
            target = event["k"] if nested else event
            for key in target:
                variants = [{k: v for k, v in target.items() if k != key}]
                variants += [{**target, key: value} for value in NASTY_VALUES]
                for variant in variants:
                    mutated = {**event, "k": variant} if nested else variant
                    frames += [combined(mutated), bare(mutated)]
        # Fields other variants carry (a spot bookTicker given "T"/"E", a trade given "X"), or none.
        for key in ("T", "E", "X", "M", "e", "data", "result"):
            if key not in event:
                frames += [bare({**event, key: value}) for value in NASTY_VALUES + [1723161255111]]
    return frames


def one_by_one(frames: list[bytes], recv_ms: int) -> tuple[dict, Counter, Counter]:
    """What the batch must equal: every frame through parse_frame, grouped the same way."""
    records: dict[tuple[str, object], list[np.ndarray]] = defaultdict(list)
    rejected: Counter = Counter()
    ignored: Counter = Counter()
    for frame in frames:
        try:
            ev = parse_frame(frame, recv_time_ms=recv_ms)
        except FrameError as exc:
            rejected[exc.reason] += 1
            continue
        if ev.kind == IGNORED:
            ignored[ev.ignored_as] += 1
        else:
            key = (ev.symbol, ev.interval) if ev.kind == KLINE else ev.symbol
            records[(ev.kind, key)].append(ev.record)
    return records, rejected, ignored


def batch_records(out: ParsedFrames) -> dict[tuple[str, object], np.ndarray]:
    found = {}
    for kind, arrays in [
        (TRADE, out.trades),
        (AGG_TRADE, out.agg_trades),
        (KLINE, out.klines),
        (BOOK_TICKER, out.book_tickers),
    ]:
        for key, arr in arrays.items():
            found[(kind, key)] = arr
    return found


def assert_batch_equals_frame_by_frame(out: ParsedFrames, frames: list[bytes]) -> None:
    records, rejected, ignored = one_by_one(frames, RECV_MS)
    assert out.accepted + out.n_rejected + sum(out.ignored.values()) == len(frames) == out.n_frames
    assert "internal_error" not in out.rejected, out.details
    assert set(out.rejected) <= set(REJECT_REASONS)
    assert Counter(out.rejected) == rejected
    assert Counter(out.ignored) == ignored
    found = batch_records(out)
    assert set(found) == set(records)
    for key, arr in found.items():
        assert arr.tobytes() == np.concatenate(records[key]).tobytes(), key


# The fast path serves symbols the parser has accepted before, in this batch or an earlier one; "none"
# sends every symbol's first frame through the full check.
PRIMING = ["none", "same_batch", "earlier_batch"]


def parse_primed(frames: list[bytes], priming: str) -> tuple[FrameParser, ParsedFrames, list[bytes]]:
    parser = FrameParser()
    if priming == "same_batch":
        frames = VALID_PREFIX + frames
    elif priming == "earlier_batch":
        parser.parse(VALID_PREFIX, recv_time_ms=RECV_MS)
    before = parser.frames
    out = parser.parse(frames, recv_time_ms=RECV_MS)
    assert parser.frames - before == len(frames)
    return parser, out, frames


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ANY_FRAME, max_size=24), st.sampled_from(PRIMING))
def test_any_batch_never_raises_counts_add_up_and_equals_frame_by_frame_parsing(
    frames: list[bytes], priming: str
) -> None:
    _, out, frames = parse_primed(frames, priming)
    assert_batch_equals_frame_by_frame(out, frames)


@pytest.mark.parametrize("priming", PRIMING)
def test_every_single_field_mutation_of_every_event_is_decided_in_a_batch_as_frame_by_frame(priming: str) -> None:
    _, out, frames = parse_primed(every_single_field_mutation(), priming)
    assert len(frames) > 2000
    # Every reason a price, quantity, id, time or flag can fail for is reached by these mutations.
    assert set(out.rejected) >= set(REJECT_REASONS) - {"bad_json", "internal_error", "inconsistent"}
    assert_batch_equals_frame_by_frame(out, frames)


def test_a_rejected_trade_of_a_symbol_known_from_its_book_ticker_leaves_no_empty_trade_array() -> None:
    parser = FrameParser()
    bad_trade = bare(with_field(USDM_TRADE, "T", "nan"))
    out = parser.parse([bare(SPOT_BOOK_TICKER), bad_trade], recv_time_ms=RECV_MS)
    assert (out.trades, out.rejected) == ({}, {"non_numeric": 1})
    out = parser.parse([bad_trade, bare(with_field(USDM_TRADE, "t", -5))], recv_time_ms=RECV_MS)
    assert (out.trades, out.rejected) == ({}, {"non_numeric": 1, "out_of_range": 1})


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300) | st.text(max_size=80), min_size=1, max_size=16))
def test_garbage_bytes_and_text_are_all_rejected_or_ignored_never_raised(frames: list[bytes | str]) -> None:
    parser = FrameParser()
    out = parser.parse(frames, recv_time_ms=RECV_MS)
    assert out.n_frames == len(frames)
    assert "internal_error" not in out.rejected, out.details


@pytest.mark.parametrize("frame", [None, 12, object(), [b"{}"]], ids=["none", "int", "object", "list"])
def test_a_frame_that_is_not_bytes_or_str_is_bad_json(frame: object) -> None:
    out = FrameParser().parse([frame, combined(SPOT_TRADE)])  # type: ignore[list-item]
    assert out.rejected == {"bad_json": 1} and out.accepted == 1


# --- the real captures ----------------------------------------------------------------------------------


def load_capture(path: Path) -> tuple[list[bytes], list[int]]:
    """Lines ``<local receive ns> <json>`` -> (frames, receive times in ms)."""
    frames, recv = [], []
    with gzip.open(path, "rb") as fh:
        for line in fh:
            ns, _, payload = line.rstrip(b"\n").partition(b" ")
            frames.append(payload)
            recv.append(int(ns) // 1_000_000)
    return frames, recv


@pytest.fixture(scope="module")
def real_captures(shared_data: Path) -> dict[str, tuple[FrameParser, list[ParsedFrames], int, int]]:
    """Both days of each symbol through one parser per symbol, in batches of 1000 frames."""
    result = {}
    for symbol in ("eth", "btc"):
        parser = FrameParser()
        batches = []
        n_frames = 0
        maker_true = 0
        for day in ("20240808", "20240809"):
            frames, recv = load_capture(shared_data / "binance" / "ws" / f"spot_{symbol}usdt_{day}.gz")
            n_frames += len(frames)
            maker_true += sum(1 for f in frames if b'@trade"' in f[:40] and b'"m":true' in f)
            for i in range(0, len(frames), 1000):
                batches.append(parser.parse(frames[i : i + 1000], recv_time_ms=recv[i : i + 1000]))
        result[symbol] = (parser, batches, n_frames, maker_true)
    return result


@pytest.mark.parametrize(("symbol", "low", "high"), [("eth", 14_000, 15_000), ("btc", 19_500, 20_500)])
def test_real_capture_parses_with_zero_malformed_frames_and_all_trades(
    real_captures: dict, symbol: str, low: int, high: int
) -> None:
    parser, batches, n_frames, _ = real_captures[symbol]
    assert parser.rejected == {}
    assert parser.frames == n_frames
    assert set(parser.ignored) == {"depthUpdate", "depth_snapshot"}
    trades = np.concatenate([b.trades[f"{symbol.upper()}USDT"] for b in batches if b.trades])
    assert all(set(b.trades) <= {f"{symbol.upper()}USDT"} for b in batches)
    # Counts found in the two files of each symbol (README: ~14.5k ETH, ~19.9k BTC trades).
    assert len(trades) == {"eth": 14_515, "btc": 19_904}[symbol]
    assert low <= len(trades) <= high
    books = sum(len(b.book_tickers.get(f"{symbol.upper()}USDT", ())) for b in batches)
    assert books == {"eth": 58_758, "btc": 73_174}[symbol]
    assert parser.accepted == len(trades) + books


@pytest.mark.parametrize("symbol", ["eth", "btc"])
def test_real_trade_ids_strictly_increase_across_both_files_without_duplicates(
    real_captures: dict, symbol: str
) -> None:
    _, batches, _, _ = real_captures[symbol]
    trades = np.concatenate([b.trades[f"{symbol.upper()}USDT"] for b in batches if b.trades])
    assert np.all(np.diff(trades["trade_id"]) > 0)
    assert len(np.unique(trades["trade_id"])) == len(trades)
    assert np.all(np.diff(trades["time_ms"]) >= 0)
    assert np.all(trades["price"] > 0) and np.all(trades["qty"] > 0)


@pytest.mark.parametrize("symbol", ["eth", "btc"])
def test_real_m_true_maps_to_is_buyer_maker_true(real_captures: dict, symbol: str) -> None:
    _, batches, _, maker_true = real_captures[symbol]
    trades = np.concatenate([b.trades[f"{symbol.upper()}USDT"] for b in batches if b.trades])
    assert 0 < maker_true < len(trades)
    assert int(trades["is_buyer_maker"].sum()) == maker_true


def test_real_first_eth_trade_has_the_recorded_values(shared_data: Path) -> None:
    frames, recv = load_capture(shared_data / "binance" / "ws" / "spot_ethusdt_20240808.gz")
    first = next(f for f in frames if b"ethusdt@trade" in f[:40])
    r = parse_frame(first).record[0]
    assert (r["time_ms"], r["trade_id"], r["price"], r["qty"], bool(r["is_buyer_maker"])) == (
        1723161255611,
        1520538925,
        2683.8,
        0.002,
        True,
    )
    book = parse_frame(frames[0], recv_time_ms=recv[0]).record[0]
    assert book["time_ms"] == 1723161254024 and book["update_id"] == 35346513501


# The fast path decodes with msgspec structs where msgspec imports, and reads orjson's dicts otherwise: both
# must decide every frame exactly as the frame-by-frame path does.
DECODERS = ["msgspec structs", "orjson dicts"]


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("priming", PRIMING)
def test_both_fast_paths_decide_every_single_field_mutation_as_frame_by_frame(
    decoder: str, priming: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if decoder == "orjson dicts":
        monkeypatch.setattr(binance, "_WIRE", None)
    elif binance._WIRE is None:
        pytest.skip("msgspec does not import here")
    _, out, frames = parse_primed(every_single_field_mutation(), priming)
    assert_batch_equals_frame_by_frame(out, frames)


@pytest.mark.parametrize("decoder", DECODERS)
def test_both_fast_paths_refer_wire_oddities_to_the_authoritative_path(
    decoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if decoder == "orjson dicts":
        monkeypatch.setattr(binance, "_WIRE", None)
    elif binance._WIRE is None:
        pytest.skip("msgspec does not import here")
    trade = combined(with_field(SPOT_TRADE, "s", "ETHUSDT"))
    odd = [
        trade.replace(b'"p":', b'"p":"x","p":', 1),  # a repeated key: the last one counts
        trade.replace(b'"p":', b'"p":"x","p":', 1).replace(b'"p":"x",', b"", 1),
        trade.replace(b'"T":', b'"T":18446744073709551616,"T":', 1),
        trade.replace(b'"T":', b'"E":18446744073709551616,"T":', 1),  # orjson reads it as a float
        trade.replace(b'"m":', b'"extra":[[[1]]],"m":', 1),
        trade.replace(b'"m":', b'"X":null,"m":', 1),
        trade.replace(b'"stream":"', b'"stream":"\\ud800', 1),
        trade.replace(b'"s":"ETHUSDT"', b'"s":"ETH\\u0055SDT"', 1),
        b"\xef\xbb\xbf" + trade,
        trade + b" ",
        trade.decode(),
    ]
    _, out, frames = parse_primed(odd, "earlier_batch")
    assert_batch_equals_frame_by_frame(out, frames)
