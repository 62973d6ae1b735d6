"""Seeds: derived by name, stable, distinct per component, never shifted by adding another."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from market.seeding import derive_rng, derive_seed


def test_derived_seed_is_stable_across_calls_and_known_value() -> None:
    # A fixed value guards against the derivation silently changing between versions (old runs' seeds).
    assert derive_seed(0, "learner") == 113081434668256301
    assert derive_seed(0, "learner") != derive_seed(1, "learner")


@given(st.integers(0, 2**62), st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=3, unique=True))
def test_components_get_distinct_seeds_in_range(run_seed: int, names: list[str]) -> None:
    seeds = [derive_seed(run_seed, name) for name in names]
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= s < 2**63 for s in seeds)


def test_rng_streams_reproduce() -> None:
    a = derive_rng(5, "rollout", 0).random(4)
    b = derive_rng(5, "rollout", 0).random(4)
    c = derive_rng(5, "rollout", 1).random(4)
    assert (a == b).all() and not (a == c).all()


def test_negative_run_seed_is_refused() -> None:
    with pytest.raises(ValueError, match="must be >= 0"):
        derive_seed(-1, "x")
