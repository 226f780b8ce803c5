"""End to end: crema embed / predict / plot / embed-map / export / export-onnx on real files
(PTB-XL, CinC, the same ECG in each clinical format) with one broken file in the batch."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest

import crema
from crema.cli import main
from crema.data import formats
from crema.data.readers import read_record
from crema.paths import data_root

# small models on the shared test machine run much faster on one torch thread
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def classifier_dir(tiny_classifier_checkpoint):
    """The eval area's classifier fine-tuned on ptbxl-superdiagnostic from the tiny pretrain."""
    return tiny_classifier_checkpoint


@pytest.fixture(scope="module")
def ecg_folder(ptbxl_headers, tmp_path_factory):
    """Two PTB-XL records (WFDB), a Georgia record (its header names the .mat), PTB-XL record 3 as
    HL7 aECG, GE MUSE, DICOM and EDF files, and one broken file. PTB-XL is at 500 Hz with the
    shared data; without it the sample's 100 Hz files, and PTB-XL record 6 in the Georgia
    record's place (the shipped sample has no CinC record)."""
    folder = tmp_path_factory.mktemp("ecgs")
    (folder / "wfdb").mkdir()
    for header in ptbxl_headers[:2]:
        for suffix in (".hea", ".dat"):
            shutil.copy(header.with_suffix(suffix), folder / "wfdb")
    (folder / "cinc").mkdir()
    georgia = data_root() / "cinc" / "georgia"
    for path in ([georgia / "E00271.hea", georgia / "E00271.mat"] if georgia.is_dir()
                 else [ptbxl_headers[5], ptbxl_headers[5].with_suffix(".dat")]):
        shutil.copy(path, folder / "cinc")
    rec = read_record(ptbxl_headers[2])
    (folder / "clinical").mkdir()
    formats.write_aecg(rec, folder / "clinical" / "aecg.xml")
    formats.write_muse_xml(rec, folder / "clinical" / "muse.xml")
    formats.write_dicom_ecg(rec, folder / "clinical" / "ecg.dcm")
    formats.write_edf(rec, folder / "clinical" / "ecg.edf")
    (folder / "clinical" / "broken.edf").write_bytes(b"this is not an EDF file" * 20)
    return folder


GOOD_RECORDS = 7  # 2 PTB-XL + 1 Georgia + 4 clinical formats


def _run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_embed_then_resume(tiny_pretrain_checkpoint, ecg_folder, tmp_path, capsys, ptbxl_headers):
    out = tmp_path / "emb"
    code, stdout, err = _run(capsys, "embed", tiny_pretrain_checkpoint, ecg_folder, "--out", out,
                              "--chunk", "3", "--no-progress", "--per-window")  # several flushes
    assert code == 1, err  # broken.edf failed: exit status 1, the seven good records written
    emb = np.load(tmp_path / "emb.npy")
    index = pd.read_csv(tmp_path / "emb.index.csv", dtype={"record_id": str})
    assert emb.shape == (len(index), 32) and index["source"].nunique() == GOOD_RECORDS
    assert len(index) == GOOD_RECORDS  # every record here is 10 s: one window each
    wfdb_ids = {p.stem for p in (ecg_folder / "wfdb").glob("*.hea")}
    other_id = next((ecg_folder / "cinc").glob("*.hea")).stem
    assert set(index["record_id"]) == {*wfdb_ids, other_id, "aecg", "muse", "ecg"}
    errors = pd.read_csv(tmp_path / "emb.errors.csv")
    assert errors["source"].tolist() == [str(ecg_folder / "clinical" / "broken.edf")]
    assert "not a readable EDF" in errors["reason"][0]
    assert "skipped" in err and "broken.edf" in err and "1 failed" in err
    # the four clinical files hold the same ECG: near-identical embeddings (format quantisation only)
    clinical_rows = emb[index["source"].str.contains("/clinical/").to_numpy()]
    assert np.abs(clinical_rows - clinical_rows[0]).max() < 1e-3
    run = json.loads((tmp_path / "emb.run.json").read_text())
    assert run["windows"] == GOOD_RECORDS and run["failed"] == 1
    # the same as the Python API
    first = ptbxl_headers[0]
    api = crema.load(tiny_pretrain_checkpoint).embed(ecg_folder / "wfdb" / first.name)
    assert np.allclose(emb[index["record_id"] == first.stem], api, atol=1e-6)

    # re-run: everything is done already; rows past the index (a flush interrupted between the
    # array and the index) are dropped
    np.save(tmp_path / "emb.npy", np.concatenate([emb, emb[:1]]))
    code, _, err = _run(capsys, "embed", tiny_pretrain_checkpoint, ecg_folder, "--out", out, "--no-progress",
                        "--per-window")
    assert code == 1 and "0 records processed, 7 already done, 1 failed" in err
    assert np.array_equal(np.load(tmp_path / "emb.npy"), emb)
    # a new record: only it is processed, appended after the old rows (CinC PTB S0001, 38.4 s, three
    # windows; without the shared data PTB-XL record 7, one window)
    ptb = data_root() / "cinc" / "ptb"
    new = [ptb / "S0001.hea", ptb / "S0001.mat"] if ptb.is_dir() else [ptbxl_headers[6], ptbxl_headers[6].with_suffix(".dat")]
    starts = [0.0, 10.0, 20.0] if ptb.is_dir() else [0.0]
    for path in new:
        shutil.copy(path, ecg_folder / "cinc")
    try:
        code, _, err = _run(capsys, "embed", tiny_pretrain_checkpoint, ecg_folder, "--out", out, "--no-progress",
                            "--per-window")
    finally:
        for path in new:
            (ecg_folder / "cinc" / path.name).unlink()
    assert code == 1 and "1 records processed, 7 already done, 1 failed" in err
    grown = np.load(tmp_path / "emb.npy")
    assert grown.shape == (GOOD_RECORDS + len(starts), 32) and np.array_equal(grown[:GOOD_RECORDS], emb)
    index = pd.read_csv(tmp_path / "emb.index.csv")
    assert index["start_s"].tolist()[-len(starts):] == starts


def test_embed_refuses_to_mix_checkpoints_and_fails_when_all_fail(
        tiny_pretrain_checkpoint, classifier_dir, ecg_folder, tmp_path, capsys):
    wfdb_record = sorted((ecg_folder / "wfdb").glob("*.hea"))[0]
    assert _run(capsys, "embed", tiny_pretrain_checkpoint, wfdb_record, "--out", tmp_path / "e")[0] == 0
    code, _, err = _run(capsys, "embed", classifier_dir, wfdb_record, "--out", tmp_path / "e")
    assert code == 1 and "another checkpoint" in err
    code, _, err = _run(capsys, "embed", tiny_pretrain_checkpoint, ecg_folder / "clinical" / "broken.edf",
                        "--out", tmp_path / "bad", "--no-progress")
    assert code == 1 and "0 records processed" in err
    code, _, err = _run(capsys, "embed", tiny_pretrain_checkpoint, tmp_path / "nothing-here", "--out", tmp_path / "x")
    assert code == 1 and "no such file or folder" in err


@pytest.mark.parametrize("name", ["emb.npz", "emb.CSV", "emb.h5"])
def test_embed_out_naming_another_format_is_a_usage_error_before_any_work(tiny_pretrain_checkpoint, ecg_folder,
                                                                          tmp_path, capsys, name):
    wfdb_record = sorted((ecg_folder / "wfdb").glob("*.hea"))[0]
    code, _, err = _run(capsys, "embed", tiny_pretrain_checkpoint, wfdb_record, "--out", tmp_path / name)
    assert code == 2 and "writes OUT.npy + OUT.index.csv" in err and list(tmp_path.iterdir()) == []
    assert _run(capsys, "embed", tiny_pretrain_checkpoint, wfdb_record, "--out", tmp_path / "emb.v2")[0] == 0
    assert (tmp_path / "emb.v2.npy").is_file()


def test_predict_one_row_per_record(classifier_dir, ecg_folder, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    code, _, err = _run(capsys, "predict", classifier_dir, ecg_folder, "--out", out, "--no-progress")
    assert code == 1 and "7 records processed, 0 already done, 1 failed" in err  # broken.edf
    table = pd.read_csv(out, dtype={"record_id": str}, keep_default_na=False)
    model = crema.load(classifier_dir)
    assert list(table.columns) == ["record_id", "source", "n_windows", *model.classes, "labels"]
    assert len(table) == GOOD_RECORDS and (table["n_windows"] == 1).all()
    probs = table[model.classes].to_numpy()
    assert ((probs >= 0) & (probs <= 1)).all()
    for _, row in table.iterrows():
        expected = [c for c, t in zip(model.classes, model.thresholds) if row[c] >= t]
        assert row["labels"] == "|".join(expected)
    assert (tmp_path / "pred.errors.csv").exists()
    # the same files named through a relative path and a glob are recognised as done
    relative = os.path.relpath(ecg_folder / "wfdb", os.getcwd())
    code, _, err = _run(capsys, "predict", classifier_dir, f"{relative}/*.hea", "--out", out, "--no-progress")
    assert code == 0 and "0 records processed, 2 already done" in err and len(pd.read_csv(out)) == GOOD_RECORDS
    code, _, err = _run(capsys, "predict", classifier_dir.parent / "absent", ecg_folder, "--out", out)
    assert code == 1


def test_plot_embed_map_export_and_onnx(tiny_pretrain_checkpoint, classifier_dir, ecg_folder, tmp_path, capsys):
    png = tmp_path / "ecg.png"
    code, stdout, err = _run(capsys, "plot", ecg_folder / "clinical" / "muse.xml", "--checkpoint",
                             classifier_dir, "--out", png)
    assert code == 0, err
    assert png.stat().st_size > 50_000
    code, _, err = _run(capsys, "plot", ecg_folder / "clinical" / "broken.edf", "--out", tmp_path / "b.png")
    assert code == 1 and "not a readable EDF" in err and not (tmp_path / "b.png").exists()
    code, _, err = _run(capsys, "plot", ecg_folder, "--out", tmp_path / "c.png")
    assert code == 1 and "draws one record" in err

    assert _run(capsys, "embed", tiny_pretrain_checkpoint, ecg_folder, "--out", tmp_path / "emb",
                "--no-progress")[0] == 1  # broken.edf fails, the rest is written
    assert _run(capsys, "predict", classifier_dir, ecg_folder, "--out", tmp_path / "pred.csv",
                "--no-progress")[0] == 1
    code, _, err = _run(capsys, "embed-map", tmp_path / "emb.npy", "--color-by", "labels",
                        "--join", tmp_path / "pred.csv", "--out", tmp_path / "map.png")
    assert code == 0, err
    assert (tmp_path / "map.png").stat().st_size > 10_000
    code, _, err = _run(capsys, "embed-map", tmp_path / "emb.npy", "--color-by", "nope", "--out", tmp_path / "m.png")
    assert code == 1 and "no column 'nope'" in err

    code, _, err = _run(capsys, "export", classifier_dir, "--out", tmp_path / "exported")
    assert code == 0, err
    record = sorted((ecg_folder / "wfdb").glob("*.hea"))[1]
    assert np.array_equal(crema.load(tmp_path / "exported").embed(record), crema.load(classifier_dir).embed(record))

    code, stdout, err = _run(capsys, "export-onnx", classifier_dir, "--out", tmp_path / "model.onnx")
    assert code == 0, err
    assert "parity with PyTorch" in stdout and (tmp_path / "model.onnx").stat().st_size > 10_000


def test_raw_arrays_need_their_rate(tiny_pretrain_checkpoint, ptbxl_headers, tmp_path, capsys):
    rec = read_record(ptbxl_headers[3])
    fs = str(int(rec.fs))
    np.save(tmp_path / "raw.npy", rec.signal)
    code, _, err = _run(capsys, "embed", tiny_pretrain_checkpoint, tmp_path / "raw.npy", "--out", tmp_path / "a")
    assert code == 1 and "sampling rate unknown" in err
    code, _, err = _run(capsys, "embed", tiny_pretrain_checkpoint, tmp_path / "raw.npy", "--fs", "0.5",
                        "--out", tmp_path / "b")
    assert code == 1 and "not a plausible ECG rate" in err
    code, _, err = _run(capsys, "embed", tiny_pretrain_checkpoint, tmp_path / "raw.npy", "--fs", fs,
                        "--out", tmp_path / "c", "--no-progress")
    assert code == 0, err
    expected = crema.load(tiny_pretrain_checkpoint).embed(rec)
    assert np.array_equal(np.load(tmp_path / "c.npy"), expected)
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        code, _, err = _run(capsys, "embed", tiny_pretrain_checkpoint, tmp_path / "raw.npy", "--fs", fs,
                            "--out", tmp_path / "d.parquet")
        assert code == 1 and "needs pyarrow" in err
