"""Which rows a task is evaluated on: a task's labelled train / validation / test rows with their
record keys (:class:`TaskSplit`, :func:`task_split`; leave-one-source-out included), window scores
averaged per record (:func:`record_mean`), and seeded label-fraction subsets of the training rows
(:func:`fraction_subset`).

The probes (:mod:`crema.eval.probe`), fine-tuning (:mod:`crema.eval.finetune`) and model
selection (:mod:`crema.eval.selection`) all take their rows from here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import CremaError


# ----------------------------------------------------------------------------- splits

@dataclass
class TaskSplit:
    """The labelled rows of one task in train / validation / test, with their record keys.

    Attributes:
        classes: K class names in label-column order (a regression task: ``[target name]``).
        rows, y, keys: per part (``train``, ``val``, ``test``): corpus rows ``(n,)``,
            labels ``(n, K)`` float32 (0/1; a regression task: the values, ``(n, 1)``), record
            keys ``(n,)`` (``source/record_id``: the windows of one long recording share a key).
        holdout_source: the source tested on in leave-one-source-out, else None.
        task_type: ``multilabel``, ``multiclass`` or ``regression``.
    """

    task: str
    classes: list[str]
    rows: dict[str, np.ndarray]
    y: dict[str, np.ndarray]
    keys: dict[str, np.ndarray]
    holdout_source: str | None = None
    task_type: str = "multilabel"

    @property
    def regression(self) -> bool:
        return self.task_type == "regression"

    def sizes(self) -> dict[str, int]:
        return {part: int(len(r)) for part, r in self.rows.items()}

    def strata(self, part: str) -> np.ndarray:
        """What :func:`fraction_subset` keeps every class of: the 0/1 labels ``(n, K)`` of
        ``part``, or no column ``(n, 0)`` for a regression target (a plain random subset)."""
        y = self.y[part]
        return y[:, :0] if self.regression else y

    def record_level(self, scores: np.ndarray, part: str) -> tuple[np.ndarray, np.ndarray]:
        """Window scores ``(n, K)`` of ``part`` -> per-record ``(y (R, K), mean scores (R, K))``,
        records in order of first appearance (:func:`record_mean`)."""
        means, first = record_mean(scores, self.keys[part])
        return self.y[part][first], means


def task_split(corpus, task: str, holdout_source: str | None = None,
               sources: Sequence[str] | None = None) -> TaskSplit:
    """Train/val/test rows of ``task`` in a corpus, keeping only rows labelled for the task.

    Default protocol: the corpus ``split`` column (PTB-XL: folds 1-8 / 9 / 10). With
    ``holdout_source`` (leave one source out): train and validation come from the other sources'
    train and val splits, and every labelled row of the held-out source is the test set.

    Raises:
        CremaError: the task is not in the corpus, or a part has no labelled row.
    """
    if task not in corpus.classes:
        raise CremaError(f"task {task!r} is not in this corpus (it has {sorted(corpus.classes)})")
    srcs = list(sources) if sources else None
    if holdout_source is None:
        parts = {p: corpus.rows(split=p, sources=srcs) for p in ("train", "val", "test")}
    else:
        available = sorted(set(corpus.index["source"].astype(str)))
        if holdout_source not in available:
            raise CremaError(f"held-out source {holdout_source!r} is not in this corpus (sources: {available})")
        others = [s for s in (srcs or available) if s != holdout_source]
        parts = {"train": corpus.rows(split="train", sources=others),
                 "val": corpus.rows(split="val", sources=others),
                 "test": corpus.rows(sources=[holdout_source])}
    rows, ys, keys, classes = {}, {}, {}, None
    kind = corpus.task_type(task)
    for part, r in parts.items():
        r = np.asarray(r, dtype=np.int64)
        y, classes, has_label = corpus.labels(task, r)
        r, y = r[has_label], np.asarray(y, dtype=np.float32)[has_label]
        if len(r) == 0:
            where = f" of source {holdout_source}" if part == "test" and holdout_source else ""
            raise CremaError(f"task {task!r}: no labelled {part} rows{where} in this corpus")
        rows[part], ys[part], keys[part] = r, y, corpus.record_keys(r)
    return TaskSplit(task, list(classes), rows, ys, keys, holdout_source, kind)


def record_mean(scores: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average window scores ``(n, K)`` per record; returns ``(scores (R, K), first row of each
    record (R,))`` in order of first appearance, so labels can be taken from those rows."""
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first)
    sums = np.zeros((len(uniq), scores.shape[1]))
    np.add.at(sums, inverse, scores)
    means = sums / np.bincount(inverse, minlength=len(uniq))[:, None]
    return means[order], first[order]


# ----------------------------------------------------------------------------- label fractions

def fraction_subset(y: np.ndarray, fraction: float, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """A seeded, multi-label-aware subset of training rows holding ``fraction`` of the records.

    Records (rows sharing a ``groups`` value, e.g. the windows of one long recording) are kept or
    dropped together. Selection goes class by class, rarest first, drawing records that carry the
    class until it has its share ``fraction * positives`` (at least one positive wherever the
    class has any), then fills up at random to ``ceil(fraction * records)``. So a 1% subset still
    sees every class, and may hold a few more records than 1% when there are many classes.

    Args:
        y: ``(n, K)`` 0/1 labels of the candidate rows (``(n, 0)``: no class to keep, a plain
            random subset of records, as for a regression target: :meth:`TaskSplit.strata`).
        fraction: in (0, 1]; 1 returns every row.
        seed: selects the subset; the same seed gives the same rows.
        groups: ``(n,)`` record keys; default each row is its own record.

    Returns:
        sorted int array of selected row positions (into ``y``).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    y = np.asarray(y) > 0.5
    n = len(y)
    if fraction >= 1 or n == 0:
        return np.arange(n)
    keys = np.arange(n) if groups is None else np.asarray(groups)
    uniq, inverse = np.unique(keys, return_inverse=True)
    record_y = np.zeros((len(uniq), y.shape[1]), dtype=bool)
    np.logical_or.at(record_y, inverse, y)

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(uniq))           # random tie-breaking, fixed by the seed
    chosen = np.zeros(len(uniq), dtype=bool)
    positives = record_y.sum(0)
    for k in np.argsort(positives, kind="stable"):  # rarest class first
        if positives[k] == 0:
            continue
        want = max(1, int(round(fraction * positives[k])))
        have = int((chosen & record_y[:, k]).sum())
        candidates = [r for r in order if record_y[r, k] and not chosen[r]]
        for r in candidates[: max(0, want - have)]:
            chosen[r] = True
    target = max(1, math.ceil(fraction * len(uniq)))
    for r in order:
        if chosen.sum() >= target:
            break
        chosen[r] = True
    return np.flatnonzero(chosen[inverse])
