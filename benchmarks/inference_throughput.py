"""Inference speed of CREMA encoders: embeddings per second at batch 64 and batch-1 latency.

    python benchmarks/inference_throughput.py                       # CPU, tiny + small
    python benchmarks/inference_throughput.py --threads 1             # a busy shared CPU
    python benchmarks/inference_throughput.py --device cuda --sizes tiny small base

Encoders are randomly initialised (speed does not depend on the weights). Every model sees
10 s windows of 2500 samples (12 leads, 250 Hz). Rows:

- ``resnet1d``: the supervised 1-D ResNet baseline, the reference for the ratio column
  (measured in the same run, so the ratio holds even when the machine is busy);
- one row per SiT size: ``embeddings/s`` at batch 64 (median over ``--repeats`` timed
  batches after a warm-up) and batch-1 latency (median and p95 over ``--latency-runs`` calls);
- ``api end-to-end``: ``CremaModel.embed`` on real PTB-XL files (read, resample, filter,
  z-score, embed) with the tiny encoder, as records per second.

Prints a table and writes ``runs/bench/inference_throughput.json``.

Small-model latency (``--small-model crema-mini-ecg12``): how long one call of a shipped model
takes on real records of the packaged sample, where per-call overheads (reading threads, crop
loops, Python) weigh as much as the arithmetic. Rows, timed interleaved (one call of each in turn,
``--latency-runs`` rounds, medians of wall-clock and of process CPU time):

- ``reference matmul``: a 512^3 fp32 matrix multiply, measured in the same rounds; every row's
  ratio is its wall-clock median over this one's, which holds when other jobs slow the machine;
- ``encode 1 window``: ``CremaModel.encode_windows`` on one preprocessed 10 s window (the
  model's crops averaged), no reading or preprocessing;
- ``embed(Recording)``: ``CremaModel.embed`` of one record in memory (preprocessing included);
- ``embed(file)``: ``CremaModel.embed`` of one WFDB file (reading included);
- ``embed(8 files)``: eight files in one call, per call.

``--threads`` sets the torch threads (default 1), ``--small-threads 1 2`` measures several in one
run. Prints a table, writes ``runs/bench/small_model_latency.json``; ``--doc docs/BENCHMARKS.md``
writes the table between the ``small-model-latency`` markers; ``--render JSON`` only renders
(``--baseline JSON`` adds an earlier run's figures and the speed-up over it).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from crema.config import ModelConfig, ObjectiveConfig, PreprocessConfig
from crema.config_io import to_dict
from crema.precision import SETTINGS, autocast, resolve
from crema.model.resnet1d import ResNet1d
from crema.model.sit import SiTEncoder
from crema.paths import data_root

from doc_table import write_doc

WINDOW = 2500
DEFAULT_OUT = "runs/bench/inference_throughput.json"
SMALL_DOC = ("<!-- small-model-latency:start -->", "<!-- small-model-latency:end -->")
REFERENCE_N = 512  # the reference matmul's size (n x n times n x n, fp32)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Callable[[], object], runs: int, device: torch.device) -> list[float]:
    """Wall-clock seconds of ``runs`` calls of ``fn`` (after one untimed warm-up call)."""
    fn()
    _sync(device)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


def measure(model: torch.nn.Module, device: torch.device, batch: int, repeats: int,
            latency_runs: int, precision: str = "fp32") -> dict:
    """Throughput at ``batch`` and batch-1 latency of ``model(x, lead_mask=...)``, run in
    ``precision`` (a :mod:`crema.precision` setting)."""
    model = model.to(device).eval()
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 12, WINDOW, generator=generator).to(device)
    mask = torch.ones(batch, 12, dtype=torch.bool, device=device)
    with torch.inference_mode(), autocast(device, precision):
        batch_times = time_calls(lambda: model(x, lead_mask=mask), repeats, device)
        one_times = time_calls(lambda: model(x[:1], lead_mask=mask[:1]), latency_runs, device)
    one_ms = np.array(one_times) * 1000.0
    median_batch = statistics.median(batch_times)
    return {
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "batch": batch, "repeats": repeats, "batch_seconds": [round(t, 4) for t in batch_times],
        "embeddings_per_s": round(batch / median_batch, 2),
        "latency_runs": latency_runs,
        "latency_ms_median": round(float(np.median(one_ms)), 2),
        "latency_ms_p95": round(float(np.percentile(one_ms, 95)), 2),
    }


def end_to_end(device: torch.device, n_records: int, batch: int) -> dict | None:
    """Records per second through ``crema.load(...).embed(files)`` with a random tiny model."""
    from crema.model.crema import CREMA
    from crema.train.checkpoint import save_checkpoint
    from crema.use.api import load

    folder = data_root() / "ptbxl" / "records500" / "00000"
    files = sorted(folder.glob("*_hr.hea"))[:n_records]
    if not files:
        return None
    model_cfg = ModelConfig.from_size("tiny", window=WINDOW)
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        save_checkpoint(tmp, CREMA(model_cfg, ObjectiveConfig()), {
            "kind": "pretrain", "model": to_dict(model_cfg), "objective": to_dict(ObjectiveConfig()),
            "preprocess": to_dict(PreprocessConfig())})
        model = load(tmp, device=device)  # in the library's default precision (auto)
        model.embed(files[:2], batch_size=batch)  # warm-up
        start = time.perf_counter()
        emb = model.embed(files, batch_size=batch)
        seconds = time.perf_counter() - start
    return {"records": len(files), "source": "PTB-XL 500 Hz, 10 s", "seconds": round(seconds, 3),
            "records_per_s": round(len(files) / seconds, 2), "embeddings": list(emb.shape)}


def interleaved(calls: dict[str, Callable[[], object]], rounds: int) -> dict[str, dict]:
    """Median wall-clock and process-CPU milliseconds of each call, timed in turn for ``rounds``
    rounds after one untimed call each (so that a change of the machine's load hits every row)."""
    for fn in calls.values():
        fn()
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            cpu, wall = time.process_time(), time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {name: {"wall_ms": round(1000 * statistics.median(w for w, _ in runs), 3),
                   "cpu_ms": round(1000 * statistics.median(c for _, c in runs), 3)}
            for name, runs in samples.items()}


def small_model_calls(name: str) -> tuple[dict[str, Callable[[], object]], dict]:
    """The calls of the small-model latency rows (see the module docstring) and what they run on."""
    from crema.data.readers import read_record
    from crema.paths import sample_root
    from crema.use.api import load

    model = load(name, device="cpu")
    files = sorted((sample_root() / "records100" / "00000").glob("*.hea"))[:8]
    record = read_record(files[0])
    windows = model.prepare(record, str(files[0]))
    one, mask = windows.signals[:1], windows.lead_mask[None]
    a, b = torch.randn(REFERENCE_N, REFERENCE_N), torch.randn(REFERENCE_N, REFERENCE_N)
    calls = {"reference matmul": lambda: torch.matmul(a, b),
             "encode 1 window": lambda: model.encode_windows(one, mask),
             "embed(Recording)": lambda: model.embed(record),
             "embed(file)": lambda: model.embed(files[0]),
             "embed(8 files)": lambda: model.embed(files)}
    setup = {"model": name, "precision": model.precision, "window": int(one.shape[-1]),
             "crop": model.crop, "record": f"{files[0].parent.name}/{files[0].name} (packaged sample, "
             f"{record.fs:g} Hz, {record.signal.shape[1] / record.fs:g} s)", "files": len(files)}
    return calls, setup


def small_model_latency(args: argparse.Namespace) -> dict:
    """The small-model latency rows at each thread count of ``args.small_threads``."""
    runs = {}
    for threads in args.small_threads:
        torch.set_num_threads(threads)
        calls, setup = small_model_calls(args.small_model)
        rows = interleaved(calls, args.latency_runs)
        reference = rows["reference matmul"]
        for row in rows.values():
            row["vs_matmul"] = round(row["wall_ms"] / reference["wall_ms"], 3)
            row["cpu_vs_matmul"] = round(row["cpu_ms"] / reference["cpu_ms"], 3)
        runs[str(threads)] = rows
    return {"benchmark": "small_model_latency", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version(),
            "load_average_1min": _load_average(), "rounds": args.latency_runs,
            "reference": f"{REFERENCE_N}^3 fp32 matmul", **setup, "threads": runs,
            "command": " ".join(["inference_throughput.py", *args.argv])}


def small_model_table(result: dict, baseline: dict | None = None) -> str:
    """The Markdown table of a small-model latency run (with ``baseline``: its figures too)."""
    lines = [f"`{result['command']}`: `{result['model']}` ({result['precision']}, crop {result['crop']} of a "
             f"{result['window']}-sample window), record {result['record']}; medians of {result['rounds']} "
             f"interleaved rounds, {result['cpu_count']} CPU cores (1-minute load {result['load_average_1min']}), "
             f"torch {result['torch']}. *x matmul*: wall-clock median over the {result['reference']} timed "
             "in the same rounds; *CPU x matmul*: the same with process CPU time (other jobs on the machine "
             "slow it less)."]
    if baseline:
        lines[0] += (f" *before*: `{baseline['command']}` on the code before the small-model changes "
                     f"(load {baseline['load_average_1min']}); *speed-up*: before's CPU x matmul over this run's.")
    head = "| threads | call | wall ms | CPU ms | x matmul | CPU x matmul |"
    rule = "|---|---|---|---|---|---|"
    if baseline:
        head += " before: CPU ms | before: CPU x matmul | speed-up |"
        rule += "---|---|---|"
    lines += ["", head, rule]
    for threads, rows in result["threads"].items():
        old_rows = (baseline or {}).get("threads", {}).get(threads, {})
        for name, row in rows.items():
            line = (f"| {threads} | {name} | {row['wall_ms']:.2f} | {row['cpu_ms']:.2f} | {row['vs_matmul']:.2f} "
                    f"| {row['cpu_vs_matmul']:.2f} |")
            if baseline:
                old = old_rows.get(name)
                line += (" | | |" if old is None else f" {old['cpu_ms']:.2f} | {old['cpu_vs_matmul']:.2f} "
                                                      f"| {old['cpu_vs_matmul'] / row['cpu_vs_matmul']:.2f}x |")
            lines.append(line)
    return "\n".join(lines) + "\n"


def small_model_main(args: argparse.Namespace) -> int:
    """``--small-model`` / ``--render``: measure (or load) the small-model latency, print, write."""
    if args.render:
        result = json.loads(args.render.read_text())
    else:
        result = small_model_latency(args)
        out = Path(args.out if args.out != DEFAULT_OUT else "runs/bench/small_model_latency.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
    baseline = json.loads(args.baseline.read_text()) if args.baseline else None
    table = small_model_table(result, baseline)
    print()
    print(table)
    if args.doc:
        write_doc(args.doc, table, SMALL_DOC)
    return 0


def _load_average() -> float | None:
    """The 1-minute load average (how busy the shared machine was), where the OS reports one."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small"], help="SiT sizes (tiny small base)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch", type=int, default=64, help="throughput batch size (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed batches per model (default 3)")
    parser.add_argument("--latency-runs", type=int, default=30, help="batch-1 calls per model (default 30)")
    parser.add_argument("--e2e-records", type=int, default=64, help="files for the end-to-end row (0 = skip)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--precision", default="auto", choices=SETTINGS,
                        help="encoder rows: auto = what the library uses (bf16 where the device has it)")
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--small-model", help="measure the small-model latency of this shipped model or "
                                              "folder instead (e.g. crema-mini-ecg12)")
    parser.add_argument("--small-threads", type=int, nargs="+", help="thread counts of the small-model "
                                                                      "rows (default: --threads, else 1)")
    parser.add_argument("--doc", type=Path, help="small-model mode: rewrite the table between the "
                                                 "small-model-latency markers of this file")
    parser.add_argument("--render", type=Path, help="small-model mode: only render this JSON")
    parser.add_argument("--baseline", type=Path, help="small-model mode: an earlier run's JSON to compare with")
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if args.small_model or args.render:
        args.small_threads = args.small_threads or [args.threads or 1]
        return small_model_main(args)
    device = torch.device(args.device)
    if args.threads:
        # On a CPU shared with other jobs, more threads than free cores make small ops wait on
        # each other; pinning the count makes runs comparable.
        torch.set_num_threads(args.threads)

    load_start = _load_average()
    rows: dict[str, dict] = {}
    torch.manual_seed(0)
    rows["resnet1d"] = measure(ResNet1d(12, 5), device, args.batch, args.repeats, args.latency_runs, args.precision)
    for size in args.sizes:
        torch.manual_seed(0)
        encoder = SiTEncoder(ModelConfig.from_size(size, window=WINDOW))
        rows[f"sit-{size}"] = measure(encoder, device, args.batch, args.repeats, args.latency_runs, args.precision)
    reference = rows["resnet1d"]["embeddings_per_s"]
    for row in rows.values():
        row["throughput_vs_resnet1d"] = round(row["embeddings_per_s"] / reference, 3)
    e2e = end_to_end(device, args.e2e_records, args.batch) if args.e2e_records > 0 else None

    print(f"\nInference on {device} ({torch.get_num_threads()} threads, {resolve(args.precision, device)}), "
          f"window {WINDOW}, "
          f"random-init weights; batch {args.batch}, median of {args.repeats}; latency over "
          f"{args.latency_runs} batch-1 calls")
    header = f"{'model':<12}{'params M':>10}{'emb/s':>10}{'vs resnet':>11}{'lat med ms':>12}{'lat p95 ms':>12}"
    print(header)
    print("-" * len(header))
    for name, row in rows.items():
        print(f"{name:<12}{row['params_m']:>10}{row['embeddings_per_s']:>10}{row['throughput_vs_resnet1d']:>11}"
              f"{row['latency_ms_median']:>12}{row['latency_ms_p95']:>12}")
    if e2e:
        print(f"api end-to-end (sit-tiny, {e2e['records']} PTB-XL files incl. reading + preprocessing): "
              f"{e2e['records_per_s']} records/s")

    result = {
        "benchmark": "inference_throughput",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__, "python": platform.python_version(),
        "window": WINDOW, "weights": "random init (speed does not depend on the values)",
        "precision": resolve(args.precision, device),
        "load_average_1min": {"start": load_start, "end": _load_average()},
        "note": "CPU shared with other processes during the run; compare ratios, not absolute numbers",
        "reference": "resnet1d", "models": rows, "api_end_to_end": e2e,
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
