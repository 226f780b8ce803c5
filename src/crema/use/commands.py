"""CLI subcommands for using a model: ``embed``, ``predict``, ``plot``, ``embed-map``, ``export``,
``export-onnx``.

Batch commands (``embed``, ``predict``) take files, folders and globs in any format CREMA reads,
stacks (``.npy``/``.npz`` ``(N, C, T)`` or ``(N, T, C)``, HDF5 in the CODE-15% layout) and prepared
corpus folders (``DIR`` or ``DIR:split``); they write one row per record (its windows averaged) or,
with ``--per-window``, one row per 10 s window. They show a progress bar, skip a bad record (listed
on stderr and in ``OUT.errors.csv`` with its reason) and go on with the rest, and write their
outputs atomically every ``--chunk`` records (less often once the output is large, see
:func:`run_batch`). A re-run with the same ``--out`` skips the records already in the output (the
output's ``.run.json`` sidecar records which checkpoint and options made it). Exit status 0 when
every record succeeded, 1 when any failed (the outputs then hold the records that did not).

Only the standard library, ``config`` and ``errors`` are imported at the top: the CLI imports every
commands module to build its parser, so each command imports its torch/pandas/scipy machinery
inside its run function, and ``crema --help`` or a typo stays fast.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..config import atomic_write_text
from ..data.leads import duplicate_leads
from ..errors import CremaError, ReadError, printable
from .inputs import InputItem, check_fs, collect_inputs
from ..atomic import atomic_path, make_parent

DEFAULT_CHUNK = 256  # records per flush of a batch command's outputs
# Once the output is large, flush only after it has grown by this fraction: each flush rewrites the
# whole output, so flushing every chunk would cost time quadratic in the number of records.
FLUSH_GROWTH = 0.1
METHOD_NAMES = {"pca": "PCA", "tsne": "t-SNE"}


def register(subparsers: Any) -> None:
    _register_embed(subparsers)
    _register_predict(subparsers)
    _register_plot(subparsers)
    _register_embed_map(subparsers)
    _register_export(subparsers)
    _register_export_onnx(subparsers)


# ============================================================================ shared options

def _add_input_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fs", type=float,
                   help="sampling rate (Hz) of raw arrays and stacks that carry none (.npy/.csv; HDF5 "
                        "without one is taken as CODE-15%%'s 400 Hz)")
    p.add_argument("--leads", help="comma-separated lead names of raw array rows (default the standard 12)")
    p.add_argument("--dataset", help="the array of an .npz / dataset of an HDF5 stack holding the signals "
                                     "(default: signal, signals, ..., tracings)")
    p.add_argument("--ids", help="record ids of stack rows: a .csv/.txt file (one per row) or the name of an "
                                 "array in the .npz/HDF5 (default: exam_id, record_id, ... when present)")


def _add_batch_options(p: argparse.ArgumentParser) -> None:
    _add_input_options(p)
    # 8 = crema.model.inference.DEFAULT_BATCH, written out to keep torch out of the CLI's start
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default 8; on a CPU "
                   "small chunks beat big batches)")
    p.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--chunk", type=int, default=DEFAULT_CHUNK,
                   help=f"records between output flushes (default {DEFAULT_CHUNK})")
    p.add_argument("--overwrite", action="store_true", help="start again instead of resuming an existing --out")
    p.add_argument("--per-window", action="store_true",
                   help="one row per 10 s window instead of one per record (the mean of its windows)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _lead_list(text: str | None) -> list[str] | None:
    """The ``--leads`` names, refusing a lead named twice (which row would be that lead?)."""
    if not text:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    twice = duplicate_leads(names)
    if twice:
        raise CremaError(f"--leads names {', '.join(twice)} more than once ({text})")
    return names


def _note(message: str) -> None:
    tqdm.write(printable(message), file=sys.stderr)


def _failure_row(record_id: str, source: str, reason: str) -> dict:
    """A row of ``OUT.errors.csv``; names that are not valid UTF-8 are shown as ``\\xNN``."""
    return {"record_id": printable(record_id), "source": printable(source), "reason": printable(reason)}


def expand_inputs(inputs: Iterable[str], fs: float | None, leads: list[str] | None,
                  dataset: str | None = None, ids: str | None = None, preprocess=None
                  ) -> tuple[list[InputItem], list[dict]]:
    """Items for every record under ``inputs`` (see :func:`collect_inputs`); an input that does not
    exist or cannot be opened (an unreadable stack, a corpus made with other preprocessing) is a
    failure row. Warnings while opening (an assumed HDF5 rate) become notes on stderr."""
    from ..data.stacks import AssumedRateWarning

    items, failures = [], []
    if fs is not None:
        check_fs(fs)
    for text in inputs:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", AssumedRateWarning)
            try:
                items.extend(collect_inputs(str(text), fs, leads, dataset=dataset, ids=ids,
                                            preprocess=preprocess))
            except CremaError as exc:
                # the row names the input; the message need not say it twice
                reason = str(exc).removeprefix(f"{text}: ").removeprefix(f"{Path(text)}: ")
                failures.append(_failure_row(Path(text).stem, str(text), reason))
        for warning in caught:
            _note(f"note: {warning.message}")
    seen, unique = set(), []
    for item in items:  # an input named twice (file and its folder) is done once
        if item.source not in seen:
            seen.add(item.source)
            unique.append(item)
    return unique, failures


# ============================================================================ batch job plumbing

class BatchOutputs:
    """The files of one batch command, keyed on the main output path.

    ``embed --out X`` writes ``X.npy``, ``X.index.csv``; ``predict --out X.csv`` writes ``X.csv``;
    both also ``X.errors.csv`` (only while there are failures) and ``X.run.json`` (which
    checkpoint and options made the output, and counts).
    """

    def __init__(self, out: str | os.PathLike, suffix: str):
        out = Path(out)
        base = out.with_suffix("") if out.suffix.lower() == suffix else out
        self.base = base
        self.errors = self.path(".errors.csv")
        self.run = self.path(".run.json")

    def path(self, suffix: str) -> Path:
        """``OUT<suffix>`` beside the output (``OUT.npy``, ``OUT.index.csv`` ...)."""
        return self.base.parent / f"{self.base.name}{suffix}"

    def check_resumable(self, fingerprint: dict, overwrite: bool, exists: bool) -> bool:
        """True when an existing output from the same checkpoint and options can be extended."""
        if overwrite or not exists:
            return False
        if not self.run.is_file():
            raise CremaError(f"{self.base}: output exists without its {self.run.name}; "
                             "pass --overwrite or choose another --out")
        previous = json.loads(self.run.read_text()).get("fingerprint")
        if previous != fingerprint:
            raise CremaError(f"{self.base}: existing output was made with another checkpoint or options "
                             f"({self.run.name}); pass --overwrite or choose another --out")
        return True

    def write_errors(self, failures: list[dict]) -> None:
        if failures:
            atomic_write_text(self.errors, pd.DataFrame(failures, columns=["record_id", "source", "reason"])
                              .to_csv(index=False))
        else:
            self.errors.unlink(missing_ok=True)

    def write_run(self, fingerprint: dict, counts: dict) -> None:
        atomic_write_text(self.run, json.dumps({"fingerprint": fingerprint, **counts}, indent=2) + "\n")


def checkpoint_fingerprint(model, args: argparse.Namespace) -> dict:
    """What makes outputs comparable: the checkpoint's config and weights size, and input options."""
    weights = model.source / "model.safetensors"
    return {"checkpoint": str(model.source.resolve()), "config_sha256": model.config_sha256,
            "weights_bytes": weights.stat().st_size if weights.exists() else None,
            "fs": args.fs, "leads": args.leads, "dataset": args.dataset, "ids": args.ids,
            "per_window": bool(args.per_window)}


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def prepare_chunk(model, chunk: list[InputItem], bar) -> tuple[list, list[dict]]:
    """Load and preprocess a chunk of records: ``(prepared records, failure rows)``; missing-lead
    warnings become one stderr line per record."""
    from .api import Failure, MissingLeadsWarning

    prepared, failures = [], []
    for item in chunk:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", MissingLeadsWarning)
            for result in model.iter_prepared([item], on_error="skip"):
                if isinstance(result, Failure):
                    # readers name the file in the message; the row already has it
                    row = _failure_row(result.record_id, result.source, result.reason)
                    row["reason"] = row["reason"].removeprefix(f"{row['source']}: ")
                    failures.append(row)
                    _note(f"skipped {row['source']}: {row['reason']}")
                else:
                    prepared.append(result)
        for warning in caught:
            if issubclass(warning.category, MissingLeadsWarning):
                _note(f"note: {warning.message}")
            else:
                warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)
        bar.update(1)
    return prepared, failures


def _source_key(source: str) -> str:
    """A file's absolute path, so that a re-run naming the inputs differently still matches."""
    return str(Path(source).resolve())


def run_batch(args: argparse.Namespace, outputs: BatchOutputs, done_sources: set[str],
              process_chunk, flush) -> int:
    """Shared loop of ``embed`` and ``predict``: expand inputs, skip done records, process chunks,
    flush; returns the exit status.

    Records are read and processed ``--chunk`` at a time (memory holds one chunk of signals). The
    outputs are flushed after a chunk when the records since the last flush number at least
    ``--chunk`` and :data:`FLUSH_GROWTH` of those written, and at the end, so that an interrupted
    run loses little and a run of millions of records does not spend its time rewriting outputs.
    """
    items, failures = expand_inputs(args.inputs, args.fs, _lead_list(args.leads), args.dataset, args.ids,
                                    args.model.preprocess)
    if not items and not failures:
        raise CremaError(f"no ECG records found in {' '.join(args.inputs)}")
    for failure in failures:
        _note(f"skipped {failure['source']}: {failure['reason']}")
    done = {_source_key(source) for source in done_sources}
    todo = [item for item in items if _source_key(item.source) not in done]
    skipped = len(items) - len(todo)
    if skipped:
        _note(f"resuming: {skipped} records already in {outputs.base.name}, {len(todo)} to do")
    succeeded = pending = 0
    chunk_size = max(1, args.chunk)
    with tqdm(total=len(todo), desc=args.command, unit="rec", disable=args.no_progress) as bar:
        for start in range(0, len(todo), chunk_size):
            chunk = todo[start:start + chunk_size]
            prepared, chunk_failures = prepare_chunk(args.model, chunk, bar)
            failures.extend(chunk_failures)
            succeeded += process_chunk(prepared)
            pending += len(chunk)
            if pending >= max(chunk_size, FLUSH_GROWTH * (skipped + succeeded)):
                flush(failures)
                pending = 0
    if pending or not todo:
        flush(failures)  # the last records; or, with nothing to do, this run's failures and counts
    print(printable(f"crema {args.command}: {succeeded} records processed, {skipped} already done, "
                    f"{len(failures)} failed" + (f" (see {outputs.errors})" if failures else "")),
          file=sys.stderr)
    return 1 if failures else 0


# ============================================================================ embed

def _register_embed(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "embed", help="embeddings of ECG records (one row per record, or per window)",
        description="Embed every record with a CREMA checkpoint: each 10 s window is embedded and a "
                    "record's row is the mean of its windows' embeddings. Writes OUT.npy (float32, "
                    "n_records x D) and OUT.index.csv (record_id, source, n_windows, leads_present); with "
                    "--per-window one row per window (index: record_id, source, window, start_s, "
                    "leads_present). OUT.parquet writes one table (needs pyarrow).")
    p.add_argument("checkpoint", help="checkpoint or exported model folder")
    p.add_argument("inputs", nargs="+",
                   help="ECG files, folders or globs (any supported format), .npy/.npz/HDF5 stacks, "
                        "prepared corpus folders (DIR or DIR:split,split)")
    p.add_argument("--out", required=True, help="output path (OUT.npy + OUT.index.csv, or OUT.parquet)")
    _add_batch_options(p)
    p.set_defaults(func=run_embed)


def run_embed(args: argparse.Namespace) -> int:
    from .api import load

    if str(args.out).lower().endswith(".parquet"):
        return _run_embed_parquet(args)
    args.model = model = load(args.checkpoint, device=args.device)
    outputs = BatchOutputs(args.out, ".npy")
    npy, index_csv = outputs.path(".npy"), outputs.path(".index.csv")
    make_parent(npy)
    fingerprint = checkpoint_fingerprint(model, args)
    embeddings, index = np.zeros((0, model.dim), dtype=np.float32), pd.DataFrame()
    if outputs.check_resumable(fingerprint, args.overwrite, npy.exists() or index_csv.exists()):
        embeddings, index = _load_embeddings(npy, index_csv, model.dim)
    parts = {"emb": [embeddings], "index": [index]}

    def process(prepared: list) -> int:
        from .api import mean_by_record, stack_prepared

        signals, lead_mask, chunk_index = stack_prepared(prepared, model.preprocess.window)
        emb = model.encode_windows(signals, lead_mask, args.batch_size)
        if not args.per_window:  # a chunk holds whole records, so each is averaged here
            emb, chunk_index = mean_by_record(emb, chunk_index)
        parts["emb"].append(emb)
        parts["index"].append(chunk_index)
        return len(prepared)

    def flush(failures: list[dict]) -> None:
        from .api import INDEX_COLUMNS, RECORD_COLUMNS

        emb = np.concatenate(parts["emb"])
        frame = pd.concat([f for f in parts["index"] if len(f)], ignore_index=True) if any(
            len(f) for f in parts["index"]) else pd.DataFrame(
            columns=list(INDEX_COLUMNS if args.per_window else RECORD_COLUMNS))
        parts["emb"], parts["index"] = [emb], [frame]
        _atomic_save_npy(npy, emb)  # the index is written second: it is what marks rows as done
        atomic_write_text(index_csv, frame.to_csv(index=False))
        outputs.write_errors(failures)
        outputs.write_run(fingerprint, {"windows": int(len(emb)), "records": int(frame["source"].nunique()),
                                        "failed": len(failures), "dim": int(model.dim)})

    done = set(index["source"].astype(str)) if len(index) else set()
    status = run_batch(args, outputs, done, process, flush)
    print(f"crema embed: wrote {npy} {tuple(parts['emb'][0].shape)} and {index_csv}")
    return status


def _load_embeddings(npy: Path, index_csv: Path, dim: int) -> tuple[np.ndarray, pd.DataFrame]:
    """An existing output to extend. Rows past the index are from an interrupted flush (the
    arrays are written before the index) and are dropped."""
    if not (npy.is_file() and index_csv.is_file()):
        raise CremaError(f"{npy.with_suffix('')}: only one of {npy.name} and {index_csv.name} exists; "
                         "pass --overwrite")
    embeddings = np.load(npy)
    index = pd.read_csv(index_csv, dtype={"record_id": str, "source": str})
    if embeddings.ndim != 2 or embeddings.shape[1] != dim or len(embeddings) < len(index):
        raise CremaError(f"{npy}: shape {embeddings.shape} does not fit {index_csv.name} "
                         f"({len(index)} rows, D={dim}); pass --overwrite")
    return np.ascontiguousarray(embeddings[:len(index)]), index


def _run_embed_parquet(args: argparse.Namespace) -> int:
    """``--out X.parquet``: the same job, then one table with the index columns and ``e0..e{D-1}``."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise CremaError("--out *.parquet needs pyarrow (pip install pyarrow); or use --out X for X.npy "
                         "+ X.index.csv") from None
    parquet = Path(args.out)
    args.out = str(parquet.with_suffix(""))
    status = run_embed(args)
    outputs = BatchOutputs(args.out, ".npy")
    emb = np.load(outputs.path(".npy"))
    index = pd.read_csv(outputs.path(".index.csv"), dtype={"record_id": str, "source": str})
    table = pd.concat([index, pd.DataFrame(emb, columns=[f"e{i}" for i in range(emb.shape[1])])], axis=1)
    with atomic_path(parquet) as tmp:
        table.to_parquet(tmp, index=False)
    print(f"crema embed: wrote {parquet}")
    return status


# ============================================================================ predict

def _register_predict(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "predict", help="class probabilities and labels of ECG records with a fine-tuned classifier",
        description="One row per record: record_id, source, n_windows, the probability of each class "
                    "(mean over the record's windows) and labels (classes at or above the checkpoint's "
                    "thresholds, |-joined). With --per-window one row per window (record_id, source, "
                    "window, start_s, leads_present, the classes, labels).")
    p.add_argument("checkpoint", help="classifier checkpoint or exported model folder")
    p.add_argument("inputs", nargs="+",
                   help="ECG files, folders or globs (any supported format), .npy/.npz/HDF5 stacks, "
                        "prepared corpus folders (DIR or DIR:split,split)")
    p.add_argument("--out", required=True, help="CSV to write")
    _add_batch_options(p)
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from .api import INDEX_COLUMNS, load, stack_prepared

    args.model = model = load(args.checkpoint, device=args.device)
    model.require_classifier("crema predict")
    out = Path(args.out)
    make_parent(out)
    outputs = BatchOutputs(out, ".csv")
    fingerprint = checkpoint_fingerprint(model, args)
    first = list(INDEX_COLUMNS) if args.per_window else ["record_id", "source", "n_windows"]
    columns = [*first, *model.classes, "labels"]
    table = pd.DataFrame(columns=columns)
    if outputs.check_resumable(fingerprint, args.overwrite, out.exists()):
        table = pd.read_csv(out, dtype={"record_id": str, "source": str, "labels": str}, keep_default_na=False)
        if list(table.columns) != columns:
            raise CremaError(f"{out}: columns {list(table.columns)} do not match this classifier; pass --overwrite")
    parts = [table]

    def process(prepared: list) -> int:
        signals, lead_mask, index = stack_prepared(prepared, model.preprocess.window)
        probs = model.classify_windows(signals, lead_mask, args.batch_size)
        parts.append((model.window_table if args.per_window else model.record_table)(probs, index))
        return len(prepared)

    def flush(failures: list[dict]) -> None:
        frame = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else parts[0]
        parts[:] = [frame]
        atomic_write_text(out, frame.to_csv(index=False, float_format="%.6f"))
        outputs.write_errors(failures)
        outputs.write_run(fingerprint, {"records": int(len(frame)), "failed": len(failures),
                                        "classes": list(model.classes),
                                        "thresholds": [float(t) for t in model.thresholds]})

    status = run_batch(args, outputs, set(table["source"].astype(str)), process, flush)
    print(f"crema predict: wrote {out} ({len(parts[0])} {'windows' if args.per_window else 'records'})")
    return status


# ============================================================================ plot

def _register_plot(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "plot", help="draw one ECG as a 12-lead paper printout (with predicted labels)",
        description="Standard 3x4 layout of 2.5 s segments plus a lead II rhythm strip, 25 mm/s, "
                    "10 mm/mV, on a 1 mm / 5 mm grid. With a classifier --checkpoint the predicted "
                    "labels go in the title.")
    p.add_argument("input", help="one ECG file (any supported format)")
    p.add_argument("--out", required=True, help="image to write (.png, .pdf or .svg)")
    p.add_argument("--checkpoint", help="classifier checkpoint: put its predicted labels in the title")
    p.add_argument("--start", type=float, default=0.0, help="second of the record where the page starts")
    p.add_argument("--no-filter", action="store_true", help="draw the raw signal (no 0.5 Hz display high-pass)")
    p.add_argument("--dpi", type=int, default=150, help="PNG resolution (default 150)")
    p.add_argument("--device", help="device for the checkpoint (default: cuda when available)")
    _add_input_options(p)
    p.set_defaults(func=run_plot)


def run_plot(args: argparse.Namespace) -> int:
    from ..viz.paper import plot_ecg_paper, save_figure

    items = collect_inputs(args.input, args.fs, _lead_list(args.leads))
    if len(items) != 1:
        raise CremaError(f"{args.input}: crema plot draws one record; this input holds {len(items)}")
    rec = items[0].load()
    labels: list[str] = []
    if args.checkpoint:
        labels = predicted_labels(args.checkpoint, rec, items[0].source, args.device)
    fig = plot_ecg_paper(rec, labels=labels, start_s=args.start, dpi=args.dpi,
                         highpass_hz=None if args.no_filter else 0.5)
    out = save_figure(fig, args.out)
    print(f"crema plot: wrote {out}")
    return 0


def predicted_labels(checkpoint: str, rec, source: str, device: str | None) -> list[str]:
    """``["CLASS 0.91", ...]`` for the classes at or above their thresholds (``["no class above
    threshold"]`` when none is)."""
    from .api import load

    model = load(checkpoint, device=device)
    model.require_classifier("crema plot --checkpoint")
    row = model.predict_records([rec]).records.iloc[0]
    chosen = [c for c in str(row["labels"]).split("|") if c]
    if not chosen:
        best = max(model.classes, key=lambda c: row[c])
        return [f"no class above threshold (highest {best} {row[best]:.2f})"]
    return [f"{c} {row[c]:.2f}" for c in chosen]


# ============================================================================ embed-map

def _register_embed_map(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "embed-map", help="2-D map (PCA or t-SNE) of embeddings coloured by a column",
        description="Scatter embeddings written by crema embed. --color-by names a column of the index "
                    "(record_id, source, folder = the record's parent folder, leads_present, ...) or of a "
                    "--join table (e.g. the labels column of crema predict's CSV).")
    p.add_argument("embeddings", help="OUT.npy written by crema embed")
    p.add_argument("--index", help="its index CSV (default: OUT.index.csv beside it)")
    p.add_argument("--color-by", default="folder", help="column to colour by (default folder)")
    p.add_argument("--join", help="CSV with more columns per record (e.g. crema predict output)")
    p.add_argument("--on", default="record_id", help="column joining --join to the index (default record_id)")
    p.add_argument("--method", choices=["pca", "tsne"], default="pca", help="projection (default pca)")
    p.add_argument("--out", required=True, help="image to write")
    p.add_argument("--seed", type=int, default=0, help="seed of t-SNE")
    p.set_defaults(func=run_embed_map)


def run_embed_map(args: argparse.Namespace) -> int:
    from ..viz.embedding import plot_embedding_map
    from ..viz.paper import save_figure

    npy = Path(args.embeddings)
    index_path = Path(args.index) if args.index else npy.with_name(npy.stem + ".index.csv")
    if not npy.is_file():
        raise ReadError(npy, "no such embeddings file")
    if not index_path.is_file():
        raise ReadError(index_path, "no such index file (pass --index)")
    emb = np.load(npy)
    index = pd.read_csv(index_path, dtype={"record_id": str, "source": str})
    if len(index) != len(emb):
        raise CremaError(f"{index_path}: {len(index)} rows for {len(emb)} embeddings")
    index["folder"] = [Path(s).parent.name for s in index["source"].astype(str)]
    if args.join:
        index = _join_columns(index, Path(args.join), args.on)
    if args.color_by not in index.columns:
        raise CremaError(f"no column {args.color_by!r} to colour by; columns: {', '.join(index.columns)}")
    title = f"{npy.name}: {METHOD_NAMES[args.method]} of {len(emb)} windows, coloured by {args.color_by}"
    fig = plot_embedding_map(emb, index[args.color_by].tolist(), args.method, title, args.color_by, args.seed)
    out = save_figure(fig, args.out)
    print(f"crema embed-map: wrote {out}")
    return 0


def _join_columns(index: pd.DataFrame, path: Path, on: str) -> pd.DataFrame:
    table = pd.read_csv(path, dtype={on: str}, keep_default_na=False)
    if on not in table.columns or on not in index.columns:
        raise CremaError(f"{path}: cannot join on {on!r} (columns: {', '.join(table.columns)})")
    extra = [c for c in table.columns if c not in index.columns or c == on]
    return index.merge(table[extra].drop_duplicates(on), on=on, how="left")


# ============================================================================ export

def _register_export(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "export", help="write a self-contained model folder (config.json + model.safetensors)",
        description="Copy a checkpoint's weights and config (with its preprocessing) into a folder that "
                    "crema.load reads without the training run; training-only state is left out.")
    p.add_argument("checkpoint", help="checkpoint folder")
    p.add_argument("--out", required=True, help="folder to write")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from .api import load

    model = load(args.checkpoint, device="cpu")
    out = model.save_pretrained(args.out)
    print(f"crema export: wrote {out} ({model!r})")
    return 0


def _register_export_onnx(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "export-onnx", help="export the encoder (or the whole classifier) to ONNX",
        description="Inputs: signal (batch, 12, window) float32 preprocessed windows and lead_mask "
                    "(batch, 12) bool; outputs embedding, or logits and probabilities for a classifier. "
                    "The batch axis is dynamic. After export the graph is checked against PyTorch with "
                    "onnxruntime at batch sizes 1 and 3.")
    p.add_argument("checkpoint", help="checkpoint or exported model folder")
    p.add_argument("--out", required=True, help=".onnx file to write")
    p.add_argument("--no-lead-mask", action="store_true", help="no lead_mask input (all leads present)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    p.add_argument("--tolerance", type=float, default=1e-4, help="max abs difference allowed (default 1e-4)")
    p.set_defaults(func=run_export_onnx)


def run_export_onnx(args: argparse.Namespace) -> int:
    from .api import load
    from .onnx_export import check_parity, export_onnx

    model = load(args.checkpoint, device="cpu")
    out = export_onnx(model, args.out, lead_mask=not args.no_lead_mask, opset=args.opset)
    print(f"crema export-onnx: wrote {out}")
    if args.no_check:
        return 0
    # z-scored-like windows with one lead set missing in a row, to exercise the mask path
    rng = np.random.default_rng(0)
    signals = rng.standard_normal((3, 12, model.window)).astype(np.float32)
    lead_mask = np.ones((3, 12), dtype=bool)
    lead_mask[1, 6:] = False
    diffs = check_parity(model, out, signals, lead_mask)
    worst = max(diffs.values())
    print("parity with PyTorch (max abs difference): "
          + ", ".join(f"batch {b}: {d:.2e}" for b, d in diffs.items()))
    if worst > args.tolerance:
        raise CremaError(f"{out}: ONNX output differs from PyTorch by {worst:.2e} > {args.tolerance:g}")
    return 0
