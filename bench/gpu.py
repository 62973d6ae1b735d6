"""The one-shot GPU check (``make gpu-check``): the ``gpu`` tests, then replay, gather and learner on the device.

On a machine with CUDA: runs ``pytest -m gpu``, then times the replay (ours on the device against cpprb on the
CPU), the gather (torch on the device against a device copy of the same bytes) and the learner (the full step
against the bare forward/backward/Adam step), prints one ratio line each and writes ``gpu-check.json``. Sized to
finish in under 6 minutes on one H100/H200. Without CUDA it refuses at once: exit status 2 and a one-line reason
on stderr, nothing written.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: Wall-clock budget of the ``gpu`` tests; the benchmarks after them take ~2-3 minutes on an H100.
TEST_TIMEOUT_S = 180
REFUSED = 2


def cuda_refusal() -> str | None:
    """Why this machine cannot run the check (one line), or None when it can."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a core dependency
        return f"torch does not import ({exc})"
    if not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
        return (
            f"no CUDA device: torch {torch.__version__} is {build} and torch.cuda.is_available() is False "
            "(on a GPU node, `make setup` installs torch==2.13.0 from PyPI, which is the CUDA build on Linux)"
        )
    return None


def run_gpu_tests(timeout_s: int) -> dict[str, Any]:
    """``pytest -m gpu`` in a child process: the counts from its closing line, its exit status and its tail."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "tests"]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, text=True, capture_output=True, timeout=timeout_s)
        out, rc = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        out, rc = f"{exc.stdout or ''}\ntimed out after {timeout_s} s", -1
    counts: dict[str, int] = {}
    for line in out.strip().splitlines()[-3:]:
        for part in line.replace("=", " ").split(","):
            words = part.split()
            if len(words) >= 2 and words[0].isdigit():
                counts[words[1]] = int(words[0])
    return {"returncode": rc, "counts": counts, "seconds": round(time.perf_counter() - start, 1), "tail": out[-3000:]}


def sync(device: Any) -> None:
    """Wait for the device's queued work (a no-op on the CPU, where the parts also run in tests)."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def replay_line(device: Any) -> tuple[str, dict[str, Any]]:
    """Sample + update rounds on the device (flat and per-level descents) against cpprb on the CPU."""
    import numpy as np
    import torch

    from bench import replay as rb
    from bench._common import rate_line

    data = rb.synthetic()
    pri_np = np.random.default_rng(1).uniform(0.01, 5.0, (rb.ROUNDS, rb.BATCH))
    pri_dev = torch.from_numpy(pri_np).to(device)
    rates: dict[str, float] = {}
    buffers = {
        "flat": rb.fill_ours(data, backend="flat", device=str(device)),
        "torch": rb.fill_ours(data, backend="torch", device=str(device)),
    }
    cpprb = rb.fill_cpprb(data)
    runs = {name: rb.rounds_ours(buf, pri_dev) for name, buf in buffers.items()}
    runs["cpprb"] = rb.rounds_cpprb(cpprb, pri_np)
    times: dict[str, list[float]] = {k: [] for k in runs}
    for fn in runs.values():
        fn()
    sync(device)
    for _ in range(3):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    rates = {k: rb.ROUNDS / statistics.median(v) for k, v in times.items()}
    best = max(("flat", "torch"), key=lambda k: rates[k])
    line = rate_line(f"gpu replay ({best} descent)", rates[best], rates["cpprb"], "cpprb on CPU")
    return line, {"rounds_per_s": rates, "batch": rb.BATCH, "capacity": rb.CAPACITY}


def gather_lines(device: Any) -> tuple[list[str], dict[str, Any]]:
    """States/s of ``gather`` on torch tensors on the device, against a device copy of the same bytes."""
    import torch

    from bench._common import median_seconds, rate_line
    from bench.gather import BATCH, timelines
    from market.features import gather
    from market.layout import AGENT_FEATURES

    lines, figures = [], {}
    for name, tl in timelines():
        on_dev = tl.map_arrays(lambda a: torch.as_tensor(a, device=device))
        gen = torch.Generator(device="cpu").manual_seed(0)
        steps = torch.randint(0, tl.n_steps, (BATCH,), generator=gen).to(device)
        agent = torch.randn(BATCH, len(AGENT_FEATURES), generator=gen).to(device)

        def ours(on_dev: Any = on_dev, steps: Any = steps, agent: Any = agent) -> None:
            gather(on_dev, steps, agent)
            sync(device)

        out = gather(on_dev, steps, agent)
        src, dst = torch.rand_like(out), torch.empty_like(out)

        def copy(src: Any = src, dst: Any = dst) -> None:
            dst.copy_(src)
            sync(device)

        ours_s = median_seconds(ours, repeats=20, warmup=3)
        copy_s = median_seconds(copy, repeats=20, warmup=3)
        profile = tl.layout.config.profile
        lines.append(
            rate_line(f"gpu gather ({profile})", BATCH / ours_s, BATCH / copy_s, "device copy same bytes", " states/s")
        )
        figures[profile] = {"source": name, "states_per_s": BATCH / ours_s, "copy_states_per_s": BATCH / copy_s}
    return lines, figures


def learner_lines(device: Any) -> tuple[list[str], dict[str, Any]]:
    """The learner bench's two profiles on the device."""
    from bench.learner import measure

    lines = [measure(profile, device, updates=20) for profile in ("tiny", "default")]
    return lines, {"lines": lines}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu-check.json", help="where to write the JSON record")
    parser.add_argument("--skip-tests", action="store_true", help="only the benchmarks")
    args = parser.parse_args(argv)
    reason = cuda_refusal()
    if reason is not None:
        print(f"gpu-check: refused: {reason}", file=sys.stderr)
        return REFUSED
    import torch

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    device = torch.device("cuda")
    started = time.perf_counter()
    record: dict[str, Any] = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "device": torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "host": platform.node(),
    }
    status = 0
    if not args.skip_tests:
        tests = run_gpu_tests(TEST_TIMEOUT_S)
        record["gpu_tests"] = tests
        print(f"gpu tests: {tests['counts']} in {tests['seconds']} s (exit {tests['returncode']})", flush=True)
        if tests["returncode"] != 0:
            print(tests["tail"], flush=True)
            status = 1
    torch.set_num_threads(1)  # cpprb and the host side of ours on one thread, as in bench.replay
    lines: list[str] = []
    for name, fn in (("replay", replay_line), ("gather", gather_lines), ("learner", learner_lines)):
        start = time.perf_counter()
        try:
            got, figures = fn(device)
        except Exception as exc:  # one failing part must not hide the figures of the others
            got, figures, status = [f"gpu {name}: FAILED ({type(exc).__name__}: {exc})"], {}, 1
        got = [got] if isinstance(got, str) else got
        record[name] = {"lines": got, "figures": figures, "seconds": round(time.perf_counter() - start, 1)}
        lines.extend(got)
        print("\n".join(got), flush=True)
    record["seconds"] = round(time.perf_counter() - started, 1)
    record["lines"] = lines
    Path(args.out).write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"gpu-check: {record['device']}, {record['seconds']} s, written to {args.out}")
    return status


if __name__ == "__main__":
    sys.exit(main())
