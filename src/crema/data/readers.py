"""Read one ECG file of any supported format into a :class:`Recording` (mV, file's own leads), and
list the records of files, folders and globs.

This module dispatches on the file's kind (:func:`crema.data.inputs.classify_input`); each format
is read by its module in :mod:`crema.data.formats`. Formats, by suffix (and, for ``.mat``, by the
header beside it):

* ``.hea`` (or its ``.dat``/``.xyz``): WFDB (PTB-XL, PTB Diagnostic, PhysioNet/CinC ``.hea`` +
  ``.mat``), :mod:`~crema.data.formats.wfdb`.
* ``.mat`` with a sibling ``.hea``: as above. Without one: the original CPSC-2018 struct
  (``ECG`` with ``sex``, ``age``, ``data`` 12 x N at 500 Hz), :mod:`~crema.data.formats.cpsc`.
* ``.npy`` / ``.npz`` / ``.csv`` / ``.txt``: a plain array ``(12, T)`` or ``(T, 12)``; ``fs`` is
  required (an ``.npz`` may carry ``fs`` and ``leads`` arrays; a text table may have a header row
  of lead names and a leading sample counter; ``units`` when not mV),
  :mod:`~crema.data.formats.arrays`.
* ``.xml`` (HL7 aECG, GE MUSE), ``.dcm`` (DICOM waveform), ``.edf``: their modules in
  :mod:`crema.data.formats`.

Every failure is a :class:`crema.errors.ReadError` naming the file and the problem; the checks
every format's output must pass (finite samples, an ECG rate, known and distinct leads) are made
here, once.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import CremaError, ReadError, is_utf8_name
from ..limits import LimitError
from .formats import read_dicom_ecg, read_edf_ecg, read_xml_ecg
from .formats.arrays import read_array_file
from .formats.cpsc import read_cpsc_struct
from .formats.wfdb import read_wfdb
from .inputs import (WFDB_SIGNAL_SUFFIXES, InputKind, classify_input, file_kind, has_magic, header_of,
                     is_record_file, named_record, record_path)
from .leads import UnknownLeadError, canonical_lead, duplicate_leads
from .rates import rate_problem
from .recording import Recording

PathLike = str | os.PathLike

# Files a batch command writes beside its main output (crema.use.batch.BatchOutputs), and the
# sidecar that marks that output.
RUN_SUFFIX = ".run.json"
OUTPUT_SUFFIXES = (".index.csv", ".errors.csv", RUN_SUFFIX)


# ----------------------------------------------------------------------------- public API

def read_record(path: PathLike, fs: float | None = None,
                leads: Sequence[str] | None = None, units: str | None = None) -> Recording:
    """Read one ECG file.

    Args:
        path: the file (for WFDB the ``.hea``, ``.dat`` or ``.mat``, or the record's name without
            an extension, as ``wfdb.rdrecord`` takes it).
        fs: sampling rate in Hz, required for formats that do not carry one
            (``.npy``/``.csv``, an ``.npz`` without ``fs``); ignored by the others.
        leads: row names for formats that carry none (default the standard 12 in order);
            ignored by formats that name their own leads.
        units: voltage unit of plain arrays and text tables (default mV; ``uV``, ``V``...);
            ignored by formats that carry their own.

    Returns:
        ``Recording`` with ``signal (n_leads, T)`` float32 in mV and ``meta`` holding what the
        file says: ``age`` (float | None), ``sex`` ('M' | 'F' | None), ``dx`` (list of str, CinC).

    Raises:
        LimitError: its declared size exceeds a limit of :mod:`crema.limits` (checked before reading).
        ReadError: the file is missing, of an unknown kind, truncated, inconsistent with its
            header, empty, contains NaN/inf, has an implausible sampling rate, names a lead that
            is not an ECG lead or one lead twice, or its name is not valid UTF-8.
    """
    path = named_record(path)
    if not is_utf8_name(path):
        # Every output names its records in UTF-8 text (index.csv, errors.csv, reports), and a
        # resumed run matches records by that name; such a file could never be matched again.
        raise ReadError(path, "file name is not valid UTF-8; rename the file")
    if path.suffix.lower() in WFDB_SIGNAL_SUFFIXES:
        path = header_of(path)
    if not path.exists():
        raise ReadError(path, "no such file")
    if path.is_dir():
        raise ReadError(path, "is a folder, not a file (use find_records or crema prepare)")
    try:
        rec = _dispatch(path, file_kind(path), fs, leads, units)
    except ReadError as exc:
        if exc.path:
            raise
        raise ReadError(path, exc.problem) from None
    except LimitError:
        raise  # already names the file, the limit and its setting; callers tell it apart
    except (CremaError, ValueError, OSError, KeyError, IndexError, TypeError) as exc:
        # Anything a format reader trips over is reported as this file's problem.
        raise ReadError(path, f"{type(exc).__name__}: {exc}" if not isinstance(exc, CremaError)
                        else str(exc)) from None
    _validate(path, rec)
    return rec


def find_records(inputs: PathLike | Iterable[PathLike]) -> list[Path]:
    """One path per record from files, folders (recursive) and glob patterns, sorted.

    WFDB pairs are listed by their ``.hea``; a ``.mat`` or ``.dat`` with a sibling ``.hea`` is not
    listed on its own; hidden files, known table files (``ptbxl_database.csv``,
    ``*_dx_mapping.csv``, ...) and CREMA's own outputs (:func:`is_crema_output`) found in folders
    or by patterns are left out. Files named explicitly are kept. A path that exists is always
    taken as it is (``rec[1].npy`` is that file); only one that does not is a glob pattern. Links
    to folders are not followed when walking a folder or a ``**`` pattern, and a file reached by
    several paths (a link beside its target) is listed once.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found: set[Path] = set()
    for item in inputs:
        text = str(item)
        path = named_record(item)
        kind = classify_input(text, look_inside=False)
        if kind is InputKind.GLOB:
            root = _split_glob(text)[0]
            found.update(record_path(p) for p in _expand_glob(text)
                         if p.is_file() and is_record_file(p) and not _in_output(p, root))
        elif kind is InputKind.FOLDER:
            found.update(record_path(p) for p in _walk(path) if is_record_file(p))
        elif kind.is_file:
            found.add(record_path(path))
        elif kind is InputKind.CORPUS:  # its files are CREMA's own windows, never records to list
            raise ReadError(path, "a prepared corpus, not a folder of records (crema embed and predict read it "
                                  "as DIR or DIR:split)")
        else:
            raise ReadError(path, "no such file or folder")
    return _unique_files(found)


def is_crema_output(path: Path) -> bool:
    """True for a file or folder CREMA itself wrote, which is never an ECG to read back (an
    ``--out`` inside the input folder would otherwise become input on the next run):

    * a corpus folder (``crema prepare``: ``preprocess.json`` beside ``signals.npy``) or a model
      folder (a checkpoint or export: ``config.json`` beside ``model.safetensors``);
    * a batch command's side files, ``*.index.csv``, ``*.errors.csv``, ``*.run.json``, and its main
      output, which has a ``<stem>.run.json`` beside it (``crema embed --out X``: ``X.npy``;
      ``crema predict --out X.csv``: ``X.csv``).
    """
    if path.is_dir():
        return (((path / "preprocess.json").is_file() and (path / "signals.npy").is_file())
                or ((path / "config.json").is_file() and (path / "model.safetensors").is_file()))
    name = path.name.lower()
    return (name.endswith(OUTPUT_SUFFIXES)
            or path.with_name(f"{path.name[:len(path.name) - len(path.suffix)]}{RUN_SUFFIX}").is_file())


def _walk(root: Path) -> list[Path]:
    """Every file under ``root`` except hidden ones and CREMA's outputs (a corpus or model folder
    is not entered); links to folders are not followed."""
    files = []
    for folder, subfolders, names in os.walk(root):
        here = Path(folder)
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and not is_crema_output(here / d)]
        files.extend(p for p in (here / n for n in names)
                     if not p.name.startswith(".") and p.is_file() and not is_crema_output(p))
    return files


def _in_output(path: Path, root: Path) -> bool:
    """``path`` (found by a pattern under ``root``) is one of CREMA's outputs or lies in one."""
    if is_crema_output(path):
        return True
    try:
        folder = path.parent.relative_to(root)
    except ValueError:
        return False
    return any(is_crema_output(root / rel) for rel in [folder, *folder.parents] if rel != Path("."))


def _split_glob(pattern: str) -> tuple[Path, tuple[str, ...]]:
    """``(folder before the first pattern part, the parts from there on)``."""
    parts = Path(pattern).parts
    first_magic = next(i for i, part in enumerate(parts) if has_magic(part))
    return (Path(*parts[:first_magic]) if first_magic else Path(".")), parts[first_magic:]


def _expand_glob(pattern: str) -> list[Path]:
    """Paths matching ``pattern`` (``**`` = any depth, as ``glob(recursive=True)``) without
    following links to folders inside ``**`` (a link loop such as ``loop -> .`` would list every
    file dozens of times) and, as ``glob`` does, without hidden names the pattern does not spell."""
    root, rest = _split_glob(pattern)
    if rest[-1] == "**":  # pathlib's trailing ** lists folders only; glob's lists files too
        rest = (*rest, "*")
    spelled_hidden = {part for part in rest if part.startswith(".")}
    matches = []
    for path in root.glob(str(Path(*rest))):  # pathlib never follows folder links in **
        hidden = [p for p in path.relative_to(root).parts if p.startswith(".") and p not in spelled_hidden]
        if not hidden:
            matches.append(path)
    return matches


def _unique_files(paths: Iterable[Path]) -> list[Path]:
    """``paths`` sorted, keeping the first of several that lead to the same file."""
    by_target: dict[Path, Path] = {}
    for path in sorted(paths):
        try:
            target = path.resolve()
        except (OSError, RuntimeError):  # a link loop: keep the path as it is
            target = path.absolute()
        by_target.setdefault(target, path)
    return sorted(by_target.values())


# ----------------------------------------------------------------------------- dispatch

def _dispatch(path: Path, kind: InputKind, fs: float | None, leads: Sequence[str] | None,
              units: str | None = None) -> Recording:
    """Read ``path`` of ``kind`` (:func:`crema.data.inputs.file_kind`) with its format's reader."""
    if kind is InputKind.WFDB:
        return read_wfdb(header_of(path))
    if kind is InputKind.MATLAB:
        return read_cpsc_struct(path)
    if kind in (InputKind.NPY, InputKind.NPZ, InputKind.TEXT):
        return read_array_file(path, fs=fs, leads=leads, units=units)
    if kind is InputKind.XML:
        return read_xml_ecg(path)
    if kind is InputKind.DICOM:
        return read_dicom_ecg(path)
    if kind is InputKind.EDF:
        return read_edf_ecg(path)
    if kind is InputKind.HDF5:
        raise ReadError(path, "an HDF5 file is a stack of records: crema embed / predict read it row "
                              "by row (crema.data.stacks.RecordStack), crema prepare makes a corpus of it")
    raise ReadError(path, f"unknown ECG file type {path.suffix!r} (supported: .hea/.dat WFDB, "
                          ".mat CinC or CPSC-2018, .npy, .npz, .csv, .txt, .xml, .dcm, .edf, HDF5 stacks)")


def check_recording(path: PathLike, rec: Recording) -> None:
    """The checks :func:`read_record` makes on every reader's output (finite samples, an ECG rate,
    known and distinct leads), for a record read another way (a span of a long record)."""
    _validate(Path(path), rec)


def _validate(path: Path, rec: Recording) -> None:
    """Checks every reader's output must pass, whatever the format."""
    if rec.signal.ndim != 2 or rec.signal.shape[1] == 0 or rec.signal.shape[0] == 0:
        raise ReadError(path, f"no samples (signal shape {rec.signal.shape})")
    if not np.isfinite(rec.signal).all():
        bad = int((~np.isfinite(rec.signal)).sum())
        raise ReadError(path, f"signal contains {bad} NaN/inf values")
    problem = rate_problem(rec.fs)
    if problem:
        raise ReadError(path, problem)
    for name in rec.leads:
        try:
            canonical_lead(name)
        except UnknownLeadError:
            raise ReadError(path, f"unknown lead name {name!r} (leads: {', '.join(rec.leads)})") from None
    twice = duplicate_leads(rec.leads)
    if twice:
        raise ReadError(path, f"lead {', '.join(twice)} appears more than once "
                              f"(leads: {', '.join(rec.leads)}); which one is real is unknown")
