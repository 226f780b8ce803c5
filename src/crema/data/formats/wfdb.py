"""WFDB records (PTB-XL, PTB Diagnostic, PhysioNet/CinC ``.hea`` + ``.mat``), read from their
``.hea``: the simple single-file layout by :mod:`.wfdb_fast`, everything else by
``wfdb.rdrecord``, and a CinC header that ``wfdb`` refuses (the Georgia quirk: the first line
names ``E00271.mat``) by :mod:`.cinc_mat`."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ...errors import ReadError
from ...limits import RECORD_BYTES
from ..recording import Recording
from ..units import mv_per_unit
from .cinc_mat import read_cinc_mat
from .wfdb_fast import fast_path_enabled, read_fast
from .wfdb_header import parse_comments, parse_header, signal_file

# Bytes per sample of the WFDB storage formats, to check a signal file against its header.
_WFDB_BYTES_PER_SAMPLE = {"8": 1, "16": 2, "24": 3, "32": 4, "61": 2, "80": 1, "160": 2,
                          "212": 1.5, "310": 4 / 3, "311": 4 / 3}


def read_wfdb(header: Path, start: int = 0, stop: int | None = None) -> Recording:
    """A WFDB record from its ``.hea``: single-file format 16/212 records through
    :mod:`.wfdb_fast` (bit-identical to ``wfdb``, over 10x faster), everything else via
    ``wfdb.rdrecord``, falling back to the CinC ``.mat`` reader when ``wfdb`` rejects the header;
    the signal files are checked against the header first, whichever reads them. ``start``/``stop``
    read only samples ``[start, stop)``, for a long record read a span at a time."""
    parsed = parse_header(header)
    _check_signal_files(header, parsed)
    sig_len = parsed["sig_len"] or 0
    frames = min(sig_len if stop is None else stop, sig_len) - max(start, 0)
    RECORD_BYTES.check(max(frames, 0) * parsed["n_sig"] * 4,
                       f"{header}: {parsed['n_sig']} signals x {frames} samples read at once")
    record = read_fast(header, start, stop) if fast_path_enabled() else None
    if record is None:
        record = _rdrecord(header, parsed, start, stop)
        if isinstance(record, Recording):  # the CinC reader reads whole: keep the span asked for
            record.signal = record.signal[:, start:stop]
            return record
    if record.p_signal is None:
        raise ReadError(header, "WFDB returned no physical signal")
    if not math.isclose(float(record.fs), parsed["fs"], rel_tol=1e-9):
        # wfdb replaces a rate it cannot use (nan, inf, negative) by its default 250 Hz
        raise ReadError(header, f"WFDB read {record.fs} Hz but the header says {parsed['fs']:g} Hz")
    scale = np.array([mv_per_unit(u or "mV", header, "a signal") for u in (record.units or ["mV"] * record.n_sig)],
                     dtype=np.float64)
    # x * 1.0 is x, bit for bit: records already in mV (nearly all) skip a pass over the signal
    signal = (record.p_signal if (scale == 1.0).all() else record.p_signal * scale).T
    return Recording(signal=signal, fs=float(record.fs), leads=tuple(record.sig_name),
                     record_id=header.stem, meta=parse_comments(record.comments or []))


def _rdrecord(header: Path, parsed: dict, start: int = 0, stop: int | None = None):
    """``wfdb.rdrecord`` of ``header`` (samples ``[start, stop)``), or the CinC ``.mat`` reader's
    Recording when wfdb refuses a header whose signals are all in ``.mat`` files."""
    import wfdb  # imported here so that `crema --help` stays fast

    try:
        return wfdb.rdrecord(str(header.with_suffix("")), sampfrom=start, sampto=stop)
    except Exception as exc:  # wfdb raises many types; the fallback decides what is fatal
        if all(s["file"].lower().endswith(".mat") for s in parsed["signals"]):
            return read_cinc_mat(header, parsed)
        raise ReadError(header, f"WFDB could not read the record: {exc}") from None


def _check_signal_files(header: Path, parsed: dict) -> None:
    """Each signal file must exist and hold exactly the samples the header declares
    (``wfdb`` itself silently reads fewer samples when the header says fewer)."""
    sig_len = parsed["sig_len"]
    by_file: dict[str, list[dict]] = {}
    for sig in parsed["signals"]:
        by_file.setdefault(sig["file"], []).append(sig)
    for name, sigs in by_file.items():
        file = signal_file(header, name)  # beside the header, or refused before it is looked at
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
