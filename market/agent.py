"""The agent's own features: what the state says about the account at a step (``market.layout.AGENT_FEATURES``).

One definition, read by the env for its observations and by paper trading for the live state, so that a policy
sees in paper trading the features it was trained with. Reads the books and the close at the step only.
"""

from __future__ import annotations

import numpy as np

from .layout import AGENT_FEATURES
from .venue import Accounts

__all__ = ["agent_features"]


def agent_features(
    acc: Accounts,
    step: np.ndarray | int,
    price: np.ndarray | float,
    initial_equity: float,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """The agent features of accounts ``rows`` (all when None) at ``step`` and ``price``, float32 [K, 6].

    ``position`` the direction (-1, 0, +1); ``entry_rel`` ``log(price / entry)`` (0 flat); ``unrealised_pnl``
    ``qty (price - entry) / equity``; ``log_time_in_trade`` ``log1p`` of steps since the entry (0 flat);
    ``episode_log_return`` ``log(equity / initial)``; ``fees_paid_frac`` fees / initial.

    Parameters
    ----------
    acc : Accounts
    step : int or array [K]
        The current base step of each selected account.
    price : float or array [K]
        The close at that step.
    initial_equity : float
        The equity the accounts started with.
    rows : array of int, optional
        Which accounts.
    """
    sel = slice(None) if rows is None else rows
    qty, entry, cash = acc.qty[sel], acc.entry_price[sel], acc.cash[sel]
    k = qty.shape[0]
    t = np.broadcast_to(np.asarray(step, dtype=np.int64), (k,))
    price = np.broadcast_to(np.asarray(price, dtype=np.float64), (k,))
    equity = cash + qty * price
    held = qty != 0
    safe_entry = np.where(held, entry, price)
    safe_equity = np.maximum(equity, 1e-12)
    out = np.empty((k, len(AGENT_FEATURES)), dtype=np.float32)
    out[:, 0] = np.sign(qty)
    out[:, 1] = np.where(held, np.log(price / safe_entry), 0.0)
    out[:, 2] = qty * (price - safe_entry) / safe_equity
    out[:, 3] = np.where(held, np.log1p(np.maximum(t - acc.entry_step[sel], 0)), 0.0)
    out[:, 4] = np.log(safe_equity / initial_equity)
    out[:, 5] = acc.fees[sel] / initial_equity
    return out
