"""Torch datasets over corpora (crops, augmentation, determinism, workers, dedup) and augment.py."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from crema.config import AugmentConfig, PreprocessConfig
from crema.data import augment as A
from crema.data.dataset import ECGWindows, open_corpora, select_rows
from crema.data.prepare import prepare_corpus
from crema.errors import CremaError

AUG = AugmentConfig(scale=0.1, noise=0.05, wander=0.1, lead_dropout=0.2, time_shift=0.1)


def test_items_whole_window(tiny_ptbxl_corpus):
    ds = ECGWindows(tiny_ptbxl_corpus)
    item = ds[3]
    assert item["signal"].shape == (12, 2500) and item["signal"].dtype == torch.float32
    assert item["lead_mask"].dtype == torch.bool and item["lead_mask"].all()
    assert item["row"] == 3 and "label" not in item
    np.testing.assert_array_equal(item["signal"].numpy(), tiny_ptbxl_corpus.signals[3].astype(np.float32))


def test_labels_by_task_drop_unlabelled_rows(tiny_ptbxl_corpus):
    c = tiny_ptbxl_corpus
    rows = c.rows()  # 5 of the 80 records (all in the val fold) have no diagnostic statement
    ds = ECGWindows(c, rows, labels="ptbxl-superdiagnostic")
    y, classes, has = c.labels("ptbxl-superdiagnostic", rows)
    assert len(ds) == int(has.sum()) < len(rows) and ds.classes == classes
    for i in (0, len(ds) - 1):
        item = ds[i]
        assert item["label"].shape == (5,) and item["label"].sum() >= 1
        np.testing.assert_array_equal(item["label"].numpy(), y[has][i])
        assert item["row"] == rows[has][i]


def test_centre_and_random_crops(tiny_ptbxl_corpus):
    c = tiny_ptbxl_corpus
    centre = ECGWindows(c, crop=1000, random_crop=False)
    np.testing.assert_array_equal(centre[5]["signal"].numpy(), c.signals[5, :, 750:1750].astype(np.float32))
    rand = ECGWindows(c, crop=1000, seed=7)
    a, b = rand[5]["signal"], rand[5]["signal"]
    assert a.shape == (12, 1000) and torch.equal(a, b)  # same (seed, epoch, index) -> same crop
    full = c.signals[5].astype(np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(full, 1000, axis=-1)  # (12, 1501, 1000)
    offsets = np.flatnonzero((windows == a.numpy()[:, None, :]).all(axis=(0, 2)))
    assert len(offsets) == 1 and 0 <= offsets[0] <= 1500  # a real slice of the window
    draws = set()
    for epoch in range(6):
        rand.set_epoch(epoch)
        draws.add(rand[5]["signal"][0, 0].item())
    assert len(draws) > 1  # new epoch, new crop
    other_seed = ECGWindows(c, crop=1000, seed=8)
    assert not torch.equal(other_seed[5]["signal"], a)
    with pytest.raises(CremaError, match="crop"):
        ECGWindows(c, crop=3000)


def test_augment_is_reproducible_and_leaves_corpus_untouched(tiny_ptbxl_corpus):
    c = tiny_ptbxl_corpus
    before = np.array(c.signals[10])
    ds = ECGWindows(c, augment=AUG, seed=3, crop=2000)
    a, b = ds[10], ds[10]
    assert torch.equal(a["signal"], b["signal"]) and torch.equal(a["lead_mask"], b["lead_mask"])
    assert not torch.equal(a["signal"], ECGWindows(c, crop=2000, random_crop=False)[10]["signal"])
    np.testing.assert_array_equal(np.array(c.signals[10]), before)
    dropped = 0
    for i in range(len(ds)):
        item = ds[i]
        mask = item["lead_mask"]
        assert mask.any()
        assert torch.all(item["signal"][~mask] == 0)
        dropped += int((~mask).sum())
    assert 0.1 < dropped / (12 * len(ds)) < 0.3  # lead_dropout = 0.2


def test_two_workers_give_the_same_items(tiny_ptbxl_corpus):
    ds = ECGWindows(tiny_ptbxl_corpus, labels="ptbxl-superdiagnostic", augment=AUG, crop=1000, seed=1)
    ds.set_epoch(2)
    direct = [ds[i] for i in range(16)]
    loader = DataLoader(ds, batch_size=4, num_workers=2, shuffle=False)
    batches = [b for _, b in zip(range(4), loader)]
    signals = torch.cat([b["signal"] for b in batches])
    assert torch.equal(signals, torch.stack([d["signal"] for d in direct]))
    assert torch.equal(torch.cat([b["label"] for b in batches]), torch.stack([d["label"] for d in direct]))
    assert torch.cat([b["row"] for b in batches]).tolist() == [d["row"] for d in direct]


def test_pickled_dataset_does_not_carry_signals(tiny_ptbxl_corpus):
    ds = ECGWindows(tiny_ptbxl_corpus, crop=1000, random_crop=False)
    _ = ds[0]  # opens the memmap
    blob = pickle.dumps(ds)
    assert len(blob) < 50_000  # the corpus holds 4.8 MB of signals
    clone = pickle.loads(blob)
    assert torch.equal(clone[7]["signal"], ds[7]["signal"])
    assert len(pickle.dumps(tiny_ptbxl_corpus)) < 200_000


@pytest.fixture(scope="module")
def hr_corpus(cinc_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("corpora") / "hr"
    prepare_corpus(cinc_root / "ptbxl", out, workers=1, progress=False)
    return out


def test_open_corpora_with_splits_and_dedup(tiny_ptbxl_corpus, hr_corpus):
    ptb = str(tiny_ptbxl_corpus.path)
    both = open_corpora([ptb, str(hr_corpus)], crop=500)
    assert len(both) == 80 + 39 - 10  # HR00001-HR00010 are PTB-XL records 1-10
    served = set()
    for part in both.datasets:
        served.update(part.corpus.index["source_id"].to_numpy()[part.rows].tolist())
    assert len(served) == len(both)
    assert len(open_corpora([ptb, str(hr_corpus)], dedup=False)) == 119
    train_only = open_corpora([f"{ptb}:train", str(hr_corpus)])
    # records 1-10 are dropped from the CinC copy even where PTB-XL holds them out of train
    assert len(train_only) == 51 + 29
    assert train_only[0]["signal"].shape == (12, 2500)
    val = open_corpora(f"{ptb}:val,test", crop=1000, random_crop=False)
    assert len(val) == 29 and val[0]["signal"].shape == (12, 1000)

    # select_rows is the same selection, for code that must know which records a run saw
    selected = select_rows([f"{ptb}:train", str(hr_corpus)])
    assert [len(rows) for _, rows in selected] == [51, 29]
    seen = {sid for corpus, rows in selected for sid in corpus.index["source_id"].to_numpy()[rows]}
    held_out = set(tiny_ptbxl_corpus.index["source_id"].to_numpy()[tiny_ptbxl_corpus.rows(["val", "test"])])
    assert not seen & held_out
    train_only.set_epoch(3)
    assert all(p.epoch == 3 for p in train_only.datasets)


def test_open_corpora_rejects_mixed_windows(tiny_ptbxl_corpus, ptbxl_root, tmp_path):
    other = tmp_path / "w5"
    prepare_corpus(ptbxl_root, other, cfg=PreprocessConfig(window_s=5, stride_s=5), workers=1,
                   ptbxl_rate=100, limit=2, progress=False)
    with pytest.raises(CremaError, match="window"):
        open_corpora([str(tiny_ptbxl_corpus.path), str(other)])


# ----------------------------------------------------------------------------- augment.py

@pytest.fixture(scope="module")
def ecg(tiny_ptbxl_corpus):
    return np.array(tiny_ptbxl_corpus.signals[0], dtype=np.float32)


def test_gaussian_noise_severity(ecg):
    noisy = A.gaussian_noise(ecg, np.random.default_rng(0), 0.3)
    assert (noisy - ecg).std() == pytest.approx(0.3, rel=0.02)
    assert np.array_equal(A.gaussian_noise(ecg, np.random.default_rng(0), 0.0), ecg)


def test_amplitude_scale_bounds(ecg):
    scaled = A.amplitude_scale(ecg, np.random.default_rng(1), 0.2)
    ratio = (scaled * ecg).sum(axis=1) / (ecg * ecg).sum(axis=1)
    assert np.all((ratio >= 0.8 - 1e-4) & (ratio <= 1.2 + 1e-4)) and ratio.std() > 0


def test_baseline_wander_is_slow(ecg):
    drift = A.baseline_wander(ecg, np.random.default_rng(2), 0.5, fs=250) - ecg
    assert 0.2 < np.abs(drift).max() <= A.WANDER_SINES * 0.5 + 1e-5  # each sine is at most 0.5
    spectrum = np.abs(np.fft.rfft(drift * np.hanning(drift.shape[-1]), axis=-1)) ** 2
    freqs = np.fft.rfftfreq(drift.shape[-1], 1 / 250)
    assert spectrum[:, freqs <= 1.0].sum() / spectrum.sum() > 0.99


def test_powerline_hum_frequency(ecg):
    hum = A.powerline_hum(ecg, np.random.default_rng(3), 0.2, fs=250, hz=60) - ecg
    freqs = np.fft.rfftfreq(hum.shape[-1], 1 / 250)
    assert freqs[np.abs(np.fft.rfft(hum[4])).argmax()] == pytest.approx(60)


def test_missing_and_kept_leads(ecg):
    mask = np.ones(12, dtype=bool)
    x, m = A.missing_leads(ecg, mask, np.random.default_rng(4), 5)
    assert m.sum() == 7 and np.all(x[~m] == 0) and np.array_equal(x[m], ecg[m])
    x, m = A.missing_leads(ecg, mask, np.random.default_rng(4), 30)
    assert m.sum() == 1  # one lead is always kept
    x, m = A.keep_leads(ecg, mask, ("I", "avf"))
    assert np.flatnonzero(m).tolist() == [0, 5] and np.all(x[1:5] == 0)
    batch = np.stack([ecg, ecg])
    xb, mb = A.missing_leads(batch, np.ones((2, 12), bool), np.random.default_rng(4), 3)
    assert mb.sum(axis=1).tolist() == [9, 9] and np.all(xb[~mb] == 0) and np.array_equal(xb[mb], batch[mb])
    xb, mb = A.lead_dropout(batch, np.ones((2, 12), bool), np.random.default_rng(5), 1.0)
    assert mb.sum(axis=1).tolist() == [1, 1]
    assert np.all(xb[~mb] == 0)


def test_time_shift_is_circular(ecg):
    shifted = A.time_shift(ecg, np.random.default_rng(6), 0.1)
    shift = next(s for s in range(-250, 251) if np.array_equal(np.roll(ecg, s, axis=-1), shifted))
    assert abs(shift) <= 250
