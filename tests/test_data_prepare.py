"""``prepare`` / ``Corpus`` / ``crema prepare|info`` on the shared data."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from crema.cli import main as crema_main
from crema.config import PreprocessConfig
from crema.data import prepare as prepare_module
from crema.data.corpus import INDEX_COLUMNS, Corpus, parse_corpus_spec
from crema.data.prepare import prepare_corpus
from crema.data.preprocess import preprocess_recording
from crema.data.readers import read_record
from crema.data.sources import detect_source
from crema.errors import CremaError
from test_data_readers import make_broken_copies

CORPUS_FILES = {"signals.npy", "lead_mask.npy", "index.csv", "index.npz", "classes.json", "preprocess.json",
                "prepare_report.json"}


def test_tiny_ptbxl_corpus_layout(tiny_ptbxl_corpus, ptbxl_root):
    c = tiny_ptbxl_corpus
    assert {p.name for p in c.path.iterdir()} == CORPUS_FILES
    assert c.signals.shape == (80, 12, 2500) and c.signals.dtype == np.float16
    assert isinstance(c.signals, np.memmap)
    assert c.lead_mask.shape == (80, 12) and c.lead_mask.all()
    assert list(c.index.columns[: len(INDEX_COLUMNS)]) == list(INDEX_COLUMNS)
    assert c.tasks == [f"ptbxl-{t}" for t in
                       ("superdiagnostic", "subdiagnostic", "diagnostic", "form", "rhythm", "all")]
    assert c.index["record_id"].tolist()[:3] == ["00001", "00002", "00003"]
    assert set(c.index["fold"]) == set(range(1, 11))
    assert c.index["original_fs"].eq(100).all() and c.index["start_s"].eq(0).all()
    report = c.report
    assert (report["records_total"], report["records_read"], report["records_skipped"]) == (80, 80, 0)
    assert report["windows"] == 80 and report["skipped"] == []
    assert c.preprocess == PreprocessConfig()
    # stored windows are the preprocessed record (to float16 precision)
    expected = preprocess_recording(read_record(ptbxl_root / "records100/00000/00007_lr.hea"))
    np.testing.assert_allclose(c.signals[6].astype(np.float32), expected.signals[0], atol=4e-3)


def test_corpus_rows_and_labels(tiny_ptbxl_corpus, ptbxl_root):
    c = tiny_ptbxl_corpus
    train, val, test = c.rows("train"), c.rows("val"), c.rows("test")
    assert len(train) + len(val) + len(test) == 80
    assert (len(train), len(val), len(test)) == (51, 19, 10)
    assert np.array_equal(np.sort(np.concatenate([train, val])), c.rows(["train", "val"]))
    assert c.index.loc[val, "fold"].eq(9).all() and c.index.loc[test, "fold"].eq(10).all()
    assert len(c.rows(sources="ptbxl")) == 80 and len(c.rows(exclude_sources=["ptbxl"])) == 0
    y, classes, has = c.labels("ptbxl-superdiagnostic")
    assert classes == ["CD", "HYP", "MI", "NORM", "STTC"] and y.shape == (80, 5)
    assert y.dtype == np.float32 and has.sum() == 75
    assert y[0].tolist() == [0, 0, 0, 1, 0]  # record 1 is NORM
    assert (y.sum(axis=1) > 0).tolist() == has.tolist()
    y_val, _, _ = c.labels("ptbxl-superdiagnostic", val)
    np.testing.assert_array_equal(y_val, y[val])
    with pytest.raises(CremaError, match="no labels for task"):
        c.labels("cinc-scored")
    with pytest.raises(CremaError, match="unknown split"):
        c.rows("training")


def test_parse_corpus_spec(tmp_path):
    assert parse_corpus_spec("runs/c:train,val") == (tmp_path.__class__("runs/c"), ("train", "val"))
    assert parse_corpus_spec("runs/c") == (tmp_path.__class__("runs/c"), None)
    assert parse_corpus_spec("odd:name")[1] is None  # not split names: part of the path


def test_unlabeled_corpus(unlabeled_corpus, unlabeled_stack):
    c = unlabeled_corpus
    assert c.signals.shape == (128, 12, 2500) and c.tasks == []
    ids = (unlabeled_stack.parent / "ecg_ids.csv").read_text().split()[1:4]
    assert c.index["record_id"].tolist()[:3] == ids
    assert c.index["source"].eq("ptbxl-unlabeled").all()
    assert c.index["source_id"].iloc[0] == f"ptbxl:{ids[0]}"
    raw = np.load(unlabeled_stack, mmap_mode="r")[0].astype(np.float32)
    got = c.signals[0].astype(np.float32)
    assert min(np.corrcoef(raw[i], got[i])[0, 1] for i in range(12)) > 0.98


def test_prepare_is_idempotent_and_force_rebuilds(ptbxl_root, tmp_path, capsys):
    out = tmp_path / "c"
    args = dict(workers=1, ptbxl_rate=100, limit=5, progress=False)
    first = prepare_corpus(ptbxl_root, out, **args)
    stamps = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    again = prepare_corpus(ptbxl_root, out, **args)
    assert again["up_to_date"] and again["windows"] == first["windows"] == 5
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()} == stamps
    assert crema_main(["prepare", str(ptbxl_root), "--out", str(out), "--ptbxl-rate", "100",
                       "--limit", "5", "--workers", "1", "--quiet"]) == 0
    assert "up to date" in capsys.readouterr().out
    with pytest.raises(CremaError, match="different settings.*limit"):
        prepare_corpus(ptbxl_root, out, **{**args, "limit": 6})
    rebuilt = prepare_corpus(ptbxl_root, out, **{**args, "limit": 6}, force=True)
    assert rebuilt["windows"] == 6 and len(Corpus(out)) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no temp folders left
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.txt").write_text("keep me")
    with pytest.raises(CremaError, match="not a CREMA corpus"):
        prepare_corpus(ptbxl_root, tmp_path / "user", **args, force=True)
    assert (tmp_path / "user" / "notes.txt").exists()


def test_interrupted_prepare_leaves_no_corpus_and_resumes(ptbxl_root, tmp_path, monkeypatch):
    calls = []
    real = prepare_module.process_chunk

    def crash_on_second_chunk(jobs, cfg, chunk_path):
        calls.append(chunk_path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as from Ctrl-C in the middle of the run
        return real(jobs, cfg, chunk_path)

    monkeypatch.setattr(prepare_module, "process_chunk", crash_on_second_chunk)
    monkeypatch.setattr(prepare_module, "_chunk_size", lambda n_jobs, workers: 2)
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus(ptbxl_root, tmp_path / "c", workers=1, ptbxl_rate=100, limit=6, progress=False)
    assert len(calls) == 2
    assert [p.name for p in tmp_path.iterdir()] == [".c.partial"]  # the progress, for the next run
    monkeypatch.setattr(prepare_module, "process_chunk", real)
    report = prepare_corpus(ptbxl_root, tmp_path / "c", workers=1, ptbxl_rate=100, limit=6, progress=False)
    assert report["records_resumed"] == 2 and report["windows"] == 6
    assert [p.name for p in tmp_path.iterdir()] == ["c"]


def test_stale_partial_folder_of_a_dead_run_is_removed(ptbxl_root, tmp_path):
    stale = tmp_path / ".c.partial-999999999-deadbeef"
    stale.mkdir()
    prepare_corpus(ptbxl_root, tmp_path / "c", workers=1, ptbxl_rate=100, limit=2, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_two_workers_give_the_same_corpus(ptbxl_root, tmp_path):
    args = dict(ptbxl_rate=100, limit=12, progress=False)
    prepare_corpus(ptbxl_root, tmp_path / "one", workers=1, **args)
    prepare_corpus(ptbxl_root, tmp_path / "two", workers=2, **args)
    for name in ("signals.npy", "lead_mask.npy", "index.csv", "classes.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name


def test_folder_with_broken_files_skips_and_reports(ptbxl_root, tmp_path):
    folder = tmp_path / "mixed"
    real = read_record(ptbxl_root / "records100/00000/00002_lr.hea").signal
    expected = make_broken_copies(ptbxl_root, folder, real)
    for name in ("00001_lr.hea", "00001_lr.dat"):
        (folder / name).write_bytes((ptbxl_root / "records100/00000" / name).read_bytes())
    np.save(folder / "good.npy", real)
    assert detect_source(folder) == "files"
    report = prepare_corpus(folder, tmp_path / "c", workers=1, input_fs=100, progress=False)
    assert report["records_total"] == len(expected) + 2
    assert report["records_read"] == 2 and report["windows"] == 2
    skipped = {os.path.basename(s["record"]): s["reason"] for s in report["skipped"]}
    assert set(skipped) == set(expected)
    for name, problem in expected.items():
        assert problem in skipped[name], (name, skipped[name])
    saved = json.loads((tmp_path / "c" / "prepare_report.json").read_text())
    assert saved["skipped"] == report["skipped"]
    assert sorted(Corpus(tmp_path / "c").index["record_id"]) == ["00001_lr", "good"]


def test_cinc_ptbxl_folder(cinc_root, tmp_path):
    """One CinC source folder: labels, source ids that match PTB-XL's, hashed folds."""
    assert detect_source(cinc_root / "ptbxl") == "cinc"
    report = prepare_corpus(cinc_root / "ptbxl", tmp_path / "hr", workers=1, progress=False)
    c = Corpus(tmp_path / "hr")
    assert report["records_read"] == 39 and report["records_skipped"] == 0
    assert c.tasks == ["cinc-scored"] and len(c.classes["cinc-scored"]) == 26
    first = c.index.iloc[0]
    assert (first["record_id"], first["source"], first["source_id"]) == ("HR00001", "ptbxl", "ptbxl:1")
    assert first["sex"] in ("M", "F") and first["original_fs"] == 500
    assert c.index["fold"].between(1, 10).all()


def test_prepare_errors(tmp_path, unlabeled_stack):
    with pytest.raises(CremaError, match="--input-fs"):
        prepare_corpus(unlabeled_stack, tmp_path / "x", limit=2, progress=False)
    with pytest.raises(CremaError, match="no such file"):
        prepare_corpus(tmp_path / "missing", tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_info_command(tiny_ptbxl_corpus, capsys):
    assert crema_main(["info", str(tiny_ptbxl_corpus.path)]) == 0
    out = capsys.readouterr().out
    assert "windows     80 x 12 leads x 2500 samples" in out
    assert "splits      train: 51, val: 19, test: 10" in out
    assert "ptbxl-superdiagnostic: 5 classes, 75 labelled windows" in out
    assert "CD 8, HYP 2, MI 5, NORM 58, STTC 6" in out
    assert crema_main(["info", str(tiny_ptbxl_corpus.path.parent / "nope")]) == 1
