"""The live state of the traded market, built once per base step, for paper trading, the policy service and the page.

``LiveStateBuilder`` is the plain class (tested without Ray): the only ``market.live_timeline.LiveTimeline`` of the
traded symbol, fed with the stream's trades (and book tickers for the spread), one ``LiveState`` per base step with
the CNN part from a CNN source, kept in a bounded history. ``LiveStateActor`` ("rayscalp-live-state") is the thin
Ray shell that consumes the stream (``actors.stream_consumer``), asks the CNN deployment and the paper account, and
answers ``states_since(seq)`` (paper trading) and ``latest_state(symbol)`` (the policy service, the dashboard).
Never serves a CNN or agent part it did not get without saying so (``cnn_source``, ``agent_source``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import ray
from pydantic import Field

from market.clock import wall_ms
from market.config import IndicatorConfig, StrictModel, SymbolsConfig
from market.errors import RayscalpError
from market.layout import AGENT_FEATURES, StateConfig
from market.live_timeline import LiveTimeline, LiveTimelineConfig
from market.records import BOOK_TICKER_DTYPE
from market.venue import half_spread_at

from .stream_consumer import StreamConsumer

__all__ = [
    "LIVE_STATE_ACTOR",
    "CnnSource",
    "LiveState",
    "LiveStateActor",
    "LiveStateBuilder",
    "LiveStateConfig",
    "LiveStateUnavailableError",
    "LiveStates",
    "PredictorCnn",
    "ServeCnn",
    "recent_trades",
    "warm_bars_of",
]

#: The name the live state actor is registered under (``ray.get_actor(LIVE_STATE_ACTOR)``).
LIVE_STATE_ACTOR = "rayscalp-live-state"


class LiveStateUnavailableError(RayscalpError, LookupError):
    """No live state to answer with: a symbol that is not the traded one, or no step has closed yet."""


@dataclass(frozen=True, slots=True)
class LiveState:
    """The state of the traded market at its latest closed base step.

    Attributes
    ----------
    symbol : str
        The traded symbol (e.g. ``ETHUSDT``).
    state : array [S] float32
        Laid out by ``market.layout.build_layout`` of the configured ``StateConfig``; equal to ``gather`` on the
        batch timeline of the same trades at this step (``market.live_timeline``).
    step_time_ms : int
        The step's time (close time of its base bar).
    data_time_ms : int
        The newest trade taken, either market (how far the data is past the step).
    built_ms : int
        Wall time the state was built.
    step : int
        Steps closed in this live session before this one (the windows fill over the first ones).
    cnn_version : str or None
        The CNN checkpoint that filled the CNN part; None when it is zeros.
    cnn_source : str
        ``deployment`` (the CNN Serve app), ``local`` (a CNN in this process) or ``zeros`` (no CNN configured,
        or it failed: see ``cnn_error``).
    agent : array [A] float32
        The agent features in the state (``market.layout.AGENT_FEATURES``).
    agent_source : str
        ``paper`` (the paper account's, as of ``agent_step_time_ms``) or ``flat`` (zeros: a flat account).
    agent_step_time_ms : int
        The paper account's step the agent features are from (-1 when flat).
    synthetic : bool
        Whether the trades behind it are synthetic.
    profile : str
        The state profile.
    cnn_error : str
        Why the CNN part is zeros when a CNN was configured ("" otherwise).
    seq : int
        The record's number in the live-state service (increases by one per step built, across sessions).
    open, high, low, close, volume : float
        The traded market's base bar of the step (what the venue step reads).
    half_spread : float
        Half the quoted spread as of the step's time (``market.venue.half_spread_at`` of the book tickers); NaN
        when no quote is known.
    session : int
        The live session (a new one after a hole in the trades).
    """

    symbol: str
    state: np.ndarray
    step_time_ms: int
    data_time_ms: int
    built_ms: int
    step: int
    cnn_version: str | None
    cnn_source: str
    agent: np.ndarray
    agent_source: str
    agent_step_time_ms: int
    synthetic: bool
    profile: str
    cnn_error: str = ""
    seq: int = -1
    open: float = math.nan
    high: float = math.nan
    low: float = math.nan
    close: float = math.nan
    half_spread: float = math.nan
    session: int = 0
    volume: float = 0.0


@dataclass(frozen=True, slots=True)
class LiveStates:
    """The answer to ``states_since(seq)``: the records after ``seq`` that the history still holds.

    Attributes
    ----------
    states : tuple of LiveState
        In step order.
    seq : int
        The last record's number (pass it as the next ``since``).
    epoch_ms : int
        When this live-state service started; it changes when it restarts (its ``seq`` starts over).
    complete : bool
        False when records after ``since`` were dropped from the bounded history before this call.
    """

    states: tuple[LiveState, ...]
    seq: int
    epoch_ms: int
    complete: bool


# ---------------------------------------------------------------------------------------------------
# CNN sources
# ---------------------------------------------------------------------------------------------------


class CnnSource(Protocol):
    """Where the CNN part of a state comes from."""

    name: str

    def infer(self, states: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
        """Hidden [B, H], predictions [B, P] and the checkpoint version for states [B, S] (CNN slots zero)."""
        ...


class PredictorCnn:
    """A CNN in this process (``policies.cnn_inference.CnnPredictor``)."""

    name = "local"

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor

    def infer(self, states: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
        answer = self.predictor.predict(states)
        return answer.hidden, answer.predictions, answer.version


class ServeCnn:
    """The CNN Serve app (``serve.cnn``), called by handle: ``infer`` of its deployment.

    Call it from a thread, not from an event loop (a handle's ``result()`` blocks).
    """

    name = "deployment"

    def __init__(self, app_name: str, timeout_s: float = 5.0) -> None:
        self.app_name = app_name
        self.timeout_s = float(timeout_s)
        self._handle: Any = None

    def infer(self, states: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
        if self._handle is None:
            from ray import serve

            self._handle = serve.get_app_handle(self.app_name)
        answer = self._handle.infer.remote(states).result(timeout_s=self.timeout_s)
        return np.asarray(answer["hidden"]), np.asarray(answer["predictions"]), str(answer["version"])


# ---------------------------------------------------------------------------------------------------
# Configuration and the plain builder
# ---------------------------------------------------------------------------------------------------


class LiveStateConfig(StrictModel):
    """The live state service.

    Attributes
    ----------
    symbols : SymbolsConfig
        The traded market (the one served) and the reference.
    state, indicators, live
        The state profile, indicator parameters and the live timeline's bounds; must be the policy's.
    stream_actor : str
        Name of the unified stream actor to consume.
    cnn_app : str, optional
        The CNN Serve app that fills the CNN part; zeros (said in ``cnn_source``) when omitted.
    paper_actor : str, optional
        The paper trading actor whose account gives the agent features; a flat account's when omitted.
    poll_interval_ms : int
        How often the stream is polled.
    history_steps : int
        Records kept for ``states_since`` (a consumer further behind is told it missed some).
    warm_start_from_stream : bool
        Take the stream's closed bars of the traded market's higher timeframes as warm bars at start.
    synthetic : bool
        Whether the stream carries synthetic trades (carried onto every state).
    """

    symbols: SymbolsConfig = SymbolsConfig()
    state: StateConfig = StateConfig()
    indicators: IndicatorConfig = IndicatorConfig()
    live: LiveTimelineConfig = LiveTimelineConfig()
    stream_actor: str = "rayscalp-stream"
    cnn_app: str | None = None
    paper_actor: str | None = None
    poll_interval_ms: int = Field(250, ge=10, le=60_000)
    history_steps: int = Field(600, ge=1, le=100_000)
    warm_start_from_stream: bool = True
    synthetic: bool = False


def warm_bars_of(packet: Any, state: StateConfig) -> dict[str, np.ndarray]:
    """The traded market's closed bars of ``state``'s timeframes above the base one, from a stream packet.

    Parameters
    ----------
    packet : actors.packets.TrainingDataPacket
        What ``UnifiedStream.training_packet()`` returns.
    state : StateConfig
    """
    bars = packet.traded.bars
    return {tf: np.array(bars[tf]) for tf in state.traded_timeframes if tf != state.base_timeframe and tf in bars}


def recent_trades(packet: Any) -> dict[str, np.ndarray]:
    """The latest trades of both symbols in a stream packet, by symbol (what the stream's tick cache ends with)."""
    return {packet.traded.symbol: packet.traded.ticks, packet.reference.symbol: packet.reference.ticks}


class LiveStateBuilder:
    """The only live timeline of the traded market: one :class:`LiveState` per base step, with the CNN part.

    Parameters
    ----------
    config : LiveStateConfig
    cnn : CnnSource, optional
        Fills the CNN part; zeros when omitted (``cnn_source="zeros"``).
    warm_bars : mapping of timeframe -> BAR_DTYPE, optional
        See ``market.live_timeline.LiveTimeline``.
    clock : callable, optional
        Wall time in ms (``built_ms``, ``epoch_ms``).

    Attributes
    ----------
    builds : int
        States built (one per base step closed: the count the one-build-per-step check reads).
    """

    def __init__(
        self,
        config: LiveStateConfig,
        cnn: CnnSource | None = None,
        *,
        warm_bars: Mapping[str, np.ndarray] | None = None,
        clock: Callable[[], int] = wall_ms,
    ) -> None:
        self.config = config
        self.cnn = cnn
        self._clock = clock
        self.epoch_ms = int(clock())
        self.timeline = self._timeline(warm_bars)
        self.latest: LiveState | None = None
        self.history: deque[LiveState] = deque(maxlen=config.history_steps)
        self.seq = 0
        self.cnn_errors = 0
        self.builds = 0
        self.sessions = 0
        self._books = np.zeros(0, dtype=BOOK_TICKER_DTYPE)

    def _timeline(self, warm_bars: Mapping[str, np.ndarray] | None) -> LiveTimeline:
        cfg = self.config
        source = f"stream {cfg.stream_actor} ({cfg.symbols.traded}/{cfg.symbols.reference})"
        return LiveTimeline(
            cfg.state, cfg.indicators, warm_bars=warm_bars, config=cfg.live, synthetic=cfg.synthetic, source=source
        )

    def set_warm_bars(self, warm_bars: Mapping[str, np.ndarray]) -> bool:
        """Start over with ``warm_bars`` while no trade has been taken; return whether it did."""
        if sum(self.timeline.stats().trades.taken.values()):
            return False
        self.timeline = self._timeline(warm_bars)
        return True

    def on_trades(
        self,
        trades: Mapping[str, np.ndarray],
        *,
        books: Mapping[str, np.ndarray] | None = None,
        complete: bool = True,
    ) -> int:
        """Feed the stream's trades (and book tickers) by symbol, build the state of every step they close.

        ``complete=False`` (the stream's history did not reach back to the last poll: trades are missing)
        starts a new live session first.

        Returns
        -------
        int
            Steps closed (and states built).
        """
        tl = self.timeline
        if not complete and sum(tl.stats().trades.taken.values()):
            tl.reset()
            self.sessions += 1
        traded, reference = self.config.symbols.all
        quotes = (books or {}).get(traded)
        if quotes is not None and quotes.size:
            self._books = np.concatenate([self._books, quotes])
        tl.feed(trades.get(traded), trades.get(reference))
        n = 0
        while tl.next_step():
            self._build_step()
            n += 1
        return n

    def _build_step(self) -> None:
        tl = self.timeline
        hidden = pred = None
        cnn_version: str | None = None
        cnn_source, cnn_error = "zeros", ""
        if self.cnn is not None and ("cnn_hidden" in tl.layout or "cnn_pred" in tl.layout):
            try:
                h, p, cnn_version = self.cnn.infer(tl.state()[None, :])
                hidden, pred, cnn_source = h[0], p[0], self.cnn.name
            except Exception as exc:  # the CNN app down or mid-swap: serve the state, say the CNN part is zeros
                self.cnn_errors += 1
                cnn_version, cnn_error = None, f"{type(exc).__name__}: {exc}"
        width = len(AGENT_FEATURES)
        state = tl.state(np.zeros(width, np.float32), hidden, pred)
        time_ms = tl.step_time_ms
        half = float(half_spread_at(self._books, np.array([time_ms]))[0])
        known = int(np.searchsorted(self._books["time_ms"], time_ms, side="right"))
        if known > 1:  # the last quote at or before the step stays the current one
            self._books = self._books[known - 1 :]
        bar = tl.bar()
        self.builds += 1
        self.seq += 1
        self.latest = LiveState(
            symbol=self.config.symbols.traded,
            state=state,
            step_time_ms=time_ms,
            data_time_ms=tl.data_time_ms,
            built_ms=int(self._clock()),
            step=tl.steps - 1,
            cnn_version=cnn_version,
            cnn_source=cnn_source,
            agent=np.zeros(width, np.float32),
            agent_source="flat",
            agent_step_time_ms=-1,
            synthetic=self.config.synthetic,
            profile=str(self.config.state.profile),
            cnn_error=cnn_error,
            seq=self.seq,
            open=float(bar["open"]),
            high=float(bar["high"]),
            low=float(bar["low"]),
            close=float(bar["close"]),
            half_spread=half,
            session=self.sessions,
            volume=float(bar["volume"]),
        )
        self.history.append(self.latest)

    def with_agent(self, agent: np.ndarray, agent_step_time_ms: int) -> LiveState:
        """The latest state with the paper account's agent features in its agent part (no rebuild: a copy).

        Raises
        ------
        LiveStateUnavailableError
            Before the first step has closed.
        """
        latest = self._require_latest()
        width = len(AGENT_FEATURES)
        row = np.asarray(agent, np.float32).reshape(width)
        state = latest.state.copy()
        state[self.timeline.layout["agent"].slice] = row
        self.latest = dataclasses.replace(
            latest, state=state, agent=row, agent_source="paper", agent_step_time_ms=int(agent_step_time_ms)
        )
        if self.history and self.history[-1].seq == latest.seq:
            self.history[-1] = self.latest
        return self.latest

    def _require_latest(self) -> LiveState:
        if self.latest is None:
            raise LiveStateUnavailableError(
                f"{self.config.symbols.traded}: no step has closed yet (waiting for trades of both "
                f"{self.config.symbols.all[0]} and {self.config.symbols.all[1]})"
            )
        return self.latest

    def build(self, agent: np.ndarray | None = None, agent_step_time_ms: int = -1) -> LiveState:
        """The latest step's state, with ``agent`` in its agent part when given (a flat account's otherwise).

        Raises
        ------
        LiveStateUnavailableError
            Before the first step has closed.
        """
        latest = self._require_latest()
        return latest if agent is None else self.with_agent(agent, agent_step_time_ms)

    def states_since(self, seq: int) -> LiveStates:
        """The records built after ``seq`` that the history still holds (see :class:`LiveStates`)."""
        seq = int(seq)
        states = tuple(s for s in self.history if s.seq > seq)
        oldest = self.history[0].seq if self.history else self.seq + 1
        complete = seq >= oldest - 1 or (not self.history and seq <= self.seq)
        return LiveStates(states, self.seq, self.epoch_ms, bool(complete))

    def latest_state(self, symbol: str) -> LiveState:
        """The last state built for ``symbol`` (the traded one).

        Raises
        ------
        LiveStateUnavailableError
            Another symbol, or nothing built yet.
        """
        if symbol != self.config.symbols.traded:
            raise LiveStateUnavailableError(
                f"no live state for {symbol!r}: the live state serves the traded symbol {self.config.symbols.traded!r}"
            )
        if self.latest is None:
            raise LiveStateUnavailableError(f"{symbol}: no live state yet (no step has closed)")
        return self.latest

    def status(self) -> dict[str, Any]:
        """Counters for the dashboard."""
        stats = self.timeline.stats()
        latest = self.latest
        return {
            "symbol": self.config.symbols.traded,
            "profile": str(self.config.state.profile),
            "steps": stats.steps,
            "first_step_ms": stats.first_step_ms,
            "last_step_ms": stats.last_step_ms,
            "data_time_ms": dict(stats.trades.last_time_ms),
            "late_trades": dict(stats.trades.late),
            "resets": stats.resets,
            "builds": self.builds,
            "seq": self.seq,
            "epoch_ms": self.epoch_ms,
            "half_spread": latest.half_spread if latest else None,
            "cnn_source": latest.cnn_source if latest else None,
            "cnn_version": latest.cnn_version if latest else None,
            "cnn_errors": self.cnn_errors,
            "agent_source": latest.agent_source if latest else None,
            "synthetic": self.config.synthetic,
        }


# ---------------------------------------------------------------------------------------------------
# The Ray shell
# ---------------------------------------------------------------------------------------------------


@ray.remote(num_cpus=0, max_restarts=-1)
class LiveStateActor:
    """The live state as a Ray actor (start it with ``.options(name=LIVE_STATE_ACTOR)``).

    It consumes the stream actor (``actors.stream_consumer.StreamConsumer``, data types ``ticks`` and ``books``)
    every ``poll_interval_ms``, builds the state of every step closed (CNN part from
    ``cnn_app``) and, after a poll that closed one, puts the paper account's agent features (``paper_actor``) in
    the latest one. On a restart it starts a new live session (the windows fill again over their length) and a
    new ``epoch_ms``.
    """

    def __init__(self, config: LiveStateConfig | Mapping[str, object]) -> None:
        cfg = config if isinstance(config, LiveStateConfig) else LiveStateConfig.model_validate(config)
        self._config = cfg
        self._builder = LiveStateBuilder(cfg, ServeCnn(cfg.cnn_app) if cfg.cnn_app else None)
        self._consumer = StreamConsumer("live-state", ["ticks", "books"])
        self._task: asyncio.Task | None = None
        self._last_error = ""
        self._warm: dict[str, Any] = {"windows": {}, "source": "none"}

    def _ensure_loop(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def warm_start(self, warm_bars: dict[str, np.ndarray], source: str) -> dict[str, Any]:
        """Warm the timeline's higher timeframes with recorded or fetched ``warm_bars`` before the first trade.

        Call it before :meth:`ready` (it does not start the polling). Returns which windows are warm and from
        what (``{"windows": {tf: bars}, "source", "applied"}``); not applied once a trade was taken.
        """
        applied = self._builder.set_warm_bars(warm_bars)
        if applied:
            self._warm = {"windows": {tf: int(b.size) for tf, b in warm_bars.items()}, "source": source}
        return {**self._warm, "applied": applied}

    async def _run(self) -> None:
        cfg = self._config
        period = cfg.poll_interval_ms / 1000
        while True:
            try:
                stream = ray.get_actor(cfg.stream_actor)
                batch = await self._consumer.poll(stream)
                if batch.start and cfg.warm_start_from_stream:
                    self._builder.set_warm_bars(warm_bars_of(batch.packet, cfg.state))
                closed = await asyncio.to_thread(
                    self._builder.on_trades, batch.trades, books=batch.books, complete=batch.complete
                )
                if closed and cfg.paper_actor:
                    with contextlib.suppress(Exception):  # no paper account (yet): a flat account's features
                        paper = ray.get_actor(cfg.paper_actor)
                        answer = await paper.agent_features.remote()
                        if answer["step_time_ms"] >= 0:
                            self._builder.with_agent(np.asarray(answer["features"], np.float32), answer["step_time_ms"])
                self._last_error = ""
            except Exception as exc:  # the stream restarting or not up yet: keep trying, say why
                self._last_error = f"{type(exc).__name__}: {exc}"
            await asyncio.sleep(period)

    async def ready(self) -> dict[str, Any]:
        """Start polling (once); return the status."""
        self._ensure_loop()
        return await self.status()

    async def latest_state(self, symbol: str) -> LiveState:
        """The state of ``symbol`` (the traded one) at its latest closed step.

        Raises
        ------
        LiveStateUnavailableError
            Another symbol, or no step has closed yet.
        """
        self._ensure_loop()
        return self._builder.latest_state(symbol)

    async def states_since(self, seq: int) -> LiveStates:
        """Every state built after ``seq`` that the history holds (paper trading reads each step once)."""
        self._ensure_loop()
        return self._builder.states_since(seq)

    async def status(self) -> dict[str, Any]:
        """The builder's counters, the stream polls and restarts seen, and the last error."""
        self._ensure_loop()
        c = self._consumer
        return {
            **self._builder.status(),
            "polls": c.polls,
            "stream_restarts": c.restarts,
            "incomplete_polls": c.incomplete,
            "last_error": self._last_error,
            "warm": self._warm,
        }
