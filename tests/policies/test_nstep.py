"""n-step returns equal a plain computation; termination and truncation are handled differently."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.nstep import nstep_transitions


def plain(rewards: list[float], gamma: float, n: int, terminated: bool) -> tuple[list[float], list[float], list[int]]:
    """The textbook definition, written as plainly as possible."""
    length = len(rewards)
    returns, discounts, boots = [], [], []
    for i in range(length):
        total, k = 0.0, 0
        while k < n and i + k < length:
            total += gamma**k * rewards[i + k]
            k += 1
        returns.append(total)
        ends_in_window = i + k == length
        discounts.append(0.0 if (terminated and ends_in_window) else gamma**k)
        boots.append(i + k)
    return returns, discounts, boots


@settings(max_examples=200)
@given(
    rewards=st.lists(st.floats(-1, 1, allow_nan=False), min_size=1, max_size=30),
    gamma=st.floats(0.5, 1.0),
    n=st.integers(1, 6),
    ending=st.sampled_from(["terminated", "truncated", "running"]),
)
def test_nstep_returns_equal_the_plain_definition(rewards: list[float], gamma: float, n: int, ending: str) -> None:
    length = len(rewards)
    steps = np.arange(100, 100 + length)
    agents = np.arange(length * 2, dtype=np.float32).reshape(length, 2)
    out = nstep_transitions(
        steps,
        agents,
        np.zeros(length, np.int64),
        np.array(rewards),
        100 + length,
        np.array([-1.0, -2.0], np.float32),
        terminated=ending == "terminated",
        gamma=gamma,
        n=n,
    )
    returns, discounts, boots = plain(rewards, gamma, n, ending == "terminated")
    np.testing.assert_allclose(out.n_return, returns, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.discount, discounts, rtol=1e-6)
    np.testing.assert_array_equal(out.next_step, 100 + np.array(boots))


def test_truncation_keeps_the_bootstrap_and_termination_drops_it() -> None:
    kwargs = dict(
        steps=np.arange(3),
        agents=np.zeros((3, 1), np.float32),
        actions=np.zeros(3, np.int64),
        rewards=np.ones(3),
        next_step_last=3,
        next_agent_last=np.zeros(1, np.float32),
        gamma=0.9,
        n=2,
    )
    term = nstep_transitions(terminated=True, **kwargs)
    trunc = nstep_transitions(terminated=False, **kwargs)
    np.testing.assert_allclose(term.discount, [0.81, 0.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(trunc.discount, [0.81, 0.81, 0.9], rtol=1e-6)
    np.testing.assert_allclose(term.n_return, trunc.n_return)
