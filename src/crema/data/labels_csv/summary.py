"""What adding a task reports: per task a summary dict (kept in ``prepare_report.json``'s
``labels``) and the lines ``crema prepare --labels`` and ``crema label`` print from it."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..corpus import SPLITS
from .cells import EXAMPLES, first_few
from .match import Match, key_aliases, record_aliases
from .split import Split
from .table import LabelsFile
from .task import Task


def skipped_aliases(report: dict) -> set[str]:
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
        names |= record_aliases(path.stem, "", relative)
    return names


def task_summary(labels: LabelsFile, task: Task, match: Match, split: Split, notes: list[str],
                 cells: np.ndarray, skipped: set[str]) -> dict:
    """The summary of one task added: the file, the task, counts of matched and labelled records
    per split, the rows naming skipped records or none (``cells``: ``(records,)`` its cells)."""
    labelled = cells != ""
    of_skipped = [k for k in match.rows_without_record if key_aliases(k) & skipped]
    nowhere = [k for k in match.rows_without_record if not key_aliases(k) & skipped]
    return dict(
        file=labels.path.name, key=labels.key, type=task.type, how=task.how, classes=task.classes,
        rows=len(labels), matched_records=match.matched, labelled_records=int(labelled.sum()),
        records_without_row=len(match.records_without_row),
        records_without_row_examples=match.records_without_row[:EXAMPLES],
        rows_of_skipped_records=of_skipped, rows_without_record=nowhere, partial_rows=task.partial_rows,
        split=split.method,
        split_records={s: int((labelled & (split.splits == s)).sum()) for s in SPLITS},
        notes=notes)


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
                         f"{task}): {first_few(s['records_without_row_examples'])}")
        skipped = s.get("rows_of_skipped_records", [])
        if skipped:
            lines.append(f"  {_count(len(skipped), 'row')} name records skipped when prepared (unreadable "
                         f"or unusable: crema info --skipped): {first_few(skipped)}")
        if s["rows_without_record"]:
            lines.append(f"  {_count(len(s['rows_without_record']), 'row')} name no record of the corpus: "
                         f"{first_few(s['rows_without_record'])} (all listed in prepare_report.json)")
        if s["partial_rows"]:
            lines.append(f"  {_count(s['partial_rows'], 'row')} leave some 0/1 columns empty: those count as 0")
        lines += [f"  note: {n}" for n in s["notes"]]
    return lines


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
