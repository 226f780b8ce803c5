"""A prepared corpus: windows in a float16 memmap plus an index, read without loading it all.

Folder layout (written once by :func:`crema.data.prepare.prepare_corpus`):

    signals.npy           float16 (N, 12, window)  -- opened with mmap_mode="r"
    lead_mask.npy         bool (N, 12)
    index.csv             one row per window: record_id, source, patient_id, fold, split, window,
                          start_s, original_fs, age, sex, source_id, path (the record's file
                          relative to the source; absent in corpora made before it), labels:<task>...
    index.npz             the same table by column (:mod:`crema.data.corpus_index`), derived
                          from index.csv and rebuilt from it when absent or out of date
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

from ..config import PreprocessConfig
from ..config_io import load_json, read_json_object
from ..errors import CremaError
from .corpus_index import LABEL_PREFIX, load_index, read_index  # noqa: F401 (read_index: public here before)

SPLITS = ("train", "val", "test")


def split_of_fold(fold: int, highest: int = 10, second: int | None = None) -> str:
    """The split of a fold: ``test`` for the ``highest`` fold, ``val`` for ``second`` (default
    the one below it), ``train`` for the others; with the defaults PTB-XL's recommended 1-8 / 9 /
    10, which hashed folds of other sources follow too."""
    fold = int(fold)
    if fold > highest:
        raise ValueError(f"fold {fold} is above the highest fold, {highest}")
    second = highest - 1 if second is None else second
    return "test" if fold == highest else ("val" if fold == second else "train")
INDEX_COLUMNS = ("record_id", "source", "patient_id", "fold", "split", "window", "start_s",
                 "original_fs", "age", "sex", "source_id", "path")
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


def split_method_of(report: dict) -> str:
    """How a corpus's split was made, from its ``prepare_report.json`` contents (corpora made
    before it was recorded: PTB-XL's folds or a hash of the record id)."""
    if "split_method" in report:
        return report["split_method"]
    return SPLIT_PTBXL if report.get("kind") == "ptbxl" else SPLIT_HASH_RECORD


def is_corpus(path: str | os.PathLike) -> bool:
    """True when ``path`` holds every file of a finished corpus."""
    return all((Path(path) / name).is_file() for name in CORPUS_FILES)


class Corpus:
    """A prepared corpus folder.

    Attributes:
        path: the folder.
        signals: float16 memmap ``(N, 12, window)`` (opened lazily, read-only; never pickled).
        lead_mask: bool ``(N, 12)``.
        index: DataFrame, one row per window (see module docstring); built on first use from
            the columnar index, which is what :meth:`rows`, :meth:`labels`, :meth:`column` and
            :meth:`summary` read (a million windows open in a fraction of a second).
        columns: the columnar index (:class:`~crema.data.corpus_index.IndexColumns`).
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
        self.columns, self._index = load_index(self.path)
        self.lead_mask = _load_array(self.path / "lead_mask.npy")
        self.classes: dict[str, list[str]] = read_json_object(self.path / "classes.json", "corpus class list")
        tasks_file = self.path / TASKS_FILE
        self.task_info: dict[str, dict] = (json.loads(tasks_file.read_text())
                                           if tasks_file.is_file() else {})
        self.preprocess: PreprocessConfig = load_json(self.path / "preprocess.json", PreprocessConfig)
        self._signals: np.ndarray | None = None
        self._label_tables: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        if len(self) != len(self.lead_mask):
            raise CremaError(f"{self.path}: index.csv has {len(self)} rows but lead_mask.npy "
                             f"{len(self.lead_mask)}")

    @property
    def index(self) -> pd.DataFrame:
        """The whole index as a DataFrame (``read_index``'s dtypes), built on first use."""
        if self._index is None:
            self._index = self.columns.frame()
        return self._index

    # The memmap is opened per process so that pickling a Corpus (DataLoader workers under
    # spawn) never copies the signals.
    @property
    def signals(self) -> np.ndarray:
        if self._signals is None:
            self._signals = _load_array(self.path / "signals.npy", mmap_mode="r")
            if self._signals.shape[0] != len(self):
                raise CremaError(f"{self.path}: signals.npy has {self._signals.shape[0]} windows "
                                 f"but index.csv {len(self)} rows")
        return self._signals

    def __getstate__(self) -> dict:
        # The DataFrame is rebuilt on demand from the (much smaller) columns.
        state = self.__dict__.copy()
        state["_signals"] = None
        state["_index"] = None
        return state

    def __len__(self) -> int:
        return self.columns.n_rows

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

    def column(self, name: str) -> np.ndarray:
        """Index column ``name`` as a numpy array ``(N,)`` (text as Python strings), without
        building the whole DataFrame.

        Raises:
            CremaError: the corpus has no such column.
        """
        if name not in self.columns.kinds:
            raise CremaError(f"{self.path}: index.csv has no column {name!r}")
        if self._index is not None:
            return self._index[name].to_numpy(dtype=object if self.columns.kinds[name] != "number" else None)
        return self.columns.column(name)

    def rows(self, split: str | Sequence[str] | None = None,
             sources: str | Iterable[str] | None = None,
             exclude_sources: str | Iterable[str] | None = None) -> np.ndarray:
        """Indices (int64, ascending) of the windows in ``split`` (one name or several) and in
        ``sources`` but not in ``exclude_sources``; ``None`` means no filter."""
        keep = np.ones(len(self), dtype=bool)
        if split is not None:
            splits = [split] if isinstance(split, str) else list(split)
            unknown = set(splits) - set(SPLITS)
            if unknown:
                raise CremaError(f"unknown split(s) {sorted(unknown)}; choose from {', '.join(SPLITS)}")
            keep &= self._isin("split", splits)
        if sources is not None:
            keep &= self._isin("source", _as_list(sources))
        if exclude_sources is not None:
            keep &= ~self._isin("source", _as_list(exclude_sources))
        return np.flatnonzero(keep).astype(np.int64)

    def record_groups(self, rows: np.ndarray) -> tuple[list[tuple[str, str]], list[np.ndarray]]:
        """The records of ``rows`` in order of first appearance: each one's ``(source, record_id)``
        and the positions in ``rows`` of its windows (ascending). Grouped on the columnar index's
        integer codes (no frame of the index's text columns), so it stays fast and small at
        millions of windows."""
        rows = np.asarray(rows, dtype=np.int64)
        source, record = self.columns.text("source"), self.columns.text("record_id")
        codes = pd.DataFrame({"source": source.codes[rows], "record": record.codes[rows]})  # two ints a row
        groups = codes.groupby(["source", "record"], sort=False).indices
        names = [(source.values[s], record.values[r]) for s, r in groups]
        return names, list(groups.values())

    def record_keys(self, rows: np.ndarray) -> np.ndarray:
        """``source/record_id`` of each of ``rows`` (object array ``(len(rows),)``), from the
        columnar index."""
        rows = np.asarray(rows, dtype=np.int64)
        source, record = self.columns.text("source"), self.columns.text("record_id")
        sources = np.array(source.values, dtype=object)[source.codes[rows]]
        records = np.array(record.values, dtype=object)[record.codes[rows]]
        return sources + "/" + records

    def _isin(self, name: str, wanted: list[str]) -> np.ndarray:
        """bool ``(N,)``: the rows whose text column ``name`` is one of ``wanted``."""
        column = self.columns.text(name)
        chosen = [code for code, value in enumerate(column.values) if value in set(wanted)]
        return np.isin(column.codes, chosen)

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
        codes, table, has = self._label_table(task)
        if rows is not None:
            codes = codes[np.asarray(rows, dtype=np.int64)]
        return table[codes], list(self.classes[task]), has[codes]

    def _label_table(self, task: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(codes (N,), Y per distinct cell (V, K), has_label per distinct cell (V,))`` of the
        ``labels:<task>`` column: each distinct cell is parsed once, whatever ``N``."""
        self._check_task(task)
        if task not in self._label_tables:
            column = self.columns.text(LABEL_PREFIX + task)
            cells = np.asarray(column.values, dtype=object)
            if self.task_type(task) == "regression":
                table, has = _regression_values(cells), cells != ""
            else:
                table, has = _multi_hot(cells, list(self.classes[task]), self.path, task)
            self._label_tables[task] = (column.codes, table, has)
        return self._label_tables[task]

    def label_counts(self, task: str) -> tuple[np.ndarray, int]:
        """``(sum of Y over all windows (K,), labelled windows)``, without the ``(N, K)`` array
        (for a regression task ``Y``'s sum is the sum of the values)."""
        codes, table, has = self._label_table(task)
        per_cell = np.bincount(codes, minlength=len(table)).astype(np.float64)
        return per_cell @ table.astype(np.float64), int(per_cell[has].sum())

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


def _multi_hot(cells: np.ndarray, classes: list[str], where: Path, task: str
               ) -> tuple[np.ndarray, np.ndarray]:
    """``(Y (n, K) float32, has_label (n,) bool)`` from ``labels:<task>`` cells of
    ``|``-joined class names (``""`` = no label, :data:`LABEL_NONE` = labelled, no class)."""
    column = {name: i for i, name in enumerate(classes)}
    y = np.zeros((len(cells), len(classes)), dtype=np.float32)
    for i, cell in enumerate(cells):
        if cell and cell != LABEL_NONE:
            try:
                y[i, [column[name] for name in cell.split(LABEL_SEP)]] = 1.0
            except KeyError as exc:
                raise CremaError(f"{where / 'index.csv'}: task {task!r} names class {exc.args[0]!r}, "
                                 "which classes.json does not list") from None
    return y, y.any(axis=1) | (cells == LABEL_NONE)


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
    """The text ``crema info`` prints (from the columnar index: no DataFrame is built)."""
    report = corpus.report
    cfg = corpus.preprocess
    per_source = _records_per_source(corpus)
    split = corpus.columns.text("split")
    split_counts = dict(zip(split.values, np.bincount(split.codes, minlength=len(split.values))))
    lines = [f"corpus      {corpus.path}",
             f"records     {sum(per_source.values())} "
             f"({report.get('records_skipped', 0)} skipped when prepared)",
             f"windows     {len(corpus)} x 12 leads x {cfg.window} samples (float16)",
             f"source      {report.get('source', '?')} ({report.get('kind', '?')})"]
    lines.append("sources     " + ", ".join(f"{s}: {n}" for s, n in per_source.items()))
    lines.append("splits      " + ", ".join(
        f"{s}: {int(split_counts.get(s, 0))}" for s in SPLITS) + f" ({corpus.split_method})")
    lines.append(f"leads       {int(corpus.lead_mask.all(axis=1).sum())} windows with all 12 leads")
    band = "off" if cfg.band is None else f"{cfg.band[0]}-{cfg.band[1]} Hz (order {cfg.filter_order})"
    lines.append(f"preprocess  {cfg.fs:g} Hz, band-pass {band}, notch {cfg.notch_hz or 'off'}, "
                 f"z-score {'on' if cfg.zscore else 'off'}, window {cfg.window_s:g} s, "
                 f"stride {cfg.stride_s:g} s, short={cfg.short}")
    for task in corpus.classes:
        lines += _task_lines(corpus, task)
    return "\n".join(lines)


def _records_per_source(corpus: Corpus) -> dict[str, int]:
    """``{source: distinct record ids}``, sources sorted by name; a record is a distinct
    ``(source, record_id)`` pair, counted on the codes of the two columns."""
    source, record = corpus.columns.text("source"), corpus.columns.text("record_id")
    n_ids = max(1, len(record.values))
    pairs = source.codes.astype(np.int64) * n_ids + record.codes
    if len(source.values) * n_ids <= 8 * len(pairs) + 1024:  # a flag per possible pair beats sorting
        seen = np.zeros(len(source.values) * n_ids, dtype=bool)
        seen[pairs] = True
        pairs = np.flatnonzero(seen)
    else:
        pairs = np.unique(pairs)
    counts = np.bincount(pairs // n_ids, minlength=len(source.values))
    return {name: int(counts[code]) for code, name in sorted(enumerate(source.values), key=lambda cv: cv[1])
            if counts[code]}


def _task_lines(corpus: Corpus, task: str) -> list[str]:
    """``crema info``'s lines for one task: its type, labelled windows and class counts (or the
    target's range), and where a user's labels came from."""
    kind = corpus.task_type(task)
    classes = corpus.classes[task]
    if kind == "regression":
        y, _, has = corpus.labels(task)
        values = y[has, 0]
        spread = (f"{values.min():g} to {values.max():g}, mean {values.mean():.4g}" if len(values)
                  else "no values")
        lines = [f"task        {task}: regression of {classes[0]}, {int(has.sum())} labelled windows",
                 f"              {spread}"]
    else:  # counted per distinct cell: no (windows, classes) array
        sums, labelled = corpus.label_counts(task)
        counts = ", ".join(f"{c} {int(n)}" for c, n in zip(classes, sums))
        noun = "class" if len(classes) == 1 else "classes"
        lines = [f"task        {task}: {len(classes)} {noun}, {labelled} labelled windows ({kind})",
                 f"              {counts}"]
    info = corpus.task_info.get(task)
    if info:
        lines.append(f"              from {info.get('labels_file')} (key column "
                     f"{info.get('key')}); split: {info.get('split')}")
    return lines
