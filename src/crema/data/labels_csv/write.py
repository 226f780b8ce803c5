"""Labels files into a corpus folder: :func:`plan_labels` reads and checks the files (no corpus
needed); :func:`label_corpus` matches, splits and writes their tasks (``index.csv`` label and split
columns, ``classes.json``, ``tasks.json``, ``prepare_report.json``) without reading a signal;
:func:`add_labels` is ``crema label``."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ...config_io import load_json, save_json
from ...errors import CremaError
from ...locking import output_lock
from ..corpus import LABEL_PREFIX, SPLITS, TASKS_FILE, Corpus, split_method_of
from ..corpus_index import load_index, write_index
from .match import match_rows, record_table
from .split import Split, check_train_positives, decide_split
from .summary import skipped_aliases, task_summary
from .table import LabelsFile, read_labels_file
from .task import Task, infer_task


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
    skipped_ids = skipped_aliases(report)
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
        summaries[task.name] = task_summary(labels, task, match, split, notes, cells, skipped_ids)
    _write(corpus_dir, index, records, cells_of_record, patients, split, classes, tasks, report, summaries)
    return summaries


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
