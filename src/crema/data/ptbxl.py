"""The PTB-XL index and its label tasks, built the way the PTB-XL benchmark builds them.

Strodthoff et al. 2020 ("Deep learning for ECG analysis: benchmarks and insights from PTB-XL"):
every key of a record's ``scp_codes`` counts whatever its likelihood; a task keeps the keys that
are statements of its kind in ``scp_statements.csv``:

* ``diagnostic``: ``diagnostic == 1`` (the statement itself),
* ``subdiagnostic``: those mapped to ``diagnostic_subclass``,
* ``superdiagnostic``: those mapped to ``diagnostic_class`` (NORM, MI, STTC, CD, HYP),
* ``form``: ``form == 1``;  ``rhythm``: ``rhythm == 1``;  ``all``: every statement.

Classes are sorted by name (the benchmark's MultiLabelBinarizer order). A record with no
statement of a task has no label for that task and is left out of it.
Folds: ``strat_fold`` 1-8 train, 9 validation, 10 test.
"""
from __future__ import annotations

import ast
import os
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CremaError
from .corpus import split_of_fold

DATABASE_FILE = "ptbxl_database.csv"
STATEMENTS_FILE = "scp_statements.csv"
PTBXL_TASKS = ("superdiagnostic", "subdiagnostic", "diagnostic", "form", "rhythm", "all")
# PTB-XL codes age above 89 as 300 (anonymisation); stored here as 90.
AGE_CAP = 90.0
# PTB-XL sex coding.
SEX_CODES = {0: "M", 1: "F"}


def is_ptbxl_root(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder holding ``ptbxl_database.csv``."""
    return (Path(path) / DATABASE_FILE).is_file()


def detect_rate(root: str | os.PathLike, index: pd.DataFrame | None = None) -> int:
    """500 when the 500 Hz records are present (checked on the first record), else 100."""
    root = Path(root)
    index = load_database(root) if index is None else index
    first = index.iloc[0]
    return 500 if (root / f"{first['filename_hr']}.hea").exists() else 100


# The columns of ptbxl_database.csv that CREMA reads (ecg_id is the index).
DATABASE_COLUMNS = ("ecg_id", "patient_id", "age", "sex", "scp_codes", "strat_fold", "filename_lr", "filename_hr")


def load_database(root: str | os.PathLike) -> pd.DataFrame:
    """``ptbxl_database.csv`` indexed by ``ecg_id`` with ``scp_codes`` parsed into dicts and
    ``strat_fold`` checked (whole numbers 1-10).

    Raises:
        CremaError: naming the file, and the column and ``ecg_id`` of a damaged value (an
            unclosed quote, a missing column, ``scp_codes`` that are no dict, a fold ``ten``).
    """
    path = Path(root) / DATABASE_FILE
    if not path.is_file():
        raise CremaError(f"{path}: not found (is {root} a PTB-XL folder?)")
    try:
        df = pd.read_csv(path)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:  # EmptyDataError is a ValueError
        raise CremaError(f"{path}: not a readable CSV table ({str(exc).strip().splitlines()[0]})") from None
    missing = [column for column in DATABASE_COLUMNS if column not in df.columns]
    if missing:
        raise CremaError(f"{path}: no column {', '.join(missing)} (is this PTB-XL's database file?)")
    ids = pd.to_numeric(df["ecg_id"], errors="coerce")
    _require_whole(path, df, "ecg_id", ids, ids.notna() & (ids >= 1))
    df = df.set_index(ids.astype(int).rename("ecg_id")).drop(columns="ecg_id")
    df["scp_codes"] = [_scp_codes(path, ecg_id, text) for ecg_id, text in df["scp_codes"].items()]
    folds = pd.to_numeric(df["strat_fold"], errors="coerce")
    _require_whole(path, df, "strat_fold", folds, folds.between(1, 10))
    df["strat_fold"] = folds.astype(int)
    return df


def _require_whole(path: Path, df: pd.DataFrame, column: str, values: pd.Series, ok: pd.Series) -> None:
    """Refuse the first row of ``column`` that is not a whole number where ``ok`` holds."""
    bad = ~(ok & (values == values.round()))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise CremaError(f"{path}: column {column} holds {str(df[column].iloc[row])!r} in data row {row + 1} "
                         f"(expected {'a fold 1-10' if column == 'strat_fold' else 'a positive whole number'})")


def _scp_codes(path: Path, ecg_id: int, text) -> dict:
    """A record's ``scp_codes`` cell (``{'NORM': 100.0, ...}``) as a dict."""
    try:
        codes = ast.literal_eval(text) if isinstance(text, str) else None
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        codes = None
    if not isinstance(codes, dict):
        raise CremaError(f"{path}: column scp_codes of ecg_id {ecg_id} is not a dict of statement codes "
                         f"({str(text)[:60]!r})")
    return codes


def load_statements(root: str | os.PathLike) -> pd.DataFrame:
    """``scp_statements.csv`` indexed by statement code."""
    path = Path(root) / STATEMENTS_FILE
    if not path.is_file():
        raise CremaError(f"{path}: not found (is {root} a PTB-XL folder?)")
    return pd.read_csv(path, index_col=0)


def task_statements(statements: pd.DataFrame, task: str) -> dict[str, str]:
    """Map each SCP code that counts for ``task`` to the class name it contributes."""
    if task == "all":
        return {code: code for code in statements.index}
    if task == "form":
        return {code: code for code in statements.index[statements["form"] == 1]}
    if task == "rhythm":
        return {code: code for code in statements.index[statements["rhythm"] == 1]}
    diag = statements[statements["diagnostic"] == 1]
    if task == "diagnostic":
        return {code: code for code in diag.index}
    if task == "subdiagnostic":
        return diag["diagnostic_subclass"].dropna().to_dict()
    if task == "superdiagnostic":
        return diag["diagnostic_class"].dropna().to_dict()
    raise CremaError(f"unknown PTB-XL task {task!r}; choose from {', '.join(PTBXL_TASKS)}")


def record_labels(scp_codes: dict, mapping: dict[str, str]) -> list[str]:
    """Sorted distinct class names a record's ``scp_codes`` give under a task's ``mapping``."""
    return sorted({mapping[code] for code in scp_codes if code in mapping})


def task_labels(database: pd.DataFrame, statements: pd.DataFrame, task: str) -> pd.Series:
    """Per record (indexed like ``database``) the list of class names for ``task``."""
    mapping = task_statements(statements, task)
    return database["scp_codes"].apply(lambda codes: record_labels(codes, mapping))


def multi_hot(labels: pd.Series | list[list[str]]) -> tuple[np.ndarray, list[str]]:
    """``(n, K)`` float32 multi-hot matrix and the sorted class list from lists of names."""
    lists = list(labels)
    classes = sorted({name for names in lists for name in names})
    column = {name: i for i, name in enumerate(classes)}
    y = np.zeros((len(lists), len(classes)), dtype=np.float32)
    for row, names in enumerate(lists):
        y[row, [column[n] for n in names]] = 1.0
    return y, classes


def clean_age(value) -> float | None:
    """Age in years, None when missing; PTB-XL's 300 (over 89) becomes 90."""
    if value is None or pd.isna(value):
        return None
    return min(float(value), AGE_CAP)


def load_ptbxl_index(root: str | os.PathLike, rate: int | None = None) -> pd.DataFrame:
    """One row per PTB-XL record with what a corpus needs.

    Args:
        root: the PTB-XL folder (official layout; any number of records).
        rate: 100 or 500 Hz records; None = 500 when present, else 100.

    Returns:
        DataFrame indexed by ``ecg_id`` with columns ``path`` (the ``.hea``), ``record_id``
        (5-digit ecg_id), ``patient_id`` (str), ``age``, ``sex`` ('M'/'F'/None), ``fold``,
        ``split``, ``source_id``, and ``labels:<task>`` (list of class names) per task.
    """
    root = Path(root)
    db = load_database(root)
    statements = load_statements(root)
    rate = detect_rate(root, db) if rate is None else int(rate)
    if rate not in (100, 500):
        raise CremaError(f"PTB-XL rate must be 100 or 500, got {rate}")
    column = "filename_hr" if rate == 500 else "filename_lr"
    out = pd.DataFrame(index=db.index)
    out["path"] = [root / f"{name}.hea" for name in db[column]]
    out["record_id"] = [f"{int(i):05d}" for i in db.index]
    patients = pd.to_numeric(db["patient_id"], errors="coerce")  # a stray word is an unknown patient
    out["patient_id"] = [str(int(p)) if pd.notna(p) and float(p).is_integer() else "" for p in patients]
    out["age"] = [clean_age(a) for a in pd.to_numeric(db["age"], errors="coerce")]
    out["sex"] = [SEX_CODES.get(int(s)) if pd.notna(s) else None for s in pd.to_numeric(db["sex"], errors="coerce")]
    out["fold"] = db["strat_fold"]
    out["split"] = [split_of_fold(f) for f in out["fold"]]
    out["source_id"] = [ptbxl_source_id(i) for i in db.index]
    for task in PTBXL_TASKS:
        out[f"labels:ptbxl-{task}"] = task_labels(db, statements, task)
    return out


def ptbxl_source_id(ecg_id: int | str) -> str:
    """The key that identifies a PTB-XL record whichever corpus carries it (``ptbxl:17``)."""
    return f"ptbxl:{int(ecg_id)}"
