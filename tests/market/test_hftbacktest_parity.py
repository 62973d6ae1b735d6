"""The tick fills against hftbacktest: one scripted order sequence on the real ETHUSDT capture through the env (the one
venue step) and through hftbacktest's risk-averse queue model, same latency, fees, tick and lot; every order's
fate agrees or differs for a reason read from the tape (``bench.backtest.explain``; BENCHMARKS.md has examples)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("hftbacktest", reason="hftbacktest is not installed (the bench extra)")

from bench.backtest import Script, compare, equity_of, load_real, peer_events, run_ours, run_peer  # noqa: E402


@pytest.fixture(scope="module")
def runs(shared_data: Path):
    timeline, tape = load_real(shared_data)
    script = Script()
    ours, ours_equity = run_ours(timeline, tape, script)
    peer, peer_equity = run_peer(timeline, peer_events(tape), script, ours)
    return timeline, tape, script, ours, peer, ours_equity, peer_equity


def test_every_scripted_order_fills_as_in_hftbacktest_or_differs_for_a_reason_read_from_the_tape(runs) -> None:
    _, tape, script, ours, peer, _, _ = runs
    assert len(ours) == len(peer) > 100
    groups = compare(tape, ours, peer, script.latency_ms)
    assert "unexplained" not in groups, groups.get("unexplained")
    same = groups["same"]
    filled = [a for a, _ in same if a.fill_step >= 0]
    assert len(same) >= 0.6 * len(ours) and len(filled) >= 40
    # a reason is only ever one way round: hftbacktest fills on a quote crossing the order, ours waits for a trade
    for a, b in groups.get("quote crossed", []):
        assert b.fill_step >= 0 and (a.fill_step < 0 or b.fill_step < a.fill_step)
        assert b.fill_ms > tape.quote_time_ms[0]


def test_each_sides_final_equity_is_its_own_fills_so_the_pnl_gap_is_the_orders_that_differ(runs) -> None:
    timeline, _, script, ours, peer, ours_equity, peer_equity = runs
    mark, fee = float(timeline.base_close[-1]), float(script.venue().maker_fee)
    assert equity_of(ours, mark, fee) == pytest.approx(ours_equity, rel=1e-9)
    assert equity_of(peer, mark, fee) == pytest.approx(peer_equity, rel=1e-9)
    # the orders both filled alike contribute alike: the gap is what the differing orders did
    same = [a for a, b in zip(ours, peer, strict=True) if (a.fill_step, a.refused) == (b.fill_step, b.refused)]
    assert len(same) < len(ours) or ours_equity == pytest.approx(peer_equity, rel=1e-12)
