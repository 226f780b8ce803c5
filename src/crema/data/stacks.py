"""Many records in one file: ``.npy`` / ``.npz`` stacks and HDF5 datasets, read a block of rows
at a time so that memory stays flat however large the file is.

Layouts (the lead axis is the one whose size is the lead count; an error when both or neither are):

* ``.npy``: an array ``(N, C, T)`` or ``(N, T, C)``. It stores no sampling rate: ``fs`` is required.
* ``.npz``: the same array under ``signal``/``signals``/``ecg``/``data``/``x``/``tracings`` (or the
  only array, or the one named by ``dataset``), optionally with ``fs``, ``leads`` and an ids array
  (``record_id``, ``ids``, ``exam_id``, ...).
* HDF5 (``.h5``, ``.hdf5``, ``.hdf``): by default the layout of CODE-15% and SaMi-Trop: dataset
  ``tracings`` ``(N, 4096, 12)`` at 400 Hz with ids in ``exam_id``. ``dataset`` names another
  dataset; a ``fs``/``sampling_rate`` attribute on the dataset or the file gives the rate; when
  there is none and no ``fs`` is given, 400 Hz is assumed with an :class:`AssumedRateWarning`.

Ids: ``ids`` names a ``.csv`` (a header row; the ``record_id``/``exam_id``/``ecg_id``/``id`` column,
else the first) or text file (one id per line), or an array inside the ``.npz``/HDF5; by default
an ids array of the file, else ``ecg_ids.csv`` beside a ``.npy`` (the convention ``crema prepare``
follows), else the row numbers ``000000``, ``000001``...

Rows are read with seeks and reads (``.npy`` files and ``.npz`` members) or HDF5 hyperslabs, not
through a memory map: the pages of a memmap stay counted in the process's memory, which would
then grow with the file.
"""
from __future__ import annotations

import math
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from ..config import STANDARD_LEADS
from ..errors import CremaError, ReadError
from .formats.arrays import ID_KEYS, choose_signal_key, lead_axis
from .leads import UnknownLeadError, canonical_lead
from .recording import Recording

HDF5_SUFFIXES = frozenset({".h5", ".hdf5", ".hdf"})
STACK_SUFFIXES = frozenset({".npy", ".npz"}) | HDF5_SUFFIXES
CODE15_DATASET = "tracings"       # CODE-15% / SaMi-Trop: (N, 4096, 12) float32 ...
CODE15_FS = 400.0                 # ... sampled at 400 Hz (stored nowhere in the file)
RATE_KEYS = ("fs", "sampling_rate", "sampling_frequency", "sample_rate")
IDS_FILE = "ecg_ids.csv"          # ids beside a .npy stack, as crema prepare reads them
BLOCK_BYTES = 32 * 2**20          # raw bytes read per block of rows


class AssumedRateWarning(UserWarning):
    """An HDF5 file stores no sampling rate and none was given: CODE-15%'s 400 Hz is assumed."""


def is_stack(path: str | os.PathLike, dataset: str | None = None) -> bool:
    """True for an HDF5 file, or a ``.npy``/``.npz`` whose signal array is 3-D (a file that cannot
    be inspected is not a stack here; reading it as one record reports its problem)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in HDF5_SUFFIXES:
        return True
    if suffix not in (".npy", ".npz") or not path.is_file():
        return False
    try:
        if suffix == ".npy":
            with open(path, "rb") as fh:
                return len(_read_npy_header(fh, path)[0]) == 3
        with zipfile.ZipFile(path) as archive:
            names = _npz_names(archive)
            with archive.open(choose_signal_key(path, names, dataset) + ".npy") as fh:
                return len(_read_npy_header(fh, path)[0]) == 3
    except (CremaError, OSError, ValueError, zipfile.BadZipFile):
        return False


class RecordStack:
    """The records of one stack file, read on demand.

    Attributes:
        path: the file.
        shape: the stored shape ``(N, C, T)`` or ``(N, T, C)``; ``lead_axis`` is 1 or 2.
        leads: names of the C leads; fs: sampling rate in Hz.
        ids: one id per row (read on first use).
        block_rows: rows read at a time by :meth:`record` (sequential access reads each block once).
    """

    def __init__(self, path: str | os.PathLike, fs: float | None = None,
                 leads: Sequence[str] | None = None, dataset: str | None = None,
                 ids: str | os.PathLike | None = None, block_bytes: int = BLOCK_BYTES):
        self.path = Path(path)
        if not self.path.is_file():
            raise ReadError(self.path, "no such file")
        self._store = _open_store(self.path, dataset)
        self.shape: tuple[int, ...] = tuple(self._store.shape)
        if len(self.shape) != 3:
            raise ReadError(self.path, f"{self._store.name!r} has shape {self.shape}; a stack of records "
                                       "is (N, leads, samples) or (N, samples, leads)")
        self.leads = _check_leads(self.path, leads if leads is not None else self._store.leads())
        try:
            self.lead_axis = 1 + lead_axis(self.path, self.shape[1:], len(self.leads))
        except ReadError:
            raise ReadError(self.path, f"stack shape {self.shape} is neither (N, {len(self.leads)}, T) nor "
                                       f"(N, T, {len(self.leads)}) for {len(self.leads)} leads "
                                       "(pass --leads when the rows are another lead set)") from None
        self.fs = _resolve_rate(self.path, fs, self._store.rate(), self._store.default_rate)
        self._ids_option = ids
        self._ids: list[str] | None = None
        row_bytes = max(1, self.shape[1] * self.shape[2] * self._store.itemsize)
        self.block_rows = max(1, int(block_bytes) // row_bytes)
        self._block_start, self._block = 0, np.zeros((0, len(self.leads), self.length), np.float32)

    def __len__(self) -> int:
        return int(self.shape[0])

    def __repr__(self) -> str:
        return (f"RecordStack({str(self.path)!r}, {len(self)} records x {len(self.leads)} leads x "
                f"{self.length} samples at {self.fs:g} Hz)")

    @property
    def length(self) -> int:
        """Samples per record."""
        return int(self.shape[3 - self.lead_axis])

    @property
    def ids(self) -> list[str]:
        """One id per row (see the module docstring for where they come from)."""
        if self._ids is None:
            self._ids = stack_ids(self.path, len(self), self._ids_option, self._store)
        return self._ids

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as float32 ``(stop - start, C, T)``, leads first (no cache)."""
        if not 0 <= start <= stop <= len(self):
            raise IndexError(f"{self.path}: rows {start}:{stop} outside 0:{len(self)}")
        block = np.asarray(self._store.read(start, stop))
        if self.lead_axis == 2:
            block = block.transpose(0, 2, 1)
        return np.ascontiguousarray(block, dtype=np.float32)

    def rows(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` ``(stop - start, C, T)`` float32, served from the block read last
        when it holds them, else from a new block of at least :attr:`block_rows` rows from ``start``."""
        held = self._block_start + len(self._block)
        if not (self._block_start <= start and stop <= held):
            self._block = self.read(start, min(len(self), max(stop, start + self.block_rows)))
            self._block_start = start
        return self._block[start - self._block_start:stop - self._block_start]

    def record(self, row: int) -> Recording:
        """Row ``row`` as a :class:`Recording` (its id from :attr:`ids`)."""
        signal = self.rows(row, row + 1)[0].copy()  # a copy, so that the block can be dropped
        return Recording(signal=signal, fs=self.fs, leads=self.leads, record_id=self.ids[row],
                         meta={"age": None, "sex": None, "row": row})

    def close(self) -> None:
        self._store.close()


# ----------------------------------------------------------------------------- stores

class _NpyStore:
    """A C-ordered array in an open binary file (a ``.npy`` file or an ``.npz`` member), read by
    seeking to a row and reading the bytes of the rows wanted."""

    default_rate = None

    def __init__(self, fh, where: Path, name: str, small_arrays=None):
        self.fh, self.where, self.name = fh, where, name
        shape, fortran, dtype = _read_npy_header(fh, where)
        if dtype.hasobject:
            raise ReadError(where, f"{name!r} holds Python objects, not numbers")
        if not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
            raise ReadError(where, f"{name!r} has dtype {dtype}; expected real numbers")
        if fortran and len(shape) > 1:
            raise ReadError(where, f"{name!r} is stored in Fortran order; save it C-ordered "
                                   "(np.save(path, np.ascontiguousarray(x)))")
        self.shape, self.dtype, self.itemsize = shape, dtype, dtype.itemsize
        self.offset = fh.tell()
        self._small = small_arrays  # the other arrays of an .npz (fs, leads, ids), loaded lazily

    def read(self, start: int, stop: int) -> np.ndarray:
        row_items = int(np.prod(self.shape[1:]))
        self.fh.seek(self.offset + start * row_items * self.itemsize)
        want = (stop - start) * row_items * self.itemsize
        data = self.fh.read(want)
        if len(data) != want:
            raise ReadError(self.where, f"truncated: rows {start}:{stop} of {self.shape} are not all there")
        return np.frombuffer(data, dtype=self.dtype).reshape((stop - start, *self.shape[1:]))

    def array(self, key: str) -> np.ndarray | None:
        if self._small is None or key not in self._small.files:
            return None
        return self._small[key]

    def arrays(self) -> list[str]:
        return [] if self._small is None else list(self._small.files)

    def leads(self) -> Sequence[str] | None:
        value = self.array("leads")
        return None if value is None else [str(v) for v in np.asarray(value).ravel()]

    def rate(self) -> float | None:
        for key in RATE_KEYS:
            value = self.array(key)
            if value is not None:
                return _as_rate(self.where, key, value)
        return None

    def close(self) -> None:
        self.fh.close()
        if self._small is not None:
            self._small.close()


class _H5Store:
    """A dataset of an HDF5 file, read by hyperslab."""

    default_rate = CODE15_FS

    def __init__(self, path: Path, dataset: str | None):
        try:
            import h5py
        except ImportError:  # a core dependency, but an environment may still lack it
            raise CremaError(f"{path}: reading HDF5 needs h5py (pip install h5py)") from None
        try:
            self.file = h5py.File(path, "r")
        except OSError as exc:
            raise ReadError(path, f"not a readable HDF5 file ({exc})") from None
        self.where = path
        self.name = dataset or CODE15_DATASET
        node = self.file.get(self.name)
        if not isinstance(node, h5py.Dataset):
            found = _h5_datasets(self.file)
            self.file.close()
            raise ReadError(path, f"no dataset {self.name!r} (datasets: "
                                  f"{', '.join(f'{k} {v}' for k, v in found.items()) or 'none'}); "
                                  "name the signals with --dataset NAME")
        if not np.issubdtype(node.dtype, np.number) or np.issubdtype(node.dtype, np.complexfloating):
            raise ReadError(path, f"dataset {self.name!r} has dtype {node.dtype}; expected real numbers")
        self.ds = node
        self.shape, self.itemsize = node.shape, node.dtype.itemsize

    def read(self, start: int, stop: int) -> np.ndarray:
        return self.ds[start:stop]

    def array(self, key: str) -> np.ndarray | None:
        node = self.file.get(key)
        return None if node is None or not hasattr(node, "shape") else node[()]

    def arrays(self) -> list[str]:
        return list(_h5_datasets(self.file))

    def leads(self) -> Sequence[str] | None:
        value = self.ds.attrs.get("leads", self.file.attrs.get("leads"))
        if value is None:
            return None
        return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(value).ravel()]

    def rate(self) -> float | None:
        for attrs in (self.ds.attrs, self.file.attrs):
            for key in RATE_KEYS:
                if key in attrs:
                    return _as_rate(self.where, key, attrs[key])
        return None

    def close(self) -> None:
        self.file.close()


def _open_store(path: Path, dataset: str | None):
    suffix = path.suffix.lower()
    if suffix in HDF5_SUFFIXES:
        return _H5Store(path, dataset)
    if suffix == ".npy":
        if dataset:
            raise ReadError(path, f"a .npy file holds one array; dataset {dataset!r} does not apply")
        fh = open(path, "rb")
        try:
            return _NpyStore(fh, path, path.name)
        except Exception:
            fh.close()
            raise
    if suffix == ".npz":
        try:
            small = np.load(path, allow_pickle=False)
            archive = zipfile.ZipFile(path)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise ReadError(path, f"not a readable .npz archive: {exc}") from None
        key = choose_signal_key(path, _npz_names(archive), dataset)
        return _NpyStore(archive.open(key + ".npy"), path, key, small)
    raise ReadError(path, f"not a stack file (expected {', '.join(sorted(STACK_SUFFIXES))})")


def _npz_names(archive: zipfile.ZipFile) -> list[str]:
    return [name[:-4] for name in archive.namelist() if name.endswith(".npy")]


def _read_npy_header(fh, where: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of an open ``.npy``, left positioned at its data."""
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            return np.lib.format.read_array_header_1_0(fh)
        return np.lib.format.read_array_header_2_0(fh)
    except ValueError as exc:
        raise ReadError(where, f"not a readable .npy array: {exc}") from None


def _h5_datasets(h5file) -> dict[str, tuple[int, ...]]:
    """Every dataset of an HDF5 file: ``{name: shape}``."""
    found: dict[str, tuple[int, ...]] = {}
    h5file.visititems(lambda name, node: found.setdefault(name, node.shape) if hasattr(node, "shape") else None)
    return found


# ----------------------------------------------------------------------------- rate, leads, ids

def _as_rate(where: Path, key: str, value: Any) -> float:
    try:
        rate = float(np.asarray(value).squeeze())
    except (TypeError, ValueError):
        raise ReadError(where, f"stored sampling rate {key}={value!r} is not a number") from None
    if not math.isfinite(rate) or rate <= 0:
        raise ReadError(where, f"stored sampling rate {key}={rate} is not a positive number")
    return rate


def _resolve_rate(path: Path, given: float | None, stored: float | None, default: float | None) -> float:
    """The file's rate when it stores one (refusing a different ``given``), else ``given``, else the
    format's default (with a warning), else an error."""
    if stored is not None:
        if given is not None and not math.isclose(float(given), stored, rel_tol=1e-6):
            raise ReadError(path, f"the file stores fs={stored:g} Hz but fs={float(given):g} Hz was given")
        return stored
    if given is not None:
        return float(given)
    if default is not None:
        warnings.warn(f"{path}: no sampling rate stored or given; assuming {default:g} Hz (CODE-15%); "
                      "pass fs (--fs HZ) otherwise", AssumedRateWarning, stacklevel=3)
        return default
    raise ReadError(path, "sampling rate unknown: pass fs (crema embed/predict --fs HZ, "
                          "crema prepare --input-fs HZ)")


def _check_leads(path: Path, leads: Sequence[str] | None) -> tuple[str, ...]:
    leads = tuple(str(name) for name in leads) if leads is not None else STANDARD_LEADS
    for name in leads:
        try:
            canonical_lead(name)
        except UnknownLeadError:
            raise ReadError(path, f"unknown lead name {name!r} (leads: {', '.join(leads)})") from None
    return leads


def stack_ids(path: str | os.PathLike, n: int, ids: str | os.PathLike | None = None,
              store=None) -> list[str]:
    """One id per row of the stack at ``path`` (see the module docstring).

    Raises:
        ReadError: ``ids`` is neither a file nor an array of the stack, or their count is not ``n``.
    """
    path = Path(path)
    arrays = store.arrays() if store is not None else []
    if ids is not None:
        if Path(ids).is_file():
            values, where = read_ids_file(Path(ids)), Path(ids)
        elif str(ids) in arrays:
            values, where = _id_strings(store.array(str(ids))), path
        else:
            raise ReadError(path, f"ids {str(ids)!r} is neither a file nor an array in the file "
                                  f"(arrays: {', '.join(arrays) or 'none'})")
    else:
        key = next((k for k in ID_KEYS if k in arrays), None)
        beside = path.parent / IDS_FILE
        if key is not None:
            values, where = _id_strings(store.array(key)), path
        elif path.suffix.lower() == ".npy" and beside.is_file():
            values, where = read_ids_file(beside), beside
        else:
            return [f"{row:06d}" for row in range(n)]
    if len(values) != n:
        raise ReadError(where, f"{len(values)} ids for {n} rows of {path.name}")
    return values


def read_ids_file(path: Path) -> list[str]:
    """Ids from a ``.csv`` with a header (the ``record_id``/``exam_id``/``ecg_id``/``id``... column,
    else the first) or a text file with one id per line."""
    try:
        if path.suffix.lower() == ".csv":
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
            column = next((c for c in ID_KEYS if c in table.columns), table.columns[0])
            return table[column].str.strip().tolist()
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError, IndexError, UnicodeDecodeError) as exc:
        raise ReadError(path, f"cannot read ids: {exc}") from None


def _id_strings(values: np.ndarray) -> list[str]:
    out = []
    for v in np.asarray(values).ravel():
        if isinstance(v, bytes):
            v = v.decode(errors="replace")
        elif isinstance(v, np.floating) and float(v).is_integer():
            v = int(v)
        out.append(str(v).strip())
    return out


__all__ = ["RecordStack", "AssumedRateWarning", "is_stack", "stack_ids", "read_ids_file",
           "STACK_SUFFIXES", "HDF5_SUFFIXES", "CODE15_DATASET", "CODE15_FS"]
