"""Tests of market/spans.py: CNN, DQN and evaluation spans are ordered, disjoint and gapped by the horizon."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from market.errors import DataError
from market.spans import SpansConfig, make_span, split_spans, split_tail

T0 = 1_735_700_400_000


def minute_steps(n: int) -> np.ndarray:
    return T0 + 59_999 + 60_000 * np.arange(n, dtype=np.int64)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(50, 100_000),
    shares=st.tuples(st.integers(1, 20), st.integers(1, 20), st.integers(1, 20)),
    horizon=st.integers(1, 300),
    min_gap=st.integers(0, 400),
    warmup=st.integers(0, 400),
)
def test_spans_are_ordered_disjoint_and_gapped_by_at_least_the_horizon(
    n: int, shares: tuple[int, int, int], horizon: int, min_gap: int, warmup: int
) -> None:
    total = sum(shares)
    cfg = SpansConfig(
        cnn_fraction=shares[0] / total,
        dqn_fraction=shares[1] / total,
        eval_fraction=1.0 - shares[0] / total - shares[1] / total,
        min_gap_steps=min_gap,
        warmup_steps=warmup,
    )
    times = minute_steps(n)
    try:
        spans = split_spans(times, cfg, horizon=horizon)
    except DataError as exc:
        assert "too few" in str(exc)
        assert n - warmup - 2 * max(horizon, min_gap) < 3 * total / min(shares) + 3
        return
    cnn, dqn, ev = spans.cnn, spans.dqn, spans.eval
    assert spans.gap == max(horizon, min_gap)
    assert cnn.start == warmup and ev.end == n
    assert cnn.start < cnn.end and dqn.start < dqn.end and ev.start < ev.end
    # the CNN span ends before the DQN span begins, with the gap; the same between DQN and evaluation
    assert dqn.start - cnn.end >= horizon and dqn.start - cnn.end == spans.gap
    assert ev.start - dqn.end == spans.gap
    assert cnn.end_ms < dqn.start_ms and dqn.end_ms < ev.start_ms
    assert dqn.start_ms - cnn.end_ms == (spans.gap + 1) * 60_000
    covered = np.zeros(n, dtype=int)
    for span in (cnn, dqn, ev):
        covered[span.start : span.end] += 1
        assert span.start_ms == times[span.start] and span.end_ms == times[span.end - 1]
    assert covered.max() == 1
    assert covered.sum() == n - warmup - 2 * spans.gap


def test_shares_follow_the_config() -> None:
    spans = split_spans(minute_steps(10_300), SpansConfig(warmup_steps=100), horizon=100)
    assert (spans.cnn.n_steps, spans.dqn.n_steps, spans.eval.n_steps) == (5_000, 3_000, 2_000)
    record = spans.as_dict()
    assert record["gap_steps"] == 100
    assert record["cnn"] == {
        "name": "cnn",
        "start": 100,
        "end": 5_100,
        "start_ms": int(minute_steps(10_300)[100]),
        "end_ms": int(minute_steps(10_300)[5_099]),
        "n_steps": 5_000,
    }


def test_the_validation_tail_is_the_last_share_one_gap_after_the_head() -> None:
    times = minute_steps(2_000)
    span = make_span("cnn", times, 100, 1_100)
    head, tail = split_tail(span, times, 0.15, gap=60)
    assert (tail.start, tail.end) == (950, 1_100)
    assert (head.start, head.end) == (100, 890)
    assert tail.start - head.end == 60
    with pytest.raises(DataError, match="too short"):
        split_tail(make_span("cnn", times, 0, 100), times, 0.5, gap=60)


def test_too_few_steps_and_bad_times_are_errors_that_say_so() -> None:
    with pytest.raises(DataError, match="too few for three spans"):
        split_spans(minute_steps(483), SpansConfig(), horizon=240)
    times = minute_steps(1_000)
    times[500] = times[499]
    with pytest.raises(DataError, match="row 500"):
        split_spans(times, SpansConfig(), horizon=5)
    with pytest.raises(DataError, match="empty or outside"):
        make_span("x", minute_steps(10), 5, 11)


def test_shares_must_sum_to_one() -> None:
    with pytest.raises(ValidationError, match="must be 1"):
        SpansConfig(cnn_fraction=0.5, dqn_fraction=0.3, eval_fraction=0.3)
    with pytest.raises(ValidationError, match="extra"):
        SpansConfig(cnn_share=0.5)
