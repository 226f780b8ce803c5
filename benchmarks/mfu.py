"""Model-FLOP utilisation (MFU) of CREMA on this machine: how close each workload runs to the
measured matrix-multiply peak, in fp32 and bf16, with and without the allocator settings.

    python benchmarks/mfu.py                              # tiny + mini, one thread, ~5-10 min
    python benchmarks/mfu.py --sizes tiny mini small      # small adds several minutes
    python benchmarks/mfu.py --render results/bench/mfu-cpu.json --doc docs/BENCHMARKS.md   # table only
    python benchmarks/mfu.py --device cuda --sizes tiny mini small --doc docs/BENCHMARKS.md   # on a GPU

What it does:

1. The peak: median GFLOP/s of a 2048^3 matrix multiply in fp32 and in bf16, in the same process
   as the workloads (bf16 is native where the CPU has AVX512-BF16/AMX, emulated otherwise).
2. Workloads per model size (random init; 12 leads, ``--window`` samples per lead, 10 s at
   250 Hz by default = 600 tokens): ``embed b1`` (latency of one ECG), ``embed bN`` (throughput
   at ``--batch``), ``MAE step`` and ``CREMA step`` (forward, backward, AdamW at
   ``--step-batch``; CREMA has two views of the same crop).
3. Variants, timed interleaved (one call of each in turn, ``--repeats`` rounds, medians):
   ``baseline`` = the code before this benchmark (fp32, whole-batch conv stem, the whole batch
   in one pass), ``fp32`` (the library's :mod:`crema.kernels` policy: stem in chunks of patches, inference in parts of the batch), ``bf16`` (autocast; in training attention as explicit matmuls
   with an fp32 softmax, in inference too for heads of 32+ channels), and the other attention
   kernel under bf16 to show why each path uses the one it does (``bf16 sdpa`` / ``bf16 explicit``).
4. Each size and workload runs in two child processes, one after the other: one started with
   glibc's malloc tunables (what the ``crema`` command sets, see :mod:`crema.cli`), one without
   (close in time, because the load of a shared machine drifts). Page faults per call show
   the difference; memory is the peak RSS growth during a variant's first call, after
   ``malloc_trim`` has handed free heap memory back (so the growth is the call's working set).

Times are CPU seconds of the process (one torch thread), so that other jobs on a shared
machine slow the wall clock but not the figures much; wall-clock times are in the JSON too.
FLOPs are counted analytically (multiply-add = 2, backward = 2x forward except the first
convolution's, which needs no input gradient) and cross-checked with
``torch.utils.flop_counter.FlopCounterMode`` plus the CPU flash-attention ops it does not know.

Prints a table and writes ``runs/bench/mfu.json``; ``--doc`` replaces the table between the
``mfu-table`` markers of a Markdown file (docs/BENCHMARKS.md; ``make bench`` passes it).

On a GPU (``--device cuda``; ``benchmarks/gpu_session.sh`` runs it with the pretraining and DDP
smoke tests) the same workloads run in one process: wall-clock time between
``torch.cuda.synchronize`` calls, GEMM peaks in fp32 with TF32 off and on and in bf16, variants
``fp32``, ``bf16`` (autocast; fused SDPA attention in both) and ``bf16+compile`` (torch.compile,
its compile time measured apart and left out of the steady state), the CUDA allocator's peak
memory. It writes ``runs/bench/mfu-cuda.json`` (after every size, so a run cut short keeps its
figures) and its own table between the ``mfu-gpu-table`` markers.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import torch

from crema.kernels import MALLOC_TUNABLES  # what the crema command sets

from doc_table import write_doc

HERE = Path(__file__).resolve().parent
DOC_START, DOC_END = "<!-- mfu-table:start -->", "<!-- mfu-table:end -->"
WORKLOADS = ("embed_b1", "embed", "mae_step", "crema_step")
# The speed targets (per thread, tiny). "Today" is the baseline variant in the child without
# the allocator settings, measured in the same run.
TARGET_EMBED_PER_S, TARGET_LATENCY_MS, TARGET_BF16_MFU, TARGET_STEP_SPEEDUP = 60.0, 15.0, 0.20, 2.0


# ----------------------------------------------------------------------------- FLOPs

def encoder_flops(cfg, tokens_per_lead: int) -> int:
    """Forward FLOPs of the SiT encoder on one ECG with ``tokens_per_lead`` patches per lead.

    Stem per patch: conv 1->S (k 7) over P samples, conv S->S (k 5, stride 2) over P/2, Linear
    S*P/2 -> D; blocks per token 24 D^2 (qkv 3D^2, proj D^2, MLP 8D^2, x2 for multiply-add);
    attention 4 L^2 D per ECG (scores and weighted sum).
    """
    p, s, d = cfg.patch_size, cfg.stem_channels, cfg.dim
    half = (p + 1) // 2
    tokens = cfg.n_leads * tokens_per_lead
    stem = 2 * (7 * s * p + 5 * s * s * half + s * half * d) * tokens
    blocks = cfg.depth * (2 * tokens * (4 * d * d + 2 * d * int(d * cfg.mlp_ratio)) + 4 * tokens * tokens * d)
    return stem + blocks


def first_conv_flops(cfg, tokens_per_lead: int) -> int:
    """Forward FLOPs of the stem's first convolution (its backward has no input gradient)."""
    return 2 * 7 * cfg.stem_channels * cfg.patch_size * cfg.n_leads * tokens_per_lead


def decoder_flops(cfg, visible_per_lead: int) -> int:
    """Forward FLOPs of the MAE decoder for one ECG: embed visible tokens D -> Dd, blocks over all
    C*N tokens (attention within each lead in ``per_lead`` mode), head Dd -> P."""
    n, c, dd = cfg.n_patches, cfg.n_leads, cfg.decoder_dim
    tokens = c * n
    embed = 2 * c * visible_per_lead * cfg.dim * dd
    per_token = 2 * (4 * dd * dd + 2 * dd * int(dd * cfg.mlp_ratio))
    seq, n_seq = (n, c) if cfg.decoder_mode == "per_lead" else (tokens, 1)
    blocks = cfg.decoder_depth * (per_token * tokens + n_seq * 4 * seq * seq * dd)
    return embed + blocks + 2 * tokens * dd * cfg.patch_size


def projector_flops(cfg) -> int:
    return 2 * (cfg.dim * cfg.projector_hidden + cfg.projector_hidden * cfg.projector_dim)


def analytic_flops(cfg, workload: str, mask_ratio: float) -> int:
    """Model FLOPs per ECG of ``workload`` (a step: forward + backward = 3x forward, less the
    first convolution's input gradient)."""
    from crema.model.masking import n_visible

    n = cfg.n_patches
    if workload in ("embed", "embed_b1"):
        return encoder_flops(cfg, n)
    k = n_visible(n, mask_ratio)
    view = encoder_flops(cfg, k) + decoder_flops(cfg, k)
    step = 3 * view - first_conv_flops(cfg, k)
    if workload == "mae_step":
        return step
    return 2 * step + 2 * 3 * projector_flops(cfg)


def _cpu_attention_formulas() -> dict:
    """FlopCounterMode formulas for the CPU flash-attention ops it does not count. The backward
    counts the four gradient matmuls (2x forward), not the recomputed scores, as model FLOPs do."""
    from torch.utils import flop_counter

    aten = torch.ops.aten

    def forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    def backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return 2 * flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)

    return {aten._scaled_dot_product_flash_attention_for_cpu: forward,
            aten._scaled_dot_product_flash_attention_for_cpu_backward: backward}


def counted_flops(run: Callable[[], None], batch: int) -> int:
    """FLOPs per ECG of one call of ``run`` (over ``batch`` ECGs) by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False, custom_mapping=_cpu_attention_formulas())
    with counter:
        run()
    return counter.get_total_flops() // batch


# ----------------------------------------------------------------------------- timing and memory

def gemm_peak(dtype: torch.dtype, n: int, repeats: int) -> float:
    """Median GFLOP/s of an ``n x n x n`` matrix multiply in ``dtype``."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.matmul(a, b)
    times = []
    for _ in range(repeats):
        start = time.process_time()
        torch.matmul(a, b)
        times.append(time.process_time() - start)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def _status_kb(field: str) -> int | None:
    """A ``kB`` field of /proc/self/status (VmRSS, VmHWM), or None off Linux."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's high-water mark of this process's RSS (Linux ``clear_refs`` 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _trim_heap() -> None:
    """Hand free heap memory back to the OS (glibc ``malloc_trim``), so that the RSS before a
    call is its live data and the growth during it the call's own working set."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def peak_rss_growth_mb(run: Callable[[], None]) -> float | None:
    """Peak RSS during one call of ``run`` above the RSS before it, MB (None off Linux)."""
    _trim_heap()
    before = _status_kb("VmRSS")
    if before is None or not _reset_peak_rss():
        return None
    run()
    peak = _status_kb("VmHWM")
    return None if peak is None else round(max(0, peak - before) / 1024, 1)


def timed_call(run: Callable[[], None]) -> tuple[float, float, int]:
    """CPU seconds, wall seconds and minor page faults of one call."""
    import resource

    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    cpu, wall = time.process_time(), time.perf_counter()
    run()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu, wall, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults


def interleaved(variants: dict[str, Callable[[], None]], repeats: int, memory: bool) -> dict[str, dict]:
    """Time ``variants`` in turn (one warm-up each, which also measures memory), ``repeats``
    rounds; per variant the median CPU and wall seconds and page faults per call."""
    samples: dict[str, list[tuple[float, float, int]]] = {name: [] for name in variants}
    peaks = {name: (peak_rss_growth_mb(run) if memory else None) for name, run in variants.items()}
    for _ in range(repeats):
        for name, run in variants.items():
            samples[name].append(timed_call(run))
    return {name: {"cpu_s": statistics.median(s[0] for s in runs),
                   "wall_s": statistics.median(s[1] for s in runs),
                   "page_faults": int(statistics.median(s[2] for s in runs)),
                   "cpu_s_all": [round(s[0], 4) for s in runs],
                   "peak_rss_growth_mb": peaks[name]}
            for name, runs in samples.items()}


# ----------------------------------------------------------------------------- workloads

def _policy(chunked: bool):
    """The library's kernel policy (:mod:`crema.kernels`), or without chunking (the stem whole,
    the batch in one pass: the baseline variant) for the duration of a call."""
    import contextlib

    from crema import kernels

    return contextlib.nullcontext() if chunked else kernels.override(stem_chunk=0, inference_batch=0)


class _Attention:
    """Force the attention kernel choice of :mod:`crema.model.blocks` (None = its own rule)."""

    def __init__(self, explicit: bool | None):
        self.explicit = explicit

    def __enter__(self):
        from crema.model import blocks

        self.saved = blocks.use_explicit_attention
        if self.explicit is not None:
            blocks.use_explicit_attention = lambda q: self.explicit

    def __exit__(self, *exc):
        from crema.model import blocks

        blocks.use_explicit_attention = self.saved


def default_is_explicit(cfg, training: bool) -> bool:
    """Whether :mod:`crema.model.blocks` picks explicit attention in bf16 for this encoder."""
    from crema.model.blocks import use_explicit_attention

    q = torch.empty(1, cfg.heads, 1, cfg.dim // cfg.heads, dtype=torch.bfloat16, requires_grad=training)
    return use_explicit_attention(q)


def _variant(run: Callable[[], None], model: torch.nn.Module, bf16: bool, chunked: bool,
             explicit: bool | None = None) -> Callable[[], None]:
    def call() -> None:
        with _policy(chunked), _Attention(explicit), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            run()
    return call


def embed_runs(cfg, batch: int, device: str = "cpu",
               wrap: Callable | None = None) -> tuple[torch.nn.Module, Callable[[], None]]:
    """Embedding of ``batch`` random ECGs without autograd; ``wrap`` (e.g. torch.compile) wraps
    the encoder that the call runs (the returned module is always the plain one)."""
    from crema.model.sit import SiTEncoder

    torch.manual_seed(0)
    encoder = SiTEncoder(cfg).eval().to(device)
    forward = wrap(encoder) if wrap is not None else encoder
    x = torch.randn(batch, cfg.n_leads, cfg.window).to(device)

    def run() -> None:
        with torch.inference_mode():
            forward(x)
    return encoder, run


def step_runs(cfg, mode: str, batch: int, device: str = "cpu",
              wrap: Callable | None = None) -> tuple[torch.nn.Module, Callable[[], None]]:
    """One optimiser step (forward, backward, AdamW) of CREMA in ``mode`` (mae or crema);
    ``wrap`` (e.g. torch.compile) wraps the module the forward runs, as ``--compile`` does."""
    from crema.config import ObjectiveConfig
    from crema.model.crema import CREMA

    torch.manual_seed(0)
    model = CREMA(cfg, ObjectiveConfig(mode=mode)).train().to(device)
    forward = wrap(model) if wrap is not None else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(batch, cfg.n_leads, cfg.window).to(device)
    lead_mask = torch.ones(batch, cfg.n_leads, dtype=torch.bool).to(device)
    device_type = torch.device(device).type

    def run() -> None:
        # As crema.train.pretrain: autocast over the forward only; the backward runs in the
        # forward's dtypes.
        out = forward(x, lead_mask=lead_mask)
        with torch.autocast(device_type, enabled=False):
            out["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return model, run


def measure_size(size: str, args: argparse.Namespace, memory: bool) -> dict:
    """Every workload and variant of one model size."""
    from crema.config import ModelConfig, ObjectiveConfig

    cfg = ModelConfig.from_size(size, window=args.window)
    mask_ratio = ObjectiveConfig().mask_ratio
    out = {"config": {"dim": cfg.dim, "depth": cfg.depth, "heads": cfg.heads, "window": cfg.window,
                      "patch_size": cfg.patch_size, "tokens": cfg.n_leads * cfg.n_patches}}
    plans = {
        "embed_b1": (lambda: embed_runs(cfg, 1), 1),
        "embed": (lambda: embed_runs(cfg, args.batch), args.batch),
        "mae_step": (lambda: step_runs(cfg, "mae", args.step_batch), args.step_batch),
        "crema_step": (lambda: step_runs(cfg, "crema", args.step_batch), args.step_batch),
    }
    for workload in args.workloads:
        build, batch = plans[workload]
        model, run = build()
        variants = {"baseline": _variant(run, model, False, False), "fp32": _variant(run, model, False, True),
                    "bf16": _variant(run, model, True, True)}
        if args.kernel_variants:
            explicit = not default_is_explicit(cfg, training=workload.endswith("_step"))
            variants[f"bf16 {'explicit' if explicit else 'sdpa'}"] = _variant(run, model, True, True, explicit)
        repeats = args.latency_runs if workload == "embed_b1" else args.repeats
        rows = interleaved(variants, repeats, memory)
        for row in rows.values():
            row["ecg_per_s"] = batch / row["cpu_s"]
            row["ms_per_call"] = 1000 * row["cpu_s"]
        counted = counted_flops(_variant(run, model, False, True), batch) if workload != "embed_b1" else None
        out[workload] = {"batch": batch, "flops_per_ecg": analytic_flops(cfg, workload, mask_ratio),
                         "flops_per_ecg_counted": counted, "variants": rows}
        tag = "tuned" if "glibc.malloc.mmap_threshold" in os.environ.get("GLIBC_TUNABLES", "") else "plain"
        print(f"  {size} {workload} ({tag}): " + ", ".join(f"{k} {v['ecg_per_s']:.2f} ECG/s" for k, v in rows.items()),
              file=sys.stderr, flush=True)
    return out


def child(args: argparse.Namespace) -> dict:
    """Everything measured in this process (one allocator setting)."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    tuned = "glibc.malloc.mmap_threshold" in os.environ.get("GLIBC_TUNABLES", "")
    result = {"allocator_tuned": tuned, "peak_gflops": None, "sizes": {}}
    if args.gemm_repeats > 0:
        result["peak_gflops"] = {"fp32": gemm_peak(torch.float32, 2048, args.gemm_repeats),
                                 "bf16": gemm_peak(torch.bfloat16, 2048, args.gemm_repeats)}
        print(f"  peak GFLOP/s (allocator tuned: {tuned}): {result['peak_gflops']}", file=sys.stderr, flush=True)
    for size in args.sizes:
        result["sizes"][size] = measure_size(size, args, memory=True)
    return result


def run_children(args: argparse.Namespace) -> tuple[dict, dict]:
    """Measure every (size, workload) in a child with the malloc tunables, then at once in one
    without, so that the two see the shared machine in nearly the same state; the GEMM peak in
    each setting's first child. Returns the merged (tuned, plain) results."""
    merged: dict[bool, dict] = {}
    for size in args.sizes:
        for workload in args.workloads:
            for tuned in (True, False):
                first = tuned not in merged
                part = run_child(args, tuned, size, workload, peak=first)
                if first:
                    merged[tuned] = part
                else:
                    merged[tuned]["sizes"].setdefault(size, {}).update(part["sizes"][size])
    return merged[True], merged[False]


def run_child(args: argparse.Namespace, tuned: bool, size: str, workload: str, peak: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "CREMA_REEXECED")}
    env["OMP_NUM_THREADS"] = "1"
    if tuned:
        env["GLIBC_TUNABLES"] = MALLOC_TUNABLES
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "child.json"
        command = [sys.executable, __file__, "--child-out", str(path), "--sizes", size,
                   "--workloads", workload, "--window", str(args.window), "--batch", str(args.batch),
                   "--step-batch", str(args.step_batch), "--repeats", str(args.repeats),
                   "--latency-runs", str(args.latency_runs),
                   "--gemm-repeats", str(args.gemm_repeats if peak else 0)]
        if not args.kernel_variants:
            command.append("--no-kernel-variants")
        subprocess.run(command, env=env, check=True)
        return json.loads(path.read_text())


# ----------------------------------------------------------------------------- GPU (any torch device)
#
# ``--device cuda``: the same workloads and FLOPs in one process (no allocator children: glibc's
# tunables concern host memory), wall-clock times between device synchronisations, the peak of
# the CUDA caching allocator, and variants fp32 (fused SDPA: blocks.use_explicit_attention is
# False off the CPU), bf16 (autocast, fused SDPA) and bf16 + torch.compile (compile time measured
# apart, on the first calls, and left out of the steady-state figures). The helpers take the
# device and its hooks as arguments, so that the tests run them on the CPU.

DEVICE_VARIANTS = ("fp32", "bf16", "bf16+compile")
GPU_DOC_START, GPU_DOC_END = "<!-- mfu-gpu-table:start -->", "<!-- mfu-gpu-table:end -->"
GPU_NOT_MEASURED = "GPU figures: not yet measured (run benchmarks/gpu_session.sh on a GPU machine)"


class DeviceHooks:
    """What timing and memory need from a device: ``sync`` (wait for queued kernels),
    ``reset_peak`` and ``peak_mb`` (allocator high-water mark, None where unknown)."""

    def __init__(self, device: str):
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def allocated_mb(self) -> float | None:
        return torch.cuda.memory_allocated(self.device) / 2 ** 20 if self.cuda else None

    def peak_mb(self) -> float | None:
        return torch.cuda.max_memory_allocated(self.device) / 2 ** 20 if self.cuda else None


def synced_seconds(run: Callable[[], None], sync: Callable[[], None]) -> float:
    """Wall seconds of one call of ``run``, from an idle device until its work has finished."""
    sync()
    start = time.perf_counter()
    run()
    sync()
    return time.perf_counter() - start


def device_gemm_peak(dtype: torch.dtype, n: int, repeats: int, hooks: DeviceHooks, inner: int = 10) -> float:
    """Median GFLOP/s of ``inner`` back-to-back ``n^3`` matrix multiplies in ``dtype`` on the
    device (fp32 follows the current ``torch.backends.cuda.matmul.allow_tf32``)."""
    a = torch.randn(n, n, device=hooks.device).to(dtype)
    b = torch.randn(n, n, device=hooks.device).to(dtype)

    def run() -> None:
        for _ in range(inner):
            torch.matmul(a, b)
    run()
    times = [synced_seconds(run, hooks.sync) for _ in range(repeats)]
    return inner * 2 * n ** 3 / statistics.median(times) / 1e9


def device_peaks(hooks: DeviceHooks, n: int, repeats: int) -> dict:
    """fp32 with TF32 off (true fp32), fp32 with TF32 on (what ``allow_tf32`` gives), bf16."""
    matmul = torch.backends.cuda.matmul
    saved = matmul.allow_tf32
    try:
        matmul.allow_tf32 = False
        fp32 = device_gemm_peak(torch.float32, n, repeats, hooks)
        matmul.allow_tf32 = True
        tf32 = device_gemm_peak(torch.float32, n, repeats, hooks)
    finally:
        matmul.allow_tf32 = saved
    return {"fp32": fp32, "tf32": tf32, "bf16": device_gemm_peak(torch.bfloat16, n, repeats, hooks),
            "n": n}


def device_variant(run: Callable[[], None], device_type: str, bf16: bool) -> Callable[[], None]:
    def call() -> None:
        with torch.autocast(device_type, torch.bfloat16, enabled=bf16):
            run()
    return call


def device_interleaved(variants: dict[str, Callable[[], None]], repeats: int, hooks: DeviceHooks,
                       warmups: dict[str, int] | None = None) -> dict[str, dict]:
    """Time ``variants`` in turn, ``repeats`` rounds, after warm-up calls (``warmups[name]``,
    default 1) that are timed apart (``first_calls_s``: the compile time of a compiled variant)
    and measure the allocator's peak during one call above what was allocated before it."""
    warmups = warmups or {}
    first: dict[str, list[float]] = {}
    memory: dict[str, dict] = {}
    for name, run in variants.items():
        first[name] = [synced_seconds(run, hooks.sync) for _ in range(max(1, warmups.get(name, 1)))]
        hooks.sync()
        before = hooks.allocated_mb()
        hooks.reset_peak()
        synced_seconds(run, hooks.sync)
        peak = hooks.peak_mb()
        memory[name] = {"peak_mb": None if peak is None else round(peak, 1),
                        "peak_growth_mb": None if peak is None else round(peak - before, 1)}
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            samples[name].append(synced_seconds(run, hooks.sync))
    return {name: {"wall_s": statistics.median(times), "wall_s_all": [round(t, 5) for t in times],
                   "first_calls_s": [round(t, 3) for t in first[name]], **memory[name]}
            for name, times in samples.items()}


def measure_device_size(size: str, args: argparse.Namespace, hooks: DeviceHooks,
                        compile_fn: Callable | None = None, deadline: float | None = None,
                        out: dict | None = None, after: Callable[[], None] | None = None) -> dict:
    """Every workload and variant of one model size on the device, filled into ``out``
    (``compile_fn`` defaults to torch.compile; a workload is skipped once ``deadline``, a
    perf_counter time, has passed; ``after`` is called after each workload)."""
    from crema.config import ModelConfig, ObjectiveConfig

    compile_fn = compile_fn or torch.compile
    device, device_type = str(hooks.device), hooks.device.type
    cfg = ModelConfig.from_size(size, window=args.window)
    mask_ratio = ObjectiveConfig().mask_ratio
    out = {} if out is None else out
    out.update({"config": {"dim": cfg.dim, "depth": cfg.depth, "heads": cfg.heads, "window": cfg.window,
                           "patch_size": cfg.patch_size, "tokens": cfg.n_leads * cfg.n_patches}, "skipped": []})
    plans = {
        "embed_b1": (lambda wrap: embed_runs(cfg, 1, device, wrap), 1),
        "embed": (lambda wrap: embed_runs(cfg, args.batch, device, wrap), args.batch),
        "mae_step": (lambda wrap: step_runs(cfg, "mae", args.step_batch, device, wrap), args.step_batch),
        "crema_step": (lambda wrap: step_runs(cfg, "crema", args.step_batch, device, wrap), args.step_batch),
    }
    for workload in args.workloads:
        if deadline is not None and time.perf_counter() > deadline:
            out["skipped"].append(workload)
            print(f"  {size} {workload}: skipped (--budget-s spent)", file=sys.stderr, flush=True)
            continue
        build, batch = plans[workload]
        model, run = build(None)
        variants: dict[str, Callable[[], None]] = {}
        warmups: dict[str, int] = {}
        for variant in args.variants:
            if variant == "bf16+compile":
                # A model of its own (same seed): the compiled graph specialises on it. Two
                # warm-up calls: the first compiles, the second catches a recompilation.
                _, compiled = build(compile_fn)
                variants[variant] = device_variant(compiled, device_type, True)
                warmups[variant] = 2
            else:
                variants[variant] = device_variant(run, device_type, variant == "bf16")
        repeats = args.latency_runs if workload == "embed_b1" else args.repeats
        rows = device_interleaved(variants, repeats, hooks, warmups)
        for row in rows.values():
            row["ecg_per_s"] = batch / row["wall_s"]
            row["ms_per_call"] = 1000 * row["wall_s"]
            row["compile_s"] = None
        if "bf16+compile" in rows:
            row = rows["bf16+compile"]
            row["compile_s"] = round(sum(row["first_calls_s"]) - 2 * row["wall_s"], 2)
        counted = None
        if workload != "embed_b1" and args.count_flops:
            counted = counted_flops(device_variant(run, device_type, False), batch)
        out[workload] = {"batch": batch, "flops_per_ecg": analytic_flops(cfg, workload, mask_ratio),
                         "flops_per_ecg_counted": counted, "variants": rows}
        print(f"  {size} {workload}: " + ", ".join(f"{k} {v['ecg_per_s']:.1f} ECG/s" for k, v in rows.items()),
              file=sys.stderr, flush=True)
        del model, run, variants
        if hooks.cuda:
            torch.cuda.empty_cache()
        if after:
            after()
    return out


def measured_rows(result: dict, peaks: tuple[str, ...]) -> Iterator[tuple[dict, dict]]:
    """Each measured (size, workload, variant) of ``result``: the fields every table shares
    (speed, GFLOP/s, MFU against each of ``peaks``, FLOPs per ECG) and the variant's raw row."""
    for size, workloads in result["sizes"].items():
        for workload in WORKLOADS:
            if workload not in workloads:
                continue
            entry = workloads[workload]
            for variant, row in entry["variants"].items():
                gflops = row["ecg_per_s"] * entry["flops_per_ecg"] / 1e9
                yield {"size": size, "workload": workload, "batch": entry["batch"], "variant": variant,
                       "ecg_per_s": row["ecg_per_s"], "ms_per_call": row["ms_per_call"], "gflops": gflops,
                       **{f"mfu_{k}": gflops / result["peak_gflops"][k] for k in peaks},
                       "gflop_per_ecg": entry["flops_per_ecg"] / 1e9,
                       "gflop_per_ecg_counted": (entry["flops_per_ecg_counted"] or math.nan) / 1e9}, row


def device_rows(result: dict) -> list[dict]:
    """One row per (size, workload, variant), with GFLOP/s and MFU against each peak."""
    rows = []
    for shared, row in measured_rows(result, ("fp32", "tf32", "bf16")):
        base = result["sizes"][shared["size"]][shared["workload"]]["variants"].get("fp32")
        rows.append({**shared, "speedup_vs_fp32": row["ecg_per_s"] / base["ecg_per_s"] if base else None,
                     "compile_s": row["compile_s"], "peak_mb": row["peak_mb"],
                     "peak_growth_mb": row["peak_growth_mb"]})
    return rows


def run_device(args: argparse.Namespace, hooks: DeviceHooks, compile_fn: Callable | None = None,
               save: Callable[[dict], None] | None = None) -> dict:
    """The whole device benchmark in this process; ``save`` is called with the partial result
    after the peaks and after every size, so that a run cut off by a time limit leaves figures."""
    started = time.perf_counter()
    deadline = started + args.budget_s if args.budget_s else None
    torch.manual_seed(0)
    result = {"benchmark": "mfu", "device": hooks.device.type,
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "torch": torch.__version__, "python": platform.python_version(),
              "cuda": torch.version.cuda if hooks.cuda else None,
              "device_name": torch.cuda.get_device_name(hooks.device) if hooks.cuda else platform.processor(),
              "window": args.window, "repeats": args.repeats, "latency_runs": args.latency_runs,
              "variants": list(args.variants),
              "tf32_in_workloads": {"matmul": torch.backends.cuda.matmul.allow_tf32,
                                    "cudnn_conv": torch.backends.cudnn.allow_tf32},
              "timing": "wall seconds per call between device synchronisations, medians of interleaved "
                        "rounds after warm-up; compile time (first two calls of the compiled variant "
                        "less two steady calls) excluded",
              "peak_gflops": None, "sizes": {},
              "command": " ".join(["benchmarks/mfu.py", *args.argv])}

    def checkpoint() -> None:
        if result["peak_gflops"]:
            result["rows"] = device_rows(result)
        result["seconds"] = round(time.perf_counter() - started, 1)
        if save:
            save(result)

    if args.gemm_repeats > 0:
        result["peak_gflops"] = device_peaks(hooks, args.gemm_n, args.gemm_repeats)
        print(f"  peak GFLOP/s: {result['peak_gflops']}", file=sys.stderr, flush=True)
    checkpoint()
    for size in args.sizes:
        result["sizes"][size] = {}
        measure_device_size(size, args, hooks, compile_fn, deadline, result["sizes"][size], checkpoint)
    checkpoint()
    return result


def device_markdown(result: dict) -> str:
    """The GPU table of docs/BENCHMARKS.md: peaks, conditions, one row per size/workload/variant."""
    peaks = result["peak_gflops"]
    if not peaks or not result.get("rows"):
        return f"{GPU_NOT_MEASURED.split(':')[0]}: no complete workload in this run ({result.get('date')}).\n"
    tf32 = result["tf32_in_workloads"]
    lines = [f"{result['device_name']} (torch {result['torch']}, CUDA {result['cuda']}). Peak of this run "
             f"({peaks['n']}^3 matrix multiplies): **fp32 {peaks['fp32'] / 1e3:.1f} TFLOP/s (TF32 off), "
             f"TF32 {peaks['tf32'] / 1e3:.1f}, bf16 {peaks['bf16'] / 1e3:.1f}**. Window {result['window']} "
             f"samples, wall-clock ms per call between synchronisations, medians of {result['repeats']} "
             f"interleaved rounds ({result['latency_runs']} for batch 1) after warm-up; the fp32 rows ran "
             f"with TF32 matmuls {'on' if tf32['matmul'] else 'off'} (cuDNN convolutions "
             f"{'on' if tf32['cudnn_conv'] else 'off'}: torch's defaults); attention is the fused SDPA kernel. "
             "*compile s*: the compiled variant's first two calls less two steady ones, left out of its "
             "figures; *peak MB*: the CUDA allocator's peak during one call (weights included).",
             "",
             "| size | workload | variant | ECG/s | ms/call | GFLOP/ECG (counted) | TFLOP/s | MFU fp32 | MFU TF32 "
             "| MFU bf16 | vs fp32 | compile s | peak MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        name = NAMES[r["workload"]].format(batch=r["batch"])
        compiled = "" if r["compile_s"] is None else f"{r['compile_s']:.0f}"
        memory = "" if r["peak_mb"] is None else f"{r['peak_mb']:.0f}"
        speed = "" if r["speedup_vs_fp32"] is None else f"{r['speedup_vs_fp32']:.2f}x"
        counted = "" if math.isnan(r["gflop_per_ecg_counted"]) else f" ({r['gflop_per_ecg_counted']:.3f})"
        lines.append(f"| {r['size']} | {name} | {r['variant']} | {r['ecg_per_s']:.1f} | {r['ms_per_call']:.2f} "
                     f"| {r['gflop_per_ecg']:.3f}{counted} | {r['gflops'] / 1e3:.2f} | {r['mfu_fp32']:.0%} "
                     f"| {r['mfu_tf32']:.0%} | {r['mfu_bf16']:.0%} | {speed} | {compiled} | {memory} |")
    skipped = [f"{size} {w}" for size, entry in result["sizes"].items() for w in entry.get("skipped", [])]
    if skipped:
        lines += ["", "Not measured (time budget spent): " + ", ".join(skipped) + "."]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- report

def combine(tuned: dict, plain: dict) -> list[dict]:
    """One row per (size, workload, variant) of the tuned child, with MFU, the plain child's
    memory and speed for the same variant, and the speed-up over the plain baseline."""
    rows = []
    for shared, row in measured_rows(tuned, ("fp32", "bf16")):
        other = plain["sizes"][shared["size"]][shared["workload"]]["variants"]
        same = other.get(shared["variant"])
        rows.append({**shared, "page_faults": row["page_faults"],
                     "plain_page_faults": same["page_faults"] if same else None,
                     "allocator_speedup": row["ecg_per_s"] / same["ecg_per_s"] if same else None,
                     "speedup_vs_today": row["ecg_per_s"] / other["baseline"]["ecg_per_s"],
                     "peak_rss_growth_mb": row["peak_rss_growth_mb"],
                     "plain_peak_rss_growth_mb": same["peak_rss_growth_mb"] if same else None})
    return rows


def targets(rows: list[dict]) -> list[dict]:
    """The speed targets for ``tiny`` against the bf16 rows: measured, target, met."""
    def find(workload: str) -> dict | None:
        return next((r for r in rows if r["size"] == "tiny" and r["workload"] == workload
                     and r["variant"] == "bf16"), None)

    checks = []
    embed, one = find("embed"), find("embed_b1")
    if embed:
        checks.append({"target": f"tiny embedding >= {TARGET_EMBED_PER_S:g} ECG/s per thread at batch {embed['batch']}",
                       "measured": embed["ecg_per_s"], "goal": TARGET_EMBED_PER_S, "higher_is_better": True})
        checks.append({"target": f"tiny embedding >= {TARGET_BF16_MFU:.0%} of the bf16 peak",
                       "measured": embed["mfu_bf16"], "goal": TARGET_BF16_MFU, "higher_is_better": True})
    if one:
        checks.append({"target": f"tiny batch-1 latency <= {TARGET_LATENCY_MS:g} ms",
                       "measured": one["ms_per_call"], "goal": TARGET_LATENCY_MS, "higher_is_better": False})
    for workload, name in (("mae_step", "MAE"), ("crema_step", "CREMA")):
        row = find(workload)
        if row:
            checks.append({"target": f"tiny {name} step >= {TARGET_STEP_SPEEDUP:g}x today's ECG/s",
                           "measured": row["speedup_vs_today"], "goal": TARGET_STEP_SPEEDUP,
                           "higher_is_better": True})
    for check in checks:
        ratio = check["measured"] / check["goal"]
        check["met"] = ratio >= 1 if check["higher_is_better"] else ratio <= 1
        check["of_goal"] = ratio if check["higher_is_better"] else 1 / ratio
    return checks


NAMES = {"embed_b1": "embed b1", "embed": "embed b{batch}", "mae_step": "MAE step b{batch}",
         "crema_step": "CREMA step b{batch}"}


def markdown(result: dict) -> str:
    """The CPU table of docs/BENCHMARKS.md: peaks, one row per size/workload/variant, then the targets."""
    peaks = result["peak_gflops"]
    lines = [f"Peak of this run (2048^3 matrix multiply, one thread): **fp32 {peaks['fp32']:.0f} GFLOP/s, "
             f"bf16 {peaks['bf16']:.0f} GFLOP/s** (bf16 native: {result['cpu_bf16']}). Window "
             f"{result['window']} samples (600 tokens for patch 50), CPU seconds per call, medians of "
             f"{result['repeats']} interleaved rounds; allocator tunables on (as the `crema` command sets them). "
             "*vs baseline*: ECG/s over the `baseline` variant (the code path before bf16 and chunking: fp32, "
             "whole-batch stem, a batch in one pass) in the process without the tunables; *allocator gain*: the same variant with / without "
             "them; *peak RSS*: growth of the resident memory during the variant's first call, after "
             "`malloc_trim` (the call's working set, weights and inputs excluded).",
             "",
             "| size | workload | variant | ECG/s | ms/call | GFLOP/ECG (counted) | GFLOP/s | MFU fp32 | MFU bf16 "
             "| vs baseline | allocator gain | faults/call (without) | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        name = NAMES[r["workload"]].format(batch=r["batch"])
        counted = "" if math.isnan(r["gflop_per_ecg_counted"]) else f" ({r['gflop_per_ecg_counted']:.3f})"
        gain = "" if r["allocator_speedup"] is None else f"{r['allocator_speedup']:.2f}x"
        faults = f"{r['page_faults']:,}" + ("" if r["plain_page_faults"] is None else f" ({r['plain_page_faults']:,})")
        memory = "" if r["peak_rss_growth_mb"] is None else f"{r['peak_rss_growth_mb']:.0f}"
        lines.append(f"| {r['size']} | {name} | {r['variant']} | {r['ecg_per_s']:.2f} | {r['ms_per_call']:.1f} "
                     f"| {r['gflop_per_ecg']:.3f}{counted} | {r['gflops']:.0f} | {r['mfu_fp32']:.0%} "
                     f"| {r['mfu_bf16']:.0%} | {r['speedup_vs_today']:.2f}x | {gain} | {faults} | {memory} |")
    lines += ["", "| target (tiny, bf16) | measured | met |", "|---|---|---|"]
    for c in result["targets"]:
        value = f"{c['measured']:.1%}" if "peak" in c["target"] else f"{c['measured']:.2f}"
        verdict = "yes" if c["met"] else f"**no: {c['of_goal']:.0%} of the target**"
        lines.append(f"| {c['target']} | {value} | {verdict} |")
    return "\n".join(lines) + "\n"


def print_table(result: dict) -> None:
    print()
    print(markdown(result))


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", nargs="+", default=["tiny", "mini"], help="model presets (tiny mini small base)")
    p.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=WORKLOADS)
    p.add_argument("--window", type=int, default=2500, help="samples per lead (default 2500: 10 s at 250 Hz)")
    p.add_argument("--batch", type=int, default=64, help="embedding batch (default 64)")
    p.add_argument("--step-batch", type=int, default=16, help="training batch (default 16)")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds of each variant (default 3)")
    p.add_argument("--latency-runs", type=int, default=15, help="timed batch-1 calls (default 15)")
    p.add_argument("--gemm-repeats", type=int, default=7)
    p.add_argument("--no-kernel-variants", dest="kernel_variants", action="store_false",
                   help="skip the other-attention-kernel rows")
    p.add_argument("--device", default="cpu",
                   help="cpu (default: the CPU benchmark above) or cuda / cuda:N: the GPU benchmark, "
                        "written to runs/bench/mfu-cuda.json and the mfu-gpu-table markers")
    p.add_argument("--variants", nargs="+", default=list(DEVICE_VARIANTS), choices=DEVICE_VARIANTS,
                   help="variants of the GPU benchmark (default all)")
    p.add_argument("--gemm-n", type=int, default=8192, help="GPU peak: matrix size (default 8192)")
    p.add_argument("--budget-s", type=float, default=0,
                   help="GPU benchmark: start no workload after this many seconds (0 = no limit)")
    p.add_argument("--no-flop-count", dest="count_flops", action="store_false",
                   help="GPU benchmark: skip the FlopCounterMode cross-check")
    p.add_argument("--out", help="JSON (default runs/bench/mfu.json, on a GPU runs/bench/mfu-cuda.json)")
    p.add_argument("--doc", type=Path, help="rewrite the table between the mfu-table markers of this file, "
                                            "e.g. docs/BENCHMARKS.md (mfu-gpu-table for a GPU result)")
    p.add_argument("--render", type=Path, help="only print (and --doc) the table of this JSON")
    p.add_argument("--child-out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if args.out is None:
        args.out = "runs/bench/mfu.json" if args.device == "cpu" else "runs/bench/mfu-cuda.json"
    return args


def save_json(path: str | Path, result: dict) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


def device_main(args: argparse.Namespace) -> int:
    """``--device cuda``: the GPU benchmark in this process, its JSON and table."""
    if args.render:
        result = json.loads(args.render.read_text())
    else:
        hooks = DeviceHooks(args.device)
        if hooks.cuda and not torch.cuda.is_available():
            print("CUDA is not available", file=sys.stderr)
            return 2
        result = run_device(args, hooks, save=lambda partial: save_json(args.out, partial))
        print(f"wrote {args.out}", file=sys.stderr)
    table = device_markdown(result)
    print()
    print(table)
    if args.doc:
        write_doc(args.doc, table, (GPU_DOC_START, GPU_DOC_END))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    # A GPU run's JSON names its device (the CPU benchmark's does not).
    if args.device != "cpu" or (args.render and "device" in json.loads(args.render.read_text())):
        return device_main(args)
    if args.child_out:
        Path(args.child_out).write_text(json.dumps(child(args)))
        return 0
    if args.render:
        result = json.loads(args.render.read_text())
    else:
        from crema.precision import cpu_has_bf16

        started = time.perf_counter()
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        tuned, plain = run_children(args)
        rows = combine(tuned, plain)
        result = {
            "benchmark": "mfu", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "cpu_bf16": cpu_has_bf16(), "torch_threads": 1, "window": args.window, "repeats": args.repeats,
            "timing": "CPU seconds of the process per call (one thread), medians of interleaved rounds",
            "load_average_1min": {"start": load, "end": os.getloadavg()[0] if load is not None else None},
            "peak_gflops": tuned["peak_gflops"], "peak_gflops_plain_child": plain["peak_gflops"],
            "rows": rows, "seconds": round(time.perf_counter() - started, 1),
            "children": {"tuned": tuned, "plain": plain},
            "command": " ".join(["benchmarks/mfu.py", *(argv if argv is not None else sys.argv[1:])]),
        }
        result["targets"] = targets(rows)
        save_json(args.out, result)
        print(f"wrote {args.out}", file=sys.stderr)
    print_table(result)
    if args.doc:
        write_doc(args.doc, markdown(result), (DOC_START, DOC_END))
    return 0


if __name__ == "__main__":
    sys.exit(main())
