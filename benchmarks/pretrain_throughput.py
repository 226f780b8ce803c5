"""Pretraining throughput: what CREMA's two views cost against one-view MAE and a plain ViT.

A full training step (forward + backward + AdamW) on real ECGs (the first B rows of
``ptbxl-unlabeled/signals.npy``, window 2500 at 250 Hz), for each model size:

* ``crema``: two views, each masked 75 % per lead, batched through the encoder together;
  per-lead decoder on both views; InfoNCE over the projected pooled views.
* ``mae``: the same encoder and decoder, one view, no contrastive term (``mode="mae"``).
* ``vit``: a reference ViT of the same width and depth built from
  ``torch.nn.TransformerEncoderLayer`` over ALL 12 x N tokens, with a linear patch embedding
  and no conv stem; mean-pooled output, dummy MSE target (a supervised-style step).

Timing: all modes of one size live in one process and their steps are interleaved
(crema, mae, vit, crema, ...), so a load spike from other users of a shared machine hits
every mode alike; the median of ``--steps`` timed steps after ``--warmup`` is reported, as
wall-clock seconds and as process CPU seconds (user + system of all threads), whose ratios are
the more trustworthy on a machine shared with other jobs.
Memory: a fresh subprocess per (size, mode) runs two steps; on CPU we report the peak
resident set size (``resource.getrusage`` ``ru_maxrss``, which sees torch's allocations,
unlike ``tracemalloc``) and its growth over the steps; on CUDA ``max_memory_allocated``.

Usage::

    python benchmarks/pretrain_throughput.py                     # tiny + small on CPU (+ CUDA if present)
    python benchmarks/pretrain_throughput.py --sizes tiny --steps 5 --device cpu

Writes a table to stdout and JSON to ``runs/bench/pretrain_throughput.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch
from torch import nn

MODES = ("crema", "mae", "vit")


# ----------------------------------------------------------------------------- the reference ViT

class ReferenceViT(nn.Module):
    """Plain ViT over all ``C * N`` patch tokens: linear patch embedding, learned position
    table, ``nn.TransformerEncoderLayer`` blocks (pre-norm, GELU), mean pool, LayerNorm."""

    def __init__(self, n_leads: int, window: int, patch: int, dim: int, depth: int, heads: int):
        super().__init__()
        self.patch = patch
        self.embed = nn.Linear(patch, dim)
        self.pos = nn.Parameter(torch.zeros(1, n_leads * (window // patch), dim))
        layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t = x.shape
        tokens = self.embed(x.reshape(b, c * (t // self.patch), self.patch)) + self.pos
        return self.norm(self.blocks(tokens).mean(dim=1))


# ----------------------------------------------------------------------------- one process's work

def _load_batch(batch: int, window: int) -> torch.Tensor:
    from crema.paths import data_root

    path = data_root() / "ptbxl-unlabeled" / "signals.npy"
    if not path.is_file():
        sys.exit(f"benchmark needs the real ECGs at {path} (set CREMA_DATA)")
    return torch.from_numpy(np.load(path, mmap_mode="r")[:batch, :, :window].astype(np.float32))


def _build(mode: str, size: str, window: int, device: torch.device):
    """``(model, step_fn)`` for one mode; ``step_fn(x)`` runs forward + backward + AdamW."""
    from crema.config import ModelConfig, ObjectiveConfig
    from crema.model.crema import CREMA
    from crema.train.schedule import make_adamw

    torch.manual_seed(0)
    cfg = ModelConfig.from_size(size, window=window)
    if mode == "vit":
        model = ReferenceViT(cfg.n_leads, window, cfg.patch_size, cfg.dim, cfg.depth, cfg.heads).to(device)
        opt = make_adamw(model, 1e-4, 0.05)

        def step(x: torch.Tensor) -> None:
            pooled = model(x)
            loss = nn.functional.mse_loss(pooled, torch.zeros_like(pooled))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    else:
        model = CREMA(cfg, ObjectiveConfig(mode=mode)).to(device)
        opt = make_adamw(model, 1e-4, 0.05)

        def step(x: torch.Tensor) -> None:
            loss = model(x)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return model, step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device):
    import contextlib

    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def time_worker(size: str, modes: list[str], batch: int, window: int, steps: int, warmup: int,
                device: torch.device) -> dict:
    """Interleaved timing of ``modes`` for one size: seconds per step, all samples."""
    x = _load_batch(batch, window).to(device)
    built = {mode: _build(mode, size, window, device) for mode in modes}
    samples: dict[str, list[float]] = {mode: [] for mode in modes}
    cpu: dict[str, list[float]] = {mode: [] for mode in modes}
    for i in range(warmup + steps):
        for mode in modes:
            _, step = built[mode]
            _sync(device)
            start, start_cpu = time.perf_counter(), time.process_time()
            with _autocast(device):
                step(x)
            _sync(device)
            if i >= warmup:
                samples[mode].append(time.perf_counter() - start)
                cpu[mode].append(time.process_time() - start_cpu)
    params = {mode: sum(p.numel() for p in m.parameters()) for mode, (m, _) in built.items()}
    return {"samples": samples, "cpu": cpu, "params": params}


def memory_worker(size: str, mode: str, batch: int, window: int, device: torch.device) -> dict:
    """Peak memory of two training steps in this (fresh) process."""
    x = _load_batch(batch, window).to(device)
    _, step = _build(mode, size, window, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(2):
        with _autocast(device):
            step(x)
    _sync(device)
    after_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"peak_rss_mb": after_kb / 1024, "rss_growth_mb": (after_kb - before_kb) / 1024}
    if device.type == "cuda":
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


# ----------------------------------------------------------------------------- the driver

def _subprocess(args: list[str], threads: int | None) -> dict:
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark worker failed: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _devices(choice: str) -> list[str]:
    if choice == "auto":
        return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    return [choice]


def run(args: argparse.Namespace) -> dict:
    rows = []
    for device in _devices(args.device):
        for size in args.sizes:
            common = ["--size", size, "--batch-size", str(args.batch_size), "--window", str(args.window),
                      "--device", device]
            print(f"[{device} {size}] timing {', '.join(args.modes)} interleaved ...", file=sys.stderr)
            timing = _subprocess(["--worker", "time", "--modes", *args.modes, "--steps", str(args.steps),
                                  "--warmup", str(args.warmup), *common], args.threads)
            for mode in args.modes:
                print(f"[{device} {size}] memory of {mode} ...", file=sys.stderr)
                memory = _subprocess(["--worker", "memory", "--modes", mode, *common], args.threads)
                secs, cpu_secs = timing["samples"][mode], timing["cpu"][mode]
                median = statistics.median(secs)
                rows.append({"device": device, "size": size, "mode": mode, "batch": args.batch_size,
                             "window": args.window, "params": timing["params"][mode],
                             "step_s_median": median, "step_s_samples": secs,
                             "step_s_min": min(secs),
                             "cpu_s_median": statistics.median(cpu_secs), "cpu_s_samples": cpu_secs,
                             "ecgs_per_s": args.batch_size / median, **memory})
    for row in rows:
        same = {r["mode"]: r for r in rows if r["device"] == row["device"] and r["size"] == row["size"]}
        for ref in ("mae", "vit"):
            other = same.get(ref)
            # Wall-clock ratio, and the ratio of process CPU time (user + system, all threads):
            # on a machine shared with other jobs the second counts the work done rather than
            # the time spent waiting for a core. On CUDA only the wall-clock ratio means much.
            row[f"per_ecg_vs_{ref}"] = row["step_s_median"] / other["step_s_median"] if other else None
            row[f"cpu_vs_{ref}"] = row["cpu_s_median"] / other["cpu_s_median"] if other else None
    return {
        "benchmark": "pretrain_throughput",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                    "torch": torch.__version__, "threads": args.threads or torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    "load_avg_at_end": os.getloadavg()},
        "settings": {"batch_size": args.batch_size, "window": args.window, "steps": args.steps,
                     "warmup": args.warmup, "mask_ratio": 0.75, "patch_size": 50,
                     "memory": "CPU: ru_maxrss of a fresh process (peak and growth over 2 steps); "
                               "CUDA: torch.cuda.max_memory_allocated"},
        "rows": rows,
    }


def print_table(result: dict) -> None:
    header = (f"{'device':6} {'size':5} {'mode':6} {'params':>10} {'step s':>8} {'CPU s':>7} {'ECG/s':>7} "
              f"{'x MAE':>6} {'(CPU)':>6} {'x ViT':>6} {'(CPU)':>6} {'peak RSS MB':>11} "
              f"{'+RSS MB':>8} {'CUDA MB':>8}")
    print(header)
    print("-" * len(header))
    for r in result["rows"]:
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        cuda = r.get("cuda_peak_mb")
        print(f"{r['device']:6} {r['size']:5} {r['mode']:6} {r['params']:>10,} {r['step_s_median']:>8.3f} "
              f"{r['cpu_s_median']:>7.2f} {r['ecgs_per_s']:>7.2f} {fmt(r['per_ecg_vs_mae']):>6} "
              f"{fmt(r['cpu_vs_mae']):>6} {fmt(r['per_ecg_vs_vit']):>6} {fmt(r['cpu_vs_vit']):>6} "
              f"{r['peak_rss_mb']:>11.0f} {r['rss_growth_mb']:>8.0f} {'-' if cuda is None else f'{cuda:.0f}':>8}")
    m = result["machine"]
    print(f"\n{m['platform']}, {m['cpu_count']} CPUs, torch {m['torch']}, {m['threads']} threads, "
          f"load average at end {tuple(round(v, 1) for v in m['load_avg_at_end'])}")
    print("step s / CPU s: median wall-clock / process CPU seconds (all threads) of one training step. "
          "x MAE / x ViT: median wall-clock step time per ECG relative to one-view MAE / the reference "
          "ViT (same batch and size, steps interleaved in one process); (CPU): the same ratio of CPU time.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", default=["tiny", "small"])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--window", type=int, default=2500)
    p.add_argument("--steps", type=int, default=5, help="timed steps per mode (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="auto", help="auto (CPU, plus CUDA when present), cpu or cuda")
    p.add_argument("--threads", type=int, default=None,
                   help="OMP threads of the workers (default torch's); 1 makes CPU time a clean measure "
                        "of work on a shared machine (no threads spin-waiting for a preempted sibling)")
    p.add_argument("--out", default="runs/bench/pretrain_throughput.json")
    # internal: run one measurement in this process
    p.add_argument("--worker", choices=["time", "memory"], help=argparse.SUPPRESS)
    p.add_argument("--size", help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        device = torch.device(args.device)
        if args.worker == "time":
            out = time_worker(args.size, args.modes, args.batch_size, args.window, args.steps,
                              args.warmup, device)
        else:
            out = memory_worker(args.size, args.modes[0], args.batch_size, args.window, device)
        print(json.dumps(out))
        return 0

    from crema.atomic import atomic_write_text

    result = run(args)
    print_table(result)
    atomic_write_text(args.out, json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
