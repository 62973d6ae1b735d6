"""Run every benchmark in ``bench/`` in its own process and print each one's summary line.

Usage: ``python -m bench [name ...]``. Each benchmark module must be runnable alone as
``python -m bench.<name>`` and print its summary line last.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).parent
    # A benchmark is a module with a main(); helpers (e.g. the RLlib peer's module and config) are not run.
    # bench.gpu needs CUDA and has its own target (`make gpu-check`).
    names = argv or sorted(
        p.stem
        for p in here.glob("*.py")
        if not p.stem.startswith("_") and p.stem != "gpu" and "\ndef main(" in p.read_text()
    )
    summary: list[str] = []
    failed = 0
    for name in names:
        print(f"== bench.{name}", flush=True)
        proc = subprocess.run([sys.executable, "-m", f"bench.{name}"], text=True, capture_output=True)
        sys.stdout.write(proc.stdout)
        if proc.returncode != 0:
            failed += 1
            sys.stdout.write(proc.stderr[-4000:])
            summary.append(f"{name}: FAILED (exit {proc.returncode})")
            continue
        lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
        summary.extend(ln for ln in lines if ":" in ln and " ours " in ln)
    print("\n== summary")
    print("\n".join(summary))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
