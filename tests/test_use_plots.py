"""Paper-style 12-lead plot and embedding map on real ECGs."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from crema.data.readers import read_record
from crema.data.recording import Recording
from crema.viz import paper
from crema.viz.embedding import OTHER, category_labels, plot_embedding_map, project_2d
from fixtures_data import ptbxl_record_500hz


@pytest.fixture(scope="module")
def rec(ptbxl_root) -> Recording:
    """PTB-XL record 8 at 500 Hz (resampled from the sample's 100 Hz file without the shared data)."""
    return ptbxl_record_500hz(ptbxl_root, 8)


def test_page_is_millimetre_paper_at_25_mm_s_and_10_mm_mv(rec, tmp_path):
    fig = paper.plot_ecg_paper(rec, labels=["NORM 0.91"], highpass_hz=None)
    ax = fig.axes[0]
    width_mm = paper.CAL_MM + 10 * 25
    assert ax.get_xlim() == (0, width_mm) and ax.get_ylim() == (0, 4 * paper.ROW_MM)
    # one data unit is one millimetre of the figure
    box = ax.get_position()
    fig_w_mm, fig_h_mm = (v * 25.4 for v in fig.get_size_inches())
    assert box.width * fig_w_mm == pytest.approx(width_mm)
    assert box.height * fig_h_mm == pytest.approx(4 * paper.ROW_MM)
    texts = [t.get_text() for t in ax.texts] + [t.get_text() for t in fig.texts]
    for lead in ("I", "aVR", "V1", "V4", "II", "aVL", "V2", "V5", "III", "aVF", "V3", "V6"):
        assert lead in texts
    assert "Predicted: NORM 0.91" in texts and f"Record {rec.record_id}" in texts
    lines = ax.get_lines()
    calibration = [l for l in lines if len(l.get_xdata()) == 6]
    assert len(calibration) == 4
    assert all(np.ptp(l.get_ydata()) == pytest.approx(10.0) for l in calibration)  # 1 mV = 10 mm
    # lead I, first 2.5 s: 25 mm/s horizontally and 10 mm/mV vertically
    traces = [l for l in lines if len(l.get_xdata()) == 1250]
    lead_i = traces[0]
    x, y = lead_i.get_xdata(), lead_i.get_ydata()
    assert x[0] == pytest.approx(paper.CAL_MM) and x[-1] - x[0] == pytest.approx(1249 / 500 * 25)
    assert np.ptp(y) == pytest.approx(10 * np.ptp(rec.signal[0, :1250]), rel=1e-5)
    rhythm = [l for l in lines if len(l.get_xdata()) == 5000]
    assert len(rhythm) == 1  # full-length lead II strip
    out = paper.save_figure(fig, tmp_path / "ecg.png")
    image = imread(out)
    assert image.shape[0] > 800 and image.shape[1] > 1400
    # the paper is pink: plenty of pixels where red clearly exceeds green
    rgb = image[..., :3]
    assert ((rgb[..., 0] - rgb[..., 1]) > 0.1).mean() > 0.05


def test_missing_leads_are_marked_and_short_records_leave_blank_paper(rec):
    partial = Recording(rec.signal[[0, 1, 6]][:, :2000], rec.fs, ("I", "II", "V1"), "partial")
    fig = paper.plot_ecg_paper(partial)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert "V2 (absent)" in texts and "V6 (absent)" in texts
    assert "aVF" in texts  # limb leads are derived from I and II, not absent
    rhythm = [l for l in fig.axes[0].get_lines() if len(l.get_xdata()) == 5000][0]
    assert np.isnan(rhythm.get_ydata()[2000:]).all() and np.isfinite(rhythm.get_ydata()[:2000]).all()


def test_embedding_map_categories_and_numbers(unlabeled_stack):
    signals = np.load(unlabeled_stack, mmap_mode="r")[:40].astype(np.float32)
    features = signals.reshape(40, 12, 50, 50).std(axis=-1).reshape(40, -1)  # crude real features
    xy = project_2d(features, "pca")
    assert xy.shape == (40, 2)
    assert xy[:, 0].var() >= xy[:, 1].var()  # first principal component carries most variance
    groups = ["a"] * 20 + ["b"] * 19 + [""]
    fig = plot_embedding_map(features, groups, "pca", color_name="group")
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert legend == ["a (20)", "b (19)", "(none) (1)"]
    fig = plot_embedding_map(features, np.arange(40) * 1.5, "tsne")
    assert len(fig.axes) == 2  # a colour bar for a numeric column
    many = category_labels(pd.Series([f"c{i % 13}" for i in range(40)]))  # c0 x4, c1..c12 x3
    assert many.nunique() == 11 and (many == OTHER).sum() == 9 and (many == "c0").sum() == 4
    with pytest.raises(ValueError, match="3 colour values for 40"):
        plot_embedding_map(features, ["a", "b", "c"])
