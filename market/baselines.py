"""Baseline strategies run through the trading env: flat, buy-and-hold, random (seeded), momentum, and the rule
baselines (momentum and mean reversion with fee-aware entry thresholds and holding periods) tuned on a training
span only.

Owns the baselines, their scores (return, annualised Sharpe, max drawdown, trades, fees, funding; the one
definition of each in ``market.metrics``) and the table that prints them. Trades only through ``market.env``;
a baseline never reads a price after its step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .env import BUY, HOLD, SELL, EnvConfig, VectorTradingEnv
from .errors import ConfigError, DataError
from .layout import StateConfig
from .metrics import YEAR_MS, log_returns, sharpe
from .metrics import max_drawdown as curve_drawdown
from .seeding import derive_rng
from .timeline import MarketTimeline

#: The baselines, in the order they are run and printed.
BASELINES: tuple[str, ...] = ("flat", "buy_and_hold", "random", "momentum")
__all__ = ["BASELINES", "YEAR_MS", "BaselineResult", "RuleSpec", "baseline_actions", "rule_targets", "tune_rules"]

KLINE_FILES = {
    "traded_1m": "binance/klines/ETHUSDT-1m-2025-01-01_2025-02-04.csv",
    "reference_1m": "binance/klines/BTCUSDT-1m-2025-01-01_2025-02-04.csv",
    "traded_1h": "binance/klines/ETHUSDT-1h-2024-05-13_2025-02-04.csv",
    "traded_1d": "binance/klines/ETHUSDT-1d-2022-11-11_2025-02-04.csv",
}


@dataclass(frozen=True, slots=True)
class BaselineResult:
    """One baseline's episode.

    Attributes
    ----------
    name : str
        One of :data:`BASELINES`.
    seed : int
        The env's reset seed (the start, and the random baseline's draws).
    venue : str
        ``spot`` or ``perp`` (with its leverage).
    start_step, steps : int
        Where the episode started on the timeline and how many steps it ran.
    total_return : float
        Final equity over initial equity, minus 1 (after every fee, slippage and funding).
    sharpe : float
        Annualised Sharpe ratio of per-step log equity returns (see :func:`sharpe_ratio`).
    max_drawdown : float
        Largest fall of equity from its running peak, as a fraction of the peak.
    trades : int
        Orders (position changes).
    fees, funding : float
        Quote paid in fees, and in funding (negative when received).
    liquidated : bool
    ended : str
        ``terminated`` (liquidation or ruin) or ``truncated`` (episode length or end of data).
    synthetic : bool
        Whether the timeline was synthesized.
    funding_source : str
        Where funding rates came from (configured rate where no funding data exists).
    """

    name: str
    seed: int
    venue: str
    start_step: int
    steps: int
    total_return: float
    sharpe: float
    max_drawdown: float
    trades: int
    fees: float
    funding: float
    liquidated: bool
    ended: str
    synthetic: bool
    funding_source: str


def sharpe_ratio(equity: np.ndarray, step_ms: float) -> float:
    """Annualised Sharpe ratio of an equity curve: ``market.metrics.sharpe`` of its per-step log returns (the one
    definition; a liquidated account marked at ~0 is floored at 1e-12 so its logs stay finite)."""
    return float(sharpe(log_returns(np.maximum(np.asarray(equity, dtype=np.float64), 1e-12)), step_ms))


def max_drawdown(equity: np.ndarray) -> float:
    """``market.metrics.max_drawdown`` of ``equity`` (floored at 1e-12 as :func:`sharpe_ratio`)."""
    return curve_drawdown(np.maximum(np.asarray(equity, dtype=np.float64), 1e-12))


def baseline_actions(
    name: str, steps: np.ndarray, close: np.ndarray, rngs: list[np.random.Generator], lookback: int
) -> np.ndarray:
    """Actions of baseline ``name`` at timeline ``steps`` (reads closes up to each step only)."""
    k = steps.shape[0]
    if name == "flat":
        return np.full(k, HOLD, dtype=np.int64)
    if name == "buy_and_hold":
        return np.full(k, BUY, dtype=np.int64)
    if name == "random":
        return np.array([int(rng.integers(0, 3)) for rng in rngs], dtype=np.int64)
    # momentum: the sign of the last ``lookback``-step log return; HOLD before there is one.
    past = steps - lookback
    ret = np.log(close[steps]) - np.log(close[np.maximum(past, 0)])
    out = np.where(ret > 0, BUY, np.where(ret < 0, SELL, HOLD))
    return np.where(past >= 0, out, HOLD).astype(np.int64)


def run_baselines(
    timeline: MarketTimeline,
    env_config: EnvConfig | None = None,
    seeds: Sequence[int] = (0,),
    *,
    names: Sequence[str] = BASELINES,
    momentum_lookback: int = 60,
) -> list[BaselineResult]:
    """Run each baseline for one episode per seed through :class:`market.env.VectorTradingEnv`.

    Parameters
    ----------
    timeline : MarketTimeline
    env_config : EnvConfig, optional
        The venue, episode length and starts; to score a whole span, give ``random_start=False`` and an
        ``episode_steps`` at least the span's length (the episode is truncated at the end of data).
    seeds : sequence of int
        One episode per seed (its env's reset seed; the random baseline's draws derive from it too).
    names : sequence of str
        Which of :data:`BASELINES` to run.
    momentum_lookback : int
        Steps of the momentum baseline's return.

    Returns
    -------
    list of BaselineResult
        In ``names`` order, then seed order.
    """
    config = env_config or EnvConfig()
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise ConfigError(f"baselines: unknown name(s) {unknown}; expected some of {list(BASELINES)}")
    if not seeds:
        raise ConfigError("baselines: at least one seed is needed")
    if momentum_lookback < 1:
        raise ConfigError(f"baselines: momentum_lookback must be >= 1 (got {momentum_lookback})")
    step_ms = float(np.median(np.diff(np.asarray(timeline.step_time_ms, dtype=np.int64))))
    close = np.asarray(timeline.base_close, dtype=np.float64)
    venue = config.venue.kind if config.venue.kind == "spot" else f"perp {config.venue.leverage:g}x"
    results: list[BaselineResult] = []
    for name in names:
        k = len(seeds)
        env = VectorTradingEnv(timeline, k, config, observe=False)
        _, info = env.reset(seed=[int(s) for s in seeds])
        rngs = [derive_rng(int(s), "baseline", "random") for s in seeds]
        starts = info["step"].copy()
        curves: list[list[float]] = [[float(e)] for e in info["equity"]]
        final: list[dict | None] = [None] * k
        steps = info["step"]
        while any(f is None for f in final):
            actions = baseline_actions(name, steps, close, rngs, momentum_lookback)
            _, _, terminated, truncated, info = env.step(actions)
            for i in range(k):
                if final[i] is not None:
                    continue
                curves[i].append(float(info["equity"][i]))
                if terminated[i] or truncated[i]:
                    final[i] = {key: info[key][i] for key in ("trades", "fees", "funding", "liquidated", "equity")} | {
                        "ended": "terminated" if terminated[i] else "truncated"
                    }
            steps = info["step"]
        for i, seed in enumerate(seeds):
            f = final[i]
            assert f is not None
            curve = np.array(curves[i])
            results.append(
                BaselineResult(
                    name=name,
                    seed=int(seed),
                    venue=venue,
                    start_step=int(starts[i]),
                    steps=len(curve) - 1,
                    total_return=float(curve[-1] / curve[0] - 1.0),
                    sharpe=sharpe_ratio(curve, step_ms),
                    max_drawdown=max_drawdown(curve),
                    trades=int(f["trades"]),
                    fees=float(f["fees"]),
                    funding=float(f["funding"]),
                    liquidated=bool(f["liquidated"]),
                    ended=str(f["ended"]),
                    synthetic=bool(timeline.synthetic),
                    funding_source=info["funding_source"],
                )
            )
    return results


def format_table(results: Sequence[BaselineResult]) -> str:
    """A plain-text table of baseline results, with the notes every reader needs under it."""
    header = (
        f"{'baseline':<13} {'seed':>6} {'venue':<10} {'start':>7} {'steps':>7} {'return':>9} "
        f"{'sharpe':>8} {'max dd':>8} {'trades':>7} {'fees':>10} {'funding':>9}  end"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        lines.append(
            f"{r.name:<13} {r.seed:>6} {r.venue:<10} {r.start_step:>7} {r.steps:>7} {r.total_return:>+8.2%} "
            f"{r.sharpe:>8.2f} {r.max_drawdown:>7.2%} {r.trades:>7} {r.fees:>10.2f} {r.funding:>9.2f}  "
            f"{'liquidated' if r.liquidated else r.ended}"
        )
    notes = [
        "return and Sharpe are net of fees, slippage and funding; Sharpe is annualised from the step length "
        "(365.25 days of 24 h)",
    ]
    sources = sorted({r.funding_source for r in results})
    if sources:
        notes.append("funding: " + "; ".join(sources))
    if any(r.synthetic for r in results):
        notes.append("SYNTHETIC DATA: these figures are not from real market data")
    return "\n".join(lines + notes)


def real_kline_timeline(
    shared_dir: str | Path = Path("../shared/data"),
    profile: str = "kline-1m",
    max_steps: int | None = None,
) -> MarketTimeline:
    """The timeline of the real recorded ETH/BTC 1m klines (with ETH 1h and 1d files for long windows).

    Parameters
    ----------
    shared_dir : path
        The recorded data folder (``../shared/data`` from the project root).
    profile : {"kline-1m", "tiny"}
        The state profile; both step every minute.
    max_steps : int, optional
        Keep only the first ``max_steps`` minutes.

    Raises
    ------
    DataError
        When the files are missing.
    """
    from .datasets import load_klines
    from .timeline_builder import MarketData, build_timeline

    root = Path(shared_dir)
    paths = {key: root / rel for key, rel in KLINE_FILES.items()}
    missing = [str(p) for key, p in paths.items() if key.endswith("_1m") and not p.is_file()]
    if missing:
        raise DataError(f"real klines not found: {', '.join(missing)}")
    state = StateConfig(profile=profile)  # type: ignore[arg-type]
    cut = slice(None, max_steps)
    traded = {"1m": load_klines(paths["traded_1m"])[cut]}
    for tf in ("1h", "1d"):
        if tf in state.traded_timeframes and paths[f"traded_{tf}"].is_file():
            traded[tf] = load_klines(paths[f"traded_{tf}"])
    reference = {"1m": load_klines(paths["reference_1m"])[cut]}
    source = f"real Binance spot 1m klines ({paths['traded_1m'].name}, {paths['reference_1m'].name})"
    return build_timeline(MarketData(traded_bars=traded, reference_bars=reference, source=source), state)


# ------------------------------------------------------------------------------------------ rule baselines

RuleKind = Literal["momentum", "mean_reversion"]
#: The tuning grid: lookbacks and holding periods (base steps), entry thresholds as multiples of a round trip's cost.
RULE_LOOKBACKS: tuple[int, ...] = (15, 60, 240)
RULE_HOLDS: tuple[int, ...] = (15, 60, 240)
RULE_COST_MULTIPLES: tuple[float, ...] = (1.0, 2.0, 4.0)


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """A rule baseline: enter on a ``lookback``-step log return beyond ``threshold``, hold ``hold`` steps.

    ``momentum`` goes with the move (long after a rise, short or flat after a fall), ``mean_reversion`` against
    it. A new signal during a hold restarts it; after ``hold`` steps without one the rule exits to flat (spot;
    a perp account keeps its side, the market action set having no flat target there).
    """

    kind: RuleKind
    lookback: int
    threshold: float
    hold: int

    def label(self) -> str:
        """E.g. ``momentum L60 >0.40% H60``."""
        return f"{self.kind} L{self.lookback} >{self.threshold:.2%} H{self.hold}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"kind": self.kind, "lookback": self.lookback, "threshold": self.threshold, "hold": self.hold}


def round_trip_cost(env_config: EnvConfig) -> float:
    """The fraction a market round trip costs: twice the taker fee plus twice the slippage."""
    venue = env_config.venue
    return 2.0 * (float(venue.fee) + venue.slippage_bps / 10_000.0)


def rule_grid(cost: float) -> list[RuleSpec]:
    """Every rule of the tuning grid; entry thresholds are ``RULE_COST_MULTIPLES`` x ``cost`` (fee-aware: a
    rule enters only on a move at least as large as what the round trip costs)."""
    return [
        RuleSpec(kind, lookback, m * cost, hold)  # type: ignore[arg-type]
        for kind in ("momentum", "mean_reversion")
        for lookback in RULE_LOOKBACKS
        for m in RULE_COST_MULTIPLES
        for hold in RULE_HOLDS
    ]


def rule_targets(close: np.ndarray, spec: RuleSpec) -> np.ndarray:
    """The rule's target direction (+1, -1, 0) at every step, from the closes up to that step only.

    Returns
    -------
    array [T] int8
    """
    c = np.log(np.asarray(close, dtype=np.float64))
    n = c.size
    ret = np.zeros(n)
    if spec.lookback < n:
        ret[spec.lookback :] = c[spec.lookback :] - c[: n - spec.lookback]
    side = np.where(ret > spec.threshold, 1, np.where(ret < -spec.threshold, -1, 0))
    if spec.kind == "mean_reversion":
        side = -side
    idx = np.arange(n)
    last = np.maximum.accumulate(np.where(side != 0, idx, -1))
    holding = (last >= 0) & (idx - last < spec.hold)
    return np.where(holding, side[np.maximum(last, 0)], 0).astype(np.int8)


def target_actions(targets: np.ndarray, kind: str) -> np.ndarray:
    """Market actions that reach ``targets``: BUY for long, SELL for short (perp) or flat (spot), HOLD else."""
    t = np.asarray(targets)
    flat = SELL if kind == "spot" else HOLD
    return np.where(t > 0, BUY, np.where(t < 0, SELL, flat)).astype(np.int64)


@dataclass(frozen=True, slots=True)
class RuleScore:
    """One rule over the tuning span: net total return, annualised Sharpe and trades."""

    spec: RuleSpec
    total_return: float
    sharpe: float
    trades: int


def tune_rules(
    timeline: MarketTimeline, env_config: EnvConfig, start: int, steps: int, grid: Sequence[RuleSpec] | None = None
) -> list[RuleScore]:
    """Every rule of ``grid`` (default :func:`rule_grid` of the venue's round-trip cost) through the env over
    steps ``start .. start + steps`` (the training span: nothing after it is read), best Sharpe first.

    Raises
    ------
    ConfigError
        When the span is empty or leaves the timeline.
    """
    if steps < 2 or start < 0 or start + steps >= timeline.n_steps:
        raise ConfigError(
            f"rule tuning span [{start}, {start + steps}] is empty or not on the timeline's {timeline.n_steps} steps"
        )
    specs = list(grid) if grid is not None else rule_grid(round_trip_cost(env_config))
    close = np.asarray(timeline.base_close, dtype=np.float64)[: start + steps + 1]
    targets = np.stack([rule_targets(close, s) for s in specs])
    cfg = env_config.model_copy(
        update={"random_start": False, "start_step": start, "episode_steps": steps, "close_at_end": True}
    )
    env = VectorTradingEnv(timeline, len(specs), cfg, observe=False)
    _, info = env.reset(seed=0)
    k = len(specs)
    equity = np.zeros((k, steps + 1))
    equity[:, 0] = info["equity"]
    ended = np.full(k, -1)
    trades = np.zeros(k, dtype=np.int64)
    rows = np.arange(k)
    for i in range(steps):
        actions = target_actions(targets[rows, info["step"]], env_config.venue.kind)
        _, _, terminated, truncated, info = env.step(actions)
        live = ended < 0
        equity[live, i + 1] = info["equity"][live]
        trades[live] = info["trades"][live]
        ended[live & (terminated | truncated)] = i + 1
        if (ended >= 0).all():
            break
    step_ms = float(np.median(np.diff(np.asarray(timeline.step_time_ms, dtype=np.int64))))
    scores = []
    for j, spec in enumerate(specs):
        e = np.maximum(equity[j, : (ended[j] if ended[j] > 0 else steps) + 1], 1e-12)
        score = RuleScore(spec, float(e[-1] / e[0] - 1.0), float(sharpe(log_returns(e), step_ms)), int(trades[j]))
        scores.append(score)
    return sorted(scores, key=lambda sc: (-np.nan_to_num(sc.sharpe, nan=-np.inf), -sc.total_return))
