"""A user's own labels for a corpus: a CSV table, one row per record, written into the corpus as a
task (``crema prepare SOURCE --labels FILE.csv`` and ``crema label DIR --labels FILE.csv``).

The steps, one function each:

* :func:`read_labels_file`: the table, its key column (the first of :data:`KEY_COLUMNS`), the
  optional ``patient_id``, ``split`` and ``fold`` columns, and the label columns (all others);
* :func:`infer_task`: what the label columns describe: several 0/1 columns = a multi-label task
  whose classes are the columns; one 0/1 column = a binary task, stored as a one-class
  multi-label task named after the column; one numeric column with more than
  :data:`REGRESSION_MIN_VALUES` distinct values = regression; any other single column =
  multi-class (its values are the classes, ``|`` inside a cell = several);
* :func:`match_rows`: which corpus record each row names (its id, its path relative to the
  source with or without extension, its file name, or a stack's row id);
* :func:`decide_split`: the split of the labelled records: the file's ``split``/``fold`` column,
  else the corpus's own split when another task already fixed it, else a seeded, stratified,
  patient-grouped 80/10/10 split (scikit-learn's ``StratifiedGroupKFold`` over 10 folds);
* :func:`label_corpus`: all of it written into a corpus folder (``index.csv`` label and split
  columns, ``classes.json``, ``tasks.json``, ``prepare_report.json``) without reading a signal.

Every problem with a file is one :class:`~crema.errors.CremaError` naming the file; what is only
worth knowing (records without a row, rows without a record) goes into the returned summary and
``prepare_report.json``.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np
import pandas as pd

from ..config import load_json, save_json
from ..errors import CremaError
from ..locking import output_lock
from .cinc import hash_fold
from .corpus import (LABEL_NONE, LABEL_PREFIX, LABEL_SEP, SPLIT_HASH_PATIENT, SPLIT_HASH_RECORD, SPLITS,
                     TASK_TYPES, TASKS_FILE, Corpus, split_method_of)
from .corpus_index import load_index, write_index

# Names of the column that names each row's record, in order of preference.
KEY_COLUMNS = ("record_id", "record", "file", "path", "ecg_id", "exam_id")
PATIENT_COLUMN, SPLIT_COLUMN, FOLD_COLUMN = "patient_id", "split", "fold"
# Cells that mean "not known" (compared lower-cased, after stripping spaces).
MISSING_CELLS = frozenset({"", "na", "n/a", "nan", "null", "?", LABEL_NONE})
TRUE_CELLS = frozenset({"1", "1.0", "yes", "true"})
FALSE_CELLS = frozenset({"0", "0.0", "no", "false"})
# One numeric column with more distinct values than this is a regression target; with fewer
# (grades 1-5, a 0/1/2 score) its values are classes.
REGRESSION_MIN_VALUES = 10
SPLIT_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val",
               "validation": "val", "test": "test"}
N_FOLDS = 10                      # the seeded split: folds 1-8 train, 9 val, 10 test
REGRESSION_BINS = 5               # quantile bins a regression target is stratified on
EXAMPLES = 5                      # examples quoted in messages and summaries
TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
SPLIT_FROM_PREPARE = (SPLIT_HASH_RECORD, SPLIT_HASH_PATIENT)


# ----------------------------------------------------------------------------- the file

@dataclass
class LabelsFile:
    """A labels table as read: one entry per row, in file order.

    Attributes:
        path: the file.
        key: the key column's name as spelled in the file.
        keys: each row's key (stripped).
        columns: the label columns.
        cells: ``{column: [stripped text per row]}``.
        patients: each row's patient id ("" = unknown), or None without a ``patient_id`` column.
        splits: each row's split (train/val/test), or None without a ``split`` column.
        folds: each row's fold, or None without a ``fold`` column.
    """

    path: Path
    key: str
    keys: list[str]
    columns: list[str]
    cells: dict[str, list[str]]
    patients: list[str] | None = None
    splits: list[str] | None = None
    folds: list[int] | None = None

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def has_split(self) -> bool:
        return self.splits is not None or self.folds is not None


def read_labels_file(path: str | Path) -> LabelsFile:
    """Read and check a labels CSV (see the module docstring for its columns).

    Raises:
        CremaError: unreadable file, no key column, empty or repeated keys, bad split or fold
            values, no label column.
    """
    path = Path(path)
    if not path.is_file():
        raise CremaError(f"{path}: no such labels file")
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig",
                            skipinitialspace=True)
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        raise CremaError(f"{path}: not a readable CSV table ({exc})") from None
    table.columns = [str(c).strip() for c in table.columns]
    by_name = {c.lower(): c for c in table.columns}
    key = next((by_name[k] for k in KEY_COLUMNS if k in by_name), None)
    if key is None:
        raise CremaError(f"{path}: no key column; name the column of record ids one of "
                         f"{', '.join(KEY_COLUMNS)} (its columns: {_quote(table.columns)})")
    if len(table) == 0:
        raise CremaError(f"{path}: no rows")
    keys = [_normal_key(k) for k in table[key]]
    _check_keys(path, key, keys)
    reserved = {by_name[k] for k in (*KEY_COLUMNS, PATIENT_COLUMN, SPLIT_COLUMN, FOLD_COLUMN) if k in by_name}
    columns = [c for c in table.columns if c not in reserved]
    if not columns:
        raise CremaError(f"{path}: no label column (its columns: {_quote(table.columns)}; every column "
                         f"but the key, {PATIENT_COLUMN}, {SPLIT_COLUMN} and {FOLD_COLUMN} is a label)")
    cells = {c: [v.strip() for v in table[c]] for c in columns}
    column = by_name.get
    return LabelsFile(
        path=path, key=key, keys=keys, columns=columns, cells=cells,
        patients=[v.strip() for v in table[column(PATIENT_COLUMN)]] if column(PATIENT_COLUMN) else None,
        splits=_split_values(path, table[column(SPLIT_COLUMN)]) if column(SPLIT_COLUMN) else None,
        folds=_fold_values(path, table[column(FOLD_COLUMN)]) if column(FOLD_COLUMN) else None)


def _normal_key(text: str) -> str:
    """A key as matched: stripped, forward slashes, no leading ``./``."""
    key = str(text).strip().replace("\\", "/")
    while key.startswith("./"):
        key = key[2:]
    return key


def _check_keys(path: Path, key: str, keys: list[str]) -> None:
    empty = [i + 2 for i, k in enumerate(keys) if not k]
    if empty:
        raise CremaError(f"{path}: {len(empty)} rows have an empty {key!r} (lines {_first(empty)})")
    seen: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        seen.setdefault(k, []).append(i + 2)
    twice = {k: lines for k, lines in seen.items() if len(lines) > 1}
    if twice:
        examples = "; ".join(f"{k!r} on lines {', '.join(map(str, lines))}"
                             for k, lines in list(twice.items())[:EXAMPLES])
        raise CremaError(f"{path}: duplicate keys: {len(twice)} values of {key!r} appear on more than "
                         f"one row ({examples}); give each record one row")


def _split_values(path: Path, column: pd.Series) -> list[str]:
    values = [SPLIT_WORDS.get(v.strip().lower(), "") for v in column]
    bad = [(i + 2, v) for i, (v, s) in enumerate(zip(column, values)) if not s]
    if bad:
        raise CremaError(f"{path}: {len(bad)} rows have a split that is not train, val or test "
                         f"(e.g. line {bad[0][0]}: {bad[0][1]!r})")
    return values


def _fold_values(path: Path, column: pd.Series) -> list[int]:
    folds = []
    for i, v in enumerate(column):
        try:
            folds.append(int(v.strip()))
        except ValueError:
            raise CremaError(f"{path}: line {i + 2}: fold {v!r} is not a whole number") from None
    if len(set(folds)) < 3:
        raise CremaError(f"{path}: the fold column has {len(set(folds))} distinct values; at least 3 "
                         "are needed (highest = test, next = val, the others train)")
    return folds


# ----------------------------------------------------------------------------- the task

@dataclass
class Task:
    """A task as it goes into a corpus.

    Attributes:
        name: the task name.
        type: ``multilabel``, ``multiclass`` or ``regression``.
        classes: class names in column order (``[target column]`` for regression).
        columns: the label columns it was made from.
        cells: per file row, the ``labels:<task>`` cell ("" = no label, :data:`LABEL_NONE` =
            labelled with no class, ``a|b`` = classes, or the number as text).
        how: how the type was decided, in words.
        partial_rows: rows with some but not all 0/1 columns empty (the empty ones count as 0).
    """

    name: str
    type: str
    classes: list[str]
    columns: list[str]
    cells: list[str]
    how: str
    partial_rows: int = 0


def infer_task(labels: LabelsFile, name: str, task_type: str | None = None) -> Task:
    """The task ``labels``' label columns describe (``task_type`` overrides the inference).

    Raises:
        CremaError: a bad task name, an empty column, several columns that are not all 0/1, a
            regression target that is not a number, a class name holding ``|``.
    """
    check_task_name(name, labels.path)
    if task_type is not None and task_type not in TASK_TYPES:
        raise CremaError(f"unknown task type {task_type!r}; choose from {', '.join(TASK_TYPES)}")
    columns = labels.columns
    kinds = {c: _column_kind(labels, c) for c in columns}
    binary = [c for c in columns if kinds[c] == "binary"]
    if len(columns) > 1:
        if task_type == "regression":
            raise CremaError(f"{labels.path}: a regression task takes one label column, the file has "
                             f"{len(columns)} ({_quote(columns)})")
        if len(binary) < len(columns):
            other = [c for c in columns if c not in binary]
            raise CremaError(f"{labels.path}: several label columns make a multi-label task and must all "
                             f"hold 0/1 (yes/no, true/false); {_quote(other[:EXAMPLES])} hold other values "
                             "(give each such task its own file, with the key column)")
        return _binary_columns_task(labels, name, task_type or "multilabel")
    column = columns[0]
    if task_type == "regression" or (task_type is None and kinds[column] == "numeric"
                                     and _distinct(labels, column) > REGRESSION_MIN_VALUES):
        return _regression_task(labels, name, column)
    if kinds[column] == "binary" and task_type != "multiclass":
        return _binary_columns_task(labels, name, task_type or "multilabel")
    return _values_task(labels, name, column, task_type or "multiclass", kinds[column])


def check_task_name(name: str, where: Path | str) -> None:
    if not TASK_NAME.match(name):
        raise CremaError(f"{where}: task name {name!r} must start with a letter or digit and hold only "
                         "letters, digits and _ . + - (pass --task NAME)")


def _column_kind(labels: LabelsFile, column: str) -> str:
    """``binary`` (0/1, yes/no, true/false), ``numeric`` or ``text`` from the known cells."""
    values = {v.lower() for v in labels.cells[column] if not _missing(v)}
    if not values:
        raise CremaError(f"{labels.path}: label column {column!r} has no value on any row")
    if values <= TRUE_CELLS | FALSE_CELLS:
        return "binary"
    return "numeric" if all(_finite_number(v) is not None for v in values) else "text"


def _distinct(labels: LabelsFile, column: str) -> int:
    return len({float(v) for v in labels.cells[column] if not _missing(v)})


def _binary_columns_task(labels: LabelsFile, name: str, task_type: str) -> Task:
    """0/1 columns: the classes are the columns; a row's cell names its 1s."""
    columns = labels.columns
    _check_class_names(labels.path, columns)
    cells, partial = [], 0
    for row in zip(*(labels.cells[c] for c in columns)):
        known = [not _missing(v) for v in row]
        if not any(known):
            cells.append("")
            continue
        partial += not all(known)
        positive = [c for c, v in zip(columns, row) if v.lower() in TRUE_CELLS]
        cells.append(LABEL_SEP.join(positive) if positive else LABEL_NONE)
    how = (f"binary: one 0/1 column {columns[0]!r}, a one-class {task_type} task" if len(columns) == 1
           else f"{task_type}: {len(columns)} 0/1 columns, one class each")
    return Task(name, task_type, list(columns), list(columns), cells, how, partial)


def _values_task(labels: LabelsFile, name: str, column: str, task_type: str, kind: str) -> Task:
    """One column of class names (``|`` = several in a cell)."""
    rows = [[] if _missing(v) else [p.strip() for p in v.split(LABEL_SEP) if not _missing(p)]
            for v in labels.cells[column]]
    found = {c for r in rows for c in r}
    numeric = all(_finite_number(c) is not None for c in found)
    classes = sorted(found, key=(lambda c: (float(c), c)) if numeric else None)
    _check_class_names(labels.path, classes)
    order = {c: i for i, c in enumerate(classes)}
    cells = [LABEL_SEP.join(sorted(set(r), key=order.get)) for r in rows]
    how = f"{task_type}: the values of column {column!r} are the classes"
    if kind == "numeric":
        how += f" ({len(classes)} distinct numbers, at most {REGRESSION_MIN_VALUES}: --task-type regression to regress)"
    return Task(name, task_type, classes, [column], cells, how)


def _regression_task(labels: LabelsFile, name: str, column: str) -> Task:
    cells = []
    for i, v in enumerate(labels.cells[column]):
        if _missing(v):
            cells.append("")
            continue
        number = _finite_number(v)
        if number is None:
            number = {**{t: 1.0 for t in TRUE_CELLS}, **{f: 0.0 for f in FALSE_CELLS}}.get(v.lower())
        if number is None:
            raise CremaError(f"{labels.path}: line {i + 2}: {column} {v!r} is not a number (a regression "
                             "target must be one; leave the cell empty when unknown)")
        cells.append(repr(float(number)))
    n = len({c for c in cells if c})
    return Task(name, "regression", [column], [column], cells,
                f"regression: column {column!r} holds numbers ({n} distinct values)")


def _check_class_names(path: Path, names: Sequence[str]) -> None:
    bad = [n for n in names if LABEL_SEP in n or n.lower() in MISSING_CELLS]
    if bad:
        raise CremaError(f"{path}: {bad[0]!r} cannot be a class name ({LABEL_SEP!r} separates classes; "
                         f"{', '.join(repr(m) for m in sorted(MISSING_CELLS) if m)} and empty mean unknown)")


def _missing(text: str) -> bool:
    return text.strip().lower() in MISSING_CELLS


def _finite_number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


# ----------------------------------------------------------------------------- matching

@dataclass
class Match:
    """Rows of a labels file matched to corpus records.

    Attributes:
        record_of_row: ``(rows,)`` int, the record (position in the records table) each row
            names, -1 for none.
        rows_without_record: the keys of the rows that name no record.
        records_without_row: ids of the records no row names.
    """

    record_of_row: np.ndarray
    rows_without_record: list[str]
    records_without_row: list[str]

    @property
    def matched(self) -> int:
        return int((self.record_of_row >= 0).sum())


def record_table(index: pd.DataFrame) -> pd.DataFrame:
    """One row per record of a corpus index (its first window), in index order, with the columns
    matching needs: ``record_id, source, source_id, patient_id, fold, split`` and ``path`` ("" in
    corpora made before it was recorded)."""
    first = index.drop_duplicates(["source", "record_id"]).reset_index(drop=True)
    if "path" not in first.columns:
        first = first.assign(path="")
    return first[["record_id", "source", "source_id", "patient_id", "fold", "split", "path"]].copy()


def match_rows(labels: LabelsFile, records: pd.DataFrame) -> Match:
    """Match each row's key to a record by its id, its ``source_id``, its path relative to the
    source (with or without extension) or its file name; keys of digits also match ids of digits
    with other leading zeros.

    Raises:
        CremaError: a key matches several records, several rows name one record, or no row
            matches any record.
    """
    aliases: dict[str, set[int]] = {}
    for i, (record_id, source_id, path) in enumerate(zip(records["record_id"], records["source_id"],
                                                         records["path"])):
        for alias in _record_aliases(str(record_id), str(source_id), str(path)):
            aliases.setdefault(alias, set()).add(i)
    found = np.full(len(labels), -1, dtype=np.int64)
    ambiguous, claimed, unmatched = [], {}, []
    for row, key in enumerate(labels.keys):
        hits = set().union(*(aliases.get(a, set()) for a in _key_aliases(key)))
        if len(hits) > 1:
            ambiguous.append((key, sorted(hits)))
        elif hits:
            found[row] = hits.pop()
            claimed.setdefault(int(found[row]), []).append(key)
        else:
            unmatched.append(key)
    names = (records["source"].astype(str) + "/" + records["record_id"].astype(str)).tolist()
    if ambiguous:
        examples = "; ".join(f"{k!r} matches {', '.join(names[i] for i in hits[:3])}"
                             for k, hits in ambiguous[:EXAMPLES])
        raise CremaError(f"{labels.path}: {len(ambiguous)} keys match several records ({examples}); "
                         "use paths relative to the source as keys")
    several = {r: keys for r, keys in claimed.items() if len(keys) > 1}
    if several:
        examples = "; ".join(f"{names[r]} by {', '.join(map(repr, keys))}"
                             for r, keys in list(several.items())[:EXAMPLES])
        raise CremaError(f"{labels.path}: duplicate keys: {len(several)} records are named by more than one "
                         f"row ({examples}); give each record one row")
    if not (found >= 0).any():
        raise CremaError(f"{labels.path}: no row matches a record of the corpus (keys in column "
                         f"{labels.key!r}, e.g. {_first(labels.keys)}; record ids e.g. "
                         f"{_first(records['record_id'].tolist())}); keys are record ids (file stems), "
                         "paths relative to the source, or a stack's row ids")
    named = set(found[found >= 0].tolist())
    without = [str(records["record_id"].iloc[i]) for i in range(len(records)) if i not in named]
    return Match(found, unmatched, without)


def _record_aliases(record_id: str, source_id: str, path: str) -> set[str]:
    names = {record_id, source_id}
    if path:
        pure = PurePosixPath(path)
        names |= {path, str(pure.with_suffix("")) if pure.suffix else path, pure.name}
    return {n for a in names for n in _key_aliases(a)}


def _key_aliases(key: str) -> set[str]:
    """``key`` and, for digits with leading zeros, the same number without them."""
    return {key, str(int(key))} if key.isdigit() else {key}


# ----------------------------------------------------------------------------- the split

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


def split_of_fold(fold: int, highest: int, second: int | None = None) -> str:
    """``test`` for the highest fold, ``val`` for the next, ``train`` for the others (for folds
    1-10 this is PTB-XL's 1-8 / 9 / 10)."""
    second = highest - 1 if second is None else second
    return "test" if fold == highest else ("val" if fold == second else "train")


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
        for name in _classes_of(cell):
            counts[name] = counts.get(name, 0) + 1
    return np.array([min(_classes_of(c), key=lambda n: (counts[n], n)) if _classes_of(c)
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


def _classes_of(cell: str) -> list[str]:
    return [] if cell in ("", LABEL_NONE) else cell.split(LABEL_SEP)


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
            for name in _classes_of(cell):
                counts[name] += 1
        empty = [c for c in task.classes if counts[c] == 0]
        if empty and part == "train":
            total = sum(task.cells[r].split(LABEL_SEP).count(empty[0]) for r in rows)
            raise CremaError(f"{labels.path}: class {empty[0]!r} of task {task.name!r} has no positive "
                             f"example in the train split ({total} in all, split: {split.method}); "
                             "add examples, drop the class, or give a split column")
        if empty:
            notes.append(f"no positive example in {part} for {len(empty)} classes ({_first(empty)})")
    return notes


# ----------------------------------------------------------------------------- the corpus

@dataclass
class LabelsRequest:
    """One labels file to add: the file, its task name and an optional type."""

    path: Path
    task: str
    task_type: str | None = None
    labels: LabelsFile | None = field(default=None, repr=False)
    parsed: Task | None = field(default=None, repr=False)


def plan_labels(files: Sequence[str | Path], task: str | None = None,
                task_type: str | None = None) -> list[LabelsRequest]:
    """Read and check every labels file (no corpus needed): names, columns, task types.

    Task names are the files' stems, or ``task`` with one file.

    Raises:
        CremaError: ``task`` with several files, two files for one task, any problem of a file.
    """
    files = [Path(f) for f in files]
    if task is not None and len(files) != 1:
        raise CremaError(f"--task names the task of one labels file; {len(files)} were given "
                         "(each file's task is then its file name without .csv)")
    requests = []
    for path in files:
        name = task if task is not None else path.stem
        if any(r.task == name for r in requests):
            raise CremaError(f"{path}: a second labels file for task {name!r}; rename one file")
        labels = read_labels_file(path)
        requests.append(LabelsRequest(path, name, task_type, labels, infer_task(labels, name, task_type)))
    return requests


def label_corpus(corpus_dir: str | Path, requests: Sequence[LabelsRequest], seed: int = 0) -> dict:
    """Write the tasks of ``requests`` into the corpus folder ``corpus_dir`` (signals untouched):
    ``labels:<task>`` columns, ``patient_id`` where the index had none, ``fold``/``split``,
    ``classes.json``, ``tasks.json`` and ``prepare_report.json``'s ``labels`` and
    ``split_method``. The caller holds the corpus's output lock.

    Returns:
        ``{task: summary dict}`` (also stored in the report's ``labels``).

    Raises:
        CremaError: see :func:`match_rows`, :func:`decide_split`, :func:`check_train_positives`;
            a task name of a built-in task. Nothing is written then.
    """
    corpus_dir = Path(corpus_dir)
    columns, index = load_index(corpus_dir)
    index = columns.frame() if index is None else index
    classes = load_json(corpus_dir / "classes.json")
    tasks = load_json(corpus_dir / TASKS_FILE) if (corpus_dir / TASKS_FILE).is_file() else {}
    report = load_json(corpus_dir / "prepare_report.json")
    records = record_table(index)
    split = Split(records["fold"].to_numpy(dtype=np.int64), records["split"].to_numpy(dtype=object),
                  split_method_of(report), report.get("split_owner"))
    cells_of_record, summaries = {}, {}
    skipped_ids = _skipped_aliases(report)
    patients = records["patient_id"].astype(str).to_numpy(dtype=object)
    for request in requests:
        labels, task = request.labels, request.parsed
        if task.name in classes and task.name not in tasks:
            raise CremaError(f"{labels.path}: {task.name!r} is a built-in task of this corpus; "
                             "choose another name with --task")
        match = match_rows(labels, records)
        split = decide_split(labels, task, match, records, split, seed)
        notes = check_train_positives(labels, task, match, split)
        cells = np.full(len(records), "", dtype=object)
        rows = np.flatnonzero(match.record_of_row >= 0)
        cells[match.record_of_row[rows]] = np.asarray(task.cells, dtype=object)[rows]
        cells_of_record[task.name] = cells
        if labels.patients is not None:
            given = np.asarray(labels.patients, dtype=object)[rows]
            fill = (patients[match.record_of_row[rows]] == "") & (given != "")
            patients[match.record_of_row[rows][fill]] = given[fill]
        classes[task.name] = task.classes
        tasks[task.name] = {"type": task.type, "labels_file": labels.path.name, "key": labels.key,
                            "columns": task.columns, "split": split.method}
        summaries[task.name] = _summary(labels, task, match, split, notes, cells, skipped_ids)
    _write(corpus_dir, index, records, cells_of_record, patients, split, classes, tasks, report, summaries)
    return summaries


def _skipped_aliases(report: dict) -> set[str]:
    """The names a labels file may give the records prepare skipped (stem, file name, path
    relative to the source), so that rows naming them are told apart from rows naming nothing."""
    source = Path(report.get("source", ""))
    names = set()
    for item in report.get("skipped", []):
        path = Path(str(item.get("record", "")).split("[")[0])
        try:
            relative = path.relative_to(source).as_posix()
        except ValueError:
            relative = path.name
        names |= _record_aliases(path.stem, "", relative)
    return names


def _summary(labels: LabelsFile, task: Task, match: Match, split: Split, notes: list[str],
             cells: np.ndarray, skipped: set[str]) -> dict:
    labelled = cells != ""
    of_skipped = [k for k in match.rows_without_record if _key_aliases(k) & skipped]
    nowhere = [k for k in match.rows_without_record if not _key_aliases(k) & skipped]
    return dict(
        file=labels.path.name, key=labels.key, type=task.type, how=task.how, classes=task.classes,
        rows=len(labels), matched_records=match.matched, labelled_records=int(labelled.sum()),
        records_without_row=len(match.records_without_row),
        records_without_row_examples=match.records_without_row[:EXAMPLES],
        rows_of_skipped_records=of_skipped, rows_without_record=nowhere, partial_rows=task.partial_rows,
        split=split.method,
        split_records={s: int((labelled & (split.splits == s)).sum()) for s in SPLITS},
        notes=notes)


def _write(corpus_dir: Path, index: pd.DataFrame, records: pd.DataFrame, cells_of_record: dict,
           patients: np.ndarray, split: Split, classes: dict, tasks: dict, report: dict,
           summaries: dict) -> None:
    """Index first (its new columns mean nothing until classes.json names them), then the JSON
    files, each written atomically."""
    position = pd.MultiIndex.from_frame(records[["source", "record_id"]])
    of_window = position.get_indexer(pd.MultiIndex.from_frame(index[["source", "record_id"]]))
    index = index.copy()
    index["patient_id"] = patients[of_window]
    index["fold"] = split.folds[of_window]
    index["split"] = split.splits[of_window]
    for task, cells in cells_of_record.items():
        index[LABEL_PREFIX + task] = cells[of_window]
    write_index(index, corpus_dir)
    save_json(corpus_dir / "classes.json", classes)
    save_json(corpus_dir / TASKS_FILE, tasks)
    report.update(split_method=split.method, split_owner=split.owner,
                  splits={s: int((index["split"] == s).sum()) for s in SPLITS},
                  labels={**report.get("labels", {}), **summaries})
    save_json(corpus_dir / "prepare_report.json", report)


def summary_lines(summaries: dict) -> list[str]:
    """What ``crema prepare --labels`` and ``crema label`` print for each task added."""
    lines = []
    for task, s in summaries.items():
        lines.append(f"labels {s['file']}: key column {s['key']!r}, {s['rows']} rows, "
                     f"{s['matched_records']} records matched, {s['labelled_records']} labelled")
        lines.append(f"  task {task}: {s['how']}")
        if s["type"] != "regression":
            lines.append(f"  classes: {', '.join(s['classes'][:20])}" + (" ..." if len(s["classes"]) > 20 else ""))
        counts = ", ".join(f"{k} {v}" for k, v in s["split_records"].items())
        lines.append(f"  split: {s['split']} (labelled records: {counts})")
        if s["records_without_row"]:
            lines.append(f"  {_count(s['records_without_row'], 'record')} without a row (unlabelled for "
                         f"{task}): {_first(s['records_without_row_examples'])}")
        skipped = s.get("rows_of_skipped_records", [])
        if skipped:
            lines.append(f"  {_count(len(skipped), 'row')} name records skipped when prepared (unreadable "
                         f"or unusable: crema info --skipped): {_first(skipped)}")
        if s["rows_without_record"]:
            lines.append(f"  {_count(len(s['rows_without_record']), 'row')} name no record of the corpus: "
                         f"{_first(s['rows_without_record'])} (all listed in prepare_report.json)")
        if s["partial_rows"]:
            lines.append(f"  {_count(s['partial_rows'], 'row')} leave some 0/1 columns empty: those count as 0")
        lines += [f"  note: {n}" for n in s["notes"]]
    return lines


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _first(items: Sequence, n: int = EXAMPLES) -> str:
    shown = ", ".join(str(i) for i in list(items)[:n])
    return shown + (f" ... ({len(items)} in all)" if len(items) > n else "")


def _quote(names: Sequence) -> str:
    return ", ".join(repr(str(n)) for n in names)


def add_labels(corpus_dir: str | Path, files: Sequence[str | Path], task: str | None = None,
               task_type: str | None = None, split_seed: int = 0) -> dict:
    """``crema label``: add the tasks of labels ``files`` to the corpus folder ``corpus_dir``
    (matched on its index, no signal read), holding its output lock.

    Returns:
        ``{task: summary}`` (:func:`summary_lines` prints it).
    """
    corpus_dir = Path(Corpus(corpus_dir).path).resolve()  # a clear message when it is not a corpus
    requests = plan_labels(files, task, task_type)
    with output_lock(corpus_dir, "crema label"):
        return label_corpus(corpus_dir, requests, split_seed)
