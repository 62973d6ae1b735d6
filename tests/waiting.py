"""Waiting in tests on real actors and services: poll a condition until it holds or a deadline passes."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_until(predicate: Callable[[], object], timeout_s: float = 60.0, what: str = "") -> object:
    """Call ``predicate`` every 0.2 s until it returns something truthy, and return that.

    An exception counts as not ready yet (an actor restarting); after ``timeout_s`` the test fails, naming ``what``
    it waited for and the last answer or exception.
    """
    deadline = time.monotonic() + timeout_s
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except Exception as exc:  # not ready yet
            last = exc
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}: last {last!r}")
