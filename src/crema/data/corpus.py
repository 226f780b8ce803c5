"""A prepared corpus: windows in a float16 memmap plus an index, read without loading it all.

Folder layout (written once by :func:`crema.data.prepare.prepare_corpus`):

    signals.npy           float16 (N, 12, window)  -- opened with mmap_mode="r"
    lead_mask.npy         bool (N, 12)
    index.csv             one row per window: record_id, source, patient_id, fold, split, window,
                          start_s, original_fs, age, sex, source_id, path (the record's file
                          relative to the source; absent in corpora made before it), labels:<task>...
    classes.json          {task: [class names in column order]}; a regression task: [target column]
    tasks.json            (only with a user's labels file) {task: {"type", "labels_file", "key",
                          "columns", "split"}}; a task it does not name is multi-label
    preprocess.json       the PreprocessConfig
    prepare_report.json   counts, skipped records with reasons, seconds taken, how the split was made
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from ..config import PreprocessConfig, load_json, read_json_object
from ..errors import CremaError

SPLITS = ("train", "val", "test")
INDEX_COLUMNS = ("record_id", "source", "patient_id", "fold", "split", "window", "start_s",
                 "original_fs", "age", "sex", "source_id", "path")
LABEL_PREFIX = "labels:"
LABEL_SEP = "|"
# The cell of a record labelled with no class at all (a negative of a binary task, a row of 0s in
# a user's multi-label table): labelled, unlike an empty cell, which means "no label".
LABEL_NONE = "-"
CORPUS_FILES = ("signals.npy", "lead_mask.npy", "index.csv", "classes.json", "preprocess.json",
                "prepare_report.json")
# Written only when a user's labels file adds tasks (crema.data.labels_csv).
TASKS_FILE = "tasks.json"
TASK_TYPES = ("multilabel", "multiclass", "regression")
# How prepare splits each kind of source when no labels file gives a split (prepare_report.json
# "split_method"; corpora prepared before it was recorded fall back to these words).
SPLIT_PTBXL = "PTB-XL strat_fold (folds 1-8 train, 9 val, 10 test)"
SPLIT_HASH_RECORD = "hash of record id"
SPLIT_HASH_PATIENT = "hash of patient id (records of one patient share a split)"
# index.csv columns read as text (ids like "00001" must keep their zeros).
_TEXT_COLUMNS = ("record_id", "source", "patient_id", "split", "sex", "source_id", "path")


def split_method_of(report: dict) -> str:
    """How a corpus's split was made, from its ``prepare_report.json`` contents (corpora made
    before it was recorded: PTB-XL's folds or a hash of the record id)."""
    if "split_method" in report:
        return report["split_method"]
    return SPLIT_PTBXL if report.get("kind") == "ptbxl" else SPLIT_HASH_RECORD


def is_corpus(path: str | os.PathLike) -> bool:
    """True when ``path`` holds every file of a finished corpus."""
    return all((Path(path) / name).is_file() for name in CORPUS_FILES)


def read_index(path: str | os.PathLike) -> pd.DataFrame:
    """``index.csv`` with ids as text, empty labels as ``""`` and missing ages as NaN."""
    header = pd.read_csv(path, nrows=0).columns
    text = {c: str for c in header if c in _TEXT_COLUMNS or c.startswith(LABEL_PREFIX)}
    df = pd.read_csv(path, dtype=text, keep_default_na=False, na_values={"age": [""]})
    df["age"] = pd.to_numeric(df["age"], errors="coerce")
    return df


class Corpus:
    """A prepared corpus folder.

    Attributes:
        path: the folder.
        signals: float16 memmap ``(N, 12, window)`` (opened lazily, read-only; never pickled).
        lead_mask: bool ``(N, 12)``.
        index: DataFrame, one row per window (see module docstring).
        preprocess: the ``PreprocessConfig`` the windows were made with.
        classes: ``{task: [class names]}`` (``[target name]`` for a regression task).
        task_info: ``tasks.json``: ``{task: {"type", "labels_file", "key", "columns", "split"}}``
            for the tasks a user's labels file added (empty otherwise).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        missing = [name for name in CORPUS_FILES if not (self.path / name).is_file()]
        if missing:
            raise CremaError(f"{self.path}: not a prepared corpus (missing {', '.join(missing)}); "
                             "run `crema prepare` first")
        self.index = read_index(self.path / "index.csv")
        self.lead_mask = _load_array(self.path / "lead_mask.npy")
        self.classes: dict[str, list[str]] = read_json_object(self.path / "classes.json", "corpus class list")
        tasks_file = self.path / TASKS_FILE
        self.task_info: dict[str, dict] = (json.loads(tasks_file.read_text())
                                           if tasks_file.is_file() else {})
        self.preprocess: PreprocessConfig = load_json(self.path / "preprocess.json", PreprocessConfig)
        self._signals: np.ndarray | None = None
        if len(self.index) != len(self.lead_mask):
            raise CremaError(f"{self.path}: index.csv has {len(self.index)} rows but lead_mask.npy "
                             f"{len(self.lead_mask)}")

    # The memmap is opened per process so that pickling a Corpus (DataLoader workers under
    # spawn) never copies the signals.
    @property
    def signals(self) -> np.ndarray:
        if self._signals is None:
            self._signals = _load_array(self.path / "signals.npy", mmap_mode="r")
            if self._signals.shape[0] != len(self.index):
                raise CremaError(f"{self.path}: signals.npy has {self._signals.shape[0]} windows "
                                 f"but index.csv {len(self.index)} rows")
        return self._signals

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_signals"] = None
        return state

    def __len__(self) -> int:
        return len(self.index)

    def __repr__(self) -> str:
        return f"Corpus({str(self.path)!r}, windows={len(self)}, tasks={self.tasks})"

    @property
    def window(self) -> int:
        """Samples per window."""
        return self.preprocess.window

    @property
    def tasks(self) -> list[str]:
        """Label tasks this corpus carries."""
        return list(self.classes)

    def task_type(self, task: str) -> str:
        """``multilabel``, ``multiclass`` or ``regression`` (``multilabel`` for tasks that
        ``tasks.json`` does not name: the built-in PTB-XL and CinC tasks)."""
        self._check_task(task)
        return self.task_info.get(task, {}).get("type", "multilabel")

    @property
    def split_method(self) -> str:
        """How the train/val/test split was made, in words (``prepare_report.json``)."""
        return split_method_of(self.report)

    @property
    def report(self) -> dict:
        """The ``prepare_report.json`` contents."""
        return json.loads((self.path / "prepare_report.json").read_text())

    def rows(self, split: str | Sequence[str] | None = None,
             sources: str | Iterable[str] | None = None,
             exclude_sources: str | Iterable[str] | None = None) -> np.ndarray:
        """Indices (int64, ascending) of the windows in ``split`` (one name or several) and in
        ``sources`` but not in ``exclude_sources``; ``None`` means no filter."""
        keep = np.ones(len(self.index), dtype=bool)
        if split is not None:
            splits = [split] if isinstance(split, str) else list(split)
            unknown = set(splits) - set(SPLITS)
            if unknown:
                raise CremaError(f"unknown split(s) {sorted(unknown)}; choose from {', '.join(SPLITS)}")
            keep &= self.index["split"].isin(splits).to_numpy()
        if sources is not None:
            keep &= self.index["source"].isin(_as_list(sources)).to_numpy()
        if exclude_sources is not None:
            keep &= ~self.index["source"].isin(_as_list(exclude_sources)).to_numpy()
        return np.flatnonzero(keep).astype(np.int64)

    def labels(self, task: str, rows: np.ndarray | Sequence[int] | None = None
               ) -> tuple[np.ndarray, list[str], np.ndarray]:
        """Labels of ``task`` for ``rows`` (default all).

        Returns:
            Classification: ``Y (n, K)`` float32 multi-hot, the ``K`` class names, and
            ``has_label (n,)`` bool (False for windows whose record has no statement of this
            task: leave them out; True for a cell of :data:`LABEL_NONE`, a record labelled
            with no class, whose row of ``Y`` is all zeros). Regression: ``Y (n, 1)`` float32
            values (0 where unlabelled), ``[target name]`` and ``has_label (n,)``.
        """
        self._check_task(task)
        classes = list(self.classes[task])
        rows = np.arange(len(self.index)) if rows is None else np.asarray(rows, dtype=np.int64)
        cells = self.index[LABEL_PREFIX + task].to_numpy()[rows]
        if self.task_type(task) == "regression":
            return _regression_values(cells), classes, cells != ""
        column = {name: i for i, name in enumerate(classes)}
        y = np.zeros((len(rows), len(classes)), dtype=np.float32)
        for i, cell in enumerate(cells):
            if cell and cell != LABEL_NONE:
                y[i, [column[name] for name in cell.split(LABEL_SEP)]] = 1.0
        return y, classes, y.any(axis=1) | (cells == LABEL_NONE)

    def _check_task(self, task: str) -> None:
        if task not in self.classes:
            raise CremaError(f"{self.path}: no labels for task {task!r}; this corpus has "
                             f"{', '.join(self.tasks) or 'no label tasks'}")

    def summary(self) -> str:
        """Human-readable description: counts, sources, splits, classes, preprocessing."""
        return format_summary(self)


def _load_array(path: Path, mmap_mode: str | None = None) -> np.ndarray:
    """A corpus array, or one clear error when the file is cut short or is not a .npy array."""
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise CremaError(f"{path}: damaged ({str(exc).strip().splitlines()[0] if str(exc).strip() else 'cut short'}); "
                         "prepare the corpus again") from None


def _regression_values(cells: np.ndarray) -> np.ndarray:
    """``(n, 1)`` float32 from ``labels:<task>`` cells holding numbers as text ("" = 0)."""
    values = np.zeros((len(cells), 1), dtype=np.float32)
    filled = cells != ""
    values[filled, 0] = np.asarray(cells[filled], dtype=np.float64)
    return values


def _as_list(value: str | Iterable[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def parse_corpus_spec(spec: str | os.PathLike) -> tuple[Path, tuple[str, ...] | None]:
    """``"DIR:train,val"`` -> ``(Path("DIR"), ("train", "val"))``; ``"DIR"`` -> ``(Path, None)``.

    A suffix after the last ``:`` counts as splits only when every part is a split name, so
    paths that contain colons still work.
    """
    text = str(spec)
    head, sep, tail = text.rpartition(":")
    if sep and head and tail:
        parts = tuple(p.strip() for p in tail.split(",") if p.strip())
        if parts and all(p in SPLITS for p in parts):
            return Path(head), parts
    return Path(text), None


def format_summary(corpus: Corpus) -> str:
    """The text ``crema info`` prints."""
    idx = corpus.index
    report = corpus.report
    cfg = corpus.preprocess
    lines = [f"corpus      {corpus.path}",
             f"records     {len(idx[['source', 'record_id']].drop_duplicates())} "
             f"({report.get('records_skipped', 0)} skipped when prepared)",
             f"windows     {len(idx)} x 12 leads x {cfg.window} samples (float16)",
             f"source      {report.get('source', '?')} ({report.get('kind', '?')})"]
    lines.append("sources     " + ", ".join(
        f"{s}: {n}" for s, n in idx.groupby("source")["record_id"].nunique().items()))
    lines.append("splits      " + ", ".join(
        f"{s}: {int((idx['split'] == s).sum())}" for s in SPLITS) + f" ({corpus.split_method})")
    lines.append(f"leads       {int(corpus.lead_mask.all(axis=1).sum())} windows with all 12 leads")
    band = "off" if cfg.band is None else f"{cfg.band[0]}-{cfg.band[1]} Hz (order {cfg.filter_order})"
    lines.append(f"preprocess  {cfg.fs:g} Hz, band-pass {band}, notch {cfg.notch_hz or 'off'}, "
                 f"z-score {'on' if cfg.zscore else 'off'}, window {cfg.window_s:g} s, "
                 f"stride {cfg.stride_s:g} s, short={cfg.short}")
    for task in corpus.classes:
        lines += _task_lines(corpus, task)
    return "\n".join(lines)


def _task_lines(corpus: Corpus, task: str) -> list[str]:
    """``crema info``'s lines for one task: its type, labelled windows and class counts (or the
    target's range), and where a user's labels came from."""
    y, classes, has = corpus.labels(task)
    kind = corpus.task_type(task)
    if kind == "regression":
        values = y[has, 0]
        spread = (f"{values.min():g} to {values.max():g}, mean {values.mean():.4g}" if len(values)
                  else "no values")
        lines = [f"task        {task}: regression of {classes[0]}, {int(has.sum())} labelled windows",
                 f"              {spread}"]
    else:
        counts = ", ".join(f"{c} {int(n)}" for c, n in zip(classes, y.sum(axis=0)))
        noun = "class" if len(classes) == 1 else "classes"
        lines = [f"task        {task}: {len(classes)} {noun}, {int(has.sum())} labelled windows ({kind})",
                 f"              {counts}"]
    info = corpus.task_info.get(task)
    if info:
        lines.append(f"              from {info.get('labels_file')} (key column "
                     f"{info.get('key')}); split: {info.get('split')}")
    return lines
