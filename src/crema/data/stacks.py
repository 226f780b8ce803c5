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

Nothing a file declares is trusted (a 1 kB file may declare ten million records): before anything
is read, a ``.npy``/``.npz`` header's shape must fit in the bytes present
(:mod:`crema.data.formats.npyfile`), an HDF5 dataset must have every chunk stored (or, contiguous,
all its bytes), one record must fit in :data:`crema.limits.RECORD_BYTES`, an HDF5 chunk in
:data:`crema.limits.DECOMPRESSED_BYTES`, and the rows number at most
:data:`crema.limits.STACK_RECORDS`. An HDF5 file is read only from itself: datasets stored in
external files, virtual datasets and links to other files are refused
(:mod:`crema.data.formats.hdf5`).
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..config import STANDARD_LEADS
from ..errors import ReadError
from ..limits import RECORD_BYTES, STACK_RECORDS
from .formats.arrays import (ID_KEYS, MAX_LEAD_NAMES, RATE_KEYS, as_rate, choose_signal_key, lead_axis,
                             resolve_rate)
from .formats.hdf5 import H5Store
from .formats.npyfile import NpzArchive, open_npy
from .inputs import HDF5_SUFFIXES, STACK_SUFFIXES, InputKind, file_kind, is_stack  # noqa: F401 (re-exported)
from .leads import UnknownLeadError, canonical_lead
from .recording import Recording

CODE15_DATASET = "tracings"       # CODE-15% / SaMi-Trop: (N, 4096, 12) float32 ...
CODE15_FS = 400.0                 # ... sampled at 400 Hz (stored nowhere in the file)
IDS_FILE = "ecg_ids.csv"          # ids beside a .npy stack, as crema prepare reads them
BLOCK_BYTES = 32 * 2**20          # raw bytes read per block of rows


class AssumedRateWarning(UserWarning):
    """An HDF5 file stores no sampling rate and none was given: CODE-15%'s 400 Hz is assumed."""


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
        try:
            self.shape: tuple[int, ...] = tuple(self._store.shape)
            if len(self.shape) != 3:
                raise ReadError(self.path, f"{self._store.name!r} has shape {self.shape}; a stack of records "
                                           "is (N, leads, samples) or (N, samples, leads)")
            _check_declared_size(self.path, self._store)
            self.leads = _check_leads(self.path, leads if leads is not None else self._store.leads())
            try:
                self.lead_axis = 1 + lead_axis(self.path, self.shape[1:], len(self.leads))
            except ReadError:
                raise ReadError(self.path, f"stack shape {self.shape} is neither (N, {len(self.leads)}, T) nor "
                                           f"(N, T, {len(self.leads)}) for {len(self.leads)} leads "
                                           "(pass --leads when the rows are another lead set)") from None
            self.fs = _resolve_rate(self.path, fs, self._store.rate(), self._store.default_rate)
        except BaseException:
            self._store.close()  # a refused file is not left open
            raise
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
    seeking to a row and reading the bytes of the rows wanted; its header already checked
    against the bytes present (:mod:`crema.data.formats.npyfile`)."""

    default_rate = None

    def __init__(self, fh, header, where: Path, name: str, archive: NpzArchive | None = None):
        self.fh, self.where, self.name = fh, where, name
        dtype = header.dtype
        if not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
            raise ReadError(where, f"{name!r} has dtype {dtype}; expected real numbers")
        if header.fortran and len(header.shape) > 1:
            raise ReadError(where, f"{name!r} is stored in Fortran order; save it C-ordered "
                                   "(np.save(path, np.ascontiguousarray(x)))")
        self.shape, self.dtype, self.itemsize = header.shape, dtype, dtype.itemsize
        self.offset = header.offset
        self._archive = archive  # the other arrays of an .npz (fs, leads, ids), read on demand

    def read(self, start: int, stop: int) -> np.ndarray:
        row_items = int(np.prod(self.shape[1:]))
        self.fh.seek(self.offset + start * row_items * self.itemsize)
        want = (stop - start) * row_items * self.itemsize
        data = self.fh.read(want)
        if len(data) != want:
            raise ReadError(self.where, f"truncated: rows {start}:{stop} of {self.shape} are not all there")
        return np.frombuffer(data, dtype=self.dtype).reshape((stop - start, *self.shape[1:]))

    def array(self, key: str, max_items: int) -> np.ndarray | None:
        if self._archive is None:
            return None
        return self._archive.array(key, max_items)

    def arrays(self) -> list[str]:
        return [] if self._archive is None else self._archive.names

    def leads(self) -> Sequence[str] | None:
        value = self.array("leads", MAX_LEAD_NAMES)
        return None if value is None else [str(v) for v in np.asarray(value).ravel()]

    def rate(self) -> float | None:
        for key in RATE_KEYS:
            value = self.array(key, 1)
            if value is not None:
                return as_rate(self.where, key, value)
        return None

    def close(self) -> None:
        self.fh.close()
        if self._archive is not None:
            self._archive.close()


def _open_store(path: Path, dataset: str | None):
    """The store of ``path``: an :class:`_NpyStore` or a :class:`~crema.data.formats.hdf5.H5Store`
    (both have ``shape``, ``itemsize``, ``name``, ``default_rate``, ``read``, ``array``, ``arrays``,
    ``leads``, ``rate`` and ``close``)."""
    kind = file_kind(path)
    if kind is InputKind.HDF5:
        return H5Store(path, dataset or CODE15_DATASET, default_rate=CODE15_FS)
    if kind is InputKind.NPY:
        if dataset:
            raise ReadError(path, f"a .npy file holds one array; dataset {dataset!r} does not apply")
        fh, header = open_npy(path)
        try:
            return _NpyStore(fh, header, path, path.name)
        except BaseException:
            fh.close()
            raise
    if kind is InputKind.NPZ:
        archive = NpzArchive(path)
        try:
            key = choose_signal_key(path, archive.names, dataset)
            fh, header = archive.open(key)
        except BaseException:
            archive.close()
            raise
        try:
            return _NpyStore(fh, header, path, key, archive)
        except BaseException:
            fh.close()
            archive.close()
            raise
    raise ReadError(path, f"not a stack file (expected {', '.join(sorted(STACK_SUFFIXES))})")


def _check_declared_size(path: Path, store) -> None:
    """Refuse, before any row is listed or read, a stack whose rows are too many
    (``STACK_RECORDS``) or one of whose records would not fit in ``RECORD_BYTES`` as float32."""
    rows, per_row = int(store.shape[0]), math.prod(store.shape[1:])
    STACK_RECORDS.check(rows, f"{path}: {store.name!r} of shape {tuple(store.shape)}")
    RECORD_BYTES.check(per_row * 4, f"{path}: one record of {store.name!r} (shape {tuple(store.shape[1:])})")


# ----------------------------------------------------------------------------- rate, leads, ids

def _resolve_rate(path: Path, given: float | None, stored: float | None, default: float | None) -> float:
    """The file's rate when it stores one (refusing a different ``given``), else ``given``, else the
    format's default (with a warning), else an error."""
    rate = resolve_rate(path, given, stored)
    if rate is not None:
        return rate
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
            values, where = _id_strings(store.array(str(ids), n)), path
        else:
            raise ReadError(path, f"ids {str(ids)!r} is neither a file nor an array in the file "
                                  f"(arrays: {', '.join(arrays) or 'none'})")
    else:
        key = next((k for k in ID_KEYS if k in arrays), None)
        beside = path.parent / IDS_FILE
        if key is not None:
            values, where = _id_strings(store.array(key, n)), path
        elif file_kind(path) is InputKind.NPY and beside.is_file():
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
