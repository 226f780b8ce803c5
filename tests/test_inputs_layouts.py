"""crema embed / predict on the layouts users hold: .npy/.npz stacks (N, C, T) and (N, T, C), a
CODE-15%-style HDF5 file and a prepared corpus, each made from real records and checked against
the embeddings of the same records given as WFDB files; per-record rows, Parquet output, flat
memory on a large stack, and one clear error per bad file."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import crema
from crema.cli import main
from crema.data.readers import read_record
from fixtures_data import ptbxl_record_500hz

h5py = pytest.importorskip("h5py")

# small models on the shared test machine run much faster on one torch thread
pytestmark = pytest.mark.usefixtures("one_torch_thread")

PTBXL_STEMS = ("00001_hr", "00002_hr", "00003_hr", "00004_hr", "00005_hr")
CODE15_FS, CODE15_LENGTH = 400, 4096     # CODE-15%: 10 s at 400 Hz, zero-padded to 4096 samples


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def model(tiny_pretrain_checkpoint):
    return crema.load(tiny_pretrain_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def ptbxl_records(ptbxl_root, tmp_path_factory):
    """Five real PTB-XL records at 500 Hz (10 s, 12 leads): their .hea paths and signals (5, 12, 5000).
    Without the shared 500 Hz files, the sample's 100 Hz records resampled to 500 Hz and written
    as WFDB files, the signals read back from those files (so both hold the same 16-bit values)."""
    import wfdb

    folder = ptbxl_root / "records500" / "00000"
    if not folder.is_dir():
        folder = tmp_path_factory.mktemp("ptbxl500")
        for i, stem in enumerate(PTBXL_STEMS, start=1):
            rec = ptbxl_record_500hz(ptbxl_root, i)
            wfdb.wrsamp(stem, fs=500, units=["mV"] * 12, sig_name=list(rec.leads),
                        p_signal=rec.signal.T.astype(np.float64), fmt=["16"] * 12, write_dir=str(folder))
    paths = [folder / f"{stem}.hea" for stem in PTBXL_STEMS]
    return paths, np.stack([read_record(p).signal for p in paths])


@pytest.fixture(scope="module")
def code15_like(ptbxl_records, tmp_path_factory):
    """The PTB-XL records as CODE-15% holds them: resampled to 400 Hz, zero-padded to 4096 samples,
    written as WFDB files and, read back from those files, as an HDF5 ``tracings`` (N, 4096, 12)
    with ``exam_id`` and the all-zero last row (exam_id 0) that pads every CODE-15% file."""
    import wfdb
    from scipy.signal import resample_poly

    folder = tmp_path_factory.mktemp("code15")
    _, signals = ptbxl_records
    exam_ids = np.array([1041, 2207, 3119, 4450, 5078], dtype=np.int64)
    pad = (CODE15_LENGTH - 4000) // 2
    tracings = []
    for exam_id, signal in zip(exam_ids, signals):
        at_400 = resample_poly(signal, 4, 5, axis=-1)
        padded = np.pad(at_400, ((0, 0), (pad, CODE15_LENGTH - 4000 - pad)))
        wfdb.wrsamp(f"exam{exam_id}", fs=CODE15_FS, units=["mV"] * 12, sig_name=list(crema.config.STANDARD_LEADS),
                    p_signal=padded.T.astype(np.float64), fmt=["16"] * 12, write_dir=str(folder))
        # the HDF5 holds what the WFDB file holds (after its 16-bit quantisation), leads last
        tracings.append(read_record(folder / f"exam{exam_id}.hea").signal.T)
    tracings.append(np.zeros((CODE15_LENGTH, 12), dtype=np.float32))
    with h5py.File(folder / "exams_part0.hdf5", "w") as f:
        f.create_dataset("tracings", data=np.stack(tracings).astype(np.float32), chunks=(2, CODE15_LENGTH, 12))
        f.create_dataset("exam_id", data=np.r_[exam_ids, 0])
    return folder, exam_ids


def test_npy_and_npz_stacks_embed_like_wfdb_files(model, ptbxl_records, tmp_path, capsys):
    paths, signals = ptbxl_records
    expected = model.embed(paths)                          # (5, D): one 10 s window per record
    assert expected.shape == (5, model.dim)

    np.save(tmp_path / "nct.npy", signals)                 # (N, C, T)
    np.save(tmp_path / "ntc.npy", signals.transpose(0, 2, 1).copy())  # (N, T, C)
    np.savez(tmp_path / "meta.npz", signals=signals, fs=500, leads=np.array(crema.config.STANDARD_LEADS),
             record_id=np.array(PTBXL_STEMS))
    np.savez_compressed(tmp_path / "packed.npz", x=signals.transpose(0, 2, 1))
    (tmp_path / "ids.txt").write_text("\n".join(f"ecg-{i}" for i in range(5)) + "\n")

    for name in ("nct.npy", "ntc.npy"):
        assert np.array_equal(model.embed(tmp_path / name, fs=500), expected), name
    result = model.embed_records(tmp_path / "meta.npz")    # rate, leads and ids from the archive
    assert np.array_equal(result.embeddings, expected)
    assert result.index["record_id"].tolist() == list(PTBXL_STEMS)
    assert result.index["source"].tolist() == [f"{tmp_path / 'meta.npz'}[{i}]" for i in range(5)]
    # in memory, leads last, as a scikit-learn user would pass it
    assert np.array_equal(model.embed(signals.transpose(0, 2, 1), fs=500), expected)

    # the CLI: compressed .npz, ids from a text file, one row per record by default
    code, _, err = _run(capsys, "embed", model.source, tmp_path / "packed.npz", "--fs", "500",
                        "--ids", tmp_path / "ids.txt", "--out", tmp_path / "emb", "--no-progress")
    assert code == 0, err
    index = pd.read_csv(tmp_path / "emb.index.csv", dtype={"record_id": str})
    assert list(index.columns) == ["record_id", "source", "n_windows", "leads_present"]
    assert index["record_id"].tolist() == [f"ecg-{i}" for i in range(5)]
    assert (index["n_windows"] == 1).all() and (index["leads_present"] == 12).all()
    assert np.array_equal(np.load(tmp_path / "emb.npy"), expected)


def test_code15_hdf5_embeds_and_predicts_like_wfdb_files(model, tiny_classifier_checkpoint, code15_like,
                                                         tmp_path, capsys):
    folder, exam_ids = code15_like
    wfdb_files = [folder / f"exam{i}.hea" for i in exam_ids]
    # CODE-15% names by default: dataset tracings, ids exam_id, 400 Hz (stored nowhere in the file)
    code, _, err = _run(capsys, "embed", model.source, folder / "exams_part0.hdf5", "--out", tmp_path / "emb",
                        "--no-progress")
    assert code == 1, err  # the padding row failed (exit 1); the five exams are written
    assert "assuming 400 Hz" in err
    assert "every lead is flat" in err and "1 failed" in err        # the padding row, listed
    errors = pd.read_csv(tmp_path / "emb.errors.csv", dtype={"record_id": str})
    assert errors["record_id"].tolist() == ["0"] and errors["source"][0].endswith("exams_part0.hdf5[5]")
    index = pd.read_csv(tmp_path / "emb.index.csv", dtype={"record_id": str})
    assert index["record_id"].tolist() == [str(i) for i in exam_ids]
    assert np.array_equal(np.load(tmp_path / "emb.npy"), model.embed(wfdb_files))

    # predict: the same probabilities as from the WFDB files, per record and per window
    classifier = crema.load(tiny_classifier_checkpoint, device="cpu")
    expected = classifier.predict(wfdb_files)
    code, _, err = _run(capsys, "predict", tiny_classifier_checkpoint, folder / "exams_part0.hdf5",
                        "--fs", "400", "--out", tmp_path / "pred.csv", "--no-progress")
    assert code == 1, err  # the padding row again
    table = pd.read_csv(tmp_path / "pred.csv", dtype={"record_id": str}, keep_default_na=False)
    assert np.allclose(table[classifier.classes].to_numpy(), expected.to_numpy(), atol=1e-6)
    code, _, err = _run(capsys, "predict", tiny_classifier_checkpoint, folder / "exams_part0.hdf5",
                        "--fs", "400", "--per-window", "--out", tmp_path / "win.csv", "--no-progress")
    assert code == 1, err
    windows = pd.read_csv(tmp_path / "win.csv", keep_default_na=False)
    assert list(windows.columns[:5]) == ["record_id", "source", "window", "start_s", "leads_present"]
    assert list(windows.columns[5:]) == [*classifier.classes, "labels"] and len(windows) == 5


def test_long_records_one_row_each_or_one_per_window(model, data_root, tmp_path, capsys):
    """Two 115.2 s PTB records at 1000 Hz (11 windows each), as a stack and as their CinC WFDB
    files: a record's row is the mean of its windows' embeddings."""
    paths = [data_root / "cinc" / "ptb" / f"{name}.hea" for name in ("S0002", "S0003")]
    np.save(tmp_path / "long.npy", np.stack([read_record(p).signal for p in paths]))
    expected = model.embed_records(paths)
    assert len(expected.embeddings) == 22
    per_record = expected.by_record()
    assert per_record.index["n_windows"].tolist() == [11, 11]
    assert np.allclose(per_record.embeddings[1], expected.embeddings[11:].mean(axis=0), atol=1e-6)

    code, _, err = _run(capsys, "embed", model.source, tmp_path / "long.npy", "--fs", "1000",
                        "--out", tmp_path / "rec", "--no-progress")
    assert code == 0, err
    assert np.array_equal(np.load(tmp_path / "rec.npy"), per_record.embeddings)
    code, _, err = _run(capsys, "embed", model.source, tmp_path / "long.npy", "--fs", "1000", "--per-window",
                        "--out", tmp_path / "win", "--no-progress")
    assert code == 0, err
    assert np.array_equal(np.load(tmp_path / "win.npy"), expected.embeddings)
    assert pd.read_csv(tmp_path / "win.index.csv")["start_s"].tolist()[:3] == [0.0, 10.0, 20.0]


def test_corpus_by_split_embeds_like_its_wfdb_files(model, tiny_ptbxl_corpus, ptbxl_root, tmp_path, capsys):
    corpus = tiny_ptbxl_corpus
    test_ids = corpus.index.loc[corpus.index["split"] == "test", "record_id"].drop_duplicates().tolist()
    assert 0 < len(test_ids) < len(corpus.index["record_id"].unique())
    code, _, err = _run(capsys, "embed", model.source, f"{corpus.path}:test", "--out", tmp_path / "emb",
                        "--no-progress")
    assert code == 0, err
    index = pd.read_csv(tmp_path / "emb.index.csv", dtype={"record_id": str})
    assert index["record_id"].tolist() == test_ids                  # ids from the corpus index
    # the corpus was prepared from the 100 Hz files with the model's preprocessing; its windows are
    # stored as float16, so the embeddings agree to that precision, not bit for bit
    files = [ptbxl_root / "records100" / "00000" / f"{int(i):05d}_lr.hea" for i in test_ids]
    expected = model.embed(files)
    got = np.load(tmp_path / "emb.npy")
    assert not np.array_equal(got, expected)                        # float16 storage does show ...
    assert np.abs(got - expected).max() < 1e-3                      # ... but only just (8e-6 measured)


def test_corpus_with_other_preprocessing_is_refused_once(model, tiny_ptbxl_corpus, tmp_path, capsys):
    import json
    import shutil

    other = tmp_path / "other"
    shutil.copytree(tiny_ptbxl_corpus.path, other)
    config = json.loads((other / "preprocess.json").read_text())
    config["band"] = [0.5, 100.0]
    (other / "preprocess.json").write_text(json.dumps(config))
    code, _, err = _run(capsys, "embed", model.source, other, "--out", tmp_path / "emb", "--no-progress")
    assert code == 1 and "Traceback" not in err
    assert err.count("another preprocessing") == 1 and "band [0.5, 100.0] (model: [0.67, 40.0])" in err


def test_parquet_output(model, ptbxl_records, tmp_path, capsys):
    pyarrow = pytest.importorskip("pyarrow.parquet")
    _, signals = ptbxl_records
    np.save(tmp_path / "stack.npy", signals)
    code, _, err = _run(capsys, "embed", model.source, tmp_path / "stack.npy", "--fs", "500",
                        "--out", tmp_path / "emb.parquet", "--no-progress")
    assert code == 0, err
    table = pyarrow.read_table(tmp_path / "emb.parquet").to_pandas()
    assert list(table.columns[:4]) == ["record_id", "source", "n_windows", "leads_present"]
    assert list(table.columns[4:]) == [f"e{i}" for i in range(model.dim)]
    assert table["record_id"].tolist() == [f"{i:06d}" for i in range(5)]
    assert np.array_equal(table[[f"e{i}" for i in range(model.dim)]].to_numpy(np.float32),
                          model.embed(tmp_path / "stack.npy", fs=500))


def test_bad_stack_files_get_one_clear_error(model, ptbxl_records, tmp_path, capsys):
    _, signals = ptbxl_records
    checkpoint = model.source
    cases = {}
    np.save(tmp_path / "eight.npy", signals[:, :8])
    cases["eight.npy"] = ("stack shape (5, 8, 5000) is neither (N, 12, T) nor (N, T, 12)", ["--fs", "500"])
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f.create_dataset("ecg/signals", data=signals.transpose(0, 2, 1))
    cases["other.h5"] = ("no dataset 'tracings' (datasets: ecg/signals (5, 5000, 12))", [])
    (tmp_path / "broken.hdf5").write_bytes(b"not an HDF5 file" * 100)
    cases["broken.hdf5"] = ("not a readable HDF5 file", [])
    np.savez(tmp_path / "rate.npz", signal=signals, fs=500)
    cases["rate.npz"] = ("the file stores fs=500 Hz but fs=250 Hz was given", ["--fs", "250"])
    np.save(tmp_path / "ids.npy", signals)
    (tmp_path / "three.csv").write_text("record_id\na\nb\nc\n")
    cases["ids.npy"] = ("three.csv: 3 ids for 5 rows of ids.npy", ["--fs", "500", "--ids", tmp_path / "three.csv"])
    for name, (message, options) in cases.items():
        out = tmp_path / f"o_{name.replace('.', '_')}"  # (an --out ending .h5 would be a usage error)
        code, _, err = _run(capsys, "embed", checkpoint, tmp_path / name, *options, "--out", out, "--no-progress")
        assert code == 1 and "Traceback" not in err, (name, err)
        assert f"{tmp_path / name}" in err or name == "ids.npy", (name, err)
        assert message in err, (name, err)
    # a stack with one bad row: that row is skipped and named, the others embedded
    bad = signals.copy()
    bad[2, 3, 100] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    code, _, err = _run(capsys, "embed", checkpoint, tmp_path / "nan.npy", "--fs", "500", "--out", tmp_path / "n",
                        "--no-progress")
    assert code == 1 and f"skipped {tmp_path / 'nan.npy'}[2]" in err and "NaN" in err
    assert len(np.load(tmp_path / "n.npy")) == 4


def test_memory_stays_flat_on_a_large_stack(tmp_path):
    """Reading every record of a 440 MB stack, in order, through the items the CLI uses, holds a
    block of rows at a time: resident memory grows by far less than the file (through a memmap it
    grows by about the whole file, ~410 MB, as measured when this test was written)."""
    if not Path("/proc/self/status").is_file():
        pytest.skip("needs Linux /proc to read resident memory")
    rows, length = 800, 12_000                       # 800 records x 12 leads x 12000 samples, float32
    stack = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32,
                                      shape=(rows, 12, length))
    stack[:, :, ::50] = 1.0                          # touch every page so that the file is not sparse
    stack.flush()
    del stack
    size_mb = (tmp_path / "big.npy").stat().st_size / 2**20
    script = textwrap.dedent(f"""
        from crema.use.inputs import collect_inputs

        def rss_mb():
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024

        before = peak = rss_mb()
        items = collect_inputs({str(tmp_path / "big.npy")!r}, fs=1000)
        total = 0.0
        for item in items:
            total += float(item.load().signal[0, 0])
            peak = max(peak, rss_mb())
        print(len(items), total, peak - before)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    n, total, grown_mb = out.split()
    assert int(n) == rows and float(total) == rows
    assert size_mb > 400 and float(grown_mb) < 150, f"memory grew {grown_mb} MB reading {size_mb:.0f} MB"


def test_prepare_reads_the_same_stacks(code15_like, tmp_path):
    """crema prepare reads stacks through the same reader: a CODE-15%-style file becomes a corpus
    with the exam ids, the padding row skipped with its reason."""
    from crema.data.corpus import Corpus
    from crema.data.prepare import prepare_corpus
    from crema.data.stacks import AssumedRateWarning

    folder, exam_ids = code15_like
    with pytest.warns(AssumedRateWarning):
        report = prepare_corpus(folder / "exams_part0.hdf5", tmp_path / "corpus", workers=1, progress=False)
    corpus = Corpus(tmp_path / "corpus")
    assert corpus.index["record_id"].tolist() == [str(i) for i in exam_ids]
    assert report["records_skipped"] == 1 and "every lead is flat" in str(report)
