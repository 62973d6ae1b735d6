"""Old import path of the acting helpers: ``policies.acting`` holds them now.

The single-process trainer is ``cluster/train_local.py`` (``rayscalp train --local``). This module only
re-exports, for callers not yet moved to ``policies.acting``; it is removed once none is left.
"""

from __future__ import annotations

from .acting import act, greedy_log_return

__all__ = ["act", "greedy_log_return"]
