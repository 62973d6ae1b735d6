"""The catalog of every metric the project exports, and the factory that makes its ``ray.util.metrics`` object.

A metric exists only if it is in ``CATALOG``: dashboards, alerts and PromQL are built from these specs, so a
name recorded anywhere else is an error. Never invents a value: it only re-sends a gauge's last recorded one.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from market.errors import RayscalpError
from policies.curves import SERIES, SERIES_TITLES

if TYPE_CHECKING:
    from ray.util.metrics import Metric

__all__ = [
    "CATALOG",
    "GROUPS",
    "LATENCY_MS_BOUNDARIES",
    "LEARNING_METRICS",
    "PROJECT_PREFIX",
    "RAY_EXPORT_PREFIX",
    "MetricKind",
    "MetricSpec",
    "MetricUsageError",
    "UnknownMetricError",
    "forget_gauge",
    "gauge_refresh_s",
    "get_metric",
    "kept_gauges",
    "record",
    "spec",
]

PROJECT_PREFIX = "rayscalp_"
"""Every project metric name starts with this (as given to ``ray.util.metrics``)."""

RAY_EXPORT_PREFIX = "ray_"
"""Ray's metrics agent prepends this when it exports a custom metric to Prometheus."""

LATENCY_MS_BOUNDARIES: tuple[float, ...] = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
"""Histogram buckets for latencies and lags in milliseconds (1 ms to 10 s)."""

_UPDATE_SECONDS_BOUNDARIES: tuple[float, ...] = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class UnknownMetricError(RayscalpError, KeyError):
    """A metric name that is not in the catalog."""

    def __str__(self) -> str:  # KeyError quotes its message; this one reads as a sentence
        return str(self.args[0]) if self.args else ""


class MetricUsageError(RayscalpError, ValueError):
    """A catalog metric recorded the wrong way: wrong tags, a negative counter increment, a non-finite value."""


class MetricKind(StrEnum):
    """The three kinds ``ray.util.metrics`` offers."""

    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One catalog entry.

    Attributes
    ----------
    name : str
        The name given to ``ray.util.metrics`` (``rayscalp_<group>_<what>``).
    kind : MetricKind
        Counter (only goes up), gauge (set to the current value) or histogram (observations in buckets).
    description : str
        What is measured and in which unit.
    group : str
        ``training``, ``learning``, ``stream``, ``serving`` or ``paper``: the dashboard row it belongs to.
    tag_keys : tuple of str
        The tag keys every record must give, no more and no fewer.
    boundaries : tuple of float
        Histogram bucket upper bounds, increasing and positive; empty for the other kinds.
    unit : str
        Grafana's unit id for panels (``short``, ``ms``, ``s``, ``percentunit``, ``currencyUSD``...).
    aggregation : str
        How series of several processes combine on a dashboard (``sum``, ``max``, ``min``, ``avg``): Ray
        labels each series with the reporting worker, so a panel aggregates over everything but the tags.
    """

    name: str
    kind: MetricKind
    description: str
    group: str
    tag_keys: tuple[str, ...] = ()
    boundaries: tuple[float, ...] = ()
    unit: str = "short"
    aggregation: str = "sum"

    @property
    def prometheus_name(self) -> str:
        """The series name in Prometheus: Ray's ``ray_`` prefix, plus ``_total`` on counters."""
        base = RAY_EXPORT_PREFIX + self.name
        return base + "_total" if self.kind is MetricKind.COUNTER else base

    @property
    def prometheus_series(self) -> tuple[str, ...]:
        """Every series name the metric produces (a histogram has ``_bucket``, ``_sum`` and ``_count``)."""
        if self.kind is MetricKind.HISTOGRAM:
            base = self.prometheus_name
            return (base + "_bucket", base + "_sum", base + "_count")
        return (self.prometheus_name,)


def _c(name: str, group: str, description: str, tags: tuple[str, ...] = (), unit: str = "short") -> MetricSpec:
    return MetricSpec(PROJECT_PREFIX + name, MetricKind.COUNTER, description, group, tags, (), unit)


def _g(
    name: str, group: str, description: str, tags: tuple[str, ...] = (), unit: str = "short", agg: str = "max"
) -> MetricSpec:
    return MetricSpec(PROJECT_PREFIX + name, MetricKind.GAUGE, description, group, tags, (), unit, agg)


def _h(
    name: str, group: str, description: str, boundaries: tuple[float, ...], tags: tuple[str, ...] = (), unit: str = "ms"
) -> MetricSpec:
    return MetricSpec(PROJECT_PREFIX + name, MetricKind.HISTOGRAM, description, group, tags, boundaries, unit)


_SPECS: tuple[MetricSpec, ...] = (
    # Training: rollout workers and the learner.
    _c("train_env_steps", "training", "Environment steps taken by rollout workers.", ("worker",)),
    _c("train_transitions_added", "training", "Compact transitions added to the prioritized replay."),
    _c("train_updates", "training", "Gradient updates applied by the learner."),
    _g("train_loss", "training", "Learner loss of the latest update (Huber TD error, mean over the batch)."),
    _g(
        "train_mean_return",
        "training",
        "Mean episode return, net of fees, over the latest reporting window.",
        ("split",),
        agg="avg",
    ),
    _g("train_epsilon_min", "training", "Smallest exploration epsilon among the rollout workers.", agg="min"),
    _g("train_epsilon_max", "training", "Largest exploration epsilon among the rollout workers."),
    _g("train_replay_fill", "training", "Fraction of the replay capacity in use (0 to 1).", unit="percentunit"),
    _g("train_replay_size", "training", "Transitions held in the prioritized replay.", agg="sum"),
    _c("train_checkpoints", "training", "Checkpoints written by the learner."),
    _c("train_weight_syncs", "training", "Weight broadcasts from the learner to workers and the policy deployment."),
    _h(
        "train_update_seconds",
        "training",
        "Wall time of one learner update, sampling included, in seconds.",
        _UPDATE_SECONDS_BOUNDARIES,
        unit="s",
    ),
    # Learning curves: the learner's curve points (policies.curves), per run, as they are made.
    *(
        _g(
            f"learning_{series}",
            "learning",
            f"Learning curve, {SERIES_TITLES[series]}, at the run's newest point (one every K learner updates).",
            ("run",),
        )
        for series in SERIES
    ),
    _g("learning_points", "learning", "Learning-curve points the run has so far.", ("run",)),
    _g("learning_updates", "learning", "Learner updates at the run's newest learning-curve point.", ("run",)),
    # Stream: ingestion and the unified stream.
    _c("stream_ticks_received", "stream", "Trades received from the exchange, per symbol.", ("symbol",)),
    _c("stream_bars_closed", "stream", "Bars closed, per symbol and timeframe.", ("symbol", "timeframe")),
    _c("stream_bad_frames", "stream", "Websocket frames that could not be parsed, by reason.", ("reason",)),
    _c("stream_reconnects", "stream", "Websocket reconnections after a drop or an error."),
    _c(
        "stream_trades_refused",
        "stream",
        "Trades or headers ingestion refused as forged or implausible, by reason.",
        ("reason",),
    ),
    _c("stream_silences", "stream", "Silent open connections found by the watchdog (probed over REST, reconnected)."),
    _c("stream_gaps", "stream", "Gaps in trade ids detected, per symbol.", ("symbol",)),
    _c("stream_gaps_unfilled", "stream", "Gaps recorded as lost after the bounded backfill wait.", ("symbol",)),
    _c("stream_backfilled_trades", "stream", "Trades recovered by REST backfill, per symbol.", ("symbol",)),
    _h(
        "stream_lag_ms",
        "stream",
        "Receive time minus the exchange's trade time, in milliseconds.",
        LATENCY_MS_BOUNDARIES,
        ("symbol",),
    ),
    # Serving: the Serve apps.
    _c("serve_requests", "serving", "HTTP requests answered, per app and route.", ("app", "route")),
    _h(
        "serve_latency_ms",
        "serving",
        "Request latency inside the deployment, in milliseconds.",
        LATENCY_MS_BOUNDARIES,
        ("app", "route"),
    ),
    _c("serve_errors", "serving", "Requests answered with an error, by HTTP status.", ("app", "route", "status")),
    # Paper trading: the policy on the live stream with simulated fills.
    _g("paper_position", "paper", "Position in base units, signed (negative is short).", ("symbol",), agg="sum"),
    _g(
        "paper_equity",
        "paper",
        "Equity in quote units (USDT), marked to the last price, net of fees.",
        unit="currencyUSD",
        agg="sum",
    ),
    _g(
        "paper_pnl",
        "paper",
        "Profit and loss in quote units, net of fees, by kind (realized, unrealized).",
        ("kind",),
        unit="currencyUSD",
        agg="sum",
    ),
    _c("paper_fills", "paper", "Simulated fills, per symbol and side.", ("symbol", "side")),
    _c("paper_fees", "paper", "Fees paid on simulated fills, in quote units.", ("symbol",), "currencyUSD"),
    _c("paper_risk_limit_trips", "paper", "Orders refused or positions cut by a risk limit, by limit.", ("limit",)),
    _g("paper_kill_switch", "paper", "1 while the kill switch is engaged, 0 otherwise."),
)

CATALOG: Mapping[str, MetricSpec] = MappingProxyType({s.name: s for s in _SPECS})
"""Every project metric by name, in dashboard order."""

GROUPS: tuple[str, ...] = ("training", "learning", "stream", "serving", "paper")
"""The metric groups in dashboard order."""

LEARNING_METRICS: Mapping[str, str] = MappingProxyType({s: f"{PROJECT_PREFIX}learning_{s}" for s in SERIES})
"""The catalog gauge of each learning-curve series (``policies.curves.SERIES``), tagged ``run``."""

_created: dict[str, Metric] = {}
_lock = threading.Lock()

# Ray 2.60's metrics agent drops a gauge series that has not been set again within two report intervals
# (open_telemetry_metric_recorder.py, ``_gauge_metric_ttl_s``), so a gauge set once (equity, kill switch)
# would vanish from Prometheus. The last value of each (gauge, tags) is kept and re-sent by a daemon thread.
_GaugeKey = tuple[str, tuple[tuple[str, str], ...]]
_kept: dict[_GaugeKey, float] = {}
_refresher: threading.Thread | None = None


def spec(name: str) -> MetricSpec:
    """The catalog entry of ``name``.

    Raises
    ------
    UnknownMetricError
        When ``name`` is not in the catalog; the message names it.
    """
    try:
        return CATALOG[name]
    except KeyError:
        raise UnknownMetricError(
            f"metric {name!r} is not in the catalog (actors/metrics.py); known: {', '.join(CATALOG)}"
        ) from None


def get_metric(name: str) -> Metric:
    """The ``ray.util.metrics`` object of a catalog entry, created on first use in this process.

    Parameters
    ----------
    name : str
        A catalog name such as ``rayscalp_train_updates``.

    Returns
    -------
    ray.util.metrics.Counter, Gauge or Histogram
        The same object on every call in this process.
    """
    entry = spec(name)
    with _lock:
        metric = _created.get(name)
        if metric is None:
            metric = _make(entry)
            _created[name] = metric
        return metric


def _make(entry: MetricSpec) -> Metric:
    from ray.util.metrics import Counter, Gauge, Histogram

    if entry.kind is MetricKind.COUNTER:
        return Counter(entry.name, description=entry.description, tag_keys=entry.tag_keys)
    if entry.kind is MetricKind.GAUGE:
        return Gauge(entry.name, description=entry.description, tag_keys=entry.tag_keys)
    return Histogram(
        entry.name, description=entry.description, boundaries=list(entry.boundaries), tag_keys=entry.tag_keys
    )


def gauge_refresh_s() -> float:
    """Seconds between re-sends of kept gauges: half of Ray's metrics report interval (10 s by default)."""
    try:
        import ray

        interval_ms = float(ray._config.metrics_report_interval_ms())
    except Exception:  # not in a Ray process, or a Ray without this private accessor
        raw = os.environ.get("RAY_metrics_report_interval_ms", "")  # noqa: SIM112 - Ray's own spelling
        interval_ms = float(raw) if raw.strip().isdigit() else 10_000.0
    return max(interval_ms, 1000.0) / 1000.0 / 2.0


def kept_gauges() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The gauges this process re-sends, as ``{(name, sorted tag items): last value}``."""
    with _lock:
        return dict(_kept)


def forget_gauge(name: str, tags: Mapping[str, Any] | None = None) -> None:
    """Stop re-sending a gauge series (a symbol no longer traded, a worker gone); Ray then drops it."""
    key = (spec(name).name, tuple(sorted((k, str(v)) for k, v in (tags or {}).items())))
    with _lock:
        _kept.pop(key, None)


def _refresh_forever() -> None:
    while True:
        time.sleep(gauge_refresh_s())
        for (name, items), value in kept_gauges().items():
            try:
                get_metric(name).set(value, tags=dict(items) or None)
            except Exception:  # a worker shutting down: the thread must outlive one failed re-send
                continue


def _keep_gauge(name: str, str_tags: Mapping[str, str] | None, value: float) -> None:
    global _refresher
    with _lock:
        _kept[(name, tuple(sorted((str_tags or {}).items())))] = value
        if _refresher is None or not _refresher.is_alive():
            _refresher = threading.Thread(target=_refresh_forever, name="rayscalp-gauge-refresh", daemon=True)
            _refresher.start()


def record(name: str, value: float, tags: Mapping[str, Any] | None = None) -> None:
    """Record one value the way the metric's kind means: counters add it, gauges set it, histograms observe it.

    A gauge's last value is re-sent every ``gauge_refresh_s()`` so it stays visible until it changes or
    ``forget_gauge`` is called.

    Parameters
    ----------
    name : str
        A catalog name.
    value : float
        Finite; a counter's increment must be > 0 (a zero increment is skipped, as nothing happened).
    tags : mapping, optional
        Exactly the spec's tag keys; values are turned into strings.

    Raises
    ------
    UnknownMetricError
        When ``name`` is not in the catalog.
    MetricUsageError
        When the tag keys differ from the spec's, or the value is not finite, or a counter goes down.
    """
    entry = spec(name)
    given = dict(tags or {})
    if set(given) != set(entry.tag_keys):
        raise MetricUsageError(f"metric {name!r}: tags must be exactly {sorted(entry.tag_keys)} (got {sorted(given)})")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise MetricUsageError(f"metric {name!r}: value must be finite (got {value!r})")
    str_tags = {key: str(val) for key, val in given.items()} or None
    if entry.kind is MetricKind.COUNTER:
        if value < 0:
            raise MetricUsageError(f"metric {name!r}: a counter only goes up (got increment {value!r})")
        if value == 0:
            return
        get_metric(name).inc(value, tags=str_tags)
    elif entry.kind is MetricKind.GAUGE:
        get_metric(name).set(value, tags=str_tags)
        _keep_gauge(name, str_tags, value)
    else:
        get_metric(name).observe(value, tags=str_tags)
