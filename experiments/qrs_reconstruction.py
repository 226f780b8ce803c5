"""Does a pretrained model rebuild masked QRS complexes? A number behind the reconstruction figure.

A reconstruction figure shows whether masked QRS complexes are redrawn, but looking at figures
does not compare models, so this script measures it. For validation-fold windows of a
prepared PTB-XL corpus it masks each window with the model's own masking (fixed seeds, the same
masks for every model of one window length), reconstructs, and splits the masked patches into
those that hold a QRS complex and the rest. Per patch it reports the Pearson correlation between
the reconstruction and the true signal (shape only: with ``norm_target`` the model predicts the
standardised patch, so the correlation is exactly what it was trained to get right) and the
ratio of reconstructed to true peak-to-peak amplitude after standardisation.

QRS patches: a patch whose span contains a detected R peak. Peaks come from the summed absolute
slope of all present leads (a lead-agnostic QRS energy), ``find_peaks`` with a 0.3 s refractory
distance and a height of half the window's 99th percentile.

    python experiments/qrs_reconstruction.py runs/corpora/ptbxl MODEL [MODEL ...] \
        --windows 300 --out results/design-search/qrs_reconstruction.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.signal import find_peaks


def qrs_patch_mask(signal: np.ndarray, present: np.ndarray, patch: int, fs: float) -> np.ndarray:
    """Bool ``(N,)``: patches of a ``(C, T)`` window that contain an R peak."""
    slope = np.abs(np.diff(signal[present], axis=-1)).sum(axis=0)
    height = 0.5 * np.percentile(slope, 99)
    peaks, _ = find_peaks(slope, distance=int(0.3 * fs), height=height)
    n = signal.shape[-1] // patch
    out = np.zeros(n, dtype=bool)
    out[np.clip(peaks // patch, 0, n - 1)] = True
    return out


def patch_scores(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Correlation and standardised amplitude ratio per patch; inputs ``(P, patch)``."""
    t = true - true.mean(-1, keepdims=True)
    p = pred - pred.mean(-1, keepdims=True)
    denom = np.sqrt((t ** 2).sum(-1) * (p ** 2).sum(-1))
    corr = np.where(denom > 0, (t * p).sum(-1) / np.maximum(denom, 1e-12), 0.0)
    amp = np.ptp(pred, -1) / np.maximum(np.ptp(true, -1), 1e-6)
    return corr, amp


def evaluate(model_path: str, signals: np.ndarray, lead_mask: np.ndarray, seeds: np.ndarray) -> dict:
    """Reconstruction scores of one model over the windows (each masked with its own seed)."""
    import crema

    net = crema.load(model_path, device="cpu").network
    window, patch, fs = net.model_cfg.window, net.model_cfg.patch_size, net.fs
    start = (signals.shape[-1] - window) // 2
    scores = {"qrs": ([], []), "other": ([], [])}
    for x, present, seed in zip(signals, lead_mask, seeds):
        x = np.ascontiguousarray(x[:, start:start + window], dtype=np.float32)
        pred, mask = net.reconstruct(torch.from_numpy(x)[None], seed=int(seed),
                                     lead_mask=torch.from_numpy(present)[None])
        pred, mask = pred[0].numpy(), mask[0].numpy() & present[:, None]
        qrs = qrs_patch_mask(x, present, patch, fs)
        n = window // patch
        true_p = x[:, :n * patch].reshape(12, n, patch)
        pred_p = pred[:, :n * patch].reshape(12, n, patch)
        for name, where in (("qrs", mask & qrs[None]), ("other", mask & ~qrs[None])):
            corr, amp = patch_scores(true_p[where], pred_p[where])
            scores[name][0].append(corr)
            scores[name][1].append(amp)
    out = {"model": model_path, "window": window, "patch": patch,
           "mask_ratio": net.objective.mask_ratio, "mask_mode": net.objective.mask_mode}
    for name, (corrs, amps) in scores.items():
        corr, amp = np.concatenate(corrs), np.concatenate(amps)
        out[name] = {"patches": int(corr.size), "corr_median": float(np.median(corr)),
                     "corr_mean": float(corr.mean()), "share_corr_over_0.5": float((corr > 0.5).mean()),
                     "amplitude_ratio_median": float(np.median(amp))}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", type=Path, help="a prepared PTB-XL corpus (fold 9 is used)")
    parser.add_argument("models", nargs="+")
    parser.add_argument("--windows", type=int, default=300)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    from crema.data.corpus import Corpus

    torch.set_num_threads(1)
    corpus = Corpus(args.corpus)
    rows = np.flatnonzero(corpus.index["fold"].to_numpy() == 9)
    rows = np.sort(np.random.default_rng(0).choice(rows, size=min(args.windows, rows.size), replace=False))
    signals = np.asarray(corpus.signals[rows], dtype=np.float32)
    lead_mask = np.asarray(corpus.lead_mask[rows], dtype=bool)
    seeds = np.arange(rows.size)
    results = [evaluate(m, signals, lead_mask, seeds) for m in args.models]
    print(f"{'model':60s} {'QRS corr':>9s} {'QRS >0.5':>9s} {'QRS amp':>8s} {'other corr':>11s} {'other amp':>10s}")
    for r in results:
        print(f"{r['model'][-60:]:60s} {r['qrs']['corr_median']:9.3f} {r['qrs']['share_corr_over_0.5']:9.2f} "
              f"{r['qrs']['amplitude_ratio_median']:8.2f} {r['other']['corr_median']:11.3f} "
              f"{r['other']['amplitude_ratio_median']:10.2f}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"windows": int(rows.size), "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
