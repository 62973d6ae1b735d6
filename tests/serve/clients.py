"""HTTP clients that keep asking a served app while it reloads: what each client saw, and no failed request.

Used by the reload tests of the CNN and policy apps; what a test asserts about the versions stays in the test.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

requests = pytest.importorskip("requests")

#: Posts client ``i``'s request on ``session`` and returns the response.
Ask = Callable[["requests.Session", int], "requests.Response"]
#: Reads client ``i``'s 200 response: the version it names, and whether the answer is that version's model.
Read = Callable[[int, "requests.Response"], tuple[str, bool]]


def clients_through_reload(
    ask: Ask, read: Read, reload: Callable[[], None], new: str, clients: int = 8
) -> dict[int, list[str]]:
    """``clients`` threads ask in a loop while ``reload()`` runs; returns the versions each client saw, in order.

    ``reload()`` starts once every client has had 5 answers; the clients stop once each one's last 5 answers all
    name ``new`` (or after 60 s). Fails if a request failed, was not a 200, or was answered by a model other than the
    one its version names (a swap must never mix two checkpoints).
    """
    stop = threading.Event()
    seen: dict[int, list[str]] = {i: [] for i in range(clients)}
    failures: list[str] = []
    mismatched: list[str] = []

    def client(i: int) -> None:
        with requests.Session() as session:
            while not stop.is_set():
                try:
                    r = ask(session, i)
                except requests.RequestException as exc:
                    failures.append(f"client {i}: {exc!r}")
                    continue
                if r.status_code != 200:
                    failures.append(f"client {i}: HTTP {r.status_code} {r.text[:200]}")
                    continue
                version, matches = read(i, r)
                seen[i].append(version)
                if not matches:
                    mismatched.append(f"client {i}: answer is not {version}'s")

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + 30
        while min(len(v) for v in seen.values()) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        reload()
        deadline = time.monotonic() + 60
        while min(v[-5:].count(new) if v else 0 for v in seen.values()) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert not failures, failures[:5]
    assert not mismatched, mismatched[:5]
    return seen
