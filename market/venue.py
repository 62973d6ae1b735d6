"""The venue's accounting: fees, fill prices, target-position orders, margin, liquidation and funding.

Shared by the trading env and the paper-trading actor, vectorised over K accounts (arrays ``[K]``). It
never looks at a price the caller has not handed it, and never decides what to trade.

Conventions (one identity for spot and perp): every account holds ``cash`` (quote) and a signed ``qty``
(base units) and its equity marked at price ``p`` is ``cash + qty * p``. A fill of signed ``dq`` at price
``q`` pays ``|dq| * q * fee`` and moves ``cash -= dq * q + fee``. In spot ``qty >= 0`` and ``cash >= 0``;
in perp ``cash`` is the wallet balance less the entry notional (negative when long), so the same identity
holds and the margin rules below are read from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from .config import StrictModel

#: Actions, in this order: each is a target position (see :func:`target_direction`).
BUY, SELL, HOLD = 0, 1, 2
ACTION_NAMES: tuple[str, ...] = ("buy", "sell", "hold")
#: The legs a step can fill, in this order: closing the old position, opening the new one, and a forced
#: close (liquidation, or closing at the episode's end when the env is told to).
LEGS: tuple[str, ...] = ("close", "open", "forced")
CLOSE_LEG, OPEN_LEG, FORCED_LEG = 0, 1, 2

#: Funding times of Binance USD-M perpetuals: every 8 hours from 00:00 UTC.
FUNDING_INTERVAL_MS = 8 * 3_600_000

_DEFAULT_FEES = {"spot": (0.001, 0.001), "perp": (0.0005, 0.0002)}


class VenueConfig(StrictModel):
    """Where and how orders fill.

    ``spot`` (default): long or flat, taker 0.1%, no leverage. ``perp`` (Binance USD-M): long or short,
    leverage up to 125x, taker 0.05% / maker 0.02% by default, cross margin on the whole account with a
    maintenance rate, liquidation on the intrabar extreme, funding every 8 h at ``funding_rate_8h`` where
    the timeline carries no funding series. Market orders pay the taker fee; ``maker_fee`` is recorded
    for limit orders, which this venue does not take.
    """

    kind: Literal["spot", "perp"] = "spot"
    taker_fee: float | None = Field(None, ge=0.0, le=0.01)
    maker_fee: float | None = Field(None, ge=0.0, le=0.01)
    leverage: float = Field(1.0, ge=1.0, le=125.0)
    position_fraction: float = Field(1.0, gt=0.0, le=1.0)
    maintenance_margin_rate: float = Field(0.005, gt=0.0, lt=0.5)
    funding_rate_8h: float = Field(0.0001, ge=-0.03, le=0.03)
    slippage_bps: float = Field(1.0, ge=0.0, le=500.0)

    @model_validator(mode="after")
    def _fill_and_check(self) -> VenueConfig:
        taker, maker = _DEFAULT_FEES[self.kind]
        if self.taker_fee is None:
            object.__setattr__(self, "taker_fee", taker)
        if self.maker_fee is None:
            object.__setattr__(self, "maker_fee", maker)
        if self.kind == "spot" and self.leverage != 1.0:
            raise ValueError(f"leverage: spot trades without leverage, must be 1 (got {self.leverage})")
        if self.kind == "perp":
            if self.maintenance_margin_rate * self.leverage * self.position_fraction >= 1.0:
                raise ValueError(
                    f"maintenance_margin_rate {self.maintenance_margin_rate} x leverage {self.leverage} x "
                    f"position_fraction {self.position_fraction} >= 1: a new position would be liquidated at once"
                )
            if self.maintenance_margin_rate <= self.taker_fee:
                raise ValueError(
                    f"maintenance_margin_rate {self.maintenance_margin_rate} must exceed taker_fee "
                    f"{self.taker_fee} (the liquidation fee is paid out of the maintenance margin)"
                )
        return self

    @property
    def fee(self) -> float:
        """The fee rate market orders pay (taker)."""
        return float(self.taker_fee)  # type: ignore[arg-type]


@dataclass(slots=True)
class Accounts:
    """K accounts' books, updated in place by the functions of this module.

    Attributes
    ----------
    cash : array [K] float64
        Quote balance (perp: wallet balance less the entry notional).
    qty : array [K] float64
        Signed position in base units; ``0`` when flat.
    entry_price : array [K] float64
        Fill price of the open position (0 when flat).
    entry_step : array [K] int64
        Base step the position was opened at (-1 when flat).
    fees : array [K] float64
        Fees paid since the last reset.
    funding : array [K] float64
        Funding paid since the last reset (negative when received).
    trades : array [K] int64
        Orders since the last reset: a step that changes the position is one order, whatever its legs.
    """

    cash: np.ndarray
    qty: np.ndarray
    entry_price: np.ndarray
    entry_step: np.ndarray
    fees: np.ndarray
    funding: np.ndarray
    trades: np.ndarray

    @classmethod
    def open(cls, k: int, equity: float) -> Accounts:
        """K flat accounts holding ``equity`` in cash."""
        return cls(
            cash=np.full(k, float(equity)),
            qty=np.zeros(k),
            entry_price=np.zeros(k),
            entry_step=np.full(k, -1, dtype=np.int64),
            fees=np.zeros(k),
            funding=np.zeros(k),
            trades=np.zeros(k, dtype=np.int64),
        )

    def reset(self, idx: np.ndarray, equity: float | np.ndarray) -> None:
        """Make accounts ``idx`` flat with ``equity`` in cash and clear their totals."""
        self.cash[idx] = equity
        self.qty[idx] = 0.0
        self.entry_price[idx] = 0.0
        self.entry_step[idx] = -1
        self.fees[idx] = 0.0
        self.funding[idx] = 0.0
        self.trades[idx] = 0

    def equity(self, price: np.ndarray | float) -> np.ndarray:
        """Equity marked at ``price``: ``cash + qty * price``."""
        return self.cash + self.qty * price

    @property
    def direction(self) -> np.ndarray:
        """Sign of the position: -1 short, 0 flat, +1 long (int8)."""
        return np.sign(self.qty).astype(np.int8)

    def leverage(self, price: np.ndarray | float) -> np.ndarray:
        """Position notional over equity at ``price`` (0 when flat, inf when equity is not positive)."""
        equity = self.equity(price)
        notional = np.abs(self.qty) * price
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(notional == 0, 0.0, np.where(equity > 0, notional / np.maximum(equity, 1e-300), np.inf))


@dataclass(slots=True)
class Fills:
    """What one step filled, per account and leg (:data:`LEGS`); ``qty == 0`` means no fill on that leg.

    Attributes
    ----------
    qty : array [K, 3] float64
        Signed quantity (positive buys).
    price : array [K, 3] float64
    fee : array [K, 3] float64
        ``|qty| * price * fee rate``.
    """

    qty: np.ndarray
    price: np.ndarray
    fee: np.ndarray

    @classmethod
    def empty(cls, k: int) -> Fills:
        """No fills for K accounts."""
        return cls(qty=np.zeros((k, 3)), price=np.zeros((k, 3)), fee=np.zeros((k, 3)))

    def clear(self) -> None:
        """Forget every fill (reuse the arrays)."""
        self.qty.fill(0.0)
        self.price.fill(0.0)
        self.fee.fill(0.0)

    def as_dicts(self, row: int) -> list[dict[str, float | str]]:
        """The fills of account ``row`` as records: leg, side, price, qty (absolute), notional, fee."""
        out: list[dict[str, float | str]] = []
        for leg, name in enumerate(LEGS):
            q = float(self.qty[row, leg])
            if q != 0.0:
                p = float(self.price[row, leg])
                out.append(
                    {
                        "leg": name,
                        "side": "buy" if q > 0 else "sell",
                        "price": p,
                        "qty": abs(q),
                        "notional": abs(q) * p,
                        "fee": float(self.fee[row, leg]),
                    }
                )
        return out


def fill_prices(
    close: np.ndarray, slippage_bps: float, half_spread: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Prices a market buy and a market sell fill at: the close plus or minus the slippage.

    Parameters
    ----------
    close : array [K]
        The close at the step the order is sent.
    slippage_bps : float
        Used where no spread is known: the fill is ``close * (1 +- bps / 1e4)``.
    half_spread : array [K], optional
        Half the quoted spread (quote units) known at the step; when given it replaces ``slippage_bps``.

    Returns
    -------
    (buy_price, sell_price) : arrays [K]
    """
    if half_spread is not None:
        return close + half_spread, close - half_spread
    slip = slippage_bps * 1e-4
    return close * (1.0 + slip), close * (1.0 - slip)


def target_direction(actions: np.ndarray, direction: np.ndarray, kind: str) -> np.ndarray:
    """The position each action asks for: BUY long, SELL short (perp) or flat (spot), HOLD unchanged.

    Parameters
    ----------
    actions : array [K] int
        :data:`BUY`, :data:`SELL` or :data:`HOLD`.
    direction : array [K] int
        The current position's sign.
    kind : {"spot", "perp"}

    Returns
    -------
    array [K] int8 in {-1, 0, 1}
    """
    sell_to = 0 if kind == "spot" else -1
    table = np.array([1, sell_to, 0], dtype=np.int8)
    out = table[actions]
    hold = actions == HOLD
    out[hold] = direction[hold]
    return out


def _fill(
    acc: Accounts, fills: Fills, leg: int, mask: np.ndarray, dq: np.ndarray, price: np.ndarray, fee: float
) -> None:
    """Apply the signed fills ``dq`` at ``price`` where ``mask``, recording them on ``leg``."""
    dq = np.where(mask, dq, 0.0)
    fee_paid = np.abs(dq) * price * fee
    acc.cash -= dq * price + fee_paid
    acc.fees += fee_paid
    fills.qty[:, leg] += dq
    fills.price[:, leg] = np.where(mask, price, fills.price[:, leg])
    fills.fee[:, leg] += fee_paid


def rebalance(
    acc: Accounts,
    target: np.ndarray,
    buy_price: np.ndarray,
    sell_price: np.ndarray,
    config: VenueConfig,
    step: np.ndarray | int,
    fills: Fills,
) -> np.ndarray:
    """Move every account to its target direction with market orders; return where the position changed.

    A change closes the old position in full (one leg) and opens the new one (another leg) at the same
    step's prices. The new position's notional ``N`` is sized so that its margin and its fee together take
    ``position_fraction`` of the equity left after the close: ``N / leverage + N * fee = fraction * E``, so
    right after the fill ``N / equity == fraction * leverage`` exactly (spot: ``N * (1 + fee) = fraction *
    E``, and cash never goes negative).

    Parameters
    ----------
    acc : Accounts
        Updated in place.
    target : array [K] int in {-1, 0, 1}
        From :func:`target_direction`.
    buy_price, sell_price : arrays [K]
        From :func:`fill_prices`.
    config : VenueConfig
    step : int or array [K]
        Base step of the fill (recorded as the entry step).
    fills : Fills
        Receives the close and open legs.

    Returns
    -------
    array [K] bool
        Accounts whose position changed (one order each). An account with no equity left cannot open.
    """
    current = np.sign(acc.qty)
    change = target != current
    fee = config.fee
    closing = change & (current != 0)
    if closing.any():
        price = np.where(acc.qty < 0, buy_price, sell_price)
        _fill(acc, fills, CLOSE_LEG, closing, -acc.qty, price, fee)
        acc.qty[closing] = 0.0
        acc.entry_price[closing] = 0.0
        acc.entry_step[closing] = -1
    # An account with nothing left to put up (equity <= 0, only reachable with ruin checks off) cannot open.
    opening = change & (target != 0) & (acc.cash > 0)
    if opening.any():
        price = np.where(target > 0, buy_price, sell_price)
        budget = config.position_fraction * np.maximum(acc.cash, 0.0)
        notional = budget / (1.0 / config.leverage + fee)
        dq = target * notional / price
        _fill(acc, fills, OPEN_LEG, opening, dq, price, fee)
        acc.qty[opening] = dq[opening]
        acc.entry_price[opening] = price[opening]
        acc.entry_step[opening] = np.broadcast_to(step, acc.qty.shape)[opening]
    traded = closing | opening
    acc.trades += traded
    return traded


def liquidation_price(acc: Accounts, maintenance_margin_rate: float) -> np.ndarray:
    """Mark at which equity falls to the maintenance margin ``rate * |qty| * p`` (NaN when flat).

    Solving ``cash + qty p = rate |qty| p`` gives ``p = -cash / (qty (1 - rate sign(qty)))``.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        p = -acc.cash / (acc.qty * (1.0 - maintenance_margin_rate * np.sign(acc.qty)))
    return np.where(acc.qty != 0, p, np.nan)


def liquidate(acc: Accounts, low: np.ndarray, high: np.ndarray, config: VenueConfig, fills: Fills) -> np.ndarray:
    """Liquidate the perp positions whose margin the bar's extreme breached; return where it happened.

    A long is checked at the bar's low and a short at its high, so a wick that closes back inside still
    liquidates. The position is closed at the liquidation price (where equity equals the maintenance
    margin) paying the taker fee out of that margin; what is left of the margin stays in the account. The
    fill is at the liquidation price even when the bar closed beyond it (the exchange's insurance fund takes
    the rest), so equity after a liquidation is never negative. Spot positions are fully paid and never
    liquidated.
    """
    if config.kind != "perp" or not acc.qty.any():
        return np.zeros(acc.qty.shape, dtype=bool)
    p_liq = liquidation_price(acc, config.maintenance_margin_rate)
    extreme = np.where(acc.qty > 0, low, high)
    equity = acc.cash + acc.qty * extreme
    hit = (acc.qty != 0) & (equity <= config.maintenance_margin_rate * np.abs(acc.qty) * extreme)
    if hit.any():
        _fill(acc, fills, FORCED_LEG, hit, -acc.qty, np.where(hit, p_liq, 0.0), config.fee)
        acc.qty[hit] = 0.0
        acc.entry_price[hit] = 0.0
        acc.entry_step[hit] = -1
    return hit


def close_positions(
    acc: Accounts, mask: np.ndarray, buy_price: np.ndarray, sell_price: np.ndarray, fee: float, fills: Fills
) -> None:
    """Close the positions of accounts ``mask`` at market (the forced leg), e.g. at an episode's end."""
    mask = mask & (acc.qty != 0)
    if mask.any():
        price = np.where(acc.qty < 0, buy_price, sell_price)
        _fill(acc, fills, FORCED_LEG, mask, -acc.qty, price, fee)
        acc.qty[mask] = 0.0
        acc.entry_price[mask] = 0.0
        acc.entry_step[mask] = -1


def funding_due(prev_time_ms: np.ndarray, time_ms: np.ndarray) -> np.ndarray:
    """Whether a funding time (every 8 h from 00:00 UTC) lies in ``(prev_time_ms, time_ms]``."""
    return (time_ms // FUNDING_INTERVAL_MS) > (prev_time_ms // FUNDING_INTERVAL_MS)


def charge_funding(acc: Accounts, mark: np.ndarray, rate: np.ndarray | float, mask: np.ndarray) -> np.ndarray:
    """Charge funding ``qty * mark * rate`` where ``mask`` (longs pay a positive rate, shorts receive it).

    Returns
    -------
    array [K] float64
        The funding paid by each account this call (negative when received).
    """
    paid = np.where(mask, acc.qty * mark * rate, 0.0)
    acc.cash -= paid
    acc.funding += paid
    return paid
