"""What the label columns of a labels file describe: several 0/1 columns = a multi-label task
whose classes are the columns; one 0/1 column = a binary task, stored as a one-class multi-label
task named after the column; one numeric column with more than :data:`REGRESSION_MIN_VALUES`
distinct values = regression; any other single column = multi-class (its values are the classes,
``|`` inside a cell = several)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ...errors import CremaError
from ..corpus import LABEL_NONE, LABEL_SEP, TASK_TYPES
from .cells import EXAMPLES, FALSE_CELLS, MISSING_CELLS, TRUE_CELLS, finite_number, is_missing, quoted
from .table import LabelsFile

# One numeric column with more distinct values than this is a regression target; with fewer
# (grades 1-5, a 0/1/2 score) its values are classes.
REGRESSION_MIN_VALUES = 10
TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


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
                             f"{len(columns)} ({quoted(columns)})")
        if len(binary) < len(columns):
            other = [c for c in columns if c not in binary]
            raise CremaError(f"{labels.path}: several label columns make a multi-label task and must all "
                             f"hold 0/1 (yes/no, true/false); {quoted(other[:EXAMPLES])} hold other values "
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
    values = {v.lower() for v in labels.cells[column] if not is_missing(v)}
    if not values:
        raise CremaError(f"{labels.path}: label column {column!r} has no value on any row")
    if values <= TRUE_CELLS | FALSE_CELLS:
        return "binary"
    return "numeric" if all(finite_number(v) is not None for v in values) else "text"


def _distinct(labels: LabelsFile, column: str) -> int:
    return len({float(v) for v in labels.cells[column] if not is_missing(v)})


def _binary_columns_task(labels: LabelsFile, name: str, task_type: str) -> Task:
    """0/1 columns: the classes are the columns; a row's cell names its 1s."""
    columns = labels.columns
    _check_class_names(labels.path, columns)
    cells, partial = [], 0
    for row in zip(*(labels.cells[c] for c in columns)):
        known = [not is_missing(v) for v in row]
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
    rows = [[] if is_missing(v) else [p.strip() for p in v.split(LABEL_SEP) if not is_missing(p)]
            for v in labels.cells[column]]
    found = {c for r in rows for c in r}
    numeric = all(finite_number(c) is not None for c in found)
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
        if is_missing(v):
            cells.append("")
            continue
        number = finite_number(v)
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
