"""Reading a record whole or a span of samples at a time, and the choice between the two.

A record longer than :data:`crema.limits.STREAM_SECONDS` (5 minutes by default), or whose float32
signal would exceed :data:`crema.limits.RECORD_BYTES`, is not read whole: :func:`open_record`
returns a :class:`SpanReader`, which :mod:`crema.data.stream` reads a few minutes at a time, so that
a 24-hour Holter record is preprocessed in flat memory. Formats that can seek:

* WFDB: samples ``[start, stop)`` through :func:`crema.data.formats.wfdb.read_wfdb` (the fast path's
  seek for single-file format 16/212 records, else ``wfdb.rdrecord(sampfrom, sampto)``);
* ``.npy`` holding one record ``(n_leads, T)`` or ``(T, n_leads)``: seek and read of the rows it
  needs (never a memmap, whose pages would stay resident);
* EDF/EDF+ (Holter recordings): :func:`crema.data.formats.edf.read_edf_ecg` of a span;
* a :class:`Recording` already in memory (:class:`RecordingSpans`): its preprocessing still runs a
  span at a time.

Every other format, and a WFDB record whose signals only the CinC ``.mat`` reader reads, is read
whole; one whose signal would exceed ``RECORD_BYTES`` is refused with a :class:`LimitError` that
names the setting, declared sizes checked before reading where the header gives them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..config import STANDARD_LEADS
from ..errors import CremaError, ReadError, is_utf8_name
from ..limits import RECORD_BYTES, STREAM_SECONDS, LimitError
from .formats import read_edf_ecg
from .formats.arrays import lead_axis, real_dtype_problem
from .formats.npyfile import open_npy
from .formats.wfdb import read_wfdb
from .formats.wfdb_fast import parse_simple_header
from .formats.wfdb_header import parse_header
from .inputs import InputKind, file_kind, header_of
from .readers import check_recording, read_record
from .recording import Recording

PathLike = str | os.PathLike

_FLOAT32 = 4  # bytes per sample of a decoded signal


class SpanReader:
    """One record known by its metadata, read a span of samples at a time.

    Attributes:
        source: where it comes from (the file path, or ``<recording>``).
        record_id: as :func:`crema.data.readers.read_record` names it.
        fs: sampling rate, Hz; leads: the file's lead names, one per row; n_samples: its length.
        meta: what the file says besides the signal (``age``, ``sex``...).
    """

    def __init__(self, source: str, record_id: str, fs: float, leads: Sequence[str], n_samples: int,
                 meta: dict | None = None):
        self.source, self.record_id, self.fs = source, record_id, float(fs)
        self.leads, self.n_samples, self.meta = tuple(leads), int(n_samples), dict(meta or {})

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs

    # Samples per call of a reader that holds a span several times over in float64 on its way to
    # float32 mV (WFDB, EDF): a long span is read in blocks into one float32 array.
    BLOCK = 2**15

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` (clipped to the record): ``(n_leads, stop - start)`` float32 mV,
        the same values as those columns of the record read whole."""
        start, stop = max(0, int(start)), min(self.n_samples, int(stop))
        if stop <= start:
            return np.zeros((len(self.leads), 0), dtype=np.float32)
        return self._read(start, stop)

    def _read(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((len(self.leads), stop - start), dtype=np.float32)
        for first in range(start, stop, self.BLOCK):
            last = min(stop, first + self.BLOCK)
            out[:, first - start:last - start] = self._read_block(first, last)
        return out

    def _read_block(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.source}: {len(self.leads)} leads, {self.n_samples} samples "
                f"at {self.fs:g} Hz)")


class RecordingSpans(SpanReader):
    """A :class:`Recording` in memory, handed out a span at a time."""

    def __init__(self, rec: Recording, source: str = "<recording>"):
        super().__init__(source, rec.record_id, rec.fs, rec.leads, rec.signal.shape[-1], rec.meta)
        self.signal = rec.signal

    def _read(self, start: int, stop: int) -> np.ndarray:
        return np.asarray(self.signal[:, start:stop], dtype=np.float32)


class WfdbSpans(SpanReader):
    """A WFDB record read by :func:`~crema.data.formats.wfdb.read_wfdb` a span at a time."""

    def __init__(self, header: Path, head: Recording, n_samples: int):
        super().__init__(str(header), head.record_id, head.fs, head.leads, n_samples, head.meta)
        self.header = header

    def _read_block(self, start: int, stop: int) -> np.ndarray:
        return read_wfdb(self.header, start, stop).signal


class EdfSpans(SpanReader):
    """An EDF/EDF+ record read by :func:`~crema.data.formats.edf.read_edf_ecg` a span at a time
    (the file is opened for each block, so that threads may read it at once)."""

    def __init__(self, path: Path, head: Recording, n_samples: int):
        super().__init__(str(path), head.record_id, head.fs, head.leads, n_samples, head.meta)
        self.path = path

    def _read_block(self, start: int, stop: int) -> np.ndarray:
        rec = read_edf_ecg(self.path, start, stop)
        if rec.leads != self.leads:
            raise ReadError(self.path, f"leads changed while reading ({', '.join(rec.leads)})")
        return rec.signal


class NpySpans(SpanReader):
    """One record ``(n_leads, T)`` or ``(T, n_leads)`` in a ``.npy``, read by seeking to the rows a
    span needs."""

    def __init__(self, path: Path, fs: float, leads: Sequence[str], layout: "_NpyLayout"):
        super().__init__(str(path), path.stem, fs, leads, layout.n_samples, {"age": None, "sex": None})
        self.path, self.layout = path, layout

    def _read(self, start: int, stop: int) -> np.ndarray:
        lay, count = self.layout, stop - start
        if lay.time_major:  # each sample's leads together: one read of the span's rows
            flat = np.fromfile(self.path, dtype=lay.dtype, count=count * lay.n_leads,
                               offset=lay.offset + start * lay.n_leads * lay.dtype.itemsize)
            raw = flat.reshape(count, lay.n_leads).T
        else:  # each lead's samples together: one read per lead
            raw = np.stack([np.fromfile(self.path, dtype=lay.dtype, count=count,
                                        offset=lay.offset + (lead * lay.n_samples + start) * lay.dtype.itemsize)
                            for lead in range(lay.n_leads)])
        if raw.shape != (lay.n_leads, count):
            raise ReadError(self.path, f"holds fewer samples than its header declares (read {raw.shape})")
        return np.ascontiguousarray(raw, dtype=np.float32)


class _NpyLayout:
    """Where one record's samples lie in a ``.npy``: ``offset`` of the data, ``dtype``, lead count,
    sample count, and whether the samples of one instant are adjacent (``time_major``)."""

    def __init__(self, offset: int, dtype: np.dtype, n_leads: int, n_samples: int, time_major: bool):
        self.offset, self.dtype, self.n_leads = offset, dtype, n_leads
        self.n_samples, self.time_major = n_samples, time_major


# ----------------------------------------------------------------------------- the choice

def is_long(n_samples: int, n_leads: int, fs: float) -> bool:
    """Whether a record is read a span at a time: longer than ``STREAM_SECONDS``, or a float32
    signal over ``RECORD_BYTES``."""
    return (n_samples / fs > STREAM_SECONDS.value()
            or n_samples * n_leads * _FLOAT32 > RECORD_BYTES.value())


def open_record(path: PathLike, fs: float | None = None,
                leads: Sequence[str] | None = None) -> Recording | SpanReader:
    """The record in ``path``: a :class:`SpanReader` when it is long (:func:`is_long`) and its
    format can seek, else the :class:`Recording` read whole by
    :func:`~crema.data.readers.read_record` (same arguments).

    Raises:
        ReadError: as ``read_record``.
        LimitError: a record read whole whose signal would exceed ``RECORD_BYTES``.
    """
    path = Path(path)
    spans = None
    if path.is_file() and is_utf8_name(path):  # else read_record reports the problem
        try:
            spans = _open_spans(path, fs, leads)
        except (ReadError, LimitError):
            raise
        except (CremaError, ValueError, OSError) as exc:
            raise ReadError(path, str(exc) if isinstance(exc, CremaError) else f"{type(exc).__name__}: {exc}") from None
    if spans is not None:
        return spans
    rec = read_record(path, fs=fs, leads=leads)
    n_leads, n_samples = rec.signal.shape
    RECORD_BYTES.check(rec.signal.size * _FLOAT32, f"{path}: read whole ({n_samples} samples x {n_leads} leads, "
                                                   "a format that cannot be read in spans)")
    return rec


def _open_spans(path: Path, fs: float | None, leads: Sequence[str] | None) -> SpanReader | None:
    """A span reader for the formats that seek (WFDB, a one-record ``.npy`` with ``fs``, EDF) when
    the record is long; None to read it whole."""
    kind = file_kind(path)
    if kind is InputKind.WFDB:
        return _open_wfdb(header_of(path))
    if kind is InputKind.NPY and fs is not None:
        return _open_npy(path, fs, leads)
    if kind is InputKind.EDF:
        return _open_edf(path)
    return None


def _open_edf(path: Path) -> SpanReader | None:
    """An :class:`EdfSpans` for a long record; None for a short one (read whole)."""
    head = read_edf_ecg(path, 0, 1)
    n_samples = int(head.meta.get("n_samples") or 0)
    if n_samples <= 0 or not is_long(n_samples, len(head.leads), head.fs):
        return None
    check_recording(path, head)
    return EdfSpans(path, head, n_samples)


def _open_wfdb(header: Path) -> SpanReader | None:
    """A :class:`WfdbSpans` for a long record; None for a short one (read whole)."""
    if not header.is_file():
        return None
    parsed = parse_header(header)
    n_samples, n_leads = parsed["sig_len"] or 0, parsed["n_sig"]
    if n_samples <= 0 or not is_long(n_samples, n_leads, parsed["fs"]):
        return None
    if parse_simple_header(header.read_bytes(), header.stem) is None and all(
            s["file"].lower().endswith(".mat") for s in parsed["signals"]):
        # wfdb may refuse such a header, and the CinC .mat reader that then reads it cannot seek
        RECORD_BYTES.check(n_samples * n_leads * _FLOAT32, f"{header}: read whole ({n_samples} samples x "
                                                           f"{n_leads} leads in a MATLAB file)")
        return None
    head = read_wfdb(header, 0, 1)
    check_recording(header, head)
    return WfdbSpans(header, head, n_samples)


def _open_npy(path: Path, fs: float, leads: Sequence[str] | None) -> SpanReader | None:
    """An :class:`NpySpans` for a long 2-D record; None for a short one or anything else (read
    whole, which reports what is wrong with it)."""
    leads = tuple(leads) if leads is not None else STANDARD_LEADS
    layout = _npy_layout(path, len(leads))
    if layout is None or not is_long(layout.n_samples, layout.n_leads, fs):
        return None
    spans = NpySpans(path, fs, leads, layout)
    check_recording(path, Recording(spans.read(0, 1), fs, leads, spans.record_id))
    return spans


def _npy_layout(path: Path, n_leads: int) -> _NpyLayout | None:
    """The layout of a ``.npy`` holding one real-valued record (None for anything else, which
    reading it whole reports); its header is checked by :func:`~crema.data.formats.npyfile.open_npy`."""
    fh, header = open_npy(path)
    fh.close()
    if len(header.shape) != 2 or real_dtype_problem(np.empty(0, header.dtype)):
        return None
    axis = lead_axis(path, header.shape, n_leads)
    # C order (leads, T) keeps each lead's samples together; (T, leads) each instant's leads;
    # Fortran order is the other way round
    time_major = (axis == 1) != header.fortran
    return _NpyLayout(header.offset, header.dtype, n_leads, int(header.shape[1 - axis]), time_major)
