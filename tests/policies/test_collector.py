"""The collector emits exactly the n-step transitions of each env's trajectory, whatever the interleaving."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.collector import TransitionCollector
from policies.nstep import nstep_transitions


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(1, 4), n=st.integers(1, 4), length=st.integers(1, 40))
def test_collector_equals_nstep_over_each_whole_episode(seed: int, k: int, n: int, length: int) -> None:
    rng = np.random.default_rng(seed)
    gamma = 0.9
    collector = TransitionCollector(k, 2, n, gamma)
    episodes = [[] for _ in range(k)]  # per env: list of finished episodes
    current = [[] for _ in range(k)]
    emitted = []
    step_of = rng.integers(0, 1000, k)
    for _t in range(length):
        steps = step_of.copy()
        agents = rng.normal(size=(k, 2)).astype(np.float32)
        actions = rng.integers(0, 3, k)
        rewards = rng.normal(size=k)
        term = rng.random(k) < 0.08
        trunc = ~term & (rng.random(k) < 0.08)
        next_steps = steps + 1
        next_agents = rng.normal(size=(k, 2)).astype(np.float32)
        for i in range(k):
            current[i].append(
                (steps[i], agents[i], actions[i], rewards[i], term[i], trunc[i], next_steps[i], next_agents[i])
            )
            if term[i] or trunc[i]:
                episodes[i].append(current[i])
                current[i] = []
        made = collector.record(steps, agents, actions, rewards, term, trunc, next_steps, next_agents)
        if made is not None:
            emitted.append(made)
        step_of = np.where(term | trunc, rng.integers(0, 1000, k), next_steps)
    got = {}
    for batch in emitted:
        for j in range(len(batch)):
            got.setdefault(int(batch.step[j]), []).append(
                (float(batch.n_return[j]), float(batch.discount[j]), int(batch.next_step[j]))
            )
    expected = {}
    for i in range(k):
        for ep in episodes[i]:
            steps = np.array([e[0] for e in ep])
            ref = nstep_transitions(
                steps,
                np.stack([e[1] for e in ep]),
                np.array([e[2] for e in ep]),
                np.array([e[3] for e in ep]),
                int(ep[-1][6]),
                ep[-1][7],
                terminated=bool(ep[-1][4]),
                gamma=gamma,
                n=n,
            )
            for j in range(len(ref)):
                expected.setdefault(int(ref.step[j]), []).append(
                    (float(ref.n_return[j]), float(ref.discount[j]), int(ref.next_step[j]))
                )
        # an unfinished episode emits only the entries whose full n-step return is known
        unfinished = current[i]
        for j in range(max(0, len(unfinished) - n + 1)):
            r = sum(gamma**m * unfinished[j + m][3] for m in range(n))
            expected.setdefault(int(unfinished[j][0]), []).append(
                (float(np.float32(r)), float(np.float32(gamma**n)), int(unfinished[j + n - 1][6]))
            )
    assert sorted(got) == sorted(expected)
    for key in got:
        a, b = sorted(got[key]), sorted(expected[key])
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-6)
