"""The trading env: a gymnasium env and a vectorised one over a market timeline, on the venue's books.

Owns the episode (starts, steps, termination, truncation) and the observation (the one ``gather`` at the
current step, with ``market.agent.agent_features``). Causal: what ``step()`` returns after acting at t reads
nothing after t+1. The fills, liquidation and funding are the one venue step (``market.venue.step``), shared
with paper trading; the reward is ``market.reward``.

Timing of one step, acting at t (``market.venue.step``): the order reaches the market after the venue's
latency and fills at the next bar's open (``latency_ms: 0``: at ``close[t]``) plus the half-spread or the
slippage, paying fees; the bar ending at t+1 may liquidate a perp position on its extreme; funding is
charged when a funding time lies in ``(time[t], time[t+1]]``; equity is marked to ``close[t+1]`` and the env
returns the reward and the observation at t+1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from pydantic import Field

from . import reward as rw
from . import venue as vn
from .agent import agent_features
from .config import StrictModel
from .errors import ConfigError, DataError
from .features import gather
from .layout import AGENT_FEATURES
from .queue import TickTape, arrival_prices
from .timeline import MarketTimeline

#: Actions of the env's Discrete(3) space (target positions, see ``market.venue.target_direction``).
BUY, SELL, HOLD = vn.BUY, vn.SELL, vn.HOLD


class EnvConfig(StrictModel):
    """One episode of trading: the venue, the reward, where episodes start and how long they run.

    ``start_step`` is the first step an episode may start at (skip a warm-up) and the start itself when
    ``random_start`` is false; random starts are uniform in ``[start_step, T - 1 - episode_steps]``.
    An episode terminates on liquidation or when equity falls below ``ruin_fraction`` of its start, and is
    truncated after ``episode_steps`` steps or at the last step of the data. With ``close_at_end`` an open
    position is closed at market (fees and slippage paid) on the truncating step. ``actions``: ``market``
    (BUY / SELL / HOLD, target positions at market) or ``scalper`` (adds POST_BID / POST_ASK post-only limits
    at the best bid / ask and CANCEL; ``market.venue.SCALPER_ACTION_NAMES``), which needs the base bars' volume.
    """

    venue: vn.VenueConfig = vn.VenueConfig()
    reward: rw.RewardConfig = rw.RewardConfig()
    episode_steps: int = Field(1440, ge=1)
    random_start: bool = True
    start_step: int = Field(0, ge=0)
    initial_equity: float = Field(10_000.0, gt=0.0, allow_inf_nan=False)
    ruin_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    close_at_end: bool = False
    actions: Literal["market", "scalper"] = "market"


def _per_step(values: Any, n: int, what: str, source: str) -> np.ndarray:
    """A per-step float64 array of length ``n`` with finite values, or a DataError naming it."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (n,):
        raise DataError(f"timeline {source!r}: {what} has shape {arr.shape}, expected ({n},)")
    bad = ~np.isfinite(arr)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"timeline {source!r}: {what}[{i}] = {arr[i]!r} is not finite")
    return arr


def _spread(values: Any, n: int, source: str) -> np.ndarray:
    """The quoted spread per step: NaN where no quote was known yet (the slippage applies), never negative."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.shape != (n,):
        raise DataError(f"timeline {source!r}: spread has shape {arr.shape}, expected ({n},)")
    bad = np.isinf(arr) | (arr < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"timeline {source!r}: spread[{i}] = {arr[i]!r} is not a finite non-negative spread")
    return arr


def _fill_base(
    venue: vn.VenueConfig, timeline: MarketTimeline, base_open: Any, time_ms: np.ndarray, close: np.ndarray, src: str
) -> tuple[vn.VenueConfig, np.ndarray]:
    """The venue the env fills with and the base bars' opens (what a market order fills at after the latency).

    The opens come from ``base_open`` or ``timeline.meta["base_open"]``. A timeline without them can only fill
    at ``close[t]``: with the default latency (``latency_ms`` not given) that is said in ``fill_model`` (the
    latency is not applied), and a latency the config gives is refused.
    """
    n = close.shape[0]
    opens = timeline.meta.get("base_open") if base_open is None else base_open
    if venue.latency == 0:
        return venue, close if opens is None else _per_step(opens, n, "base_open", src)
    if opens is None:
        if venue.latency_ms is not None:
            raise ConfigError(
                f"env.venue.latency_ms: {venue.latency_ms} needs the base bars' opens (timeline {src!r} has no "
                "meta['base_open']); give base_open= or set venue.latency_ms: 0"
            )
        return venue.model_copy(update={"latency_ms": 0}), close
    steps = np.diff(time_ms)
    if steps.size and venue.latency > int(steps.min()):
        raise ConfigError(
            f"env.venue.latency_ms: {venue.latency} exceeds the base step ({int(steps.min())} ms) "
            f"of timeline {src!r}"
        )
    opens = _per_step(opens, n, "base_open", src)
    if (opens <= 0).any():
        i = int(np.argmax(opens <= 0))
        raise DataError(f"timeline {src!r}: base_open[{i}] = {opens[i]!r} is not a positive price")
    return venue, opens


def _tick_fill_base(
    venue: vn.VenueConfig, tape: TickTape, time_ms: np.ndarray, close: np.ndarray, src: str
) -> tuple[vn.VenueConfig, np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Tick fills: the venue (``fill_data: ticks``), the base opens (unused) and where market orders fill.

    A market order decided at step t fills at the first trade in ``(time[t] + latency, time[t+1]]`` plus the
    half-spread of that moment; where no trade came before ``time[t+1]``, at the mid of the quote standing then
    (or ``close[t+1]`` before any quote) plus its half-spread, so that nothing after t+1 is read.
    """
    steps = np.diff(time_ms)
    if steps.size and venue.latency > int(steps.min()):
        raise ConfigError(
            f"env.venue.latency_ms: {venue.latency} exceeds the base step ({int(steps.min())} ms) of timeline {src!r}"
        )
    until = np.append(time_ms[1:], time_ms[-1])
    price, half = arrival_prices(tape, time_ms, venue.latency, until)
    bid, ask = tape.quote_at(until)
    mid = np.where(np.isfinite(bid) & np.isfinite(ask), 0.5 * (bid + ask), np.append(close[1:], close[-1]))
    price = np.where(np.isfinite(price), price, mid)
    return venue.model_copy(update={"fill_data": "ticks"}), close, (price, half)


@dataclass(frozen=True, slots=True)
class MarketInputs:
    """What an env reads beside the timeline, each optional: the keyword arguments of both envs.

    Parameters
    ----------
    cnn_hidden, cnn_pred : array [T, H] / [T, P], optional
        The CNN component per step (see ``market.features.gather``).
    cnn_signal : array [T], optional
        The CNN's directional prediction at each step in [-1, 1], for the alignment reward term.
    spread : array [T], optional
        Quoted spread per step (``market.venue.half_spread_at`` of the bookTicker stream, doubled); half of it
        is the slippage, NaN where no quote is known (overrides ``timeline.meta["spread"]``).
    base_open : array [T], optional
        The base bars' opens, where orders fill after the venue's latency (overrides
        ``timeline.meta["base_open"]``; without either the env fills at ``close[t]``, see ``fill_model``).
    base_volume : array [T], optional
        The base bars' traded volume, which caps resting orders' fills (``scalper`` actions; overrides
        ``timeline.meta["base_volume"]``).
    ticks : market.queue.TickTape, optional
        The trades and bookTicker quotes of the traded symbol: fills are then read from ticks (``venue.fill_data``
        ``ticks``, unless it says ``bars``): market orders at the first trade after the latency, resting orders
        by the risk-averse queue model.
    """

    cnn_hidden: Any | None = None
    cnn_pred: Any | None = None
    cnn_signal: Any | None = None
    spread: Any | None = None
    base_open: Any | None = None
    base_volume: Any | None = None
    ticks: TickTape | None = None


class _Engine:
    """K episodes stepped together: the venue's books, the episode bookkeeping and the reward terms."""

    def __init__(self, timeline: MarketTimeline, config: EnvConfig, k: int, inputs: MarketInputs) -> None:
        src = timeline.source
        n = timeline.n_steps
        if n < 2:
            raise DataError(f"timeline {src!r}: needs at least 2 steps to trade (has {n})")
        close = _per_step(timeline.base_close, n, "base_close", src)
        high = close if timeline.base_high is None else _per_step(timeline.base_high, n, "base_high", src)
        low = close if timeline.base_low is None else _per_step(timeline.base_low, n, "base_low", src)
        for name, arr in (("base_close", close), ("base_low", low)):
            if (arr <= 0).any():
                i = int(np.argmax(arr <= 0))
                raise DataError(f"timeline {src!r}: {name}[{i}] = {arr[i]!r} is not a positive price")
        if config.start_step > n - 2:
            raise ConfigError(f"env.start_step: {config.start_step} leaves no step to trade in a timeline of {n} steps")
        self.config = config
        self.k = k
        self.n_steps = n
        self.close, self.high, self.low = close, high, low
        self.time_ms = np.asarray(timeline.step_time_ms, dtype=np.int64)
        spread = timeline.meta.get("spread") if inputs.spread is None else inputs.spread
        self.half_spread = None if spread is None else 0.5 * _spread(spread, n, src)
        self.tape = None if config.venue.fill_data == "bars" else inputs.ticks
        self.arrival: tuple[np.ndarray, np.ndarray] | None = None
        if self.tape is not None:
            self.venue, self.open, self.arrival = _tick_fill_base(config.venue, self.tape, self.time_ms, close, src)
        elif config.venue.fill_data == "ticks":
            raise ConfigError(f"env.venue.fill_data: ticks needs the trades and quotes (ticks=) for timeline {src!r}")
        else:
            self.venue, self.open = _fill_base(config.venue, timeline, inputs.base_open, self.time_ms, close, src)
            self.venue = self.venue.model_copy(update={"fill_data": "bars"})
        self.n_actions = len(vn.ACTION_SETS[config.actions])
        volume = timeline.meta.get("base_volume") if inputs.base_volume is None else inputs.base_volume
        self.volume = None if volume is None else _per_step(volume, n, "base_volume", src)
        if config.actions == "scalper" and self.volume is None and self.tape is None:
            raise ConfigError(
                f"env.actions: scalper rests limit orders, whose fills need the base bars' volume (timeline {src!r} "
                "has no meta['base_volume']); give base_volume= or use actions: market"
            )
        self.funding_due = np.zeros(n, dtype=bool)
        self.funding_due[1:] = vn.funding_due(self.time_ms[:-1], self.time_ms[1:])
        funding = timeline.meta.get("funding_rate")
        if self.venue.kind != "perp":
            self.funding_source = "none (spot)"
            self.funding_rate = np.zeros(n)
        elif funding is not None:
            self.funding_source = "funding series from the timeline"
            self.funding_rate = _per_step(funding, n, "funding_rate", src)
        else:
            self.funding_source = f"configured {self.venue.funding_rate_8h * 100:.4f}% per 8h (no funding data)"
            self.funding_rate = np.full(n, self.venue.funding_rate_8h)
        rcfg = config.reward
        self.reward_config = rcfg
        signal = inputs.cnn_signal
        self.cnn_signal = None if signal is None else np.clip(_per_step(signal, n, "cnn_signal", src), -1, 1)
        self.pivot = rw.pivot_labels(high, low, rcfg.pivot_strength) if rcfg.pivot_weight else None
        self.vol_scale = (
            rw.volatility_scale(close, rcfg.volatility_short_halflife, rcfg.volatility_long_halflife)
            if rcfg.volatility_weight
            else None
        )
        self.history = rcfg.history
        self.equity0 = float(config.initial_equity)
        self.acc = vn.Accounts.open(k, self.equity0)
        self.fills = vn.Fills.empty(k)
        self.t = np.zeros(k, dtype=np.int64)
        self.start = np.zeros(k, dtype=np.int64)
        self.end = np.zeros(k, dtype=np.int64)
        self.ring = np.zeros((k, self.history), dtype=np.int8)
        self.trade_rate = np.zeros(k)
        self.rows = np.arange(k)
        # What the last step did, for infos.
        self.liquidated = np.zeros(k, dtype=bool)
        self.step_funding = np.zeros(k)
        self.terms = {name: np.zeros(k) for name in rw.TERMS}

    def draw_start(self, rng: np.random.Generator) -> int:
        """An episode start: ``start_step``, or uniform in ``[start_step, T - 1 - episode_steps]``."""
        lo = self.config.start_step
        if not self.config.random_start:
            return lo
        hi = max(lo, self.n_steps - 1 - self.config.episode_steps)
        return int(rng.integers(lo, hi + 1))

    def reset(self, idx: np.ndarray, starts: np.ndarray) -> None:
        """Start new episodes for envs ``idx`` at steps ``starts``."""
        starts = np.asarray(starts, dtype=np.int64)
        if ((starts < 0) | (starts > self.n_steps - 2)).any():
            raise ConfigError(f"episode start(s) {starts.tolist()} outside [0, {self.n_steps - 2}]")
        self.acc.reset(idx, self.equity0)
        self.t[idx] = starts
        self.start[idx] = starts
        self.end[idx] = np.minimum(starts + self.config.episode_steps, self.n_steps - 1)
        self.ring[idx] = 0
        self.trade_rate[idx] = 0.0

    def forget_last_step(self) -> None:
        """Clear what the last step did (fills, liquidations, funding, reward terms): a reset took no step."""
        self.fills.clear()
        self.liquidated[:] = False
        self.step_funding[:] = 0.0
        for v in self.terms.values():
            v[:] = 0.0

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Act at the current steps and move every env one step on; return (reward, terminated, truncated)."""
        acc, fills, venue = self.acc, self.fills, self.venue
        t = self.t
        t1 = t + 1
        close_t = self.close[t]
        equity_before = acc.equity(close_t)
        fills.clear()
        target = vn.target_direction(actions, np.sign(acc.qty).astype(np.int8), venue.kind)
        half = None if self.half_spread is None else self.half_spread[t]
        next_open = self.open[t1]
        if self.arrival is not None and venue.latency > 0:  # the first trade after the latency, its spread
            next_open, half = self.arrival[0][t], self.arrival[1][t]
        market = vn.StepMarket(
            close=close_t,
            half_spread=half,
            next_open=next_open,
            next_high=self.high[t1],
            next_low=self.low[t1],
            next_close=self.close[t1],
            time_ms=self.time_ms[t],
            next_time_ms=self.time_ms[t1],
            funding_rate=self.funding_rate[t1],
            next_volume=None if self.volume is None else self.volume[t1],
            tape=self.tape,
        )
        orders = None
        if self.config.actions == "scalper":
            orders = vn.resting_orders(actions, np.sign(acc.qty).astype(np.int8), venue.kind)
        outcome = vn.step(acc, target, market, venue, fills, t, orders)
        changed, self.liquidated, self.step_funding = outcome.traded, outcome.liquidated, outcome.funding
        direction = outcome.held  # held over (t, t+1]: what the step's fills left, before a liquidation
        self.ring[self.rows, t % self.history] = direction
        mark = self.close[t1]
        self.t = t1
        equity = acc.equity(mark)
        terminated = self.liquidated | (equity < self.config.ruin_fraction * self.equity0)
        truncated = ~terminated & (t1 >= self.end)
        if self.config.close_at_end and truncated.any():
            half1 = None if self.half_spread is None else self.half_spread[t1]
            buy1, sell1 = vn.round_to_ticks(*vn.fill_prices(mark, venue.slippage_bps, half1), venue)
            vn.close_positions(acc, truncated, buy1, sell1, venue.fee, fills)
            equity = acc.equity(mark)
        return self._reward(t, t1, equity_before, equity, direction, changed), terminated, truncated

    def _reward(
        self,
        t: np.ndarray,
        t1: np.ndarray,
        before: np.ndarray,
        after: np.ndarray,
        direction: np.ndarray,
        changed: np.ndarray,
    ) -> np.ndarray:
        cfg, terms = self.reward_config, self.terms
        terms["base"] = rw.log_equity_change(before, after)
        self.trade_rate = rw.update_trade_rate(self.trade_rate, changed, self.time_ms[t1] - self.time_ms[t])
        terms["frequency"] = rw.frequency_penalty(self.trade_rate, cfg.max_trades_per_min)
        if cfg.prediction_weight:
            p = t1 - cfg.prediction_horizon
            due = p >= self.start
            p = np.maximum(p, 0)
            held = self.ring[self.rows, p % self.history]
            score = rw.direction_correctness(held, np.log(self.close[t1]) - np.log(self.close[p]))
            terms["prediction"] = np.where(due, score, 0.0)
        if cfg.alignment_weight and self.cnn_signal is not None:
            terms["alignment"] = direction * self.cnn_signal[t]
        if self.pivot is not None:
            p = t1 - cfg.pivot_strength
            due = p >= self.start
            p = np.maximum(p, 0)
            terms["pivot"] = np.where(due, self.ring[self.rows, p % self.history] * self.pivot[p], 0.0)
        if self.vol_scale is not None:
            terms["vol_scale"] = self.vol_scale[t1]
        else:
            terms["vol_scale"] = np.ones(self.k)
        return rw.total_reward(
            cfg,
            terms["base"],
            frequency=terms["frequency"],
            prediction=terms["prediction"],
            alignment=terms["alignment"],
            pivot=terms["pivot"],
            vol_scale=terms["vol_scale"],
        )

    def agent_features(self, rows: np.ndarray | None = None) -> np.ndarray:
        """The agent features (``market.agent.agent_features``) at the current steps, float32 [K, 6]."""
        t = self.t if rows is None else self.t[rows]
        return agent_features(self.acc, t, self.close[t], self.equity0, rows)


def _resting(acc: vn.Accounts, row: int) -> dict[str, Any] | None:
    """The account's resting post-only order (side, price, target direction), or None."""
    side = int(acc.order_side[row])
    if side == 0:
        return None
    return {
        "side": "bid" if side > 0 else "ask",
        "price": float(acc.order_price[row]),
        "target": int(acc.order_target[row]),
    }


def _observation_space(timeline: MarketTimeline) -> spaces.Box:
    return spaces.Box(-np.inf, np.inf, shape=(timeline.layout.size,), dtype=np.float32)


class TradingEnv(gym.Env):
    """One episode at a time on a market timeline (gymnasium API).

    Actions: ``Discrete(3)``, :data:`BUY` = 0, :data:`SELL` = 1, :data:`HOLD` = 2 (target positions).
    Observation: ``Box(layout.size,)`` float32, the ``gather`` of the timeline at the current step with the
    env's agent features (and the CNN parts when given). ``reset(seed=..., options={"start_step": s})``
    fixes a start. ``info`` holds the fills of the step (leg, side, price, qty, notional, fee), the totals
    (fees, funding, trades), equity, cash, position, leverage, whether it was liquidated, the reward terms
    and where funding rates came from.

    Parameters
    ----------
    timeline : MarketTimeline
        numpy arrays; its ``meta`` may carry ``spread`` [T] (quote units) and ``funding_rate`` [T].
    config : EnvConfig, optional
    **inputs
        Keyword only: the fields of :class:`MarketInputs` (``cnn_hidden``, ``cnn_pred``, ``cnn_signal``,
        ``spread``, ``base_open``, ``base_volume``, ``ticks``); an unknown keyword raises ``TypeError``.
    """

    metadata = {"render_modes": []}

    def __init__(self, timeline: MarketTimeline, config: EnvConfig | None = None, **inputs: Any) -> None:
        self.config = config or EnvConfig()
        self.timeline = timeline
        self.inputs = MarketInputs(**inputs)
        self._engine = _Engine(timeline, self.config, 1, self.inputs)
        self.fill_model = self._engine.venue.describe()
        self.action_space = spaces.Discrete(self._engine.n_actions)
        self.observation_space = _observation_space(timeline)
        self._done = True
        self._row = np.zeros(1, dtype=np.int64)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        start = (options or {}).get("start_step")
        if start is None:
            start = self._engine.draw_start(self.np_random)
        self._engine.reset(self._row, np.array([start]))
        self._engine.forget_last_step()
        self._done = False
        obs, agent = self._observe()
        return obs, self._info(agent)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self._done:
            raise RuntimeError("step() called on a finished episode: call reset() first")
        a = int(action)
        if not 0 <= a < self._engine.n_actions:
            names = ", ".join(f"{i} ({n})" for i, n in enumerate(vn.ACTION_SETS[self.config.actions]))
            raise ValueError(f"action must be one of {names}, got {action!r}")
        reward, terminated, truncated = self._engine.step(np.array([a], dtype=np.int64))
        self._done = bool(terminated[0] or truncated[0])
        obs, agent = self._observe()
        return obs, float(reward[0]), bool(terminated[0]), bool(truncated[0]), self._info(agent)

    def _observe(self) -> tuple[np.ndarray, np.ndarray]:
        agent = self._engine.agent_features()
        obs = gather(self.timeline, self._engine.t, agent, self.inputs.cnn_hidden, self.inputs.cnn_pred)
        return obs[0], agent[0]

    def _info(self, agent: np.ndarray) -> dict[str, Any]:
        e = self._engine
        acc = e.acc
        t = int(e.t[0])
        price = float(e.close[t])
        return {
            "step": t,
            "time_ms": int(e.time_ms[t]),
            "price": price,
            "equity": float(acc.equity(price)[0]),
            "cash": float(acc.cash[0]),
            "position": float(acc.qty[0]),
            "direction": int(np.sign(acc.qty[0])),
            "entry_price": float(acc.entry_price[0]),
            "leverage": float(acc.leverage(price)[0]),
            "fills": e.fills.as_dicts(0),
            "step_fees": float(e.fills.fee[0].sum()),
            "step_funding": float(e.step_funding[0]),
            "fees": float(acc.fees[0]),
            "funding": float(acc.funding[0]),
            "trades": int(acc.trades[0]),
            "liquidated": bool(e.liquidated[0]),
            "reward_terms": {name: float(v[0]) for name, v in e.terms.items()},
            "funding_source": e.funding_source,
            "fill_model": e.venue.describe(),
            "refusals": int(acc.refusals[0]),
            "margin_lost": float(acc.margin_lost[0]),
            "resting_order": _resting(acc, 0),
            "agent": agent,
            "synthetic": bool(self.timeline.synthetic),
        }


class VectorTradingEnv(VectorEnv):
    """K trading envs stepped in one call: one ``gather`` and array accounting for all of them.

    Env ``i`` is the same as a :class:`TradingEnv` reset with seed ``seed + i`` (and, after each of its
    episodes ends, reset again without a seed), given the same actions: same rewards, equity and fills.

    Autoreset is gymnasium's **same-step** mode (``metadata["autoreset_mode"] == AutoresetMode.SAME_STEP``):
    when env i terminates or truncates, the ``obs[i]`` returned by that ``step`` is already the first
    observation of its next episode, and the finished episode's last observation is ``infos["final_obs"][i]``
    (with ``final_step`` / ``final_agent``, the timeline step and agent features of that s'). The ``final_*``
    keys are present only on a step where some env finished (``infos["done"]``), and their rows of envs that
    did not finish are zeros / -1. Every other key of ``infos`` describes the step just taken (for a
    finished env: its episode's last step), except ``step`` and ``agent``, which describe the returned obs.

    ``infos`` keys (arrays [K] unless said): ``step``, ``agent`` [K, 6], ``equity``, ``cash``, ``position``,
    ``fill_qty`` / ``fill_price`` / ``fill_fee`` [K, 3] (legs ``market.venue.LEGS``; qty 0 = no fill),
    ``fees``, ``funding``, ``step_funding``, ``trades``, ``liquidated``, ``done``, ``reward_<term>`` per
    ``market.reward.TERMS``, ``episode_return`` (log equity change of the finished episode, 0 elsewhere),
    ``funding_source`` and ``fill_model`` (one string each: ``VenueConfig.describe()`` of the venue that ran),
    ``refusals`` and ``margin_lost`` (``market.venue.Accounts``), and when some env finished ``final_obs``
    [K, S], ``final_step``, ``final_agent`` [K, 6].

    Parameters are those of :class:`TradingEnv` (the keyword ``inputs`` the fields of :class:`MarketInputs`),
    with ``num_envs`` and ``observe``: ``observe=False`` skips the gather (observations are ``None``) for
    callers that only need the books, such as the baselines.
    """

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP, "render_modes": []}

    def __init__(
        self,
        timeline: MarketTimeline,
        num_envs: int,
        config: EnvConfig | None = None,
        *,
        observe: bool = True,
        **inputs: Any,
    ) -> None:
        if num_envs < 1:
            raise ConfigError(f"num_envs must be >= 1 (got {num_envs})")
        self.config = config or EnvConfig()
        self.timeline = timeline
        self.num_envs = int(num_envs)
        self.inputs = MarketInputs(**inputs)
        self._engine = _Engine(timeline, self.config, self.num_envs, self.inputs)
        self._observe = bool(observe)
        self.fill_model = self._engine.venue.describe()
        n_actions = self._engine.n_actions
        self.single_action_space = spaces.Discrete(n_actions)
        self.single_observation_space = _observation_space(timeline)
        self.action_space = spaces.MultiDiscrete(np.full(self.num_envs, n_actions))
        self.observation_space = spaces.Box(
            -np.inf, np.inf, shape=(self.num_envs, timeline.layout.size), dtype=np.float32
        )
        self._rngs: list[np.random.Generator] = [seeding.np_random(None)[0] for _ in range(self.num_envs)]
        self._started = False

    def reset(
        self, *, seed: int | list[int] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every env; env i is seeded with ``seed + i`` (or ``seed[i]`` given a list of K seeds).

        ``options={"start_step": s}`` starts every env at step ``s``.
        """
        if isinstance(seed, list | tuple | np.ndarray):
            if len(seed) != self.num_envs:
                raise ValueError(f"expected {self.num_envs} seeds, got {len(seed)}")
            self._rngs = [seeding.np_random(int(s))[0] for s in seed]
        elif seed is not None:
            self._rngs = [seeding.np_random(int(seed) + i)[0] for i in range(self.num_envs)]
        start = (options or {}).get("start_step")
        e = self._engine
        starts = [e.draw_start(rng) if start is None else int(start) for rng in self._rngs]
        e.reset(e.rows, np.array(starts))
        e.forget_last_step()
        self._started = True
        agent = e.agent_features()
        obs = self._gather(e.t.copy(), agent)
        return obs, self._infos(agent, np.zeros(self.num_envs, dtype=bool), None, None, None, None)

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._started:
            raise RuntimeError("step() called before reset()")
        actions = np.asarray(actions, dtype=np.int64).reshape(-1)
        if actions.shape != (self.num_envs,):
            raise ValueError(f"expected {self.num_envs} actions, got shape {np.shape(actions)}")
        e_actions = self._engine.n_actions
        if ((actions < 0) | (actions >= e_actions)).any():
            names = ", ".join(f"{i} ({n})" for i, n in enumerate(vn.ACTION_SETS[self.config.actions]))
            raise ValueError(f"actions must be among {names}, got {actions.tolist()}")
        e = self._engine
        reward, terminated, truncated = e.step(actions)
        done = terminated | truncated
        if not done.any():
            agent = e.agent_features()
            obs = self._gather(e.t.copy(), agent)
            return obs, reward, terminated, truncated, self._infos(agent, done, None, None, None, None)
        idx = np.flatnonzero(done)
        final_step = e.t[idx].copy()
        final_agent = e.agent_features(idx)
        snapshot = self._snapshot()
        final_equity = snapshot["equity"][idx]
        e.reset(idx, np.array([e.draw_start(self._rngs[i]) for i in idx]))
        agent = e.agent_features()
        both = self._gather(np.concatenate([e.t, final_step]), np.concatenate([agent, final_agent]))
        obs, final_rows = (None, None) if both is None else (both[: self.num_envs], both[self.num_envs :])
        infos = self._infos(agent, done, idx, final_rows, final_step, final_agent, snapshot)
        infos["episode_return"][idx] = np.log(np.maximum(final_equity, 1e-12) / e.equity0)
        return obs, reward, terminated, truncated, infos

    def _gather(self, steps: np.ndarray, agent: np.ndarray) -> np.ndarray | None:
        """The one gather of a step (``None`` when the env was built with ``observe=False``)."""
        if not self._observe:
            return None
        return gather(self.timeline, steps, agent, self.inputs.cnn_hidden, self.inputs.cnn_pred)

    def _snapshot(self) -> dict[str, np.ndarray]:
        """The books as the step left them, before finished envs are reset."""
        acc, e = self._engine.acc, self._engine
        return {
            "equity": acc.equity(e.close[e.t]),
            "cash": acc.cash.copy(),
            "position": acc.qty.copy(),
            "fees": acc.fees.copy(),
            "funding": acc.funding.copy(),
            "trades": acc.trades.copy(),
            "refusals": acc.refusals.copy(),
            "margin_lost": acc.margin_lost.copy(),
        }

    def _infos(
        self,
        agent: np.ndarray,
        done: np.ndarray,
        idx: np.ndarray | None,
        final_rows: np.ndarray | None,
        final_step: np.ndarray | None,
        final_agent: np.ndarray | None,
        snapshot: dict[str, np.ndarray] | None = None,
    ) -> dict[str, Any]:
        e = self._engine
        k = self.num_envs
        infos: dict[str, Any] = dict(snapshot) if snapshot is not None else self._snapshot()
        infos.update(
            step=e.t.copy(),
            agent=agent,
            fill_qty=e.fills.qty.copy(),
            fill_price=e.fills.price.copy(),
            fill_fee=e.fills.fee.copy(),
            fill_maker=e.fills.maker.copy(),
            order_side=e.acc.order_side.copy(),
            order_price=e.acc.order_price.copy(),
            step_funding=np.asarray(e.step_funding, dtype=np.float64).copy(),
            liquidated=np.asarray(e.liquidated, dtype=bool).copy(),
            done=done,
            episode_return=np.zeros(k),
            funding_source=e.funding_source,
            fill_model=e.venue.describe(),
        )
        for name, v in e.terms.items():
            infos[f"reward_{name}"] = np.asarray(v, dtype=np.float64).copy()
        if idx is not None:
            infos["final_step"] = np.full(k, -1, dtype=np.int64)
            infos["final_step"][idx] = final_step
            infos["final_agent"] = np.zeros((k, len(AGENT_FEATURES)), dtype=np.float32)
            infos["final_agent"][idx] = final_agent
            if final_rows is not None:
                infos["final_obs"] = np.zeros((k, self.timeline.layout.size), dtype=np.float32)
                infos["final_obs"][idx] = final_rows
        return infos
