"""``crema prepare``: read, preprocess and store a whole data set once, as a corpus folder.

What is read comes from :mod:`crema.data.sources` (a PTB-XL root, a CinC folder, any folder
of records, or a stack file: one job per record, and how each is labelled); this module turns
the jobs into the corpus.

How it stays safe and small:

* records are processed in chunks by a process pool (:mod:`crema.data.prepare_pool`); each
  worker writes its chunk's windows to a small ``.npy`` in the hidden folder ``.DIR.partial``
  (:mod:`crema.data.prepare_progress`), so results never travel through pipes; the parent writes
  the chunk's index rows (:mod:`crema.data.prepare_index`) and lead masks beside it, then marks
  the chunk finished. It holds one chunk's results at a time, whatever the
  number of records; at the end the chunks are copied in order into ``signals.npy``,
  ``lead_mask.npy`` and ``index.csv``;
* a run stopped at any point (Ctrl-C, SIGTERM, a kill) leaves ``.DIR.partial``; running the same
  command again (same settings, same records) resumes it: finished chunks are not read again,
  and the corpus is byte-for-byte the one an uninterrupted run writes. Other settings start
  afresh; an error (a bad source, a full disk) removes the folder;
* a bad record is skipped and listed with its reason in ``prepare_report.json``;
* the finished folder is renamed into place, so ``DIR`` is either absent or complete; a run on a
  finished corpus with the same settings does nothing (``force`` rebuilds it, but never a folder
  that holds files of the user's own);
* one run at a time writes ``DIR`` (a lock beside it); a second one stops with a clear error;
* pool workers leave Ctrl-C to the parent, which stops the pool (SIGTERM does the same, see
  :mod:`crema.cli`), and exit by themselves when the parent is killed outright
  (:mod:`crema.data.prepare_pool`).
"""
from __future__ import annotations

import math
import os
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .. import __version__
from ..atomic import atomic_path
from ..interrupts import raise_if_stopped
from ..config import STANDARD_LEADS, PreprocessConfig
from ..config_io import check_config, load_json, save_json, to_dict
from ..errors import CremaError, WriteError
from ..locking import output_lock
from .corpus import CORPUS_FILES, LABEL_PREFIX, SPLIT_HASH_PATIENT, SPLIT_HASH_RECORD, SPLIT_PTBXL, TASKS_FILE, is_corpus
from .corpus_index import INDEX_CSV, INDEX_NPZ, index_from_csv
from .labels_csv import LabelsRequest, label_corpus, plan_labels
from .prepare_index import index_columns, index_frame, resolved_folder, source_root
from .prepare_pool import RecordResult, pool_map, process_chunk
from .prepare_progress import PartialBuild
from .rates import check_fs
from .sources import RecordJob, Source, build_source, detect_source

PARTIAL_TAG = ".partial-"  # the temporary folders of versions before .DIR.partial (removed)
MAX_CHUNK = 64  # records per chunk at most: caps a chunk's memory


# ----------------------------------------------------------------------------- the driver

def prepare_corpus(source: str | os.PathLike, out: str | os.PathLike,
                   cfg: PreprocessConfig = PreprocessConfig(), workers: int | None = None,
                   input_fs: float | None = None, ptbxl_rate: int | None = None,
                   limit: int | None = None, force: bool = False, cinc_year: int = 2021,
                   progress: bool = True, labels: list[str | os.PathLike] | None = None,
                   task: str | None = None, task_type: str | None = None, split_seed: int = 0,
                   units: str | None = None) -> dict:
    """Prepare ``source`` into the corpus folder ``out`` and return its report.

    With ``labels`` (CSV files, :mod:`crema.data.labels_csv`), their tasks are written into the
    corpus; when ``out`` already holds this corpus, only the labels are (re)written and no signal
    is read. A freshly built corpus is kept when its labels then fail (the error says so), so
    that the run after a fix of the file reads no signal either.

    Args:
        source: PTB-XL root, CinC folder, folder or file of records, or ``.npy`` stack.
        out: the corpus folder to create (its parent is created when missing).
        cfg: preprocessing.
        workers: processes (default ``min(4, cpu count)``; 1 = in this process).
        input_fs: sampling rate of ``.npy``/``.csv`` inputs (required for them).
        ptbxl_rate: 100 or 500 Hz PTB-XL records (default 500 when present).
        limit: only the first ``limit`` records (in sorted order).
        force: rebuild even if ``out`` already holds this corpus.
        cinc_year: 2021 or 2020 challenge scored classes.
        progress: show a tqdm bar.
        labels: labels CSV files, one task each.
        task: the task name of a single labels file (default its file name without ``.csv``).
        task_type: ``multilabel``, ``multiclass`` or ``regression`` (default: inferred).
        split_seed: seed of the stratified patient-grouped split made for labels without one.
        units: voltage unit of plain-array and text inputs (default mV).

    Returns:
        The ``prepare_report.json`` contents (``up_to_date: True`` when no signal was read) and,
        with ``labels``, ``labels_added``: ``{task: summary}`` (:func:`labels_csv.summary_lines`).
    """
    t0 = time.perf_counter()
    check_config(cfg)
    if input_fs is not None:
        input_fs = check_fs(input_fs, "input_fs")
    source, out = Path(source).resolve(), Path(out).resolve()
    requests = plan_labels(labels, task, task_type) if labels else []  # a bad file fails before any read
    kind = detect_source(source)
    request = dict(source=str(source), kind=kind, preprocess=to_dict(cfg), input_fs=input_fs,
                   ptbxl_rate=ptbxl_rate, limit=limit, cinc_year=cinc_year)
    if units is not None:  # only when given, so that corpora made before the option stay up to date
        request["units"] = units
    # Held from the up-to-date check to the final rename: a second run with other settings
    # would otherwise pass the same check and then silently replace this run's corpus.
    with output_lock(out, "crema prepare"):
        if _up_to_date(out, request, force):
            return {**_add_labels(out, requests, split_seed, built=False), "up_to_date": True}
        src = build_source(source, kind, ptbxl_rate=ptbxl_rate, input_fs=input_fs, cinc_year=cinc_year,
                           units=units)
        jobs = src.jobs[:limit] if limit is not None else src.jobs
        if not jobs:
            raise CremaError(f"{source}: no records to prepare")
        workers = default_workers() if workers is None else max(1, int(workers))
        _remove_stale_partials(out)
        _build_in_temporary(out, src, jobs, cfg, request, workers, progress, t0)
        return _add_labels(out, requests, split_seed, built=True)


def _add_labels(out: Path, requests: list[LabelsRequest], seed: int, built: bool) -> dict:
    """Write the labels tasks into the corpus ``out`` (lock held) and return its report."""
    if requests:
        try:
            added = label_corpus(out, requests, seed)
        except CremaError as exc:
            if not built:
                raise
            raise CremaError(f"{exc} (the corpus itself was written to {out} without these labels: fix "
                             "the file and run the same command again, which reads no signal)") from None
    report = load_json(out / "prepare_report.json")
    return {**report, "labels_added": added} if requests else report


def _build_in_temporary(out: Path, src: Source, jobs: list[RecordJob], cfg: PreprocessConfig,
                        request: dict, workers: int, progress: bool, t0: float) -> dict:
    """Build the corpus in ``.DIR.partial``, resuming what an interrupted run of the same request
    on the same records left there, and rename it to ``out``, so ``out`` is never half-written.
    An interruption (Ctrl-C, SIGTERM; a kill leaves it anyway) keeps the folder for the next run;
    an error (a bad source, a full disk, a bug) removes it."""
    try:
        build = PartialBuild.open(out, request, jobs, _chunk_size(len(jobs), workers))
    except OSError as exc:
        raise (exc if isinstance(exc, WriteError) else WriteError(out, exc)) from None
    try:
        if not build.complete:
            _run_chunks(build, jobs, src, cfg, workers, progress, source_root(Path(request["source"])))
            report = _write_corpus(build, src, cfg, request, workers)
            report["seconds"] = round(time.perf_counter() - t0, 3)
            save_json(build.folder / "prepare_report.json", report)  # last: the corpus is complete
        build.finish(out)
    except BaseException as exc:
        if isinstance(exc, Exception):
            build.discard()  # nothing half-written stays behind an error (a full disk included)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise WriteError(out, exc) from None  # name the corpus, not a temporary chunk file
        raise
    return load_json(out / "prepare_report.json")


def default_workers() -> int:
    """``min(4, cpu count)``."""
    return max(1, min(4, os.cpu_count() or 1))


def _up_to_date(out: Path, request: dict, force: bool) -> bool:
    """True when ``out`` already holds the corpus ``request`` describes; errors when it holds
    something else that ``force`` may not replace."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise CremaError(f"{out}: exists and is not a folder")
    if not is_corpus(out):
        if any(out.iterdir()):
            raise CremaError(f"{out}: exists and is not a CREMA corpus; refusing to overwrite it")
        return False
    previous = load_json(out / "prepare_report.json").get("request")
    if force:
        foreign = sorted(p.name for p in out.iterdir() if p.name not in (*CORPUS_FILES, TASKS_FILE, INDEX_NPZ))
        if foreign:
            raise CremaError(f"{out}: holds files that are not part of a corpus "
                             f"({', '.join(foreign[:5])}{' ...' if len(foreign) > 5 else ''}); "
                             "--force would delete them: move them away or choose another --out")
        return False
    if previous == request:
        return True
    changed = sorted(k for k in set(request) | set(previous or {})
                     if (previous or {}).get(k) != request.get(k))
    raise CremaError(f"{out}: holds a corpus prepared with different settings ({', '.join(changed)}); "
                     "pass --force to rebuild it")


def _remove_stale_partials(out: Path) -> None:
    """Delete temporary folders left by runs that were killed (their process is gone)."""
    for stale in out.parent.glob(f".{out.name}{PARTIAL_TAG}*"):
        pid = stale.name[len(f".{out.name}{PARTIAL_TAG}"):].split("-")[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(stale, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _chunk_size(n_jobs: int, workers: int) -> int:
    """Records per chunk: several chunks per worker keep the pool busy to the end; at most
    :data:`MAX_CHUNK`. A resumed run keeps the size its first run chose."""
    return max(1, min(MAX_CHUNK, math.ceil(n_jobs / (workers * 8))))


def _run_chunks(build: PartialBuild, jobs: list[RecordJob], src: Source, cfg: PreprocessConfig,
                workers: int, progress: bool, root: Path) -> None:
    """Process every chunk that ``build`` has not finished (in a pool when ``workers > 1``) and
    record each as it finishes (``root``: the folder record paths are given relative to)."""
    size = build.chunk_size
    resolved_folder.cache_clear()  # folders are resolved once per run, never from a past one
    todo = [(i, jobs[i * size:(i + 1) * size], str(build.chunk_file(i)))
            for i in range(build.n_chunks) if i not in build.done]
    bar = tqdm(total=len(jobs), initial=len(jobs) - sum(len(chunk) for _, chunk, _ in todo), unit="rec",
               desc="prepare", disable=not progress, file=sys.stderr, dynamic_ncols=True)
    try:
        if workers == 1:
            finished = ((i, process_chunk(chunk, cfg, path)) for i, chunk, path in todo)
        else:
            finished = pool_map(todo, cfg, workers)
        for i, results in finished:
            _record_chunk(build, i, results, src, cfg, root)
            bar.update(len(results))
            raise_if_stopped()  # a Ctrl-C or SIGTERM whose exception C code swallowed stops here
    finally:
        bar.close()


def _record_chunk(build: PartialBuild, i: int, results: list[RecordResult], src: Source,
                  cfg: PreprocessConfig, root: Path) -> None:
    """Write chunk ``i``'s index rows (``.csv``, no header) and lead masks (``.mask.npy``, bool
    ``(W, 12)``) beside its windows, then mark it finished."""
    ok = [r for r in results if r.error is None]
    index_frame(ok, src, cfg, root).to_csv(build.chunk_file(i, ".csv"), index=False, header=False)
    masks = [np.repeat(r.lead_mask[None], r.n_windows, axis=0) for r in ok]
    np.save(build.chunk_file(i, ".mask.npy"),
            np.concatenate(masks).astype(bool) if masks else np.zeros((0, len(STANDARD_LEADS)), dtype=bool))
    build.record(i, dict(records=len(results), windows=sum(r.n_windows for r in ok),
                         skipped=[dict(record=r.job.key, reason=r.error) for r in results if r.error is not None]))


def _write_corpus(build: PartialBuild, src: Source, cfg: PreprocessConfig, request: dict,
                  workers: int) -> dict:
    """Assemble the finished chunks into the corpus files inside ``build.folder``; returns the
    report (without ``seconds``)."""
    outcomes = [build.outcome(i) for i in range(build.n_chunks)]
    n_windows = sum(o["windows"] for o in outcomes)
    skipped = [item for o in outcomes for item in o["skipped"]]
    if n_windows == 0:
        reasons = "; ".join(f"{item['record']}: {item['reason']}" for item in skipped[:5])
        raise CremaError(f"{request['source']}: no record could be prepared ({reasons})")
    _assemble_signals(build, [o["windows"] for o in outcomes], cfg.window)
    np.save(build.folder / "lead_mask.npy",
            np.concatenate([np.load(build.chunk_file(i, ".mask.npy")) for i in range(build.n_chunks)]))
    index = _assemble_index(build, src)
    classes = {task: names for task, names in src.classes.items()
               if index[LABEL_PREFIX + task].ne("").any()}
    save_json(build.folder / "classes.json", classes)
    save_json(build.folder / "preprocess.json", cfg)
    report = _report(src, sum(o["records"] for o in outcomes), skipped, index, request, workers)
    report["records_resumed"] = sum(outcomes[i]["records"] for i in build.done)
    return report


def _assemble_signals(build: PartialBuild, windows: list[int], window: int) -> None:
    """Copy the chunk files in order into one float16 ``(N, 12, window)`` ``signals.npy``, each
    chunk's file deleted once copied and recorded (a resumed run continues after the last one).
    Plain positioned writes, one chunk in memory at a time: no memmap pages stay counted in the
    process, and none is forced to disk (the page cache outlives a killed process)."""
    path, n_windows = build.folder / "signals.npy", sum(windows)
    shape = (n_windows, len(STANDARD_LEADS), window)
    if build.assembled == 0:
        created = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape)
        del created  # only the header and the file's size; the windows follow
    elif not path.is_file() or np.load(path, mmap_mode="r").shape != shape:
        raise CremaError(f"{build.folder}: signals.npy does not hold the windows copied so far; "
                         "run the command again to start over")
    bytes_per_window = len(STANDARD_LEADS) * window * np.dtype(np.float16).itemsize
    data_start = path.stat().st_size - n_windows * bytes_per_window  # after the .npy header
    offsets = np.concatenate([[0], np.cumsum(windows)]).astype(np.int64)
    with open(path, "r+b") as out:
        for i in range(build.n_chunks):
            chunk_file = build.chunk_file(i)
            if i >= build.assembled:
                chunk = np.load(chunk_file)
                if chunk.shape != (windows[i], len(STANDARD_LEADS), window) or chunk.dtype != np.float16:
                    raise CremaError(f"internal error: chunk {i} holds {chunk.shape} {chunk.dtype}, "
                                     f"expected {windows[i]} windows")
                out.seek(data_start + int(offsets[i]) * bytes_per_window)
                out.write(np.ascontiguousarray(chunk).data)
                out.flush()  # into the page cache before the copy is recorded
                build.set_assembled(i + 1)
            chunk_file.unlink(missing_ok=True)


def _assemble_index(build: PartialBuild, src: Source) -> pd.DataFrame:
    """``index.csv`` (the header, then every chunk's rows in order) and ``index.npz``; returns
    the index as read back."""
    header = pd.DataFrame(columns=index_columns(src)).to_csv(index=False)
    with atomic_path(build.folder / INDEX_CSV) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(header.encode("utf-8"))
            for i in range(build.n_chunks):
                with open(build.chunk_file(i, ".csv"), "rb") as rows:
                    shutil.copyfileobj(rows, fh)
    return index_from_csv(build.folder, strict=True)[1]


def _split_method(src: Source, index: pd.DataFrame) -> str:
    if src.kind == "ptbxl":
        return SPLIT_PTBXL
    return SPLIT_HASH_PATIENT if index["patient_id"].ne("").any() else SPLIT_HASH_RECORD


def _report(src: Source, records: int, skipped: list[dict], index: pd.DataFrame, request: dict,
            workers: int) -> dict:
    """The ``prepare_report.json`` contents (``records`` in all, ``skipped`` of them with why)."""
    per_source = {s: dict(records=int(g["record_id"].nunique()), windows=int(len(g)))
                  for s, g in index.groupby("source")}
    return dict(
        complete=True, source=request["source"], kind=src.kind, name=src.name,
        records_total=records, records_read=records - len(skipped),
        records_skipped=len(skipped), windows=int(len(index)), per_source=per_source,
        splits={s: int((index["split"] == s).sum()) for s in ("train", "val", "test")},
        split_method=_split_method(src, index),
        skipped=skipped, workers=workers, request=request, crema_version=__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
