"""What a pretrained CREMA model makes of a masked ECG: the 12 leads, the masked patches
shaded, and the decoder's reconstruction of those patches drawn over the true signal."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from ..atomic import atomic_path
from ..config import STANDARD_LEADS, PreprocessConfig
from ..config_io import to_dict
from ..data.corpus import Corpus
from ..data.preprocess import preprocess_recording
from ..data.readers import read_record
from ..errors import CremaError
from ..model.inference import reconstruct_windows


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
    ids = corpus.columns.text("record_id")  # one cell from the columns, not a frame of every window
    record_id = ids.values[ids.codes[row]]
    signals = np.asarray(corpus.signals[row:row + 1], dtype=np.float32)
    return signals, np.asarray(corpus.lead_mask[row:row + 1], dtype=bool), f"{record_id} (row {row})"


def first_window_reconstruction(model, signals: np.ndarray, lead_mask: np.ndarray, seed: int
                                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(window (12, W), pred (12, W), mask (12, N))`` of the first of ``signals (n, 12, T)``,
    reconstructed together with the others as the API does."""
    pred, mask, windows = reconstruct_windows(model, signals, lead_mask, seed=seed)
    return windows[0], pred[0], mask[0]


def plot_reconstruction(signal: np.ndarray, pred: np.ndarray, mask: np.ndarray, out: str | os.PathLike,
                        fs: float, lead_mask: np.ndarray | None = None,
                        leads: tuple[str, ...] = STANDARD_LEADS, title: str = "") -> Path:
    """Draw 12 leads (two columns of six), shade masked patches, overlay the reconstruction of
    the masked patches, and write a PNG atomically.

    Args:
        signal, pred: ``(C, T)``; mask: ``(C, N)`` bool, True = masked; fs in Hz.
        lead_mask: ``(C,)`` bool, absent leads are labelled so.
        out: the PNG path.
    """
    c, t = signal.shape
    n = mask.shape[1]
    patch = t // n
    seconds = np.arange(t) / fs
    masked_samples = np.repeat(mask, patch, axis=1)                        # (C, T)
    shown = np.where(masked_samples, pred, np.nan)
    per_col = (c + 1) // 2
    # a bare Figure, not pyplot: no global backend switch and nothing left open in pyplot's registry
    fig = Figure(figsize=(14, 1.45 * per_col + 1.2))
    axes = fig.subplots(per_col, 2, sharex=True, squeeze=False)
    for lead in range(c):
        ax = axes[lead % per_col, lead // per_col]
        for start in np.flatnonzero(mask[lead]):
            ax.axvspan(start * patch / fs, (start + 1) * patch / fs, color="0.88", lw=0)
        ax.plot(seconds, signal[lead], color="black", lw=0.7)
        ax.plot(seconds, shown[lead], color="tab:red", lw=0.9)
        absent = lead_mask is not None and not lead_mask[lead]
        ax.set_ylabel(leads[lead] + ("\n(absent)" if absent else ""), rotation=0, ha="right", va="center")
        ax.tick_params(labelsize=7)
        ax.margins(x=0)
    for ax in axes[-1]:
        ax.set_xlabel("time (s)")
    for extra in range(c, per_col * 2):
        axes[extra % per_col, extra // per_col].set_visible(False)
    fig.legend(handles=[Line2D([], [], color="black", lw=1, label="input"),
                        Line2D([], [], color="tab:red", lw=1, label="reconstruction of masked patches"),
                        Patch(color="0.88", label="masked patch (hidden from the encoder)")],
               loc="lower center", ncol=3, frameon=False, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return out


def masked_mse(signal: np.ndarray, pred: np.ndarray, mask: np.ndarray,
               lead_mask: np.ndarray | None = None) -> float:
    """Mean squared error of the reconstruction over masked samples of present leads."""
    patch = signal.shape[1] // mask.shape[1]
    chosen = np.repeat(mask, patch, axis=1)
    if lead_mask is not None:
        chosen &= np.asarray(lead_mask, bool)[:, None]
    if not chosen.any():
        return float("nan")
    return float(np.mean((signal[chosen] - pred[chosen]) ** 2))
