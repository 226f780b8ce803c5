"""``crema convert``: rewrite ECG records in another file format.

Clinics export HL7 aECG, GE MUSE XML or DICOM; research tools want WFDB or EDF. Any file that
``read_record`` reads is written as ``OUT/<name>.<ext>`` by the writers in :mod:`.formats` (or
``wfdb.wrsamp``). Every output appears whole or not at all: files are written beside their target
and renamed onto it, and for WFDB the signal file is renamed before its header, so that a reader
never finds a header whose signal is missing.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from ..atomic import default_file_mode
from ..errors import CremaError, WriteError, printable
from . import formats
from .formats.common import require_finite
from .readers import find_records, read_record
from .recording import Recording

SUFFIXES = {"wfdb": ".hea", "edf": ".edf", "dicom": ".dcm", "aecg": ".xml", "muse": ".xml"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "convert", help="rewrite ECG records as WFDB, EDF+, DICOM, HL7 aECG or GE MUSE XML",
        description="Read each record of the INPUTs (files in any format crema reads, folders "
                    "searched recursively, glob patterns) and write it to DIR/NAME.EXT in the "
                    "format --to names, NAME being its file name without the suffix. A "
                    "record that cannot be read or written is reported and skipped; the exit "
                    "status is then 1.")
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT")
    p.add_argument("--to", required=True, choices=sorted(SUFFIXES), help="output format")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="folder for the outputs")
    p.add_argument("--fs", type=float, default=None, metavar="HZ",
                   help="sampling rate of .npy/.csv inputs, which carry none")
    p.add_argument("--force", action="store_true", help="replace outputs that already exist")
    p.set_defaults(func=run_convert)


def output_name(path: Path) -> str:
    """The output's base name: the input's stem, with characters WFDB refuses in record names
    (anything but letters, digits, ``_`` and ``-``) replaced by ``_``."""
    return re.sub(r"[^\w-]", "_", path.stem) or "record"


def convert_record(rec: Recording, fmt: str, out: Path, name: str) -> Path:
    """Write ``rec`` as ``out/name`` + the suffix of ``fmt``; returns the path written."""
    target = out / (name + SUFFIXES[fmt])
    if fmt == "wfdb":
        _write_wfdb(rec, out, name)
    elif fmt == "edf":
        formats.write_edf(rec, target)
    elif fmt == "dicom":
        formats.write_dicom_ecg(rec, target)
    elif fmt == "aecg":
        formats.write_aecg(rec, target)
    else:  # muse: all leads, so that converting back loses none
        formats.write_muse_xml(rec, target, independent_only=False)
    return target


def _write_wfdb(rec: Recording, out: Path, name: str) -> None:
    import wfdb

    signal = rec.signal.T.astype(np.float64)  # wfdb wants (T, n_leads)
    require_finite(signal, out / f"{name}.hea", "WFDB")
    try:
        tmp = Path(tempfile.mkdtemp(dir=out, prefix=f".{name}."))
    except OSError as exc:
        raise WriteError(out / f"{name}.hea", exc) from None
    try:
        wfdb.wrsamp(name, fs=rec.fs, units=["mV"] * len(rec.leads), sig_name=list(rec.leads),
                    p_signal=signal, fmt=["16"] * len(rec.leads), write_dir=str(tmp))
        for suffix in (".dat", ".hea"):  # the signal first: a header never points at nothing
            os.chmod(tmp / f"{name}{suffix}", default_file_mode())
            os.replace(tmp / f"{name}{suffix}", out / f"{name}{suffix}")
    except OSError as exc:
        raise WriteError(out / f"{name}.hea", exc) from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def record_problem(path: Path, exc: Exception) -> str:
    """One line for a record that could not be converted: CREMA's own message (which names the
    file), or the file, the exception's type and its first line for anything else."""
    if isinstance(exc, CremaError):
        return str(exc)
    detail = str(exc).strip().splitlines()
    return f"{path}: {type(exc).__name__}: {detail[0] if detail else 'unexpected error'}"


def run_convert(args: argparse.Namespace) -> int:
    paths = find_records(args.inputs)
    names = [output_name(path) for path in paths]
    seen: dict[str, Path] = {}
    for path, name in zip(paths, names):
        if name in seen:
            raise CremaError(f"{printable(str(seen[name]))} and {printable(str(path))} would both be written "
                             f"as {name}{SUFFIXES[args.to]}; convert them into different folders")
        seen[name] = path
    if not args.force:
        existing = [t for t in (args.out / (name + SUFFIXES[args.to]) for name in names) if t.exists()]
        if existing:
            raise CremaError(f"{printable(str(existing[0]))} already exists "
                             f"({len(existing)} output(s) in all); pass --force to replace them")
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(args.out, exc) from None
    failed = 0
    for path, name in zip(paths, names):
        try:
            target = convert_record(read_record(path, fs=args.fs), args.to, args.out, name)
        except WriteError:  # the output cannot be written (a full disk): the next one could not either
            raise
        except Exception as exc:  # noqa: BLE001 - one bad record is reported; the others are converted
            print(f"crema convert: error: {printable(record_problem(path, exc))}", file=sys.stderr)
            failed += 1
            continue
        print(printable(str(target)))
    if failed:
        print(f"crema convert: error: {failed} of {len(names)} record(s) not converted", file=sys.stderr)
    return 1 if failed else 0
