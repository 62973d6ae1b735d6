"""Shared fixtures: the real-data folder (skips with a reason when absent) and the Ray environment.

Markers: a test that reaches the session Ray (``ray_session``, directly or through a fixture) is marked ``ray``,
one that drives Chromium is marked ``browser``; ``make test-fast`` deselects both and ``slow``, and runs with
``RAY_ADDRESS`` pointing at a closed port, so an unmarked test that starts Ray fails instead of slowing it down.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
# Two shared cores: torch's OpenMP threads spin-wait against each other and every other process (measured
# 17x slower small steps with 2 threads under load), so tests run torch single-threaded.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

REPO_ROOT = Path(__file__).resolve().parents[1]

# Modules whose tests start Ray themselves (a private head, the demo, a training driver) rather than through
# the ``ray_session`` fixture.
RAY_MODULES = frozenset({"test_submit", "test_monitoring", "test_demo", "test_train"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark Ray and browser tests by what they use, so the fast subset never needs either."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        module = item.module.__name__.rsplit(".", 1)[-1] if getattr(item, "module", None) else ""
        if "ray_session" in fixtures or module in RAY_MODULES:
            item.add_marker(pytest.mark.ray)
        if "chromium" in fixtures:
            item.add_marker(pytest.mark.browser)

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ``../shared/data``; skips the test when the folder is absent (a user's fresh machine)."""
    if not (SHARED_DATA / "binance").is_dir():
        pytest.skip(f"real Binance data not present at {SHARED_DATA} (it sits beside the repo in CI only)")
    return SHARED_DATA

# CI runs each property on the same examples every time (a failure there is reproducible, never flaky);
# locally hypothesis explores new examples on every run.
from hypothesis import settings  # noqa: E402

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(scope="session")
def ray_session():
    """One real local Ray for the whole test session (2 cores: light actors ask for num_cpus=0)."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(
            num_cpus=4,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            namespace="rayscalp-tests",
        )
    yield ray
    # Serve, if a module started it, is shut down by that module; Ray goes with the session.
    ray.shutdown()
