"""``crema plot-reconstruction``: what a pretrained model makes of a masked ECG.

The windows are masked and decoded by :func:`crema.model.inference.reconstruct_windows`, the
function behind :meth:`crema.use.api.CremaModel.reconstruct`, so the figure shows exactly what
the Python API returns for the same record and seed (the first window, centre-cropped to the
model's input).
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ..config import PreprocessConfig, to_dict
from ..data.corpus import Corpus
from ..data.preprocess import preprocess_recording
from ..data.readers import read_record
from ..errors import CremaError
from ..model.inference import reconstruct_windows
from ..train.checkpoint import load_pretrained
from .reconstruction import masked_mse, plot_reconstruction


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "plot-reconstruction", help="draw a pretrained model's reconstruction of a masked ECG",
        description="Preprocess a record with the checkpoint's own preprocessing, mask its first window "
                    "(the middle of it when the window is longer than the model's input), and draw the "
                    "12 leads with the masked patches and their reconstruction.")
    p.add_argument("checkpoint", help="pretraining checkpoint folder")
    p.add_argument("record", nargs="?", help="an ECG file (any format crema reads); or use --corpus/--row")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the random mask (default 0)")
    p.add_argument("--corpus", help="a prepared corpus folder to take the window from (with --row)")
    p.add_argument("--row", type=int, help="row of --corpus")
    p.add_argument("--fs", type=float, help="sampling rate for files that do not carry one (.npy/.csv)")
    p.set_defaults(func=run_plot_reconstruction)


def windows_from_record(path: str, fs: float | None, preprocess: PreprocessConfig
                        ) -> tuple[np.ndarray, np.ndarray, str]:
    """A record's preprocessed windows ``(W, 12, T)``, their lead mask ``(W, 12)`` and a name."""
    windows = preprocess_recording(read_record(path, fs=fs), preprocess)
    lead_mask = np.repeat(windows.lead_mask[None], len(windows.signals), axis=0)
    return windows.signals, lead_mask, Path(path).name


def windows_from_corpus(directory: str, row: int | None, preprocess: PreprocessConfig
                        ) -> tuple[np.ndarray, np.ndarray, str]:
    """One stored corpus window ``(1, 12, T)``, its lead mask ``(1, 12)`` and a name; the corpus
    must have been preprocessed exactly as the checkpoint's inputs."""
    if row is None:
        raise CremaError("--corpus needs --row")
    corpus = Corpus(directory)
    if to_dict(corpus.preprocess) != to_dict(preprocess):
        raise CremaError(f"{directory}: corpus preprocessing differs from the checkpoint's; "
                         "pass the raw record instead so it is preprocessed like the training data")
    if not 0 <= row < len(corpus):
        raise CremaError(f"{directory}: row {row} out of range (0..{len(corpus) - 1})")
    record_id = str(corpus.index.iloc[row].get("record_id", row))
    signals = np.asarray(corpus.signals[row:row + 1], dtype=np.float32)
    return signals, np.asarray(corpus.lead_mask[row:row + 1], dtype=bool), f"{record_id} (row {row})"


def first_window_reconstruction(model, signals: np.ndarray, lead_mask: np.ndarray, seed: int
                                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(window (12, W), pred (12, W), mask (12, N))`` of the first of ``signals (n, 12, T)``,
    reconstructed together with the others as the API does."""
    pred, mask, windows = reconstruct_windows(model, signals, lead_mask, seed=seed)
    return windows[0], pred[0], mask[0]


def run_plot_reconstruction(args: argparse.Namespace) -> int:
    if (args.record is None) == (args.corpus is None):
        raise CremaError("give either a RECORD file or --corpus DIR --row i")
    model, cfg = load_pretrained(args.checkpoint)
    if args.corpus is not None:
        signals, lead_mask, name = windows_from_corpus(args.corpus, args.row, cfg.preprocess)
    else:
        signals, lead_mask, name = windows_from_record(args.record, args.fs, cfg.preprocess)
    signal, pred, mask = first_window_reconstruction(model, signals, lead_mask, args.seed)
    err = masked_mse(signal, pred, mask, lead_mask[0])
    title = (f"{name}: CREMA reconstruction, {cfg.objective.mask_ratio:.0%} of patches masked per lead "
             f"(seed {args.seed}); MSE on masked samples {err:.3f} (z-scored units)"
             + ("; masked patches de-normalised with the true patch mean/std" if cfg.objective.norm_target else ""))
    out = plot_reconstruction(signal, pred, mask, args.out, fs=cfg.preprocess.fs,
                              lead_mask=lead_mask[0], leads=cfg.model.leads, title=title)
    print(f"crema plot-reconstruction: wrote {out}")
    return 0
