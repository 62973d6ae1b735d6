"""The live timeline: from trades as they arrive, the same state the batch timeline gives for each base step.

Owns when a live base step is final and the rows of the latest one, built with the batch builder's own
functions (``ticks_to_bars``, ``bar_rows``, ``tick_rows``, the forming-bar rule, ``williams``, ``regime``) on
bounded inputs, so that ``state()`` equals ``gather`` on ``build_timeline`` of the same trades. Never reads a
trade later than the step it builds, never reads a file or a clock.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from pydantic import Field

from .bars import aggregate_bars, flat_bars, ticks_to_bars
from .config import IndicatorConfig, StrictModel
from .errors import DataError
from .features import gather
from .indicator_registry import OHLCV, Ohlcv
from .indicators import FEATURE_NAMES, IndicatorSet
from .layout import (
    AGENT_FEATURES,
    MARKETS,
    REFERENCE,
    ROLE_REGIME,
    ROLE_STRUCTURE,
    ROLE_TICKS,
    TRADED,
    StateConfig,
    StateLayout,
    bar_component_name,
    build_layout,
)
from .pivots import WilliamsConfig, WilliamsTracker
from .records import BAR_DTYPE, TRADE_DTYPE
from .regime import regime_features
from .timeframes import TIMEFRAME_MS
from .timeline import MarketTimeline, WindowSource

# The builder's own definitions of the rows and of the forming bar: one definition, read here for one step.
from .timeline_builder import bar_rows, bar_window, tick_rows, tick_window

__all__ = ["MARKETS", "LiveTimeline", "LiveTimelineConfig", "LiveTimelineStats", "TradesFed"]

# Tick rows read the 19 trades before them (20-trade rolling sums) and the one before that (dt, return).
_TICK_CONTEXT = 21
# ... and every trade of the second before them (intensity); kept with a margin of one millisecond.
_TICK_CONTEXT_MS = 1_000


class LiveTimelineConfig(StrictModel):
    """Bounds of the live timeline.

    Attributes
    ----------
    regime_history_steps : int
        Base bars the regime vector is computed over (the latest step's row of ``regime_features`` on the
        last this-many bars of both markets). While a session holds fewer, the row equals the batch row
        exactly; past it, the rolling windows and percentile history (``11 x`` the long window, 6,600
        steps by default) are still covered, but the volume z-scores' all-history mean volume is taken over
        this tail only.
    close_wait_ms : int
        A step closes once both markets have a trade after it, or once either market is this far past it
        (the quiet one had no trade in the step: the empty-interval rule). A trade of the quiet market that
        then arrives for a closed step is late: dropped and counted.
    """

    regime_history_steps: int = Field(7_200, ge=2, le=10_000_000)
    close_wait_ms: int = Field(3_000, ge=0, le=3_600_000)


@dataclass(frozen=True, slots=True)
class TradesFed:
    """The trades fed to a live timeline this session, per market role: the newest one's time (-1 before any),
    how many were taken, and how many were dropped as late or as duplicates."""

    last_time_ms: Mapping[str, int]
    taken: Mapping[str, int]
    late: Mapping[str, int]
    duplicates: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class LiveTimelineStats:
    """Counters of a live timeline (this session)."""

    steps: int
    first_step_ms: int
    last_step_ms: int
    trades: TradesFed
    kept_base_bars: int
    kept_trades: int
    resets: int


class _Series:
    """The last ``keep`` closed bars of one component with their indicator rows, and the indicators' state."""

    __slots__ = ("bars", "indicators", "keep", "rows")

    def __init__(self, keep: int, config: IndicatorConfig) -> None:
        self.keep = max(int(keep), 1)
        self.bars = np.zeros(0, dtype=BAR_DTYPE)
        self.rows = np.zeros((0, len(FEATURE_NAMES)))
        self.indicators = IndicatorSet(config)

    def extend(self, bars: np.ndarray) -> None:
        if bars.size == 0:
            return
        update = self.indicators.update
        fields = zip(*(bars[f].tolist() for f in OHLCV), strict=True)
        rows = np.array([update(Ohlcv(*bar)) for bar in fields]).reshape(bars.size, len(FEATURE_NAMES))
        self.bars = np.concatenate([self.bars, bars])[-self.keep :]
        self.rows = np.concatenate([self.rows, rows])[-self.keep :]


class _FormingBar:
    """The bar of one timeframe forming as of the latest step: ``timeline_builder._forming``, one step at a time.

    Open of the interval's first base bar, running high and low, running volume, the step's close; at a step
    that closes the interval, the next one, still empty (the close carried, zero volume). The running volume
    is Kahan-compensated because the builder's grouped cumulative sum (pandas) is, so both give the same
    bits (the parity test holds them equal).
    """

    __slots__ = ("_comp", "_first_open", "_group", "_interval", "close", "high", "low", "open", "valid", "volume")

    def __init__(self, interval: int, first_open: int) -> None:
        self._interval = interval
        self._first_open = first_open
        self._group = -1
        self._comp = 0.0
        self.open = self.high = self.low = self.close = self.volume = math.nan
        self.valid = False

    def update(self, bar: np.ndarray) -> None:
        """Take the base bar of the step that just closed."""
        group = int(bar["open_time_ms"]) // self._interval
        high, low, volume = float(bar["high"]), float(bar["low"]), float(bar["volume"])
        if group != self._group:
            self._group = group
            self.open, self.high, self.low = float(bar["open"]), high, low
            self.volume, self._comp = volume, 0.0  # the first term: t = 0 + y exactly, no compensation
        else:
            self.high = max(self.high, high)
            self.low = min(self.low, low)
            y = volume - self._comp
            t = self.volume + y
            self._comp = (t - self.volume) - y
            self.volume = t
        self.close = float(bar["close"])
        self.valid = group * self._interval >= self._first_open

    def as_of_step(self, close_ms: int) -> tuple[float, float, float, float, float, bool]:
        """(open, high, low, close, volume, valid) of the bar forming as of the step closing at ``close_ms``."""
        if (close_ms + 1) % self._interval == 0:
            c = self.close
            return c, c, c, c, 0.0, True
        return self.open, self.high, self.low, self.close, self.volume, self.valid


class LiveTimeline:
    """Base steps of a live session, each equal to the batch timeline's step over the same inputs.

    Feed it the trades of both markets as they come (:meth:`feed`), then take the steps that became final
    one at a time (:meth:`next_step`); :meth:`state` gathers the state of the latest one. The session's
    inputs are the trades fed since it started (or since :meth:`reset`) and ``warm_bars``: for every step
    the state equals ``gather(build_timeline(MarketData(traded, reference, traded_bars=warm_bars)), t)``
    (to float rounding of rolling sums and of the incremental indicators, well under 1e-6).

    What it keeps, so that a step costs the same after an hour as after a minute: the trades of the tick
    window and their context, the last ``bar_window`` bars of each window with the indicators' running
    state, the forming bars' and Williams' running state, and the base bars of the last
    ``regime_history_steps`` steps or back to the open of the current bar of the largest timeframe, whichever
    reaches further (that bar is aggregated from them when it closes: up to 86,400 1s bars for 1d). Only the
    regime vector is bounded by it (see :class:`LiveTimelineConfig`). Measured on the default profile (15,804
    floats, synthetic trades, a shared 2-core machine): ~1.3 ms to close a step, ~16 ms for its state, most of
    it the regime vector over 7,200 steps.

    Steps: step ``k`` is the base bar opening at ``first_open + k * base``; its time is that bar's close
    time. The first step opens where both markets have traded (the builder's rule). A step is final when
    both markets have a trade after its close time, or one is ``close_wait_ms`` past it.

    Parameters
    ----------
    state : StateConfig, optional
    indicators : IndicatorConfig, optional
    williams : WilliamsConfig, optional
    warm_bars : mapping of timeframe -> BAR_DTYPE, optional
        Closed bars of the traded market from before the session (kline files, the stream's bars) for its
        timeframes above the base one; as ``MarketData.traded_bars``, the bars before the first interval the
        session covers whole are used.
    config : LiveTimelineConfig, optional
    synthetic : bool
        Whether the trades fed are synthetic (carried onto every snapshot).
    source : str
        Where the trades come from.
    """

    def __init__(
        self,
        state: StateConfig | None = None,
        indicators: IndicatorConfig | None = None,
        williams: WilliamsConfig | None = None,
        *,
        warm_bars: Mapping[str, np.ndarray] | None = None,
        config: LiveTimelineConfig | None = None,
        synthetic: bool = False,
        source: str = "live",
    ) -> None:
        self.state_config = state or StateConfig()
        self.indicator_config = indicators or IndicatorConfig()
        self.williams_config = williams
        self.config = config or LiveTimelineConfig()
        self.layout: StateLayout = build_layout(self.state_config)
        self.synthetic = bool(synthetic)
        self.source = source
        self.base_tf = str(self.state_config.base_timeframe)
        self.base_ms = TIMEFRAME_MS[self.base_tf]
        self._higher = tuple(
            tf
            for tf in self.state_config.traded_timeframes
            if tf != self.base_tf and bar_component_name(TRADED, tf) in self.layout
        )
        self._warm_given: dict[str, np.ndarray] = {}
        for tf, bars in (warm_bars or {}).items():
            if tf not in TIMEFRAME_MS:
                raise DataError(f"warm_bars: unknown timeframe {tf!r}")
            if not isinstance(bars, np.ndarray) or bars.dtype != BAR_DTYPE:
                raise DataError(
                    f"warm_bars[{tf!r}] must be BAR_DTYPE records (got {getattr(bars, 'dtype', type(bars))})"
                )
            if tf in self._higher and bars.size:
                if np.any(np.diff(bars["open_time_ms"]) != TIMEFRAME_MS[tf]):
                    bars = aggregate_bars(bars, tf)  # gaps are empty intervals, as the builder fills them
                self._warm_given[tf] = bars
        self.resets = 0
        self._start_session()

    # -- session -------------------------------------------------------------------------------------

    def _start_session(self) -> None:
        cfg = self.state_config
        self._trades = {m: np.zeros(0, dtype=TRADE_DTYPE) for m in MARKETS}  # not yet in a closed step
        self._ticks = np.zeros(0, dtype=TRADE_DTYPE)  # the traded market's trades kept for the tick window
        self._first_trade_ms = dict.fromkeys(MARKETS, -1)
        self._last_time = dict.fromkeys(MARKETS, -1)
        self._last_id = dict.fromkeys(MARKETS, -1)
        self._prev_close = dict.fromkeys(MARKETS, math.nan)
        self._taken = dict.fromkeys(MARKETS, 0)
        self._late = dict.fromkeys(MARKETS, 0)
        self._dupes = dict.fromkeys(MARKETS, 0)
        self._first_open = -1
        self._next_open = -1
        self._steps = 0
        self._anchor = dict.fromkeys(MARKETS, 0.0)
        self._base = {m: np.zeros(0, dtype=BAR_DTYPE) for m in MARKETS}
        self._base_series = {
            m: _Series(cfg.bar_window if m == TRADED else cfg.reference_window, self.indicator_config) for m in MARKETS
        }
        self._closed = {tf: _Series(max(cfg.bar_window - 1, 1), self.indicator_config) for tf in self._higher}
        self._forming: dict[str, _FormingBar] = {}
        self._warm_pending: dict[str, np.ndarray] = {}
        self._williams = WilliamsTracker(self.williams_config) if self.layout.by_role(ROLE_STRUCTURE) else None
        self._williams_row: np.ndarray | None = None
        self._snapshot: MarketTimeline | None = None

    def reset(self) -> None:
        """Start a new session (after a hole in the trades fed): everything but the warm bars is forgotten."""
        self.resets += 1
        self._start_session()

    # -- input ---------------------------------------------------------------------------------------

    def feed(self, traded: np.ndarray | None = None, reference: np.ndarray | None = None) -> int:
        """Take trades of the traded and the reference market, each in time order.

        Trades whose id is not above the last one taken are dropped as duplicates; trades of a step that
        is already closed are dropped as late (both counted in :meth:`stats`).

        Returns
        -------
        int
            Steps that are now final and not yet taken (see :meth:`next_step`).

        Raises
        ------
        DataError
            Trades that are not TRADE_DTYPE, or out of time order (the message names the market, the row and
            the times); nothing of that call is taken then.
        """
        given = {TRADED: traded, REFERENCE: reference}
        checked: dict[str, np.ndarray] = {}
        for market, trades in given.items():
            if trades is None:
                continue
            if not isinstance(trades, np.ndarray) or trades.dtype != TRADE_DTYPE:
                raise DataError(
                    f"{market} trades must be TRADE_DTYPE records (got {getattr(trades, 'dtype', type(trades))})"
                )
            if trades.size == 0:
                continue
            times = trades["time_ms"]
            back = np.flatnonzero(np.diff(times) < 0)
            if back.size:
                i = int(back[0]) + 1
                raise DataError(
                    f"{market} trades out of time order at row {i}: time_ms {int(times[i])} after {int(times[i - 1])}"
                )
            fresh = trades["trade_id"] > self._last_id[market]
            self._dupes[market] += int(trades.size - np.count_nonzero(fresh))
            trades = trades[fresh]
            if trades.size and int(trades["time_ms"][0]) < self._last_time[market]:
                raise DataError(
                    f"{market} trade {int(trades['trade_id'][0])} at time_ms {int(trades['time_ms'][0])} is before "
                    f"the last one taken ({self._last_time[market]})"
                )
            if self._next_open >= 0 and trades.size:
                late = trades["time_ms"] < self._next_open
                self._late[market] += int(np.count_nonzero(late))
                trades = trades[~late]
            if trades.size:
                checked[market] = trades
        for market, trades in checked.items():
            if self._first_trade_ms[market] < 0:
                self._first_trade_ms[market] = int(trades["time_ms"][0])
            self._trades[market] = np.concatenate([self._trades[market], trades])
            self._last_time[market] = int(trades["time_ms"][-1])
            self._last_id[market] = int(trades["trade_id"][-1])
            self._taken[market] += int(trades.size)
            if market == TRADED and self.layout.by_role(ROLE_TICKS):
                self._ticks = np.concatenate([self._ticks, trades])
        if self._first_open < 0 and min(self._first_trade_ms.values()) >= 0:
            self._first_open = max(t // self.base_ms * self.base_ms for t in self._first_trade_ms.values())
            self._next_open = self._first_open
            self._forming = {tf: _FormingBar(TIMEFRAME_MS[tf], self._first_open) for tf in self._higher}
            self._start_warm()
        return self.ready_steps()

    def _start_warm(self) -> None:
        """Warm bars before the first interval the session covers whole enter as they close (the builder's cutoff)."""
        for tf in self._higher:
            bars = self._warm_given.get(tf)
            if bars is None or bars.size == 0:
                continue
            interval = TIMEFRAME_MS[tf]
            cutoff = -(-self._first_open // interval) * interval
            self._warm_pending[tf] = bars[bars["close_time_ms"] < cutoff]

    def ready_steps(self) -> int:
        """Steps that are final and not yet taken."""
        if self._next_open < 0:
            return 0
        times = [self._last_time[m] for m in MARKETS]
        # a step closes at c when every market has a trade after c, or one is close_wait_ms past it
        through = max(min(times) - 1, max(times) - 1 - self.config.close_wait_ms)
        last_close = (through + 1) // self.base_ms * self.base_ms - 1  # the last step close time <= through
        if last_close < self._next_open:
            return 0
        return (last_close - self._next_open) // self.base_ms + 1

    # -- steps ---------------------------------------------------------------------------------------

    def next_step(self) -> bool:
        """Close the next final step (its bars, indicators, structure); return False when none is final."""
        if self.ready_steps() == 0:
            return False
        open_ms = self._next_open
        close_ms = open_ms + self.base_ms - 1
        first = self._steps == 0
        bars = {}
        for market in MARKETS:
            trades = self._trades[market]
            n_before = int(np.searchsorted(trades["time_ms"], open_ms, side="left"))
            if n_before:  # trades before the first step only set the close carried into it
                self._prev_close[market] = float(trades["price"][n_before - 1])
            n_in = int(np.searchsorted(trades["time_ms"], close_ms, side="right"))
            chunk = trades[n_before:n_in]
            self._trades[market] = trades[n_in:]
            if chunk.size:
                bar = ticks_to_bars(chunk, self.base_tf)
            else:
                bar = flat_bars(
                    self.base_ms, open_ms // self.base_ms, open_ms // self.base_ms, self._prev_close[market]
                )
            if bar.size != 1 or int(bar["open_time_ms"][0]) != open_ms:
                raise DataError(f"{market}: step at {open_ms} built {bar.size} bars (trades outside the step)")
            self._prev_close[market] = float(bar["close"][0])
            bars[market] = bar
        if first:
            self._anchor = {m: float(np.log(bars[m]["close"][0])) for m in MARKETS}
        for market in MARKETS:
            self._base[market] = np.concatenate([self._base[market], bars[market]])
            self._base_series[market].extend(bars[market])
        if self._williams is not None:
            b = bars[TRADED][0]
            self._williams_row = self._williams.update(float(b["high"]), float(b["low"]), float(b["close"]))
        for tf in self._higher:
            interval = TIMEFRAME_MS[tf]
            self._forming[tf].update(bars[TRADED][0])
            pending = self._warm_pending.get(tf)
            if pending is not None and pending.size:
                known = pending["close_time_ms"] <= close_ms
                self._closed[tf].extend(pending[known])
                self._warm_pending[tf] = pending[~known]
            if (close_ms + 1) % interval == 0 and close_ms + 1 - interval >= self._first_open:
                base = self._base[TRADED]
                whole = base[base["open_time_ms"] >= close_ms + 1 - interval]
                self._closed[tf].extend(aggregate_bars(whole, tf))
        self._steps += 1
        self._next_open = open_ms + self.base_ms
        self._snapshot = None
        self._trim(close_ms)
        return True

    def catch_up(self) -> int:
        """Close every final step; return how many."""
        n = 0
        while self.next_step():
            n += 1
        return n

    def _trim(self, close_ms: int) -> None:
        """Forget what no later step reads."""
        keep = max(self.config.regime_history_steps, self.state_config.bar_window, 1)
        reach = close_ms + 1
        for tf in self._higher:  # a closing bar is aggregated from the base bars since its interval opened
            interval = TIMEFRAME_MS[tf]
            reach = min(reach, close_ms // interval * interval)
        for market in MARKETS:
            base = self._base[market]
            cut = min(base.size - keep, int(np.searchsorted(base["open_time_ms"], reach, side="left")))
            if cut > 0:
                self._base[market] = base[cut:]
        ticks = self._ticks
        if ticks.size:
            known = int(np.searchsorted(ticks["time_ms"], close_ms, side="right"))
            oldest = known - self.state_config.tick_window - _TICK_CONTEXT
            if oldest > 0:
                since = int(ticks["time_ms"][oldest]) - _TICK_CONTEXT_MS
                cut = min(oldest, int(np.searchsorted(ticks["time_ms"], since, side="left")))
                if cut > 0:
                    self._ticks = ticks[cut:]

    # -- the latest step -----------------------------------------------------------------------------

    @property
    def steps(self) -> int:
        """Steps closed in this session (the latest one's index is ``steps - 1``)."""
        return self._steps

    @property
    def step_time_ms(self) -> int:
        """Close time of the latest step (-1 before the first)."""
        return self._next_open - 1 if self._steps else -1

    @property
    def data_time_ms(self) -> int:
        """Time of the newest trade taken, either market (-1 before any)."""
        return max(self._last_time.values())

    def bar(self, market: str = TRADED) -> np.ndarray:
        """The base bar of the latest step of ``market`` (``"traded"`` or ``"reference"``; a BAR_DTYPE record)."""
        if market not in MARKETS:
            raise DataError(f"bar: unknown market role {market!r} (expected one of {list(MARKETS)})")
        if not self._steps:
            raise DataError("no step has closed yet in this live session")
        return self._base[market][-1]

    def snapshot(self) -> MarketTimeline:
        """The latest step as a one-step market timeline, laid out as the batch builder lays out every step.

        Raises
        ------
        DataError
            Before the first step has closed.
        """
        if not self._steps:
            raise DataError("no step has closed yet in this live session (waiting for both markets' trades)")
        if self._snapshot is not None:
            return self._snapshot
        close_ms = self.step_time_ms
        windows: dict[str, WindowSource] = {}
        for comp in self.layout.components:
            if comp.kind != "window":
                continue
            if comp.role == ROLE_TICKS:
                windows[comp.name] = self._tick_window(comp.rows, close_ms)
                continue
            market, tf = comp.market, comp.timeframe
            if tf == self.base_tf:
                series = self._base_series[market]
                rows = self._rows(series.bars, series.rows, market)
                last = np.array([comp.rows + series.bars.size - 1], dtype=np.int64)
                windows[comp.name] = bar_window(rows, last, comp.rows, market)
            else:
                windows[comp.name] = self._higher_window(tf, comp.rows, close_ms)
        vectors: dict[str, np.ndarray] = {}
        if self._williams_row is not None:
            for comp in self.layout.by_role(ROLE_STRUCTURE):
                vectors[comp.name] = self._williams_row[None, :].astype(np.float32)
        for comp in self.layout.by_role(ROLE_REGIME):
            h = self.config.regime_history_steps
            regime = regime_features(self._base[TRADED][-h:], self._base[REFERENCE][-h:])
            vectors[comp.name] = regime[-1:].astype(np.float32)
        traded_bar = self._base[TRADED][-1]
        refs = {m: (np.log(self._base[m]["close"][-1:]) - self._anchor[m]).astype(np.float32) for m in MARKETS}
        self._snapshot = MarketTimeline(
            layout=self.layout,
            step_time_ms=np.array([close_ms], dtype=np.int64),
            refs=refs,
            windows=windows,
            vectors=vectors,
            base_close=np.array([traded_bar["close"]], dtype=np.float64),
            base_high=np.array([traded_bar["high"]], dtype=np.float64),
            base_low=np.array([traded_bar["low"]], dtype=np.float64),
            synthetic=self.synthetic,
            source=self.source,
            meta={
                "base_timeframe": self.base_tf,
                "first_open_ms": self._first_open,
                "anchors": dict(self._anchor),
                "step": self._steps - 1,
            },
        )
        self._snapshot.validate()
        return self._snapshot

    def state(
        self,
        agent: np.ndarray | None = None,
        cnn_hidden: np.ndarray | None = None,
        cnn_pred: np.ndarray | None = None,
    ) -> np.ndarray:
        """The state [S] float32 of the latest step: the one ``gather`` over :meth:`snapshot`.

        Parameters
        ----------
        agent : array [A], optional
            The agent features (``market.layout.AGENT_FEATURES``); zeros (a flat account) when omitted.
        cnn_hidden, cnn_pred : array [H] / [P], optional
            The CNN part; zeros when omitted, as ``gather`` fills it.
        """
        tl = self.snapshot()
        agent_row = np.zeros((1, len(AGENT_FEATURES)), dtype=np.float32)
        if agent is not None:
            agent_row[0] = np.asarray(agent, dtype=np.float32).reshape(-1)
        hidden = None if cnn_hidden is None else np.asarray(cnn_hidden, dtype=np.float32).reshape(1, -1)
        pred = None if cnn_pred is None else np.asarray(cnn_pred, dtype=np.float32).reshape(1, -1)
        return gather(tl, np.zeros(1, dtype=np.int64), agent_row, hidden, pred)[0]

    def _rows(self, bars: np.ndarray, indicators: np.ndarray, market: str) -> np.ndarray:
        return bar_rows(
            bars["open"], bars["high"], bars["low"], bars["close"], bars["volume"], indicators, self._anchor[market]
        )

    def _tick_window(self, window: int, close_ms: int) -> WindowSource:
        ticks = self._ticks
        known = int(np.searchsorted(ticks["time_ms"], close_ms, side="right"))
        n = min(window, known)
        start = known
        if n:
            first = int(ticks["time_ms"][known - n])
            start = min(known - n - _TICK_CONTEXT, int(np.searchsorted(ticks["time_ms"], first - _TICK_CONTEXT_MS)))
        context = ticks[max(start, 0) : known]
        rows = tick_rows(context, self._anchor[TRADED])[:, context.size - n :]
        times = ticks["time_ms"][known - n : known]
        pad_time = int(times[0]) if n else close_ms
        return tick_window(rows, times, np.array([window + n - 1], dtype=np.int64), window, pad_time)

    def _higher_window(self, tf: str, window: int, close_ms: int) -> WindowSource:
        series = self._closed[tf]
        pad = window - 1
        rows = self._rows(series.bars, series.rows, TRADED)
        o, h, lo, c, v, ok = self._forming[tf].as_of_step(close_ms)
        ind = series.indicators.peek(Ohlcv(o, h, lo, c, v))[None, :]
        one = [np.array([x]) for x in (o, h, lo, c, v)]
        forming = bar_rows(*one, ind, self._anchor[TRADED]).T.copy()
        if not ok:
            forming[:] = 0.0
        last = np.array([pad + series.bars.size - 1], dtype=np.int64)
        return bar_window(rows, last, pad, TRADED, forming, np.array([ok]))

    def stats(self) -> LiveTimelineStats:
        """Counters of this session."""
        return LiveTimelineStats(
            steps=self._steps,
            first_step_ms=self._first_open + self.base_ms - 1 if self._first_open >= 0 else -1,
            last_step_ms=self.step_time_ms,
            trades=TradesFed(
                last_time_ms=dict(self._last_time),
                taken=dict(self._taken),
                late=dict(self._late),
                duplicates=dict(self._dupes),
            ),
            kept_base_bars=int(self._base[TRADED].size),
            kept_trades=int(self._ticks.size + sum(t.size for t in self._trades.values())),
            resets=self.resets,
        )
