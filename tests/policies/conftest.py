"""Fixtures of the torch tests: one intra-op thread where a module asks for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """Torch on one intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_torch_thread")``):
    batches of hundreds run faster on one thread than fanned out to cores other work is using."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
