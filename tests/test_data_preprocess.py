"""Preprocessing on real ECGs: rates, filters, z-score, lead mapping, windows, rejections."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from crema.config import STANDARD_LEADS, PreprocessConfig
from crema.data.preprocess import (Windows, preprocess_recording, rate_ratio, resample,
                                   window_starts, zscore)
from crema.data.readers import read_record
from crema.data.recording import Recording
from crema.errors import PreprocessError
from fixtures_data import ptbxl_record_500hz


@pytest.fixture(scope="module")
def rec500(ptbxl_root):
    # Only the 100-vs-500 Hz test needs the genuine 500 Hz file (genuine_rec500).
    return ptbxl_record_500hz(ptbxl_root, 1)


@pytest.fixture(scope="module")
def genuine_rec500(ptbxl_hr_root):
    return read_record(ptbxl_hr_root / "records500/00000/00001_hr.hea")


@pytest.fixture(scope="module")
def rec100(ptbxl_root):
    return read_record(ptbxl_root / "records100/00000/00001_lr.hea")


def test_rate_ratio_is_exact_for_common_rates():
    assert rate_ratio(500, 250) == (1, 2)
    assert rate_ratio(100, 250) == (5, 2)
    assert rate_ratio(1000, 250) == (1, 4)
    assert rate_ratio(257, 250) == (250, 257)  # INCART's rate


def test_resampled_lengths_and_window_shape(rec500, rec100):
    for rec in (rec500, rec100):
        win = preprocess_recording(rec)
        assert isinstance(win, Windows)
        assert win.signals.shape == (1, 12, 2500) and win.signals.dtype == np.float32
        assert win.lead_mask.all() and win.starts.tolist() == [0]
    assert resample(rec500.signal, 500, 250).shape == (12, 2500)
    assert resample(rec100.signal, 100, 250).shape == (12, 2500)


def test_100hz_and_500hz_versions_agree(genuine_rec500, rec100):
    """The same PTB-XL record at two rates gives nearly the same model input."""
    a = preprocess_recording(genuine_rec500).signals[0]
    b = preprocess_recording(rec100).signals[0]
    corr = [np.corrcoef(a[i], b[i])[0, 1] for i in range(12)]
    assert min(corr) > 0.95


def test_zscore_per_lead(rec500):
    x = preprocess_recording(rec500).signals[0]
    np.testing.assert_allclose(x.mean(axis=-1), 0, atol=1e-4)
    np.testing.assert_allclose(x.std(axis=-1), 1, atol=1e-3)
    assert np.isfinite(x).all()


def test_flat_lead_becomes_zeros_not_nan(rec500):
    signal = rec500.signal.copy()
    signal[8] = 0.37  # a constant V3, as from a disconnected electrode
    win = preprocess_recording(dataclasses.replace(rec500, signal=signal))
    assert np.isfinite(win.signals).all()
    assert np.all(win.signals[0, 8] == 0)
    assert win.signals[0, 7].std() == pytest.approx(1, abs=1e-3)
    z = zscore(np.zeros((2, 100), dtype=np.float32))
    assert np.all(z == 0)


def test_bandpass_removes_drift_and_60hz_tone(rec500):
    cfg = PreprocessConfig(zscore=False)
    t = np.arange(rec500.signal.shape[1]) / rec500.fs
    drift = 1.0 * np.sin(2 * np.pi * 0.1 * t + 0.3)   # 1 mV at 0.1 Hz
    tone = 0.5 * np.sin(2 * np.pi * 60 * t)            # 0.5 mV at 60 Hz
    clean = preprocess_recording(rec500, cfg).signals[0]
    dirty = preprocess_recording(dataclasses.replace(rec500, signal=rec500.signal + drift + tone),
                                 cfg).signals[0]
    residual = (dirty - clean)[:, 250:-250]  # leave out 1 s at each edge (filter transients)
    assert np.sqrt((residual ** 2).mean()) < 0.02  # of 1.06 mV RMS added
    fs = cfg.fs
    freqs = np.fft.rfftfreq(residual.shape[-1], 1 / fs)
    spectrum = np.abs(np.fft.rfft(residual, axis=-1)) * 2 / residual.shape[-1]
    assert spectrum[:, np.argmin(np.abs(freqs - 60))].max() < 0.5 / 30


def test_notch_removes_mains_hum(rec500):
    cfg = PreprocessConfig(zscore=False, band=None, notch_hz=50)
    t = np.arange(rec500.signal.shape[1]) / rec500.fs
    clean = preprocess_recording(rec500, cfg).signals[0]
    hum = preprocess_recording(dataclasses.replace(
        rec500, signal=rec500.signal + 0.3 * np.sin(2 * np.pi * 50 * t)), cfg).signals[0]
    residual = (hum - clean)[:, 250:-250]
    assert np.sqrt((residual ** 2).mean()) < 0.3 / np.sqrt(2) / 20


def test_windows_of_a_38s_record(formats_root):
    rec = read_record(formats_root / "s0010_re.hea")  # 38.4 s, 1000 Hz, 15 leads
    win = preprocess_recording(rec)
    assert win.signals.shape == (3, 12, 2500)  # the 8.4 s tail is dropped
    assert win.starts.tolist() == [0, 2500, 5000]
    assert win.lead_mask.all()  # Frank leads vx, vy, vz are dropped, the 12 are present
    half = preprocess_recording(rec, PreprocessConfig(stride_s=5.0))
    assert len(half) == 6 and half.starts.tolist() == [0, 1250, 2500, 3750, 5000, 6250]
    np.testing.assert_array_equal(half.signals[2], win.signals[1])


def test_window_starts_edge_cases():
    assert window_starts(2500, 2500, 2500).tolist() == [0]
    assert window_starts(100, 2500, 2500).tolist() == [0]
    assert window_starts(4999, 2500, 2500).tolist() == [0]
    assert window_starts(5000, 2500, 2500).tolist() == [0, 2500]


def test_derived_limb_leads_match_real_ones(rec500):
    """III, aVR, aVL, aVF rebuilt from I and II equal the recorded ones (PTB-XL stores 1 uV steps)."""
    keep = [STANDARD_LEADS.index(n) for n in ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")]
    partial = Recording(signal=rec500.signal[keep], fs=rec500.fs,
                        leads=[rec500.leads[i] for i in keep], record_id="partial")
    raw = PreprocessConfig(fs=500, band=None, zscore=False)
    full = preprocess_recording(rec500, raw)
    derived = preprocess_recording(partial, raw)
    assert derived.lead_mask.all()
    np.testing.assert_allclose(derived.signals, full.signals, atol=0.003)
    # with the default chain the derived leads still track the real ones
    a = preprocess_recording(rec500).signals[0]
    b = preprocess_recording(partial).signals[0]
    for lead in range(2, 6):
        assert np.corrcoef(a[lead], b[lead])[0, 1] > 0.995
    no_derive = preprocess_recording(partial, PreprocessConfig(derive_limb_leads=False))
    assert no_derive.lead_mask.tolist() == [True, True] + [False] * 4 + [True] * 6
    assert np.all(no_derive.signals[0, 2:6] == 0)


def test_short_records_pad_or_reject(rec500):
    short = dataclasses.replace(rec500, signal=rec500.signal[:, :3000])  # 6 s
    win = preprocess_recording(short)
    assert win.signals.shape == (1, 12, 2500)
    assert np.all(win.signals[0, :, 1500:] == 0) and np.any(win.signals[0, :, :1500] != 0)
    with pytest.raises(PreprocessError, match="shorter than one"):
        preprocess_recording(short, PreprocessConfig(short="reject"))
    tiny = dataclasses.replace(rec500, signal=rec500.signal[:, :500])  # 1 s < min_length_s
    with pytest.raises(PreprocessError, match="minimum"):
        preprocess_recording(tiny)


def test_bad_signals_raise(rec500):
    bad = rec500.signal.copy()
    bad[3, 100] = np.nan
    with pytest.raises(PreprocessError, match="NaN"):
        preprocess_recording(dataclasses.replace(rec500, signal=bad))
    frank = Recording(signal=rec500.signal[:3], fs=500, leads=("vx", "vy", "vz"), record_id="xyz")
    with pytest.raises(PreprocessError, match="none of the standard 12"):
        preprocess_recording(frank)


def test_absent_leads_stay_zero_and_masked(rec500):
    only_chest = Recording(signal=rec500.signal[6:], fs=500, leads=rec500.leads[6:], record_id="v")
    win = preprocess_recording(only_chest)
    assert win.lead_mask.tolist() == [False] * 6 + [True] * 6
    assert np.all(win.signals[:, :6] == 0)
    np.testing.assert_allclose(win.signals[0, 6:].std(axis=-1), 1, atol=1e-3)


def test_deterministic(rec500):
    a, b = preprocess_recording(rec500), preprocess_recording(rec500)
    np.testing.assert_array_equal(a.signals, b.signals)
