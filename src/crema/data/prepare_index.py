"""The rows ``crema prepare`` writes into a corpus's ``index.csv``: one per window of each record
read, with its fold (the source's own, else a stable hash of its patient or record), its file
relative to the source and its labels (:data:`crema.data.corpus.INDEX_COLUMNS`, then one
``labels:<task>`` column per task).
"""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import PreprocessConfig
from . import cinc
from .corpus import INDEX_COLUMNS, LABEL_PREFIX, LABEL_SEP, split_of_fold
from .prepare_pool import RecordResult
from .sources import RecordJob, Source

# index.csv columns that are numbers; every other column is text. Fixed, so that the rows of
# each chunk are written the same way whatever else the chunk holds.
INDEX_NUMBERS = {"fold": "int64", "window": "int64", "start_s": "float64", "original_fs": "float64",
                 "age": "float64"}


def index_columns(src: Source) -> list[str]:
    """The ``index.csv`` header: :data:`~crema.data.corpus.INDEX_COLUMNS`, then ``labels:<task>``."""
    return list(INDEX_COLUMNS) + [LABEL_PREFIX + t for t in src.classes]


def source_root(source: Path) -> Path:
    """The folder that the index's ``path`` column is relative to."""
    return source if source.is_dir() else source.parent


def index_frame(ok: list[RecordResult], src: Source, cfg: PreprocessConfig, root: Path) -> pd.DataFrame:
    """One row per window with the columns of ``corpus.INDEX_COLUMNS`` then ``labels:<task>``;
    the number columns always of :data:`INDEX_NUMBERS`' types (missing ages NaN)."""
    columns: dict[str, list] = {name: [] for name in index_columns(src)}
    for r in ok:
        job = r.job
        patient = job.patient_id or str(r.meta.get("patient_id") or "")
        labels = job.labels if job.labels is not None else (src.labeler(r.meta) if src.labeler else {})
        age = job.age if job.age is not None else r.meta.get("age")
        sex = job.sex if job.sex is not None else r.meta.get("sex")
        fold = _hash_fold(job, patient)
        record = dict(record_id=job.record_id, source=job.source, patient_id=patient,
                      fold=fold, split=split_of_fold(fold), original_fs=r.fs,
                      age=age, sex=sex or "", source_id=job.source_id or f"{job.source}:{job.record_id}",
                      path=relative_path(job, root),
                      **{LABEL_PREFIX + task: LABEL_SEP.join(labels.get(task, [])) for task in src.classes})
        n = len(r.starts)
        for name, value in record.items():
            columns[name].extend([value] * n)
        columns["window"].extend(range(n))
        columns["start_s"].extend(round(float(start) / cfg.fs, 6) for start in r.starts)
    for name, dtype in INDEX_NUMBERS.items():  # None (an unknown age) becomes NaN
        columns[name] = np.array(columns[name], dtype=dtype)
    return pd.DataFrame(columns)


def _hash_fold(job: RecordJob, patient: str) -> int:
    """The job's own fold (PTB-XL), else a stable hash of its patient when known (so that one
    patient's records share a split), else of the record."""
    if job.fold is not None:
        return job.fold
    if patient:
        return cinc.hash_fold(f"{job.source}:patient:{patient}")
    return cinc.hash_fold(job.source_id or job.record_id)


def relative_path(job: RecordJob, root: Path) -> str:
    """The record's file relative to the source folder (``file[row]`` for a stack row): what a
    labels file may name it by."""
    name = os.path.basename(job.path)
    if job.row is not None:
        return f"{name}[{job.row}]"
    # realpath of folder/name is realpath(folder)/name unless name is a link: the folders of a
    # data set's records are few, so each is resolved once (os.path: pathlib costs more here)
    resolved = (os.path.realpath(job.path) if os.path.islink(job.path)
                else os.path.join(resolved_folder(os.path.dirname(job.path)), name))
    inside = os.path.join(str(root), "")
    return Path(resolved[len(inside):]).as_posix() if resolved.startswith(inside) else name


@lru_cache(maxsize=4096)
def resolved_folder(folder: str) -> str:
    return os.path.realpath(folder)
