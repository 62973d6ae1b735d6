"""Risk limits of paper trading and its kill switch: what an order may do, decided before it fills.

Pure logic on the venue's own books (``market.venue``): a proposed order is tried on a copy of the account
with the venue's ``rebalance`` and refused, or cut down to a close, when the result would break a limit.
Never fills anything itself, never reads a clock (times are the steps' times), never loosens a limit.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import Field

from market.config import StrictModel
from market.errors import ConfigError
from market.venue import Accounts, Fills, VenueConfig, rebalance

__all__ = ["DAY_MS", "LIMITS", "RiskConfig", "RiskManager", "RiskState", "Verdict"]

#: The limits, in the order they are checked; each is also a tag of ``rayscalp_paper_risk_limit_trips``.
LIMITS: tuple[str, ...] = ("kill_switch", "max_daily_loss", "max_orders_per_minute", "max_position", "max_leverage")
DAY_MS = 86_400_000
_MINUTE_MS = 60_000


class RiskConfig(StrictModel):
    """Limits on paper trading; ``None`` switches a limit off.

    Attributes
    ----------
    max_position : float, optional
        Largest absolute position in base units (ETH) an order may leave.
    max_leverage : float, optional
        Largest position notional over equity an order may leave, both at the step's close.
    max_daily_loss : float, optional
        Quote units (USDT) of equity the account may lose from its equity at the first step of the UTC
        day; beyond it the position is closed at once and nothing opens until the next day.
    max_orders_per_minute : int, optional
        Policy orders (steps that change the position) allowed in any 60 s; more are refused. Closes forced
        by the kill switch or the daily loss do not count and are never refused.
    """

    max_position: float | None = Field(None, gt=0.0)
    max_leverage: float | None = Field(None, gt=0.0)
    max_daily_loss: float | None = Field(None, gt=0.0)
    max_orders_per_minute: int | None = Field(None, ge=1, le=100_000)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the risk manager allows of one proposed order.

    Attributes
    ----------
    target : int
        The direction the account may move to (-1, 0, 1): the one asked, the current one (refused), or 0
        (only the close of an order that reversed the position).
    limit : str or None
        The limit that changed the order (one of :data:`LIMITS`), or None when it goes as asked.
    reason : str
        Why, in words, with the numbers.
    """

    target: int
    limit: str | None = None
    reason: str = ""


@dataclass(slots=True)
class RiskState:
    """What the risk manager remembers (persisted with the account).

    Attributes
    ----------
    day : int
        UTC day (ms // 86,400,000) of the last step seen; -1 before the first.
    day_start_equity : float
        Equity at the first step of that day.
    daily_locked : bool
        The daily loss limit tripped today: nothing opens until the next day.
    order_times_ms : deque of int
        Step times of the policy orders of the last minute.
    kill_engaged, kill_reason, kill_at_ms
        The kill switch: engaged (trading stopped), why, and when (-1: never).
    trips : dict of limit -> int
        Orders refused or cut, and positions closed, per limit.
    """

    day: int = -1
    day_start_equity: float = float("nan")
    daily_locked: bool = False
    order_times_ms: deque[int] = field(default_factory=deque)
    kill_engaged: bool = False
    kill_reason: str = ""
    kill_at_ms: int = -1
    trips: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LIMITS, 0))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (floats are written exactly by orjson)."""
        return {
            "day": self.day,
            "day_start_equity": self.day_start_equity,
            "daily_locked": self.daily_locked,
            "order_times_ms": list(self.order_times_ms),
            "kill_engaged": self.kill_engaged,
            "kill_reason": self.kill_reason,
            "kill_at_ms": self.kill_at_ms,
            "trips": dict(self.trips),
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "risk state") -> RiskState:
        """Read :meth:`to_dict`'s form back.

        Raises
        ------
        ConfigError
            A key is missing or has the wrong type (the message names ``source`` and the key).
        """
        try:
            trips = dict.fromkeys(LIMITS, 0)
            trips.update({str(k): int(v) for k, v in raw["trips"].items()})
            equity = raw["day_start_equity"]
            return cls(
                day=int(raw["day"]),
                day_start_equity=float("nan") if equity is None else float(equity),
                daily_locked=bool(raw["daily_locked"]),
                order_times_ms=deque(int(t) for t in raw["order_times_ms"]),
                kill_engaged=bool(raw["kill_engaged"]),
                kill_reason=str(raw["kill_reason"]),
                kill_at_ms=int(raw["kill_at_ms"]),
                trips=trips,
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{source}: unreadable risk state ({type(exc).__name__}: {exc})") from None


def _copy(acc: Accounts) -> Accounts:
    return acc.copy()


class RiskManager:
    """Checks proposed orders of one account against :class:`RiskConfig` and holds the kill switch.

    Parameters
    ----------
    config : RiskConfig
    venue : VenueConfig
        How orders fill (the trial of an order is the venue's ``rebalance`` on a copy of the account).
    state : RiskState, optional
        Restored state; a fresh one when omitted.
    """

    def __init__(self, config: RiskConfig, venue: VenueConfig, state: RiskState | None = None) -> None:
        self.config = config
        self.venue = venue
        self.state = state or RiskState()

    def _trip(self, limit: str) -> None:
        self.state.trips[limit] = self.state.trips.get(limit, 0) + 1

    # -- per step ------------------------------------------------------------------------------------

    def start_step(self, time_ms: int, equity: float) -> bool:
        """Mark the step at ``time_ms`` with the account's ``equity`` (at that step's close).

        A new UTC day resets the daily reference and lock. Returns True when the daily loss limit trips
        now: the caller closes the position (a forced close) and nothing opens until the next day.
        """
        st = self.state
        day = int(time_ms) // DAY_MS
        if day != st.day:
            st.day = day
            st.day_start_equity = float(equity)
            st.daily_locked = False
        while st.order_times_ms and st.order_times_ms[0] <= time_ms - _MINUTE_MS:
            st.order_times_ms.popleft()
        limit = self.config.max_daily_loss
        if limit is not None and not st.daily_locked and equity < st.day_start_equity - limit:
            st.daily_locked = True
            self._trip("max_daily_loss")
            return True
        return False

    def leverage_drifted(self, acc: Accounts, mark: float) -> bool:
        """True when the held position's leverage at ``mark`` has drifted past ``max_leverage``.

        Orders are reviewed when they are sent; a held perp position's leverage still grows as the price moves
        against it. The caller de-risks by closing the position; each drift counts as a ``max_leverage`` trip.
        """
        limit = self.config.max_leverage
        if limit is None or acc.qty[0] == 0 or float(acc.leverage(mark)[0]) <= limit:
            return False
        self._trip("max_leverage")
        return True

    def daily_loss(self, equity: float) -> float:
        """Equity lost since the first step of the day (negative when up)."""
        return float(self.state.day_start_equity - equity)

    def orders_last_minute(self) -> int:
        """Policy orders in the minute up to the last step seen."""
        return len(self.state.order_times_ms)

    # -- orders --------------------------------------------------------------------------------------

    def review(
        self,
        acc: Accounts,
        target: int,
        buy_price: float,
        sell_price: float,
        mark: float,
        step: int,
        time_ms: int,
    ) -> Verdict:
        """Decide what a policy order towards direction ``target`` may do (row 0 of ``acc``).

        Checked in :data:`LIMITS` order: the kill switch and the daily lock let nothing open; the order
        rate refuses the order; a position or leverage beyond its limit (tried with the venue's
        ``rebalance`` on a copy of the account, at these prices) refuses the new position, which cuts an
        order that reverses the position down to its close.
        """
        st = self.state
        current = int(np.sign(acc.qty[0]))
        target = int(target)
        if target == current:
            return Verdict(target)
        if st.kill_engaged:
            self._trip("kill_switch")
            return Verdict(current, "kill_switch", f"kill switch engaged ({st.kill_reason})")
        if st.daily_locked and target != 0:
            self._trip("max_daily_loss")
            allowed = 0 if current != 0 else current
            return Verdict(allowed, "max_daily_loss", "daily loss limit reached: only closes until the next UTC day")
        per_minute = self.config.max_orders_per_minute
        if per_minute is not None and len(st.order_times_ms) >= per_minute:
            self._trip("max_orders_per_minute")
            return Verdict(current, "max_orders_per_minute", f"{len(st.order_times_ms)} orders in the last minute")
        if target != 0 and (self.config.max_position is not None or self.config.max_leverage is not None):
            trial = _copy(acc)
            rebalance(
                trial,
                np.array([target], dtype=np.int8),
                np.array([buy_price]),
                np.array([sell_price]),
                self.venue,
                step,
                Fills.empty(1),
            )
            qty = abs(float(trial.qty[0]))
            leverage = float(trial.leverage(mark)[0])
            broken = None
            if self.config.max_position is not None and qty > self.config.max_position:
                broken = ("max_position", f"position {qty:.8g} > max_position {self.config.max_position:g}")
            elif self.config.max_leverage is not None and leverage > self.config.max_leverage:
                broken = ("max_leverage", f"leverage {leverage:.6g} > max_leverage {self.config.max_leverage:g}")
            if broken is not None:
                self._trip(broken[0])
                return Verdict(0 if current != 0 else current, broken[0], broken[1])
        return Verdict(target)

    def record_order(self, time_ms: int) -> None:
        """Count a policy order that filled at the step at ``time_ms``."""
        self.state.order_times_ms.append(int(time_ms))

    # -- kill switch ---------------------------------------------------------------------------------

    def engage(self, reason: str, time_ms: int) -> bool:
        """Engage the kill switch (the caller flattens); return False when it already was."""
        st = self.state
        if st.kill_engaged:
            return False
        st.kill_engaged = True
        st.kill_reason = reason or "no reason given"
        st.kill_at_ms = int(time_ms)
        self._trip("kill_switch")
        return True

    def release(self) -> bool:
        """Release the kill switch (trading resumes at the next step); return False when it was not engaged."""
        st = self.state
        if not st.kill_engaged:
            return False
        st.kill_engaged = False
        st.kill_reason = ""
        return True
