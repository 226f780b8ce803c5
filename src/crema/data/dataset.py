"""Torch datasets over prepared corpora: one window per item, optional crop and augmentation.

Items read only their own row of the float16 memmap, so memory stays flat as the corpus grows.
Randomness (crop position, augmentation) comes from a generator seeded by
``(seed, epoch, index)``: the same item is the same in every run and with any number of
DataLoader workers; call :meth:`ECGWindows.set_epoch` each epoch for fresh draws.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from ..config import AugmentConfig
from ..errors import CremaError
from .augment import apply_augment, is_identity
from .corpus import Corpus, parse_corpus_spec

CorpusLike = Corpus | str | os.PathLike


class ECGWindows(Dataset):
    """Windows of one corpus.

    Args:
        corpus: a :class:`Corpus` or its folder.
        rows: corpus rows to serve (default all), e.g. ``corpus.rows("train")``.
        labels: a task name (rows without a label for it are dropped, see ``self.rows``) or an
            array ``(len(rows), K)`` aligned with ``rows``; None = no labels.
        augment: ``AugmentConfig`` applied per item (None = off).
        crop: samples per item (None = the whole window).
        seed: base seed of the per-item random generator.
        random_crop: random crop position (training) or the centre (evaluation).

    Items are dicts: ``signal (12, T)`` float32, ``lead_mask (12,)`` bool, ``row`` int (corpus
    row), and ``label (K,)`` float32 when labels are given.
    """

    def __init__(self, corpus: CorpusLike, rows: Sequence[int] | np.ndarray | None = None,
                 labels: str | np.ndarray | None = None, augment: AugmentConfig | None = None,
                 crop: int | None = None, seed: int = 0, random_crop: bool = True):
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
        # Items need only these: the signals memmap (opened per process), this dataset's lead
        # masks, the rate. The Corpus (with its whole index) is not sent to spawned workers.
        self._corpus: Corpus | None = corpus
        self.path = corpus.path
        self.fs = corpus.preprocess.fs
        self.lead_mask = corpus.lead_mask[rows]
        self._signals: np.ndarray | None = None
        window = corpus.window
        if crop is not None and not 0 < crop <= window:
            raise CremaError(f"crop {crop} must be within 1..{window} (the corpus window)")
        self.crop = crop
        self.random_crop = random_crop
        self.augment = None if is_identity(augment) else augment
        self.seed = int(seed)
        self.epoch = 0

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
        """The corpus's float16 memmap ``(N, 12, window)``, opened once per process."""
        if self._signals is None:
            self._signals = np.load(self.path / "signals.npy", mmap_mode="r")
        return self._signals

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_corpus"] = None
        state["_signals"] = None
        return state

    def set_epoch(self, epoch: int) -> None:
        """Draw fresh crops and augmentations for ``epoch`` (same draws for the same epoch)."""
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        """The generator of item ``index`` in the current epoch."""
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor | int]:
        row = int(self.rows[index])
        x = np.asarray(self.signals[row], dtype=np.float32)  # (12, window)
        mask = self.lead_mask[index].copy()
        needs_rng = self.augment is not None or (self.crop is not None and self.random_crop)
        rng = self.rng(index) if needs_rng else None
        x = self._crop(x, rng)
        if self.augment is not None:
            x, mask = apply_augment(x, mask, self.augment, rng, fs=self.fs)
        item: dict[str, torch.Tensor | int] = {
            "signal": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
            "lead_mask": torch.from_numpy(np.asarray(mask, dtype=bool)),
            "row": row,
        }
        if self.labels is not None:
            item["label"] = torch.from_numpy(self.labels[index].copy())
        return item

    def _crop(self, x: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """``(12, window) -> (12, crop)``: random start with ``rng``, else the centre."""
        if self.crop is None or self.crop == x.shape[-1]:
            return x
        room = x.shape[-1] - self.crop
        start = int(rng.integers(0, room + 1)) if (self.random_crop and rng is not None) else room // 2
        return x[:, start:start + self.crop]


class ConcatWindows(ConcatDataset):
    """Several :class:`ECGWindows` as one dataset; ``set_epoch`` reaches every part."""

    datasets: list[ECGWindows]

    def set_epoch(self, epoch: int) -> None:
        for dataset in self.datasets:
            dataset.set_epoch(epoch)


def select_rows(specs: Sequence[str | os.PathLike], dedup: bool = True) -> list[tuple[Corpus, np.ndarray]]:
    """The corpora named by ``specs`` (``"DIR"`` or ``"DIR:split[,split]"``) and the rows each serves.

    With ``dedup``, a record that an earlier corpus holds in any split is dropped from later ones
    (matched on ``source_id``), so a held-out record never comes back as a copy.
    """
    selected: list[tuple[Corpus, np.ndarray]] = []
    seen: set[str] = set()
    for spec in specs:
        path, splits = parse_corpus_spec(spec)
        corpus = Corpus(path)
        rows = corpus.rows(splits)
        ids = corpus.index["source_id"].to_numpy()
        if dedup:
            rows = rows[~np.isin(ids[rows], list(seen))] if seen else rows
            seen.update(ids.tolist())
        selected.append((corpus, rows))
    return selected


def open_corpora(specs: str | os.PathLike | Sequence[str | os.PathLike], crop: int | None = None,
                 random_crop: bool = True, dedup: bool = True, augment: AugmentConfig | None = None,
                 seed: int = 0, labels: str | None = None) -> ConcatWindows:
    """Concatenate several corpora, each given as ``"DIR"`` or ``"DIR:split[,split]"``.

    Args:
        specs: corpus specs (one string or a list).
        crop, random_crop, augment, seed, labels: as for :class:`ECGWindows` (each corpus gets
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
                                seed=seed + i, random_crop=random_crop))
    if not parts or sum(len(p) for p in parts) == 0:
        raise CremaError(f"no windows to serve from {', '.join(map(str, specs))}")
    return ConcatWindows(parts)
