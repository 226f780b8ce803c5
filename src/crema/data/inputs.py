"""What kind of input a path is: the one decision behind reading a file
(:func:`crema.data.readers.read_record`), listing the records of files, folders and globs
(:func:`crema.data.readers.find_records`), streaming a long record
(:func:`crema.data.spans.open_record`), opening a stack (:class:`crema.data.stacks.RecordStack`),
``crema prepare`` (:func:`crema.data.sources.detect_source`) and ``crema embed`` / ``predict``
(:mod:`crema.use.inputs`).

A file's kind comes from its suffix (case-insensitive), except that a ``.mat`` with a ``.hea``
beside it is a WFDB record (PhysioNet/CinC) and one without is the CPSC-2018 MATLAB struct, and
that a ``.npy``/``.npz`` is a stack (one record per row) when its signal array is 3-D, which only
its header tells (read when ``look_inside``; a file whose header cannot be read is not a stack
here, and reading it as one record reports its problem). A folder holding a finished corpus, or
``DIR:split[,split]`` naming one, is a prepared corpus. A path that does not exist is a glob
pattern when it holds ``*``, ``?`` or ``[`` (an existing path is always taken literally). A WFDB
record may be named as ``wfdb.rdrecord`` takes it, without its extension (``records100/00000/
00001_lr`` for ``00001_lr.hea``): :func:`named_record`.
"""
from __future__ import annotations

import enum
import os
import re
from pathlib import Path

from ..errors import CremaError
from .corpus import is_corpus, parse_corpus_spec
from .formats.arrays import TEXT_SUFFIXES, choose_signal_key, looks_like_text_record
from .formats.npyfile import NpzArchive, open_npy

PathLike = str | os.PathLike


class InputKind(enum.Enum):
    """What a path holds. The value is how messages name it."""

    WFDB = "WFDB record"              # a .hea header, its .dat/.xyz signal file, or a .mat beside a .hea
    MATLAB = "MATLAB file"            # a .mat without a header beside it (the CPSC-2018 struct)
    NPY = ".npy record"               # one record (2-D); any .npy when not looked inside
    NPY_STACK = ".npy stack"          # records in rows (3-D)
    NPZ = ".npz record"
    NPZ_STACK = ".npz stack"
    HDF5 = "HDF5 stack"               # .h5 / .hdf5 / .hdf: always records in rows
    TEXT = "text table"               # .csv / .txt
    XML = "XML ECG"                   # HL7 aECG or GE MUSE
    DICOM = "DICOM waveform"
    EDF = "EDF record"
    UNKNOWN = "file of unknown type"
    FOLDER = "folder"
    CORPUS = "prepared corpus"        # crema prepare's output folder, also as DIR:split[,split]
    GLOB = "glob pattern"
    MISSING = "missing path"

    @property
    def is_stack(self) -> bool:
        """A file of many records, one per row (:class:`crema.data.stacks.RecordStack`)."""
        return self in (InputKind.NPY_STACK, InputKind.NPZ_STACK, InputKind.HDF5)

    @property
    def is_file(self) -> bool:
        """An existing file (of a known type or not)."""
        return self not in (InputKind.FOLDER, InputKind.CORPUS, InputKind.GLOB, InputKind.MISSING)


# Signal files that belong to a header and are never records on their own.
WFDB_SIGNAL_SUFFIXES = frozenset({".dat", ".xyz"})
HDF5_SUFFIXES = frozenset({".h5", ".hdf5", ".hdf"})
STACK_SUFFIXES = frozenset({".npy", ".npz"}) | HDF5_SUFFIXES
# The kind of each suffix (``.mat`` is decided by the header beside it).
SUFFIX_KINDS: dict[str, InputKind] = {
    ".hea": InputKind.WFDB, ".dat": InputKind.WFDB, ".xyz": InputKind.WFDB,
    ".npy": InputKind.NPY, ".npz": InputKind.NPZ,
    **{suffix: InputKind.HDF5 for suffix in HDF5_SUFFIXES},
    **{suffix: InputKind.TEXT for suffix in TEXT_SUFFIXES},
    ".xml": InputKind.XML, ".dcm": InputKind.DICOM, ".edf": InputKind.EDF,
}
# Suffixes find_records lists when it walks a folder.
RECORD_SUFFIXES = frozenset(SUFFIX_KINDS) - WFDB_SIGNAL_SUFFIXES | {".mat"}
# Table files found beside real data that are not recordings.
METADATA_NAMES = frozenset({"ptbxl_database.csv", "scp_statements.csv", "ecg_ids.csv",
                            "index.csv", "records.csv"})
METADATA_PATTERN = re.compile(r".*(dx_mapping|_mapping|_labels?|_database|statements)\.csv$", re.I)
_STACK_OF = {InputKind.NPY: InputKind.NPY_STACK, InputKind.NPZ: InputKind.NPZ_STACK}


def classify_input(path: PathLike, dataset: str | None = None, *, look_inside: bool = True) -> InputKind:
    """The kind of ``path`` (see the module docstring).

    Args:
        path: a file, folder or glob pattern.
        dataset: the array of an ``.npz`` that holds the signal (default: the usual names).
        look_inside: read a ``.npy``/``.npz`` header to tell a stack from one record; without it
            every ``.npy``/``.npz`` is :attr:`InputKind.NPY`/:attr:`InputKind.NPZ`.
    """
    path = named_record(path)
    if path.is_dir():
        return InputKind.CORPUS if is_corpus(path) else InputKind.FOLDER
    if path.is_file():
        kind = file_kind(path)
        if look_inside and kind in _STACK_OF and _holds_rows(path, dataset):
            return _STACK_OF[kind]
        return kind
    if is_corpus(parse_corpus_spec(path)[0]):  # DIR:split (an existing path was taken literally above)
        return InputKind.CORPUS
    if not path.exists() and has_magic(str(path)):
        return InputKind.GLOB
    return InputKind.MISSING


def file_kind(path: PathLike) -> InputKind:
    """The kind of a file by its name (and, for a ``.mat``, the ``.hea`` beside it), without
    reading it: a ``.npy``/``.npz`` is :attr:`InputKind.NPY`/:attr:`InputKind.NPZ`."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".mat":
        return InputKind.WFDB if header_of(path).exists() else InputKind.MATLAB
    return SUFFIX_KINDS.get(suffix, InputKind.UNKNOWN)


def is_stack(path: PathLike, dataset: str | None = None) -> bool:
    """True for an HDF5 file, or a ``.npy``/``.npz`` whose signal array is 3-D."""
    return classify_input(path, dataset).is_stack


def header_of(path: PathLike) -> Path:
    """The WFDB header a record's files share: ``x.hea`` for ``x.dat``, ``x.mat``..."""
    return Path(path).with_suffix(".hea")


def named_record(path: PathLike) -> Path:
    """``path``, or the header ``path.hea`` when ``path`` does not exist and names a WFDB record
    by its base name (the extension appended, not replaced: ``rec.1`` is ``rec.1.hea``)."""
    path = Path(path)
    if not path.exists() and path.name:
        header = path.with_name(path.name + ".hea")
        if header.is_file():
            return header
    return path


def record_path(path: PathLike) -> Path:
    """The path that stands for the record ``path`` belongs to: the ``.hea`` of a WFDB signal
    file (or of a ``.mat`` beside one), else ``path`` itself."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in WFDB_SIGNAL_SUFFIXES or (suffix == ".mat" and header_of(path).exists()):
        return header_of(path)
    return path


def is_record_file(path: Path) -> bool:
    """Whether a file found in a folder or by a pattern is listed as a record: a known ECG suffix,
    a WFDB signal file only with its header, a ``.txt`` only when it looks like a table of samples,
    and no known table of metadata (``ptbxl_database.csv``, ``*_dx_mapping.csv``...)."""
    suffix = path.suffix.lower()
    if suffix in WFDB_SIGNAL_SUFFIXES:
        return header_of(path).exists()
    if suffix not in RECORD_SUFFIXES:
        return False
    if suffix == ".txt":  # a folder of text records often holds READMEs and lists of names too
        return looks_like_text_record(path)
    name = path.name.lower()
    return not (suffix == ".csv" and (name in METADATA_NAMES or METADATA_PATTERN.match(name)))


def has_magic(text: str) -> bool:
    """Whether ``text`` holds a glob character."""
    return any(ch in text for ch in "*?[")


def _holds_rows(path: Path, dataset: str | None) -> bool:
    """Whether the signal array of a ``.npy``/``.npz`` is 3-D (False when it cannot be read)."""
    try:
        if path.suffix.lower() == ".npy":
            fh, header = open_npy(path)
            fh.close()
            return len(header.shape) == 3
        with NpzArchive(path) as archive:
            return len(archive.header(choose_signal_key(path, archive.names, dataset)).shape) == 3
    except (CremaError, OSError, ValueError):
        return False


__all__ = ["InputKind", "classify_input", "file_kind", "is_stack", "header_of", "record_path",
           "is_record_file", "has_magic", "RECORD_SUFFIXES", "WFDB_SIGNAL_SUFFIXES", "HDF5_SUFFIXES",
           "TEXT_SUFFIXES", "STACK_SUFFIXES", "SUFFIX_KINDS"]
