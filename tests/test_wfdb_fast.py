"""The fast WFDB path (crema.data.formats.wfdb_fast) against the reference, ``wfdb`` (issue 12, item 4).

Every comparison reads the same record twice through ``read_record``: once as shipped (fast path
for single-file format 16/212 records) and once with ``CREMA_WFDB_READER=wfdb``, and requires
bit-identical arrays, the same rate, lead names and metadata, the same error for broken input,
and a bit-identical prepared corpus.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import wfdb

from crema.data.formats import wfdb as wfdb_reader, wfdb_fast
from crema.data.prepare import prepare_corpus
from crema.data.readers import find_records, read_record
from crema.errors import ReadError
from crema.paths import sample_root

SAMPLE_RECORDS = sample_root() / "records100" / "00000"
SHARED_PER_FOLDER = 6  # records taken from each folder of the shared data (about 60 in all)
CORPUS_FILES = ("signals.npy", "lead_mask.npy", "index.csv", "classes.json", "preprocess.json")


# ============================================================================ helpers

def _read_both(path: Path, monkeypatch) -> tuple:
    """``read_record(path)`` with the fast path allowed, then forced off; each a Recording or the
    ReadError it raised."""
    results = []
    for mode in ("fast", "wfdb"):
        monkeypatch.setenv(wfdb_fast.ENV_VAR, mode)
        try:
            results.append(read_record(path))
        except ReadError as exc:
            results.append(exc)
    monkeypatch.delenv(wfdb_fast.ENV_VAR)
    return tuple(results)


def _assert_same(path: Path, monkeypatch) -> None:
    fast, ref = _read_both(path, monkeypatch)
    if isinstance(ref, ReadError):
        assert isinstance(fast, ReadError) and str(fast) == str(ref), (fast, ref)
        return
    assert not isinstance(fast, ReadError), fast
    assert fast.signal.dtype == ref.signal.dtype and fast.signal.shape == ref.signal.shape
    assert fast.signal.tobytes() == ref.signal.tobytes(), path
    assert (fast.fs, fast.leads, fast.record_id, fast.meta) == (ref.fs, ref.leads, ref.record_id, ref.meta)


def _assert_raw_same(header: Path) -> None:
    """The fast reader's float64 physical signal and fields equal ``wfdb.rdrecord``'s."""
    fast = wfdb_fast.read_fast(header)
    assert fast is not None, f"{header.name} did not take the fast path"
    ref = wfdb.rdrecord(str(header.with_suffix("")))
    np.testing.assert_array_equal(fast.p_signal, ref.p_signal)  # NaN where NaN, else bit-equal
    assert fast.p_signal.dtype == ref.p_signal.dtype == np.float64
    assert (fast.fs, fast.sig_name, fast.units, fast.comments) == (ref.fs, ref.sig_name, ref.units, ref.comments)


def _shared_headers(root: Path) -> list[Path]:
    """The first few WFDB headers of every folder of the shared data."""
    by_folder: dict[Path, list[Path]] = {}
    for path in find_records(root):
        if path.suffix == ".hea":
            by_folder.setdefault(path.parent, []).append(path)
    return [p for paths in by_folder.values() for p in paths[:SHARED_PER_FOLDER]]


def _write(folder: Path, name: str, digital: np.ndarray, fmt: str, **fields) -> Path:
    """A WFDB record written by ``wfdb.wrsamp`` (an independent writer): ``digital`` is
    ``(T, n_sig)`` ADC units; returns its header."""
    n_sig = digital.shape[1]
    args = dict(units=["mV"] * n_sig, sig_name=list(("I", "II", "III", "aVR", "aVL", "aVF",
                                                      "V1", "V2", "V3", "V4", "V5", "V6")[:n_sig]),
                adc_gain=[200.0] * n_sig, baseline=[0] * n_sig, fs=500)
    args.update(fields)
    wfdb.wrsamp(name, d_signal=digital.astype(np.int32), fmt=[fmt] * n_sig, write_dir=str(folder), **args)
    return folder / f"{name}.hea"


def _edit(header: Path, edit) -> Path:
    lines = header.read_text().splitlines()
    header.write_text("\n".join(edit(lines)) + "\n")
    return header


@pytest.fixture(scope="module")
def real_digital() -> np.ndarray:
    """Real ADC samples ``(1000, 12)`` int16 of the shipped record 00001_lr (format 16)."""
    raw = np.fromfile(SAMPLE_RECORDS / "00001_lr.dat", dtype="<i2")
    return raw.reshape(-1, 12)


# ============================================================================ real records

def test_every_shipped_sample_record_is_bit_identical(monkeypatch):
    headers = sorted(SAMPLE_RECORDS.glob("*.hea"))
    assert len(headers) == 500
    for header in headers:
        _assert_same(header, monkeypatch)
    for header in headers[:50]:
        _assert_raw_same(header)


def test_shared_records_are_bit_identical(data_root, monkeypatch):
    headers = _shared_headers(data_root)
    assert len(headers) >= 30
    fast = [h for h in headers if wfdb_fast.read_fast(h) is not None]
    # PTB-XL at 100 and 500 Hz and the CinC .mat records without a date take the fast path
    assert any("records500" in str(h) for h in fast) and any("records100" in str(h) for h in fast)
    for header in headers:
        _assert_same(header, monkeypatch)
    for header in fast:
        _assert_raw_same(header)


def test_multi_file_record_falls_back_to_wfdb(formats_root, monkeypatch):
    header = formats_root / "s0010_re.hea"  # 12 leads in .dat, 3 Frank leads in .xyz
    assert wfdb_fast.read_fast(header) is None
    _assert_same(header, monkeypatch)
    assert read_record(header).signal.shape == (15, 38400)


# ============================================================================ layouts

def test_format_212_odd_sample_count(tmp_path, real_digital, monkeypatch):
    # 12-bit range, with both extremes and the invalid value's neighbour; 3 x 333 samples is odd
    digital = np.clip(real_digital[:333, :3], -2047, 2047)
    digital[0] = (-2047, 2047, 0)
    header = _write(tmp_path, "r212", digital, "212", adc_gain=[200.0, 1000.0, 100.5],
                    baseline=[0, 3, -4], units=["mV", "uV", "mV"])
    assert (tmp_path / "r212.dat").stat().st_size == (3 * 333 * 3 + 1) // 2
    _assert_raw_same(header)
    _assert_same(header, monkeypatch)
    assert read_record(header).signal.shape == (3, 333)


def test_format_16_byte_offset_and_adc_zero_baseline(tmp_path, real_digital, monkeypatch):
    header = _write(tmp_path, "off", real_digital, "16", baseline=[7] * 12)
    data = tmp_path / "off.dat"
    data.write_bytes(b"\x01" * 24 + data.read_bytes())  # e.g. a MATLAB v4 preamble
    # "16+24" and no baseline in the gain field: the ADC zero (field 5) is the baseline
    def offset_and_zero(line: str) -> str:
        fields = line.split()
        fields[1], fields[2], fields[4] = "16+24", fields[2].replace("(7)", ""), "-5"
        return " ".join(fields)
    _edit(header, lambda lines: [lines[0]] + [offset_and_zero(line) for line in lines[1:]])
    assert " 16+24 200.0/mV 16 -5 " in header.read_text()
    _assert_raw_same(header)
    _assert_same(header, monkeypatch)


@pytest.mark.parametrize("fmt, invalid", [("16", -32768), ("212", -2048)])
def test_invalid_sample_reads_as_nan_both_ways(tmp_path, real_digital, fmt, invalid, monkeypatch):
    digital = np.clip(real_digital, -2047, 2047)
    digital[10, 2] = invalid  # the format's "no sample here" value
    header = _write(tmp_path, "gap", digital, fmt)
    fast = wfdb_fast.read_fast(header)
    assert np.isnan(fast.p_signal[10, 2]) and np.isnan(fast.p_signal).sum() == 1
    fast, ref = _read_both(header, monkeypatch)
    assert isinstance(fast, ReadError) and str(fast) == str(ref) and "NaN" in str(fast)


@pytest.mark.parametrize("edit, fast", [
    (lambda ls: [ls[0] + " 12:00:00 01/01/2000"] + ls[1:], False),            # base time and date
    (lambda ls: [ls[0]] + [l.replace(" 16 ", " 16x1 ", 1) for l in ls[1:]], True),  # 1 sample/frame
    (lambda ls: [ls[0]] + [l.replace(" 16 ", " 16:0 ", 1) for l in ls[1:]], True),  # no skew
    (lambda ls: [ls[0]] + [l.replace(" 16 ", " 16x2 ", 1) for l in ls[1:]], False),  # 2 samples/frame
    (lambda ls: [ls[0]] + [l + " lead" for l in ls[1:2]] + ls[2:], False),          # name with a space
    (lambda ls: [ls[0]] + [l.replace("/mV", "") for l in ls[1:]], True),            # units left out
    (lambda ls: [ls[0]] + [l.replace("/mV", "/uV") for l in ls[1:]], True),         # microvolts
    (lambda ls: ["# Age: 56", "#Sex: Female"] + ls + ["# Dx: 426783006"], True),  # comments around
    (lambda ls: [ls[0].replace("00002_lr", "other")] + ls[1:], False),            # another name
], ids=["time-date", "x1", "skew0", "x2", "spaced-name", "no-units", "uV", "comments", "renamed"])
def test_header_variants_read_the_same(tmp_path, edit, fast, monkeypatch):
    shutil.copy(SAMPLE_RECORDS / "00002_lr.dat", tmp_path / "00002_lr.dat")
    header = _edit(Path(shutil.copy(SAMPLE_RECORDS / "00002_lr.hea", tmp_path)), edit)
    assert (wfdb_fast.read_fast(header) is not None) == fast
    _assert_same(header, monkeypatch)


def test_other_formats_use_wfdb(tmp_path, real_digital, monkeypatch):
    header = _write(tmp_path, "f80", np.clip(real_digital // 64, -127, 127), "80")
    assert wfdb_fast.read_fast(header) is None
    _assert_same(header, monkeypatch)
    assert read_record(header).signal.shape == (12, 1000)


def test_forcing_wfdb_never_calls_the_fast_path(monkeypatch):
    def refuse(header):
        raise AssertionError("fast path used although CREMA_WFDB_READER=wfdb")
    monkeypatch.setattr(wfdb_reader, "read_fast", refuse)
    monkeypatch.setenv(wfdb_fast.ENV_VAR, "wfdb")
    assert read_record(SAMPLE_RECORDS / "00001_lr.hea").signal.shape == (12, 1000)


# ============================================================================ broken input

def _break_truncated(folder: Path, header: Path) -> None:
    data = folder / "00003_lr.dat"
    data.write_bytes(data.read_bytes()[:-7])


def _break_extra_bytes(folder: Path, header: Path) -> None:
    with open(folder / "00003_lr.dat", "ab") as fh:
        fh.write(b"\0\0")


def _break_empty(folder: Path, header: Path) -> None:
    (folder / "00003_lr.dat").write_bytes(b"")


def _break_missing_dat(folder: Path, header: Path) -> None:
    (folder / "00003_lr.dat").unlink()


def _break_sample_count(folder: Path, header: Path) -> None:
    _edit(header, lambda ls: [ls[0].replace(" 1000", " 900")] + ls[1:])


def _break_signal_line(folder: Path, header: Path) -> None:
    _edit(header, lambda ls: [ls[0], "00003_lr.dat 16 abc/mV 16 0 1 2 0 I"] + ls[2:])


def _break_record_line(folder: Path, header: Path) -> None:
    _edit(header, lambda ls: ["00003_lr twelve 100 1000"] + ls[1:])


def _break_missing_lines(folder: Path, header: Path) -> None:
    _edit(header, lambda ls: ls[:6])


def _break_garbage_header(folder: Path, header: Path) -> None:
    header.write_bytes(b"\x00\xff\xfe garbage \x80\n")


def _break_unit(folder: Path, header: Path) -> None:
    _edit(header, lambda ls: [ls[0]] + [l.replace("/mV", "/degC") for l in ls[1:]])


@pytest.mark.parametrize("breakage", [
    _break_truncated, _break_extra_bytes, _break_empty, _break_missing_dat, _break_sample_count,
    _break_signal_line, _break_record_line, _break_missing_lines, _break_garbage_header, _break_unit,
], ids=lambda f: f.__name__.removeprefix("_break_"))
def test_broken_records_raise_the_same_read_error(tmp_path, breakage, monkeypatch):
    for suffix in (".hea", ".dat"):
        shutil.copy(SAMPLE_RECORDS / f"00003_lr{suffix}", tmp_path)
    header = tmp_path / "00003_lr.hea"
    breakage(tmp_path, header)
    fast, ref = _read_both(header, monkeypatch)
    assert isinstance(ref, ReadError) and isinstance(fast, ReadError), (fast, ref)
    assert str(fast) == str(ref)
    assert "00003_lr" in str(fast)


# ============================================================================ corpora

def test_prepared_corpus_is_bit_identical(tmp_path, monkeypatch):
    args = dict(ptbxl_rate=100, limit=40, progress=False)
    prepare_corpus(sample_root(), tmp_path / "fast", workers=1, **args)
    # the pool's worker processes inherit the setting from the environment
    monkeypatch.setenv(wfdb_fast.ENV_VAR, "wfdb")
    prepare_corpus(sample_root(), tmp_path / "wfdb", workers=2, **args)
    for name in CORPUS_FILES:
        assert (tmp_path / "fast" / name).read_bytes() == (tmp_path / "wfdb" / name).read_bytes(), name
