"""One record as a plain array, ``(n_leads, T)`` or ``(T, n_leads)``: ``.npy``, ``.npz`` (which
may carry ``fs`` and ``leads`` arrays) or a text table ``.csv`` / ``.txt`` (comma-, semicolon- or
whitespace-separated; it may have a header row of lead names, and a leading sample-counter column
0, 1, 2, ... is dropped). Values are in ``units`` (default mV) and converted to mV.
The rules for telling the lead axis and the signal array apart are shared with the record
stacks (:mod:`crema.data.stacks`) and the API's in-memory arrays (:mod:`crema.use.inputs`)."""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...config import STANDARD_LEADS
from ...errors import ReadError
from ...limits import RECORD_BYTES, TEXT_BYTES
from ..leads import UnknownLeadError, canonical_lead
from ..recording import Recording
from ..units import mv_per_unit
from .npyfile import NpzArchive, open_npy, read_data

# Names an .npz may give its signal array, in order of preference (``tracings``: CODE-15%).
SIGNAL_KEYS = ("signal", "signals", "ecg", "data", "x", "tracings")
# Names of record-id arrays (in an .npz or HDF5 file) or columns (in an ids table).
ID_KEYS = ("record_id", "record_ids", "ids", "id", "exam_id", "ecg_id")
# Names of a stored sampling rate (an .npz array, an HDF5 attribute).
RATE_KEYS = ("fs", "sampling_rate", "sampling_frequency", "sample_rate")
# Arrays of an .npz that describe the signal rather than hold it.
NPZ_META_KEYS = frozenset({*RATE_KEYS, "leads", *ID_KEYS})
# Most lead names a file may list (distinct known leads are far fewer): a bound on what is read.
MAX_LEAD_NAMES = 64
# Suffixes of records stored as text tables.
TEXT_SUFFIXES = frozenset({".csv", ".txt"})
# Bytes read to tell a text record from other text (a README, a list of record names).
SNIFF_BYTES = 4096


def read_array_file(path: Path, fs: float | None = None, leads: Sequence[str] | None = None,
                    units: str | None = None) -> Recording:
    """``.npy`` / ``.npz`` / ``.csv`` / ``.txt`` holding one record ``(n_leads, T)`` or
    ``(T, n_leads)`` in ``units`` (default mV; ``uV``, ``V``... as :func:`crema.data.units.mv_per_unit`)."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = _load_npy(path)
    elif suffix == ".npz":
        array, fs, leads = _load_npz(path, fs, leads)
    else:
        array, header_leads = _load_text(path)
        array, header_leads = drop_sample_counter(array, header_leads,
                                                  len(leads) if leads is not None else len(STANDARD_LEADS))
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
    if units is not None:
        signal = signal * np.float32(mv_per_unit(units, path, "the signal"))
    return Recording(signal=signal, fs=float(fs), leads=leads, record_id=path.stem,
                     meta={"age": None, "sex": None})


def drop_sample_counter(array: np.ndarray, header: list[str] | None, n_leads: int
                        ) -> tuple[np.ndarray, list[str] | None]:
    """``(T, columns)`` text table without its leading sample-counter column (0, 1, 2, ... or
    1, 2, 3, ..., each row one more), when it has one: with a header, when the first column's name
    is not a lead; without one, when dropping it leaves ``n_leads`` columns (a lead is never a
    perfect counter, but the check stays narrow so that no real lead is ever dropped)."""
    if array.ndim != 2 or array.shape[1] < 2 or array.shape[0] < 3 or not _is_counter(array[:, 0]):
        return array, header
    if header is not None:
        if _is_lead_name(header[0]):
            return array, header
        return array[:, 1:], header[1:]
    if array.shape[1] == n_leads + 1:
        return array[:, 1:], None
    return array, None


def _is_counter(column: np.ndarray) -> bool:
    start = column[0]
    return start in (0, 1) and bool(np.array_equal(column, start + np.arange(len(column))))


def _is_lead_name(name: str) -> bool:
    try:
        canonical_lead(name)
        return True
    except UnknownLeadError:
        return False


def looks_like_text_record(path: Path) -> bool:
    """True when the first line of ``path`` is a row of at least two numbers, or a header
    followed by such a row: what a text record looks like, unlike a README or a list of record
    names found in the same folder (read: the first :data:`SNIFF_BYTES` bytes)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(SNIFF_BYTES).decode("utf-8-sig", errors="replace")
    except OSError:
        return False
    lines = [line for line in head.splitlines() if line.strip()][:2]
    return any(len(cells) >= 2 and all(_is_number(c) for c in cells)
               for cells in (_split_cells(line) for line in lines))


def orient_leads_first(path: Path, array: np.ndarray, n_leads: int) -> np.ndarray:
    """``(n_leads, T)`` from ``(n_leads, T)`` or ``(T, n_leads)``, decided by which dimension
    matches the lead count (:func:`lead_axis`)."""
    require_2d(path, array.shape)
    if array.size == 0:
        raise ReadError(path, f"zero-length signal (shape {array.shape})")
    if lead_axis(path, array.shape, n_leads) == 0:
        return np.asarray(array, dtype=np.float32)
    return np.ascontiguousarray(np.asarray(array, dtype=np.float32).T)


def require_2d(path: Path, shape: Sequence[int]) -> None:
    """Refuse a shape that is not one record ``(leads, samples)``."""
    if len(shape) != 2:
        raise ReadError(path, f"expected a 2-D array (leads x samples), got shape {tuple(shape)}"
                              + (" (a stack of records: crema embed / predict and crema prepare read it)"
                                 if len(shape) == 3 else ""))


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


def as_rate(where: Path, key: str, value: Any) -> float:
    """A stored sampling rate ``key=value`` as a positive finite number of Hz."""
    try:
        rate = float(np.asarray(value).squeeze())
    except (TypeError, ValueError):
        raise ReadError(where, f"stored sampling rate {key}={value!r} is not a number") from None
    if not math.isfinite(rate) or rate <= 0:
        raise ReadError(where, f"stored sampling rate {key}={rate} is not a positive number")
    return rate


def resolve_rate(path: Path, given: float | None, stored: float | None) -> float | None:
    """The rate of an array file: the stored one, refusing a different ``given`` (reading a
    250 Hz record as 500 Hz would silently halve its heart rate), else ``given`` (None: unknown)."""
    if stored is not None:
        if given is not None and not math.isclose(float(given), stored, rel_tol=1e-6):
            raise ReadError(path, f"the file stores fs={stored:g} Hz but fs={float(given):g} Hz was given")
        return stored
    return None if given is None else float(given)


def _load_npy(path: Path) -> np.ndarray:
    """The one record of a ``.npy`` as float32, its declared size checked before reading."""
    try:
        fh, header = open_npy(path)
    except OSError as exc:
        raise ReadError(path, f"cannot read: {exc}") from None
    with fh:
        return _read_record_array(fh, header, path)


def _load_npz(path: Path, fs, leads):
    """The signal array of an ``.npz`` (float32), its rate (a stored rate refuses a different
    ``fs``) and its lead names; other arrays are never read."""
    with NpzArchive(path) as archive:
        stored = next(((key, archive.array(key, 1, "sampling rate")) for key in RATE_KEYS
                       if key in archive.members), None)
        fs = resolve_rate(path, fs, None if stored is None else as_rate(path, *stored))
        if leads is None and "leads" in archive.members:
            leads = [str(name) for name in archive.array("leads", MAX_LEAD_NAMES, "lead names").ravel()]
        names = [name for name in archive.names if name not in RATE_KEYS and name != "leads"]
        fh, header = archive.open(choose_signal_key(path, names))
        with fh:
            return _read_record_array(fh, header, path), fs, leads


def _read_record_array(fh, header, path: Path) -> np.ndarray:
    """One record's array as float32, refused before reading when its dtype is not real numbers
    or its decoded signal would exceed ``RECORD_BYTES`` (a 1 kB file may declare gigabytes)."""
    problem = real_dtype_problem(np.empty(0, header.dtype))
    if problem:
        raise ReadError(path, problem)
    require_2d(path, header.shape)
    RECORD_BYTES.check(header.count * 4, f"{path}: a record of shape {header.shape}")
    return read_data(fh, header, path, np.float32)


def _load_text(path: Path) -> tuple[np.ndarray, list[str] | None]:
    """The numbers of a text table ``(rows, columns)`` float64 and its header row, if any."""
    try:
        TEXT_BYTES.check(path.stat().st_size, str(path))
        # utf-8-sig: Excel's "CSV UTF-8" starts with a byte-order mark, which is not a lead name
        with open(path, newline="", encoding="utf-8-sig") as fh:
            first = fh.readline()
    except OSError as exc:
        raise ReadError(path, f"cannot read: {exc}") from None
    except UnicodeDecodeError:
        raise ReadError(path, "not a UTF-8 text file (a CSV table of numbers is expected)") from None
    if not first.strip():
        raise ReadError(path, "empty CSV file" if path.suffix.lower() == ".csv" else "empty text file")
    delimiter = _delimiter(first)
    cells = _split_cells(first)
    has_header = not all(_is_number(c) for c in cells)
    try:
        with warnings.catch_warnings():  # an empty table is refused below, in words
            warnings.simplefilter("ignore", UserWarning)
            array = np.loadtxt(path, delimiter=delimiter, skiprows=1 if has_header else 0,
                               dtype=np.float64, ndmin=2, encoding="utf-8-sig")
    except ValueError as exc:
        raise ReadError(path, f"not a numeric table: {exc}") from None
    if array.size == 0:
        raise ReadError(path, "no rows of numbers (a table of numbers, one row per sample, is expected)")
    return array, (cells if has_header else None)


def _delimiter(line: str) -> str | None:
    """``,`` or ``;`` when the line holds one, else None (any whitespace, tabs included)."""
    return next((d for d in (",", ";") if d in line), None)


def _split_cells(line: str) -> list[str]:
    return [c.strip().strip('"') for c in line.strip().split(_delimiter(line))]


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
