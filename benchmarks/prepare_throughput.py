"""Throughput (records/s) and peak memory of ``crema prepare`` on the shared PTB-XL records.

Usage:
    python benchmarks/prepare_throughput.py                      # 500 Hz, workers 1 and 2
    python benchmarks/prepare_throughput.py --repeats 5 --rate 100 --out runs/bench

Every measurement runs in a fresh Python process so that its peak resident memory is its own:
``ru_maxrss`` of that process (the parent: index, chunk assembly) and of its children (the pool
workers; with ``--workers 1`` there are none and the parent does all the work). Each figure is
the median over ``--repeats`` runs. The reference, measured in the same run, is reading the
same records with ``read_record`` alone in one process (no preprocessing, no writing): the
ratio says what preprocessing and storage add. Peak memory is also measured for a quarter of
the records, to show that it does not grow with the corpus.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_PREPARE = textwrap.dedent("""
    import json, resource, sys, time
    from crema.data.prepare import prepare_corpus
    source, out, workers, rate, limit = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    limit = None if limit == "none" else int(limit)
    input_fs = float(sys.argv[6]) if len(sys.argv) > 6 else None
    t0 = time.perf_counter()
    report = prepare_corpus(source, out, workers=workers, ptbxl_rate=rate, limit=limit, input_fs=input_fs,
                            progress=False, force=True)
    seconds = time.perf_counter() - t0
    print(json.dumps(dict(seconds=seconds, records=report["records_read"], windows=report["windows"],
        parent_maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        children_maxrss_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)))
""")

_READ_ONLY = textwrap.dedent("""
    import json, resource, sys, time
    from crema.data.ptbxl import load_ptbxl_index
    from crema.data.readers import read_record
    source, rate, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    paths = list(load_ptbxl_index(source, rate)["path"])
    paths = paths if limit == "none" else paths[:int(limit)]
    t0 = time.perf_counter()
    for p in paths:
        read_record(p)
    seconds = time.perf_counter() - t0
    print(json.dumps(dict(seconds=seconds, records=len(paths), windows=0,
        parent_maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        children_maxrss_mb=0.0)))
""")


def run_once(script: str, args: list[str]) -> dict:
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                            check=False, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def measure(name: str, script: str, args: list[str], repeats: int) -> dict:
    runs = [run_once(script, args) for _ in range(repeats)]
    seconds = statistics.median(r["seconds"] for r in runs)
    records = runs[0]["records"]
    return dict(name=name, records=records, windows=runs[0]["windows"], repeats=repeats,
                seconds_median=round(seconds, 3), seconds_all=[round(r["seconds"], 3) for r in runs],
                records_per_s=round(records / seconds, 1),
                parent_maxrss_mb=round(statistics.median(r["parent_maxrss_mb"] for r in runs), 1),
                children_maxrss_mb=round(statistics.median(r["children_maxrss_mb"] for r in runs), 1))


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT / "src"))
    import numpy as np

    from crema.config import atomic_write_text
    from crema.paths import data_root

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=data_root() / "ptbxl", help="PTB-XL root")
    parser.add_argument("--stack", type=Path, default=data_root() / "ptbxl-unlabeled" / "signals.npy",
                        help="a (N, 12, T) .npy stack at 250 Hz for the memory-scaling runs")
    parser.add_argument("--rate", type=int, default=500, choices=(100, 500))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
    args = parser.parse_args(argv)
    if not (args.source / "ptbxl_database.csv").is_file():
        print(f"no PTB-XL data at {args.source}; set CREMA_DATA", file=sys.stderr)
        return 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="crema-bench-") as tmp:
        rate = str(args.rate)
        rows.append(measure("read only (reference)", _READ_ONLY, [str(args.source), rate, "none"], args.repeats))
        for workers in args.workers:
            rows.append(measure(f"prepare, {workers} worker(s)", _PREPARE,
                                [str(args.source), f"{tmp}/c{workers}", str(workers), rate, "none"],
                                args.repeats))
        quarter = str(max(1, rows[0]["records"] // 4))
        rows.append(measure(f"prepare, 1 worker, first {quarter} records", _PREPARE,
                            [str(args.source), f"{tmp}/cq", "1", rate, quarter], args.repeats))
        if args.stack.is_file():
            n_stack = int(np.load(args.stack, mmap_mode="r").shape[0])
            for limit in (n_stack // 8, n_stack):
                rows.append(measure(f"stack .npy, 1 worker, {limit} records", _PREPARE,
                                    [str(args.stack), f"{tmp}/s{limit}", "1", rate, str(limit), "250"],
                                    args.repeats))
    reference = rows[0]["records_per_s"]
    one_worker = rows[1]["records_per_s"]
    for row in rows:
        row["ratio_vs_read_only"] = round(row["records_per_s"] / reference, 3)
        row["speedup_vs_1_worker"] = round(row["records_per_s"] / one_worker, 3)
    print(f"prepare throughput: {args.source} at {args.rate} Hz, median of {args.repeats} runs")
    header = f"{'run':<40} {'records':>7} {'s':>7} {'rec/s':>7} {'vs read':>7} {'vs 1w':>6} {'parent MB':>9} {'workers MB':>10}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['name']:<40} {r['records']:>7} {r['seconds_median']:>7.2f} {r['records_per_s']:>7.1f} "
              f"{r['ratio_vs_read_only']:>7.2f} {r['speedup_vs_1_worker']:>6.2f} "
              f"{r['parent_maxrss_mb']:>9.1f} {r['children_maxrss_mb']:>10.1f}")
    print("memory: ru_maxrss (peak resident set) of the benchmark's parent process and the largest "
          "of its pool workers")
    path = args.out / "prepare_throughput.json"
    atomic_write_text(path, json.dumps(dict(source=str(args.source), rate=args.rate, repeats=args.repeats,
                                    memory="ru_maxrss of parent and of largest child, MB",
                                    rows=rows), indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
