"""A 12-lead ECG drawn like a clinical printout on pink millimetre paper.

Layout (the standard resting-ECG report): three rows of four 2.5 s segments
``I aVR V1 V4 / II aVL V2 V5 / III aVF V3 V6`` (each column a consecutive 2.5 s of the same
10 s), then a full-length lead II rhythm strip. Paper speed 25 mm/s and gain 10 mm/mV by
default; a 1 mm / 5 mm pink grid; a 1 mV calibration pulse at the start of every row.

Everything is laid out in millimetres of paper and the figure is sized so that one grid square
is one millimetre when the PNG or PDF is printed at 100 %.

Text that comes from a file (record id, labels, metadata) is drawn as it is, with matplotlib's
mathtext off: a ``$`` in a file name is a character, not the start of a formula.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from scipy import signal as sps

from ..config import STANDARD_LEADS
from ..data.leads import to_standard
from ..data.recording import Recording
from ..atomic import atomic_path

# Rows of the 3 x 4 layout, by lead name; then the rhythm strip.
LAYOUT: tuple[tuple[str, ...], ...] = (
    ("I", "aVR", "V1", "V4"),
    ("II", "aVL", "V2", "V5"),
    ("III", "aVF", "V3", "V6"),
)
RHYTHM_LEAD = "II"

# Colours of ECG paper: a pale pink millimetre grid under a stronger 5 mm grid.
MINOR_GRID = "#f6c9c9"
MAJOR_GRID = "#e58a8a"
PAPER = "#fff6f4"
TRACE = "#111111"

ROW_MM = 40.0           # vertical space per row (8 large squares; baselines fall on a 5 mm line)
CAL_MM = 10.0           # room left of the traces for the calibration pulse
MARGIN_MM = 5.0         # blank paper border
TITLE_MM = 14.0         # band above the grid for the title lines
FOOTER_MM = 7.0         # band below the grid for speed, gain and filter


def plot_ecg_paper(rec: Recording, title: str | None = None, labels: Sequence[str] = (),
                   start_s: float = 0.0, duration_s: float = 10.0, speed_mm_s: float = 25.0,
                   gain_mm_mv: float = 10.0, highpass_hz: float | None = 0.5,
                   dpi: int = 150) -> Figure:
    """Draw ``rec`` as a 12-lead paper ECG.

    Args:
        rec: ``signal (n_leads, T)`` in mV, any lead set (limb leads are derived from I and II
            when absent; other missing leads are drawn flat and marked "absent").
        title: first title line; default the record id.
        labels: predicted or known labels, shown on the second title line.
        start_s: where the printed 10 s begin in the record.
        duration_s: length of the page (each of the 4 columns shows a quarter of it).
        speed_mm_s: paper speed; gain_mm_mv: amplitude scale.
        highpass_hz: zero-phase high-pass applied for display only (removes baseline wander, as
            an electrocardiograph's display filter does); ``None`` draws the raw signal.
        dpi: resolution used when the figure is saved as PNG.

    Returns:
        A matplotlib ``Figure`` (not attached to pyplot; save it with :func:`save_figure`).
    """
    signal12, present = to_standard(rec.signal, rec.leads)
    page = _page_samples(signal12, rec.fs, start_s, duration_s, highpass_hz)
    width_mm = CAL_MM + duration_s * speed_mm_s
    height_mm = ROW_MM * (len(LAYOUT) + 1)
    fig = Figure(figsize=((width_mm + 2 * MARGIN_MM) / 25.4,
                          (height_mm + TITLE_MM + FOOTER_MM + 2 * MARGIN_MM) / 25.4), dpi=dpi)
    fig.patch.set_facecolor("white")
    ax = fig.add_axes(_axes_box(fig, width_mm, height_mm))
    _draw_grid(ax, width_mm, height_mm)
    seconds_per_column = duration_s / 4
    for row, leads in enumerate(LAYOUT):
        baseline = height_mm - ROW_MM * (row + 0.5)
        _draw_calibration(ax, baseline, gain_mm_mv)
        for col, lead in enumerate(leads):
            x0 = CAL_MM + col * seconds_per_column * speed_mm_s
            t0 = col * seconds_per_column
            _draw_trace(ax, page, rec.fs, lead, present, t0, seconds_per_column, x0, baseline,
                        speed_mm_s, gain_mm_mv, separator=col > 0)
    rhythm_baseline = ROW_MM * 0.5
    _draw_calibration(ax, rhythm_baseline, gain_mm_mv)
    _draw_trace(ax, page, rec.fs, RHYTHM_LEAD, present, 0.0, duration_s, CAL_MM, rhythm_baseline,
                speed_mm_s, gain_mm_mv, separator=False)
    _draw_text(fig, rec, title, labels, speed_mm_s, gain_mm_mv, highpass_hz, width_mm, height_mm)
    return fig


def _page_samples(signal12: np.ndarray, fs: float, start_s: float, duration_s: float,
                  highpass_hz: float | None) -> np.ndarray:
    """The ``(12, duration_s * fs)`` samples shown on the page; a short record leaves blank paper
    (NaN, which matplotlib does not draw)."""
    x = signal12.astype(np.float64)
    if highpass_hz:
        sos = sps.butter(2, highpass_hz, btype="highpass", fs=fs, output="sos")
        x = sps.sosfiltfilt(sos, x, axis=-1, padlen=min(x.shape[-1] - 1, 3 * 5))
    begin = int(round(start_s * fs))
    n = int(round(duration_s * fs))
    page = np.full((12, n), np.nan)
    piece = x[:, begin:begin + n]
    page[:, :piece.shape[-1]] = piece
    return page


def _axes_box(fig: Figure, width_mm: float, height_mm: float) -> list[float]:
    """Axes rectangle in figure fractions so that the data unit is exactly 1 mm."""
    fig_w, fig_h = (v * 25.4 for v in fig.get_size_inches())
    return [MARGIN_MM / fig_w, (MARGIN_MM + FOOTER_MM) / fig_h, width_mm / fig_w, height_mm / fig_h]


def _draw_grid(ax, width_mm: float, height_mm: float) -> None:
    ax.set_xlim(0, width_mm)
    ax.set_ylim(0, height_mm)
    ax.set_facecolor(PAPER)
    minor_x, minor_y = np.arange(0, width_mm + 0.01, 1.0), np.arange(0, height_mm + 0.01, 1.0)
    major_x, major_y = minor_x[::5], minor_y[::5]
    ax.vlines(minor_x, 0, height_mm, colors=MINOR_GRID, linewidth=0.3, zorder=0)
    ax.hlines(minor_y, 0, width_mm, colors=MINOR_GRID, linewidth=0.3, zorder=0)
    ax.vlines(major_x, 0, height_mm, colors=MAJOR_GRID, linewidth=0.6, zorder=1)
    ax.hlines(major_y, 0, width_mm, colors=MAJOR_GRID, linewidth=0.6, zorder=1)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_color(MAJOR_GRID)


def _draw_calibration(ax, baseline: float, gain_mm_mv: float) -> None:
    """The 1 mV, 0.2 s standardisation pulse drawn before each row."""
    x = np.array([1.0, 3.0, 3.0, 8.0, 8.0, 10.0])
    y = baseline + np.array([0.0, 0.0, gain_mm_mv, gain_mm_mv, 0.0, 0.0])
    ax.plot(x, y, color=TRACE, linewidth=0.8, zorder=3, solid_joinstyle="miter")


def _draw_trace(ax, page: np.ndarray, fs: float, lead: str, present: np.ndarray, t0: float,
                seconds: float, x0: float, baseline: float, speed_mm_s: float, gain_mm_mv: float,
                separator: bool) -> None:
    """One lead's segment ``[t0, t0 + seconds)`` drawn from ``x0`` mm on ``baseline``."""
    index = STANDARD_LEADS.index(lead)
    begin, end = int(round(t0 * fs)), int(round((t0 + seconds) * fs))
    samples = page[index, begin:end]
    x = x0 + np.arange(samples.size) / fs * speed_mm_s
    if present[index]:
        # Centre each segment on its own median so the trace sits on its row like a printout.
        level = np.nanmedian(samples) if np.isfinite(samples).any() else 0.0
        ax.plot(x, baseline + (samples - level) * gain_mm_mv, color=TRACE, linewidth=0.6,
                zorder=3, clip_on=True)
    else:
        # a dashed baseline over the part of the page the record covers
        recorded = np.isfinite(page[present, begin:end]).any(axis=0).sum() if present.any() else 0
        if recorded:
            ax.plot([x0, x0 + recorded / fs * speed_mm_s], [baseline, baseline], color="#555555",
                    linewidth=0.8, linestyle=(0, (3, 2)), zorder=3)
    label = lead if present[index] else f"{lead} (absent)"
    ax.text(x0 + 1.5, baseline + 0.42 * ROW_MM - 4.0, label, fontsize=9, fontweight="bold",
            color=TRACE, zorder=4, va="top")
    if separator:
        ax.plot([x0, x0], [baseline - 3.0, baseline + 3.0], color=TRACE, linewidth=0.8, zorder=3)


def _draw_text(fig: Figure, rec: Recording, title: str | None, labels: Sequence[str],
               speed_mm_s: float, gain_mm_mv: float, highpass_hz: float | None,
               width_mm: float, height_mm: float) -> None:
    fig_w, fig_h = (v * 25.4 for v in fig.get_size_inches())
    left = MARGIN_MM / fig_w
    top = 1.0 - MARGIN_MM / fig_h
    fig.text(left, top, title or f"Record {rec.record_id}", fontsize=12, fontweight="bold",
             va="top", ha="left", parse_math=False)
    details = [f"{rec.duration_s:.1f} s at {rec.fs:g} Hz"]
    if rec.meta.get("age") is not None:
        details.append(f"age {float(rec.meta['age']):g}")
    if rec.meta.get("sex"):
        details.append(f"sex {rec.meta['sex']}")
    second = "Predicted: " + ", ".join(labels) if labels else ""
    fig.text(left, top - 6.0 / fig_h, second, fontsize=10, va="top", ha="left", color="#8b0000", parse_math=False)
    fig.text(1.0 - MARGIN_MM / fig_w, top, "   ".join(details), fontsize=9, va="top", ha="right", parse_math=False)
    filter_text = f"display high-pass {highpass_hz:g} Hz" if highpass_hz else "unfiltered"
    fig.text(left, MARGIN_MM / fig_h + 1.0 / fig_h,
             f"{speed_mm_s:g} mm/s    {gain_mm_mv:g} mm/mV    {filter_text}    CREMA",
             fontsize=8, va="bottom", ha="left", color="#444444")


def no_mathtext(text: str) -> str:
    """``text`` with every ``$`` escaped, for a title drawn by code that leaves mathtext on: the
    text shows as it is (``rec$\\frac{1}$`` would otherwise be parsed, and fail, as a formula)."""
    return str(text).replace("$", "\\$")


def save_figure(fig: Figure, path: str | os.PathLike) -> Path:
    """Save ``fig`` atomically (temporary file, then rename); the format follows the suffix."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=fig.dpi, facecolor=fig.get_facecolor())
    return path
