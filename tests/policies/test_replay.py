"""Tests of policies/replay.py: prioritised sampling, weights, stale updates, exact totals, save/load.

Transitions here are synthetic (random numbers shaped like compact transitions); no market data.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from market.errors import ConfigError, DataError
from policies.config import ReplayConfig
from policies.replay import BetaSchedule, PrioritizedReplay, ReplayBatch
from policies.transitions import DTYPES, Transitions

HAS_CUDA = torch.cuda.is_available()
NO_CUDA = "no CUDA device (torch.cuda.is_available() is False)"
GPU = [pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA, reason=NO_CUDA)]
DEVICES = ["cpu", pytest.param("cuda", marks=GPU)]
DEVICE_PAIRS = [("cpu", "cpu"), pytest.param("cpu", "cuda", marks=GPU), pytest.param("cuda", "cpu", marks=GPU)]
A = 6
#: Batches of hundreds run faster on one thread than fanned out to cores other work is using.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def synthetic(n: int, seed: int = 0, start: int = 0, agent_dim: int = A) -> dict[str, np.ndarray]:
    """``n`` synthetic compact transitions (random fields, the right dtypes and ranges)."""
    rng = np.random.default_rng(seed)
    step = np.arange(start, start + n, dtype=np.int64)
    discount = np.where(rng.random(n) < 0.1, 0.0, 0.99**3).astype(np.float32)  # some terminations
    return {
        "step": step,
        "next_step": step + 3,
        "agent": rng.standard_normal((n, agent_dim)).astype(np.float32),
        "next_agent": rng.standard_normal((n, agent_dim)).astype(np.float32),
        "action": rng.integers(0, 3, n),
        "n_return": rng.standard_normal(n).astype(np.float32),
        "discount": discount,
    }


def leaves(replay: PrioritizedReplay) -> np.ndarray:
    return replay.tree.leaves[: replay.size].cpu().numpy()


def assert_same_batch(a: ReplayBatch, b: ReplayBatch, same_device: bool = True) -> None:
    """Bit-identical batches; across devices the weights may differ in the last ulp of ``pow``."""
    for name in Transitions.names():
        assert torch.equal(getattr(a.transitions, name).cpu(), getattr(b.transitions, name).cpu()), name
    for name in ("indices", "generations", "weights", "beta"):
        x, y = getattr(a, name), getattr(b, name)
        if name == "weights" and not same_device:
            torch.testing.assert_close(x.cpu(), y.cpu(), rtol=1e-6, atol=0)
        elif isinstance(x, torch.Tensor):
            assert torch.equal(x.cpu(), y.cpu()), name
        else:
            assert x == y, name


@pytest.mark.parametrize("device", DEVICES)
def test_sampling_frequencies_match_priorities_by_chi_square(device: str) -> None:
    n, batch, draws = 3000, 512, 600
    replay = PrioritizedReplay(n, A, device=device, seed=11)
    priorities = np.exp(np.random.default_rng(5).uniform(np.log(0.1), np.log(10.0), n))
    replay.add(Transitions(**synthetic(n)), priorities)
    counts = np.zeros(n)
    for _ in range(draws):
        counts += np.bincount(replay.sample(batch).indices.cpu().numpy(), minlength=n)
    probs = priorities**0.6 / np.sum(priorities**0.6)
    expected = probs * counts.sum()
    assert expected.min() >= 5  # the chi-square approximation holds
    assert chisquare(counts, expected).pvalue > 1e-3
    # The same counts against uniform frequencies are rejected: the test can tell them apart.
    assert chisquare(counts, np.full(n, counts.sum() / n)).pvalue < 1e-12


@pytest.mark.parametrize("device", DEVICES)
def test_importance_weights_equal_the_closed_form(device: str) -> None:
    n = 1000
    replay = PrioritizedReplay(n, A, device=device, alpha=0.6, seed=2)
    priorities = np.random.default_rng(1).uniform(0.01, 3.0, n)
    replay.add(Transitions(**synthetic(n)), priorities)
    batch = replay.sample(256, beta=0.7)
    p = priorities**0.6
    prob = p / p.sum()
    w_all = (n * prob) ** -0.7
    expected = w_all[batch.indices.cpu().numpy()] / w_all.max()
    np.testing.assert_allclose(batch.weights.cpu().numpy(), expected, rtol=2e-6)
    assert batch.weights.dtype == torch.float32 and batch.beta == 0.7


def test_beta_anneals_linearly_and_sampling_uses_the_schedule() -> None:
    replay = PrioritizedReplay(10, A, beta=BetaSchedule(0.4, 1.0, 100))
    replay.add(Transitions(**synthetic(10)))
    assert replay.beta == pytest.approx(0.4)
    assert replay.anneal_beta() == pytest.approx(0.406)
    assert replay.anneal_beta(50) == pytest.approx(0.7)
    assert replay.sample(4).beta == pytest.approx(0.7)
    assert replay.anneal_beta(10_000) == 1.0
    with pytest.raises(ConfigError, match="start"):
        BetaSchedule(start=1.5)


@pytest.mark.parametrize("device", DEVICES)
def test_updates_for_overwritten_slots_are_dropped_and_fresh_ones_applied(device: str) -> None:
    replay = PrioritizedReplay(8, A, device=device)
    replay.add(Transitions(**synthetic(8)), np.ones(8))
    idx = torch.arange(8, device=device)
    gens = replay.generations.index_select(0, idx).clone()
    replay.add(Transitions(**synthetic(3, seed=1, start=8)), np.full(3, 2.0))  # overwrites slots 0, 1, 2
    replay.update_priorities(idx, gens, torch.full((8,), 5.0, dtype=torch.float64))
    np.testing.assert_allclose(leaves(replay), [2.0**0.6] * 3 + [5.0**0.6] * 5)
    assert replay.dropped_updates == 3
    # The fresh generations of the overwritten slots are accepted.
    replay.update_priorities(idx[:3], replay.generations[:3].clone(), torch.full((3,), 7.0, dtype=torch.float64))
    np.testing.assert_allclose(leaves(replay)[:3], [7.0**0.6] * 3)
    assert replay.dropped_updates == 3


@pytest.mark.parametrize("device", DEVICES)
def test_a_repeated_slot_takes_its_last_fresh_priority(device: str) -> None:
    replay = PrioritizedReplay(4, A, device=device, alpha=1.0)
    replay.add(Transitions(**synthetic(4)), np.ones(4))
    gen = int(replay.generations[2])
    replay.update_priorities(
        torch.tensor([2, 1, 2, 2], device=device),
        torch.tensor([gen, gen, gen, gen - 1], dtype=torch.int32, device=device),  # the last is stale
        torch.tensor([3.0, 4.0, 6.0, 9.0], dtype=torch.float64, device=device),
    )
    np.testing.assert_allclose(leaves(replay), [1.0, 4.0, 6.0, 1.0])
    assert replay.dropped_updates == 1


@pytest.mark.parametrize("device", DEVICES)
def test_new_transitions_take_the_running_max_priority(device: str) -> None:
    replay = PrioritizedReplay(16, A, device=device, alpha=0.5)
    replay.add(Transitions(**synthetic(4)))
    np.testing.assert_allclose(leaves(replay), np.ones(4))  # the max starts at 1
    b = replay.sample(4)
    replay.update_priorities(b.indices, b.generations, torch.full((4,), 16.0, dtype=torch.float64))
    replay.add(Transitions(**synthetic(2, start=4)))
    np.testing.assert_allclose(leaves(replay)[4:], [4.0, 4.0])
    assert replay.max_priority == 4.0


@pytest.mark.parametrize("device", DEVICES)
def test_ring_overwrites_oldest_and_keeps_fields_exact(device: str) -> None:
    replay = PrioritizedReplay(5, A, device=device)
    first, second = synthetic(4, seed=1), synthetic(3, seed=2, start=100)
    replay.add(Transitions(**first))
    slots = replay.add(Transitions(**second))
    assert slots.tolist() == [4, 0, 1] and replay.size == 5 and replay.added == 7
    assert replay.generations.tolist() == [2, 2, 1, 1, 1]
    # Every slot is drawn at equal priority; read the fields back through sampling.
    batch = replay.sample(200)
    expect = {k: np.concatenate([second[k][1:], first[k][2:], second[k][:1]]) for k in first}
    i = batch.indices.cpu().numpy()
    for name in Transitions.names():  # every field of the one schema comes back exact, with its dtype
        got = getattr(batch.transitions, name).cpu().numpy()
        assert got.dtype == DTYPES[name], name
        np.testing.assert_array_equal(got, expect[name][i], err_msg=name)
    assert set(i.tolist()) == set(range(5))


@pytest.mark.parametrize("device", DEVICES)
def test_a_partly_filled_replay_never_samples_an_empty_slot(device: str) -> None:
    replay = PrioritizedReplay(1000, A, device=device, fanout=4)
    replay.add(Transitions(**synthetic(37)), np.linspace(0.1, 9.0, 37))
    for _ in range(20):
        assert int(replay.sample(512).indices.max()) < 37


@pytest.mark.parametrize("device", DEVICES)
def test_total_stays_exact_after_a_million_priority_updates(device: str) -> None:
    n = 50_000
    replay = PrioritizedReplay(n, A, device=device, seed=3)
    replay.add(Transitions(**synthetic(n)), np.full(n, 1.0))
    gen = torch.Generator().manual_seed(9)
    for _ in range(1000):  # 1000 batches of 1000 random slots, priorities over 12 orders of magnitude
        idx = torch.randint(0, n, (1000,), generator=gen)
        pri = torch.exp(torch.empty(1000, dtype=torch.float64).uniform_(-23.0, 23.0, generator=gen))
        replay.update_priorities(idx, replay.generations.index_select(0, idx.to(device)), pri)
    exact = math.fsum(leaves(replay).tolist())
    assert abs(float(replay.tree.total()) - exact) <= 1e-9 * exact
    assert float(replay.tree.min()) == leaves(replay).min()
    assert replay.dropped_updates == 0


@pytest.mark.parametrize(("src", "dst"), DEVICE_PAIRS)
def test_save_then_load_gives_an_identical_buffer_and_identical_samples(src: str, dst: str, tmp_path: Path) -> None:
    replay = PrioritizedReplay(300, A, device=src, beta=BetaSchedule(0.4, 1.0, 50), seed=4)
    replay.add(Transitions(**synthetic(400)), np.random.default_rng(0).uniform(0.1, 2.0, 400))
    for _ in range(5):
        b = replay.sample(64)
        replay.update_priorities(b.indices, b.generations, torch.rand(64, dtype=torch.float64) + 0.1)
        replay.anneal_beta()
    stale = replay.sample(8)
    replay.add(Transitions(**synthetic(300, seed=9, start=400)))  # every slot overwritten once more
    replay.update_priorities(stale.indices, stale.generations, torch.ones(8, dtype=torch.float64))
    replay.save(tmp_path / "replay.pt")
    loaded = PrioritizedReplay.load(tmp_path / "replay.pt", device=dst)

    assert loaded.device.type == dst
    assert torch.equal(loaded._rows.cpu(), replay._rows.cpu())
    assert torch.equal(loaded.generations.cpu(), replay.generations.cpu())
    for key, value in replay.tree.state_dict().items():
        assert torch.equal(loaded.tree.state_dict()[key].cpu(), value.cpu()), key
    assert (loaded.size, loaded.added, loaded.beta, loaded.dropped_updates, loaded.max_priority) == (
        replay.size,
        replay.added,
        replay.beta,
        replay.dropped_updates,
        replay.max_priority,
    )
    assert replay.dropped_updates == 8
    for _ in range(3):  # the same draws, then the same updates, then the same draws again
        a, b = replay.sample(32), loaded.sample(32)
        assert_same_batch(a, b, same_device=src == dst)
        pri = torch.rand(32, dtype=torch.float64) + 0.5
        replay.update_priorities(a.indices, a.generations, pri)
        loaded.update_priorities(b.indices, b.generations, pri)
    assert_same_batch(replay.sample(16), loaded.sample(16), same_device=src == dst)


def test_load_names_the_file_when_it_is_missing_or_corrupt(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        PrioritizedReplay.load(tmp_path / "absent.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(DataError, match="bad.pt is not readable"):
        PrioritizedReplay.load(tmp_path / "bad.pt")
    torch.save({"format": 99}, tmp_path / "old.pt")
    with pytest.raises(DataError, match="unknown format 99"):
        PrioritizedReplay.load(tmp_path / "old.pt")


@pytest.mark.parametrize("device", DEVICES)
def test_same_seed_gives_the_same_samples(device: str) -> None:
    def run(seed: int) -> list[int]:
        replay = PrioritizedReplay(500, A, device=device, seed=seed)
        replay.add(Transitions(**synthetic(500)), np.linspace(0.1, 5.0, 500))
        return replay.sample(128).indices.tolist() + replay.sample(128).indices.tolist()

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_memory_is_under_150_bytes_per_transition_at_a_million() -> None:
    replay = PrioritizedReplay(1_000_000, A)
    mem = replay.memory_bytes()
    assert mem.total_bytes == mem.storage_bytes + mem.tree_bytes + mem.generation_bytes
    assert mem.generation_bytes == 4 * 1_000_000
    assert mem.storage_bytes == (32 + 8 * A - 4) * 1_000_000  # the packed row less its generation word
    assert mem.bytes_per_transition < 150
    assert 2 * 15_794 * 4 / mem.bytes_per_transition > 1000  # vs two float32 states of 15,794 floats


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("agent", np.full((4, A), np.nan, np.float32), "agent finite"),
        ("discount", np.full(4, 1.5, np.float32), "0 <= discount <= 1"),
        ("action", np.full(4, 3), "0 <= action < 3"),
        ("next_step", np.zeros(4, np.int64) - 1, "next_step >= step"),
        ("n_return", np.zeros(5, np.float32), r"n_return has shape \(5,\), expected \(4,\)"),
        ("next_agent", np.zeros((4, A + 1), np.float32), "next_agent has shape"),
    ],
)
def test_add_rejects_bad_input_naming_the_field(field: str, value: np.ndarray, message: str) -> None:
    replay = PrioritizedReplay(10, A)
    data = synthetic(4)
    data[field] = value
    with pytest.raises(DataError, match=message):
        replay.add(Transitions(**data))
    assert replay.size == 0
    with pytest.raises(DataError, match="priorities finite and > 0"):
        replay.add(Transitions(**synthetic(4)), np.array([1.0, 0.0, 1.0, 1.0]))


def test_update_rejects_bad_priorities_and_slots_outside_the_filled_ring() -> None:
    replay = PrioritizedReplay(10, A)
    replay.add(Transitions(**synthetic(4)))
    gens = torch.ones(2, dtype=torch.int32)
    with pytest.raises(DataError, match="finite and > 0"):
        replay.update_priorities(torch.tensor([0, 1]), gens, torch.tensor([1.0, float("nan")]))
    with pytest.raises(DataError, match=r"outside the filled slots \[0, 4\)"):
        replay.update_priorities(torch.tensor([0, 4]), gens, torch.tensor([1.0, 1.0]))
    with pytest.raises(DataError, match="equal 1-d shapes"):
        replay.update_priorities(torch.tensor([0, 1]), gens[:1], torch.tensor([1.0, 1.0]))
    with pytest.raises(DataError, match="empty"):
        PrioritizedReplay(10, A).sample(4)


@pytest.mark.skipif(HAS_CUDA, reason="checks the error raised where CUDA is absent")
def test_asking_for_cuda_without_it_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="CUDA is not available"):
        PrioritizedReplay(10, A, device="cuda")
    assert PrioritizedReplay(10, A, device="auto").device.type == "cpu"


def test_from_config_takes_capacity_alpha_and_beta_range() -> None:
    cfg = ReplayConfig(capacity=64, alpha=0.5, beta_start=0.5, beta_end=0.9)
    replay = PrioritizedReplay.from_config(cfg, A, beta_steps=10)
    assert (replay.capacity, replay.alpha, replay.beta) == (64, 0.5, 0.5)
    assert replay.anneal_beta(10) == pytest.approx(0.9)


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("add"), st.integers(1, 20), st.booleans()),
            st.tuples(st.just("update"), st.integers(1, 12), st.booleans()),
        ),
        min_size=1,
        max_size=25,
    ),
    seed=st.integers(0, 2**16),
)
def test_random_adds_and_updates_match_a_plain_reference(
    device: str, ops: list[tuple[str, int, bool]], seed: int
) -> None:
    """A ring of 7 slots against a plain Python model: leaves, generations, max priority, drops."""
    capacity, alpha = 7, 0.5
    replay = PrioritizedReplay(capacity, 2, device=device, alpha=alpha, fanout=2, seed=seed)
    rng = np.random.default_rng(seed)
    prio, gens, ptr, size, max_p, dropped = [0.0] * capacity, [0] * capacity, 0, 0, 1.0, 0
    for kind, n, flag in ops:
        if kind == "add":
            given_p = rng.uniform(0.1, 9.0, n) if flag else None
            replay.add(Transitions(**synthetic(n, seed=seed, agent_dim=2)), given_p)
            for i in range(n):
                slot = (ptr + i) % capacity
                prio[slot] = max_p if given_p is None else given_p[i] ** alpha
                gens[slot] += 1
            if given_p is not None:
                max_p = max(max_p, *(given_p**alpha))
            ptr, size = (ptr + n) % capacity, min(capacity, size + n)
        elif size:
            idx = rng.integers(0, size, n)
            stale = rng.random(n) < 0.3 if flag else np.zeros(n, bool)
            sent_gens = np.array([gens[i] for i in idx]) - stale
            new_p = rng.uniform(0.1, 9.0, n)
            replay.update_priorities(torch.tensor(idx), torch.tensor(sent_gens, dtype=torch.int32), new_p)
            for i, g, p in zip(idx, sent_gens, new_p, strict=True):  # in order: the last fresh one wins
                if g == gens[i]:
                    prio[i] = p**alpha
                    max_p = max(max_p, p**alpha)
                else:
                    dropped += 1
    np.testing.assert_allclose(replay.tree.leaves.cpu().numpy(), prio, rtol=1e-12)
    assert replay.generations.tolist() == gens
    assert (replay.size, replay.dropped_updates) == (size, dropped)
    assert replay.max_priority == pytest.approx(max_p, rel=1e-12)
    if size:
        assert float(replay.tree.total()) == pytest.approx(sum(prio), rel=1e-12)
        assert float(replay.tree.min()) == float(replay.tree.leaves[:size].min())
        assert float(replay.tree.min()) == pytest.approx(min(prio[:size]), rel=1e-12)  # numpy's pow


def test_add_takes_only_the_one_transition_schema() -> None:
    replay = PrioritizedReplay(10, A)
    with pytest.raises(DataError, match="expected Transitions, got dict"):
        replay.add(synthetic(4))  # type: ignore[arg-type]
    assert replay.size == 0


def test_priority_eps_comes_from_the_config_and_a_replay_saved_before_it_loads_with_the_old_fixed_value(
    tmp_path: Path,
) -> None:
    replay = PrioritizedReplay.from_config(ReplayConfig(capacity=16, priority_eps=1e-3), A, beta_steps=10)
    assert replay.priority_eps == 1e-3
    replay.add(Transitions(**synthetic(4)))
    replay.save(tmp_path / "replay.pt")
    assert PrioritizedReplay.load(tmp_path / "replay.pt").priority_eps == 1e-3
    state = torch.load(tmp_path / "replay.pt", weights_only=True)
    del state["config"]["priority_eps"]  # what a replay saved before the schema held
    torch.save(state, tmp_path / "old.pt")
    old = PrioritizedReplay.load(tmp_path / "old.pt")
    assert old.priority_eps == 1e-6 and old.size == 4
    assert torch.equal(old.sample(8).transitions.step, replay.sample(8).transitions.step)
    with pytest.raises(ConfigError, match="priority_eps"):
        PrioritizedReplay(4, A, priority_eps=0.0)
