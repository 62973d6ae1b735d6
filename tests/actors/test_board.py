"""The board (``actors.board.Board``), without Ray: decisions, the paper curve beside buy-and-hold, the replay lag."""

from __future__ import annotations

import pytest

from actors.board import FEED_STOPPED_S, Board, hold_margins, risk_use


def status(step_ms: int, close: float, equity: float, **kw) -> dict:
    base = {
        "last_step_ms": step_ms,
        "last_price": close,
        "equity": equity,
        "initial_equity": 1_000.0,
        "fills": 0,
        "position": 0.0,
        "venue": "spot",
        "recent_fills": [],
        "pnl": {"total": equity - 1_000.0, "realized": 0.0, "unrealized": equity - 1_000.0},
        "risk": {"limits": {"max_position": 2.0, "max_daily_loss": None}, "trips": {"max_position": 1}},
        "taker_fee": 0.001,
    }
    return {**base, **kw}


def test_buy_and_hold_starts_at_the_first_step_and_a_point_is_added_only_when_the_step_moves_on() -> None:
    board = Board()
    board.observe_paper(status(60_000, 100.0, 1_000.0))
    board.observe_paper(status(60_000, 100.0, 1_000.0))  # the same step polled again: no new point
    board.observe_paper(status(120_000, 110.0, 1_001.0))
    assert [p[0] for p in board.equity] == [60_000, 120_000]
    qty = 1_000.0 * (1 - 0.001) / 100.0
    assert board.equity[1][2] == pytest.approx(qty * 110.0) and board.equity[1][1] == 1_001.0


def test_fills_are_kept_once_and_the_reason_for_no_trade_names_the_actions() -> None:
    board = Board()
    board.observe_paper(status(60_000, 100.0, 1_000.0))
    for t in (60_000, 120_000):
        board.add_decision({"step_time_ms": t, "action": "HOLD", "q_values": [0.0, 0.1, 0.2], "confidence": 0.1})
    assert board.why_no_trade().startswith("HOLD on every step so far (HOLD 2)")
    board.add_decision({"step_time_ms": 180_000, "action": "SELL", "q_values": [0.0, 0.3, 0.2], "confidence": 0.1})
    assert "while flat on spot" in board.why_no_trade()
    fill = {"time_ms": 1, "leg": "open", "side": "buy", "price": 100.0, "qty": 1.0}
    board.observe_paper(status(180_000, 100.0, 1_000.0, fills=1, recent_fills=[fill]))
    board.observe_paper(status(240_000, 100.0, 1_000.0, fills=1, recent_fills=[fill]))
    assert len(board.fills) == 1 and board.why_no_trade() == ""


def test_hold_margins_name_each_other_action_by_its_closest_approach_to_hold_in_the_policys_set() -> None:
    market = [{"q_values": [0.0, 0.1, 0.2]}, {"q_values": [0.15, -0.3, 0.2]}, {"q_values": [1.0]}]  # last: skipped
    assert hold_margins(market) == (
        ": Q(BUY) stayed below Q(HOLD) by 0.05 at the closest, Q(SELL) by 0.1 over the last 2 decisions"
    )
    scalper = ["BUY", "SELL", "HOLD", "POST_BID", "POST_ASK", "CANCEL"]
    text = hold_margins([{"q_values": [0.0, 0.1, 0.5, 0.2, 0.3, 0.45]}], scalper)
    assert text == (
        ": Q(BUY) stayed below Q(HOLD) by 0.5 at the closest, Q(SELL) by 0.4, Q(POST_BID) by 0.3, "
        "Q(POST_ASK) by 0.2, Q(CANCEL) by 0.05 over the last 1 decisions"
    )
    assert hold_margins(market[2:]) == ""


def test_lag_is_against_the_replay_clock_and_stale_only_once_the_feed_stops() -> None:
    board = Board()
    board.set_replay({"clock_ms": 10_000, "loop": 1, "loops": 1})
    snap = board.snapshot(data_time_ms=7_500, now_ms=1_000_000)
    assert snap["replay"]["lag_ms"] == 2_500 and snap["replay"]["stopped"] is False
    still = board.snapshot(data_time_ms=7_500, now_ms=1_000_000 + int(FEED_STOPPED_S * 1000) + 1)
    assert still["replay"]["stopped"] is True
    moved = board.snapshot(data_time_ms=8_000, now_ms=1_000_000 + int(FEED_STOPPED_S * 1000) + 2)
    assert moved["replay"]["stopped"] is False


def test_every_configured_risk_limit_has_a_row_with_its_use_and_trips() -> None:
    rows = risk_use(status(0, 100.0, 1_000.0)["risk"], {"position": -1.5, "equity": 1_000.0, "last_price": 100.0})
    by = {r["limit"]: r for r in rows}
    assert set(by) == {"max_position", "max_daily_loss"}
    assert by["max_position"]["use"] == 1.5 and by["max_position"]["trips"] == 1
