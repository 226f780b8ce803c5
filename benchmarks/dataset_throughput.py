"""Iteration throughput (windows/s) of ``ECGWindows`` through a DataLoader, 0 and 2 workers.

Usage:
    python benchmarks/dataset_throughput.py                       # runs/corpora/ptbxl if prepared
    python benchmarks/dataset_throughput.py --corpus DIR --epochs 3 --batch-size 64

Each figure is the median over ``--epochs`` full passes (shuffled, ``set_epoch`` each pass) of
the corpus; worker start-up is inside the timing, as in training. The reference, measured in
the same run, is reading the same rows straight from the float16 memmap into float32 numpy
arrays in a loop (no torch, no crop, no augmentation); ratios are against it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def time_raw(corpus, epochs: int) -> list[float]:
    import numpy as np

    signals = corpus.signals
    times = []
    for epoch in range(epochs):
        order = np.random.default_rng(epoch).permutation(len(corpus))
        t0 = time.perf_counter()
        for row in order:
            np.asarray(signals[row], dtype=np.float32)
        times.append(time.perf_counter() - t0)
    return times


def time_loader(dataset, workers: int, batch_size: int, epochs: int) -> list[float]:
    import torch
    from torch.utils.data import DataLoader

    times = []
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                            generator=torch.Generator().manual_seed(epoch))
        t0 = time.perf_counter()
        n = sum(batch["signal"].shape[0] for batch in loader)
        times.append(time.perf_counter() - t0)
        assert n == len(dataset)
    return times


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    from crema.config import AugmentConfig, atomic_write_text
    from crema.data.corpus import Corpus, is_corpus
    from crema.data.dataset import ECGWindows
    from crema.data.prepare import prepare_corpus
    from crema.paths import data_root

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "runs" / "corpora" / "ptbxl")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--crop", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="crema-bench-") as tmp:
        path = args.corpus
        if not is_corpus(path):
            path = Path(tmp) / "ptbxl"
            print(f"{args.corpus} is not a corpus; preparing the shared PTB-XL records (100 Hz) into {path}")
            prepare_corpus(data_root() / "ptbxl", path, ptbxl_rate=100, workers=1, progress=False)
        corpus = Corpus(path)
        n = len(corpus)
        raw = statistics.median(time_raw(corpus, args.epochs))
        rows = [dict(name="memmap rows -> numpy (reference)", workers=0, seconds_median=raw)]
        augment = AugmentConfig(scale=0.1, noise=0.05, wander=0.1, lead_dropout=0.1, time_shift=0.05)
        setups = [("whole window", dict()),
                  (f"crop {args.crop} + augment", dict(crop=args.crop, augment=augment))]
        for label, kwargs in setups:
            dataset = ECGWindows(corpus, **kwargs)
            for workers in (0, 2):
                seconds = statistics.median(time_loader(dataset, workers, args.batch_size, args.epochs))
                rows.append(dict(name=f"ECGWindows, {label}", workers=workers, seconds_median=seconds))
    for row in rows:
        row["windows"] = n
        row["windows_per_s"] = round(n / row["seconds_median"], 1)
        row["ratio_vs_reference"] = round(row["windows_per_s"] / (n / raw), 3)
        row["seconds_median"] = round(row["seconds_median"], 4)
    print(f"dataset throughput: {path} ({n} windows of {corpus.window} samples), batch "
          f"{args.batch_size}, median of {args.epochs} epochs")
    header = f"{'run':<40} {'workers':>7} {'s/epoch':>8} {'windows/s':>10} {'vs ref':>7}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['name']:<40} {r['workers']:>7} {r['seconds_median']:>8.3f} {r['windows_per_s']:>10.1f} "
              f"{r['ratio_vs_reference']:>7.3f}")
    out = args.out / "dataset_throughput.json"
    atomic_write_text(out, json.dumps(dict(corpus=str(path), windows=n, batch_size=args.batch_size,
                                           epochs=args.epochs, rows=rows), indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
