"""A labels file read and checked: one row per record, its key column (the first of
:data:`KEY_COLUMNS`), the optional ``patient_id``, ``split`` and ``fold`` columns, and the label
columns (all others)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ...errors import CremaError
from .cells import EXAMPLES, first_few, quoted

# Names of the column that names each row's record, in order of preference.
KEY_COLUMNS = ("record_id", "record", "file", "path", "ecg_id", "exam_id")
PATIENT_COLUMN, SPLIT_COLUMN, FOLD_COLUMN = "patient_id", "split", "fold"
SPLIT_WORDS = {"train": "train", "training": "train", "val": "val", "valid": "val",
               "validation": "val", "test": "test"}


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
                         f"{', '.join(KEY_COLUMNS)} (its columns: {quoted(table.columns)})")
    if len(table) == 0:
        raise CremaError(f"{path}: no rows")
    keys = [_normal_key(k) for k in table[key]]
    _check_keys(path, key, keys)
    reserved = {by_name[k] for k in (*KEY_COLUMNS, PATIENT_COLUMN, SPLIT_COLUMN, FOLD_COLUMN) if k in by_name}
    columns = [c for c in table.columns if c not in reserved]
    if not columns:
        raise CremaError(f"{path}: no label column (its columns: {quoted(table.columns)}; every column "
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
        raise CremaError(f"{path}: {len(empty)} rows have an empty {key!r} (lines {first_few(empty)})")
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
