"""Readers on every real file in the shared data, the quirks they must survive, and broken copies."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from crema.config import STANDARD_LEADS
from crema.data.leads import canonical_lead
from crema.data.formats.cinc_mat import read_cinc_mat
from crema.data.formats.wfdb import read_wfdb
from crema.data.formats.wfdb_header import parse_header
from crema.data.readers import find_records, read_record
from crema.errors import CremaError, ReadError

CINC_FOLDERS = ("cpsc2018", "cpsc2018-extra", "georgia", "ningbo", "ptb", "ptbxl")


def test_every_shared_record_reads(data_root):
    """Every record under cinc/, formats/ and ptbxl/ (both rates) loads; none fails."""
    records = find_records([data_root / "cinc", data_root / "formats", data_root / "ptbxl"])
    assert len(records) == 221 + 11 + 500 + 500
    failures, rates, lead_counts = {}, set(), set()
    for path in records:
        try:
            rec = read_record(path)
        except CremaError as exc:
            failures[str(path)] = str(exc)
            continue
        rates.add(rec.fs)
        lead_counts.add(len(rec.leads))
        assert rec.signal.dtype == np.float32 and np.isfinite(rec.signal).all()
        assert rec.duration_s >= 10.0 - 1e-6
        assert rec.meta["sex"] in ("M", "F", None)
        assert rec.meta["age"] is None or 0 <= rec.meta["age"] <= 120
        assert 0.01 < np.abs(rec.signal).max() < 50  # millivolts, not ADC units
    assert failures == {}
    assert rates == {100.0, 500.0, 1000.0}
    assert lead_counts == {12, 15}


def test_find_records_lists_one_path_per_record(cinc_root):
    listed = find_records(cinc_root)
    assert len(listed) == 221 and all(p.suffix == ".hea" for p in listed)  # no .mat, no mapping CSVs
    assert len(find_records(cinc_root / "ptbxl" / "HR00001.mat")) == 1
    assert find_records(cinc_root / "ptbxl" / "HR00001.mat")[0].name == "HR00001.hea"
    with pytest.raises(ReadError, match="no such file"):
        find_records(cinc_root / "nope")


def test_find_records_on_ptbxl_lists_headers_not_tables(ptbxl_root):
    dat_files = find_records(str(ptbxl_root / "records100" / "*" / "*_lr.dat"))
    assert len(dat_files) == 500 and all(p.suffix == ".hea" for p in dat_files)  # each .dat by its .hea
    listed = find_records(ptbxl_root)
    assert ptbxl_root / "ptbxl_database.csv" not in listed and ptbxl_root / "scp_statements.csv" not in listed
    assert len(listed) == (1000 if (ptbxl_root / "records500").is_dir() else 500)


def test_georgia_header_quirk_uses_the_fallback(cinc_root):
    import wfdb

    header = cinc_root / "georgia" / "E00271.hea"
    assert header.read_text().split()[0] == "E00271.mat"  # the quirk is real
    with pytest.raises(Exception):
        wfdb.rdrecord(str(header.with_suffix("")))
    rec = read_record(header)
    assert rec.signal.shape == (12, 5000) and rec.fs == 500
    assert [canonical_lead(n) for n in rec.leads] == list(STANDARD_LEADS)
    # first samples equal the header's initial values / gain (0 and -73 ADC units at 1000/mV)
    assert rec.signal[0, 0] == pytest.approx(0.0) and rec.signal[1, 0] == pytest.approx(-0.073)
    assert rec.meta == {"age": 83.0, "sex": "F", "dx": ["59118001"]}


def test_fallback_reader_matches_wfdb(cinc_root):
    """On a header wfdb accepts, the scipy fallback gives the same signal."""
    header = cinc_root / "georgia" / "E00001.hea"
    a, b = read_wfdb(header), read_cinc_mat(header)
    assert a.leads == b.leads and a.fs == b.fs
    np.testing.assert_allclose(a.signal, b.signal, atol=1e-6)


def test_cpsc_original_struct(formats_root):
    rec = read_record(formats_root / "cpsc2018-original" / "A1980.mat")
    assert rec.signal.shape == (12, 5000) and rec.fs == 500
    assert rec.leads == STANDARD_LEADS
    assert rec.meta == {"age": 52.0, "sex": "M"}
    assert rec.record_id == "A1980"


def test_ptb_diagnostic_keeps_15_leads(formats_root):
    rec = read_record(formats_root / "s0010_re.hea")
    assert rec.signal.shape == (15, 38400) and rec.fs == 1000
    assert rec.leads[-3:] == ("vx", "vy", "vz")
    assert rec.meta["age"] == 81 and rec.meta["sex"] == "F"
    assert read_record(formats_root / "s0010_re.dat").signal.shape == (15, 38400)


def test_cinc_header_metadata(cinc_root):
    rec = read_record(cinc_root / "cpsc2018" / "A0001.hea")
    assert rec.meta == {"age": 74.0, "sex": "M", "dx": ["59118001"]}
    ptb = read_record(cinc_root / "ptb" / "S0001.hea")
    assert ptb.fs == 1000 and ptb.meta["dx"] == ["251146004", "426783006"]


def test_hr_records_equal_ptbxl_records(cinc_root, ptbxl_hr_root):
    """HR00001 in CinC format is PTB-XL record 1 at 500 Hz."""
    a = read_record(cinc_root / "ptbxl" / "HR00001.hea")
    b = read_record(ptbxl_hr_root / "records500" / "00000" / "00001_hr.hea")
    np.testing.assert_allclose(a.signal, b.signal, atol=1e-3)


@pytest.fixture(scope="module")
def real_signal(ptbxl_root):
    return read_record(ptbxl_root / "records100" / "00000" / "00002_lr.hea").signal  # (12, 1000)


def test_array_round_trips(tmp_path, real_signal):
    x = real_signal
    np.save(tmp_path / "leads_first.npy", x)
    np.save(tmp_path / "time_first.npy", x.T)
    np.savez(tmp_path / "with_fs.npz", signal=x, fs=np.array(100.0))
    np.savetxt(tmp_path / "plain.csv", x.T, delimiter=",")
    np.savetxt(tmp_path / "named.csv", x[:3].T, delimiter=",", header="I,II,V1", comments="")
    for name in ("leads_first.npy", "time_first.npy", "plain.csv"):
        rec = read_record(tmp_path / name, fs=100)
        assert rec.fs == 100 and rec.leads == STANDARD_LEADS
        np.testing.assert_allclose(rec.signal, x, atol=1e-6)
    npz = read_record(tmp_path / "with_fs.npz")
    assert npz.fs == 100.0
    np.testing.assert_array_equal(npz.signal, x)
    named = read_record(tmp_path / "named.csv", fs=100)
    assert named.leads == ("I", "II", "V1")
    np.testing.assert_allclose(named.signal, x[:3], atol=1e-6)
    custom = read_record(tmp_path / "leads_first.npy", fs=100, leads=list(reversed(STANDARD_LEADS)))
    assert custom.leads[0] == "V6"


def test_array_errors(tmp_path, real_signal):
    np.save(tmp_path / "a.npy", real_signal)
    with pytest.raises(ReadError, match=r"a\.npy.*sampling rate unknown"):
        read_record(tmp_path / "a.npy")
    np.save(tmp_path / "square.npy", real_signal[:, :12])
    with pytest.raises(ReadError, match="ambiguous"):
        read_record(tmp_path / "square.npy", fs=100)
    np.save(tmp_path / "odd.npy", real_signal[:5, :100])
    with pytest.raises(ReadError, match="matches neither"):
        read_record(tmp_path / "odd.npy", fs=100)
    (tmp_path / "x.doc").write_text("hello")
    with pytest.raises(ReadError, match="unknown ECG file type"):
        read_record(tmp_path / "x.doc")
    (tmp_path / "x.txt").write_text("hello")  # a text table without a row of numbers
    with pytest.raises(ReadError, match="no rows of numbers"):
        read_record(tmp_path / "x.txt", fs=500)


def make_broken_copies(ptbxl_root, folder, real_signal) -> dict[str, str]:
    """Broken copies of real files in ``folder``; returns {file name: expected error text}."""
    src = ptbxl_root / "records100" / "00000"
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    # truncated .dat
    shutil.copy(src / "00003_lr.hea", folder / "trunc.hea")
    data = (src / "00003_lr.dat").read_bytes()
    (folder / "trunc.dat").write_bytes(data[: len(data) // 2])
    (folder / "trunc.hea").write_text((src / "00003_lr.hea").read_text().replace("00003_lr", "trunc"))
    expected["trunc.hea"] = "truncated file or wrong sample count"
    # header sample count wrong (too small: wfdb alone would silently read part of the file)
    for name, count in (("short_hdr", 900), ("long_hdr", 1200)):
        text = (src / "00004_lr.hea").read_text().replace("00004_lr", name)
        lines = text.splitlines()
        lines[0] = lines[0].replace(" 1000", f" {count}")
        (folder / f"{name}.hea").write_text("\n".join(lines) + "\n")
        shutil.copy(src / "00004_lr.dat", folder / f"{name}.dat")
        expected[f"{name}.hea"] = f"declares {count} samples"
    # NaN in a .npy
    bad = real_signal.copy()
    bad[2, 10] = np.nan
    np.save(folder / "nan.npy", bad)
    expected["nan.npy"] = "NaN"
    # zero-length
    np.save(folder / "empty.npy", np.zeros((12, 0), dtype=np.float32))
    expected["empty.npy"] = "zero-length"
    (folder / "empty.hea").write_text((src / "00005_lr.hea").read_text().replace("00005_lr", "empty"))
    (folder / "empty.dat").write_bytes(b"")
    expected["empty.hea"] = "empty"
    # unknown lead name
    text = (src / "00006_lr.hea").read_text().replace("00006_lr", "badlead")
    (folder / "badlead.hea").write_text(text.replace(" V4\n", " FOO\n"))
    shutil.copy(src / "00006_lr.dat", folder / "badlead.dat")
    expected["badlead.hea"] = "unknown lead name 'FOO'"
    return expected


def test_broken_files_raise_read_error_naming_file(tmp_path, ptbxl_root, real_signal):
    expected = make_broken_copies(ptbxl_root, tmp_path, real_signal)
    for name, problem in expected.items():
        with pytest.raises(ReadError) as info:
            read_record(tmp_path / name, fs=100)
        message = str(info.value)
        assert name.split(".")[0] in message, message
        assert problem in message, message


def test_parse_header_fields(ptbxl_hr_root):
    parsed = parse_header(ptbxl_hr_root / "records500" / "00000" / "00001_hr.hea")
    assert parsed["n_sig"] == 12 and parsed["fs"] == 500 and parsed["sig_len"] == 5000
    assert parsed["signals"][0]["gain"] == 1000 and parsed["signals"][0]["baseline"] == 0
    assert [s["name"] for s in parsed["signals"]][:3] == ["I", "II", "III"]
