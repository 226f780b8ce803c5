"""Torch datasets over prepared corpora: one window per item, or a whole batch per item.

Two ways to read a dataset, both deterministic:

* an item per index (``dataset[i]``): one window, cropped and augmented with numpy, its
  augmentation from a generator seeded by ``(seed, epoch, index)``; a DataLoader with
  ``batch_size`` collates.
* a batch per key (``dataset[indices]`` or ``dataset[(epoch, indices)]``, :meth:`ECGWindows.batch`):
  the rows are read in one pass (:class:`crema.data.rows.RowReader`: ascending file order, one
  ``pread`` per row with random-access advice), cropped with one copy per ECG and augmented with
  torch ops over the whole batch (:func:`crema.data.augment.augment_batch`). The augmentation is
  drawn from one generator per batch, seeded by ``(seed, epoch, indices)``.
  :func:`crema.data.loader.batch_loader` hands such keys (:class:`crema.data.loader.ShuffledBatches`)
  to DataLoader workers, each building whole batches.

Random crop positions are the same both ways: drawn for every item of an epoch at once
(:meth:`ECGWindows.epoch_crop_starts`, from a generator of ``(seed, epoch)``), looked up per item.

Either way an item or batch depends only on its key, never on the number of DataLoader workers
or on which worker made it; call :meth:`ECGWindows.set_epoch` (or put the epoch in the key,
which reaches persistent workers) each epoch for fresh draws. Memory stays flat as the corpus
grows: only the requested rows are read.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from ..config import AugmentConfig
from ..errors import CremaError
from .augment import (apply_augment, augment_batch, batch_generator, crop_batch, draw_shifts, is_identity,
                      perturb_batch_)
from .corpus import Corpus, parse_corpus_spec
from .rows import RowReader, open_signals

CorpusLike = Corpus | str | os.PathLike
Batch = dict[str, torch.Tensor]
# The spawn key of an epoch's crop-start stream, apart from the items' augmentation streams.
CROP_STREAM = 1


class ECGWindows(Dataset):
    """Windows of one corpus.

    Args:
        corpus: a :class:`Corpus` or its folder.
        rows: corpus rows to serve (default all), e.g. ``corpus.rows("train")``.
        labels: a task name (rows without a label for it are dropped, see ``self.rows``) or an
            array ``(len(rows), K)`` aligned with ``rows``; None = no labels.
        augment: ``AugmentConfig`` applied per item (None = off).
        crop: samples per item (None = the whole window).
        seed: base seed of the crop starts and augmentations.
        random_crop: random crop position (training) or the centre (evaluation).
        defer_augment: batches come un-augmented, for :meth:`augmented` to apply where the batch
            lies (on the GPU after the transfer); items are augmented as always.

    Items are dicts: ``signal (12, T)`` float32, ``lead_mask (12,)`` bool, ``row`` int (corpus
    row), and ``label (K,)`` float32 when labels are given. Batches (:meth:`batch`) hold the
    same keys stacked, plus ``seed``, the seed of the batch's augmentation.
    """

    def __init__(self, corpus: CorpusLike, rows: Sequence[int] | np.ndarray | None = None,
                 labels: str | np.ndarray | None = None, augment: AugmentConfig | None = None,
                 crop: int | None = None, seed: int = 0, random_crop: bool = True,
                 defer_augment: bool = False):
        corpus = corpus if isinstance(corpus, Corpus) else Corpus(corpus)
        rows = np.arange(len(corpus)) if rows is None else np.asarray(rows, dtype=np.int64)
        if len(rows) and (rows.min() < 0 or rows.max() >= len(corpus)):
            raise CremaError(f"{corpus.path}: rows outside 0..{len(corpus) - 1}")
        self.classes: list[str] | None = None
        self.task: str | None = None
        if isinstance(labels, str):
            y, self.classes, has = corpus.labels(labels, rows)
            rows, labels, self.task = rows[has], y[has], labels
        elif labels is not None:
            labels = np.asarray(labels, dtype=np.float32)
            if labels.ndim != 2 or len(labels) != len(rows):
                raise CremaError(f"labels of shape {labels.shape} do not match {len(rows)} rows")
        self.rows = rows
        self.labels = labels
        # Items need only these: the signals file (a RowReader, opened per process), this
        # dataset's lead masks, the rate. The Corpus (with its whole index) is not sent to
        # spawned workers.
        self._corpus: Corpus | None = corpus
        self.path = corpus.path
        self.fs = corpus.preprocess.fs
        self.lead_mask = corpus.lead_mask[rows]
        self._signals: np.ndarray | None = None
        self.reader = RowReader(self.path / "signals.npy")
        window = corpus.window
        if crop is not None and not 0 < crop <= window:
            raise CremaError(f"crop {crop} must be within 1..{window} (the corpus window)")
        self.crop = crop
        self.random_crop = random_crop
        self.augment = None if is_identity(augment) else augment
        self.defer_augment = defer_augment
        self.seed = int(seed)
        self.epoch = 0
        self._crop_tables: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def corpus(self) -> Corpus:
        """The corpus (reopened on first use after unpickling)."""
        if self._corpus is None:
            self._corpus = Corpus(self.path)
        return self._corpus

    @property
    def signals(self) -> np.ndarray:
        """The corpus's float16 memmap ``(N, 12, window)``, opened once per process and advised
        for random access (items and batches are read through ``self.reader``)."""
        if self._signals is None:
            self._signals = open_signals(self.path / "signals.npy")
        return self._signals

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_corpus"] = None
        state["_signals"] = None
        state["_crop_tables"] = {}  # redrawn where needed: a loader sends the dataset to each worker
        return state

    def set_epoch(self, epoch: int) -> None:
        """Draw fresh crops and augmentations for ``epoch`` (same draws for the same epoch)."""
        self.epoch = int(epoch)

    def rng(self, index: int, epoch: int | None = None) -> np.random.Generator:
        """The generator of item ``index``'s augmentation in ``epoch`` (default the current one)."""
        return np.random.default_rng([self.seed, self.epoch if epoch is None else int(epoch), int(index)])

    def epoch_crop_starts(self, epoch: int) -> np.ndarray:
        """Random crop start of every item ``(len(self),)`` int64 in ``epoch``: one vectorised
        draw per epoch (a generator per item costs 25 us, a fifth of a batch's time), from a
        stream of its own, kept for the two latest epochs (a loader's workers run ahead)."""
        starts = self._crop_tables.get(epoch)
        if starts is None:
            stream = np.random.SeedSequence([self.seed, int(epoch)], spawn_key=(CROP_STREAM,))
            room = self.reader.shape[-1] - self.crop
            starts = np.random.default_rng(stream).integers(0, room + 1, size=len(self), dtype=np.int64)
            self._crop_tables = {e: t for e, t in self._crop_tables.items() if e > epoch - 2}
            self._crop_tables[epoch] = starts
        return starts

    def __getitem__(self, key) -> dict:
        """``dataset[i]``: one item; ``dataset[indices]`` or ``dataset[(epoch, indices)]``: the
        batch of :meth:`batch` (what :func:`crema.data.loader.batch_loader`'s workers ask for)."""
        if isinstance(key, (int, np.integer)):
            return self.item(int(key))
        epoch, indices = _batch_key(key)
        return self.batch(indices, epoch)

    def item(self, index: int) -> dict[str, torch.Tensor | int]:
        """Item ``index`` at the current epoch (see the class docstring)."""
        row = int(self.rows[index])
        x = self.reader.read([row])[0]  # (12, window) float16, converted after the crop
        mask = self.lead_mask[index].copy()
        starts = self.crop_starts(np.array([index]), self.epoch)
        if starts is not None:
            x = x[:, starts[0]:starts[0] + self.crop]
        if self.augment is not None:
            x, mask = apply_augment(x, mask, self.augment, self.rng(index), fs=self.fs)
        item: dict[str, torch.Tensor | int] = {
            "signal": torch.from_numpy(np.ascontiguousarray(x)).to(torch.float32),
            "lead_mask": torch.from_numpy(np.asarray(mask, dtype=bool)),
            "row": row,
        }
        if self.labels is not None:
            item["label"] = torch.from_numpy(self.labels[index].copy())
        return item

    # ------------------------------------------------------------------ batches

    def batch(self, indices: Sequence[int] | np.ndarray, epoch: int | None = None, augment: bool = True,
              dtype: torch.dtype = torch.float32) -> Batch:
        """Items ``indices`` (B,) as one batch: rows read in one pass, cropped and augmented
        together.

        Returns ``signal (B, 12, T)`` of ``dtype`` (float16 gives the stored values, for a
        dataset without augmentation), ``lead_mask (B, 12)`` bool, ``row (B,)`` int64,
        ``label (B, K)`` float32 when labels are given, and ``seed``, an int64 scalar: the seed
        of the batch's augmentation, a hash of ``(seed, epoch, indices)``. Crops are the items'
        own (same ``(seed, epoch, index)`` draw); the augmentation, unless ``augment`` is False
        or the dataset defers it (:meth:`augmented`), is drawn for the batch as a whole
        (:func:`crema.data.augment.augment_batch`, its time shift done in the crop's copy).
        ``epoch`` None = the current one.
        """
        indices = _as_indices(indices, len(self))
        epoch = self.epoch if epoch is None else int(epoch)
        cfg = self.augment if augment and not self.defer_augment else None
        return self.assemble(indices, epoch, dtype, cfg, batch_seed(self.seed, epoch, indices))

    def read_batch(self, indices: Sequence[int] | np.ndarray, epoch: int | None = None,
                   dtype: torch.dtype = torch.float32) -> Batch:
        """:meth:`batch` without the augmentation."""
        return self.batch(indices, epoch, augment=False, dtype=dtype)

    def prefetch(self, key) -> None:
        """Start reading the rows of batch ``key`` (as for ``dataset[key]``) into the page cache
        (:meth:`crema.data.rows.RowReader.advise`); what a loader does for the next batch."""
        indices = _batch_key(key)[1]
        self.reader.advise(self.rows[indices[(indices >= 0) & (indices < len(self))]])

    def assemble(self, indices: np.ndarray, epoch: int, dtype: torch.dtype, augment: AugmentConfig | None,
                 seed: int) -> Batch:
        """The batch of ``indices`` at ``epoch``, augmented with ``augment`` (None: not) from the
        generator of ``seed``."""
        rows = self.rows[indices]
        raw = torch.from_numpy(self.reader.read(rows))  # (B, 12, window) float16
        starts = self.crop_starts(indices, epoch)
        mask = torch.from_numpy(self.lead_mask[indices])
        if augment is None:
            signal = crop_batch(raw, starts, self.crop, dtype=dtype)
        else:
            generator = batch_generator(seed)
            shifts = draw_shifts(augment, len(rows), self.crop or raw.shape[-1], generator)
            signal = crop_batch(raw, starts, self.crop, shifts)
            mask = perturb_batch_(signal, mask, augment, generator, self.fs)
            signal = signal.to(dtype)
        batch = {"signal": signal, "lead_mask": mask, "row": torch.from_numpy(rows), "seed": torch.tensor(seed)}
        if self.labels is not None:
            batch["label"] = torch.from_numpy(self.labels[indices])
        return batch

    def crop_starts(self, indices: np.ndarray, epoch: int) -> np.ndarray | None:
        """Crop start of each item (B,), the items' own; None for whole windows."""
        window = self.reader.shape[-1]
        if self.crop is None or self.crop == window:
            return None
        if not self.random_crop:
            return np.full(len(indices), (window - self.crop) // 2, dtype=np.int64)
        return self.epoch_crop_starts(epoch)[indices]

    def augmented(self, batch: Batch) -> Batch:
        """``batch`` with the dataset's augmentation applied where it lies (the device of its
        ``signal``: on the GPU after the transfer), drawn from its ``seed`` on that device; as
        it is when the dataset has no augmentation. On the CPU, equal to the batch that
        :meth:`batch` augments itself."""
        return _augmented(batch, self.augment, self.fs)


def _augmented(batch: Batch, cfg: AugmentConfig | None, fs: float) -> Batch:
    if cfg is None:
        return batch
    x = batch["signal"]
    generator = batch_generator(int(batch["seed"]), x.device)
    signal, mask = augment_batch(x, batch["lead_mask"], cfg, generator, fs)
    return {**batch, "signal": signal, "lead_mask": mask}


def batch_seed(seed: int, epoch: int, indices: np.ndarray) -> int:
    """A batch's augmentation seed (63 bits) from ``(seed, epoch, indices)``: the same batch
    gets the same draws in any process, another batch other draws."""
    entropy = [int(seed), int(epoch), *np.asarray(indices, dtype=np.int64).tolist()]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))


def _as_indices(indices: Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    """Batch indices as a 1-D int64 array within ``0..n-1``."""
    indices = np.asarray(indices, dtype=np.int64)
    if indices.ndim != 1 or (len(indices) and (indices.min() < 0 or indices.max() >= n)):
        raise CremaError(f"batch indices must be a list of items within 0..{n - 1}")
    return indices


def _batch_key(key) -> tuple[int | None, np.ndarray]:
    """A batch key, ``indices`` or ``(epoch, indices)``, as ``(epoch or None, indices)``."""
    if (isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], (int, np.integer))
            and not isinstance(key[1], (int, np.integer))):
        return int(key[0]), np.asarray(key[1], dtype=np.int64)
    return None, np.asarray(key, dtype=np.int64)


class ConcatWindows(ConcatDataset):
    """Several :class:`ECGWindows` as one dataset; ``set_epoch`` reaches every part. Batches
    (:meth:`batch`) may mix parts; their augmentation (the parts must share one) is seeded by
    the first part's seed, the epoch and the global indices."""

    datasets: list[ECGWindows]

    def set_epoch(self, epoch: int) -> None:
        for dataset in self.datasets:
            dataset.set_epoch(epoch)

    def __getitem__(self, key) -> dict:
        """An item per index, a batch per list of indices or ``(epoch, indices)``."""
        if isinstance(key, (int, np.integer)):
            return super().__getitem__(int(key))
        epoch, indices = _batch_key(key)
        return self.batch(indices, epoch)

    def batch(self, indices: Sequence[int] | np.ndarray, epoch: int | None = None, augment: bool = True,
              dtype: torch.dtype = torch.float32) -> Batch:
        """As :meth:`ECGWindows.batch`, over the concatenated items; a batch from one part is
        that part's batch (with this seed), one from several is put together from theirs."""
        indices = _as_indices(indices, len(self))
        epoch = self.datasets[0].epoch if epoch is None else int(epoch)
        first = self.datasets[0]
        cfg = self.shared_augment() if augment and not first.defer_augment else None
        seed = batch_seed(first.seed, epoch, indices)
        part_of = np.searchsorted(self.cumulative_sizes, indices, side="right")
        offsets = [0, *self.cumulative_sizes[:-1]]
        parts = np.unique(part_of)
        if len(parts) == 1:
            p = int(parts[0])
            return self.datasets[p].assemble(indices - offsets[p], epoch, dtype, cfg, seed)
        pieces = [(torch.from_numpy(np.flatnonzero(part_of == p)),
                   self.datasets[p].assemble(indices[part_of == p] - offsets[p], epoch,
                                             torch.float32 if cfg else dtype, None, seed))
                  for p in parts]
        batch = {}
        for key, first_value in pieces[0][1].items():
            if key == "seed":
                batch[key] = first_value
                continue
            batch[key] = first_value.new_empty((len(indices),) + tuple(first_value.shape[1:]))
            for positions, piece in pieces:
                if key not in piece:
                    raise CremaError(f"the corpora of one batch differ: only some give {key!r}")
                batch[key][positions] = piece[key]
        if cfg is None:
            return batch
        batch = _augmented(batch, cfg, first.fs)
        return {**batch, "signal": batch["signal"].to(dtype)}

    def read_batch(self, indices: Sequence[int] | np.ndarray, epoch: int | None = None,
                   dtype: torch.dtype = torch.float32) -> Batch:
        """:meth:`batch` without the augmentation."""
        return self.batch(indices, epoch, augment=False, dtype=dtype)

    def prefetch(self, key) -> None:
        """As :meth:`ECGWindows.prefetch`, each part its own rows."""
        indices = _batch_key(key)[1]
        indices = indices[(indices >= 0) & (indices < len(self))]
        part_of = np.searchsorted(self.cumulative_sizes, indices, side="right")
        offsets = [0, *self.cumulative_sizes[:-1]]
        for p in np.unique(part_of):
            self.datasets[p].prefetch(indices[part_of == p] - offsets[p])

    def shared_augment(self) -> AugmentConfig | None:
        """The parts' augmentation; :class:`CremaError` when they differ (a batch takes one)."""
        first = self.datasets[0]
        if any(part.augment != first.augment for part in self.datasets):
            raise CremaError("the corpora of one dataset have different augmentations; a batch takes one")
        return first.augment

    def augmented(self, batch: Batch) -> Batch:
        """As :meth:`ECGWindows.augmented`, with the parts' shared augmentation."""
        return _augmented(batch, self.shared_augment(), self.datasets[0].fs)


def select_rows(specs: Sequence[str | os.PathLike], dedup: bool = True) -> list[tuple[Corpus, np.ndarray]]:
    """The corpora named by ``specs`` (``"DIR"`` or ``"DIR:split[,split]"``) and the rows each serves.

    With ``dedup``, a record that an earlier corpus holds in any split is dropped from later ones
    (matched on ``source_id``), so a held-out record never comes back as a copy. Only the
    ``split`` column and, when there are several corpora, ``source_id`` are read (their codes;
    no DataFrame is built).
    """
    selected: list[tuple[Corpus, np.ndarray]] = []
    seen: set[str] = set()
    for i, spec in enumerate(specs):
        path, splits = parse_corpus_spec(spec)
        corpus = Corpus(path)
        rows = corpus.rows(splits)
        if dedup and (seen or i + 1 < len(specs)):  # a lone corpus has nothing to compare with
            ids = corpus.columns.text("source_id")  # codes (N,) into the distinct ids
            if seen:  # decided once per distinct id, then looked up per row by its code
                held = np.fromiter((v in seen for v in ids.values), dtype=bool, count=len(ids.values))
                rows = rows[~held[ids.codes[rows]]]
            if i + 1 < len(specs):
                seen.update(ids.values)
        selected.append((corpus, rows))
    return selected


def open_corpora(specs: str | os.PathLike | Sequence[str | os.PathLike], crop: int | None = None,
                 random_crop: bool = True, dedup: bool = True, augment: AugmentConfig | None = None,
                 seed: int = 0, labels: str | None = None, defer_augment: bool = False) -> ConcatWindows:
    """Concatenate several corpora, each given as ``"DIR"`` or ``"DIR:split[,split]"``.

    Args:
        specs: corpus specs (one string or a list).
        crop, random_crop, augment, seed, labels, defer_augment: as for :class:`ECGWindows` (each corpus gets
            its own seed ``seed + i`` so that equal corpora do not draw the same crops).
        dedup: drop windows of a record that an earlier corpus holds (see :func:`select_rows`;
            PTB-XL records inside CinC as ``HR00001`` are PTB-XL record 1).

    Raises:
        CremaError: corpora with different window lengths, or nothing left to serve.
    """
    if isinstance(specs, (str, os.PathLike)):
        specs = [specs]
    parts: list[ECGWindows] = []
    window = None
    for i, (corpus, rows) in enumerate(select_rows(specs, dedup)):
        if window is not None and corpus.window != window:
            raise CremaError(f"{corpus.path}: window {corpus.window} differs from {window} of the corpora "
                             "before it; prepare them with the same --fs and --window-s")
        window = corpus.window
        parts.append(ECGWindows(corpus, rows, labels=labels, augment=augment, crop=crop,
                                seed=seed + i, random_crop=random_crop, defer_augment=defer_augment))
    if not parts or sum(len(p) for p in parts) == 0:
        raise CremaError(f"no windows to serve from {', '.join(map(str, specs))}")
    return ConcatWindows(parts)
