"""Tests of policies/sum_tree.py: prefix search, last-write-wins, exact totals, on CPU and CUDA."""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from market.errors import ConfigError
from policies import sum_tree_kernel
from policies.sum_tree import SumMinTree

_NO_CUDA = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device (torch.cuda.is_available() is False)"),
]
_NO_NUMBA = pytest.mark.skipif(not sum_tree_kernel.kernels(), reason="numba does not import here")
# "device" or "device:backend": every backend of the tree runs every test ("cpu" alone is numba where it imports).
DEVICES = [
    "cpu:torch",
    pytest.param("cpu:numba", marks=_NO_NUMBA),
    "cpu:flat",
    pytest.param("cuda", marks=_NO_CUDA),
    pytest.param("cuda:torch", marks=_NO_CUDA),
]


def torch_device(case: str) -> str:
    """The torch device of a test case ``device[:backend]``."""
    return case.split(":")[0]


def backend_of(case: str) -> str:
    """The tree backend of a test case ``device[:backend]`` (``auto`` when none is named)."""
    return case.split(":")[1] if ":" in case else "auto"


# Shapes that give a flat top only, one K-level under the top, and several.
SHAPES = st.sampled_from([(2, 1), (2, 8), (4, 4), (16, 4096), (16, 16), (32, 2)])
#: Batches of hundreds run faster on one thread than fanned out to cores other work is using.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tree(values: np.ndarray, fanout: int, top_width: int, device: str) -> SumMinTree:
    tree = SumMinTree(len(values), fanout, torch_device(device), top_width=top_width, backend=backend_of(device))
    tree.set(
        torch.arange(len(values), device=torch_device(device)),
        torch.tensor(values, device=torch_device(device)),
        unique=True,
    )
    return tree


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=150, deadline=None)
@given(
    priorities=st.lists(st.integers(0, 2**20), min_size=1, max_size=300).filter(any),
    fractions=st.lists(st.floats(0.0, 1.0, exclude_max=True), min_size=1, max_size=64),
    shape=SHAPES,
)
def test_prefix_search_returns_the_leaf_whose_interval_holds_the_mass(
    device: str, priorities: list[int], fractions: list[float], shape: tuple[int, int]
) -> None:
    # Integer priorities keep every sum exact, so the expected leaf is unambiguous: the first leaf
    # whose inclusive prefix sum exceeds the mass (which also skips every zero leaf).
    values = np.asarray(priorities, dtype=np.float64)
    tree = _tree(values, *shape, device)
    prefix = np.cumsum(values)
    masses = np.asarray(fractions) * prefix[-1]
    masses = np.concatenate([masses, prefix[:-1], [0.0]])  # the exact edges too
    masses = masses[masses < prefix[-1]]  # a fraction just under 1 can round the product up to the total
    got = tree.find_prefix(torch.tensor(masses, device=torch_device(device))).cpu().numpy()
    np.testing.assert_array_equal(got, np.searchsorted(prefix, masses, side="right"))
    assert (values[got] > 0).all()


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=100, deadline=None)
@given(
    exponents=st.lists(st.floats(-30.0, 30.0), min_size=1, max_size=300),
    fractions=st.lists(st.floats(0.0, 1.0, exclude_max=True), min_size=1, max_size=64),
    shape=SHAPES,
)
def test_prefix_search_on_float_priorities_lands_within_rounding_of_the_interval(
    device: str, exponents: list[float], fractions: list[float], shape: tuple[int, int]
) -> None:
    values = np.exp2(np.asarray(exponents))
    tree = _tree(values, *shape, device)
    masses = np.asarray(fractions) * float(tree.total())
    masses = masses[masses < float(tree.total())]
    got = tree.find_prefix(torch.tensor(masses, device=torch_device(device)), limit=len(values)).cpu().numpy()
    lo = np.concatenate([[0.0], np.cumsum(values)])
    slack = 1e-12 * lo[-1]
    assert ((got >= 0) & (got < len(values))).all()
    assert (lo[got] - slack <= masses).all()
    assert (masses < lo[got + 1] + slack).all()


@pytest.mark.parametrize("device", DEVICES)
@settings(max_examples=100, deadline=None)
@given(
    writes=st.lists(st.tuples(st.integers(0, 39), st.integers(1, 1000), st.booleans()), min_size=1, max_size=80),
)
def test_repeated_indices_resolve_to_the_last_applied_write(device: str, writes: list[tuple[int, int, bool]]) -> None:
    expected = np.arange(1, 41, dtype=np.float64)
    tree = _tree(expected.copy(), 4, 2, device)
    for slot, value, applied in writes:  # the plain sequential meaning of a batch of writes
        if applied:
            expected[slot] = value
    idx, vals, apply = zip(*writes, strict=True)
    tree.set(
        torch.tensor(idx, device=torch_device(device)),
        torch.tensor(vals, dtype=torch.float64, device=torch_device(device)),
        apply=torch.tensor(apply, device=torch_device(device)),
    )
    np.testing.assert_array_equal(tree.leaves.cpu().numpy(), expected)
    assert float(tree.total()) == expected.sum()
    assert float(tree.min()) == expected.min()


@pytest.mark.parametrize("device", DEVICES)
def test_totals_stay_exact_after_a_million_random_updates(device: str) -> None:
    capacity, fanout = 131_072, 16  # leaves -> 8,192 -> 512 (top): two K-levels under the top
    rng = np.random.default_rng(7)
    tree = _tree(rng.uniform(1.0, 2.0, capacity), fanout, 4096, device)
    gen = torch.Generator(device="cpu").manual_seed(7)
    for _ in range(1000):  # 1000 batches of 1000, values spanning 17 orders of magnitude
        idx = torch.randint(0, capacity, (1000,), generator=gen)
        vals = torch.exp(torch.empty(1000, dtype=torch.float64).uniform_(-20.0, 20.0, generator=gen))
        tree.set(idx.to(torch_device(device)), vals.to(torch_device(device)))
    leaves = tree.leaves.cpu().numpy()
    exact = math.fsum(leaves.tolist())
    assert abs(float(tree.total()) - exact) <= 1e-9 * exact
    assert float(tree.min()) == leaves.min()
    rebuilt = _tree(leaves, fanout, 4096, device)
    for lvl in range(1, tree.depth + 1):  # every inner node equals a rebuild from the leaves
        torch.testing.assert_close(tree.sums[lvl], rebuilt.sums[lvl], rtol=1e-12, atol=0)
        torch.testing.assert_close(tree.mins[lvl], rebuilt.mins[lvl], rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_leaves_are_ignored_by_min_and_total(device: str) -> None:
    tree = SumMinTree(100, 4, torch_device(device), top_width=4, backend=backend_of(device))
    assert float(tree.total()) == 0.0 and math.isinf(float(tree.min()))
    tree.set(
        torch.tensor([3, 70], device=torch_device(device)),
        torch.tensor([2.5, 0.5], dtype=torch.float64, device=torch_device(device)),
    )
    assert float(tree.total()) == 3.0 and float(tree.min()) == 0.5
    tree.set(
        torch.tensor([70], device=torch_device(device)),
        torch.tensor([0.0], dtype=torch.float64, device=torch_device(device)),
    )
    assert float(tree.total()) == 2.5 and float(tree.min()) == 2.5
    masses = torch.tensor([0.0, 1.0, 2.4999], dtype=torch.float64, device=torch_device(device))
    assert tree.find_prefix(masses).tolist() == [3, 3, 3]


@pytest.mark.parametrize("device", DEVICES)
def test_state_dict_round_trip_restores_every_level(device: str) -> None:
    rng = np.random.default_rng(3)
    tree = _tree(rng.uniform(0.1, 5.0, 5000), 8, 64, device)
    copy = SumMinTree(5000, 8, torch_device(device), top_width=64, backend=backend_of(device))
    copy.load_state_dict(tree.state_dict())
    for a, b in zip(tree.sums + tree.mins, copy.sums + copy.mins, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(tree.total(), copy.total()) and torch.equal(tree.min(), copy.min())
    with pytest.raises(ConfigError, match="tree state .sum_1.: expected"):
        other = SumMinTree(5000, 16, torch_device(device), top_width=64, backend=backend_of(device))
        other.load_state_dict(tree.state_dict())


@pytest.mark.parametrize("fanout", [0, 3, 2048])
def test_fanout_must_be_a_power_of_two(fanout: int) -> None:
    with pytest.raises(ConfigError, match=f"got {fanout}"):
        SumMinTree(10, fanout)


@pytest.mark.parametrize("device", DEVICES)
def test_a_mass_rounded_up_to_the_total_lands_on_the_last_filled_leaf_under_a_limit(device: str) -> None:
    # 37 filled leaves of 1,000: a mass at the total (what rounding can produce) would fall into the
    # empty tail; the ring's limit brings it back to the last filled leaf.
    tree = SumMinTree(1000, 4, torch_device(device), top_width=4, backend=backend_of(device))
    tree.set(
        torch.arange(37, device=torch_device(device)),
        torch.linspace(0.1, 3.0, 37, dtype=torch.float64, device=torch_device(device)),
    )
    at_total = tree.total().reshape(1).repeat(3)
    assert tree.find_prefix(at_total, limit=37).tolist() == [36, 36, 36]


@pytest.mark.skipif(not sum_tree_kernel.kernels(), reason="numba does not import here")
@settings(max_examples=100, deadline=None)
@given(
    exponents=st.lists(st.floats(-30.0, 30.0), min_size=1, max_size=400),
    writes=st.lists(st.tuples(st.integers(0, 399), st.floats(-30.0, 30.0), st.booleans()), max_size=120),
    fractions=st.lists(st.floats(0.0, 1.0, exclude_max=True), min_size=1, max_size=64),
    shape=SHAPES,
    integer=st.booleans(),
)
def test_compiled_and_flat_backends_equal_the_torch_reference(
    exponents: list[float],
    writes: list[tuple[int, float, bool]],
    fractions: list[float],
    shape: tuple[int, int],
    integer: bool,
) -> None:
    values = np.exp2(np.asarray(exponents))
    if integer:  # every sum exact: all backends agree bit for bit, searches included
        values = np.floor(values % 2**20)
    n = len(values)
    trees = {b: _tree(values, *shape, f"cpu:{b}") for b in ("torch", "numba", "flat")}
    slots = [w[0] % n for w in writes]
    new = np.exp2([w[1] for w in writes])
    if integer:
        new = np.floor(new % 2**20)
    for tree in trees.values():
        if writes:
            tree.set(
                torch.tensor(slots), torch.tensor(new, dtype=torch.float64), apply=torch.tensor([w[2] for w in writes])
            )
    ref, compiled = trees["torch"], trees["numba"]
    # Leaves (last applied write wins) and mins are exact on every backend; inner sums agree to rounding.
    for other in (compiled, trees["flat"]):
        assert torch.equal(other.leaves, ref.leaves)
        for lvl in range(1, ref.depth + 1):
            assert torch.equal(other.mins[lvl], ref.mins[lvl])
            torch.testing.assert_close(other.sums[lvl], ref.sums[lvl], rtol=1e-12, atol=0)
        assert torch.equal(other.min(), ref.min())
        torch.testing.assert_close(other.total(), ref.total(), rtol=1e-12, atol=0)
    total = float(ref.total())
    if total == 0:
        return
    masses = torch.tensor([f * total for f in fractions if f * total < total], dtype=torch.float64)
    # The compiled descent is the reference's arithmetic: on the same tree it returns the same leaves.
    mirror = SumMinTree(n, shape[0], top_width=shape[1], backend="numba")
    mirror.load_state_dict(ref.state_dict())
    assert torch.equal(mirror.find_prefix(masses, limit=n), ref.find_prefix(masses, limit=n))
    if integer:
        expected = ref.find_prefix(masses, limit=n)
        assert torch.equal(compiled.find_prefix(masses, limit=n), expected)
        assert torch.equal(trees["flat"].find_prefix(masses, limit=n), expected)
    else:
        leaves = ref.leaves.numpy()
        lo = np.concatenate([[0.0], np.cumsum(leaves)])
        slack = 1e-12 * lo[-1]
        for tree in (compiled, trees["flat"]):
            got = tree.find_prefix(masses, limit=n).numpy()
            assert ((got >= 0) & (got < n)).all()
            assert (lo[got] - slack <= masses.numpy()).all() and (masses.numpy() < lo[got + 1] + slack).all()


def test_auto_backend_is_compiled_on_cpu_where_numba_imports_and_numba_refuses_cuda() -> None:
    expected = "numba" if sum_tree_kernel.kernels() else "torch"
    assert SumMinTree(10, 4).backend == expected
    with pytest.raises(ConfigError, match="backend must be one of"):
        SumMinTree(10, 4, backend="fast")
    if torch.cuda.is_available():
        assert SumMinTree(10, 4, "cuda").backend == "flat"
        with pytest.raises(ConfigError, match="CPU only"):
            SumMinTree(10, 4, "cuda", backend="numba")


def test_without_numba_the_auto_backend_is_the_torch_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba now raises ImportError
    monkeypatch.setitem(sum_tree_kernel._state, "kernels", None)
    tree = SumMinTree(100, 4, top_width=4)
    assert tree.backend == "torch"
    tree.set(torch.arange(100), torch.arange(1, 101, dtype=torch.float64), unique=True)
    assert float(tree.total()) == 5050.0
    with pytest.raises(ConfigError, match="needs numba"):
        SumMinTree(100, 4, backend="numba")
