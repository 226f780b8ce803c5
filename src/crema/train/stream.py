"""The pretraining data stream: corpora opened as one training set, and the infinite batch
sampler that lets a resumed run continue at the exact batch without loading what it skips."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, DistributedSampler

from ..config import PreprocessConfig
from ..config_io import load_json, to_dict
from ..data.corpus import parse_corpus_spec
from ..data.corpus_index import TextColumn
from ..data.dataset import open_corpora
from ..errors import CremaError


@dataclass
class PretrainData:
    """The training set of a run and the corpora's preprocessing.

    ``dataset`` is indexed by ``(epoch, i)`` pairs and yields dicts with ``signal (12, W)``
    (cropped to the model window with ``view_crop`` ``same``, else the whole corpus window),
    ``lead_mask (12,)``, ``row`` and ``patient`` (int, -1 = unknown); a list of such pairs gives
    the batch (see :class:`EpochIndexed`).
    """

    dataset: Dataset
    preprocess: PreprocessConfig
    window: int


class EpochIndexed(Dataset):
    """Wraps a dataset with ``set_epoch`` so that the epoch travels inside the index
    ``(epoch, i)``: DataLoader workers hold their own copies of the dataset, which a
    ``set_epoch`` call in the main process would never reach. Adds each item's ``patient``.

    A key is one item ``(epoch, i)`` or a whole batch, a list of such keys of one epoch (what
    :class:`EpochBatches` yields): the batch is read in one pass
    (:meth:`crema.data.dataset.ConcatWindows.batch`), its ``signal`` float16 as stored (the
    trainer converts it on the device; half the bytes between processes), ``patient (B,)``."""

    def __init__(self, dataset: Dataset, patients: np.ndarray):
        self.dataset, self.patients, self.epoch = dataset, patients, None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int] | list[tuple[int, int]]) -> dict:
        if isinstance(key, list):
            return self.batch(key)
        epoch, i = key
        if self.epoch != epoch:
            self.dataset.set_epoch(epoch)
            self.epoch = epoch
        item = dict(self.dataset[i])
        item["patient"] = int(self.patients[i])
        return item

    def prefetch(self, keys: list[tuple[int, int]]) -> None:
        """Start reading the rows of the batch ``keys`` (see ``ConcatWindows.prefetch``)."""
        self.dataset.prefetch(np.fromiter((i for _, i in keys), dtype=np.int64, count=len(keys)))

    def batch(self, keys: list[tuple[int, int]]) -> dict:
        """The items of ``keys`` (one epoch) as one batch; equal to the items stacked, with the
        signal in float16."""
        epochs = {epoch for epoch, _ in keys}
        if len(epochs) != 1:
            raise CremaError(f"a batch spans epochs {sorted(epochs)}")
        indices = np.fromiter((i for _, i in keys), dtype=np.int64, count=len(keys))
        batch = self.dataset.batch(indices, epoch=epochs.pop(), dtype=torch.float16)
        batch["patient"] = torch.from_numpy(self.patients[indices])
        return batch


def _patient_codes(corpus: Any, offset: int) -> tuple[np.ndarray, int]:
    """Integer code per corpus row for its (source, patient_id); -1 where the id is unknown.
    Codes of different corpora never collide (``offset``). Codes follow the first appearance of
    each ``source/patient_id`` key in row order. Only those two columns are read, as codes (no
    DataFrame of the index is built)."""
    columns = corpus.columns
    if "patient_id" not in columns.kinds:
        return np.full(len(corpus), -1, dtype=np.int64), offset
    pid = columns.text("patient_id")
    if "source" in columns.kinds:
        source = columns.text("source")
    else:
        source = TextColumn(np.zeros(len(corpus), dtype=np.int32), [""])
    # One int64 per (source, patient) pair, factorized in row order; then a code per distinct pair
    # (one per patient, not per window), numbered in order among the pairs with a patient id.
    n_ids = max(1, len(pid.values))
    pair_codes, pairs = pd.factorize(source.codes.astype(np.int64) * n_ids + pid.codes)
    known = np.array([v != "" for v in pid.values], dtype=bool)[pairs % n_ids]
    if any("/" in name for name in source.values):
        # ("a/b", "c") and ("a", "b/c") spell one key "a/b/c", which has one code: code the keys
        keys = np.array([f"{source.values[p // n_ids]}/{pid.values[p % n_ids]}" for p in pairs.tolist()], dtype=object)
        code_of_pair, uniques = pd.factorize(np.where(known, keys, None), use_na_sentinel=True)
        n_codes = len(uniques)
    else:  # no source name holds "/": each key is one pair
        code_of_pair, n_codes = np.where(known, np.cumsum(known) - 1, -1), int(known.sum())
    codes = code_of_pair[pair_codes]
    return np.where(codes >= 0, codes + offset, -1).astype(np.int64), offset + n_codes


def open_pretrain_data(specs: tuple[str, ...] | list[str], window: int, seed: int = 0,
                       view_crop: str = "same") -> PretrainData:
    """Open every corpus spec (``DIR`` or ``DIR:split[,split]``) as one training set, with
    random crops of ``window`` samples (drawn per item from ``(seed, epoch, index)``) and
    duplicate records across corpora dropped (see :func:`crema.data.dataset.open_corpora`).
    With ``view_crop`` other than ``same`` items are whole corpus windows: the model crops
    each view itself (``disjoint`` needs corpus windows of at least twice ``window``).

    Raises :class:`CremaError` when a corpus is missing, the corpora were prepared with
    different preprocessing, or their windows are shorter than the model's.
    """
    if not specs:
        raise CremaError("no corpus given (--corpus DIR[:splits])")
    # Check preprocessing from each corpus's preprocess.json before reading any index.
    preprocess, first = None, None
    for spec in specs:
        path = parse_corpus_spec(spec)[0]
        if not (path / "preprocess.json").is_file():
            continue  # open_corpora reports what is missing
        cfg = load_json(path / "preprocess.json", PreprocessConfig)
        if preprocess is None:
            preprocess, first = cfg, path
        elif to_dict(cfg) != to_dict(preprocess):
            raise CremaError(
                f"corpora were prepared with different preprocessing: {first} has "
                f"{to_dict(preprocess)}, {path} has {to_dict(cfg)}; prepare them alike")
    if preprocess is not None and preprocess.window < window:
        raise CremaError(f"{first}: corpus windows have {preprocess.window} samples, "
                         f"fewer than the model window {window}")
    if view_crop == "disjoint" and preprocess is not None and preprocess.window < 2 * window:
        raise CremaError(f"{first}: view_crop 'disjoint' needs corpus windows of at least "
                         f"{2 * window} samples (twice the model window); they have {preprocess.window}")
    crop = window if view_crop == "same" else None
    concat = open_corpora(list(specs), crop=crop, random_crop=True, seed=seed)
    preprocess = concat.datasets[0].corpus.preprocess
    patients, offset = [], 0
    for part in concat.datasets:
        codes, offset = _patient_codes(part.corpus, offset)
        patients.append(codes[part.rows])
    return PretrainData(dataset=EpochIndexed(concat, np.concatenate(patients)),
                        preprocess=preprocess, window=window)


class EpochBatches:
    """Infinite batch sampler: DistributedSampler epochs (``set_epoch`` each pass) cut into
    full batches of ``(epoch, index)`` keys, starting ``skip`` batches in. Skipping costs no
    data loading, which is what makes resuming at the exact batch cheap. Each list of keys is
    one DataLoader item (``crema.data.loader.batch_loader``): a worker reads the whole batch."""

    def __init__(self, sampler: DistributedSampler, batch_size: int, skip: int = 0):
        self.sampler, self.batch_size, self.skip = sampler, batch_size, skip
        self.per_epoch = len(sampler) // batch_size
        if self.per_epoch == 0:
            raise CremaError(f"each process gets {len(sampler)} ECGs per epoch, fewer than one "
                             f"batch of {batch_size}; use a smaller --batch-size")

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, start = divmod(self.skip, self.per_epoch)
        while True:
            self.sampler.set_epoch(epoch)
            order = list(self.sampler)
            for b in range(start, self.per_epoch):
                yield [(epoch, i) for i in order[b * self.batch_size:(b + 1) * self.batch_size]]
            epoch, start = epoch + 1, 0
