"""Read one ECG file of any supported format into a :class:`Recording` (mV, file's own leads).

Formats, detected by suffix (and, for ``.mat``, by content):

* ``.hea`` (or its ``.dat``/``.xyz``): WFDB, read with the ``wfdb`` library (PTB-XL, PTB
  Diagnostic, PhysioNet/CinC ``.hea`` + ``.mat``). When ``wfdb`` refuses a CinC header (the
  Georgia quirk: the first line names ``E00271.mat``), the header is parsed here and ``val`` is
  read from the MATLAB file with scipy.
* ``.mat`` with a sibling ``.hea``: as above. Without one: the original CPSC-2018 struct
  (``ECG`` with ``sex``, ``age``, ``data`` 12 x N at 500 Hz).
* ``.npy`` / ``.npz`` / ``.csv``: a plain array ``(12, T)`` or ``(T, 12)``; ``fs`` is required
  (an ``.npz`` may carry ``fs`` and ``leads`` arrays; a ``.csv`` may have a header row of lead
  names).
* ``.xml`` (HL7 aECG, GE MUSE), ``.dcm`` (DICOM waveform), ``.edf``: :mod:`crema.data.formats`.

Every failure is a :class:`crema.errors.ReadError` naming the file and the problem.
"""
from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..config import STANDARD_LEADS
from ..errors import CremaError, ReadError, is_utf8_name, printable
from .leads import UnknownLeadError, canonical_lead, duplicate_leads
from .rates import rate_problem
from .recording import Recording
from .units import mv_per_unit
from .wfdb_fast import fast_path_enabled, read_fast

PathLike = str | os.PathLike

# Suffixes find_records lists when it walks a folder.
RECORD_SUFFIXES = frozenset({".hea", ".mat", ".npy", ".npz", ".csv", ".xml", ".dcm", ".edf",
                             ".h5", ".hdf5", ".hdf"})
# Names an .npz may give its signal array, in order of preference (``tracings``: CODE-15%).
SIGNAL_KEYS = ("signal", "signals", "ecg", "data", "x", "tracings")
# Names of record-id arrays (in an .npz or HDF5 file) or columns (in an ids table).
ID_KEYS = ("record_id", "record_ids", "ids", "id", "exam_id", "ecg_id")
# Arrays of an .npz that describe the signal rather than hold it.
NPZ_META_KEYS = frozenset({"fs", "sampling_rate", "leads", *ID_KEYS})
# Signal files that belong to a header and are never records on their own.
WFDB_SIGNAL_SUFFIXES = frozenset({".dat", ".xyz"})
# Table files found beside real data that are not recordings.
METADATA_NAMES = frozenset({"ptbxl_database.csv", "scp_statements.csv", "ecg_ids.csv",
                            "index.csv", "records.csv"})
METADATA_PATTERN = re.compile(r".*(dx_mapping|_mapping|_labels?|_database|statements)\.csv$", re.I)

# Bytes per sample of the WFDB storage formats, to check a signal file against its header.
_WFDB_BYTES_PER_SAMPLE = {"8": 1, "16": 2, "24": 3, "32": 4, "61": 2, "80": 1, "160": 2,
                          "212": 1.5, "310": 4 / 3, "311": 4 / 3}
# CPSC 2018 originals and the CinC challenge data are all at this rate.
CPSC_FS = 500.0


# ----------------------------------------------------------------------------- public API

def read_record(path: PathLike, fs: float | None = None,
                leads: Sequence[str] | None = None) -> Recording:
    """Read one ECG file.

    Args:
        path: the file (for WFDB the ``.hea``, ``.dat`` or ``.mat``).
        fs: sampling rate in Hz, required for formats that do not carry one
            (``.npy``/``.csv``, an ``.npz`` without ``fs``); ignored by the others.
        leads: row names for formats that carry none (default the standard 12 in order);
            ignored by formats that name their own leads.

    Returns:
        ``Recording`` with ``signal (n_leads, T)`` float32 in mV and ``meta`` holding what the
        file says: ``age`` (float | None), ``sex`` ('M' | 'F' | None), ``dx`` (list of str, CinC).

    Raises:
        ReadError: the file is missing, of an unknown kind, truncated, inconsistent with its
            header, empty, contains NaN/inf, has an implausible sampling rate, names a lead that
            is not an ECG lead or one lead twice, or its name is not valid UTF-8.
    """
    path = Path(path)
    if not is_utf8_name(path):
        # Every output names its records in UTF-8 text (index.csv, errors.csv, reports), and a
        # resumed run matches records by that name; such a file could never be matched again.
        raise ReadError(path, "file name is not valid UTF-8; rename the file")
    suffix = path.suffix.lower()
    if suffix in WFDB_SIGNAL_SUFFIXES:
        path, suffix = _header_of(path), ".hea"
    if not path.exists():
        raise ReadError(path, "no such file")
    if path.is_dir():
        raise ReadError(path, "is a folder, not a file (use find_records or crema prepare)")
    try:
        rec = _dispatch(path, suffix, fs, leads)
    except ReadError as exc:
        if exc.path:
            raise
        raise ReadError(path, exc.problem) from None
    except (CremaError, ValueError, OSError, KeyError, IndexError, TypeError) as exc:
        # Anything a format reader trips over is reported as this file's problem.
        raise ReadError(path, f"{type(exc).__name__}: {exc}" if not isinstance(exc, CremaError)
                        else str(exc)) from None
    _validate(path, rec)
    return rec


def find_records(inputs: PathLike | Iterable[PathLike]) -> list[Path]:
    """One path per record from files, folders (recursive) and glob patterns, sorted.

    WFDB pairs are listed by their ``.hea``; a ``.mat`` or ``.dat`` with a sibling ``.hea`` is not
    listed on its own; hidden files and known table files (``ptbxl_database.csv``,
    ``*_dx_mapping.csv``, ...) found in folders are left out. Files named explicitly are kept.
    Links to folders are not followed when walking a folder or a ``**`` pattern, and a file
    reached by several paths (a link beside its target) is listed once.
    """
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    found: set[Path] = set()
    for item in inputs:
        text = str(item)
        if _has_magic(text):
            found.update(_record_path(p) for p in _expand_glob(text)
                         if p.is_file() and _is_record_file(p))
            continue
        path = Path(item)
        if path.is_dir():
            found.update(_record_path(p) for p in path.rglob("*")
                         if p.is_file() and not _is_hidden(p, path) and _is_record_file(p))
        elif path.is_file():
            found.add(_record_path(path))
        else:
            raise ReadError(path, "no such file or folder")
    return _unique_files(found)


def _has_magic(text: str) -> bool:
    return any(ch in text for ch in "*?[")


def _expand_glob(pattern: str) -> list[Path]:
    """Paths matching ``pattern`` (``**`` = any depth, as ``glob(recursive=True)``) without
    following links to folders inside ``**`` (a link loop such as ``loop -> .`` would list every
    file dozens of times) and, as ``glob`` does, without hidden names the pattern does not spell."""
    parts = Path(pattern).parts
    first_magic = next(i for i, part in enumerate(parts) if _has_magic(part))
    root = Path(*parts[:first_magic]) if first_magic else Path(".")
    rest = parts[first_magic:]
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

def _dispatch(path: Path, suffix: str, fs: float | None, leads: Sequence[str] | None) -> Recording:
    if suffix == ".hea":
        return read_wfdb(path)
    if suffix == ".mat":
        header = path.with_suffix(".hea")
        return read_wfdb(header) if header.exists() else read_cpsc_struct(path)
    if suffix in (".npy", ".npz", ".csv"):
        return read_array_file(path, fs=fs, leads=leads)
    if suffix == ".xml":
        from .formats import read_xml_ecg
        return read_xml_ecg(path)
    if suffix == ".dcm":
        from .formats import read_dicom_ecg
        return read_dicom_ecg(path)
    if suffix == ".edf":
        from .formats import read_edf_ecg
        return read_edf_ecg(path)
    if suffix in (".h5", ".hdf5", ".hdf"):
        raise ReadError(path, "an HDF5 file is a stack of records: crema embed / predict read it row "
                              "by row (crema.data.stacks.RecordStack), crema prepare makes a corpus of it")
    raise ReadError(path, f"unknown ECG file type {path.suffix!r} (supported: .hea/.dat WFDB, "
                          ".mat CinC or CPSC-2018, .npy, .npz, .csv, .xml, .dcm, .edf, HDF5 stacks)")


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


# ----------------------------------------------------------------------------- WFDB

def read_wfdb(header: Path) -> Recording:
    """A WFDB record from its ``.hea``: single-file format 16/212 records through
    :mod:`crema.data.wfdb_fast` (bit-identical to ``wfdb``, over 10x faster), everything else via
    ``wfdb.rdrecord``, falling back to the CinC ``.mat`` reader when ``wfdb`` rejects the header;
    the signal files are checked against the header first, whichever reads them."""
    parsed = parse_header(header)
    _check_signal_files(header, parsed)
    record = read_fast(header) if fast_path_enabled() else None
    if record is None:
        record = _rdrecord(header, parsed)
        if isinstance(record, Recording):
            return record
    if record.p_signal is None:
        raise ReadError(header, "WFDB returned no physical signal")
    if not math.isclose(float(record.fs), parsed["fs"], rel_tol=1e-9):
        # wfdb replaces a rate it cannot use (nan, inf, negative) by its default 250 Hz
        raise ReadError(header, f"WFDB read {record.fs} Hz but the header says {parsed['fs']:g} Hz")
    scale = np.array([mv_per_unit(u or "mV", header, "a signal") for u in (record.units or ["mV"] * record.n_sig)],
                     dtype=np.float64)
    signal = (record.p_signal * scale).T
    return Recording(signal=signal, fs=float(record.fs), leads=tuple(record.sig_name),
                     record_id=header.stem, meta=parse_comments(record.comments or []))


def _rdrecord(header: Path, parsed: dict):
    """``wfdb.rdrecord`` of ``header``, or the CinC ``.mat`` reader's Recording when wfdb
    refuses a header whose signals are all in ``.mat`` files."""
    import wfdb  # imported here so that `crema --help` stays fast

    try:
        return wfdb.rdrecord(str(header.with_suffix("")))
    except Exception as exc:  # wfdb raises many types; the fallback decides what is fatal
        if all(s["file"].lower().endswith(".mat") for s in parsed["signals"]):
            return read_cinc_mat(header, parsed)
        raise ReadError(header, f"WFDB could not read the record: {exc}") from None


def parse_header(header: Path) -> dict:
    """The fields of a WFDB header this module needs, parsed without ``wfdb``.

    Returns a dict with ``n_sig``, ``fs``, ``sig_len``, ``comments`` (list of str) and
    ``signals``: a list of dicts ``file, fmt, offset, gain, baseline, units, name``.
    """
    try:
        # surrogateescape keeps bytes that are not UTF-8, so that a file name in the header still
        # names the file on disk (errors="replace" would turn it into a name that does not exist)
        lines = header.read_bytes().decode("utf-8", "surrogateescape").splitlines()
    except OSError as exc:
        raise ReadError(header, f"cannot read the header: {exc}") from None
    comments = [ln.lstrip("#").strip() for ln in lines if ln.startswith("#")]
    body = [ln.split() for ln in lines if ln.strip() and not ln.startswith("#")]
    if not body:
        raise ReadError(header, "empty WFDB header")
    record_line = body[0]
    try:
        n_sig = int(record_line[1])
        fs = float(record_line[2].split("/")[0]) if len(record_line) > 2 else 250.0
        sig_len = int(record_line[3]) if len(record_line) > 3 else None
    except (IndexError, ValueError):
        raise ReadError(header, f"bad record line {' '.join(record_line)!r}") from None
    if n_sig <= 0:
        raise ReadError(header, "header declares no signals")
    problem = rate_problem(record_line[2].split("/")[0]) if len(record_line) > 2 else None
    if problem:
        raise ReadError(header, f"header's {problem}")
    if len(body) - 1 < n_sig:
        raise ReadError(header, f"header declares {n_sig} signals but describes {len(body) - 1}")
    signals = [_parse_signal_line(header, fields) for fields in body[1:1 + n_sig]]
    for name in [record_line[0]] + [s["file"] for s in signals]:
        if not is_utf8_name(name):
            raise ReadError(header, f"the header names '{printable(name)}', which is not valid UTF-8; "
                                    "rename the files and the names in the header")
    return dict(n_sig=n_sig, fs=fs, sig_len=sig_len, comments=comments, signals=signals)


def _parse_signal_line(header: Path, fields: list[str]) -> dict:
    try:
        fmt_field = fields[1]
        fmt = re.split(r"[x:+]", fmt_field)[0]
        offset = int(fmt_field.split("+")[1]) if "+" in fmt_field else 0
        gain_field = fields[2] if len(fields) > 2 else "200"
        match = re.match(r"^([-+0-9.eE]+)(?:\(([-0-9]+)\))?(?:/(\S+))?$", gain_field)
        if not match:
            raise ValueError(gain_field)
        gain = float(match.group(1)) or 200.0  # WFDB: a gain of 0 means the default 200
        units = match.group(3) or "mV"
        adc_zero = int(fields[4]) if len(fields) > 4 else 0
        baseline = int(match.group(2)) if match.group(2) is not None else adc_zero
        name = " ".join(fields[8:]) if len(fields) > 8 else ""
    except (IndexError, ValueError):
        raise ReadError(header, f"bad signal line {' '.join(fields)!r}") from None
    return dict(file=fields[0], fmt=fmt, offset=offset, gain=gain, baseline=baseline,
                units=units, name=name)


def _check_signal_files(header: Path, parsed: dict) -> None:
    """Each signal file must exist and hold exactly the samples the header declares
    (``wfdb`` itself silently reads fewer samples when the header says fewer)."""
    sig_len = parsed["sig_len"]
    by_file: dict[str, list[dict]] = {}
    for sig in parsed["signals"]:
        by_file.setdefault(sig["file"], []).append(sig)
    for name, sigs in by_file.items():
        file = header.parent / name
        if not file.exists():
            raise ReadError(header, f"signal file {name} is missing")
        size = file.stat().st_size
        if size == 0:
            raise ReadError(file, "signal file is empty")
        if sig_len is None or sig_len == 0:
            raise ReadError(header, "header declares zero samples")
        bps = _WFDB_BYTES_PER_SAMPLE.get(sigs[0]["fmt"])
        if bps is None:
            continue  # an exotic format: leave the check to wfdb
        expected = math.ceil(sig_len * len(sigs) * bps) + sigs[0]["offset"]
        if size != expected:
            raise ReadError(file, f"holds {size} bytes but the header ({header.name}) declares "
                                  f"{sig_len} samples x {len(sigs)} signals = {expected} bytes "
                                  f"(truncated file or wrong sample count)")


def read_cinc_mat(header: Path, parsed: dict | None = None) -> Recording:
    """A PhysioNet/CinC record read without ``wfdb``: header parsed here, ``val`` (n_sig x N ADC
    units) from the ``.mat``, physical = (val - baseline) / gain."""
    from scipy.io import loadmat

    parsed = parsed or parse_header(header)
    mat_path = header.parent / parsed["signals"][0]["file"]
    if not mat_path.exists():
        mat_path = header.with_suffix(".mat")
    try:
        val = loadmat(str(mat_path))["val"]
    except KeyError:
        raise ReadError(mat_path, "MATLAB file has no 'val' array") from None
    except Exception as exc:
        raise ReadError(mat_path, f"cannot read MATLAB file: {exc}") from None
    val = np.asarray(val, dtype=np.float64)
    n_sig, sig_len = parsed["n_sig"], parsed["sig_len"]
    if val.shape != (n_sig, sig_len):
        raise ReadError(mat_path, f"'val' has shape {val.shape} but the header ({header.name}) "
                                  f"declares {n_sig} signals x {sig_len} samples")
    sigs = parsed["signals"]
    baseline = np.array([s["baseline"] for s in sigs], dtype=np.float64)[:, None]
    gain = np.array([s["gain"] for s in sigs], dtype=np.float64)[:, None]
    scale = np.array([mv_per_unit(s["units"] or "mV", header, "a signal") for s in sigs], dtype=np.float64)[:, None]
    signal = (val - baseline) / gain * scale
    return Recording(signal=signal, fs=parsed["fs"], leads=tuple(s["name"] for s in sigs),
                     record_id=header.stem, meta=parse_comments(parsed["comments"]))


def parse_comments(comments: Iterable[str]) -> dict:
    """``age``, ``sex`` and CinC ``dx`` codes from header comment lines (any case, with or
    without a space after ``#``); unknown values become None."""
    meta: dict = {"age": None, "sex": None}
    for line in comments:
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key == "age":
            meta["age"] = parse_age(value)
        elif key == "sex":
            meta["sex"] = parse_sex(value)
        elif key == "dx":
            meta["dx"] = [code.strip() for code in value.split(",") if code.strip()]
    return meta


def parse_age(value) -> float | None:
    """A finite non-negative age in years, else None (``NaN``, ``Unknown``, empty)."""
    try:
        age = float(np.asarray(value).squeeze()) if not isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        return None
    return age if math.isfinite(age) and age >= 0 else None


def parse_sex(value) -> str | None:
    """'M', 'F' or None from ``Male``/``female``/``M``/``F`` (anything else is unknown)."""
    text = str(value).strip().lower()
    if text in ("m", "male", "man"):
        return "M"
    if text in ("f", "female", "woman"):
        return "F"
    return None


# ----------------------------------------------------------------------------- CPSC 2018 struct

def read_cpsc_struct(path: Path) -> Recording:
    """The original CPSC 2018 MATLAB file: struct ``ECG`` with ``sex``, ``age`` and
    ``data`` (12 x N, mV, 500 Hz, standard lead order)."""
    from scipy.io import loadmat

    try:
        mat = loadmat(str(path))
    except Exception as exc:
        raise ReadError(path, f"cannot read MATLAB file: {exc}") from None
    if "ECG" not in mat:
        if "val" in mat:
            raise ReadError(path, "a CinC .mat needs its .hea header beside it")
        keys = [k for k in mat if not k.startswith("__")]
        raise ReadError(path, f"MATLAB file holds neither an 'ECG' struct nor 'val' (keys: {keys})")
    ecg = mat["ECG"]
    try:
        fields = {name: ecg[name][0, 0] for name in ecg.dtype.names}
        data = np.asarray(fields["data"], dtype=np.float64)
    except (KeyError, TypeError, IndexError, ValueError):
        raise ReadError(path, "'ECG' struct has no 'data' field") from None
    if data.ndim != 2 or data.shape[0] != len(STANDARD_LEADS):
        raise ReadError(path, f"'ECG.data' has shape {data.shape}, expected (12, N)")
    sex = fields.get("sex")
    sex = parse_sex(np.asarray(sex).ravel()[0]) if sex is not None and np.asarray(sex).size else None
    age = fields.get("age")
    age = parse_age(age) if age is not None and np.asarray(age).size else None
    return Recording(signal=data, fs=CPSC_FS, leads=STANDARD_LEADS, record_id=path.stem,
                     meta={"age": age, "sex": sex})


# ----------------------------------------------------------------------------- plain arrays

def read_array_file(path: Path, fs: float | None = None,
                    leads: Sequence[str] | None = None) -> Recording:
    """``.npy`` / ``.npz`` / ``.csv`` holding one record ``(n_leads, T)`` or ``(T, n_leads)``."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = _load_npy(path)
    elif suffix == ".npz":
        array, fs, leads = _load_npz(path, fs, leads)
    else:
        array, header_leads = _load_csv(path)
        if leads is None and header_leads is not None:
            leads = header_leads
            array = array.T  # a header row names columns, so rows are time
    if fs is None:
        raise ReadError(path, "sampling rate unknown: pass fs (crema embed/predict --fs HZ, "
                              "crema prepare --input-fs HZ)")
    problem = real_dtype_problem(array)
    if problem:
        raise ReadError(path, problem)
    leads = tuple(leads) if leads is not None else STANDARD_LEADS
    signal = orient_leads_first(path, array, len(leads))
    return Recording(signal=signal, fs=float(fs), leads=leads, record_id=path.stem,
                     meta={"age": None, "sex": None})


def orient_leads_first(path: Path, array: np.ndarray, n_leads: int) -> np.ndarray:
    """``(n_leads, T)`` from ``(n_leads, T)`` or ``(T, n_leads)``, decided by which dimension
    matches the lead count (:func:`lead_axis`)."""
    if array.ndim != 2:
        raise ReadError(path, f"expected a 2-D array (leads x samples), got shape {array.shape}"
                              + (" (a stack of records: crema embed / predict and crema prepare read it)"
                                 if array.ndim == 3 else ""))
    if array.size == 0:
        raise ReadError(path, f"zero-length signal (shape {array.shape})")
    if lead_axis(path, array.shape, n_leads) == 0:
        return np.asarray(array, dtype=np.float32)
    return np.ascontiguousarray(np.asarray(array, dtype=np.float32).T)


def lead_axis(path: Path | str | None, shape: Sequence[int], n_leads: int) -> int:
    """Which of the two dimensions ``shape`` of one record ``(n_leads, T)`` or ``(T, n_leads)``
    holds the leads (0 or 1): the one whose size is the lead count; an error when neither or both
    are."""
    rows_match, cols_match = shape[0] == n_leads, shape[1] == n_leads
    if rows_match and cols_match:
        raise ReadError(path, f"ambiguous shape {tuple(shape)}: both dimensions equal the lead "
                              f"count {n_leads}")
    if rows_match:
        return 0
    if cols_match:
        return 1
    raise ReadError(path, f"shape {tuple(shape)} matches neither ({n_leads}, T) nor (T, {n_leads})")


def choose_signal_key(path: Path, names: Sequence[str], dataset: str | None = None) -> str:
    """Which array of an ``.npz`` holds the signal: ``dataset`` when given, else the first of
    :data:`SIGNAL_KEYS`, else the only array that is not metadata (rate, leads, ids)."""
    if dataset:
        if dataset not in names:
            raise ReadError(path, f"no array {dataset!r} (arrays: {', '.join(sorted(names))})")
        return dataset
    for key in SIGNAL_KEYS:
        if key in names:
            return key
    candidates = [name for name in names if name not in NPZ_META_KEYS]
    if len(candidates) == 1:
        return candidates[0]
    raise ReadError(path, f"cannot tell which array is the signal among {sorted(names)} "
                          "(name it 'signal', or pass --dataset NAME)")


def real_dtype_problem(array: np.ndarray) -> str | None:
    """Why ``array`` cannot hold an ECG (booleans, complex numbers, text...), or None for real
    numbers (integers or floats)."""
    kind = np.asarray(array).dtype.kind
    if kind in "iuf":
        return None
    what = {"b": "booleans", "c": "complex numbers"}.get(kind, f"values of dtype {np.asarray(array).dtype}")
    return f"the array holds {what}; an ECG is real numbers (integers or floats)"


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickled" in str(exc):  # numpy's own message suggests loading it unsafely; never do
            raise ReadError(path, "holds pickled Python objects, which CREMA never loads; "
                                  "save a plain numeric array") from None
        raise ReadError(path, f"not a readable .npy array: {exc}") from None
    except Exception as exc:
        raise ReadError(path, f"not a readable .npy array: {exc}") from None


def _load_npz(path: Path, fs, leads):
    try:
        with np.load(path, allow_pickle=False) as archive:
            contents = {key: archive[key] for key in archive.files}
    except Exception as exc:
        raise ReadError(path, f"not a readable .npz archive: {exc}") from None
    if fs is None and "fs" in contents:
        fs = float(np.asarray(contents.pop("fs")).squeeze())
    contents.pop("fs", None)
    if leads is None and "leads" in contents:
        leads = [str(name) for name in np.asarray(contents.pop("leads")).ravel()]
    contents.pop("leads", None)
    return contents[choose_signal_key(path, list(contents))], fs, leads


def _load_csv(path: Path) -> tuple[np.ndarray, list[str] | None]:
    try:
        # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark, which is not a lead name
        with open(path, newline="", encoding="utf-8-sig") as fh:
            first = fh.readline()
    except OSError as exc:
        raise ReadError(path, f"cannot read: {exc}") from None
    except UnicodeDecodeError:
        raise ReadError(path, "not a UTF-8 text file (a CSV table of numbers is expected)") from None
    if not first.strip():
        raise ReadError(path, "empty CSV file")
    cells = [c.strip().strip('"') for c in first.split(",")]
    has_header = not all(_is_number(c) for c in cells)
    try:
        array = np.loadtxt(path, delimiter=",", skiprows=1 if has_header else 0,
                           dtype=np.float64, ndmin=2, encoding="utf-8-sig")
    except ValueError as exc:
        raise ReadError(path, f"not a numeric CSV table: {exc}") from None
    return array, (cells if has_header else None)


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# ----------------------------------------------------------------------------- file listing

def _header_of(path: Path) -> Path:
    return path.with_suffix(".hea")


def _record_path(path: Path) -> Path:
    """The path that stands for the record ``path`` belongs to (its ``.hea`` for WFDB files)."""
    suffix = path.suffix.lower()
    if suffix in WFDB_SIGNAL_SUFFIXES or (suffix == ".mat" and path.with_suffix(".hea").exists()):
        return path.with_suffix(".hea")
    return path


def _is_record_file(path: Path) -> bool:
    suffix = path.suffix.lower()
    if suffix in WFDB_SIGNAL_SUFFIXES:
        return path.with_suffix(".hea").exists()
    if suffix not in RECORD_SUFFIXES:
        return False
    name = path.name.lower()
    return not (suffix == ".csv" and (name in METADATA_NAMES or METADATA_PATTERN.match(name)))


def _is_hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)
