"""Hostile input files: they must not make CREMA read files it was never given, nor exhaust memory.

Each test builds its hostile file from a real record (the PTB-XL sample shipped in the package;
the CinC case from the shared data) and checks the outcome: one clear error naming the file and
the problem (a :class:`LimitError` naming the limit and its setting where a size is the problem),
raised before anything large is allocated, and, in a batch, the good files beside it still done.
docs/DATA.md ("Bad input CREMA survives") lists the same cases.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import crema
from crema import limits
from crema.cli import main
from crema.config import ModelConfig, ObjectiveConfig, PreprocessConfig
from crema.config_io import to_dict
from crema.data.readers import find_records, read_record
from crema.data.stacks import RecordStack
from crema.errors import ReadError
from crema.paths import sample_root
from crema.train.checkpoint import save_checkpoint
from crema.use.batch import expand_inputs

SAMPLE_RECORDS = sample_root() / "records100" / "00000"
SRC = Path(crema.__file__).resolve().parents[1]
PATH_REFUSED = "signal files must lie beside its header"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ============================================================================ helpers

def _copy_record(folder: Path, stem: str = "00001_lr") -> Path:
    """Sample record ``stem`` (WFDB .hea + .dat) copied into ``folder``; returns its header."""
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".hea", ".dat"):
        shutil.copy(SAMPLE_RECORDS / f"{stem}{suffix}", folder / f"{stem}{suffix}")
    return folder / f"{stem}.hea"


def _header_naming(folder: Path, name: str, signal_file: str) -> Path:
    """A copy of the sample's first header, called ``name``, whose signal lines name ``signal_file``."""
    folder.mkdir(parents=True, exist_ok=True)
    text = (SAMPLE_RECORDS / "00001_lr.hea").read_text()
    header = folder / f"{name}.hea"
    header.write_text(text.replace("00001_lr.dat", signal_file).replace("00001_lr ", f"{name} ", 1))
    return header


def _stack(n: int = 4) -> np.ndarray:
    """Real records ``(n, 12, 1000)`` float32 mV (the sample's first ``n``, 100 Hz)."""
    return np.stack([read_record(SAMPLE_RECORDS / f"{i:05d}_lr.hea").signal for i in range(1, n + 1)])


def _npy_header(shape: tuple, descr: str = "<f4") -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue()


def _lying_npy(path: Path, shape: tuple, size: int = 1024) -> Path:
    """A ``size``-byte ``.npy``: a real record's first bytes under a header declaring ``shape``."""
    header = _npy_header(shape)
    path.write_bytes(header + _stack(1).tobytes()[:size - len(header)])
    return path


def _zero_tail_npz(path: Path, samples: int) -> Path:
    """A deflated ``.npz`` whose one record is a real record followed by a flat tail: a few kB on
    disk, ``12 x samples x 4`` bytes once read."""
    real = _stack(1)[0]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("signal.npy", "w", force_zip64=True) as fh:
            fh.write(_npy_header((12, samples)))
            row = np.zeros(samples, "<f4")
            for lead in real:
                row[:lead.size] = lead
                fh.write(row.tobytes())
    return path


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised pretraining checkpoint (embeds a 10 s record as one window)."""
    from crema.model.crema import CREMA

    torch.manual_seed(0)
    cfg = ModelConfig(window=2500, size="tiny", patch_size=50, dim=32, depth=1, heads=2, stem_channels=8,
                      drop_path=0.0, decoder_dim=32, decoder_depth=1, decoder_heads=2, projector_hidden=32,
                      projector_dim=16)
    out = tmp_path_factory.mktemp("ckpt") / "pretrain"
    save_checkpoint(out, CREMA(cfg, ObjectiveConfig()), {
        "kind": "pretrain", "model": to_dict(cfg), "preprocess": to_dict(PreprocessConfig())})
    return out


def _embed(capsys, *argv) -> tuple[int, str]:
    """``crema embed ARGV --no-progress`` in this process: (exit status, stderr)."""
    code = main(["embed", *[str(a) for a in argv], "--no-progress"])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, err


# ============================================================================ 1. inputs reach outside themselves

@pytest.mark.parametrize("named", ["absolute-existing", "absolute-missing", "parent", "backslash"])
def test_header_naming_a_path_is_refused_without_saying_anything_of_it(tmp_path, named):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(SAMPLE_RECORDS / "00001_lr.dat", elsewhere / "patient.dat")  # a real record elsewhere
    signal_file = {"absolute-existing": str(elsewhere / "patient.dat"),
                   "absolute-missing": str(elsewhere / "absent.dat"),
                   "parent": "../elsewhere/patient.dat", "backslash": "..\\elsewhere\\patient.dat"}[named]
    header = _header_naming(tmp_path / "in", "evil", signal_file)
    with pytest.raises(ReadError, match=PATH_REFUSED) as err:
        read_record(header)
    message = str(err.value)
    assert "bytes" not in message and "missing" not in message and "exist" not in message


def test_cinc_header_naming_a_mat_elsewhere_is_not_read(cinc_root, tmp_path):
    """The CinC ``.mat`` fallback read any path a header named (the audit's case)."""
    source = next(iter(sorted((cinc_root / "ptbxl").glob("HR*.hea"))))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(source.with_suffix(".mat"), elsewhere / "patient.mat")
    lines = source.read_text().splitlines()
    lines = [lines[0].replace(source.stem, "evil", 1)] + [
        line.replace(source.with_suffix(".mat").name, str(elsewhere / "patient.mat")) for line in lines[1:]]
    header = tmp_path / "in" / "evil.hea"
    header.parent.mkdir()
    header.write_text("\n".join(lines) + "\n")
    with pytest.raises(ReadError, match=PATH_REFUSED):
        read_record(header)


@pytest.mark.parametrize("target_exists", [True, False])
def test_signal_file_link_leading_out_of_the_folder_is_refused(tmp_path, target_exists):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if target_exists:
        shutil.copy(SAMPLE_RECORDS / "00001_lr.dat", elsewhere / "patient.dat")
    folder = tmp_path / "in"
    header = _header_naming(folder, "linked", "linked.dat")
    (folder / "linked.dat").symlink_to(elsewhere / "patient.dat")
    with pytest.raises(ReadError, match="a link leading out of the header's folder") as err:
        read_record(header)
    assert "bytes" not in str(err.value) and "missing" not in str(err.value)


def test_signal_file_link_inside_the_folder_is_read(tmp_path):
    folder = tmp_path / "in"
    _copy_record(folder)
    header = _header_naming(folder, "alias", "alias.dat")
    (folder / "alias.dat").symlink_to("00001_lr.dat")
    assert np.array_equal(read_record(header).signal, read_record(folder / "00001_lr.hea").signal)


def _h5_target(path: Path) -> np.ndarray:
    import h5py

    rows = np.ascontiguousarray(_stack().transpose(0, 2, 1))  # CODE-15% layout (N, T, 12)
    with h5py.File(path, "w") as f:
        f.create_dataset("tracings", data=rows)
    rows.tofile(path.with_suffix(".bin"))
    return rows


@pytest.mark.parametrize("kind, problem", [("external", "keeps its data in external files"),
                                           ("link", "is a link to another file"),
                                           ("virtual", "is a virtual dataset"),
                                           ("soft-to-link", "is a link to another file")])
def test_hdf5_reading_from_other_files_is_refused(tmp_path, kind, problem):
    import h5py

    rows = _h5_target(tmp_path / "other.h5")
    path = tmp_path / "in.h5"
    with h5py.File(path, "w") as f:
        f.attrs["fs"] = 100.0
        if kind == "external":
            f.create_dataset("tracings", shape=rows.shape, dtype=rows.dtype,
                             external=[(str(tmp_path / "other.bin"), 0, rows.nbytes)])
        elif kind == "link":
            f["tracings"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "tracings")
        elif kind == "virtual":
            layout = h5py.VirtualLayout(shape=rows.shape, dtype=rows.dtype)
            layout[:] = h5py.VirtualSource(str(tmp_path / "other.h5"), "tracings", shape=rows.shape)
            f.create_virtual_dataset("tracings", layout)
        else:
            f["far"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "/")
            f["tracings"] = h5py.SoftLink("/far/tracings")
    with pytest.raises(ReadError, match=problem):
        RecordStack(path)


def test_hdf5_ids_through_an_external_link_are_not_read(tmp_path):
    import h5py

    _h5_target(tmp_path / "other.h5")
    with h5py.File(tmp_path / "other.h5", "a") as f:
        f["exam_id"] = np.arange(4)
    path = tmp_path / "in.h5"
    with h5py.File(path, "w") as f:
        f.attrs["fs"] = 100.0
        f["tracings"] = np.ascontiguousarray(_stack().transpose(0, 2, 1))
        f["exam_id"] = h5py.ExternalLink(str(tmp_path / "other.h5"), "exam_id")
    assert RecordStack(path).ids == [f"{row:06d}" for row in range(4)]  # not the other file's 0..3
    with pytest.raises(ReadError, match="neither a file nor an array"):
        RecordStack(path, ids="exam_id").ids


# ============================================================================ 2. declared sizes are trusted

def test_npy_declaring_ten_million_records_is_refused_from_its_header(tmp_path):
    path = _lying_npy(tmp_path / "huge.npy", (10**7, 12, 1000))
    with pytest.raises(ReadError, match=r"declares shape \(10000000, 12, 1000\).*holds 896 bytes"):
        RecordStack(path, fs=100)
    with pytest.raises(ReadError, match="truncated or its header lies"):
        read_record(_lying_npy(tmp_path / "long.npy", (12, 10**9)), fs=100)


def test_npz_member_declaring_more_than_it_holds_is_refused(tmp_path):
    real = _stack()
    path = tmp_path / "lie.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("signal.npy", _npy_header((10**7, 12, 1000)) + real.tobytes())
        archive.writestr("fs.npy", _npy_header((), "<f8") + np.float64(100).tobytes())
    with pytest.raises(ReadError, match="declares shape"):
        RecordStack(path)


def test_chunked_hdf5_with_missing_chunks_is_refused(tmp_path):
    import h5py

    path = tmp_path / "lie.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("tracings", shape=(10**7, 1000, 12), dtype="<f4", chunks=(4, 1000, 12))
        ds[:4] = _stack().transpose(0, 2, 1)  # one chunk of real records; the rest is never stored
        f.attrs["fs"] = 100.0
    assert path.stat().st_size < 300_000
    with pytest.raises(ReadError, match="stores 1 of its 2,500,000 chunks"):
        RecordStack(path)


def test_hdf5_chunk_over_the_decompressed_limit_is_refused(tmp_path, monkeypatch):
    import h5py

    path = tmp_path / "chunky.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("tracings", data=np.ascontiguousarray(_stack().transpose(0, 2, 1)),
                         chunks=(4, 1000, 12), compression="gzip")
        f.attrs["fs"] = 100.0
    assert len(RecordStack(path)) == 4
    monkeypatch.setenv(limits.DECOMPRESSED_BYTES.env, str(100_000))  # a chunk is 192,000 bytes
    with pytest.raises(limits.LimitError, match=limits.DECOMPRESSED_BYTES.env):
        RecordStack(path)


def test_npz_bomb_record_is_one_limit_error(tmp_path, monkeypatch):
    """A one-record .npz of a few kB declaring a record over RECORD_BYTES (the audit's 1.4 MB
    file held 960 MB; here the limit is lowered so that the file is built in milliseconds)."""
    path = _zero_tail_npz(tmp_path / "bomb.npz", 200_000)  # 9.6 MB once read
    assert path.stat().st_size < 100_000
    monkeypatch.setenv(limits.RECORD_BYTES.env, str(4 * 2**20))
    with pytest.raises(limits.LimitError, match=f"record in memory limit.*{limits.RECORD_BYTES.env}"):
        read_record(path, fs=100)
    monkeypatch.setenv(limits.RECORD_BYTES.env, str(16 * 2**20))
    assert read_record(path, fs=100).signal.shape == (12, 200_000)


def test_npz_compressed_members_over_the_decompressed_limit_are_refused(tmp_path, monkeypatch):
    path = _zero_tail_npz(tmp_path / "bomb.npz", 200_000)
    monkeypatch.setenv(limits.DECOMPRESSED_BYTES.env, str(2**20))
    with pytest.raises(limits.LimitError, match=limits.DECOMPRESSED_BYTES.env):
        read_record(path, fs=100)


def test_npy_record_over_the_record_limit_is_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "long.npy"
    np.save(path, np.tile(_stack(1)[0], 20))  # (12, 20000): 960,000 bytes as float32
    monkeypatch.setenv(limits.RECORD_BYTES.env, str(500_000))
    with pytest.raises(limits.LimitError, match=limits.RECORD_BYTES.env):
        read_record(path, fs=100)


def test_wfdb_record_over_the_record_limit_is_refused(tmp_path, monkeypatch):
    header = _copy_record(tmp_path / "in")
    monkeypatch.setenv(limits.RECORD_BYTES.env, str(12 * 1000 * 4 - 1))
    with pytest.raises(limits.LimitError, match=limits.RECORD_BYTES.env):
        read_record(header)


def test_stack_with_more_rows_than_the_limit_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "stack.npy"
    np.save(path, _stack())
    monkeypatch.setenv(limits.STACK_RECORDS.env, "3")
    with pytest.raises(limits.LimitError, match=limits.STACK_RECORDS.env):
        RecordStack(path, fs=100)


def test_matlab_file_inflating_past_the_limit_is_refused(tmp_path, monkeypatch):
    """A CPSC-2018-style struct (real signal, long flat tail) saved compressed, as MATLAB does."""
    from scipy.io import savemat

    data = np.zeros((12, 150_000))
    data[:, :1000] = _stack(1)[0]
    ecg = np.zeros((1, 1), dtype=[("sex", "O"), ("age", "O"), ("data", "O")])
    ecg[0, 0] = ("Male", 50, data)
    path = tmp_path / "A0001.mat"
    savemat(path, {"ECG": ecg}, do_compression=True)
    assert path.stat().st_size < 100_000  # 14.4 MB of doubles once inflated
    monkeypatch.setenv(limits.DECOMPRESSED_BYTES.env, str(4 * 2**20))
    with pytest.raises(limits.LimitError, match=limits.DECOMPRESSED_BYTES.env):
        read_record(path)
    monkeypatch.setenv(limits.DECOMPRESSED_BYTES.env, str(32 * 2**20))
    assert read_record(path).signal.shape == (12, 150_000)


# The child's own peak (VmHWM: ru_maxrss would carry the parent's peak across fork and exec).
_RSS_PROBE = """
import re, sys
from pathlib import Path
from crema.use.batch import expand_inputs
from crema.errors import CremaError
items, failures = expand_inputs(sys.argv[1:], 100.0, None)
for item in items:
    try:
        item.load()
    except CremaError:
        failures.append(item)
peak_kb = int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))
print(len(failures), peak_kb // 1024)
"""


def test_lying_files_are_refused_in_flat_memory(tmp_path):
    """Listing the records of a 1 kB .npy and a chunked HDF5 declaring ten million records took
    6 GB before their headers were checked; now each is one failure, in a few hundred MB (the
    peak of a fresh process, whatever the test process holds)."""
    import h5py

    if not Path("/proc/self/status").is_file():
        pytest.skip("needs Linux's /proc to read a process's peak memory")
    huge = _lying_npy(tmp_path / "huge.npy", (10**7, 12, 1000))
    lie = tmp_path / "lie.h5"
    with h5py.File(lie, "w") as f:
        f.create_dataset("tracings", shape=(10**7, 1000, 12), dtype="<f4", chunks=(4, 1000, 12))[:4] = \
            _stack().transpose(0, 2, 1)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", _RSS_PROBE, str(huge), str(lie)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    n_failures, rss_mb = map(int, done.stdout.split())
    assert n_failures == 2
    assert rss_mb < 1024


# ============================================================================ 3. a stored rate is not overridden

def test_npz_record_storing_its_rate_refuses_another(tmp_path):
    path = tmp_path / "one.npz"
    np.savez(path, signal=_stack(1)[0], fs=np.array(100.0))
    with pytest.raises(ReadError, match="stores fs=100 Hz but fs=500 Hz was given"):
        read_record(path, fs=500)
    assert read_record(path, fs=100).fs == read_record(path).fs == 100.0


# ============================================================================ 4. object arrays, per-file errors

def test_stack_with_object_ids_fails_alone_and_the_batch_goes_on(tiny_checkpoint, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    real = np.repeat(_stack(2), 3, axis=2)  # 30 s at 100 Hz: three 10 s windows each
    np.savez(folder / "a_objects.npz", signal=real, fs=np.array(100.0),
             record_id=np.array(["r1", None], dtype=object))
    np.savez(folder / "b_good.npz", signal=real, fs=np.array(100.0))
    code, err = _embed(capsys, tiny_checkpoint, folder, "--out", tmp_path / "emb")
    assert code == 1 and "holds pickled Python objects" in err
    index = pd.read_csv(tmp_path / "emb.index.csv", dtype=str)
    assert index["source"].tolist() == [f"{folder / 'b_good.npz'}[{i}]" for i in range(2)]
    errors = pd.read_csv(tmp_path / "emb.errors.csv")
    assert errors["source"].tolist() == [str(folder / "a_objects.npz")]


def test_one_record_npz_with_object_leads_is_refused(tmp_path):
    path = tmp_path / "one.npz"
    np.savez(path, signal=_stack(1)[0], fs=np.array(100.0), leads=np.array(["I"] * 11 + [None], dtype=object))
    with pytest.raises(ReadError, match="pickled Python objects"):
        read_record(path)


# ============================================================================ 5. careless use

def test_existing_paths_with_glob_characters_are_taken_literally(tmp_path):
    folder = tmp_path / "run[1]"
    folder.mkdir()
    np.save(folder / "ecg*.npy", _stack(1)[0])
    expected = [folder / "ecg*.npy"]
    assert find_records(folder) == expected
    assert find_records(folder / "ecg*.npy") == expected
    assert find_records(str(tmp_path / "run?1?" / "*.npy")) == expected  # a pattern still globs


def test_crema_outputs_inside_the_input_folder_are_not_read_back(tiny_checkpoint, tmp_path, capsys):
    folder = tmp_path / "in"
    _copy_record(folder)
    np.save(folder / "good.npy", _stack(2)[1])
    out = folder / "emb"  # the output inside the input folder
    for extra in ([], ["--overwrite"]):
        code, _ = _embed(capsys, tiny_checkpoint, folder, "--fs", "100", "--out", out, *extra)
        assert code == 0
        assert sorted(pd.read_csv(folder / "emb.index.csv", dtype=str)["record_id"]) == ["00001_lr", "good"]
    # a corpus and a model folder inside the input folder are not entered either
    corpus = folder / "corpus"
    corpus.mkdir()
    np.save(corpus / "signals.npy", np.zeros((2, 12, 2500), np.float16))
    (corpus / "preprocess.json").write_text(json.dumps(to_dict(PreprocessConfig())))
    shutil.copytree(tiny_checkpoint, folder / "model", symlinks=True)
    np.save(folder / "model" / "extra.npy", _stack(1)[0])
    assert find_records(folder) == [folder / "00001_lr.hea", folder / "good.npy"]
    assert find_records(str(folder / "**" / "*.npy")) == [folder / "good.npy"]
    assert find_records(folder / "emb.npy") == [folder / "emb.npy"]  # named explicitly: kept


def test_a_lying_npy_beside_a_good_one_fails_alone(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    _lying_npy(folder / "huge.npy", (10**7, 12, 1000))
    np.save(folder / "good.npy", _stack(1)[0])
    items, failures = expand_inputs([str(folder)], 100.0, None)
    assert not failures
    assert [item.source for item in items] == [str(folder / "good.npy"), str(folder / "huge.npy")]
    assert items[0].load().signal.shape == (12, 1000)
    with pytest.raises(ReadError, match="declares shape"):
        items[1].load()
