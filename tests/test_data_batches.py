"""Batched streams: rows read a batch at a time, crops and augmentations over the batch, loaders
whose workers build whole batches, and the pretraining stream resuming at the exact batch."""
from __future__ import annotations

import itertools
import math
import pickle
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from crema.config import AugmentConfig
from crema.data import augment as A
from crema.data.dataset import ECGWindows, open_corpora
from crema.data.loader import ShuffledBatches, batch_loader
from crema.data.rows import RowReader, open_signals
from crema.errors import CremaError
from crema.train.stream import EpochBatches, open_pretrain_data

AUG = AugmentConfig(scale=0.1, noise=0.05, wander=0.1, lead_dropout=0.2, time_shift=0.1)
KEYS = ("signal", "lead_mask", "row", "label", "seed")


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- rows.py

def test_row_reader_reads_rows_in_any_order(tiny_ptbxl_corpus, tmp_path):
    path = tiny_ptbxl_corpus.path / "signals.npy"
    memmap = open_signals(path)
    reader = RowReader(path)
    rows = np.array([41, 3, 3, 79, 0, 12])  # unsorted, repeated
    np.testing.assert_array_equal(reader.read(rows), memmap[rows])
    out = np.empty((len(rows), 12, 2500), np.float16)
    assert reader.read(rows, out=out) is out and np.array_equal(out, memmap[rows])
    clone = pickle.loads(pickle.dumps(reader))  # the path only: each process opens its own file
    np.testing.assert_array_equal(clone.read(rows[:2]), memmap[rows[:2]])
    # rows not in the page cache are read by threads: force that path for every row
    clone._nowait = False
    every = np.random.default_rng(0).permutation(80)
    np.testing.assert_array_equal(clone.read(every), memmap[every])
    with pytest.raises(CremaError, match="rows outside"):
        reader.read([80])
    short = tmp_path / "signals.npy"
    shutil.copyfile(path, short)
    with open(short, "r+b") as fh:
        fh.truncate(short.stat().st_size - 100)
    with pytest.raises(CremaError, match="cut short"):
        RowReader(short)
    cut = RowReader(path)
    cut.path, cut._nowait = short, False  # the file shrank after it was opened
    with pytest.raises(CremaError, match="cut short at row 79"):
        cut.read([78, 79])


# ----------------------------------------------------------------------------- augment.py, batches

def test_augment_batch_draws_each_augmentation_per_ecg_and_lead(real_ecgs):
    x = torch.from_numpy(real_ecgs[:16, :, :1000].copy())
    mask = torch.ones(16, 12, dtype=torch.bool)
    mask[3, 7:] = False
    x[3, 7:] = 0.0
    before = x.clone()

    def run(cfg, seed=0):
        return A.augment_batch(x, mask, cfg, A.batch_generator(seed))

    out, m = run(AUG)
    again, m2 = run(AUG)
    assert torch.equal(out, again) and torch.equal(m, m2) and not torch.equal(out, run(AUG, 1)[0])
    assert torch.equal(x, before)  # inputs untouched
    assert torch.all(out[~m] == 0) and m.any(dim=1).all() and not (m & ~mask).any()

    scaled, _ = run(AugmentConfig(scale=0.2))
    ratio = (scaled * x).sum(-1)[mask] / (x * x).sum(-1)[mask]
    assert ratio.min() >= 0.8 - 1e-5 and ratio.max() <= 1.2 + 1e-5 and ratio.std() > 0.05
    noisy, _ = run(AugmentConfig(noise=0.3))
    assert float((noisy - x)[mask].std()) == pytest.approx(0.3, rel=0.02)
    shifted, _ = run(AugmentConfig(time_shift=0.1))
    for i in (0, 5):  # every lead of one ECG rolled by one shift of at most 100 samples
        shift = next(s for s in range(-100, 101) if torch.equal(torch.roll(x[i], s, dims=-1), shifted[i]))
        assert abs(shift) <= 100
    dropped, dm = run(AugmentConfig(lead_dropout=1.0))
    assert dm.sum(dim=1).tolist() == [1] * 16 and torch.all(dropped[~dm] == 0)
    drift = run(AugmentConfig(wander=0.5))[0] - x
    spectrum = torch.fft.rfft(drift[mask] * torch.hann_window(1000), dim=-1).abs() ** 2
    freqs = torch.fft.rfftfreq(1000, 1 / 250)
    assert 0.1 < float(drift.abs().max()) <= A.WANDER_SINES * 0.5 + 1e-5
    assert float(spectrum[:, freqs <= 1.0].sum() / spectrum.sum()) > 0.99


@pytest.mark.parametrize("t", [1000, 1013])
def test_wander_by_angle_addition_equals_the_sines(t):
    g = torch.Generator().manual_seed(0)
    shape = (3, 12, A.WANDER_SINES, 1)
    freq = A.WANDER_LOW_HZ + A.WANDER_SPAN_HZ * torch.rand(shape, generator=g)
    phase = 2 * math.pi * torch.rand(shape, generator=g)
    amp = 0.5 * torch.rand(shape, generator=g)
    exact = A.wander_drift(np.arange(t) / 250.0, freq.double().numpy(), phase.double().numpy(),
                           amp.double().numpy())
    got = A.add_wander_(torch.zeros(3, 12, t), 250.0, freq, phase, amp)
    np.testing.assert_allclose(got.numpy(), exact, atol=2e-6)


def test_crop_batch_crops_and_rolls_each_ecg():
    x = torch.arange(2 * 3 * 10, dtype=torch.float16).reshape(2, 3, 10)
    out = A.crop_batch(x, np.array([1, 4]), 5, shifts=torch.tensor([2, -1]))
    assert out.dtype == torch.float32
    assert torch.equal(out[0], torch.roll(x[0, :, 1:6].float(), 2, dims=-1))
    assert torch.equal(out[1], torch.roll(x[1, :, 4:9].float(), -1, dims=-1))
    assert torch.equal(A.crop_batch(x, None, None, dtype=torch.float16), x)
    rolls = torch.remainder(torch.tensor([2, -1]), 5)  # the gather an accelerator runs, the same crops
    assert torch.equal(A._crop_gather(x, torch.tensor([1, 4]), 5, rolls).float(), out)
    assert torch.equal(A.crop_batch(x.bfloat16(), np.array([1, 4]), 5, torch.tensor([2, -1])), out)


# ----------------------------------------------------------------------------- dataset batches

def test_batch_is_the_items_stacked_without_augmentation(tiny_ptbxl_corpus):
    idx = np.array([7, 0, 42, 7, 63])
    for kwargs in (dict(), dict(crop=1000, seed=7), dict(crop=1000, random_crop=False)):
        ds = ECGWindows(tiny_ptbxl_corpus, labels="ptbxl-superdiagnostic", **kwargs)
        ds.set_epoch(3)
        items = [ds[int(i)] for i in idx]
        batch = ds.batch(idx, epoch=3)
        assert set(batch) == set(KEYS)
        assert torch.equal(batch["signal"], torch.stack([it["signal"] for it in items]))
        assert torch.equal(batch["lead_mask"], torch.stack([it["lead_mask"] for it in items]))
        assert torch.equal(batch["label"], torch.stack([it["label"] for it in items]))
        assert batch["row"].tolist() == [it["row"] for it in items]
        half = ds.batch(idx, epoch=3, dtype=torch.float16)["signal"]
        assert half.dtype == torch.float16 and torch.equal(half.float(), batch["signal"])
        assert _same(ds[(3, idx)], batch)  # the keys a loader hands over
    ds = ECGWindows(tiny_ptbxl_corpus, crop=1000, seed=7)
    ds.set_epoch(4)  # another epoch, other crops
    assert not torch.equal(ds.batch(idx)["signal"], ds.batch(idx, epoch=3)["signal"])
    with pytest.raises(CremaError, match="batch indices"):
        ds.batch([0, len(ds)])


def test_crop_starts_are_drawn_per_epoch_for_every_item(tiny_ptbxl_corpus):
    ds = ECGWindows(tiny_ptbxl_corpus, crop=1000, seed=7)
    room = tiny_ptbxl_corpus.window - 1000
    table = ds.epoch_crop_starts(3)
    assert table.shape == (len(ds),) and table.min() >= 0 and table.max() <= room
    assert len(np.unique(table)) > len(ds) // 2  # spread over the room, not one position
    idx = np.array([5, 1, 5, 60])
    assert ds.crop_starts(idx, 3).tolist() == table[idx].tolist()
    assert not np.array_equal(table, ds.epoch_crop_starts(4))  # another epoch, other crops
    assert not np.array_equal(table, ECGWindows(tiny_ptbxl_corpus, crop=1000, seed=8).epoch_crop_starts(3))
    ds.epoch_crop_starts(5)
    assert sorted(ds._crop_tables) == [4, 5]  # only the latest epochs are kept
    worker = pickle.loads(pickle.dumps(ds))  # what a loader sends: redrawn there, the same draws
    assert worker._crop_tables == {} and np.array_equal(worker.epoch_crop_starts(3), table)
    assert ECGWindows(tiny_ptbxl_corpus, crop=1000, random_crop=False).crop_starts(idx, 3).tolist() == [room // 2] * 4


def test_augmented_batches_are_seeded_by_their_keys(tiny_ptbxl_corpus):
    ds = ECGWindows(tiny_ptbxl_corpus, crop=1000, augment=AUG, seed=1)
    idx = np.arange(10, 26)
    batch = ds.batch(idx, epoch=2)
    assert _same(batch, ds.batch(idx, epoch=2))
    assert not torch.equal(batch["signal"], ds.batch(idx, epoch=3)["signal"])
    assert not torch.equal(batch["signal"][1:], ds.batch(idx[1:], epoch=2)["signal"])
    plain = ds.read_batch(idx, epoch=2)
    assert torch.equal(plain["signal"], ECGWindows(tiny_ptbxl_corpus, crop=1000, seed=1).batch(idx, 2)["signal"])
    assert _same(ds.augmented(plain), batch)  # what a GPU would do after the transfer, here on the CPU
    deferred = ECGWindows(tiny_ptbxl_corpus, crop=1000, augment=AUG, seed=1, defer_augment=True)
    assert _same(deferred.batch(idx, epoch=2), plain) and _same(deferred.augmented(plain), batch)
    assert torch.all(batch["signal"][~batch["lead_mask"]] == 0) and (~batch["lead_mask"]).any()


def test_batches_mixing_corpora(tiny_ptbxl_corpus, unlabeled_corpus):
    both = open_corpora([str(tiny_ptbxl_corpus.path), str(unlabeled_corpus.path)], crop=1000, seed=5)
    idx = np.array([85, 2, 100, 79, 0])  # 80 windows in the first corpus
    both.set_epoch(1)
    batch = both.batch(idx)
    assert torch.equal(batch["signal"], torch.stack([both[int(i)]["signal"] for i in idx]))
    assert batch["row"].tolist() == [5, 2, 20, 79, 0]
    one_part = both.batch(np.array([90, 81]), epoch=1)
    assert torch.equal(one_part["signal"], both.datasets[1].batch([10, 1], epoch=1)["signal"])
    aug = open_corpora([str(tiny_ptbxl_corpus.path), str(unlabeled_corpus.path)], crop=1000, seed=5,
                       augment=AUG)
    mixed = aug.batch(idx, epoch=1)
    assert _same(mixed, aug.augmented(aug.read_batch(idx, epoch=1)))
    aug.datasets[1].augment = AugmentConfig(noise=0.1)
    with pytest.raises(CremaError, match="different augmentations"):
        aug.batch(idx, epoch=1)


def test_shuffled_batches_cover_each_epoch():
    sampler = ShuffledBatches(10, 4, seed=3)
    first = list(sampler)
    assert len(sampler) == 3 and [len(b) for _, b in first] == [4, 4, 2]
    assert sorted(np.concatenate([b for _, b in first]).tolist()) == list(range(10))
    assert all(epoch == 0 for epoch, _ in first)
    sampler.set_epoch(1)
    second = list(sampler)
    assert all(epoch == 1 for epoch, _ in second)
    assert not np.array_equal(first[0][1], second[0][1])
    assert len(ShuffledBatches(10, 4, drop_last=True)) == 2
    assert [b.tolist() for _, b in ShuffledBatches(5, 2, shuffle=False)] == [[0, 1], [2, 3], [4]]


def test_loader_batches_do_not_depend_on_workers(tiny_ptbxl_corpus):
    ds = ECGWindows(tiny_ptbxl_corpus, labels="ptbxl-superdiagnostic", crop=1000, augment=AUG, seed=2)
    sampler = ShuffledBatches(len(ds), 8, seed=4, drop_last=True)
    runs = {}
    for workers in (0, 1, 2):
        loader = batch_loader(ds, sampler, num_workers=workers)
        runs[workers] = []
        for epoch in (0, 1):  # the epoch reaches persistent workers inside the keys
            sampler.set_epoch(epoch)
            runs[workers] += list(loader)
    assert len(runs[0]) == 2 * (len(ds) // 8)
    for workers in (1, 2):
        assert all(_same(a, b) for a, b in zip(runs[0], runs[workers]))
    assert not torch.equal(runs[0][0]["signal"], runs[0][len(runs[0]) // 2]["signal"])


# ----------------------------------------------------------------------------- the pretraining stream

def test_pretraining_stream_resumes_at_the_exact_batch(unlabeled_corpus):
    """Stop after k batches, resume from k (as a checkpoint's ``batches_done``) with another
    number of workers: the same batches as the uninterrupted stream, across an epoch boundary."""
    data = open_pretrain_data([str(unlabeled_corpus.path)], window=1000, seed=3, view_crop="same")
    sampler = DistributedSampler(data.dataset, num_replicas=1, rank=0, shuffle=True, seed=3, drop_last=True)

    def stream(skip: int, workers: int, n: int) -> list[dict]:
        loader = batch_loader(data.dataset, EpochBatches(sampler, 16, skip=skip), num_workers=workers)
        return list(itertools.islice(loader, n))

    whole = stream(0, 0, 12)  # 128 windows: 8 batches per epoch
    k = 5
    resumed = stream(0, 2, k) + stream(k, 1, 12 - k)
    assert all(_same(a, b) for a, b in zip(whole, resumed)) and len(resumed) == 12
    batch = whole[9]  # epoch 1: items (1, i) stacked, in float16
    assert batch["signal"].dtype == torch.float16 and batch["signal"].shape == (16, 12, 1000)
    keys = list(itertools.islice(EpochBatches(sampler, 16), 10))[9]
    items = [data.dataset[key] for key in keys]
    assert torch.equal(batch["signal"].float(), torch.stack([it["signal"] for it in items]))
    assert batch["patient"].tolist() == [it["patient"] for it in items]
    assert batch["row"].tolist() == [it["row"] for it in items]


def test_ring_hand_over_copies_out_and_notices_an_overwritten_buffer(tiny_ptbxl_corpus):
    """What a worker sends (large tensors in its reused shared buffers, small ones inline) comes
    out equal; a buffer overwritten before it was read is noticed and its batch made again."""
    from crema.data.loader import BatchLoader, Packed, Ring

    ds = ECGWindows(tiny_ptbxl_corpus, labels="ptbxl-superdiagnostic", crop=1000, augment=AUG, seed=2)
    loader = BatchLoader(ds, ShuffledBatches(len(ds), 8), num_workers=1, pin_memory=False, prefetch_factor=2)
    ring = Ring(worker=0, slots=3)
    keys = [(0, np.arange(8 * i, 8 * i + 8)) for i in range(4)]
    messages = [ring.pack(ds[key], key) for key in keys]
    assert isinstance(messages[0], Packed) and list(messages[0].layout) == ["signal"]  # 8 x 12 x 1000 float32
    assert messages[0].buffer is not None and messages[3].buffer is None  # slot 1 again, reused
    with pytest.warns(UserWarning, match="overwritten"):
        again = loader.receive(messages[0])  # its slot held batch 4 by then
    assert _same(again, ds[keys[0]])
    for key, message in zip(keys[1:], messages[1:]):
        assert _same(loader.receive(message), ds[key])


def test_loader_asks_for_the_next_batch_rows_ahead(tiny_ptbxl_corpus):
    from crema.data.loader import Lookahead

    class Recording(ECGWindows):
        def prefetch(self, key):
            self.asked.append(key)
            super().prefetch(key)

    ds = Recording(tiny_ptbxl_corpus)
    ds.asked = []
    keys = [[0, 1], [5, 79], [3]]
    seen = []
    for key in Lookahead(keys, ds):
        seen.append((key, list(ds.asked)))
    assert seen == [([0, 1], [[5, 79]]), ([5, 79], [[5, 79], [3]]), ([3], [[5, 79], [3]])]
    assert len(Lookahead(keys, ds)) == 3
    ds.reader.advise([0, 79, 80, -1])  # rows outside the file are ignored


def test_pretraining_with_workers_equals_without_and_resumes(tiny_model_config, unlabeled_corpus, tmp_path):
    """The trainer's loader: 2 workers give the losses of none, also stopped and resumed with 1."""
    import dataclasses
    import json

    from fixtures_model import tiny_run_config

    from crema.train.pretrain import pretrain

    def losses(run):
        return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]

    cfg = tiny_run_config(tiny_model_config, unlabeled_corpus.path, tmp_path / "none", steps=2)
    pretrain(cfg, progress=False)
    workers = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, out=str(tmp_path / "two"), num_workers=2))
    pretrain(workers, progress=False, stop_at=1)
    one = dataclasses.replace(workers, train=dataclasses.replace(workers.train, num_workers=1))
    pretrain(one, resume=True, progress=False)
    assert losses(tmp_path / "two") == pytest.approx(losses(tmp_path / "none"), rel=1e-6, abs=1e-7)
