"""The venue: the one venue step (:func:`step`) and its parts: latency, fill prices, fees, exchange filters,
market and post-only limit orders, margin, liquidation and funding.

The env, paper trading and evaluation all call :func:`step`, vectorised over K accounts (arrays ``[K]``). It
never looks at a price the caller has not handed it (nothing after t+1), never fills at a price the market
did not offer after the decision, and never decides what to trade.

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
from .queue import TickTape, queue_at_rest, queue_fill

#: Actions, in this order: each is a target position (see :func:`target_direction`).
BUY, SELL, HOLD = 0, 1, 2
ACTION_NAMES: tuple[str, ...] = ("buy", "sell", "hold")
#: The ``scalper`` action set adds, after the market ones: post a post-only limit at the best bid (toward long)
#: or at the best ask (toward short in perp, flat in spot), and cancel the resting order.
POST_BID, POST_ASK, CANCEL = 3, 4, 5
SCALPER_ACTION_NAMES: tuple[str, ...] = (*ACTION_NAMES, "post_bid", "post_ask", "cancel")
#: The action sets, by name: the actions of each, in index order.
ACTION_SETS: dict[str, tuple[str, ...]] = {"market": ACTION_NAMES, "scalper": SCALPER_ACTION_NAMES}
#: The legs a step can fill, in this order: closing the old position, opening the new one, and a forced
#: close (liquidation, or closing at the episode's end when the env is told to).
LEGS: tuple[str, ...] = ("close", "open", "forced")
CLOSE_LEG, OPEN_LEG, FORCED_LEG = 0, 1, 2

#: Funding times of Binance USD-M perpetuals: every 8 hours from 00:00 UTC.
FUNDING_INTERVAL_MS = 8 * 3_600_000

#: Fee presets (taker, maker) of the venues this one models: Binance spot (VIP 0) and Binance USD-M futures (VIP 0).
FEE_PRESETS: dict[str, tuple[float, float]] = {"binance-spot": (0.001, 0.001), "binance-usdm": (0.0005, 0.0002)}
#: Fee discount when fees are paid in BNB: 25% on spot, 10% on USD-M.
BNB_DISCOUNT: dict[str, float] = {"binance-spot": 0.25, "binance-usdm": 0.10}
_PRESET_OF_KIND = {"spot": "binance-spot", "perp": "binance-usdm"}
#: The decision latency when the config gives none: from the close of the step decided on to the order's arrival.
DEFAULT_LATENCY_MS = 100


class ExchangeFilters(StrictModel):
    """A symbol's exchange filters: prices on ``tick_size``, quantities on ``lot_step``, ``min_notional`` per order.

    An order's quantity is rounded down to the lot step and a fill price to the tick (a buy up, a sell down); an
    order whose rounded quantity is zero or whose notional is below ``min_notional`` is refused (and counted).
    """

    tick_size: float = Field(gt=0.0, le=1e6, allow_inf_nan=False)
    lot_step: float = Field(gt=0.0, le=1e6, allow_inf_nan=False)
    min_notional: float = Field(0.0, ge=0.0, le=1e9, allow_inf_nan=False)


#: Binance's published filters (PRICE_FILTER tickSize, LOT_SIZE stepSize, NOTIONAL / MIN_NOTIONAL) by preset and symbol.
FILTER_PRESETS: dict[tuple[str, str], ExchangeFilters] = {
    ("binance-spot", "ETHUSDT"): ExchangeFilters(tick_size=0.01, lot_step=0.0001, min_notional=5.0),
    ("binance-spot", "BTCUSDT"): ExchangeFilters(tick_size=0.01, lot_step=0.00001, min_notional=5.0),
    ("binance-usdm", "ETHUSDT"): ExchangeFilters(tick_size=0.01, lot_step=0.001, min_notional=20.0),
    ("binance-usdm", "BTCUSDT"): ExchangeFilters(tick_size=0.1, lot_step=0.001, min_notional=100.0),
}


class VenueConfig(StrictModel):
    """Where and how orders fill.

    ``spot`` (default): long or flat, no leverage, fees of ``binance-spot`` (0.1% / 0.1%). ``perp`` (Binance
    USD-M): long or short, leverage up to 125x, fees of ``binance-usdm`` (taker 0.05% / maker 0.02%), cross margin
    on the whole account with a maintenance rate, liquidation on the intrabar extreme, funding every 8 h at
    ``funding_rate_8h`` where the timeline carries no funding series. ``fee_preset`` picks the fees (``taker_fee``
    / ``maker_fee`` override it: another tier), ``bnb_discount`` applies the BNB discount. Market orders pay the
    taker fee.

    ``latency_ms`` (default :data:`DEFAULT_LATENCY_MS`, on; ``None`` means the default where the data has the base
    bars' opens, and 0 with a note where it has not): an order decided on the state at t reaches the market after
    it, so it fills
    at the next base bar's open (plus the half-spread, or ``slippage_bps`` where no spread is known), not at
    the close the state already holds; it must not exceed one base step. ``0`` fills at ``close[t]`` (the rule
    before latency). ``filters`` (a symbol's :data:`FILTER_PRESETS` name such as ``ETHUSDT``, or explicit
    :class:`ExchangeFilters`) rounds and refuses orders as the exchange does; none by default.

    ``fill_data``: what fills are read from. ``bars`` (the kline rule: market orders at the next bar's open,
    resting orders when the next bar trades strictly through them); ``ticks`` (``market.queue``: market orders at
    the first trade after the latency with the spread of that moment, resting orders by the risk-averse queue
    model on trades and bookTicker quotes); ``None``: ticks where the caller has a tick tape, else bars.
    """

    kind: Literal["spot", "perp"] = "spot"
    fee_preset: Literal["binance-spot", "binance-usdm"] | None = None
    bnb_discount: bool = False
    taker_fee: float | None = Field(None, ge=0.0, le=0.01, allow_inf_nan=False)
    maker_fee: float | None = Field(None, ge=0.0, le=0.01, allow_inf_nan=False)
    leverage: float = Field(1.0, ge=1.0, le=125.0, allow_inf_nan=False)
    position_fraction: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    maintenance_margin_rate: float = Field(0.005, gt=0.0, lt=0.5, allow_inf_nan=False)
    funding_rate_8h: float = Field(0.0001, ge=-0.03, le=0.03, allow_inf_nan=False)
    slippage_bps: float = Field(1.0, ge=0.0, le=500.0, allow_inf_nan=False)
    latency_ms: int | None = Field(None, ge=0, le=86_400_000)
    resting_volume_fraction: float = Field(0.1, gt=0.0, le=1.0, allow_inf_nan=False)
    filters: ExchangeFilters | str | None = None
    fill_data: Literal["bars", "ticks"] | None = None

    @model_validator(mode="after")
    def _fill_and_check(self) -> VenueConfig:
        if self.fee_preset is None:
            object.__setattr__(self, "fee_preset", _PRESET_OF_KIND[self.kind])
        preset = str(self.fee_preset)
        taker, maker = FEE_PRESETS[preset]
        if self.bnb_discount:
            off = 1.0 - BNB_DISCOUNT[preset]
            taker, maker = taker * off, maker * off
        if self.taker_fee is None:
            object.__setattr__(self, "taker_fee", taker)
        if self.maker_fee is None:
            object.__setattr__(self, "maker_fee", maker)
        if isinstance(self.filters, str):
            found = FILTER_PRESETS.get((preset, self.filters.upper()))
            if found is None:
                known = sorted(s for p, s in FILTER_PRESETS if p == preset)
                raise ValueError(f"filters: no published filters for {self.filters!r} on {preset} (known: {known})")
            object.__setattr__(self, "filters", found)
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

    @property
    def latency(self) -> int:
        """The decision latency in force, in ms (``latency_ms``, or :data:`DEFAULT_LATENCY_MS` when not given)."""
        return DEFAULT_LATENCY_MS if self.latency_ms is None else int(self.latency_ms)

    @property
    def fill_model(self) -> str:
        """The fill rule of market and resting orders, in words."""
        if self.fill_data == "ticks":
            at = "close[t] (no latency)" if self.latency == 0 else f"the first trade after {self.latency} ms"
            return (
                f"tick fills: market orders at {at} + the half-spread of that moment; post-only limits at the best "
                "bid/ask rest behind the displayed bookTicker size at their price (risk-averse queue: advanced by "
                "trades at the price, capped by the size shown) and fill whole on a trade that empties the queue "
                "or trades through them (maker fee)"
            )
        at = "close[t] (no latency)" if self.latency == 0 else f"next bar open after {self.latency} ms"
        return (
            f"market orders at {at} + half-spread (else {self.slippage_bps:g} bps slippage); post-only limits at "
            f"the best bid/ask fill whole when the next bar trades strictly through them, within "
            f"{self.resting_volume_fraction:g} of its volume (kline rule, maker fee)"
        )

    def describe(self) -> str:
        """One line saying which fill model, latency, fees and filters this venue runs with (for every report)."""
        f = self.filters
        filters = "none" if f is None else f"tick {f.tick_size:g}, lot {f.lot_step:g}, min notional {f.min_notional:g}"  # type: ignore[union-attr]
        lev = f" {self.leverage:g}x" if self.kind == "perp" else ""
        return (
            f"venue {self.kind}{lev} ({self.fee_preset}{', BNB discount' if self.bnb_discount else ''}: taker "
            f"{self.fee * 100:.4f}%, maker {float(self.maker_fee) * 100:.4f}%); fills: {self.fill_model}; "  # type: ignore[arg-type]
            f"latency {self.latency} ms; filters: {filters}"
        )


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
    refusals : array [K] int64
        Orders the exchange filters refused since the last reset (below the minimum notional or the lot step).
    margin_lost : array [K] float64
        Margin left in the account at liquidations and taken by the exchange (its insurance fund) since the
        last reset.
    order_side : array [K] int8
        The resting post-only limit order: +1 a bid, -1 an ask, 0 none.
    order_price : array [K] float64
        Its limit price (0 when none).
    order_target : array [K] int8
        The position direction it moves to when it fills.
    order_queue : array [K] float64
        Tick fills: the quantity ahead of it at its price (``inf`` while the book has not shown the price).
    """

    cash: np.ndarray
    qty: np.ndarray
    entry_price: np.ndarray
    entry_step: np.ndarray
    fees: np.ndarray
    funding: np.ndarray
    trades: np.ndarray
    refusals: np.ndarray
    margin_lost: np.ndarray
    order_side: np.ndarray
    order_price: np.ndarray
    order_target: np.ndarray
    order_queue: np.ndarray

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
            refusals=np.zeros(k, dtype=np.int64),
            margin_lost=np.zeros(k),
            order_side=np.zeros(k, dtype=np.int8),
            order_price=np.zeros(k),
            order_target=np.zeros(k, dtype=np.int8),
            order_queue=np.zeros(k),
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
        self.refusals[idx] = 0
        self.margin_lost[idx] = 0.0
        self.order_side[idx] = 0
        self.order_price[idx] = 0.0
        self.order_target[idx] = 0
        self.order_queue[idx] = 0.0

    def copy(self) -> Accounts:
        """An independent copy of the books (e.g. to try an order on)."""
        return Accounts(*(np.array(getattr(self, name), copy=True) for name in self.__slots__))

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
    maker : array [K, 3] bool
        Whether the leg filled passively (a resting limit order: maker fee) rather than at market (taker fee).
    """

    qty: np.ndarray
    price: np.ndarray
    fee: np.ndarray
    maker: np.ndarray

    @classmethod
    def empty(cls, k: int) -> Fills:
        """No fills for K accounts."""
        return cls(qty=np.zeros((k, 3)), price=np.zeros((k, 3)), fee=np.zeros((k, 3)), maker=np.zeros((k, 3), bool))

    def clear(self) -> None:
        """Forget every fill (reuse the arrays)."""
        self.qty.fill(0.0)
        self.price.fill(0.0)
        self.fee.fill(0.0)
        self.maker.fill(False)

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
                        "maker": bool(self.maker[row, leg]),
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
        Half the quoted spread (quote units) known at the step; where given and finite it replaces
        ``slippage_bps`` (NaN: no quote known yet, the slippage applies).

    Returns
    -------
    (buy_price, sell_price) : arrays [K]
    """
    slip = slippage_bps * 1e-4
    if half_spread is None:
        return close * (1.0 + slip), close * (1.0 - slip)
    known = np.isfinite(half_spread)
    if known.all():
        return close + half_spread, close - half_spread
    return (
        np.where(known, close + half_spread, close * (1.0 + slip)),
        np.where(known, close - half_spread, close * (1.0 - slip)),
    )


def half_spread_at(book_tickers: np.ndarray, times_ms: np.ndarray) -> np.ndarray:
    """Half the quoted spread of the last book ticker at or before each time (NaN before the first one).

    The one reading of the bookTicker stream into a spread, used by the batch env and the live state alike.

    Parameters
    ----------
    book_tickers : BOOK_TICKER_DTYPE records in time order (``time_ms``, ``bid``, ``ask``)
    times_ms : array [T] int64
        E.g. the step times (a step knows the quotes up to its close time).
    """
    times_ms = np.asarray(times_ms, dtype=np.int64)
    out = np.full(times_ms.shape, np.nan)
    if book_tickers.size == 0:
        return out
    at = np.searchsorted(book_tickers["time_ms"], times_ms, side="right") - 1
    known = at >= 0
    rows = book_tickers[np.maximum(at, 0)]
    half = 0.5 * (rows["ask"] - rows["bid"])
    out[known] = np.maximum(half[known], 0.0)
    return out


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
    actions = np.asarray(actions)
    table = np.array([1, sell_to, 0], dtype=np.int8)
    out = table[np.minimum(actions, HOLD)]
    keep = actions >= HOLD  # hold, and the scalper's post and cancel actions: no market order
    out[keep] = np.asarray(direction)[keep]
    return out


@dataclass(frozen=True, slots=True)
class RestingOrders:
    """What the ``scalper`` actions ask of the resting orders, per account (arrays [K]).

    Attributes
    ----------
    post : array [K] int8
        +1 post a bid, -1 post an ask (each replaces the resting order), 0 nothing new.
    target : array [K] int8
        The direction a new post moves the position to when it fills.
    cancel : array [K] bool
        Cancel the resting order (CANCEL, or a market BUY/SELL, which takes over from it).
    """

    post: np.ndarray
    target: np.ndarray
    cancel: np.ndarray


def resting_orders(actions: np.ndarray, direction: np.ndarray, kind: str) -> RestingOrders:
    """The resting-order part of ``actions`` (:data:`POST_BID`, :data:`POST_ASK`, :data:`CANCEL`; market actions
    cancel): a bid moves toward long, an ask toward short (perp) or flat (spot); a post that would not move
    the position (a bid while long) is no post."""
    actions = np.asarray(actions)
    sell_to = 0 if kind == "spot" else -1
    target = np.where(actions == POST_BID, 1, np.where(actions == POST_ASK, sell_to, 0)).astype(np.int8)
    post = np.where(actions == POST_BID, 1, np.where(actions == POST_ASK, -1, 0)).astype(np.int8)
    post[target == np.asarray(direction)] = 0
    cancel = (actions == CANCEL) | (actions == BUY) | (actions == SELL) | (post != 0)
    return RestingOrders(post=post, target=target, cancel=cancel)


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
    fee: float | None = None,
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
    fee : float, optional
        The fee rate of these fills (the taker fee by default; the maker fee for a resting order's fill).

    Returns
    -------
    array [K] bool
        Accounts whose position changed (one order each). An account with no equity left cannot open.
    """
    current = np.sign(acc.qty)
    change = target != current
    fee = config.fee if fee is None else float(fee)
    closing = change & (current != 0)
    close_positions(acc, closing, buy_price, sell_price, fee, fills, CLOSE_LEG)
    # An account with nothing left to put up (equity <= 0, only reachable with ruin checks off) cannot open.
    opening = change & (target != 0) & (acc.cash > 0)
    if opening.any():
        price = np.where(target > 0, buy_price, sell_price)
        budget = config.position_fraction * np.maximum(acc.cash, 0.0)
        notional = budget / (1.0 / config.leverage + fee)
        dq = target * notional / price
        filters = config.filters
        if isinstance(filters, ExchangeFilters):
            # the lot step rounds down (never more than the budget); what is left under the minimum is refused
            dq = np.sign(dq) * np.floor(np.abs(dq) / filters.lot_step + 1e-9) * filters.lot_step
            refused = opening & ((dq == 0) | (np.abs(dq) * price < filters.min_notional))
            acc.refusals += refused
            opening = opening & ~refused
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


def liquidate(
    acc: Accounts,
    low: np.ndarray,
    high: np.ndarray,
    config: VenueConfig,
    fills: Fills,
    open_: np.ndarray | None = None,
) -> np.ndarray:
    """Liquidate the perp positions whose margin the bar's extreme breached; return where it happened.

    A long is checked at the bar's low and a short at its high, so a wick that closes back inside still
    liquidates. The position is closed at the worse of the liquidation price (where equity equals the
    maintenance margin) and the bar's open when the bar opened beyond it (a gap: no trade happened at the
    liquidation price), paying the taker fee; whatever margin is left then goes to the exchange (Binance's
    insurance-fund rule), recorded in ``acc.margin_lost``, and a loss beyond the equity (a gap past
    bankruptcy) is the insurance fund's too: the account ends with nothing, never negative. Spot positions
    are fully paid and never liquidated.

    Parameters
    ----------
    open_ : array [K], optional
        The bar's open (the first price after a gap); without it the fill is at the liquidation price.
    """
    if config.kind != "perp" or not acc.qty.any():
        return np.zeros(acc.qty.shape, dtype=bool)
    p_liq = liquidation_price(acc, config.maintenance_margin_rate)
    extreme = np.where(acc.qty > 0, low, high)
    equity = acc.cash + acc.qty * extreme
    hit = (acc.qty != 0) & (equity <= config.maintenance_margin_rate * np.abs(acc.qty) * extreme)
    if hit.any():
        price = p_liq
        if open_ is not None:
            price = np.where(acc.qty > 0, np.minimum(p_liq, open_), np.maximum(p_liq, open_))
        _fill(acc, fills, FORCED_LEG, hit, -acc.qty, np.where(hit, price, 0.0), config.fee)
        # what is left goes to the exchange; a deficit (a gap past bankruptcy) is the insurance fund's, not ours
        acc.margin_lost += np.where(hit, np.maximum(acc.cash, 0.0), 0.0)
        acc.cash[hit] = 0.0
        _flatten(acc, hit)
    return hit


def _flatten(acc: Accounts, mask: np.ndarray) -> None:
    """Mark the accounts ``mask`` flat (their fills already booked)."""
    acc.qty[mask] = 0.0
    acc.entry_price[mask] = 0.0
    acc.entry_step[mask] = -1


def close_positions(
    acc: Accounts,
    mask: np.ndarray,
    buy_price: np.ndarray,
    sell_price: np.ndarray,
    fee: float,
    fills: Fills,
    leg: int = FORCED_LEG,
) -> None:
    """Close the positions of accounts ``mask`` at market on ``leg`` (the forced leg, e.g. at an episode's end;
    the close leg of a change of position)."""
    mask = mask & (acc.qty != 0)
    if mask.any():
        price = np.where(acc.qty < 0, buy_price, sell_price)
        _fill(acc, fills, leg, mask, -acc.qty, price, fee)
        _flatten(acc, mask)


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


def round_to_ticks(buy_price: np.ndarray, sell_price: np.ndarray, config: VenueConfig) -> tuple[np.ndarray, np.ndarray]:
    """Fill prices on the exchange's tick (a buy rounded up, a sell down: never better than the quote)."""
    filters = config.filters
    if not isinstance(filters, ExchangeFilters):
        return buy_price, sell_price
    tick = filters.tick_size
    return np.ceil(buy_price / tick - 1e-9) * tick, np.floor(sell_price / tick + 1e-9) * tick


@dataclass(frozen=True, slots=True)
class StepMarket:
    """What the market did from the decision at step t to the next step t+1, per account (arrays [K]).

    Attributes
    ----------
    close : array [K]
        ``close[t]``, the last price the state at t knows (the fill base when ``latency_ms == 0``).
    half_spread : array [K] or None
        Half the quoted spread at t (NaN where no quote is known: the slippage applies).
    next_open, next_high, next_low, next_close : arrays [K]
        The base bar ending at t+1: its open (the first price after the decision), its extremes
        (liquidation) and its close (the mark).
    time_ms, next_time_ms : arrays [K] int64
        The times of t and t+1 (funding falls due in between).
    next_volume : array [K], optional
        The bar's traded volume (base units): caps what a resting order can fill; needed for resting orders.
    funding_rate : array [K] or float
        The funding rate applied when a funding time lies in ``(time_ms, next_time_ms]`` (perp).
    tape : TickTape, optional
        Tick fills (``fill_data: ticks``): the trades and quotes resting orders fill on, read only within
        ``(time_ms, next_time_ms]``; ``next_open`` and ``half_spread`` are then the first trade after the latency
        and the half-spread of that moment (``market.queue.arrival_prices``).
    """

    close: np.ndarray
    half_spread: np.ndarray | None
    next_open: np.ndarray
    next_high: np.ndarray
    next_low: np.ndarray
    next_close: np.ndarray
    time_ms: np.ndarray
    next_time_ms: np.ndarray
    funding_rate: np.ndarray | float = 0.0
    next_volume: np.ndarray | None = None
    tape: TickTape | None = None


@dataclass(frozen=True, slots=True)
class StepOutcome:
    """What one venue step did, per account (arrays [K]): orders, the direction held over the bar once they
    filled (before a liquidation closed it), liquidations and funding paid."""

    traded: np.ndarray
    held: np.ndarray
    liquidated: np.ndarray
    funding: np.ndarray


def order_prices(market: StepMarket, config: VenueConfig) -> tuple[np.ndarray, np.ndarray]:
    """Where a market buy and a market sell decided at t fill, under the venue's latency rule.

    ``latency_ms == 0``: ``close[t]``; otherwise the next bar's open (the first price the market offered
    after the order arrived), each plus or minus the half-spread known at t (the slippage where none is),
    on the exchange's tick when filters are set.
    """
    base = market.close if config.latency == 0 else market.next_open
    buy, sell = fill_prices(base, config.slippage_bps, market.half_spread)
    return round_to_ticks(buy, sell, config)


def step(
    acc: Accounts,
    target: np.ndarray,
    market: StepMarket,
    config: VenueConfig,
    fills: Fills,
    entry_step: np.ndarray | int,
    orders: RestingOrders | None = None,
) -> StepOutcome:
    """One venue step, in the one order the env, paper trading and evaluation share.

    1. Orders decided at t reach the market after the latency: cancels, then market orders (``target``
       directions, see :func:`target_direction`) fill at :func:`order_prices` (taker fee, exchange filters), then
       new post-only limits (``orders``) rest at the best bid / ask known at t, on the tick (refused, counted, when
       the next bar opens through them: they would have crossed); 2. a resting order fills whole at its price,
       paying the maker fee, when the bar ending at t+1 trades strictly through it (below a bid, above an ask) and
       its quantity is within ``resting_volume_fraction`` of the bar's volume, else it keeps resting; 3. the bar
       may liquidate a perp position on its extreme (at the worse of the liquidation price and the open after a
       gap); 4. a funding time in ``(t, t+1]`` charges funding on what is still open, marked at ``close[t+1]``.
       Equity is then ``acc.equity(market.next_close)``. Reads nothing after t+1.

    Parameters
    ----------
    acc : Accounts
        Updated in place.
    target : array [K] int in {-1, 0, 1}
    market : StepMarket
    config : VenueConfig
    fills : Fills
        Receives the step's legs (the caller clears it).
    entry_step : int or array [K]
        Recorded as the entry step of a position opened here.
    orders : RestingOrders, optional
        The ``scalper`` actions' posts and cancels; none with the ``market`` action set.
    """
    buy, sell = order_prices(market, config)
    k = acc.qty.shape[0]
    traded = np.zeros(k, dtype=bool)
    if orders is not None and market.tape is not None:
        # what rests already keeps filling until the new orders and cancels arrive; a hold then keeps what filled
        wanted = target != np.sign(acc.qty)
        arrive = np.asarray(market.time_ms) + config.latency
        traded = _queue_fills(acc, market.tape, market.time_ms, arrive, config, fills, entry_step)
        target = np.where(wanted, target, np.sign(acc.qty)).astype(np.int8)
    if orders is not None:
        _drop_orders(acc, orders.cancel & (acc.order_side != 0))
    traded |= rebalance(acc, target, buy, sell, config, entry_step, fills)
    if orders is not None:
        traded |= _rest(acc, orders, market, config, fills, entry_step)
    held = np.sign(acc.qty).astype(np.int8)
    if config.kind != "perp":
        return StepOutcome(traded, held, np.zeros(k, dtype=bool), np.zeros(k))
    liquidated = liquidate(acc, market.next_low, market.next_high, config, fills, market.next_open)
    _drop_orders(acc, liquidated & (acc.order_side != 0))  # a liquidation cancels the account's orders
    due = funding_due(market.time_ms, market.next_time_ms) & (acc.qty != 0)
    paid = charge_funding(acc, market.next_close, market.funding_rate, due)
    return StepOutcome(traded, held, liquidated, paid)


def _drop_orders(acc: Accounts, mask: np.ndarray) -> None:
    """Forget the resting orders of accounts ``mask`` (cancelled, filled or liquidated)."""
    acc.order_side[mask], acc.order_price[mask], acc.order_target[mask], acc.order_queue[mask] = 0, 0.0, 0, 0.0


def _post_prices(market: StepMarket, config: VenueConfig) -> tuple[np.ndarray, np.ndarray]:
    """The best bid and ask known at t, where new posts rest: the tape's quote on tick fills, else the close less
    and plus the half-spread (the slippage where no spread is known); on the tick, never better."""
    if market.tape is not None:
        bid, ask = market.tape.quote_at(market.time_ms)
    else:
        ask, bid = fill_prices(market.close, config.slippage_bps, market.half_spread)  # (buy at ask, sell at bid)
    filters = config.filters
    if isinstance(filters, ExchangeFilters):  # a bid rounds down to the tick, an ask up: never better
        tick = filters.tick_size
        bid, ask = np.floor(bid / tick + 1e-9) * tick, np.ceil(ask / tick - 1e-9) * tick
    return bid, ask


def _fill_resting(
    acc: Accounts, fill: np.ndarray, config: VenueConfig, fills: Fills, entry_step: np.ndarray | int
) -> np.ndarray:
    """Fill the resting orders of accounts ``fill`` whole at their limit price, paying the maker fee."""
    before = fills.qty.copy()
    target = np.where(fill, acc.order_target, np.sign(acc.qty)).astype(np.int8)
    maker = float(config.maker_fee)  # type: ignore[arg-type]
    price = np.where(fill, acc.order_price, 1.0)  # the others do not trade: any positive price keeps numpy quiet
    traded = rebalance(acc, target, price, price, config, entry_step, fills, fee=maker)
    fills.maker |= (fills.qty != before) & fill[:, None]
    _drop_orders(acc, fill)
    return traded & fill


def _queue_fills(
    acc: Accounts,
    tape: TickTape,
    since_ms: np.ndarray | int,
    until_ms: np.ndarray | int,
    config: VenueConfig,
    fills: Fills,
    entry_step: np.ndarray | int,
) -> np.ndarray:
    """Tick fills: run each resting order through the queue model over ``(since, until]``; return where one filled."""
    k = acc.qty.shape[0]
    fill = np.zeros(k, dtype=bool)
    resting = np.flatnonzero(acc.order_side != 0)
    if resting.size == 0:
        return fill
    since = np.broadcast_to(np.asarray(since_ms, dtype=np.int64), (k,))
    until = np.broadcast_to(np.asarray(until_ms, dtype=np.int64), (k,))
    for i in resting:
        side, price = int(acc.order_side[i]), float(acc.order_price[i])
        when, acc.order_queue[i] = queue_fill(tape, side, price, float(acc.order_queue[i]), since[i], until[i])
        fill[i] = when >= 0
    if not fill.any():
        return fill
    return _fill_resting(acc, fill, config, fills, entry_step)


def _rest(
    acc: Accounts,
    orders: RestingOrders,
    market: StepMarket,
    config: VenueConfig,
    fills: Fills,
    entry_step: np.ndarray | int,
) -> np.ndarray:
    """Place the new posts and fill the resting orders the market traded through; return where one filled."""
    new = orders.post != 0
    tape = market.tape
    arrive = np.asarray(market.time_ms) + config.latency
    if new.any():
        bid, ask = _post_prices(market, config)
        limit = np.where(orders.post > 0, bid, ask)
        crossed = new & ~np.isfinite(limit)  # no quote known yet: nowhere to rest
        if tape is not None:  # post-only: refused when the book on arrival would take it
            arrive_bid, arrive_ask = tape.quote_at(np.broadcast_to(arrive, limit.shape))
            crossed |= new & np.where(orders.post > 0, limit >= arrive_ask, limit <= arrive_bid)
        elif config.latency > 0:  # on arrival the market already traded at the limit: post-only rejects it
            crossed |= np.where(orders.post > 0, market.next_open <= limit, market.next_open >= limit) & new
        acc.refusals += crossed
        placed = new & ~crossed
        acc.order_side[placed] = orders.post[placed]
        acc.order_price[placed] = limit[placed]
        acc.order_target[placed] = orders.target[placed]
        if tape is not None:
            at = np.broadcast_to(arrive, limit.shape)
            for i in np.flatnonzero(placed):
                acc.order_queue[i] = queue_at_rest(tape, int(orders.post[i]), float(limit[i]), int(at[i]))
    if tape is not None:  # (t, arrival] already ran in step(), before the new orders arrived
        return _queue_fills(acc, tape, arrive, market.next_time_ms, config, fills, entry_step)
    resting = acc.order_side != 0
    if not resting.any():
        return np.zeros(acc.qty.shape, dtype=bool)
    if market.next_volume is None:
        raise ValueError("resting orders need the bar's volume (StepMarket.next_volume)")
    price = acc.order_price
    through = np.where(acc.order_side > 0, market.next_low < price, market.next_high > price) & resting
    # the whole order's quantity: the old position's close and the new one's open, at the limit price
    maker = float(config.maker_fee)  # type: ignore[arg-type]
    safe = np.where(price > 0, price, 1.0)
    left = acc.cash + acc.qty * safe - np.abs(acc.qty) * safe * maker
    opening = np.where(acc.order_target != 0, config.position_fraction * np.maximum(left, 0.0), 0.0)
    total = np.abs(acc.qty) + opening / (1.0 / config.leverage + maker) / safe
    fill = through & (total <= config.resting_volume_fraction * market.next_volume)
    if not fill.any():
        return fill
    return _fill_resting(acc, fill, config, fills, entry_step)
