"""Fast path for the common WFDB record: one signal file in format 16 or 212.

``wfdb.rdrecord`` spends most of its time parsing the header (hundreds of pandas lookups per
record: half of ``crema prepare``'s CPU on PTB-XL). Nearly every 12-lead record in the wild
(PTB-XL, PTB Diagnostic, the CinC challenge ``.mat`` files, which are format 16 after a 24-byte
MATLAB preamble) is the same simple layout: a header with a record line, one line per signal,
all signals interleaved frame by frame in one file. For that layout this module parses the
header itself, reads the samples with ``np.fromfile`` and converts them to physical units with
the same float64 operations as ``wfdb`` (``(digital - baseline) / gain``, invalid-sample value
-> NaN), so the result is bit-identical.

The parser is deliberately narrow: anything it is not sure ``wfdb`` reads the same way (other
formats, several signal files, samples per frame or skew, a record line with a time or date,
non-ASCII text, names with spaces, a block size...) makes :func:`read_fast` return None, and the
caller falls back to ``wfdb``, which stays the reference (tests compare the two on every shipped
and shared record). Errors are never raised here for malformed input: the caller has already
checked the header and the signal file sizes, and a fallback reproduces ``wfdb``'s own errors.

Setting ``CREMA_WFDB_READER=wfdb`` turns the fast path off (worker processes inherit it), to
check a corpus against the reference or to rule the fast path out when something looks wrong.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ENV_VAR = "CREMA_WFDB_READER"
# The value each storage format uses for a missing sample (WFDB spec, signal(5)).
_INVALID = {"16": -32768, "212": -2048}

# Grammar of the accepted subset, written from the WFDB header spec (header(5)).
_NAME = re.compile(r"[-\w]+")
_FILE = re.compile(r"[-\w]+(?:\.\w+)?")
_RATE = re.compile(r"\d+(?:\.\d*)?")
_COUNT = re.compile(r"\d+")
_INT = re.compile(r"-?\d+")
# format [x samples per frame] [:skew] [+byte offset]
_FORMAT = re.compile(r"(?P<fmt>\d+)(?:x(?P<spf>\d+))?(?::(?P<skew>\d+))?(?:\+(?P<offset>\d+))?")
# gain [(baseline)] [/units]; no exponent (wfdb's own grammar reads only a lowercase one)
_GAIN = re.compile(r"(?P<gain>\d+(?:\.\d*)?)(?:\((?P<baseline>-?\d+)\))?(?:/(?P<units>[A-Za-z]+))?")


@dataclass(frozen=True)
class FastRecord:
    """The fields of ``wfdb.Record`` that :func:`crema.data.formats.wfdb.read_wfdb` uses."""

    p_signal: np.ndarray  # (sig_len, n_sig) float64 in the header's units, NaN where invalid
    fs: float
    units: list[str]
    sig_name: list[str]
    comments: list[str]
    n_sig: int


@dataclass(frozen=True)
class _Layout:
    file: str
    fmt: str
    offset: int
    fs: float
    sig_len: int
    gains: tuple[float, ...]
    baselines: tuple[int, ...]
    units: tuple[str, ...]
    names: tuple[str, ...]
    comments: tuple[str, ...]


def fast_path_enabled() -> bool:
    """False when ``CREMA_WFDB_READER=wfdb`` asks for the reference reader."""
    return os.environ.get(ENV_VAR, "fast").strip().lower() != "wfdb"


def read_fast(header: Path, start: int = 0, stop: int | None = None) -> FastRecord | None:
    """The record of ``header`` read without ``wfdb``, or None when its layout is not the
    simple one this module handles (the caller then uses ``wfdb``). ``start``/``stop`` read only
    frames ``[start, stop)`` (a span of a long record), the same values as those rows of the whole."""
    if header.suffix != ".hea":  # wfdb opens '<record>.hea' exactly
        return None
    try:
        layout = parse_simple_header(header.read_bytes(), header.stem)
        if layout is None:
            return None
        digital = _read_digital(header.parent / layout.file, layout, start, stop)
    except OSError:
        return None  # let wfdb meet the same problem and report it as before
    if digital is None:
        return None
    return FastRecord(p_signal=_to_physical(digital, layout), fs=layout.fs, units=list(layout.units),
                      sig_name=list(layout.names), comments=list(layout.comments),
                      n_sig=len(layout.names))


# ----------------------------------------------------------------------------- header

def parse_simple_header(raw: bytes, record_name: str) -> _Layout | None:
    """The layout of a single-file format-16/212 header, or None for anything else."""
    try:
        text = raw.decode("ascii")  # wfdb drops non-ASCII bytes; leave such headers to it
    except UnicodeDecodeError:
        return None
    lines = [line.strip() for line in text.splitlines()]
    # wfdb's comment text: the stripped line without its leading/trailing '#', spaces and tabs
    comments = tuple(line.strip(" \t#") for line in lines if line.startswith("#"))
    body = [line.split() for line in lines if line and not line.startswith("#")]
    if not body:
        return None
    record = _parse_record_line(body[0], record_name)
    if record is None:
        return None
    n_sig, fs, sig_len = record
    if len(body) != 1 + n_sig:  # wfdb reads every further line as a signal line
        return None
    signals = [_parse_signal_line(fields) for fields in body[1:]]
    if any(s is None for s in signals):
        return None
    # one file, one format and one byte offset for all signals: a plain interleaved file
    if len({(s["file"], s["fmt"], s["offset"]) for s in signals}) != 1:
        return None
    first = signals[0]
    return _Layout(file=first["file"], fmt=first["fmt"], offset=first["offset"], fs=fs,
                   sig_len=sig_len, gains=tuple(s["gain"] for s in signals),
                   baselines=tuple(s["baseline"] for s in signals),
                   units=tuple(s["units"] for s in signals), names=tuple(s["name"] for s in signals),
                   comments=comments)


def _parse_record_line(fields: list[str], record_name: str) -> tuple[int, float, int] | None:
    """``name n_sig fs sig_len`` and nothing else (no segments, counter rate, time or date)."""
    if len(fields) != 4:
        return None
    name, n_sig, fs, sig_len = fields
    if name != record_name or not _NAME.fullmatch(name):
        return None
    if not (_COUNT.fullmatch(n_sig) and _RATE.fullmatch(fs) and _COUNT.fullmatch(sig_len)):
        return None
    rate = float(fs)
    if int(n_sig) == 0 or int(sig_len) == 0 or rate <= 0:
        return None
    # wfdb stores a rate within 1e-8 of a whole number as that integer; keep the same value
    if round(rate, 8) == float(int(rate)):
        rate = float(int(rate))
    return int(n_sig), rate, int(sig_len)


def _parse_signal_line(fields: list[str]) -> dict | None:
    """``file format gain(baseline)/units adc_res adc_zero init checksum block_size name``, all
    nine fields present, the name one word, format 16 or 212 with one sample per frame, no skew,
    block size 0."""
    if len(fields) != 9:
        return None
    file, fmt_field, gain_field, adc_res, adc_zero, init, checksum, block_size, name = fields
    fmt = _FORMAT.fullmatch(fmt_field)
    gain = _GAIN.fullmatch(gain_field)
    if not (_FILE.fullmatch(file) and fmt and gain):
        return None
    if fmt["fmt"] not in _INVALID or int(fmt["spf"] or 1) != 1 or int(fmt["skew"] or 0) != 0:
        return None
    if not (_COUNT.fullmatch(adc_res) and _INT.fullmatch(adc_zero) and _INT.fullmatch(init)
            and _INT.fullmatch(checksum) and block_size == "0"):
        return None
    value = float(gain["gain"])
    if not 0 < value < float("inf"):  # a gain of 0 means 200 to wfdb: rare, leave it to wfdb
        return None
    # the baseline defaults to the ADC zero when the gain field gives none
    baseline = int(gain["baseline"]) if gain["baseline"] is not None else int(adc_zero)
    return dict(file=file, fmt=fmt["fmt"], offset=int(fmt["offset"] or 0), gain=value,
                baseline=baseline, units=gain["units"] or "mV", name=name)


# ----------------------------------------------------------------------------- samples

def _read_digital(path: Path, layout: _Layout, start: int = 0, stop: int | None = None) -> np.ndarray | None:
    """The digital samples of frames ``[start, stop)`` (default all) ``(frames, n_sig)`` as int16
    (format 212's 12 bits sign-extended); None when the file holds fewer bytes than they need."""
    n_sig = len(layout.names)
    stop = layout.sig_len if stop is None else min(stop, layout.sig_len)
    if not 0 <= start < stop:
        return None
    first, count = start * n_sig, (stop - start) * n_sig
    if layout.fmt == "16":
        samples = np.fromfile(path, dtype="<i2", count=count, offset=layout.offset + 2 * first)
    else:
        # format 212 packs pairs of samples in 3 bytes: start at the pair holding the first one
        skip = first % 2
        samples = _unpack_212(np.fromfile(path, dtype=np.uint8, count=(3 * (count + skip) + 1) // 2,
                                          offset=layout.offset + 3 * (first // 2)), count + skip)
        samples = None if samples is None else samples[skip:]
    if samples is None or samples.size != count:
        return None
    return samples.reshape(stop - start, n_sig)


def _unpack_212(raw: np.ndarray, count: int) -> np.ndarray | None:
    """Format 212: each pair of 12-bit samples in three bytes. The first sample is byte 0 plus
    the low nibble of byte 1 as its high bits; the second is byte 2 plus the high nibble of
    byte 1. A lone last sample (odd count) takes two bytes."""
    if raw.size != (3 * count + 1) // 2:
        return None
    padded = np.zeros(3 * ((count + 1) // 2), dtype=np.int16)
    padded[:raw.size] = raw
    triples = padded.reshape(-1, 3)
    pairs = np.empty((triples.shape[0], 2), dtype=np.int16)
    pairs[:, 0] = triples[:, 0] | ((triples[:, 1] & 0x0F) << 8)
    pairs[:, 1] = triples[:, 2] | ((triples[:, 1] & 0xF0) << 4)
    samples = pairs.reshape(-1)[:count]
    samples[samples >= 2048] -= 4096  # two's complement in 12 bits
    return samples


def _to_physical(digital: np.ndarray, layout: _Layout) -> np.ndarray:
    """``(digital - baseline) / gain`` in float64, the same operations in the same order as
    ``wfdb`` (a multiply by the reciprocal gain would differ in the last bit), NaN where the
    format's invalid-sample value stands."""
    invalid = digital == _INVALID[layout.fmt]
    physical = digital.astype(np.float64)
    np.subtract(physical, np.asarray(layout.baselines, dtype=np.int64), out=physical)
    np.divide(physical, np.asarray(layout.gains, dtype=np.float64), out=physical)
    physical[invalid] = np.nan
    return physical
