"""The split of the labelled records: the file's ``split``/``fold`` column, else the corpus's own
split when another task already fixed it, else a seeded, stratified, patient-grouped 80/10/10
split (scikit-learn's ``StratifiedGroupKFold`` over 10 folds); and the check that every class has
a positive record to train on."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ...errors import CremaError
from ..cinc import hash_fold
from ..corpus import LABEL_NONE, LABEL_SEP, SPLIT_HASH_PATIENT, SPLIT_HASH_RECORD, SPLITS, split_of_fold
from .cells import EXAMPLES, classes_of, first_few
from .match import Match
from .table import FOLD_COLUMN, SPLIT_COLUMN, LabelsFile
from .task import Task

N_FOLDS = 10                      # the seeded split: folds 1-8 train, 9 val, 10 test
REGRESSION_BINS = 5               # quantile bins a regression target is stratified on
SPLIT_FROM_PREPARE = (SPLIT_HASH_RECORD, SPLIT_HASH_PATIENT)


@dataclass
class Split:
    """Folds and splits of every record, and how they were made."""

    folds: np.ndarray            # (records,) int
    splits: np.ndarray           # (records,) str
    method: str
    owner: str | None            # the task whose file fixed the split (None: prepare's own split)


def decide_split(labels: LabelsFile, task: Task, match: Match, records: pd.DataFrame,
                 current: Split, seed: int = 0) -> Split:
    """The split the corpus has once ``task`` is added.

    ``current`` is the corpus's split; it may be replaced when prepare made it (a hash) or when
    this same task fixed it before; otherwise (PTB-XL folds, another labels file's split) it is
    kept, and a split in ``labels`` must agree with it.

    Raises:
        CremaError: the file's split disagrees with a split that must be kept; fewer than 10
            patients for a seeded split.
    """
    replaceable = current.owner in (None, task.name) and (current.method in SPLIT_FROM_PREPARE
                                                          or current.owner == task.name)
    rows = np.flatnonzero(match.record_of_row >= 0)
    records_of_rows = match.record_of_row[rows]
    if labels.has_split:
        folds, splits, method = _file_split(labels, rows)
        if not replaceable:
            _check_same_split(labels, splits, current.splits[records_of_rows], current.method,
                              records["record_id"].to_numpy()[records_of_rows])
            return current
        new = Split(current.folds.copy(), current.splits.copy(), method, task.name)
        new.folds[records_of_rows], new.splits[records_of_rows] = folds, splits
        return new
    if not replaceable:
        return current
    groups = _groups(labels, rows, records, records_of_rows)
    folds = _seeded_folds(labels.path, _strata(task, rows), groups, seed)
    method = f"seeded stratified patient-grouped 80/10/10, seed {seed}"
    if labels.patients is None and not (records["patient_id"].astype(str).to_numpy()[records_of_rows] != "").any():
        method += " (no patient ids: one group per record)"
    new = Split(current.folds.copy(), current.splits.copy(), method, task.name)
    new.folds[records_of_rows] = folds
    new.splits[records_of_rows] = [split_of_fold(f, N_FOLDS) for f in folds]
    return new


def _file_split(labels: LabelsFile, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Folds, splits and the method text of the matched ``rows`` from the file's ``split``
    and/or ``fold`` columns (the split column decides the split when both are given; folds are
    kept as given)."""
    name = labels.path.name
    keys = np.asarray(labels.keys)[rows]
    if labels.folds is not None:
        folds = np.asarray(labels.folds, dtype=np.int64)[rows]
        distinct = sorted(set(labels.folds))
        splits = np.array([split_of_fold(f, distinct[-1], distinct[-2]) for f in folds], dtype=object)
        method = (f"from the labels file's fold column ({name}: fold {distinct[-1]} test, "
                  f"{distinct[-2]} val, the others train)")
    if labels.splits is not None:
        splits = np.asarray(labels.splits, dtype=object)[rows]
        method = f"from the labels file's split column ({name})"
        if labels.folds is None:  # folds that agree with the split, as the seeded split numbers them
            folds = np.array([{"train": hash_fold(k, N_FOLDS - 2), "val": N_FOLDS - 1, "test": N_FOLDS}[s]
                              for k, s in zip(keys, splits)], dtype=np.int64)
    return folds, splits, method


def _check_same_split(labels: LabelsFile, given: np.ndarray, current: np.ndarray, method: str,
                      record_ids: np.ndarray) -> None:
    differ = np.flatnonzero(given != current)
    if len(differ):
        examples = ", ".join(f"{record_ids[i]} {given[i]} in the file, {current[i]} in the corpus"
                             for i in differ[:EXAMPLES])
        raise CremaError(f"{labels.path}: conflicting split: {len(differ)} of {len(given)} records are in "
                         f"another split than the corpus's ({method}), e.g. {examples}; drop the file's "
                         f"{SPLIT_COLUMN}/{FOLD_COLUMN} column to use the corpus's split, or prepare a new corpus")


def _groups(labels: LabelsFile, rows: np.ndarray, records: pd.DataFrame, records_of_rows: np.ndarray) -> np.ndarray:
    """Each matched row's patient: the file's ``patient_id``, else the corpus's, else the record."""
    from_file = np.asarray(labels.patients, dtype=object)[rows] if labels.patients is not None else None
    from_index = records["patient_id"].astype(str).to_numpy()[records_of_rows]
    record = ("record:" + records["source"].astype(str) + "/" + records["record_id"].astype(str)).to_numpy()
    groups = np.where(from_index != "", "patient:" + from_index.astype(object), record[records_of_rows])
    if from_file is not None:
        groups = np.where(from_file != "", "patient:" + from_file.astype(object), groups)
    return groups


def _strata(task: Task, rows: np.ndarray) -> np.ndarray:
    """What the seeded split stratifies each row on: its rarest class (``-`` none, ``?``
    unknown), or a quantile bin of a regression target."""
    cells = np.asarray(task.cells, dtype=object)[rows]
    if task.type == "regression":
        known = cells != ""
        strata = np.full(len(cells), "?", dtype=object)
        if not known.any():
            return strata
        values = np.array([float(c) for c in cells[known]])
        edges = np.unique(np.quantile(values, np.linspace(0, 1, REGRESSION_BINS + 1)[1:-1]))
        strata[known] = [f"bin{b}" for b in np.digitize(values, edges)]
        return strata
    counts: dict[str, int] = {}
    for cell in cells:
        for name in classes_of(cell):
            counts[name] = counts.get(name, 0) + 1
    return np.array([min(classes_of(c), key=lambda n: (counts[n], n)) if classes_of(c)
                     else ("?" if c == "" else LABEL_NONE) for c in cells], dtype=object)


def _seeded_folds(path: Path, strata: np.ndarray, groups: np.ndarray, seed: int) -> np.ndarray:
    """Folds 1-10 from ``StratifiedGroupKFold`` (shuffled with ``seed``): fold k+1 is the k-th
    test part, so fold 10 (test) and 9 (val) each hold about a tenth of the patients."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_groups = len(set(groups.tolist()))
    if n_groups < N_FOLDS:
        raise CremaError(f"{path}: {n_groups} patients (or records) are too few for an 80/10/10 split "
                         f"(at least {N_FOLDS}); add a {SPLIT_COLUMN} column (train/val/test)")
    folds = np.zeros(len(strata), dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=N_FOLDS, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # "the least populated class has fewer members than n_splits"
        warnings.simplefilter("ignore", UserWarning)
        for k, (_, test) in enumerate(splitter.split(np.zeros(len(strata)), strata.astype(str), groups)):
            folds[test] = k + 1
    return folds


def check_train_positives(labels: LabelsFile, task: Task, match: Match, split: Split) -> list[str]:
    """Raise when a class has no positive record in the train split; return notes for classes
    without a positive in val or test (their scores there are left out).

    Raises:
        CremaError: naming the first such class, for classification tasks.
    """
    if task.type == "regression":
        return []
    rows = np.flatnonzero(match.record_of_row >= 0)
    where = split.splits[match.record_of_row[rows]]
    notes = []
    for part in SPLITS:
        counts = dict.fromkeys(task.classes, 0)
        for cell in np.asarray(task.cells, dtype=object)[rows][where == part]:
            for name in classes_of(cell):
                counts[name] += 1
        empty = [c for c in task.classes if counts[c] == 0]
        if empty and part == "train":
            total = sum(task.cells[r].split(LABEL_SEP).count(empty[0]) for r in rows)
            raise CremaError(f"{labels.path}: class {empty[0]!r} of task {task.name!r} has no positive "
                             f"example in the train split ({total} in all, split: {split.method}); "
                             "add examples, drop the class, or give a split column")
        if empty:
            notes.append(f"no positive example in {part} for {len(empty)} classes ({first_few(empty)})")
    return notes
