"""Test-time corruptions on real preprocessed windows, and AUROC vs severity."""
from __future__ import annotations

import json

import numpy as np
import pytest

from crema.errors import CremaError
from crema.eval import robustness
from crema.eval.splits import task_split
from crema.train.finetune import load_classifier

ROWS = np.arange(12)


@pytest.fixture(scope="module")
def windows(tiny_ptbxl_corpus):
    x = np.asarray(tiny_ptbxl_corpus.signals[ROWS], dtype=np.float32)
    return x, tiny_ptbxl_corpus.lead_mask[ROWS].copy(), float(tiny_ptbxl_corpus.preprocess.fs)


@pytest.mark.parametrize("name", sorted(robustness.CORRUPTIONS))
def test_severity_zero_is_identity_and_distance_grows(windows, name):
    x, mask, fs = windows
    clean, clean_mask = robustness.corrupt(x, mask, name, 0, fs, seed=0, rows=ROWS)
    assert np.array_equal(clean, x) and np.array_equal(clean_mask, mask)
    distances = []
    for severity in range(1, robustness.N_SEVERITIES + 1):
        out, out_mask = robustness.corrupt(x, mask, name, severity, fs, seed=0, rows=ROWS)
        assert out.shape == x.shape and out.dtype == np.float32 and np.isfinite(out).all()
        assert np.all(out[~out_mask] == 0)                 # absent leads stay zeros
        distances.append(np.sqrt(((out - x) ** 2).sum(axis=(1, 2))))
    distances = np.array(distances)                        # (severity, record)
    assert np.all(distances[0] > 0)
    assert np.all(np.diff(distances, axis=0) > 0), f"{name}: distance not increasing with severity"


def test_corruptions_are_deterministic_and_batch_independent(windows):
    x, mask, fs = windows
    a, _ = robustness.corrupt(x, mask, "gaussian_noise", 3, fs, seed=5, rows=ROWS)
    b, _ = robustness.corrupt(x, mask, "gaussian_noise", 3, fs, seed=5, rows=ROWS)
    c, _ = robustness.corrupt(x[4:7], mask[4:7], "gaussian_noise", 3, fs, seed=5, rows=ROWS[4:7])
    d, _ = robustness.corrupt(x, mask, "gaussian_noise", 3, fs, seed=6, rows=ROWS)
    assert np.array_equal(a, b) and np.array_equal(a[4:7], c) and not np.array_equal(a, d)


def test_missing_leads_clears_the_mask(windows):
    x, mask, fs = windows
    for severity, n_missing in enumerate(robustness.CORRUPTIONS["missing_leads"].levels, start=1):
        out, out_mask = robustness.corrupt(x, mask, "missing_leads", severity, fs, rows=ROWS)
        assert np.all(mask.sum(1) - out_mask.sum(1) == min(n_missing, 11))
        assert np.all(np.abs(out[~out_mask]).sum(-1) == 0)
        assert np.array_equal(out[out_mask], x[out_mask])


def test_powerline_hum_is_at_mains_frequency(windows):
    x, mask, fs = windows
    out, _ = robustness.corrupt(x, mask, "powerline_50hz", 2, fs, rows=ROWS)
    spectrum = np.abs(np.fft.rfft(out - x, axis=-1)).mean(axis=(0, 1))
    freqs = np.fft.rfftfreq(x.shape[-1], 1 / fs)
    assert freqs[np.argmax(spectrum)] == pytest.approx(50.0, abs=0.2)


def test_electrode_motion_is_a_few_short_bursts(windows):
    x, mask, fs = windows
    out, _ = robustness.corrupt(x, mask, "electrode_motion", 3, fs, rows=ROWS)
    touched = np.abs(out - x).max(axis=1) > 1e-6            # (record, time)
    max_share = robustness.MOTION_BURSTS * robustness.MOTION_DURATION_S[1] * fs / x.shape[-1]
    assert np.all(touched.mean(axis=1) <= max_share + 1e-9) and np.all(touched.any(axis=1))


def test_unknown_corruption_and_severity():
    x, mask = np.zeros((1, 12, 100), np.float32), np.ones((1, 12), bool)
    with pytest.raises(CremaError, match="unknown corruption"):
        robustness.corrupt(x, mask, "fog", 1, 250.0)
    with pytest.raises(ValueError, match="severity"):
        robustness.corrupt(x, mask, "gaussian_noise", 6, 250.0)


def test_classifier_curve_starts_at_its_clean_test_auroc(tiny_classifier_checkpoint, tiny_ptbxl_corpus,
                                                         one_torch_thread):
    model, config = load_classifier(tiny_classifier_checkpoint)
    split = task_split(tiny_ptbxl_corpus, config["task"])
    curve = robustness.classifier_severity_curve(
        model, split, tiny_ptbxl_corpus, np.asarray(config["thresholds"]),
        robustness.SeverityGrid(("gaussian_noise", "missing_leads"), (0, 2, 5), seed=0, n_bootstrap=1000),
        robustness.Inference(crop=config["crop"]))
    assert [(c["corruption"], c["severity"]) for c in curve] == [
        ("gaussian_noise", 0), ("gaussian_noise", 2), ("gaussian_noise", 5),
        ("missing_leads", 0), ("missing_leads", 2), ("missing_leads", 5)]
    summary = json.loads((tiny_classifier_checkpoint / "finetune_summary.json").read_text())
    clean = summary["test"]["auroc"]["macro"]
    assert curve[0]["evaluation"]["auroc"]["macro"] == pytest.approx(clean, abs=1e-6)
    assert curve[3]["evaluation"] is curve[0]["evaluation"]   # clean computed once
    assert curve[5]["evaluation"]["auroc"]["macro"] != pytest.approx(clean, abs=1e-9)  # 11 leads gone
