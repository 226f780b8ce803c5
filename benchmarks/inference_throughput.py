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

from crema.config import ModelConfig, ObjectiveConfig, PreprocessConfig, to_dict
from crema.precision import SETTINGS, autocast, resolve
from crema.model.resnet1d import ResNet1d
from crema.model.sit import SiTEncoder
from crema.paths import data_root

WINDOW = 2500


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
    parser.add_argument("--out", default="runs/bench/inference_throughput.json")
    args = parser.parse_args(argv)
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
