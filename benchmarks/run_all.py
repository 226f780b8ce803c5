"""``make bench``: run every benchmark in turn, each printing its table and writing its JSON
under ``runs/bench/``; the MFU benchmark also rewrites its table in docs/BENCHMARKS.md.
Extra arguments are not passed on; run a script alone to change its settings
(``python benchmarks/<name>.py --help``)."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ("prepare_throughput.py", "dataset_throughput.py", "pretrain_throughput.py", "inference_throughput.py",
           "embed_throughput.py",
           "mfu.py")
EXTRA_ARGS = {"mfu.py": ["--doc", str(HERE.parent / "docs" / "BENCHMARKS.md")]}


def main() -> int:
    failed = []
    for name in SCRIPTS:
        print(f"\n==> {name}", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call([sys.executable, str(HERE / name), *EXTRA_ARGS.get(name, [])])
        print(f"    {name}: exit {code} after {time.perf_counter() - t0:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
