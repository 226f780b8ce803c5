"""What a pretrained CREMA model makes of a masked ECG: the 12 leads, the masked patches
shaded, and the decoder's reconstruction of those patches drawn over the true signal."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..config import STANDARD_LEADS
from ..atomic import atomic_path


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    c, t = signal.shape
    n = mask.shape[1]
    patch = t // n
    seconds = np.arange(t) / fs
    masked_samples = np.repeat(mask, patch, axis=1)                        # (C, T)
    shown = np.where(masked_samples, pred, np.nan)
    per_col = (c + 1) // 2
    fig, axes = plt.subplots(per_col, 2, figsize=(14, 1.45 * per_col + 1.2), sharex=True, squeeze=False)
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
    fig.legend(handles=[plt.Line2D([], [], color="black", lw=1, label="input"),
                        plt.Line2D([], [], color="tab:red", lw=1, label="reconstruction of masked patches"),
                        Patch(color="0.88", label="masked patch (hidden from the encoder)")],
               loc="lower center", ncol=3, frameon=False, fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    out = Path(out)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        plt.close(fig)
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
