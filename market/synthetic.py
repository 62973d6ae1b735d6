"""A seeded synthetic traded/reference market pair for machines with neither the network nor recorded data.

Owns generating trades (``TRADE_DTYPE``) or bars (``BAR_DTYPE``) from a regime-switching model with
jumps, self-exciting trade arrivals and traded-reference correlation. Everything it returns is labelled synthetic
(``synthetic=True``, ``label="synthetic"``); it must never be passed off as real data.

The model, per step of ``dt`` seconds:

* a market regime follows a continuous-time Markov chain (exponential holding times, a jump chain
  between regimes) shared by both symbols; each regime has its own drift, volatility, jump rate and
  trade rate;
* the traded market's log return is ``mu dt + sigma sqrt(dt) z + J``; the reference uses
  ``rho z + sqrt(1 - rho^2) z'`` and a volatility ``reference_vol_ratio`` times the traded one's, and shares
  the jumps (scaled by the same ratio);
* trade counts are a discretised Hawkes process: ``N_t ~ Poisson(base_t dt + E_t)``,
  ``E_t = d E_{t-1} + n (1 - d) N_{t-1}`` with ``d = exp(-dt / decay)`` and branching ratio ``n``, so
  trades cluster; a jump adds a burst of ``jump_burst_trades`` expected trades that decays the same way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from .errors import ConfigError
from .records import BAR_DTYPE, TRADE_DTYPE
from .seeding import derive_rng
from .timeframes import TIMEFRAME_MS

__all__ = [
    "SYNTHETIC_LABEL",
    "Regime",
    "SyntheticBars",
    "SyntheticConfig",
    "SyntheticMarket",
    "SyntheticProduct",
    "synthetic_bars",
    "synthetic_trades",
]

#: The label every synthetic product carries, for whatever prints or stores it.
SYNTHETIC_LABEL = "synthetic"


@dataclass(frozen=True, slots=True)
class Regime:
    """One market regime (rates per second; volatility of the log price per square-root second)."""

    name: str
    drift_per_s: float
    vol_per_sqrt_s: float
    jump_rate_per_s: float
    trade_rate_per_s: float
    mean_duration_s: float


_DEFAULT_REGIMES = (
    # ETH's yearly volatility is ~60%, i.e. ~1.1e-4 per sqrt(second); the three regimes straddle it.
    Regime("calm", 2e-8, 0.5e-4, 0.0, 3.0, 1800.0),
    Regime("normal", 0.0, 1.0e-4, 1 / 7200, 6.0, 1200.0),
    Regime("stressed", -1e-7, 2.5e-4, 1 / 600, 15.0, 300.0),
)


@dataclass(frozen=True, slots=True)
class SyntheticConfig:
    """Parameters of the synthetic market; the defaults look roughly like ETH/USDT and BTC/USDT spot.

    ``transitions[i][j]`` is the probability that leaving regime ``i`` goes to ``j`` (rows sum to 1,
    diagonal 0). Quantities are lognormal per symbol and rounded to the lot size; prices are rounded
    to the tick, buyers paying the ask and sellers hitting the bid one tick below.
    """

    symbols: tuple[str, str] = ("ETHUSDT", "BTCUSDT")
    start_prices: tuple[float, float] = (2500.0, 60000.0)
    regimes: tuple[Regime, ...] = _DEFAULT_REGIMES
    transitions: tuple[tuple[float, ...], ...] = ((0.0, 0.8, 0.2), (0.6, 0.0, 0.4), (0.3, 0.7, 0.0))
    reference_correlation: float = 0.8
    reference_vol_ratio: float = 0.8
    reference_rate_ratio: float = 1.3
    jump_sd: float = 0.004
    hawkes_branching: float = 0.5
    hawkes_decay_s: float = 5.0
    jump_burst_trades: float = 200.0
    qty_median: tuple[float, float] = (0.05, 0.002)
    qty_log_sd: float = 1.5
    lot_size: tuple[float, float] = (0.0001, 0.00001)
    tick_size: tuple[float, float] = (0.01, 0.01)
    first_trade_ids: tuple[int, int] = (1_500_000_000, 3_500_000_000)

    def validate(self) -> None:
        """Raise ``ConfigError`` naming the first field that is out of range."""
        k = len(self.regimes)
        if k == 0:
            raise ConfigError("synthetic.regimes: at least one regime is needed")
        if len(self.transitions) != k or any(len(row) != k for row in self.transitions):
            raise ConfigError(f"synthetic.transitions: must be {k}x{k}, got {self.transitions!r}")
        for i, row in enumerate(self.transitions):
            if any(p < 0 for p in row) or (k > 1 and (row[i] != 0 or not math.isclose(sum(row), 1.0))):
                raise ConfigError(f"synthetic.transitions[{i}]: need p >= 0, p[i][i] = 0, sum 1; got {row!r}")
        for r in self.regimes:
            if r.vol_per_sqrt_s < 0 or r.jump_rate_per_s < 0 or r.trade_rate_per_s < 0 or r.mean_duration_s <= 0:
                raise ConfigError(f"synthetic.regimes[{r.name!r}]: rates and volatility must be >= 0, got {r!r}")
        if not -1.0 <= self.reference_correlation <= 1.0:
            raise ConfigError(f"synthetic.reference_correlation: must lie in [-1, 1], got {self.reference_correlation}")
        if not 0.0 <= self.hawkes_branching < 1.0:
            raise ConfigError(f"synthetic.hawkes_branching: must lie in [0, 1), got {self.hawkes_branching}")
        if min(self.start_prices) <= 0 or min(self.tick_size) <= 0 or min(self.lot_size) <= 0:
            raise ConfigError("synthetic.start_prices, tick_size and lot_size must be positive")
        if self.hawkes_decay_s <= 0 or self.jump_sd < 0 or self.qty_log_sd < 0 or min(self.qty_median) <= 0:
            raise ConfigError("synthetic.hawkes_decay_s, jump_sd, qty_log_sd, qty_median are out of range")


@dataclass(frozen=True, slots=True)
class SyntheticProduct:
    """What every synthetic product carries: its seed, start, regime path and the synthetic label."""

    seed: int
    start_ms: int
    regimes: np.ndarray
    regime_names: tuple[str, ...]
    synthetic: bool = field(default=True, init=False)
    label: str = field(default=SYNTHETIC_LABEL, init=False)

    @property
    def spacing(self) -> dict[str, int]:
        """The product's own time step, by name (overridden by each product)."""
        return {}

    @property
    def metadata(self) -> dict[str, str]:
        """Key/values to store beside anything written from this product (e.g. Parquet metadata)."""
        fixed = {"synthetic": "true", "label": self.label, "seed": str(self.seed)}
        return fixed | {name: str(value) for name, value in self.spacing.items()}


@dataclass(frozen=True, slots=True)
class SyntheticMarket(SyntheticProduct):
    """Synthetic trades per symbol, with the regime path that made them. Labelled synthetic.

    ``regimes[k]`` is the regime index during ``[start_ms + k step_ms, start_ms + (k + 1) step_ms)``.
    """

    duration_ms: int
    step_ms: int
    trades: Mapping[str, np.ndarray]

    @property
    def spacing(self) -> dict[str, int]:
        """The step of the regime path."""
        return {"step_ms": self.step_ms}


@dataclass(frozen=True, slots=True)
class SyntheticBars(SyntheticProduct):
    """Synthetic bars per symbol (``BAR_DTYPE``), one regime index per bar. Labelled synthetic.

    A bar's ``vwap`` is its typical price ``(high + low + close) / 3``, as for klines without quote volume.
    """

    interval_ms: int
    bars: Mapping[str, np.ndarray]

    @property
    def spacing(self) -> dict[str, int]:
        """The bar interval."""
        return {"interval_ms": self.interval_ms}


# --------------------------------------------------------------------------------------------- model


def _stationary(cfg: SyntheticConfig) -> np.ndarray:
    """Stationary law of the regime chain (the generator's left null vector)."""
    k = len(cfg.regimes)
    if k == 1:
        return np.ones(1)
    rates = np.array([1.0 / r.mean_duration_s for r in cfg.regimes])
    q = np.asarray(cfg.transitions, dtype=np.float64) * rates[:, None]
    q[np.diag_indices(k)] = -rates
    a = np.vstack([q.T, np.ones(k)])
    b = np.zeros(k + 1)
    b[-1] = 1.0
    pi = np.linalg.lstsq(a, b, rcond=None)[0]
    pi = np.clip(pi, 0.0, None)
    return pi / pi.sum()


def _regime_path(cfg: SyntheticConfig, n_steps: int, dt_s: float, rng: np.random.Generator) -> np.ndarray:
    """Regime index at the start of each step, from exponential holding times and the jump chain."""
    k = len(cfg.regimes)
    state = int(rng.choice(k, p=_stationary(cfg)))
    if k == 1:
        return np.zeros(n_steps, dtype=np.int8)
    horizon = n_steps * dt_s
    probs = np.asarray(cfg.transitions, dtype=np.float64)
    change_times: list[float] = []
    states = [state]
    now = 0.0
    while True:
        now += rng.exponential(cfg.regimes[state].mean_duration_s)
        if now >= horizon:
            break
        state = int(rng.choice(k, p=probs[state]))
        change_times.append(now)
        states.append(state)
    step_starts = np.arange(n_steps) * dt_s
    return np.asarray(states, dtype=np.int8)[np.searchsorted(np.asarray(change_times), step_starts, side="right")]


def _log_returns(
    cfg: SyntheticConfig, regimes: np.ndarray, dt_s: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-step diffusion and jump log returns of both markets, and the traded market's per-step diffusion variance."""
    n = regimes.size
    mu = np.array([r.drift_per_s for r in cfg.regimes])[regimes]
    sigma = np.array([r.vol_per_sqrt_s for r in cfg.regimes])[regimes]
    lam = np.array([r.jump_rate_per_s for r in cfg.regimes])[regimes]
    z = rng.standard_normal((2, n))
    rho = cfg.reference_correlation
    z_reference = rho * z[0] + math.sqrt(max(0.0, 1.0 - rho * rho)) * z[1]
    sd = sigma * math.sqrt(dt_s)
    jump_count = rng.poisson(lam * dt_s)
    jumps = rng.standard_normal(n) * cfg.jump_sd * np.sqrt(jump_count)  # sum of count N(0, sd^2) jumps
    traded = (mu - 0.5 * sigma**2) * dt_s + sd * z[0]
    reference_sigma = cfg.reference_vol_ratio * sigma
    reference = (mu - 0.5 * reference_sigma**2) * dt_s + cfg.reference_vol_ratio * sd * z_reference
    return traded + jumps, reference + cfg.reference_vol_ratio * jumps, jump_count, (sd * sd)


def _hawkes_counts(
    base_per_step: np.ndarray, jump_count: np.ndarray, dt_s: float, cfg: SyntheticConfig, rng: np.random.Generator
) -> np.ndarray:
    """Trade counts per step from the discretised Hawkes process (see the module docstring)."""
    d = math.exp(-dt_s / cfg.hawkes_decay_s)
    excite_per_trade = cfg.hawkes_branching * (1.0 - d)
    burst = cfg.jump_burst_trades * (1.0 - d) * jump_count
    counts = np.empty(base_per_step.size, dtype=np.int64)
    excitation = 0.0
    poisson = rng.poisson
    for t in range(base_per_step.size):
        excitation += burst[t]
        n = poisson(base_per_step[t] + excitation)
        counts[t] = n
        excitation = d * excitation + excite_per_trade * n
    return counts


def _buy_probability(returns: np.ndarray, step_var: np.ndarray) -> np.ndarray:
    """Share of buyer-initiated flow: more buys when the step's return is up."""
    scale = np.sqrt(np.where(step_var > 0, step_var, 1.0))
    return 0.5 + 0.4 * np.tanh(returns / scale)


def _on_grid(units: np.ndarray, size: float) -> np.ndarray:
    """``units * size`` rounded to the decimals of ``size``, so 250170 * 0.01 prints as 2501.7."""
    digits = max(0, -math.floor(math.log10(size) + 1e-9)) + 2
    return np.round(units * size, digits)


def _check_span(start_ms: int, duration_ms: int, step_ms: int) -> int:
    if start_ms < 0:
        raise ConfigError(f"start_ms must be >= 0, got {start_ms}")
    if duration_ms < step_ms or duration_ms % step_ms:
        raise ConfigError(f"duration_ms must be a positive multiple of {step_ms} ms, got {duration_ms}")
    return duration_ms // step_ms


# --------------------------------------------------------------------------------------------- public


def synthetic_trades(
    start_ms: int, duration_ms: int, *, seed: int, config: SyntheticConfig | None = None
) -> SyntheticMarket:
    """Generate synthetic trades for both symbols over ``[start_ms, start_ms + duration_ms)``.

    The model runs on a 1 s grid; within a second, trades get sorted uniform millisecond offsets and
    prices on the log-linear path between the second's endpoints, at the ask (buyer aggressor) or the
    bid one tick below.

    Parameters
    ----------
    start_ms : int
        First millisecond, epoch UTC.
    duration_ms : int
        Length; a positive multiple of 1000.
    seed : int
        Same seed, same output; every random stream derives from it by name.
    config : SyntheticConfig, optional
        Model parameters; defaults to :class:`SyntheticConfig`.

    Returns
    -------
    SyntheticMarket
        ``TRADE_DTYPE`` per symbol (times sorted, trade ids strictly increasing, prices positive), the
        regime per second, and the synthetic label.
    """
    cfg = config or SyntheticConfig()
    cfg.validate()
    step_ms = 1_000
    n = _check_span(start_ms, duration_ms, step_ms)
    dt_s = step_ms / 1000.0
    regimes = _regime_path(cfg, n, dt_s, derive_rng(seed, "synthetic", "regimes"))
    traded_r, reference_r, jump_count, step_var = _log_returns(
        cfg, regimes, dt_s, derive_rng(seed, "synthetic", "returns")
    )
    base = np.array([r.trade_rate_per_s for r in cfg.regimes])[regimes] * dt_s

    trades: dict[str, np.ndarray] = {}
    for j, (symbol, returns, rate, var) in enumerate(
        [
            (cfg.symbols[0], traded_r, base, step_var),
            (cfg.symbols[1], reference_r, base * cfg.reference_rate_ratio, step_var * cfg.reference_vol_ratio**2),
        ]
    ):
        rng = derive_rng(seed, "synthetic", "trades", symbol)
        counts = _hawkes_counts(rate, jump_count, dt_s, cfg, rng)
        total = int(counts.sum())
        log_p = math.log(cfg.start_prices[j]) + np.concatenate([[0.0], np.cumsum(returns)])
        step = np.repeat(np.arange(n), counts)
        offsets = rng.integers(0, step_ms, size=total)
        # sort offsets inside each second: order by (second, offset)
        order = np.lexsort((offsets, step))
        offsets = offsets[order]
        frac = offsets / step_ms
        mid = np.exp(log_p[step] + frac * returns[step])
        buy = rng.random(total) < _buy_probability(returns, var)[step]
        tick = cfg.tick_size[j]
        ask_ticks = np.maximum(np.ceil(mid / tick), 2)
        price = _on_grid(np.where(buy, ask_ticks, ask_ticks - 1), tick)
        lot = cfg.lot_size[j]
        qty = np.exp(math.log(cfg.qty_median[j]) + cfg.qty_log_sd * rng.standard_normal(total))
        qty = _on_grid(np.maximum(np.round(qty / lot), 1), lot)

        out = np.empty(total, dtype=TRADE_DTYPE)
        out["time_ms"] = start_ms + step * step_ms + offsets
        out["trade_id"] = cfg.first_trade_ids[j] + np.arange(total, dtype=np.int64)
        out["price"] = price
        out["qty"] = qty
        out["is_buyer_maker"] = ~buy
        trades[symbol] = out
    return SyntheticMarket(
        seed=seed,
        start_ms=int(start_ms),
        duration_ms=int(duration_ms),
        step_ms=step_ms,
        trades=MappingProxyType(trades),
        regimes=regimes,
        regime_names=tuple(r.name for r in cfg.regimes),
    )


def synthetic_bars(
    start_ms: int,
    duration_ms: int,
    *,
    seed: int,
    interval: str = "1m",
    config: SyntheticConfig | None = None,
) -> SyntheticBars:
    """Generate synthetic bars for both symbols directly (no trades), for long spans.

    The model runs on the bar grid: the regime is the one at the bar's open; close is the open times
    the step's return; high and low are drawn from the exact law of a Brownian bridge's maximum and
    minimum between open and close with the bar's variance (jumps are treated as part of that path);
    tick count from the Hawkes process; volume the sum of that many lognormal quantities (gamma
    approximation); buy volume split by the bar's direction; ``vwap`` the typical price.

    Parameters
    ----------
    start_ms : int
        Open time of the first bar, epoch UTC.
    duration_ms : int
        Span; a positive multiple of the interval.
    seed : int
        Same seed, same output.
    interval : str
        One of ``market.timeframes.TIMEFRAME_MS`` (``"1s"``, ``"1m"``, ``"1h"``, ...).
    config : SyntheticConfig, optional
        Model parameters.

    Returns
    -------
    SyntheticBars
        ``BAR_DTYPE`` per symbol, contiguous (no gaps), each bar opening at the previous close.
    """
    cfg = config or SyntheticConfig()
    cfg.validate()
    if interval not in TIMEFRAME_MS:
        raise ConfigError(f"interval: expected one of {sorted(TIMEFRAME_MS)}, got {interval!r}")
    step_ms = TIMEFRAME_MS[interval]
    n = _check_span(start_ms, duration_ms, step_ms)
    dt_s = step_ms / 1000.0
    regimes = _regime_path(cfg, n, dt_s, derive_rng(seed, "synthetic", "regimes", interval))
    traded_r, reference_r, jump_count, step_var = _log_returns(
        cfg, regimes, dt_s, derive_rng(seed, "synthetic", "returns", interval)
    )
    base = np.array([r.trade_rate_per_s for r in cfg.regimes])[regimes] * dt_s
    open_times = start_ms + np.arange(n, dtype=np.int64) * step_ms
    cv2 = math.expm1(cfg.qty_log_sd**2)  # squared coefficient of variation of a lognormal

    bars: dict[str, np.ndarray] = {}
    for j, (symbol, returns, rate, var) in enumerate(
        [
            (cfg.symbols[0], traded_r, base, step_var),
            (cfg.symbols[1], reference_r, base * cfg.reference_rate_ratio, step_var * cfg.reference_vol_ratio**2),
        ]
    ):
        rng = derive_rng(seed, "synthetic", "bars", interval, symbol)
        tick = cfg.tick_size[j]
        log_p = math.log(cfg.start_prices[j]) + np.concatenate([[0.0], np.cumsum(returns)])
        closes_all = _on_grid(np.maximum(np.round(np.exp(log_p) / tick), 1), tick)
        o, c = closes_all[:-1], closes_all[1:]
        b = np.log(c / o)
        s2 = np.maximum(var, 1e-18)
        u = 1.0 - rng.random((2, n))  # in (0, 1]
        up = 0.5 * (b + np.sqrt(b * b - 2.0 * s2 * np.log(u[0])))
        down = 0.5 * (b - np.sqrt(b * b - 2.0 * s2 * np.log(u[1])))
        high = np.maximum(_on_grid(np.ceil(o * np.exp(up) / tick), tick), np.maximum(o, c))
        low = np.minimum(_on_grid(np.maximum(np.floor(o * np.exp(down) / tick), 1), tick), np.minimum(o, c))

        counts = _hawkes_counts(rate, jump_count, dt_s, cfg, rng)
        mean_qty = cfg.qty_median[j] * math.exp(0.5 * cfg.qty_log_sd**2)
        volume = np.where(counts > 0, rng.gamma(np.maximum(counts, 1) / cv2, cv2) * mean_qty, 0.0)
        buy_share = np.clip(_buy_probability(b, var) + 0.05 * rng.standard_normal(n), 0.0, 1.0)

        out = np.empty(n, dtype=BAR_DTYPE)
        out["open_time_ms"] = open_times
        out["close_time_ms"] = open_times + step_ms - 1
        out["open"], out["high"], out["low"], out["close"] = o, high, low, c
        out["volume"] = volume
        out["tick_count"] = counts
        out["buy_volume"] = volume * buy_share
        out["sell_volume"] = volume - out["buy_volume"]
        out["vwap"] = (high + low + c) / 3.0
        bars[symbol] = out
    return SyntheticBars(
        seed=seed,
        start_ms=int(start_ms),
        interval_ms=step_ms,
        bars=MappingProxyType(bars),
        regimes=regimes,
        regime_names=tuple(r.name for r in cfg.regimes),
    )
