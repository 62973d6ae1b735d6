"""The metric catalog (names, kinds, tags, buckets) and the factory of ``ray.util.metrics`` objects."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors import metrics
from actors.metrics import (
    CATALOG,
    GROUPS,
    MetricKind,
    MetricUsageError,
    UnknownMetricError,
    get_metric,
    record,
    spec,
)

# What the issue asks the catalog to cover, by group.
REQUIRED = {
    "training": [
        "rayscalp_train_env_steps",
        "rayscalp_train_updates",
        "rayscalp_train_loss",
        "rayscalp_train_mean_return",
        "rayscalp_train_epsilon_min",
        "rayscalp_train_epsilon_max",
        "rayscalp_train_replay_fill",
        "rayscalp_train_checkpoints",
    ],
    "learning": [
        "rayscalp_learning_loss",
        "rayscalp_learning_mean_q",
        "rayscalp_learning_mean_abs_td",
        "rayscalp_learning_episode_return",
        "rayscalp_learning_validation_return",
        "rayscalp_learning_points",
        "rayscalp_learning_updates",
    ],
    "stream": [
        "rayscalp_stream_ticks_received",
        "rayscalp_stream_bars_closed",
        "rayscalp_stream_bad_frames",
        "rayscalp_stream_reconnects",
        "rayscalp_stream_gaps",
        "rayscalp_stream_backfilled_trades",
        "rayscalp_stream_lag_ms",
    ],
    "serving": ["rayscalp_serve_requests", "rayscalp_serve_latency_ms", "rayscalp_serve_errors"],
    "paper": [
        "rayscalp_paper_position",
        "rayscalp_paper_equity",
        "rayscalp_paper_pnl",
        "rayscalp_paper_fills",
        "rayscalp_paper_fees",
        "rayscalp_paper_risk_limit_trips",
        "rayscalp_paper_kill_switch",
    ],
}

PROM_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def _tags_for(entry: metrics.MetricSpec) -> dict[str, str]:
    return {key: f"v_{key}" for key in entry.tag_keys}


def test_catalog_covers_every_metric_the_issue_names_in_its_group() -> None:
    for group, names in REQUIRED.items():
        for name in names:
            assert name in CATALOG, name
            assert CATALOG[name].group == group
    assert {s.group for s in CATALOG.values()} == set(GROUPS)


def test_every_learning_curve_series_has_one_gauge_tagged_by_run() -> None:
    from policies.curves import SERIES

    assert list(metrics.LEARNING_METRICS) == list(SERIES)
    for series, name in metrics.LEARNING_METRICS.items():
        entry = CATALOG[name]
        assert entry.kind is MetricKind.GAUGE and entry.tag_keys == ("run",) and entry.group == "learning", series
    with pytest.raises(MetricUsageError, match="run"):
        record("rayscalp_learning_loss", 0.5)


def test_bars_are_counted_per_timeframe_and_serving_errors_by_status() -> None:
    assert "timeframe" in CATALOG["rayscalp_stream_bars_closed"].tag_keys
    assert "status" in CATALOG["rayscalp_serve_errors"].tag_keys
    assert CATALOG["rayscalp_serve_latency_ms"].kind is MetricKind.HISTOGRAM


def test_names_are_prefixed_valid_and_every_exported_series_is_unique() -> None:
    series: list[str] = []
    for name, entry in CATALOG.items():
        assert entry.name == name
        assert name.startswith(metrics.PROJECT_PREFIX)
        assert PROM_NAME.match(name), name
        assert entry.description.strip().endswith("."), name
        assert len(set(entry.tag_keys)) == len(entry.tag_keys), name
        assert all(PROM_NAME.match(tag) for tag in entry.tag_keys), name
        assert entry.aggregation in {"sum", "max", "min", "avg"}, name
        series.extend(entry.prometheus_series)
    assert len(series) == len(set(series))


def test_prometheus_names_carry_rays_prefix_and_the_counter_suffix() -> None:
    assert spec("rayscalp_train_updates").prometheus_name == "ray_rayscalp_train_updates_total"
    assert spec("rayscalp_train_loss").prometheus_name == "ray_rayscalp_train_loss"
    assert spec("rayscalp_stream_lag_ms").prometheus_series == (
        "ray_rayscalp_stream_lag_ms_bucket",
        "ray_rayscalp_stream_lag_ms_sum",
        "ray_rayscalp_stream_lag_ms_count",
    )


def test_histograms_have_positive_increasing_buckets_and_other_kinds_none() -> None:
    for entry in CATALOG.values():
        if entry.kind is MetricKind.HISTOGRAM:
            assert entry.boundaries, entry.name
            assert all(b > 0 for b in entry.boundaries), entry.name
            assert list(entry.boundaries) == sorted(set(entry.boundaries)), entry.name
        else:
            assert entry.boundaries == (), entry.name


def test_factory_makes_the_matching_ray_metric_once_per_process() -> None:
    from ray.util.metrics import Counter, Gauge, Histogram

    expected = {MetricKind.COUNTER: Counter, MetricKind.GAUGE: Gauge, MetricKind.HISTOGRAM: Histogram}
    for name, entry in CATALOG.items():
        made = get_metric(name)
        assert type(made) is expected[entry.kind], name
        assert get_metric(name) is made
        info = made.info
        assert info["name"] == name
        assert info["description"] == entry.description
        assert tuple(info["tag_keys"]) == entry.tag_keys
        if entry.kind is MetricKind.HISTOGRAM:
            assert list(made.boundaries) == list(entry.boundaries)


def test_an_unknown_name_is_an_error_that_names_it() -> None:
    with pytest.raises(UnknownMetricError, match="rayscalp_train_loss_typo"):
        get_metric("rayscalp_train_loss_typo")
    with pytest.raises(UnknownMetricError, match="not in the catalog"):
        record("ray_tasks", 1.0)


@given(
    name=st.sampled_from(sorted(CATALOG)),
    extra=st.sets(st.sampled_from(["symbol", "worker", "app", "zzz"]), max_size=2),
    drop=st.booleans(),
)
def test_record_refuses_any_tag_set_other_than_the_specs(name: str, extra: set[str], drop: bool) -> None:
    entry = CATALOG[name]
    keys = set(entry.tag_keys)
    if drop and keys:
        keys.discard(sorted(keys)[0])
    keys |= extra
    tags = {key: "x" for key in keys}
    if keys == set(entry.tag_keys):
        record(name, 1.0, tags)
    else:
        with pytest.raises(MetricUsageError, match=name):
            record(name, 1.0, tags)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_record_refuses_non_finite_values(bad: float) -> None:
    with pytest.raises(MetricUsageError, match="finite"):
        record("rayscalp_paper_equity", bad)


def test_a_counter_only_goes_up() -> None:
    with pytest.raises(MetricUsageError, match="only goes up"):
        record("rayscalp_train_updates", -1)
    record("rayscalp_train_updates", 0)  # nothing happened: accepted and skipped


@pytest.mark.ray
def test_an_actor_records_every_catalog_metric(ray_session) -> None:
    ray = ray_session
    payload = {name: _tags_for(entry) for name, entry in CATALOG.items()}

    @ray.remote(num_cpus=0)
    class Recorder:
        def record_all(self, tagged: dict[str, dict[str, str]]) -> list[str]:
            from actors import metrics as in_worker

            done = []
            for name, tags in tagged.items():
                in_worker.record(name, 2.0, tags)
                done.append(f"{name}:{type(in_worker.get_metric(name)).__name__}")
            assert len(in_worker.CATALOG) == len(tagged)
            return done

    recorder = Recorder.remote()
    try:
        done = ray.get(recorder.record_all.remote(payload), timeout=120)
    finally:
        ray.kill(recorder)
    kinds = {"counter": "Counter", "gauge": "Gauge", "histogram": "Histogram"}
    assert done == [f"{n}:{kinds[e.kind.value]}" for n, e in CATALOG.items()]


def test_a_gauge_is_kept_for_re_sending_until_forgotten() -> None:
    record("rayscalp_paper_position", -0.5, {"symbol": "ETHUSDT"})
    record("rayscalp_paper_position", 1.25, {"symbol": "ETHUSDT"})
    record("rayscalp_train_updates", 3)  # counters are cumulative in Ray: nothing to re-send
    kept = metrics.kept_gauges()
    assert kept[("rayscalp_paper_position", (("symbol", "ETHUSDT"),))] == 1.25
    assert not any(name == "rayscalp_train_updates" for name, _ in kept)
    metrics.forget_gauge("rayscalp_paper_position", {"symbol": "ETHUSDT"})
    assert ("rayscalp_paper_position", (("symbol", "ETHUSDT"),)) not in metrics.kept_gauges()


def test_gauges_are_re_sent_within_rays_gauge_lifetime(monkeypatch) -> None:
    # Ray drops a gauge not set again within 2 report intervals; re-sending every half interval keeps it.
    monkeypatch.setenv("RAY_metrics_report_interval_ms", "4000")
    monkeypatch.setattr("ray._config", None, raising=False)  # outside a Ray process: the env var decides
    assert metrics.gauge_refresh_s() == 2.0
    monkeypatch.setenv("RAY_metrics_report_interval_ms", "200")  # Ray floors the interval at 1 s
    assert metrics.gauge_refresh_s() == 0.5
