"""The batch-job machinery of ``crema embed`` and ``crema predict``: their shared options, input
expansion into one item per record, the output files and their resume fingerprint, and the loop
that runs the model over every record (read and preprocessed by ``--workers`` threads ahead of it,
a long record in chunks: :meth:`crema.use.api.CremaModel.iter_outputs`), skips bad ones and
flushes outputs atomically.

A command supplies :func:`run_batch` its model work on windows, ``apply(signals, lead_mask) ->
outputs``, and two callbacks: ``process_chunk(outputs) -> (records done, failure rows)`` (what it
keeps of a chunk of records' :class:`~crema.use.results.RecordOutput`) and ``flush(failures)``
(rewrite its outputs); see :mod:`crema.use.commands`. No number that is not finite is ever
written: a record whose input windows (a damaged corpus: refused as it is read, by
:meth:`~crema.use.api.CremaModel.iter_outputs`) or model outputs (:func:`refuse_non_finite`) hold
NaN or infinite values is skipped and listed.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..atomic import atomic_write_text
from ..data.formats.common import require_finite
from ..data.leads import duplicate_leads
from ..errors import CremaError, ReadError, printable
from ..interrupts import raise_if_stopped
from ..flags import device_flag, number_in
from ..kernels import KernelPolicy
from .inputs import InputItem, check_fs, collect_inputs
from .results import Failure

DEFAULT_CHUNK = 256  # records per flush of a batch command's outputs
# Once the output is large, flush only after it has grown by this fraction: each flush rewrites the
# whole output, so flushing every chunk would cost time quadratic in the number of records.
FLUSH_GROWTH = 0.1


def add_input_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fs", type=float,
                   help="sampling rate (Hz) of raw arrays and stacks that carry none (.npy/.csv; HDF5 "
                        "without one is taken as CODE-15%%'s 400 Hz)")
    p.add_argument("--leads", help="comma-separated lead names of raw array rows (default the standard 12)")
    p.add_argument("--dataset", help="the array of an .npz / dataset of an HDF5 stack holding the signals "
                                     "(default: signal, signals, ..., tracings)")
    p.add_argument("--ids", help="record ids of stack rows: a .csv/.txt file (one per row) or the name of an "
                                 "array in the .npz/HDF5 (default: exam_id, record_id, ... when present)")


def add_batch_options(p: argparse.ArgumentParser) -> None:
    add_input_options(p)
    # 64 = crema.model.inference.DEFAULT_BATCH, written out to keep torch out of the CLI's start
    p.add_argument("--batch-size", type=number_in(int, 1), default=64, help="windows per call (default 64; the "
                   f"encoder runs them in parts of {KernelPolicy.inference_batch} ECGs, which is faster on a "
                   "CPU: CREMA_INFERENCE_BATCH)")
    p.add_argument("--device", type=device_flag, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    p.add_argument("--chunk", type=number_in(int, 1), default=DEFAULT_CHUNK,
                   help=f"records between output flushes (default {DEFAULT_CHUNK})")
    p.add_argument("--workers", type=number_in(int, 1),
                   help="threads reading and preprocessing records ahead of the model (default: 4, or the "
                        "number of CPUs if fewer); outputs are the same for any number")
    p.add_argument("--overwrite", action="store_true", help="start again instead of resuming an existing --out")
    p.add_argument("--per-window", action="store_true",
                   help="one row per 10 s window instead of one per record (the mean of its windows)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def lead_list(text: str | None) -> list[str] | None:
    """The ``--leads`` names, refusing a lead named twice (which row would be that lead?)."""
    if not text:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    twice = duplicate_leads(names)
    if twice:
        raise CremaError(f"--leads names {', '.join(twice)} more than once ({text})")
    return names


def note(message: str) -> None:
    tqdm.write(printable(message), file=sys.stderr)


def failure_row(record_id: str, source: str, reason: str) -> dict:
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
                failures.append(failure_row(Path(text).stem, str(text), reason))
        for warning in caught:
            note(f"note: {warning.message}")
    seen, unique = set(), []
    for item in items:  # an input named twice (file and its folder) is done once
        if item.source not in seen:
            seen.add(item.source)
            unique.append(item)
    return unique, failures


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
        try:
            previous = json.loads(self.run.read_text()).get("fingerprint")
        except (ValueError, AttributeError, OSError) as exc:  # not JSON, not an object, unreadable
            raise self.damaged(self.run, exc) from None
        if previous != fingerprint:
            raise CremaError(f"{self.base}: existing output was made with another checkpoint or options "
                             f"({self.run.name}); pass --overwrite or choose another --out")
        return True

    def damaged(self, path: Path, exc: Exception) -> CremaError:
        """The error for an existing output file that cannot be read back to resume."""
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return CremaError(f"{path}: the existing output is damaged and cannot be resumed ({detail}); "
                          "pass --overwrite to start again, or choose another --out")

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


def record_results(model, items: list[InputItem], apply, args: argparse.Namespace, bar) -> Iterator:
    """``apply`` over every record of ``items`` (:meth:`~crema.use.api.CremaModel.iter_outputs`),
    in order: a :class:`~crema.use.results.RecordOutput` per record, or a failure row (also noted on
    stderr); a record with missing leads gets one stderr line."""
    from .api import missing_leads

    # missing leads told here rather than caught as warnings: catching warnings changes process-wide
    # state while the reading threads run
    for result in model.iter_outputs(items, apply, batch_size=args.batch_size, on_error="skip",
                                     workers=getattr(args, "workers", None), warn_missing=False):
        bar.update(1)
        if isinstance(result, Failure):
            # readers name the file in the message; the row already has it
            row = failure_row(result.record_id, result.source, result.reason)
            row["reason"] = row["reason"].removeprefix(f"{row['source']}: ")
            note(f"skipped {row['source']}: {row['reason']}")
            yield row
            continue
        message = missing_leads(result.lead_mask, result.source)
        if message:
            note(f"note: {message}")
        yield result


def refuse_non_finite(values: np.ndarray, index: pd.DataFrame, fmt: str
                      ) -> tuple[np.ndarray, pd.DataFrame, list[dict]]:
    """Drop every record with a NaN or infinite value among its rows of the model's outputs
    ``values (n, ...)`` (rows of one record share ``index["source"]``); returns the kept
    ``(values, index)`` and a failure row per dropped record."""
    if not len(values):  # a chunk whose every record failed before the model
        return values, index, []
    keep, failures = np.ones(len(index), dtype=bool), []
    sources = index["source"].astype(str).to_numpy()
    for source in pd.unique(sources[~np.isfinite(values.reshape(len(values), -1)).all(axis=1)]):
        rows = sources == source
        try:
            require_finite(values[rows], source, fmt, "the model's output")
        except ReadError as exc:
            failures.append(failure_row(str(index["record_id"].to_numpy()[rows][0]), source, exc.problem))
            keep &= ~rows
    return values[keep], index[keep].reset_index(drop=True), failures


def source_key(source: str) -> str:
    """A file's absolute path, so that a re-run naming the inputs differently still matches."""
    return str(Path(source).resolve())


def run_batch(args: argparse.Namespace, model, outputs: BatchOutputs, done_sources: set[str],
              process_chunk, flush, apply) -> int:
    """Shared loop of ``embed`` and ``predict``: expand inputs, skip done records, run ``apply``
    (windows ``(n, 12, T)``, lead masks ``(n, 12)`` -> outputs ``(n, ...)``) over the rest, hand
    their outputs to ``process_chunk`` a chunk at a time, flush; returns the exit status.
    ``model`` is the loaded :class:`~crema.use.api.CremaModel`; ``args`` holds the input and
    batch options (:func:`add_batch_options`).

    Memory holds the records read ahead of the model (a long record a chunk at a time) and the
    outputs. ``process_chunk`` gets ``--chunk`` records at a time, in input order; the outputs are
    flushed after a chunk when the records since the last flush number at least ``--chunk`` and
    :data:`FLUSH_GROWTH` of those written, and at the end, so that an interrupted run loses little
    (the records read ahead are done again on resume) and a run of millions of records does not
    spend its time rewriting outputs.
    """
    items, failures = expand_inputs(args.inputs, args.fs, lead_list(args.leads), args.dataset, args.ids,
                                    model.preprocess)
    if not items and not failures:
        raise CremaError(f"no ECG records found in {' '.join(args.inputs)}")
    for failure in failures:
        note(f"skipped {failure['source']}: {failure['reason']}")
    done = {source_key(source) for source in done_sources}
    todo = [item for item in items if source_key(item.source) not in done]
    skipped = len(items) - len(todo)
    if skipped:
        note(f"resuming: {skipped} records already in {outputs.base.name}, {len(todo)} to do")
    succeeded = pending = 0
    fresh = not outputs.run.exists()  # no earlier output: if every record fails, none is written
    chunk_size = max(1, args.chunk)
    chunk: list = []  # this chunk's record outputs
    seen = 0          # this chunk's records, failed ones included

    def process() -> int:
        if not chunk:  # every record of this chunk failed
            return 0
        done_now, refused = process_chunk(chunk)
        for failure in refused:
            note(f"skipped {failure['source']}: {failure['reason']}")
        failures.extend(refused)
        return done_now

    with tqdm(total=len(todo), desc=args.command, unit="rec", disable=args.no_progress) as bar:
        for result in record_results(model, todo, apply, args, bar):
            if isinstance(result, dict):
                failures.append(result)
            else:
                chunk.append(result)
            seen += 1
            if seen == chunk_size:
                succeeded += process()
                pending += seen
                chunk, seen = [], 0
                if pending >= max(chunk_size, FLUSH_GROWTH * (skipped + succeeded)) and (succeeded or not fresh):
                    flush(failures)
                    pending = 0
                raise_if_stopped()  # a Ctrl-C or SIGTERM whose exception C code swallowed stops here
        if seen:
            succeeded += process()
            pending += seen
    if fresh and not succeeded and failures:  # an empty output would read as a result: write none
        raise CremaError(f"0 records processed, {len(failures)} failed (each named above with its reason); "
                         f"nothing written to {outputs.base}")
    if pending or not todo:
        flush(failures)  # the last records; or, with nothing to do, this run's failures and counts
    print(printable(f"crema {args.command}: {succeeded} records processed, {skipped} already done, "
                    f"{len(failures)} failed" + (f" (see {outputs.errors})" if failures else "")),
          file=sys.stderr)
    return 1 if failures else 0
