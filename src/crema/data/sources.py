"""The sources ``crema prepare`` reads: what kind a path is, the records in it (one
:class:`RecordJob` each, sorted) and how their labels are found.

Kinds (detected by :func:`detect_source`):

* ``ptbxl``: a PTB-XL root (``ptbxl_database.csv``), labels for every PTB-XL task, folds from
  ``strat_fold``;
* ``cinc``: a PhysioNet/CinC folder (one source folder, or a root with one folder per source)
  of ``.hea`` + ``.mat``, label task ``cinc-scored``;
* ``files``: any folder (or single file) of records that :func:`readers.read_record` handles;
* ``stack``: a ``.npy``/``.npz`` stack ``(N, 12, T)`` or ``(N, T, 12)`` at ``--input-fs`` (ids, and
  patient ids when it has a ``patient_id`` column, from ``ecg_ids.csv`` beside it), or an HDF5 file
  in the CODE-15% layout (:mod:`crema.data.stacks`).

``units`` (``--units``) is the voltage unit of plain arrays, text tables and stacks (default mV).

Jobs and labelers travel to the pool workers of :mod:`crema.data.prepare_pool`, so they are plain
dataclasses that pickle; :func:`load_job` is what a worker calls to read one.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..errors import CremaError, printable
from . import cinc, ptbxl
from .corpus import LABEL_PREFIX
from .inputs import InputKind, classify_input, file_kind
from .readers import find_records, read_record
from .recording import Recording
from .stacks import IDS_FILE, RecordStack
from .units import mv_per_unit

SOURCE_KINDS = ("ptbxl", "cinc", "files", "stack")


@dataclass
class RecordJob:
    """One record to read: where it is and what is already known about it."""

    key: str                     # how the report names it (a path or "file.npy[row]")
    record_id: str
    source: str
    path: str
    row: int | None = None       # row of a .npy stack
    input_fs: float | None = None
    patient_id: str = ""
    fold: int | None = None      # None = stable hash of the record id
    age: float | None = None     # None = from the file's header
    sex: str | None = None
    source_id: str = ""
    labels: dict[str, list[str]] | None = None  # None = derived from the file (CinC # Dx)
    units: str | None = None     # voltage unit of plain arrays and stacks (None = mV)


@dataclass
class Source:
    """A detected source: its kind, name, the jobs, and how to label what is read."""

    kind: str
    name: str
    jobs: list[RecordJob]
    classes: dict[str, list[str]]            # task -> classes, fixed before reading
    labeler: Callable[[dict], dict[str, list[str]]] | None = None  # meta -> task labels


# ----------------------------------------------------------------------------- detection

def detect_source(path: str | os.PathLike) -> str:
    """The kind of ``path``: ``ptbxl``, ``cinc``, ``files`` or ``stack`` (what a file or folder is:
    :func:`crema.data.inputs.classify_input`)."""
    path = Path(path)
    kind = classify_input(path)
    if kind is InputKind.CORPUS:
        raise CremaError(f"{path}: already a prepared corpus (crema prepare's output); prepare the original "
                         "records it came from, or use it as it is (crema info, probe, pretrain, embed)")
    if not kind.is_file and kind is not InputKind.FOLDER:
        raise CremaError(f"{path}: no such file or folder")
    if kind.is_file:
        return "stack" if kind.is_stack else "files"
    if ptbxl.is_ptbxl_root(path):
        return "ptbxl"
    return "cinc" if cinc.is_cinc_folder(find_records(path)) else "files"


def build_source(path: Path, kind: str, ptbxl_rate: int | None = None, input_fs: float | None = None,
                 cinc_year: int = 2021, units: str | None = None) -> Source:
    """The jobs (sorted, one per record) and label setup for a detected source."""
    if kind == "ptbxl":
        return _ptbxl_source(path, ptbxl_rate)
    if kind == "cinc":
        return _cinc_source(path, cinc_year)
    if kind == "stack":
        return _stack_source(path, input_fs, units)
    if kind == "files":
        return _files_source(path, input_fs, cinc_year, units)
    raise CremaError(f"unknown source kind {kind!r}; choose from {', '.join(SOURCE_KINDS)}")


def _ptbxl_source(root: Path, rate: int | None) -> Source:
    index = ptbxl.load_ptbxl_index(root, rate)
    tasks = [c[len(LABEL_PREFIX):] for c in index.columns if c.startswith(LABEL_PREFIX)]
    label_lists = {t: index[LABEL_PREFIX + t].tolist() for t in tasks}
    classes = {t: sorted({n for names in label_lists[t] for n in names}) for t in tasks}
    jobs = [RecordJob(key=str(r.path), record_id=r.record_id, source="ptbxl", path=str(r.path),
                      patient_id=r.patient_id, fold=int(r.fold), age=r.age, sex=r.sex,
                      source_id=r.source_id, labels={t: label_lists[t][i] for t in tasks})
            for i, r in enumerate(index[["path", "record_id", "patient_id", "fold", "age", "sex",
                                         "source_id"]].itertuples(index=False))]
    return Source("ptbxl", "ptbxl", jobs, classes)


def _cinc_source(root: Path, year: int) -> Source:
    code_to_class, classes = cinc.scored_classes(year, _mapping_root(root))
    jobs = []
    for header in find_records(root):
        record_id = header.stem
        source = cinc.cinc_source(record_id, header.parent.name)
        jobs.append(RecordJob(key=printable(str(header)), record_id=record_id, source=source,
                              path=str(header), source_id=cinc.cinc_source_id(record_id, source)))
    jobs.sort(key=lambda j: (j.source, j.record_id))
    labeler = _DxLabeler(code_to_class)
    return Source("cinc", root.name, jobs, {cinc.TASK: classes}, labeler)


def _mapping_root(root: Path) -> Path:
    """The CinC root holding the mapping CSVs (the folder itself or, for one source folder, its parent)."""
    return root if any(root.glob("challenge*_dx_mapping.csv")) else root.parent


@dataclass
class _DxLabeler:
    """CinC ``# Dx`` codes -> ``{"cinc-scored": [classes]}`` (a class, so that it pickles)."""

    code_to_class: dict[str, str]

    def __call__(self, meta: dict) -> dict[str, list[str]]:
        return {cinc.TASK: cinc.dx_labels(meta.get("dx"), self.code_to_class)}


def _stack_source(path: Path, input_fs: float | None, units: str | None = None) -> Source:
    if input_fs is None and file_kind(path) is InputKind.NPY:
        raise CremaError(f"{path}: a .npy stack carries no sampling rate; pass --input-fs HZ")
    stack = RecordStack(path, fs=input_fs)
    try:
        n, ids, fs = len(stack), stack.ids, stack.fs
    finally:
        stack.close()
    name = path.parent.name or path.stem
    patients = _stack_patients(path, n)
    jobs = []
    for row, record_id in enumerate(ids):
        source_id = (ptbxl.ptbxl_source_id(record_id)
                     if name.startswith("ptbxl") and record_id.isdigit() else f"{name}:{record_id}")
        jobs.append(RecordJob(key=f"{path.name}[{row}]", record_id=record_id, source=name,
                              path=str(path), row=row, input_fs=fs, source_id=source_id,
                              labels={}, patient_id=patients[row], units=units))
    return Source("stack", name, jobs, {})


def _stack_patients(path: Path, n: int) -> list[str]:
    """Patient ids of a ``.npy`` stack's rows from the ``patient_id`` column of the
    ``ecg_ids.csv`` beside it ("" where unknown): records of one patient then share a split."""
    beside = path.parent / IDS_FILE
    if file_kind(path) is not InputKind.NPY or not beside.is_file():
        return [""] * n
    try:
        table = pd.read_csv(beside, dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError):
        return [""] * n  # the ids themselves are read (and refused, if need be) by the stack
    if "patient_id" not in table.columns or len(table) != n:
        return [""] * n
    return table["patient_id"].str.strip().tolist()


def _files_source(path: Path, input_fs: float | None, year: int, units: str | None = None) -> Source:
    root = path if path.is_dir() else path.parent
    records = find_records(path)
    if not records:
        raise CremaError(f"{path}: no ECG records found")
    name = root.name or "files"
    stems = [p.stem for p in records]
    unique = len(set(stems)) == len(stems)
    jobs = []
    for p in records:
        # Ids are file stems unless two files share one, then paths relative to the folder.
        record_id = p.stem if unique else p.relative_to(root).with_suffix("").as_posix()
        jobs.append(RecordJob(key=printable(str(p)), record_id=record_id, source=name, path=str(p),
                              input_fs=input_fs, source_id=f"{name}:{record_id}", units=units))
    code_to_class, classes = cinc.scored_classes(year)
    return Source("files", name, jobs, {cinc.TASK: classes}, _DxLabeler(code_to_class))


# ----------------------------------------------------------------------------- reading a job

def load_job(job: RecordJob) -> Recording:
    """The recording a job stands for (a file, or one row of a stack)."""
    if job.row is None:
        return read_record(job.path, fs=job.input_fs, units=job.units)
    return _stack_row(job)


def _stack_row(job: RecordJob) -> Recording:
    """One row of a stack file (:mod:`crema.data.stacks`: a seek and a read, no memmap, so that
    memory does not grow with the stack)."""
    stack = RecordStack(job.path, fs=job.input_fs, block_bytes=0)
    try:
        signal = stack.read(job.row, job.row + 1)[0]
    finally:
        stack.close()
    if not np.isfinite(signal).all():
        raise CremaError(f"{job.key}: signal contains NaN or inf values")
    if job.units is not None:
        signal = signal * np.float32(mv_per_unit(job.units, job.key, "the signal"))
    return Recording(signal=signal, fs=stack.fs, leads=stack.leads, record_id=job.record_id,
                     meta={"age": None, "sex": None})
