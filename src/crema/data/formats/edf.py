"""EDF/EDF+: one signal per lead, labels such as ``ECG I`` or ``V1``, physical dimension in
``uV``/``mV``/``V``; all leads must share one sampling rate. pyedflib is optional (the ``formats``
extra) and imported only when an EDF file is read or written."""
from __future__ import annotations

import contextlib
import math
import os
import re
import sys
import threading
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from ...atomic import atomic_path
from ...errors import ReadError
from ..recording import Recording
from ..units import mv_per_unit
from .common import PathLike, assemble, lead_or_none, require, require_finite, require_resolution


def read_edf_ecg(path: PathLike, start: int = 0, stop: int | None = None) -> Recording:
    """Read ECG leads from an EDF or EDF+ file. Returns ``signal (n_leads, T)`` float32 mV; signals
    whose labels are not ECG leads are dropped (``meta["dropped_leads"]``). ``start``/``stop`` read
    only samples ``[start, stop)`` (a span of a long record); ``meta["n_samples"]`` is the length of
    the file's ECG leads either way."""
    pyedflib = require("pyedflib", path)
    if not Path(path).is_file():
        raise ReadError(path, "file not found")
    try:
        with _c_stdout_silenced():  # pyedflib's C code prints its own diagnostics to stdout
            reader = pyedflib.EdfReader(str(path))
    except OSError as exc:
        problem = str(exc).removeprefix(f"{path}: ")  # pyedflib repeats the path
        raise ReadError(path, f"not a readable EDF/EDF+ file ({problem})") from None
    try:
        rows, rates, dropped, lengths = [], set(), [], set()
        for i, label in enumerate(reader.getSignalLabels()):
            name = _edf_lead_name(label)
            if lead_or_none(name) is None:
                dropped.append(label)
                continue
            unit_mv = mv_per_unit(reader.getPhysicalDimension(i), path, f"EDF signal {label!r}")
            length = int(reader.getNSamples()[i])
            first, last = min(max(start, 0), length), length if stop is None else min(max(stop, 0), length)
            rows.append((name, reader.readSignal(i, first, max(last - first, 0)) * unit_mv))
            rates.add(float(reader.getSampleFrequency(i)))
            lengths.add(length)
    finally:
        reader.close()
    if len(rates) > 1:
        raise ReadError(path, f"EDF ECG leads have different sampling rates {sorted(rates)}")
    rec = assemble(path, rows, rates.pop() if rates else float("nan"), "edf",
                   {"n_samples": lengths.pop()} if len(lengths) == 1 else {})
    if dropped:
        rec.meta["dropped_leads"] = dropped + rec.meta.get("dropped_leads", [])
    return rec


# File descriptor 1 belongs to the whole process: threads reading files in parallel (crema embed
# --workers) silence it one at a time, or one would save another's /dev/null as the stdout to restore.
_STDOUT_LOCK = threading.Lock()


@contextlib.contextmanager
def _c_stdout_silenced() -> Iterator[None]:
    """Send what C code writes to file descriptor 1 to /dev/null for the duration: a command's
    stdout holds its results, and a library's chatter there would corrupt a pipe."""
    with _STDOUT_LOCK:
        try:
            sys.stdout.flush()
            saved = os.dup(1)
        except (OSError, ValueError, AttributeError):  # no real stdout (embedded, closed): nothing to guard
            yield
            return
        try:
            with open(os.devnull, "wb") as devnull:
                os.dup2(devnull.fileno(), 1)
            yield
        finally:
            os.dup2(saved, 1)
            os.close(saved)


def _edf_lead_name(label: str) -> str:
    """``ECG I`` / ``EKG V1`` / ``I`` -> the bare lead name (EDF+ labels carry a type prefix)."""
    return re.sub(r"^(ECG|EKG)\s+", "", label.strip(), flags=re.IGNORECASE)


def write_edf(rec: Recording, path: PathLike) -> None:
    """Write ``rec`` as an EDF+ file, one 16-bit signal per lead labelled ``ECG <lead>`` in uV.

    The physical range of each lead is its own peak (whole uV, at least 1 mV), so the
    quantisation step is about ``2 * peak / 65535``. Data records last 1 s when the record's length
    is a whole number of seconds, else the longest duration that divides it exactly; when none
    does (an awkward rate and length), the tail is padded with the last sample to a whole second
    and a warning says so, since EDF cannot store a partial data record.

    Args:
        rec: ``signal (n_leads, T)`` float mV.
        path: the ``.edf`` file to write (atomically).
    """
    pyedflib = require("pyedflib", path)
    require_finite(rec.signal, path, "EDF")
    signal_uv = rec.signal.astype(np.float64) * 1000.0
    samples_per_record = _edf_samples_per_record(rec.fs, signal_uv.shape[1])
    if samples_per_record is None:
        signal_uv, samples_per_record = _edf_pad_to_seconds(signal_uv, rec.fs, path)
    headers, digital = [], []
    for lead, row in zip(rec.leads, signal_uv):
        peak = max(1000.0, math.ceil(float(np.abs(row).max()) if row.size else 0.0))
        require_resolution(2 * peak / 65535 / 1000.0, peak / 1000.0, path, "EDF")  # the step, in mV
        headers.append({"label": f"ECG {lead_or_none(lead) or lead}", "dimension": "uV",
                        "sample_frequency": rec.fs, "physical_max": peak, "physical_min": -peak,
                        "digital_max": 32767, "digital_min": -32768, "transducer": "", "prefilter": ""})
        # EDF maps digital [-32768, 32767] linearly onto physical [-peak, peak].
        digital.append(np.rint((row + peak) / (2 * peak) * 65535 - 32768).astype(np.int32))
    with atomic_path(path) as tmp:
        writer = pyedflib.EdfWriter(str(tmp), len(rec.leads), file_type=pyedflib.FILETYPE_EDFPLUS)
        try:
            if samples_per_record != rec.fs:
                with warnings.catch_warnings():  # pyedflib warns that rates may shift; we chose
                    warnings.simplefilter("ignore")  # a duration that keeps them exact
                    writer.setDatarecordDuration(samples_per_record / rec.fs)
            writer.setSignalHeaders(headers)
            writer.writeSamples(digital, digital=True)
        except ValueError as exc:  # a header field EDF cannot hold (pyedflib checks them)
            raise ReadError(path, f"cannot write EDF: {exc}") from None
        finally:
            writer.close()


def _edf_samples_per_record(fs: float, n_samples: int) -> int | None:
    """Samples per data record: ``fs`` (1 s) when it divides the length, else the largest divisor
    of the length below ``fs`` whose duration EDF can state (whole multiples of 10 us)."""
    for candidate in range(min(int(fs), n_samples), 0, -1):
        duration_10us = candidate / fs * 1e5
        if n_samples % candidate == 0 and abs(duration_10us - round(duration_10us)) < 1e-6:
            return candidate
    return None


def _edf_pad_to_seconds(signal_uv: np.ndarray, fs: float, path: PathLike) -> tuple[np.ndarray, int]:
    """Pad ``(n_leads, T)`` with its last sample to whole 1-s data records."""
    if fs != int(fs):
        raise ReadError(path, f"cannot write EDF: no data-record length fits {signal_uv.shape[1]} "
                        f"samples at {fs} Hz")
    per_record = int(fs)
    pad = -signal_uv.shape[1] % per_record
    warnings.warn(f"{path}: EDF stores whole data records; padded {pad} samples at the end", stacklevel=3)
    return np.pad(signal_uv, ((0, 0), (0, pad)), mode="edge"), per_record
