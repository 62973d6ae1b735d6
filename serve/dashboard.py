"""The live scalping dashboard as a Ray Serve app: one HTML page and the JSON state it polls.

Reads the stream, paper-trading and learner actors found by name (each optional) and shows only what they
return: never invents, pads or smooths a number, says "not running" for an absent source, and writes to
no actor except through the paper kill switch.

Run it with ``serve run serve.dashboard:build_app`` (keys of :class:`DashboardConfig` as ``key=value``) or
from Python with :func:`deploy`. HTTP, under ``route_prefix`` (``/dashboard`` by default): ``GET /`` the
page, ``GET /api/state`` everything the page shows (JSON), ``POST /api/paper/kill`` the kill switch
(503 while no paper trader runs), ``GET /api/config`` the settings in force, ``GET /api/health`` liveness.

With a key in ``$RAYSCALP_API_KEY`` (``api_key_env``) every route but health answers 401 without it: API
clients send ``X-API-Key``; a browser posts the key once to ``POST /login`` (the 401 page is that form),
which sets it as an HttpOnly SameSite=Strict cookie. Without a key the app refuses to start unless Serve
listens on loopback. The kill switch also refuses a request from another site (``Origin``,
``Sec-Fetch-Site``) and, without a key, a ``Host`` that is not a loopback name (DNS rebinding).
"""

# No ``from __future__ import annotations``: FastAPI reads the route signatures (``request: Request``) at
# runtime through Serve's ingress wrapper, which cannot resolve string annotations.
import asyncio
import dataclasses
import enum
import logging
import math
import re
import time
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import numpy as np
import orjson
import ray
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field, ValidationError, field_validator
from ray import serve
from ray.serve.handle import DeploymentHandle

from market.config import StrictModel
from market.errors import ConfigError
from market.pivots import WilliamsConfig, swing_points
from market.records import BAR_DTYPE
from market.timeframes import TIMEFRAME_MS

from .auth import DEFAULT_API_KEY_ENV, ApiKeyAuth, AuthError, check_bind
from .common import KEY_COOKIE, authorize, check_route_prefix, check_same_origin, login_form, proxy_host, read_body

__all__ = [
    "LEARNER_FIELDS",
    "PAPER_FIELDS",
    "PAGE_PATH",
    "DashboardConfig",
    "DashboardDeployment",
    "DashboardState",
    "app_config",
    "build_app",
    "chart",
    "deploy",
    "flatten",
    "jsonable",
    "pick_fields",
    "thin_curves",
]

logger = logging.getLogger("ray.serve")

PAGE_PATH = Path(__file__).with_name("dashboard_page.html")
"""The page (plain HTML + JS, no external asset); ``__ROOT__`` and ``__REFRESH_MS__`` are filled in per request."""

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")

#: Headline values of the paper account: label -> keys looked up (first one holding a value wins) in the
#: flattened ``status()`` of the paper actor. A key matches a flattened key equal to it or ending in ``.key``.
PAPER_FIELDS: Mapping[str, tuple[str, ...]] = {
    "position": ("position", "position_qty", "qty"),
    "entry_price": ("entry_price", "entry", "avg_entry_price"),
    "last_price": ("last_price", "mark_price", "price"),
    "equity": ("equity", "equity_usdt"),
    "cash": ("cash", "balance", "quote_balance"),
    "pnl": ("pnl", "net_pnl", "total_pnl"),
    "realized_pnl": ("realized_pnl", "pnl_realized", "realized"),
    "unrealized_pnl": ("unrealized_pnl", "pnl_unrealized", "unrealized"),
    "fills": ("fills", "n_fills", "fill_count"),
    "fees": ("fees", "fees_paid", "total_fees"),
    "kill_switch": ("kill_switch", "killed", "kill_switch_engaged", "halted"),
}

#: Headline values of the live state (the one ``LiveState`` of the traded symbol's latest step, without its vector).
LIVE_STATE_FIELDS: Mapping[str, tuple[str, ...]] = {
    "step_time_ms": ("step_time_ms",),
    "data_time_ms": ("data_time_ms",),
    "close": ("close",),
    "half_spread": ("half_spread",),
    "seq": ("seq",),
    "cnn_source": ("cnn_source",),
    "agent_source": ("agent_source",),
}

#: Headline values of training: label -> keys looked up in the flattened ``stats()`` of the learner.
LEARNER_FIELDS: Mapping[str, tuple[str, ...]] = {
    "loss": ("loss", "train_loss", "last_loss"),
    "mean_return": ("mean_return", "train_mean_return", "episode_return", "return"),
    "epsilon": ("epsilon", "epsilon_min", "train_epsilon_min"),
    "replay_fill": ("replay_fill", "train_replay_fill"),
    "replay_size": ("replay_size", "train_replay_size"),
    "env_steps": ("env_steps", "train_env_steps", "total_env_steps"),
    "updates": ("updates", "train_updates", "total_updates"),
    "env_steps_per_s": ("env_steps_per_s", "env_steps_s", "steps_per_s"),
    "updates_per_s": ("updates_per_s", "updates_s"),
}

#: Counters whose per-second rate is derived from successive samples when the source gives no rate.
_RATE_OF = {"env_steps_per_s": "env_steps", "updates_per_s": "updates"}


class DashboardConfig(StrictModel):
    """Settings of the dashboard app.

    Attributes
    ----------
    namespace : str
        Ray namespace of the source actors (``rayscalp`` is where ``rayscalp stream`` and the training
        driver name theirs).
    stream_actor, paper_actor, learner_actor, live_state_actor : str
        Names of the source actors; each is optional at run time (its panel says when it is absent). The
        live-state panel shows the live-state actor's latest ``LiveState`` (the one state built per step).
        The learner is the actor named ``learner_actor``, else the newest named ``<learner_actor>-<run id>``
        (what ``rayscalp train`` names a run's learner).
    refresh_ms : int
        How often the page fetches ``/api/state`` (1 to 5 s); a page URL may ask ``?refresh_ms=`` in that range.
    chart_timeframe : str
        Timeframe of the candlestick charts (a timeframe the stream builds).
    chart_bars : int
        Candles drawn per chart (the last closed ones and the forming one).
    pivot_strength : int
        Bars on each side of a Williams swing; the chart marks the confirmed swings of levels 1 to 5.
    call_timeout_s : float
        Bound on each actor call; a source slower than that is shown as unreachable for this refresh.
    min_interval_ms : int
        Requests closer together than this share one read of the sources (several open pages).
    history_len : int
        Samples of the training and tick-rate series kept for the sparklines.
    max_list_items : int
        Lists in a source's answer (e.g. recent fills) are cut to their last this-many items.
    curve_points : int
        Most learning-curve points sent per refresh; a longer run's curves are thinned evenly, the newest kept.
    """

    namespace: str = "rayscalp"
    stream_actor: str = "rayscalp-stream"
    paper_actor: str = "rayscalp-paper"
    learner_actor: str = "rayscalp-learner"
    live_state_actor: str = "rayscalp-live-state"
    refresh_ms: int = Field(1_000, ge=1_000, le=5_000)
    chart_timeframe: str = "1s"
    chart_bars: int = Field(120, ge=10, le=1_000)
    pivot_strength: int = Field(2, ge=1, le=50)
    call_timeout_s: float = Field(2.0, gt=0.0, le=60.0)
    min_interval_ms: int = Field(200, ge=0, le=5_000)
    history_len: int = Field(600, ge=2, le=100_000)
    max_list_items: int = Field(50, ge=1, le=10_000)
    curve_points: int = Field(500, ge=2, le=100_000)
    num_cpus: float = Field(0.1, ge=0.0, le=8.0)
    app_name: str = "dashboard"
    route_prefix: str = "/dashboard"
    api_key_env: str = Field(DEFAULT_API_KEY_ENV, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @field_validator("namespace", "stream_actor", "paper_actor", "learner_actor", "live_state_actor", "app_name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"must be 1-128 letters, digits or _.:- (got {value!r})")
        return value

    @field_validator("chart_timeframe")
    @classmethod
    def _timeframe(cls, value: str) -> str:
        if value not in TIMEFRAME_MS:
            raise ValueError(f"unknown timeframe {value!r}; expected one of {list(TIMEFRAME_MS)}")
        return value

    @field_validator("route_prefix")
    @classmethod
    def _route(cls, value: str) -> str:
        return check_route_prefix(value)


# ---------------------------------------------------------------------------------------------------
# Plain functions: answers of the sources -> the JSON the page draws (no Ray)
# ---------------------------------------------------------------------------------------------------


def live_state_summary(live: Any) -> Any:
    """A ``LiveState`` without its vectors (the state and agent arrays), or the reason there is none (a str)."""
    if isinstance(live, str) or not dataclasses.is_dataclass(live):
        return live
    return {f.name: getattr(live, f.name) for f in dataclasses.fields(live) if f.name not in ("state", "agent")}


def thin_curves(curves: Mapping[str, Any], max_points: int) -> dict[str, Any]:
    """The learner's ``curves()`` (``LearningCurves.as_dict``) with at most ``max_points`` points: every k-th one,
    counted back from the newest so that the newest is always kept; ``points`` says how many there were."""
    updates = list(curves.get("updates") or [])
    n = len(updates)
    stride = max(1, math.ceil(n / max_points))
    keep = list(range(n - 1, -1, -stride))[::-1]
    series = curves.get("series") or {}
    return {
        "every_updates": curves.get("every_updates"),
        "points": n,
        "updates": [updates[i] for i in keep],
        "env_steps": [jsonable(curves["env_steps"][i]) for i in keep] if "env_steps" in curves else [],
        "series": {name: [jsonable(values[i]) for i in keep] for name, values in series.items()},
    }


def jsonable(value: Any, max_items: int = 50) -> Any:
    """``value`` as JSON-ready Python: dataclasses, mappings, pydantic models, numpy values and arrays
    (structured ones as lists of records), enums; non-finite floats become None, lists keep their last
    ``max_items`` items, anything else its ``str``."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, enum.Enum):
        return jsonable(value.value, max_items)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name), max_items) for f in dataclasses.fields(value)}
    if isinstance(value, BaseModel):
        return jsonable(value.model_dump(), max_items)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, max_items) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        rows = value[-max_items:] if value.ndim else value
        if value.dtype.names:
            return [{n: jsonable(r[n], max_items) for n in value.dtype.names} for r in rows]
        return jsonable(rows.tolist(), max_items)
    if isinstance(value, list | tuple | deque):
        return [jsonable(v, max_items) for v in list(value)[-max_items:]]
    return str(value)


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings of a :func:`jsonable` value as one mapping of dotted keys (lists stay whole)."""
    if not isinstance(value, Mapping):
        return {prefix or "value": value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(item, Mapping) and item:
            out.update(flatten(item, name))
        else:
            out[name] = item
    return out


def pick_fields(flat: Mapping[str, Any], fields: Mapping[str, Sequence[str]]) -> dict[str, dict[str, Any]]:
    """The headline values of a flattened answer: label -> ``{"key": source key, "value": value}``.

    For each label the first of its keys that a flattened key equals, or ends with after a dot, and whose
    value is a number or a bool wins (a list counts as its length: ``fills`` may be the fills themselves).
    Labels with no match are left out: the page shows nothing rather than a made-up value.
    """
    picked: dict[str, dict[str, Any]] = {}
    for label, keys in fields.items():
        for key in keys:
            match = next((k for k in flat if k == key or k.endswith("." + key)), None)
            if match is None:
                continue
            value = flat[match]
            if isinstance(value, list):
                value = len(value)
            if isinstance(value, bool | int | float):
                picked[label] = {"key": match, "value": value}
                break
    return picked


def chart(bars: np.ndarray, last_trade_ms: int, n_bars: int, strength: int) -> dict[str, Any]:
    """Candles of the last ``n_bars`` bars, and the confirmed Williams swings among them.

    Parameters
    ----------
    bars : np.ndarray
        BAR_DTYPE as :meth:`UnifiedStream.bars` gives them: the kept closed bars, then the forming one.
    last_trade_ms : int
        Time of the symbol's last trade: the bar holding it is the forming one (-1 before any trade).
    n_bars : int
        Candles to return.
    strength : int
        Swing strength; swings are found over every closed bar held (more context than the candles drawn),
        so a swing is shown once confirmed by closed bars only.

    Returns
    -------
    dict
        Columns ``t`` (open time, ms), ``o``, ``h``, ``l``, ``c``, ``v`` (volume), ``n`` (trades);
        ``forming``: whether the last candle is still forming; ``pivots``: records ``{i, t, price, kind,
        level, confirm_t}`` with ``i`` the candle index, ``kind`` +1 high / -1 low, ``confirm_t`` the open
        time of the bar that confirmed it.
    """
    if bars.dtype != BAR_DTYPE:
        raise ConfigError(f"chart: bars must be BAR_DTYPE, got {bars.dtype}")
    forming = bool(bars.size and last_trade_ms >= 0 and int(bars["close_time_ms"][-1]) >= last_trade_ms)
    closed = bars[:-1] if forming else bars
    shown = bars[-n_bars:]
    first = bars.size - shown.size  # index in ``bars`` of the first candle drawn
    pivots: list[dict[str, Any]] = []
    if closed.size:
        swings = swing_points(closed["high"], closed["low"], WilliamsConfig(strengths=(strength,)))
        swings = swings[swings["bar_index"] >= first]
        for s in swings[np.lexsort((swings["level"], swings["bar_index"]))]:
            pivots.append(
                {
                    "i": int(s["bar_index"]) - first,
                    "t": int(closed["open_time_ms"][s["bar_index"]]),
                    "price": float(s["price"]),
                    "kind": int(s["kind"]),
                    "level": int(s["level"]),
                    "confirm_t": int(closed["open_time_ms"][s["confirm_index"]]),
                }
            )
    return {
        "t": shown["open_time_ms"].tolist(),
        "o": shown["open"].tolist(),
        "h": shown["high"].tolist(),
        "l": shown["low"].tolist(),
        "c": shown["close"].tolist(),
        "v": shown["volume"].tolist(),
        "n": shown["tick_count"].tolist(),
        "forming": forming,
        "pivots": pivots,
    }


class _Rates:
    """Per-second rates of counters from successive samples (None until two samples exist)."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, float]] = {}

    def rate(self, key: str, value: float | None, now_s: float) -> float | None:
        if value is None:
            return None
        prev = self._last.get(key)
        self._last[key] = (now_s, float(value))
        if prev is None or now_s <= prev[0] or value < prev[1]:  # first sample, or a restart reset the count
            return None
        return (float(value) - prev[1]) / (now_s - prev[0])


class DashboardState:
    """Builds the state document from the answers of the sources; keeps the rates and sparkline history.

    Plain Python (tested without Ray): :class:`DashboardDeployment` fetches, this class shapes.
    """

    def __init__(self, config: DashboardConfig) -> None:
        self.config = config
        self._rates = _Rates()
        self._history: dict[str, deque[list[float]]] = {
            k: deque(maxlen=config.history_len) for k in ("loss", "mean_return", "ticks_per_s")
        }

    def _sample(self, series: str, now_ms: int, value: float | None) -> None:
        if value is not None and math.isfinite(value):
            self._history[series].append([now_ms, float(value)])

    def build(
        self,
        now_ms: int,
        stream: Mapping[str, Any] | str,
        paper: Any,
        learner: Any,
        live_state: Any = "not read",
        learner_curves: Any = None,
        learner_actor: str | None = None,
    ) -> dict[str, Any]:
        """The whole document ``GET /api/state`` answers.

        Parameters
        ----------
        now_ms : int
            Wall time of the read.
        stream : mapping or str
            ``{"ui": UIDataPacket, "stats": StreamStats, "bars": {symbol: {timeframe: bars} or reason}}``, or
            the reason the stream could not be read.
        paper, learner : object or str
            The answer of the paper trader's / the learner's ``status()``, or the reason it could not be had (a str).
        live_state : object or str
            The live-state actor's ``LiveState`` of the traded symbol, or the reason there is none (a str).
        learner_curves : mapping or str, optional
            The learner's ``curves()`` (``LearningCurves.as_dict``), or the reason there are none.
        learner_actor : str, optional
            The name of the learner actor read (default ``learner_actor`` of the config).
        """
        cfg = self.config
        return {
            "time_ms": now_ms,
            "refresh_ms": cfg.refresh_ms,
            "sources": {
                "namespace": cfg.namespace,
                "stream": cfg.stream_actor,
                "paper": cfg.paper_actor,
                "learner": cfg.learner_actor,
                "live_state": cfg.live_state_actor,
            },
            "stream": self._stream(now_ms, stream),
            "paper": self._panel(cfg.paper_actor, paper, PAPER_FIELDS, now_ms, history=False),
            "learner": self._learner(learner_actor or cfg.learner_actor, learner, learner_curves, now_ms),
            "live_state": self._panel(
                cfg.live_state_actor, live_state_summary(live_state), LIVE_STATE_FIELDS, now_ms, history=False
            ),
        }

    def _stream(self, now_ms: int, answer: Mapping[str, Any] | str) -> dict[str, Any]:
        if isinstance(answer, str):
            return {"available": False, "actor": self.config.stream_actor, "reason": answer}
        ui, stats, bars = answer["ui"], answer["stats"], answer["bars"]
        tf = self.config.chart_timeframe
        symbols: dict[str, Any] = {}
        charts: dict[str, Any] = {}
        total_rate: float | None = None
        for role, status in (("traded", ui.traded), ("reference", ui.reference)):
            sym = status.symbol
            counters = stats.symbols.get(sym)
            received = counters.ticks_received if counters is not None else None
            rate = self._rates.rate(f"ticks:{sym}", received, now_ms / 1_000)
            if role == "traded":
                total_rate = rate
            symbols[sym] = {
                "role": role,
                **jsonable(status),
                "ticks_received": received,
                "ticks_per_s": rate,
                "bars_closed": jsonable(counters.bars_closed) if counters is not None else {},
                "lag_ms": counters.lag_ms if counters is not None else None,
                "rejected_trades": counters.rejected_trades if counters is not None else None,
                "duplicates_dropped": counters.duplicates_dropped if counters is not None else None,
            }
            per_tf = bars.get(sym, {})
            if isinstance(per_tf, str):  # the bars call failed: say why instead of drawing nothing
                charts[sym] = {"timeframe": tf, "missing": f"bars {per_tf}"}
            elif tf in per_tf:
                charts[sym] = {
                    "timeframe": tf,
                    **chart(per_tf[tf], status.last_trade_ms, self.config.chart_bars, self.config.pivot_strength),
                }
            else:
                charts[sym] = {"timeframe": tf, "missing": f"the stream builds no {tf} bars"}
        self._sample("ticks_per_s", now_ms, total_rate)
        return {
            "available": True,
            "actor": self.config.stream_actor,
            "status": ui.status,
            "seq": ui.seq,
            "data_time_ms": ui.time_ms,
            "built_ms": ui.built_ms,
            "lag_ms": ui.lag_ms,
            "stale_after_ms": ui.stale_after_ms,
            "reconnects": ui.reconnects,
            "gaps": ui.gaps,
            "bad_frames": ui.bad_frames,
            "backfilled_trades": ui.backfilled_trades,
            "batches": stats.batches,
            "consumers": len(stats.consumers),
            "pending_trades": stats.pending_trades,
            "flush_errors": stats.flush_errors,
            "last_error": stats.last_error,
            "traded": ui.traded.symbol,
            "reference": ui.reference.symbol,
            "symbols": symbols,
            "charts": charts,
            "history": {"ticks_per_s": list(self._history["ticks_per_s"])},
        }

    def _learner(self, actor: str, status: Any, curves: Any, now_ms: int) -> dict[str, Any]:
        """The training panel of a live learner: its headline values, ``progress`` (updates and env steps against
        the budget, the ETA) and ``curves`` so far (``None``, with ``curves_missing`` saying why, when unread)."""
        panel = self._panel(actor, status, LEARNER_FIELDS, now_ms, history=True)
        if not panel["available"]:
            return panel
        raw = panel["raw"]
        panel["progress"] = raw.get("progress") if isinstance(raw, Mapping) else None
        panel["run_id"] = raw.get("run_id") if isinstance(raw, Mapping) else None
        if isinstance(curves, Mapping):
            panel["curves"] = thin_curves(curves, self.config.curve_points)
        else:
            panel["curves"] = None
            panel["curves_missing"] = curves if isinstance(curves, str) else "not read"
        return panel

    def _panel(
        self,
        actor: str,
        answer: Any,
        fields: Mapping[str, Sequence[str]],
        now_ms: int,
        *,
        history: bool,
    ) -> dict[str, Any]:
        if isinstance(answer, str):
            return {"available": False, "actor": actor, "reason": answer}
        raw = jsonable(answer, self.config.max_list_items)
        flat = flatten(raw)
        headline = pick_fields(flat, fields)
        for rate_label, counter in _RATE_OF.items():
            if counter not in headline:
                continue
            derived = self._rates.rate(f"{actor}:{counter}", headline[counter]["value"], now_ms / 1_000)
            if rate_label not in headline and derived is not None:
                headline[rate_label] = {"key": f"d({headline[counter]['key']})/dt", "value": derived}
        panel: dict[str, Any] = {"available": True, "actor": actor, "headline": headline, "raw": raw}
        if history:
            for series in ("loss", "mean_return"):
                value = headline.get(series, {}).get("value")
                self._sample(series, now_ms, value if isinstance(value, int | float) else None)
            panel["history"] = {s: list(self._history[s]) for s in ("loss", "mean_return")}
        return panel


# ---------------------------------------------------------------------------------------------------
# The Ray shell: finding the actors, the Serve deployment
# ---------------------------------------------------------------------------------------------------


class _Source:
    """One optional actor found by name; its handle is kept until a call to it fails, then looked up again."""

    def __init__(self, name: str, namespace: str, timeout_s: float) -> None:
        self.name = name
        self.namespace = namespace
        self.timeout_s = timeout_s
        self._handle: Any = None

    def _lookup(self) -> Any:
        """The handle of the actor named ``name``, or None (blocking: :meth:`find` runs it in a thread)."""
        try:
            return ray.get_actor(self.name, namespace=self.namespace)
        except ValueError:
            return None

    async def find(self) -> Any:
        """The actor's handle, or None when no actor of that name runs in the namespace."""
        if self._handle is None:
            self._handle = await asyncio.to_thread(self._lookup)
        return self._handle

    def absent(self) -> str:
        return f"not running (no actor named {self.name!r} in namespace {self.namespace!r})"

    async def call(self, method: str, *args: Any) -> Any:
        """The answer of ``method(*args)``, or a str saying why there is none (absent, failing, too slow)."""
        handle = await self.find()
        if handle is None:
            return self.absent()
        try:
            remote = getattr(handle, method)
        except AttributeError:
            return f"actor {self.name!r} has no method {method}()"
        try:
            return await asyncio.wait_for(remote.remote(*args), self.timeout_s)
        except TimeoutError:
            return f"unreachable: {self.name}.{method}() gave no answer within {self.timeout_s:g} s"
        except ray.exceptions.RayActorError as exc:
            self._handle = None
            return f"unreachable: actor {self.name!r} died ({type(exc).__name__})"
        except Exception as exc:  # the source's own error: show it, keep the dashboard up
            return f"error: {self.name}.{method}() raised {type(exc).__name__}: {str(exc)[:300]}"


class _RunSource(_Source):
    """The actor named ``name``, else the newest alive one named ``<name>-<run id>`` (a training run's learner).

    Run ids sort by their start time (``<name>-YYYYmmdd-HHMMSS-<pid>``), so the newest is the greatest name.
    """

    def __init__(self, name: str, namespace: str, timeout_s: float) -> None:
        super().__init__(name, namespace, timeout_s)
        self.found = name

    def _lookup(self) -> Any:
        prefix = self.name + "-"
        try:
            named = ray.util.list_named_actors(all_namespaces=True)
        except Exception as exc:  # the GCS did not answer: look for the exact name only, and say so in the log
            logger.warning("dashboard: listing named actors failed (%s: %s)", type(exc).__name__, exc)
            named = []
        runs = sorted((a["name"] for a in named if a["namespace"] == self.namespace), reverse=True)
        for name in [self.name, *(n for n in runs if n.startswith(prefix))]:
            try:
                handle = ray.get_actor(name, namespace=self.namespace)
            except ValueError:  # gone between the listing and the lookup
                continue
            self.found = name
            return handle
        self.found = self.name
        return None

    def absent(self) -> str:
        return (
            f"not running (no actor named {self.name!r} or {self.name + '-<run id>'!r} "
            f"in namespace {self.namespace!r})"
        )


ingress = FastAPI(title="rayscalp dashboard", description="The live scalping dashboard and the JSON it draws.")


def _json(document: Any, status_code: int = 200) -> Response:
    return Response(orjson.dumps(document), status_code=status_code, media_type="application/json")


@serve.deployment(name="DashboardDeployment")
@serve.ingress(ingress)
class DashboardDeployment:
    """One replica: reads the sources on demand (at most once per ``min_interval_ms``) and answers the page."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = DashboardConfig.model_validate(config)
        cfg = self.config
        self._stream = _Source(cfg.stream_actor, cfg.namespace, cfg.call_timeout_s)
        self._paper = _Source(cfg.paper_actor, cfg.namespace, cfg.call_timeout_s)
        self._learner = _RunSource(cfg.learner_actor, cfg.namespace, cfg.call_timeout_s)
        self._live_state = _Source(cfg.live_state_actor, cfg.namespace, cfg.call_timeout_s)
        # the policy at work (decisions, paper curve, replay clock, the run): ``actors.board``, optional
        self._board = _Source("rayscalp-board", cfg.namespace, cfg.call_timeout_s)
        self._builder = DashboardState(cfg)
        self._auth = ApiKeyAuth.from_env(cfg.api_key_env)
        if not self._auth.enabled:
            check_bind(proxy_host(), self._auth)  # refuse to start beyond loopback without a key
        self._page = PAGE_PATH.read_text(encoding="utf-8")
        self._lock = asyncio.Lock()
        self._cached: tuple[float, bytes] | None = None

    async def _read_stream(self) -> Mapping[str, Any] | str:
        ui, stats = await asyncio.gather(self._stream.call("ui_packet"), self._stream.call("stats"))
        for answer in (ui, stats):
            if isinstance(answer, str):
                return answer
        symbols = (ui.traded.symbol, ui.reference.symbol)
        per_symbol = await asyncio.gather(*(self._stream.call("bars", s) for s in symbols))
        return {"ui": ui, "stats": stats, "bars": dict(zip(symbols, per_symbol, strict=True))}

    async def state(self) -> dict[str, Any]:
        """Read every source now and build the state document (see :meth:`DashboardState.build`)."""
        stream, paper, learner, curves = await asyncio.gather(
            self._read_stream(), self._paper.call("status"), self._learner.call("status"), self._learner.call("curves")
        )
        live: Any = "no traded symbol known (the stream is not readable)"
        data_time = None
        if not isinstance(stream, str):
            live = await self._live_state.call("latest_state", stream["ui"].traded.symbol)
            data_time = int(stream["ui"].traded.last_trade_ms)
        board, warm = await asyncio.gather(self._board.call("snapshot", data_time), self._live_state.call("status"))
        document = self._builder.build(
            time.time_ns() // 1_000_000, stream, paper, learner, live, curves, learner_actor=self._learner.found
        )
        ok = not isinstance(board, str)
        document["board"] = {"available": True, **jsonable(board, 5_000)} if ok else {"available": False, "why": board}
        document["warm"] = None if isinstance(warm, str) else jsonable(warm.get("warm"))
        return document

    async def _state_bytes(self) -> bytes:
        async with self._lock:  # one read of the sources at a time, shared by requests close together
            now = time.monotonic()
            if self._cached is not None and (now - self._cached[0]) * 1_000 < self.config.min_interval_ms:
                return self._cached[1]
            body = orjson.dumps(await self.state())
            self._cached = (time.monotonic(), body)
            return body

    @ingress.get("/api/health")
    async def api_health(self) -> Response:
        """Liveness (never needs the key)."""
        return _json({"status": "ok"})

    @ingress.post("/login")
    async def login(self, request: Request) -> Response:
        """Take the key from the page's form and keep it in an HttpOnly SameSite=Strict cookie (303 to the page)."""
        check_same_origin(self._auth, request)
        body = await read_body(request, 4096)
        key = (parse_qs(body.decode("utf-8", "replace")).get("key") or [""])[0]
        root = request.scope.get("root_path", "").rstrip("/")
        try:
            self._auth.check(key)
        except AuthError as exc:
            return HTMLResponse(login_form(f"{root}/login", str(exc)), status_code=401)
        response = Response(status_code=303, headers={"location": f"{root}/"})
        response.set_cookie(KEY_COOKIE, key, httponly=True, samesite="strict", path=root or "/")
        return response

    @ingress.get("/")
    async def page(self, request: Request) -> HTMLResponse:
        """The dashboard page; ``?refresh_ms=`` (1000-5000) overrides the configured refresh."""
        try:
            authorize(self._auth, request, cookie=True)
        except HTTPException as exc:
            root = request.scope.get("root_path", "").rstrip("/")
            return HTMLResponse(login_form(f"{root}/login", str(exc.detail)), status_code=401)
        refresh = self.config.refresh_ms
        asked = request.query_params.get("refresh_ms")
        if asked is not None:
            if not asked.isdigit() or not 1_000 <= int(asked) <= 5_000:
                raise HTTPException(422, detail=f"refresh_ms must be an integer in 1000..5000 (got {asked!r})")
            refresh = int(asked)
        root = request.scope.get("root_path", "").rstrip("/")
        html = self._page.replace("__ROOT__", root).replace("__REFRESH_MS__", str(refresh))
        return HTMLResponse(html, headers={"cache-control": "no-store"})

    @ingress.get("/api/state")
    async def api_state(self, request: Request) -> Response:
        """Everything the page shows, as JSON (non-finite numbers are null)."""
        authorize(self._auth, request, cookie=True)
        return Response(await self._state_bytes(), media_type="application/json", headers={"cache-control": "no-store"})

    @ingress.get("/api/config")
    async def api_config(self, request: Request) -> Response:
        """The settings in force."""
        authorize(self._auth, request, cookie=True)
        return _json(self.config.model_dump(mode="json"))

    @ingress.post("/api/paper/kill")
    async def api_paper_kill(self, request: Request) -> Response:
        """Engage the paper trader's kill switch: 503 when it is not running, 502 when its ``kill()`` fails.

        Refused with 403 from another site or a foreign ``Host`` and 401 without the key (the header, or
        the login cookie, which a browser sends only on a same-site request).
        """
        check_same_origin(self._auth, request)
        authorize(self._auth, request, cookie=True)
        handle = await self._paper.find()
        if handle is None:
            raise HTTPException(503, detail=f"paper trader {self._paper.absent()}")
        answer = await self._paper.call("kill")
        if isinstance(answer, str):
            raise HTTPException(502, detail=f"kill switch not confirmed: {answer}")
        self._cached = None  # the next state shows the switch as the trader now reports it
        logger.warning("dashboard: paper kill switch engaged through %s", self.config.route_prefix)
        return _json({"killed": True, "actor": self.config.paper_actor, "answer": jsonable(answer)})


def _validated(config: DashboardConfig | Mapping[str, Any]) -> DashboardConfig:
    if isinstance(config, DashboardConfig):
        return config
    try:
        return DashboardConfig.model_validate(dict(config))
    except ValidationError as exc:
        raise ConfigError(f"dashboard config: {exc}") from None


def build_app(config: DashboardConfig | Mapping[str, Any] | None = None) -> serve.Application:
    """The dashboard app for ``serve.run`` (or ``serve run serve.dashboard:build_app key=value ...``).

    Raises
    ------
    ConfigError
        When ``config`` has an unknown key or a bad value (the message names it).
    """
    cfg = _validated(config or {})
    return DashboardDeployment.options(
        num_replicas=1, ray_actor_options={"num_cpus": cfg.num_cpus}, max_ongoing_requests=64
    ).bind(cfg.model_dump(mode="json"))


def app_config(config: DashboardConfig) -> dict[str, Any]:
    """The app's entry in a Serve config file (``serve deploy``)."""
    return {
        "name": config.app_name,
        "route_prefix": config.route_prefix,
        "import_path": "serve.dashboard:build_app",
        "args": config.model_dump(mode="json"),
    }


def deploy(config: DashboardConfig, *, blocking: bool = False) -> DeploymentHandle:
    """Deploy (or redeploy) the dashboard under ``config.app_name`` at ``config.route_prefix``."""
    return serve.run(build_app(config), name=config.app_name, route_prefix=config.route_prefix, blocking=blocking)
