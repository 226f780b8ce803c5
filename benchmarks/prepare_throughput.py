"""Throughput (records/s) and peak memory of ``crema prepare`` on the shared PTB-XL records.

Usage:
    python benchmarks/prepare_throughput.py                      # 500 Hz, workers 1 and 2
    python benchmarks/prepare_throughput.py --repeats 5 --rate 100 --out runs/bench
    python benchmarks/prepare_throughput.py --workers 1 --readers fast   # quicker

It measures the installed ``crema`` (``pip install -e .`` for a checkout's code), through its
public functions only.

Every measurement runs in a fresh Python process so that its peak resident memory is its own:
``ru_maxrss`` of that process (the parent: index, chunk assembly) and of its children (the pool
workers; with ``--workers 1`` there are none and the parent does all the work). Each figure is
the median over ``--repeats`` runs. The reference, measured in the same run, is reading the
same records with ``read_record`` alone in one process (no preprocessing, no writing): the
ratio says what preprocessing and storage add. Peak memory is also measured for a quarter of
the records, to show that it does not grow with the corpus.

WFDB readers: every read-only and prepare run is made twice, with the fast path
(``crema.data.formats.wfdb_fast``, the default) and with ``CREMA_WFDB_READER=wfdb``
(``wfdb.rdrecord``, the reference). The two are interleaved within each repeat (in alternating order), so that a
busy neighbour slows both alike; the table gives each fast figure as a ratio to its wfdb twin,
and the run checks that the corpora written both ways are byte-identical.
"""
from __future__ import annotations

import argparse
import json
import os
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
    t0, c0 = time.perf_counter(), time.process_time()
    report = prepare_corpus(source, out, workers=workers, ptbxl_rate=rate, limit=limit, input_fs=input_fs,
                            progress=False, force=True)
    seconds = time.perf_counter() - t0
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # pool workers, all started after t0
    cpu = time.process_time() - c0 + children.ru_utime + children.ru_stime
    print(json.dumps(dict(seconds=seconds, cpu_seconds=cpu, records=report["records_read"], windows=report["windows"],
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
    t0, c0 = time.perf_counter(), time.process_time()
    for p in paths:
        read_record(p)
    seconds = time.perf_counter() - t0
    print(json.dumps(dict(seconds=seconds, cpu_seconds=time.process_time() - c0, records=len(paths), windows=0,
        parent_maxrss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        children_maxrss_mb=0.0)))
""")


READERS = ("wfdb", "fast")
# Corpus files that must not depend on the reader (prepare_report.json holds timings).
CORPUS_FILES = ("signals.npy", "lead_mask.npy", "index.csv", "classes.json", "preprocess.json")
TARGET_ONE_WORKER = 350.0  # records/s with one worker: the data-preparation speed target


def run_once(script: str, args: list[str], reader: str = "fast") -> dict:
    # The installed crema, as a user runs it (pip install -e . for this checkout's code).
    env = dict(os.environ, CREMA_WFDB_READER=reader)
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                            check=False, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def summarise(name: str, runs: list[dict], repeats: int, reader: str = "fast") -> dict:
    seconds = statistics.median(r["seconds"] for r in runs)
    cpu = statistics.median(r["cpu_seconds"] for r in runs)
    records = runs[0]["records"]
    return dict(name=name, reader=reader, records=records, windows=runs[0]["windows"], repeats=repeats,
                seconds_median=round(seconds, 3), seconds_all=[round(r["seconds"], 3) for r in runs],
                records_per_s=round(records / seconds, 1),
                cpu_seconds_median=round(cpu, 3), records_per_cpu_s=round(records / cpu, 1),
                parent_maxrss_mb=round(statistics.median(r["parent_maxrss_mb"] for r in runs), 1),
                children_maxrss_mb=round(statistics.median(r["children_maxrss_mb"] for r in runs), 1))


def measure(name: str, script: str, args: list[str], repeats: int) -> dict:
    return summarise(name, [run_once(script, args) for _ in range(repeats)], repeats)


def measure_readers(source: Path, rate: str, workers: list[int], tmp: str, repeats: int,
                    readers: tuple[str, ...] = READERS) -> list[dict]:
    """Read-only and prepare runs with the WFDB ``readers``, interleaved: in each repeat every
    variant runs once, in alternating order from one repeat to the next."""
    variants = []
    for reader in readers:
        variants.append((f"read only (reference), {reader}", reader, _READ_ONLY, [str(source), rate, "none"]))
        for n in workers:
            variants.append((f"prepare, {n} worker(s), {reader}", reader, _PREPARE,
                             [str(source), f"{tmp}/{reader}-w{n}", str(n), rate, "none"]))
    runs: dict[str, list[dict]] = {name: [] for name, *_ in variants}
    for repeat in range(repeats):
        for name, reader, script, args in (variants if repeat % 2 == 0 else variants[::-1]):
            runs[name].append(run_once(script, args, reader))
    return [summarise(name, runs[name], repeats, reader) for name, reader, *_ in variants]


def identical_corpora(tmp: str, workers: list[int], readers: tuple[str, ...] = READERS) -> bool:
    """Whether every corpus written by the runs (every reader, every worker count) has the same
    bytes in :data:`CORPUS_FILES`."""
    folders = [Path(tmp) / f"{reader}-w{n}" for reader in readers for n in workers]
    return all((folder / name).read_bytes() == (folders[0] / name).read_bytes()
               for folder in folders[1:] for name in CORPUS_FILES)


def add_ratios(rows: list[dict]) -> None:
    """Each row's records/s against the read-only reference and the 1-worker prepare run of
    the same reader, and against the same run with the wfdb reader."""
    by_name = {row["name"]: row for row in rows}
    for row in rows:
        reader = row["reader"]
        read_only = by_name[f"read only (reference), {reader}"]["records_per_s"]
        one = by_name[f"prepare, 1 worker(s), {reader}"]["records_per_s"]
        twin = by_name.get(row["name"].replace(f", {reader}", ", wfdb")) if row["name"].endswith(reader) else None
        row["ratio_vs_read_only"] = round(row["records_per_s"] / read_only, 3)
        row["speedup_vs_1_worker"] = round(row["records_per_s"] / one, 3)
        row["ratio_vs_wfdb"] = round(row["records_per_s"] / twin["records_per_s"], 3) if twin else None


def main(argv: list[str] | None = None) -> int:
    import numpy as np

    from crema.atomic import atomic_write_text
    from crema.paths import data_root

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=data_root() / "ptbxl", help="PTB-XL root")
    parser.add_argument("--stack", type=Path, default=data_root() / "ptbxl-unlabeled" / "signals.npy",
                        help="a (N, 12, T) .npy stack at 250 Hz for the memory-scaling runs")
    parser.add_argument("--rate", type=int, default=500, choices=(100, 500))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--readers", nargs="+", choices=READERS, default=list(READERS),
                        help="WFDB readers to measure (default both; fast alone is quicker)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
    args = parser.parse_args(argv)
    if not (args.source / "ptbxl_database.csv").is_file():
        print(f"no PTB-XL data at {args.source}; set CREMA_DATA", file=sys.stderr)
        return 1
    if 1 not in args.workers:
        args.workers = [1, *args.workers]  # the ratios are against one worker
    if "fast" not in args.readers:
        args.readers.append("fast")  # the target is the fast path's
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="crema-bench-") as tmp:
        rate = str(args.rate)
        rows = measure_readers(args.source, rate, args.workers, tmp, args.repeats, tuple(args.readers))
        identical = identical_corpora(tmp, args.workers, tuple(args.readers))
        quarter = str(max(1, rows[0]["records"] // 4))
        rows.append(measure(f"prepare, 1 worker(s), first {quarter} records, fast", _PREPARE,
                            [str(args.source), f"{tmp}/cq", "1", rate, quarter], args.repeats))
        if args.stack.is_file():
            n_stack = int(np.load(args.stack, mmap_mode="r").shape[0])
            for limit in (n_stack // 8, n_stack):
                rows.append(measure(f"stack .npy, 1 worker(s), {limit} records", _PREPARE,
                                    [str(args.stack), f"{tmp}/s{limit}", "1", rate, str(limit), "250"],
                                    args.repeats))
    load_after = os.getloadavg()[0]
    add_ratios(rows)
    fast_one = next(r for r in rows if r["name"] == "prepare, 1 worker(s), fast")
    print(f"prepare throughput: {args.source} at {args.rate} Hz, median of {args.repeats} runs, "
          f"readers interleaved; load average {load_before:.1f} before, {load_after:.1f} after")
    header = (f"{'run':<46} {'records':>7} {'s':>7} {'rec/s':>7} {'rec/cpu-s':>9} {'vs read':>7} "
              f"{'vs 1w':>6} {'vs wfdb':>7} {'parent MB':>9} {'workers MB':>10}")
    print(header)
    print("-" * len(header))
    for r in rows:
        vs_wfdb = f"{r['ratio_vs_wfdb']:>7.2f}" if r["ratio_vs_wfdb"] is not None else f"{'-':>7}"
        print(f"{r['name']:<46} {r['records']:>7} {r['seconds_median']:>7.2f} {r['records_per_s']:>7.1f} "
              f"{r['records_per_cpu_s']:>9.1f} {r['ratio_vs_read_only']:>7.2f} {r['speedup_vs_1_worker']:>6.2f} {vs_wfdb} "
              f"{r['parent_maxrss_mb']:>9.1f} {r['children_maxrss_mb']:>10.1f}")
    print("memory: ru_maxrss (peak resident set) of the benchmark's parent process and the largest "
          "of its pool workers")
    print(f"corpora byte-identical across readers and worker counts: {identical}")
    print(f"target >= {TARGET_ONE_WORKER:.0f} records/s with one worker (fast path): {fast_one['records_per_s']:.1f} "
          f"wall-clock, {'met' if fast_one['records_per_s'] >= TARGET_ONE_WORKER else 'missed'}; "
          f"{fast_one['records_per_cpu_s']:.1f} per CPU-second (what a quiet core would give)")
    path = args.out / "prepare_throughput.json"
    atomic_write_text(path, json.dumps(dict(
        source=str(args.source), rate=args.rate, repeats=args.repeats, cpu_count=os.cpu_count(),
        load_average_before=round(load_before, 2), load_average_after=round(load_after, 2),
        memory="ru_maxrss of parent and of largest child, MB", corpora_identical=identical,
        readers=args.readers, workers=args.workers,
        target_one_worker_records_per_s=TARGET_ONE_WORKER, rows=rows), indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
