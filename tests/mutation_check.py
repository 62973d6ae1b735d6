"""Mutation check of the causality tests: inject one-step look-aheads and show each one caught by a named test.

Copies the working tree to a temporary folder (beside a link to ``../shared/data``), applies one mutation at a
time to the copy and runs the tests that must catch it; the tree itself is never touched. Hypothesis runs
derandomised and without shrinking there, so a caught mutation fails fast.

    .venv/bin/python tests/mutation_check.py            # every mutation
    .venv/bin/python tests/mutation_check.py --only regime

Exit status 0 when the unmutated tests pass and every mutation makes its test fail; 1 otherwise (a mutation
that survives, or whose code site has changed and no longer matches, is named).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

BUILDER_LONG = (
    "tests/market/test_timeline_builder.py::"
    "test_changing_bars_after_the_cut_leaves_every_state_up_to_it_unchanged_on_a_long_market_with_1d"
)
BUILDER_PREFIX = (
    "tests/market/test_timeline_builder.py::"
    "test_a_timeline_built_on_a_prefix_of_the_real_1m_data_equals_the_whole_ones_prefix"
)
ENV_LONG = (
    "tests/market/test_env_causality.py::"
    "test_what_step_returns_after_acting_at_t_ignores_everything_after_t_plus_1_on_a_long_market_with_1d"
)
#: A fill is checked against what the market offered by the closed forms of the env's returns (a fill at a later
#: price reads no data after t + 1, so the causality property cannot see it).
ENV_FILL = "tests/market/test_env.py::test_spot_buy_and_hold_return_is_its_closed_form"
CNN_STATS = "tests/policies/test_cnn_training.py::test_cnn_input_statistics_come_from_the_training_steps_only"

#: Appended to the copy's conftest: examples drawn the same way every run, and no shrinking of a failure.
_PROFILE = """

from hypothesis import Phase as _Phase
from hypothesis import settings as _settings

_settings.register_profile("mutation", derandomize=True, phases=(_Phase.explicit, _Phase.reuse, _Phase.generate))
_settings.load_profile("mutation")
"""


@dataclass(frozen=True, slots=True)
class Mutation:
    """One injected look-ahead: replace ``old`` by ``new`` in ``path``; ``tests`` must fail."""

    name: str
    what: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


MUTATIONS: tuple[Mutation, ...] = (
    Mutation(
        "forming-bar",
        "the forming higher-timeframe bar closes at the next base step's close",
        "market/timeline_builder.py",
        '    close = base["close"].copy()\n    valid = group',
        '    close = np.r_[base["close"][1:], base["close"][-1:]]\n    valid = group',
        (BUILDER_LONG, BUILDER_PREFIX),
    ),
    Mutation(
        "higher-tf-indicators",
        "the forming bar's indicators (1h/1d RSI, MACD, %b) read the next step's close",
        "market/timeline_builder.py",
        '"close": c, "volume": v}',
        '"close": np.r_[c[1:], c[-1:]], "volume": v}',
        (BUILDER_LONG, BUILDER_PREFIX),
    ),
    Mutation(
        "regime",
        "the regime's trend t-statistics are those of the next step",
        "market/regime.py",
        'out[col[f"trend_tstat_{key}"]] = np.tanh(z / 2.0)',
        'out[col[f"trend_tstat_{key}"]] = np.r_[np.tanh(z / 2.0)[1:], 0.0]',
        (BUILDER_LONG, BUILDER_PREFIX),
    ),
    Mutation(
        "williams-confirmation",
        "a swing is confirmed one bar before its s-th bar to the right has closed",
        "market/pivots.py",
        "series_h.confirm[ph + s])",
        "series_h.confirm[ph + s - 1])",
        (BUILDER_LONG, BUILDER_PREFIX),
    ),
    Mutation(
        "fill-price",
        "with no latency a market order fills at the next step's close instead of the close it was decided at",
        "market/venue.py",
        "base = market.close if config.latency == 0 else market.next_open",
        "base = market.next_close if config.latency == 0 else market.next_open",
        (ENV_FILL,),
    ),
    Mutation(
        "reward-mark",
        "the step's equity and reward are marked at the close one step after t + 1",
        "market/env.py",
        "        mark = self.close[t1]\n",
        "        mark = self.close[np.minimum(t1 + 1, self.n_steps - 1)]\n",
        (ENV_LONG,),
    ),
    Mutation(
        "cnn-input-statistics",
        "the CNN's input statistics are taken over every step of the timeline (evaluation span included)",
        "policies/cnn_training.py",
        "pick = np.sort(rng.choice(train.steps,",
        "pick = np.sort(rng.choice(np.arange(timeline.n_steps),",
        (CNN_STATS,),
    ),
)


def _copy_tree(dest: Path) -> Path:
    """The working tree under ``dest/main`` and ``dest/shared`` linked to the real data (tests find it there)."""
    root = dest / "main"
    ignore = shutil.ignore_patterns(".git", ".venv", "runs", "artifacts", "__pycache__", "*.egg-info", "data")
    shutil.copytree(REPO, root, ignore=ignore)
    if SHARED.exists():
        (dest / "shared").symlink_to(SHARED, target_is_directory=True)
    with (root / "tests" / "conftest.py").open("a") as conftest:
        conftest.write(_PROFILE)
    return root


def _run(root: Path, tests: tuple[str, ...], timeout: int) -> tuple[bool, str]:
    """Run ``tests`` in the copy; (passed, last line of pytest's output)."""
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-p", "no:randomly", *tests]
    try:
        done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout} s"
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return done.returncode == 0, lines[-1] if lines else f"exit {done.returncode}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", action="append", default=[], help="run only the mutation(s) of this name")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per pytest run")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    if not chosen:
        print(f"no mutation named {args.only}; have {[m.name for m in MUTATIONS]}")
        return 1
    ok = True
    with tempfile.TemporaryDirectory(prefix="rayscalp-mutation-") as tmp:
        root = _copy_tree(Path(tmp))
        tests = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        started = time.perf_counter()
        passed, line = _run(root, tests, args.timeout)
        print(f"{'unmutated':<22} {'pass' if passed else 'FAIL':<8} {time.perf_counter() - started:6.1f} s  {line}")
        ok &= passed
        for m in chosen:
            target = root / m.path
            original = target.read_text()
            if original.count(m.old) != 1:
                print(f"{m.name:<22} {'NO SITE':<8} {'':>8}  {m.path}: the code to mutate is not there once")
                ok = False
                continue
            target.write_text(original.replace(m.old, m.new))
            try:
                started = time.perf_counter()
                passed, line = _run(root, m.tests, args.timeout)
            finally:
                target.write_text(original)
            verdict = "SURVIVED" if passed else "caught"
            print(f"{m.name:<22} {verdict:<8} {time.perf_counter() - started:6.1f} s  {m.what}: {line}")
            ok &= not passed
    print("every injected look-ahead was caught" if ok else "the mutation check FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
