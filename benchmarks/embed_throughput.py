"""Throughput of ``crema embed``: each stage alone and end to end, start-up time, and the peak memory
of a 24-hour record.

    python benchmarks/embed_throughput.py                   # PTB-XL 500 Hz (shared data) or the sample
    python benchmarks/embed_throughput.py --repeats 5 --workers 1 --long-hours 2
    python benchmarks/embed_throughput.py --model runs/bench/tiny-init --long-hours 0   # another model

On ``--records`` real WFDB records (the shared PTB-XL 500 Hz records, else the shipped sample's
100 Hz ones) with the shipped ``crema-mini-ecg12`` (``--model``: any checkpoint or shipped name;
a ``tiny`` one for speed alone, whose weights do not matter: ``crema pretrain --size tiny --steps 0
--corpus DIR --out runs/bench/tiny-init``), every figure measured in a fresh process and
given as the median of ``--repeats`` runs:

- stages alone, one after the other in one process: ``read`` (``read_record``), ``preprocess``
  (``preprocess_recording`` of the records read), ``model`` (``encode_windows`` of all their
  windows, 64 at a time); that process runs with the allocator settings the ``crema`` command
  gives itself (``crema.kernels.allocator_environment``), so that the stages are timed as the
  command runs them (without them the model stage ran 1.6x slower than inside the command);
- ``end to end``: the ``crema embed`` command on the records' folder (``--workers``), wall clock of
  the whole command, and without its start-up (minus a 1-record ``crema embed``): the ratio of that
  to the slowest stage alone is what reading and preprocessing in parallel with the model leave of
  their cost (1.0: hidden entirely);
- ``start-up``: ``crema embed --help`` and ``crema embed`` of one record, beside its floor measured
  in the same run (a fresh ``python -c "import torch, scipy.signal, pandas"``);
- ``long record``: a ``--long-hours`` 12-lead 500 Hz record built by tiling a real PTB-XL record,
  written as WFDB format 16 to a temporary folder and embedded by ``crema embed`` (once): its peak
  resident memory (``ru_maxrss``) and its speed, against the 1-record run's peak.

Every process runs with ``OMP_NUM_THREADS=--threads`` (default 1: small models on a shared CPU run
faster on one torch thread, and all rows then get the same). CPU seconds are given beside wall
seconds: on a busy machine wall time measures the neighbours too. Prints a table and writes
``runs/bench/embed_throughput.json`` (``embed_throughput_NAME.json`` for another ``--model``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODEL = "crema-mini-ecg12"
TARGET_RATIO = 1.3      # end to end (start-up excluded) over the slowest stage
TARGET_STARTUP_S = 3.0  # crema embed of one record
TARGET_LONG_MB = 2048   # peak memory of the long record
# The start-up's floor, timed in the same run: the libraries every embed needs, imported and nothing else
IMPORT_FLOOR = "import torch, scipy.signal, pandas"

_STAGES = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    import crema
    from crema.data.preprocess import preprocess_recording
    from crema.data.readers import read_record
    name, paths = sys.argv[1], sys.argv[2:]
    model = crema.load(name, device="cpu")
    def clock(fn):
        t, c = time.perf_counter(), time.process_time()
        out = fn()
        return out, time.perf_counter() - t, time.process_time() - c
    recs, read_s, read_cpu = clock(lambda: [read_record(p) for p in paths])
    wins, prep_s, prep_cpu = clock(lambda: [preprocess_recording(r, model.preprocess) for r in recs])
    signals = np.concatenate([w.signals for w in wins])
    mask = np.concatenate([np.repeat(w.lead_mask[None], len(w), axis=0) for w in wins])
    model.encode_windows(signals[:8], mask[:8])  # warm-up
    _, model_s, model_cpu = clock(lambda: model.encode_windows(signals, mask, 64))
    print(json.dumps(dict(records=len(paths), windows=len(signals), read=[read_s, read_cpu],
                          preprocess=[prep_s, prep_cpu], model=[model_s, model_cpu])))
""")

# a command run as a child, reporting its wall time, CPU time and peak memory
_TIMED = textwrap.dedent("""
    import json, resource, subprocess, sys, time
    t = time.perf_counter()
    code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code.returncode not in (0,):
        sys.exit(code.stderr)
    print(json.dumps(dict(seconds=seconds, cpu_seconds=usage.ru_utime + usage.ru_stime,
                          maxrss_mb=usage.ru_maxrss / 1024)))
""")


def tile_wfdb(header: Path, out: Path, name: str, seconds: float) -> Path:
    """Write ``out/name.hea`` + ``.dat``: the single-file format 16 WFDB record ``header`` repeated
    until it lasts at least ``seconds``, its samples copied unchanged (a real ECG, with a jump at
    each joint), a block at a time so that the writer's memory stays small. Returns the header."""
    lines = header.read_text().splitlines()
    record_line = lines[0].split()
    n_sig, fs, length = int(record_line[1]), float(record_line[2].split("/")[0]), int(record_line[3])
    signal_lines = [line.split() for line in lines[1:1 + n_sig]]
    if {fields[1] for fields in signal_lines} != {"16"} or len({f[0] for f in signal_lines}) != 1:
        raise ValueError(f"{header}: not a single-file format 16 record")
    repeats = max(1, -(-int(seconds * fs) // length))
    block = (header.parent / signal_lines[0][0]).read_bytes()
    with open(out / f"{name}.dat", "wb") as fh:
        for _ in range(repeats):
            fh.write(block)
    body = [f"{name} {n_sig} {record_line[2]} {length * repeats}"]
    body += [" ".join([f"{name}.dat", *fields[1:]]) for fields in signal_lines]
    (out / f"{name}.hea").write_text("\n".join(body + lines[1 + n_sig:]) + "\n")
    return out / f"{name}.hea"


def _env(threads: int) -> dict:
    # this tree's code, whatever checkout the environment has installed
    return dict(os.environ, OMP_NUM_THREADS=str(threads),
                PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])))


def _stage_env(env: dict) -> dict:
    """``env`` with the allocator settings that the ``crema`` command re-executes itself with."""
    from crema.kernels import allocator_environment

    return allocator_environment(env, sys.platform, platform.libc_ver()[0]) or env


def run_json(args: list[str], env: dict) -> dict:
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"benchmark subprocess failed: {' '.join(args[:3])}\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def timed_command(command: list[str], env: dict) -> dict:
    """Wall and CPU seconds and peak memory (MB) of ``command`` run as a fresh process."""
    return run_json(["-c", _TIMED, *command], env)


def crema(*args: str) -> list[str]:
    return [sys.executable, "-m", "crema.cli", *args]


def median(values) -> float:
    return round(statistics.median(values), 3)


def record_paths(source: Path, limit: int) -> list[Path]:
    from crema.data.readers import find_records

    return find_records(source)[:limit]


def copy_folder(paths: list[Path], folder: Path) -> Path:
    """A folder holding copies of the records (header and signal file) for ``crema embed FOLDER``
    (copies: a record's signal file must not be a link leading out of its folder)."""
    folder.mkdir()
    for header in paths:
        for path in (header, header.with_suffix(".dat")):
            shutil.copyfile(path, folder / path.name)
    return folder


def measure(args, paths: list[Path], tmp: Path) -> dict:
    env = _env(args.threads)
    folder = copy_folder(paths, tmp / "records")
    workers = ["--workers", str(args.workers)] if args.workers else []
    stages, e2e, helps, ones, floors = [], [], [], [], []
    for repeat in range(args.repeats):
        stages.append(run_json(["-c", _STAGES, args.model, *map(str, paths)], _stage_env(env)))
        floors.append(timed_command([sys.executable, "-c", IMPORT_FLOOR], env))
        helps.append(timed_command(crema("embed", "--help"), env))
        ones.append(timed_command(crema("embed", args.model, str(paths[0]), "--out", str(tmp / "one"), "--overwrite",
                                        "--no-progress", *workers), env))
        e2e.append(timed_command(crema("embed", args.model, str(folder), "--out", str(tmp / "all"), "--overwrite",
                                       "--no-progress", *workers), env))
        print(f"  repeat {repeat + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    n = len(paths)
    rows = {}
    for stage in ("read", "preprocess", "model"):
        seconds = median(s[stage][0] for s in stages)
        cpu = median(s[stage][1] for s in stages)
        rows[stage] = dict(seconds=seconds, cpu_seconds=cpu, records_per_s=round(n / seconds, 1),
                           records_per_cpu_s=round(n / cpu, 1))
    one_s = median(r["seconds"] for r in ones)
    e2e_s = median(r["seconds"] for r in e2e)
    e2e_cpu = median(r["cpu_seconds"] for r in e2e)
    pipeline_s = median(r["seconds"] - o["seconds"] for r, o in zip(e2e, ones))
    rows["end to end"] = dict(seconds=e2e_s, cpu_seconds=e2e_cpu, records_per_s=round(n / e2e_s, 1),
                              records_per_cpu_s=round(n / e2e_cpu, 1), without_startup_s=pipeline_s,
                              records_per_s_without_startup=round(n / pipeline_s, 1),
                              maxrss_mb=round(median(r["maxrss_mb"] for r in e2e), 1))
    slowest = max(("read", "preprocess", "model"), key=lambda s: rows[s]["seconds"])
    return dict(records=n, windows=stages[0]["windows"], rows=rows, slowest_stage=slowest,
                ratio_without_startup=round(pipeline_s / rows[slowest]["seconds"], 3),
                ratio_with_startup=round(e2e_s / rows[slowest]["seconds"], 3),
                ratio_cpu=round(e2e_cpu / sum(rows[s]["cpu_seconds"] for s in ("read", "preprocess", "model")), 3),
                startup=dict(help_s=median(r["seconds"] for r in helps), one_record_s=one_s,
                             one_record_maxrss_mb=round(median(r["maxrss_mb"] for r in ones), 1),
                             imports_s=median(r["seconds"] for r in floors),
                             one_record_minus_imports_s=median(o["seconds"] - f["seconds"]
                                                              for o, f in zip(ones, floors))))


def measure_long(args, header: Path, tmp: Path) -> dict:
    """``crema embed`` of a ``--long-hours`` record tiled from ``header`` (once)."""
    record = tile_wfdb(header, tmp, "long", args.long_hours * 3600)
    workers = ["--workers", str(args.workers)] if args.workers else []
    run = timed_command(crema("embed", args.model, str(record), "--out", str(tmp / "long-emb"), "--overwrite",
                              "--no-progress", "--per-window", *workers), _env(args.threads))
    import numpy as np

    windows = int(np.load(tmp / "long-emb.npy", mmap_mode="r").shape[0])
    return dict(hours=args.long_hours, file_mb=round(record.with_suffix(".dat").stat().st_size / 2**20, 1),
                windows=windows, seconds=round(run["seconds"], 1), cpu_seconds=round(run["cpu_seconds"], 1),
                windows_per_s=round(windows / run["seconds"], 1), maxrss_mb=round(run["maxrss_mb"], 1))


def print_table(result: dict) -> None:
    rows = result["rows"]
    print(f"crema embed {result.get('model', MODEL)}: {result['records']} records ({result['windows']} windows) from {result['source']}, "
          f"median of {result['repeats']} runs, workers {result['workers'] or 'default'}, "
          f"OMP_NUM_THREADS={result['threads']}; load average {result['load_before']:.1f} before, "
          f"{result['load_after']:.1f} after, {result['cpus']} CPUs")
    header = f"{'stage':<26} {'s':>7} {'rec/s':>7} {'cpu-s':>7} {'rec/cpu-s':>9}"
    print(header)
    print("-" * len(header))
    for name, row in rows.items():
        print(f"{name:<26} {row['seconds']:>7.2f} {row['records_per_s']:>7.1f} {row['cpu_seconds']:>7.2f} "
              f"{row['records_per_cpu_s']:>9.1f}")
    e2e = rows["end to end"]
    print(f"{'end to end - start-up':<26} {e2e['without_startup_s']:>7.2f} "
          f"{e2e['records_per_s_without_startup']:>7.1f}")
    start = result["startup"]
    print(f"start-up: crema embed --help {start['help_s']:.2f} s; crema embed of 1 record "
          f"{start['one_record_s']:.2f} s (target < {TARGET_STARTUP_S:g} s), "
          f"peak {start['one_record_maxrss_mb']:.0f} MB")
    if "imports_s" in start:  # (JSON written before the reference was measured lack it)
        print(f"reference, same run: python -c \"{IMPORT_FLOOR}\" {start['imports_s']:.2f} s; the 1-record embed "
              f"beyond it {start['one_record_minus_imports_s']:.2f} s")
    print(f"end to end / slowest stage ({result['slowest_stage']}): {result['ratio_without_startup']:.2f} without "
          f"start-up (target <= {TARGET_RATIO}), {result['ratio_with_startup']:.2f} with it; CPU seconds end to "
          f"end / sum of the stages' {result['ratio_cpu']:.2f}")
    long = result.get("long")
    if long:
        print(f"long record: {long['hours']:g} h, 12 leads at 500 Hz ({long['file_mb']:.0f} MB WFDB, "
              f"{long['windows']} windows): {long['seconds']:.0f} s ({long['windows_per_s']:.1f} windows/s), "
              f"peak {long['maxrss_mb']:.0f} MB "
              f"(target < {TARGET_LONG_MB} MB; 1-record run {start['one_record_maxrss_mb']:.0f} MB)")


def main(argv: list[str] | None = None) -> int:
    from crema.atomic import atomic_write_text
    from crema.paths import data_root, sample_root

    shared = data_root() / "ptbxl" / "records500"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=shared if shared.is_dir() else sample_root() / "records100",
                        help="folder of WFDB records (default: shared PTB-XL 500 Hz, else the sample's 100 Hz)")
    parser.add_argument("--model", default=MODEL, help=f"checkpoint folder or shipped name (default {MODEL})")
    parser.add_argument("--records", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, help="crema embed --workers (default: its own default)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every process (default 1)")
    parser.add_argument("--long-hours", type=float, default=24.0, help="length of the long record (0: skip)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
    args = parser.parse_args(argv)
    paths = record_paths(args.source, args.records)
    if not paths:
        print(f"no records in {args.source}", file=sys.stderr)
        return 1
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="crema-embed-bench-") as tmp:
        result = measure(args, paths, Path(tmp))
        if args.long_hours > 0:
            result["long"] = measure_long(args, paths[0], Path(tmp))
    result.update(model=args.model, source=str(args.source), repeats=args.repeats, workers=args.workers, threads=args.threads,
                  cpus=os.cpu_count(), load_before=round(load_before, 2), load_after=round(os.getloadavg()[0], 2),
                  targets=dict(ratio=TARGET_RATIO, startup_s=TARGET_STARTUP_S, long_mb=TARGET_LONG_MB))
    print_table(result)
    path = args.out / ("embed_throughput.json" if args.model == MODEL
                       else f"embed_throughput_{Path(args.model).name}.json")
    atomic_write_text(path, json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
