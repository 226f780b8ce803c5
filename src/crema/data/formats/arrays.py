"""One record as a plain array, ``(n_leads, T)`` or ``(T, n_leads)``: ``.npy``, ``.npz`` (which
may carry ``fs`` and ``leads`` arrays) or ``.csv`` (which may have a header row of lead names).
The rules for telling the lead axis and the signal array apart are shared with the record
stacks (:mod:`crema.data.stacks`) and the API's in-memory arrays (:mod:`crema.use.inputs`)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ...config import STANDARD_LEADS
from ...errors import ReadError
from ..recording import Recording

# Names an .npz may give its signal array, in order of preference (``tracings``: CODE-15%).
SIGNAL_KEYS = ("signal", "signals", "ecg", "data", "x", "tracings")
# Names of record-id arrays (in an .npz or HDF5 file) or columns (in an ids table).
ID_KEYS = ("record_id", "record_ids", "ids", "id", "exam_id", "ecg_id")
# Arrays of an .npz that describe the signal rather than hold it.
NPZ_META_KEYS = frozenset({"fs", "sampling_rate", "leads", *ID_KEYS})


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
