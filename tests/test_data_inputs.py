"""What kind of input a path is (crema.data.inputs): one decision for reading, listing, streaming,
crema prepare and crema embed / predict."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from crema.errors import CremaError, ReadError
from crema.data.inputs import InputKind, classify_input, file_kind, is_record_file, named_record, record_path
from crema.data.readers import find_records, read_record
from crema.data.sources import detect_source
from crema.paths import sample_root
from crema.use.inputs import collect_inputs

K = InputKind


@pytest.fixture(scope="module")
def wfdb_record():
    return sorted((sample_root() / "records100" / "00000").glob("*.hea"))[0]


def test_files_by_suffix_and_contents(tmp_path, wfdb_record):
    rec = read_record(wfdb_record)
    np.save(tmp_path / "one.npy", rec.signal)
    np.save(tmp_path / "rows.npy", np.stack([rec.signal] * 3))
    np.savez(tmp_path / "one.npz", signal=rec.signal, fs=rec.fs)
    np.savez(tmp_path / "rows.npz", tracings=np.stack([rec.signal] * 2), other=rec.signal)
    (tmp_path / "bad.npy").write_bytes(b"not an array")
    for name in ("a.h5", "a.HDF5", "a.csv", "a.txt", "a.xml", "a.dcm", "a.EDF", "a.foo", "x.mat", "y.mat", "y.hea"):
        (tmp_path / name).write_bytes(b"")
    assert classify_input(wfdb_record) is K.WFDB
    assert classify_input(wfdb_record.with_suffix(".dat")) is K.WFDB
    assert (classify_input(tmp_path / "x.mat"), classify_input(tmp_path / "y.mat")) == (K.MATLAB, K.WFDB)
    assert classify_input(tmp_path / "one.npy") is K.NPY and classify_input(tmp_path / "rows.npy") is K.NPY_STACK
    assert classify_input(tmp_path / "rows.npy", look_inside=False) is K.NPY == file_kind(tmp_path / "rows.npy")
    assert classify_input(tmp_path / "one.npz") is K.NPZ and classify_input(tmp_path / "rows.npz") is K.NPZ_STACK
    assert classify_input(tmp_path / "rows.npz", dataset="other") is K.NPZ      # the array named
    assert classify_input(tmp_path / "bad.npy") is K.NPY                       # unreadable: read as a record
    kinds = [classify_input(tmp_path / n) for n in ("a.h5", "a.HDF5", "a.csv", "a.txt", "a.xml", "a.dcm", "a.EDF", "a.foo")]
    assert kinds == [K.HDF5, K.HDF5, K.TEXT, K.TEXT, K.XML, K.DICOM, K.EDF, K.UNKNOWN]
    assert [k.is_stack for k in (K.NPY_STACK, K.NPZ_STACK, K.HDF5, K.NPY, K.NPZ, K.FOLDER)] == [True] * 3 + [False] * 3


def test_folders_globs_and_missing_paths(tmp_path):
    (tmp_path / "rec[1].npy").write_bytes(b"")
    assert classify_input(tmp_path) is K.FOLDER
    assert classify_input(tmp_path / "*.npy") is K.GLOB
    assert classify_input(str(tmp_path / "**" / "x.hea")) is K.GLOB
    assert classify_input(tmp_path / "rec[1].npy") is K.NPY          # an existing path is literal
    assert classify_input(tmp_path / "nothing.hea") is K.MISSING
    assert not any(k.is_file for k in (K.FOLDER, K.GLOB, K.MISSING))


def test_a_prepared_corpus_is_its_own_kind_for_every_reader(tiny_ptbxl_corpus):
    root = tiny_ptbxl_corpus.path
    assert classify_input(root) is K.CORPUS and classify_input(f"{root}:val,test") is K.CORPUS
    assert classify_input(f"{root}:bogus") is K.MISSING and classify_input(root.parent) is K.FOLDER
    assert not K.CORPUS.is_file and not K.CORPUS.is_stack
    test_records = collect_inputs(f"{root}:test")
    assert 0 < len(test_records) < len(collect_inputs(root))
    with pytest.raises(ReadError, match="a prepared corpus, not a folder of records"):
        find_records(root)
    with pytest.raises(CremaError, match="already a prepared corpus"):
        detect_source(root)


def test_record_paths_and_listed_files(tmp_path, wfdb_record):
    for suffix in (".hea", ".dat"):
        shutil.copy(wfdb_record.with_suffix(suffix), tmp_path / f"r{suffix}")
    (tmp_path / "orphan.dat").write_bytes(b"")
    (tmp_path / "ptbxl_database.csv").write_text("a,b\n1,2\n")
    (tmp_path / "notes.txt").write_text("a list of records, not samples\n")
    assert record_path(tmp_path / "r.dat") == tmp_path / "r.hea" == record_path(tmp_path / "r.hea")
    assert is_record_file(tmp_path / "r.dat") and not is_record_file(tmp_path / "orphan.dat")
    assert not is_record_file(tmp_path / "ptbxl_database.csv") and not is_record_file(tmp_path / "notes.txt")
    assert find_records(tmp_path) == [tmp_path / "r.hea"]


def test_prepare_and_embed_see_the_same_kind(tmp_path, wfdb_record):
    """crema prepare (detect_source) and crema embed (collect_inputs) decide stacks the same way."""
    signal = read_record(wfdb_record).signal
    np.save(tmp_path / "rows.npy", np.stack([signal] * 3))
    np.save(tmp_path / "one.npy", signal)
    assert detect_source(tmp_path / "rows.npy") == "stack" and detect_source(tmp_path / "one.npy") == "files"
    items = collect_inputs(tmp_path, fs=100)
    assert [i.source for i in items] == [str(tmp_path / "one.npy")] + [f"{tmp_path / 'rows.npy'}[{r}]" for r in range(3)]
    with pytest.raises(Exception, match="no such file or folder"):
        detect_source(tmp_path / "*.npy")


def test_a_wfdb_record_named_without_its_extension(tmp_path, wfdb_record):
    """``dir/r`` names the WFDB record ``dir/r.hea`` (as wfdb.rdrecord takes it) for reading,
    listing, prepare and embed; a name with no header beside it is still missing."""
    for suffix in (".hea", ".dat"):
        shutil.copy(wfdb_record.with_suffix(suffix), tmp_path)
    header = tmp_path / wfdb_record.name
    name = header.with_suffix("")
    assert named_record(name) == header and named_record(header) == header
    assert classify_input(name) is K.WFDB and detect_source(name) == "files"
    assert find_records([name]) == [header]
    np.testing.assert_array_equal(read_record(name).signal, read_record(header).signal)
    assert [i.source for i in collect_inputs(name)] == [str(header)]
    (tmp_path / "r.1.hea").write_text("")  # a dot in the name: the extension is appended, not replaced
    assert named_record(tmp_path / "r.1") == tmp_path / "r.1.hea" and named_record(tmp_path / "r") == tmp_path / "r"
    assert classify_input(tmp_path / "r") is K.MISSING
    with pytest.raises(ReadError, match="no such file"):
        read_record(tmp_path / "r")
