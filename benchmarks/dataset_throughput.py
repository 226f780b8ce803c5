"""Windows/s of the batched training streams on a large corpus, warm and cold page cache.

Usage:
    python benchmarks/dataset_throughput.py                      # 200,000 windows (about 12 GB)
    python benchmarks/dataset_throughput.py --windows 20000      # a smaller run while developing
    python benchmarks/dataset_throughput.py --doc docs/BENCHMARKS.md --note "what else ran"
    python benchmarks/dataset_throughput.py --render results/bench/dataset-throughput.json --doc docs/BENCHMARKS.md

The corpus is built in a temporary folder (``--dir``; deleted afterwards unless ``--keep``): the
shared ``ptbxl-unlabeled`` stack (or, without the shared data, the shipped PTB-XL sample) is
prepared with ``crema.data.prepare.prepare_corpus``, and its real windows are tiled, written in
chunks, into a corpus of ``--windows`` float16 rows (12 x 2500: 60 kB each) with the same layout.

What is timed, every time over ``--batches`` batches of ``--batch-size`` random windows of the
whole corpus (other windows each time), through ``crema.data.loader.batch_loader`` with 0, 1
and 2 worker processes (persistent workers, already started; the clock runs from asking for the
first batch to receiving the last):

* pretraining stream, whole windows: ``crema.train.stream.open_pretrain_data`` with
  ``EpochBatches`` (what ``crema pretrain`` reads with the default ``view_crop``), batches of
  float16 windows (the trainer converts them on its device);
* crop + augment: ``ECGWindows(crop=..., augment=...)`` batches, float32, augmented in the loader;
* references, measured in the same run on the same kind of rows: the corpus memmap read row by
  row into float32 numpy (``np.load(mmap_mode="r")``, no advice: what the loader read before),
  and ``RowReader`` batches alone (float16, no torch); and, warm only, the per-item path
  (``ECGWindows`` items collated by a DataLoader, no workers).

Warm: the timed rows were read just before (they are in the page cache). Cold: the corpus file is
dropped from the page cache (``posix_fadvise(POSIX_FADV_DONTNEED)`` after an ``fsync``) just
before; the run checks by timing that this evicts. Each figure is the median of ``--repeats``,
the measurements interleaved so that a busy neighbour slows all alike; ratios are against the
memmap reference of the same cache state.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler

from crema.atomic import atomic_write_text

from doc_table import write_doc
from crema.config import AugmentConfig
from crema.data.corpus import Corpus
from crema.data.dataset import ECGWindows
from crema.data.loader import ShuffledBatches, batch_loader
from crema.data.prepare import prepare_corpus
from crema.data.rows import RowReader
from crema.kernels import allocator_environment
from crema.paths import data_root, sample_root
from crema.train.stream import EpochBatches, open_pretrain_data

ROOT = Path(__file__).resolve().parents[1]
DOC_START, DOC_END = "<!-- dataset-table:start -->", "<!-- dataset-table:end -->"
AUGMENT = AugmentConfig(scale=0.1, noise=0.05, wander=0.1, lead_dropout=0.1, time_shift=0.05)
CHUNK_ROWS = 2048          # rows written per call while building the corpus (123 MB)
BASELINE_CROP_AUGMENT = 1681.0  # windows/s of the per-item loader before batching (500 windows, 0 workers)
TARGET_ONE_CORE = 5.0      # crop + augment on one core: at least this times the baseline
TARGET_TWO_WORKERS = 1.6   # 2 workers over 1


# ----------------------------------------------------------------------------- the corpus

def build_corpus(folder: Path, windows: int, base_records: int | None = None) -> tuple[Path, float]:
    """A corpus of ``windows`` rows under ``folder``: real windows prepared by ``prepare_corpus``
    (``base_records`` of them, default all) and tiled. Returns its path and the seconds taken."""
    t0 = time.perf_counter()
    stack = data_root() / "ptbxl-unlabeled" / "signals.npy"
    base = folder / "base"
    if stack.is_file():
        prepare_corpus(stack, base, input_fs=250.0, workers=1, progress=False, limit=base_records)
    else:
        prepare_corpus(sample_root(), base, workers=1, progress=False, limit=base_records)
    source = Corpus(base)
    out = folder / "corpus"
    out.mkdir()
    tile = np.arange(windows) % len(source)
    _write_signals(out / "signals.npy", np.asarray(source.signals), tile)
    np.save(out / "lead_mask.npy", source.lead_mask[tile])
    index = source.index.iloc[tile].reset_index(drop=True)
    copy = (np.arange(windows) // len(source)).astype(str)
    for column in ("record_id", "source_id"):  # each copy is its own record
        index[column] = index[column].astype(str) + "~" + copy
    index.to_csv(out / "index.csv", index=False)
    for name in ("classes.json", "preprocess.json", "prepare_report.json"):
        shutil.copyfile(base / name, out / name)
    shutil.rmtree(base)
    return out, time.perf_counter() - t0


def _write_signals(path: Path, source: np.ndarray, tile: np.ndarray) -> None:
    """``signals.npy`` of ``source[tile]``, written a chunk at a time and synced to disk (so that
    dropping it from the page cache works: dirty pages stay)."""
    shape = (len(tile),) + source.shape[1:]
    del_me = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)
    offset = del_me.offset
    del del_me
    row_bytes = int(np.prod(shape[1:])) * 2
    fd = os.open(path, os.O_WRONLY)
    try:
        for start in range(0, len(tile), CHUNK_ROWS):
            chunk = np.ascontiguousarray(source[tile[start:start + CHUNK_ROWS]], dtype=np.float16)
            os.pwrite(fd, chunk.tobytes(), offset + start * row_bytes)
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- the page cache

def evict(path: Path) -> None:
    """Drop ``path`` from the page cache (its pages must be clean and mapped by no process)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def eviction_check(path: Path, n: int, seed: int) -> dict:
    """Time reading 64 random rows (one ``pread`` each, one after another) right after
    :func:`evict` and again at once: the first must be much slower if eviction works."""
    reader = RowReader(path)
    rows = np.random.default_rng(seed).choice(n, min(n, 64), replace=False)
    fd = os.open(path, os.O_RDONLY)
    try:
        times = []
        for _ in range(2):
            if not times:
                evict(path)
            t0 = time.perf_counter()
            for row in np.sort(rows):
                os.pread(fd, reader.row_bytes, reader.offset + int(row) * reader.row_bytes)
            times.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
    return {"cold_ms": round(times[0] * 1e3, 2), "warm_ms": round(times[1] * 1e3, 2),
            "evicts": times[0] > 5 * times[1]}


def warm_up(reader: RowReader, rows: np.ndarray) -> None:
    """Read ``rows`` once so that they are in the page cache."""
    for start in range(0, len(rows), 256):
        reader.read(rows[start:start + 256])


# ----------------------------------------------------------------------------- what is timed

class Keys:
    """A DataLoader sampler whose keys are replaced between passes (persistent workers stay)."""

    def __init__(self):
        self.keys: list = []

    def __iter__(self):
        return iter(self.keys)

    def __len__(self) -> int:
        return len(self.keys)


class Stream:
    """One loader setting: a batch dataset, its batch keys and its worker count."""

    def __init__(self, mode: str, corpus: Path, workers: int, batch: int, crop: int):
        self.mode, self.workers, self.batch = mode, workers, batch
        if mode == "pretrain":
            self.dataset = open_pretrain_data([str(corpus)], window=1250, seed=0, view_crop="disjoint").dataset
        else:
            self.dataset = ECGWindows(corpus, crop=crop, augment=AUGMENT, seed=0)
        self.sampler = Keys()
        self.loader = batch_loader(self.dataset, self.sampler, workers)
        self.sampler.keys = self.keys(0, 2)
        for _ in self.loader:  # start the workers (not timed)
            pass

    def keys(self, seed: int, batches: int) -> list:
        n = len(self.dataset)
        if self.mode == "pretrain":
            sampler = DistributedSampler(self.dataset, num_replicas=1, rank=0, shuffle=True, seed=seed, drop_last=True)
            return list(itertools.islice(EpochBatches(sampler, self.batch), batches))
        return list(itertools.islice(ShuffledBatches(n, self.batch, seed=seed, drop_last=True), batches))

    @staticmethod
    def rows(keys: list) -> np.ndarray:
        if isinstance(keys[0], list):
            return np.array([i for key in keys for _, i in key])
        return np.concatenate([indices for _, indices in keys])

    def time(self, keys: list) -> tuple[float, float]:
        """Wall seconds and CPU seconds (this process and its workers) to load ``keys``."""
        self.sampler.keys = keys
        cpu0, t0 = self.cpu_seconds(), time.perf_counter()
        n = sum(len(batch["signal"]) for batch in self.loader)
        seconds = time.perf_counter() - t0
        assert n == len(self.rows(keys)), (n, len(keys))
        return seconds, self.cpu_seconds() - cpu0

    def cpu_seconds(self) -> float:
        """CPU seconds so far of this process and of this loader's worker processes."""
        workers = getattr(getattr(self.loader.loader, "_iterator", None), "_workers", None) or []
        return time.process_time() + sum(process_cpu_seconds(w.pid) for w in workers)

    def close(self) -> None:
        self.loader = None


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (0 when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def timed(work) -> tuple[float, float]:
    """Wall and CPU seconds (this process) of ``work()``."""
    cpu0, t0 = time.process_time(), time.perf_counter()
    work()
    return time.perf_counter() - t0, time.process_time() - cpu0


def time_memmap(path: Path, rows: np.ndarray) -> tuple[float, float]:
    """The reference: memmap rows -> float32 numpy, one row at a time."""
    signals = np.load(path, mmap_mode="r")
    result = timed(lambda: [np.asarray(signals[row], dtype=np.float32) for row in rows])
    del signals
    return result


def time_reader(path: Path, rows: np.ndarray, batch: int) -> tuple[float, float]:
    reader = RowReader(path)
    result = timed(lambda: [reader.read(rows[start:start + batch]) for start in range(0, len(rows), batch)])
    reader.close()
    return result


def time_items(corpus: Path, mode: str, rows: np.ndarray, batch: int, crop: int) -> tuple[float, float]:
    """The per-item path: ``ECGWindows`` items collated by a DataLoader, no workers."""
    dataset = ECGWindows(corpus) if mode == "pretrain" else ECGWindows(corpus, crop=crop, augment=AUGMENT)
    loader = DataLoader(dataset, batch_size=batch, sampler=rows.tolist())
    return timed(lambda: [None for _ in loader])


# ----------------------------------------------------------------------------- the run

def busy_processes(seconds: float = 2.0) -> list[str]:
    """Other processes that used over a fifth of a core during ``seconds`` (name and CPU %)."""
    def ticks() -> dict[int, tuple[int, str]]:
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            found[int(entry.name)] = (int(fields[11]) + int(fields[12]), cmd[:90] or stat.split()[1])
        return found
    if not Path("/proc").is_dir():
        return []
    before = ticks()
    time.sleep(seconds)
    after = ticks()
    hz = os.sysconf("SC_CLK_TCK")
    busy = []
    for pid, (total, cmd) in after.items():
        share = (total - before.get(pid, (total, ""))[0]) / hz / seconds
        if share > 0.2:
            busy.append(short_command(f"{share:.0%} {cmd}"))
    return sorted(busy, reverse=True)


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(1)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # still delete the corpus when killed
    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    busy_start = busy_processes()
    args.dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="crema-dataset-bench-", dir=args.dir))
    rows_out: dict[tuple[str, str, str, int], tuple[list[float], list[float]]] = {}
    try:
        corpus, build_s = build_corpus(folder, args.windows)
        signals = corpus / "signals.npy"
        size_gb = signals.stat().st_size / 1e9
        print(f"built {corpus}: {args.windows} windows, {size_gb:.2f} GB in {build_s:.0f} s", file=sys.stderr)
        check = eviction_check(signals, args.windows, seed=12345)
        print(f"eviction check: 64 rows cold {check['cold_ms']} ms, warm {check['warm_ms']} ms", file=sys.stderr)
        reader = RowReader(signals)
        streams = [Stream(mode, corpus, workers, args.batch_size, args.crop)
                   for mode in ("pretrain", "crop_augment") for workers in args.workers]
        n_rows = args.batches * args.batch_size
        seed = 100
        for repeat in range(args.repeats):
            for cache in ("warm", "cold"):
                def prepare(rows: np.ndarray) -> None:
                    if cache == "warm":
                        warm_up(reader, rows)
                    else:
                        evict(signals)

                def record(name: str, mode: str, workers: int, seconds: tuple[float, float]) -> None:
                    rates = rows_out.setdefault((name, mode, cache, workers), ([], []))
                    rates[0].append(n_rows / seconds[0])
                    rates[1].append(n_rows / max(seconds[1], 1e-6))

                seed += 1
                rows = np.random.default_rng(seed).choice(args.windows, n_rows, replace=False)
                prepare(rows)
                record("memmap", "reference", 0, time_memmap(signals, rows))
                seed += 1
                rows = np.random.default_rng(seed).choice(args.windows, n_rows, replace=False)
                prepare(rows)
                record("reader", "reference", 0, time_reader(signals, rows, args.batch_size))
                if cache == "warm":
                    for mode in ("pretrain", "crop_augment"):
                        seed += 1
                        rows = np.random.default_rng(seed).choice(args.windows, n_rows, replace=False)
                        prepare(rows)
                        record("items", mode, 0, time_items(corpus, mode, rows, args.batch_size, args.crop))
                for stream in streams:
                    seed += 1
                    keys = stream.keys(seed, args.batches)
                    prepare(stream.rows(keys))
                    record("batches", stream.mode, stream.workers, stream.time(keys))
            print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr)
        for stream in streams:
            stream.close()
        reader.close()
    finally:
        if args.keep:
            print(f"kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    rows = []
    for (name, mode, cache, workers), (rates, per_cpu) in rows_out.items():
        rows.append({"name": name, "mode": mode, "cache": cache, "workers": workers,
                     "windows_per_s": round(statistics.median(rates), 1),
                     "windows_per_cpu_s": round(statistics.median(per_cpu), 1),
                     "repeats": [round(r, 1) for r in rates]})
    for row in rows:
        reference = next(r for r in rows if r["name"] == "memmap" and r["cache"] == row["cache"])
        row["ratio_vs_memmap"] = round(row["windows_per_s"] / reference["windows_per_s"], 3)
    result = {
        "benchmark": "dataset_throughput", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["benchmarks/dataset_throughput.py", *args.argv]),
        "windows": args.windows, "corpus_gb": round(size_gb, 2), "window_samples": 2500,
        "batch_size": args.batch_size, "batches": args.batches, "crop": args.crop, "augment": vars(AUGMENT),
        "repeats": args.repeats, "build_s": round(build_s, 1), "eviction_check": check,
        "cpu_count": os.cpu_count(), "torch_threads": 1, "torch": torch.__version__, "numpy": np.__version__,
        "python": platform.python_version(), "kernel": platform.release(),
        "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
        "load_average_1min": {"start": load_start, "end": os.getloadavg()[0]},
        "busy_processes": {"start": busy_start, "end": busy_processes()},
        "note": args.note, "seconds": round(time.perf_counter() - started, 1), "rows": rows,
    }
    result["targets"] = targets(rows)
    return result


def targets(rows: list[dict]) -> list[dict]:
    """The targets, per cache state: crop + augment on one core (no workers) at least
    :data:`TARGET_ONE_CORE` times the per-item figure before batching, in windows/s and per
    CPU-second (what a core shared with other jobs still measures), and times the per-item path
    of this run (warm only); 2 workers at least :data:`TARGET_TWO_WORKERS` times 1."""
    def find(name: str, cache: str, workers: int) -> dict | None:
        return next((r for r in rows if r["name"] == name and r["mode"] == "crop_augment"
                     and r["cache"] == cache and r["workers"] == workers), None)
    goal = TARGET_ONE_CORE * BASELINE_CROP_AUGMENT
    found = []
    for cache in ("warm", "cold"):
        one_core = find("batches", cache, 0)
        if one_core is not None:
            for key, unit in (("windows_per_s", "windows/s"), ("windows_per_cpu_s", "windows per CPU-s")):
                found.append({"target": f"crop + augment, no workers, {cache}: >= {goal:,.0f} {unit} "
                                        f"({TARGET_ONE_CORE:g}x {BASELINE_CROP_AUGMENT:,.0f})",
                              "measured": one_core[key], "met": one_core[key] >= goal})
            items = find("items", cache, 0)
            if items is not None:
                ratio = one_core["windows_per_s"] / items["windows_per_s"]
                found.append({"target": f"crop + augment, no workers, {cache}: >= {TARGET_ONE_CORE:g}x the "
                                        "per-item path of this run",
                              "measured": round(ratio, 2), "ratio": True, "met": ratio >= TARGET_ONE_CORE})
        one, two = find("batches", cache, 1), find("batches", cache, 2)
        if one and two:
            ratio = two["windows_per_s"] / one["windows_per_s"]
            found.append({"target": f"crop + augment, {cache}: 2 workers >= {TARGET_TWO_WORKERS:g}x 1 worker",
                          "measured": round(ratio, 2), "ratio": True, "met": ratio >= TARGET_TWO_WORKERS})
    return found


# ----------------------------------------------------------------------------- output

NAMES = {("memmap", "reference"): "memmap rows -> float32 numpy, one by one (reference)",
         ("reader", "reference"): "`RowReader` batches alone (float16)",
         ("items", "pretrain"): "per-item path: `ECGWindows` items, whole windows",
         ("items", "crop_augment"): "per-item path: `ECGWindows` items, crop + augment",
         ("batches", "pretrain"): "pretraining stream, whole windows (float16)",
         ("batches", "crop_augment"): "`ECGWindows` batches, crop + augment"}


def markdown(result: dict) -> str:
    """The table of docs/BENCHMARKS.md: conditions, one row per setting, then the targets."""
    load = result["load_average_1min"]
    busy = [short_command(line) for line in result["busy_processes"]["start"]] or ["none seen"]
    lines = [
        f"`{result['command']}` ({result['date'][:10]}): {result['windows']:,} windows of 12 x "
        f"{result['window_samples']} float16 ({result['corpus_gb']:.1f} GB, real ECG windows tiled), "
        f"batch {result['batch_size']}, {result['batches']} batches of random windows per measurement, "
        f"median of {result['repeats']}; crop {result['crop']} + augment {_augment_text(result['augment'])}; "
        f"{result['cpu_count']} CPU cores, {result['memory_gb']:g} GB memory, one torch thread per process, "
        f"malloc tunables {'on' if result.get('glibc_tunables') else 'off'} (as the `crema` command runs), "
        f"torch {result['torch']}, kernel {result['kernel']}. Eviction check (64 rows read one by one): "
        f"{result['eviction_check']['cold_ms']} ms cold, {result['eviction_check']['warm_ms']} ms warm. "
        f"Load average {load['start']:.1f} at the start, {load['end']:.1f} at the end; other busy processes "
        f"at the start: {'; '.join(busy)}." + (f" {result['note']}" if result.get("note") else ""),
        "",
        "| run | workers | warm: windows/s | x memmap | per CPU-s | cold: windows/s | x memmap | per CPU-s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    keys = []
    for row in result["rows"]:
        key = (row["name"], row["mode"], row["workers"])
        if key not in keys:
            keys.append(key)
    for name, mode, workers in keys:
        cells = []
        for cache in ("warm", "cold"):
            row = next((r for r in result["rows"] if (r["name"], r["mode"], r["workers"], r["cache"])
                        == (name, mode, workers, cache)), None)
            cells += ([f"{row['windows_per_s']:,.0f}", f"{row['ratio_vs_memmap']:.2f}",
                       f"{row['windows_per_cpu_s']:,.0f}"] if row else ["-", "-", "-"])
        lines.append(f"| {NAMES[(name, mode)]} | {workers} | " + " | ".join(cells) + " |")
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    for t in result["targets"]:
        value = f"{t['measured']:.2f}x" if t.get("ratio") else f"{t['measured']:,.0f}"
        lines.append(f"| {t['target']} | {value} | {'yes' if t['met'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def short_command(line: str) -> str:
    """A process line with each path cut to its last part (``/x/y/python /x/run.py`` ->
    ``python run.py``)."""
    return " ".join(Path(token).name if "/" in token else token for token in line.split())


def _augment_text(augment: dict) -> str:
    return "(" + ", ".join(f"{k} {v:g}" for k, v in augment.items() if v) + ")"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--windows", type=int, default=200_000, help="corpus size (default 200,000: about 12 GB)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--batches", type=int, default=100, help="batches per measurement")
    p.add_argument("--crop", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()),
                   help="where the temporary corpus is built (needs its size free)")
    p.add_argument("--keep", action="store_true", help="keep the corpus folder")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "dataset_throughput.json")
    p.add_argument("--doc", type=Path, help="rewrite the table between the dataset-table markers of this file")
    p.add_argument("--render", type=Path, help="only print (and --doc) the table of this JSON")
    p.add_argument("--note", default="", help="a sentence for the doc, e.g. what else was running")
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    env = allocator_environment(dict(os.environ), sys.platform, platform.libc_ver()[0])
    if env is not None and not args.render:  # run as the crema command does (its malloc tunables)
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    if args.render:
        result = json.loads(args.render.read_text())
        result["targets"] = targets(result["rows"])
    else:
        result = run(args)
        atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    print(markdown(result))
    if args.doc:
        write_doc(args.doc, markdown(result), (DOC_START, DOC_END))
    return 0


if __name__ == "__main__":
    sys.exit(main())
