"""Round trips from a venue's fills: each closed trade's net PnL (after fees and funding), holding time and outcome.

Owns turning per-leg fills (``market.venue.LEGS``) into closed trades, the realised equity they add up to, and
the trade-outcome features of the last trades. Reads only the fills and funding it is handed, in the order
they happened, so nothing it reports depends on a later fill. numpy only: never imports torch or Ray.
"""

from __future__ import annotations

from collections import deque
from dataclasses import astuple, dataclass
from typing import Any

import numpy as np

from .errors import DataError
from .venue import CLOSE_LEG, FORCED_LEG, OPEN_LEG

#: Names of :meth:`TradeLedger.outcome_features`, in order (``LAST_TRADES`` = 3 recent trades).
LAST_TRADES = 3
OUTCOME_FEATURES: tuple[str, ...] = (
    *(f"net_return_{i}" for i in range(1, LAST_TRADES + 1)),
    *(f"log_holding_{i}" for i in range(1, LAST_TRADES + 1)),
    "win_rate",
    "mean_net_return",
    "drawdown",
    "trade_count",
)
#: A position this small (relative to its largest size) is flat: the venue closes with ``-qty`` exactly, this
#: only absorbs a caller that sums partial closes.
_FLAT_RTOL = 1e-9
#: The open position's state, in the order :meth:`TradeLedger.state_dict` saves it under ``"open"``.
_OPEN_FIELDS = (
    "qty",
    "_peak_qty",
    "_cash",
    "_fees",
    "_funding",
    "_margin_lost",
    "_open_step",
    "_direction",
    "_in_qty",
    "_in_notional",
    "_out_qty",
    "_out_notional",
    "_equity_at_open",
)


@dataclass(frozen=True, slots=True)
class ClosedTrade:
    """One round trip, from the fill that opened a position to the one that brought it back to flat.

    Attributes
    ----------
    open_step, close_step : int
        Step counters (the caller's) of the opening and the closing fill.
    direction : int
        +1 long, -1 short.
    qty : float
        The largest absolute position held (base units).
    entry_price, exit_price : float
        Volume-weighted prices of the fills that opened (increased) and closed (reduced) it.
    fees : float
        Fees of all its fills (quote).
    funding : float
        Funding paid while it was open (quote; negative when received).
    margin_lost : float
        Margin a liquidation handed to the exchange beyond the closing fill (``market.venue.liquidate``; negative
        when the insurance fund took a loss past the account's equity).
    net_pnl : float
        ``-sum(dq * price) - fees - funding - margin_lost`` over its fills: the change of the account's cash it
        caused.
    equity_at_open : float
        Realised equity (start equity plus earlier trades' net PnL) when it opened.
    """

    open_step: int
    close_step: int
    direction: int
    qty: float
    entry_price: float
    exit_price: float
    fees: float
    funding: float
    margin_lost: float
    net_pnl: float
    equity_at_open: float

    @property
    def holding_steps(self) -> int:
        """Steps between the opening and the closing fill."""
        return self.close_step - self.open_step

    @property
    def net_return(self) -> float:
        """``net_pnl / equity_at_open`` (0 when that equity is not positive)."""
        return self.net_pnl / self.equity_at_open if self.equity_at_open > 0 else 0.0


class TradeLedger:
    """Follows one account's fills and funding and records each closed trade.

    Parameters
    ----------
    initial_equity : float
        The account's equity before its first trade (the base of returns and drawdown).
    history : int
        How many closed trades are kept (the most recent).

    Notes
    -----
    Feed it every fill of the account, from whatever sent it (the policy, a risk limit, a liquidation, the
    close at an episode's end): a trade's PnL is only right when all its fills are seen. A single fill that
    crosses zero closes the trade and opens the next one with the rest, its fee split by quantity.
    """

    def __init__(self, initial_equity: float, history: int = 64) -> None:
        if not np.isfinite(initial_equity) or initial_equity <= 0:
            raise DataError(f"TradeLedger: initial_equity must be a positive finite number (got {initial_equity!r})")
        if history < 1:
            raise DataError(f"TradeLedger: history must be >= 1 (got {history})")
        self.initial_equity = float(initial_equity)
        self.trades: deque[ClosedTrade] = deque(maxlen=int(history))
        self.reset()

    def reset(self) -> None:
        """Forget everything: flat, no trades, realised equity back to the initial equity."""
        self.trades.clear()
        self.realised_equity = self.initial_equity
        self.peak_equity = self.initial_equity
        self.closed_count = 0
        #: Funding charged while flat (no trade to carry it), kept so nothing is silently lost.
        self.unattributed_funding = 0.0
        self._clear_open()

    def drop_open(self) -> None:
        """Forget the open position without closing it (an episode ended with it open: it realised nothing)."""
        self._clear_open()

    def _clear_open(self) -> None:
        self.qty = 0.0
        self._peak_qty = 0.0
        self._cash = 0.0
        self._fees = 0.0
        self._funding = 0.0
        self._margin_lost = 0.0
        self._open_step = -1
        self._direction = 0
        self._in_qty = self._in_notional = 0.0
        self._out_qty = self._out_notional = 0.0
        self._equity_at_open = self.realised_equity

    @property
    def is_open(self) -> bool:
        """Whether a position is open."""
        return self.qty != 0.0

    @property
    def direction(self) -> int:
        """-1, 0 or +1."""
        return int(np.sign(self.qty))

    @property
    def drawdown(self) -> float:
        """Realised drawdown: ``(peak - realised) / peak`` of the closed-trade equity curve (>= 0)."""
        return (self.peak_equity - self.realised_equity) / self.peak_equity if self.peak_equity > 0 else 0.0

    def fill(self, step: int, dq: float, price: float, fee: float) -> list[ClosedTrade]:
        """Apply one fill of signed ``dq`` base units at ``price`` paying ``fee``; return the trades it closed."""
        dq, price, fee = float(dq), float(price), float(fee)
        if dq == 0.0:
            return []
        if not (np.isfinite(dq) and np.isfinite(price) and np.isfinite(fee)) or price <= 0 or fee < 0:
            raise DataError(f"TradeLedger: fill at step {step} is not a valid fill (dq={dq}, price={price}, fee={fee})")
        if self.qty == 0.0 or np.sign(dq) == np.sign(self.qty):
            self._add(step, dq, price, fee)
            return []
        closing = min(abs(dq), abs(self.qty))
        part = closing / abs(dq)
        self._reduce(float(np.sign(dq)) * closing, price, fee * part)
        closed: list[ClosedTrade] = []
        if abs(self.qty) <= _FLAT_RTOL * self._peak_qty:
            closed.append(self._close(step))
        rest = dq - float(np.sign(dq)) * closing
        if rest != 0.0 and abs(rest) > _FLAT_RTOL * abs(dq):
            self._add(step, rest, price, fee * (1.0 - part))
        return closed

    def charge_funding(self, paid: float) -> None:
        """Funding paid this step (negative when received): carried by the open trade, if any."""
        paid = float(paid)
        if not np.isfinite(paid):
            raise DataError(f"TradeLedger: funding {paid!r} is not finite")
        if self.qty != 0.0:
            self._funding += paid
        else:
            self.unattributed_funding += paid

    def observe_legs(
        self,
        step: int,
        qty: np.ndarray,
        price: np.ndarray,
        fee: np.ndarray,
        funding: float = 0.0,
        margin_lost: float = 0.0,
    ) -> list[ClosedTrade]:
        """One venue step's fills per leg (``market.venue.LEGS``: close, open, forced), its funding and margin lost.

        Applied in the venue's order: the close and open legs (the orders decided at the step), then funding
        on what is still open, then the forced leg (a liquidation, whose position is then not charged funding,
        or the close at an episode's end, which comes after funding) with the margin a liquidation lost.

        Parameters
        ----------
        step : int
        qty, price, fee : arrays [3]
            A row of ``market.venue.Fills`` (or the env's ``fill_qty`` / ``fill_price`` / ``fill_fee``);
            ``qty == 0`` is no fill on that leg.
        funding : float
            The step's funding (the env's ``step_funding``).
        margin_lost : float
            What the step's liquidation handed to the exchange (the step's change of ``Accounts.margin_lost``);
            charged to the trade the forced leg closes.
        """
        qty, price, fee = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (qty, price, fee))
        if not qty.shape == price.shape == fee.shape == (3,):
            raise DataError(f"TradeLedger: legs must be 3 values each (got {qty.shape}, {price.shape}, {fee.shape})")
        closed = []
        for leg in (CLOSE_LEG, OPEN_LEG):
            closed += self.fill(step, qty[leg], price[leg], fee[leg])
        self.charge_funding(funding)
        margin_lost = float(margin_lost)
        if not np.isfinite(margin_lost):
            raise DataError(f"TradeLedger: margin_lost {margin_lost!r} at step {step} is not finite")
        if margin_lost != 0.0:
            if self.qty == 0.0 or qty[FORCED_LEG] == 0.0:
                raise DataError(f"TradeLedger: margin_lost {margin_lost} at step {step} without a forced close")
            self._margin_lost += margin_lost
        closed += self.fill(step, qty[FORCED_LEG], price[FORCED_LEG], fee[FORCED_LEG])
        return closed

    def _add(self, step: int, dq: float, price: float, fee: float) -> None:
        if self.qty == 0.0:
            self._clear_open()
            self._open_step = int(step)
            self._direction = 1 if dq > 0 else -1
        self.qty += dq
        self._peak_qty = max(self._peak_qty, abs(self.qty))
        self._cash -= dq * price
        self._fees += fee
        self._in_qty += abs(dq)
        self._in_notional += abs(dq) * price

    def _reduce(self, dq: float, price: float, fee: float) -> None:
        self.qty += dq
        self._cash -= dq * price
        self._fees += fee
        self._out_qty += abs(dq)
        self._out_notional += abs(dq) * price

    def _close(self, step: int) -> ClosedTrade:
        net = self._cash - self._fees - self._funding - self._margin_lost
        trade = ClosedTrade(
            open_step=self._open_step,
            close_step=int(step),
            direction=self._direction,
            qty=self._peak_qty,
            entry_price=self._in_notional / self._in_qty,
            exit_price=self._out_notional / self._out_qty,
            fees=self._fees,
            funding=self._funding,
            margin_lost=self._margin_lost,
            net_pnl=net,
            equity_at_open=self._equity_at_open,
        )
        self.trades.append(trade)
        self.closed_count += 1
        self.realised_equity += net
        self.peak_equity = max(self.peak_equity, self.realised_equity)
        self._clear_open()
        return trade

    def outcome_features(self, window: int, return_unit: float, holding_unit: float) -> np.ndarray:
        """The trade-outcome features (:data:`OUTCOME_FEATURES`) of the trades closed so far, float32.

        Parameters
        ----------
        window : int
            How many recent trades the win rate, mean return and count look at.
        return_unit : float
            A net return of ``return_unit`` reads as 1 (returns and drawdown are divided by it, clipped to +-10).
        holding_unit : float
            ``log1p(holding steps) / log1p(holding_unit)``: a holding of ``holding_unit`` steps reads as 1.

        Notes
        -----
        Missing trades (fewer than :data:`LAST_TRADES` so far) read as 0; ``trade_count`` (recent trades over
        ``window``) tells them apart from break-even trades, and the win rate of no trades is 0.
        """
        out = np.zeros(len(OUTCOME_FEATURES), dtype=np.float32)
        recent = list(self.trades)[-window:]
        for i, trade in enumerate(reversed(recent[-LAST_TRADES:])):
            out[i] = np.clip(trade.net_return / return_unit, -10.0, 10.0)
            out[LAST_TRADES + i] = np.log1p(trade.holding_steps) / np.log1p(holding_unit)
        k = 2 * LAST_TRADES
        if recent:
            out[k] = np.mean([t.net_pnl > 0 for t in recent])
            out[k + 1] = np.clip(np.mean([t.net_return for t in recent]) / return_unit, -10.0, 10.0)
        out[k + 2] = min(self.drawdown / return_unit, 10.0)
        out[k + 3] = len(recent) / window
        return out

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue exactly where it is (plain Python values)."""
        return {
            "initial_equity": self.initial_equity,
            "trades": [astuple(t) for t in self.trades],
            "realised_equity": self.realised_equity,
            "peak_equity": self.peak_equity,
            "closed_count": self.closed_count,
            "unattributed_funding": self.unattributed_funding,
            "open": [getattr(self, name) for name in _OPEN_FIELDS],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved."""
        try:
            trades = [ClosedTrade(*row) for row in state["trades"]]
            opened = [float(v) for v in state["open"]]
            if len(opened) != len(_OPEN_FIELDS):
                raise ValueError(f"open has {len(opened)} values, expected {len(_OPEN_FIELDS)}")
            self.initial_equity = float(state["initial_equity"])
            realised, peak = float(state["realised_equity"]), float(state["peak_equity"])
            count, unattributed = int(state["closed_count"]), float(state["unattributed_funding"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"TradeLedger state: {type(exc).__name__}: {exc}") from exc
        self.trades.clear()
        self.trades.extend(trades)
        self.realised_equity, self.peak_equity = realised, peak
        self.closed_count, self.unattributed_funding = count, unattributed
        for name, value in zip(_OPEN_FIELDS, opened, strict=True):
            setattr(self, name, value)
        self._open_step = int(self._open_step)
        self._direction = int(self._direction)
