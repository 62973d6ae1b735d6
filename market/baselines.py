"""Baseline strategies run through the trading env: flat, buy-and-hold, random (seeded) and momentum.

Owns the baselines, their scores (return, annualised Sharpe, max drawdown, trades, fees, funding) and the
table that prints them. Trades only through ``market.env``; a baseline never reads a price after its step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .env import BUY, HOLD, SELL, EnvConfig, VectorTradingEnv
from .errors import ConfigError, DataError
from .layout import StateConfig
from .seeding import derive_rng
from .timeline import MarketTimeline

#: The baselines, in the order they are run and printed.
BASELINES: tuple[str, ...] = ("flat", "buy_and_hold", "random", "momentum")
#: Milliseconds in a year of 24/7 crypto trading (365.25 days), for annualising Sharpe ratios.
YEAR_MS = 365.25 * 86_400_000

KLINE_FILES = {
    "eth": "binance/klines/ETHUSDT-1m-2025-01-01_2025-02-04.csv",
    "btc": "binance/klines/BTCUSDT-1m-2025-01-01_2025-02-04.csv",
    "eth_1h": "binance/klines/ETHUSDT-1h-2024-05-13_2025-02-04.csv",
    "eth_1d": "binance/klines/ETHUSDT-1d-2022-11-11_2025-02-04.csv",
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
    """Annualised Sharpe ratio of an equity curve sampled every ``step_ms`` (risk-free rate 0).

    ``mean(r) / std(r, ddof=1) * sqrt(YEAR_MS / step_ms)`` over the per-step log returns ``r`` of equity
    (start included); 0 when the curve has fewer than two returns or does not move.
    """
    equity = np.asarray(equity, dtype=np.float64)
    r = np.diff(np.log(np.maximum(equity, 1e-12)))
    if r.size < 2:
        return 0.0
    sd = float(r.std(ddof=1))
    if sd <= 1e-15:
        return 0.0
    return float(r.mean() / sd * np.sqrt(YEAR_MS / step_ms))


def max_drawdown(equity: np.ndarray) -> float:
    """Largest fractional fall from a running peak of ``equity`` (0 for a curve that never falls)."""
    equity = np.asarray(equity, dtype=np.float64)
    if equity.size == 0:
        return 0.0
    peak = np.maximum.accumulate(equity)
    return float(np.max(1.0 - equity / peak))


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
    missing = [str(p) for key, p in paths.items() if key in ("eth", "btc") and not p.is_file()]
    if missing:
        raise DataError(f"real klines not found: {', '.join(missing)}")
    state = StateConfig(profile=profile)  # type: ignore[arg-type]
    cut = slice(None, max_steps)
    eth = {"1m": load_klines(paths["eth"])[cut]}
    for tf in ("1h", "1d"):
        if tf in state.traded_timeframes and paths[f"eth_{tf}"].is_file():
            eth[tf] = load_klines(paths[f"eth_{tf}"])
    btc = {"1m": load_klines(paths["btc"])[cut]}
    source = f"real Binance spot 1m klines ({paths['eth'].name}, {paths['btc'].name})"
    return build_timeline(MarketData(traded_bars=eth, reference_bars=btc, source=source), state)
