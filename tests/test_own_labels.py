"""A user's own labels at prepare time (crema.data.labels_csv, crema prepare --labels, crema label),
on real records: 60 PTB-XL WFDB records in a plain folder (labels CSVs built from
ptbxl_database.csv) and Challenge 2011 text records (quality lists)."""
from __future__ import annotations

import ast
import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crema.cli import main
from crema.data.corpus import LABEL_NONE, Corpus
from crema.data.labels_csv import add_labels
from crema.data.prepare import prepare_corpus
from crema.data.readers import find_records, read_record
from crema.errors import CremaError

N_RECORDS = 60
CLASSES = ["NORM", "AFLT", "ABQRS"]       # 41, 5 and 4 of the first 60 records; 11 have none
RHYTHMS = ("SR", "AFLT", "SARRH", "SBRAD", "AFIB", "STACH")


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def ptbxl_db(ptbxl_root) -> pd.DataFrame:
    db = pd.read_csv(ptbxl_root / "ptbxl_database.csv", index_col="ecg_id").head(N_RECORDS)
    db["codes"] = [set(ast.literal_eval(s)) for s in db["scp_codes"]]
    db["stem"] = [Path(f).name for f in db["filename_lr"]]
    return db


@pytest.fixture(scope="module")
def ptbxl_folder(ptbxl_root, ptbxl_db, tmp_path_factory) -> Path:
    """The 60 records' WFDB files (100 Hz) copied into a plain folder: a `files` source, whose split
    prepare would make from a hash, so that the labels decide it."""
    folder = tmp_path_factory.mktemp("own") / "ecgs"
    folder.mkdir()
    for name in ptbxl_db["filename_lr"]:
        for suffix in (".hea", ".dat"):
            shutil.copy(ptbxl_root / (name + suffix), folder)  # copies: signal files behind links are refused
    return folder


@pytest.fixture(scope="module")
def base_corpus(ptbxl_folder, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("own") / "corpus"
    prepare_corpus(ptbxl_folder, out, workers=1, progress=False)
    return out


@pytest.fixture
def corpus_copy(base_corpus, tmp_path) -> Path:
    out = tmp_path / "corpus"
    shutil.copytree(base_corpus, out)
    return out


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as fh:
        csv.writer(fh).writerows([header, *rows])
    return path


def multilabel_csv(path: Path, db: pd.DataFrame, key: str = "record_id") -> Path:
    rows = [[stem, pid, *[int(c in codes) for c in CLASSES]]
            for stem, pid, codes in zip(db["stem"], db["patient_id"], db["codes"])]
    return write_csv(path, [key, "patient_id", *CLASSES], rows)


def record_splits(corpus: Corpus) -> pd.DataFrame:
    return corpus.index.drop_duplicates(["source", "record_id"]).set_index("record_id")


# ----------------------------------------------------------------------------- tasks and splits

def test_multilabel_columns_patient_grouped_stratified_split(ptbxl_folder, ptbxl_db, tmp_path):
    labels = multilabel_csv(tmp_path / "diag.csv", ptbxl_db)
    report = prepare_corpus(ptbxl_folder, tmp_path / "c", labels=[labels], workers=1, progress=False)
    summary = report["labels_added"]["diag"]
    assert summary["matched_records"] == N_RECORDS and summary["records_without_row"] == 0
    assert summary["rows_without_record"] == [] and summary["key"] == "record_id"

    c = Corpus(tmp_path / "c")
    assert c.classes["diag"] == CLASSES and c.task_type("diag") == "multilabel"
    assert c.task_info["diag"] == {"type": "multilabel", "labels_file": "diag.csv", "key": "record_id",
                                   "columns": CLASSES, "split": "seeded stratified patient-grouped 80/10/10, seed 0"}
    assert c.split_method == "seeded stratified patient-grouped 80/10/10, seed 0"
    y, classes, has = c.labels("diag")
    records = record_splits(c)
    expected = np.array([[int(k in codes) for k in CLASSES] for codes in ptbxl_db["codes"]])
    order = [records.index.get_loc(stem) for stem in ptbxl_db["stem"]]
    assert (y[order] == expected).all()
    # a record labelled 0 in every column is labelled (a negative), not left out
    none = (expected.sum(axis=1) == 0)
    assert none.any() and has.all() and (c.index["labels:diag"].to_numpy()[order][none] == LABEL_NONE).all()

    # grouped by patient: no patient in two splits; the file's patient ids are in the index
    assert (records.groupby("patient_id")["split"].nunique() == 1).all()
    assert records.loc[ptbxl_db["stem"], "patient_id"].tolist() == [str(p) for p in ptbxl_db["patient_id"]]
    # stratified: about 80/10/10 of the patients, and every class (AFLT: 5 records) in train
    counts = records["split"].value_counts()
    assert 40 <= counts["train"] <= 54 and counts["val"] >= 3 and counts["test"] >= 3
    train = records["split"].to_numpy()[order] == "train"
    assert (expected[train].sum(axis=0) > 0).all()
    assert set(records["fold"]) <= set(range(1, 11))


def test_text_classes_and_regression(corpus_copy, ptbxl_db, tmp_path):
    rhythm = ["|".join(r for r in RHYTHMS if r in codes) for codes in ptbxl_db["codes"]]
    text = write_csv(tmp_path / "rhythm.csv", ["file", "rhythm"],
                     [[stem + ".hea", r] for stem, r in zip(ptbxl_db["stem"], rhythm)])
    ages = write_csv(tmp_path / "ages.csv", ["record", "patient_id", "age"],
                     list(map(list, zip(ptbxl_db["stem"], ptbxl_db["patient_id"], ptbxl_db["age"]))))
    summaries = add_labels(corpus_copy, [text, ages])
    assert summaries["rhythm"]["type"] == "multiclass" and summaries["rhythm"]["key"] == "file"
    assert summaries["ages"]["type"] == "regression"

    c = Corpus(corpus_copy)
    present = sorted({r for cell in rhythm for r in cell.split("|") if r})
    assert c.classes["rhythm"] == present and c.task_type("rhythm") == "multiclass"
    assert c.classes["ages"] == ["age"] and c.task_type("ages") == "regression"
    assert json.loads((corpus_copy / "classes.json").read_text())["ages"] == ["age"]
    records = record_splits(c)
    order = [records.index.get_loc(stem) for stem in ptbxl_db["stem"]]
    y, names, has = c.labels("ages", np.asarray(order))
    assert y.shape == (N_RECORDS, 1) and y.dtype == np.float32 and names == ["age"] and has.all()
    assert np.allclose(y[:, 0], ptbxl_db["age"].to_numpy())
    y_r, _, has_r = c.labels("rhythm", np.asarray(order))
    assert (has_r == np.array([bool(r) for r in rhythm])).all()
    # the first file fixed the split; the second kept it
    assert c.task_info["ages"]["split"] == c.task_info["rhythm"]["split"] == c.split_method
    assert "regression of age" in c.summary() and f"rhythm: {len(present)} classes" in c.summary()


def test_split_and_fold_columns_are_used_as_given(corpus_copy, ptbxl_db, tmp_path):
    stems = ptbxl_db["stem"].tolist()
    split = ["test" if i % 5 == 0 else ("val" if i % 5 == 1 else "train") for i in range(N_RECORDS)]
    rows = [[s, int("NORM" in codes), sp] for s, codes, sp in zip(stems, ptbxl_db["codes"], split)]
    add_labels(corpus_copy, [write_csv(tmp_path / "norm.csv", ["record_id", "NORM", "split"], rows)])
    c = Corpus(corpus_copy)
    assert record_splits(c).loc[stems, "split"].tolist() == split
    assert c.split_method == "from the labels file's split column (norm.csv)"

    # folds 0-4: highest (4) test, next (3) val; folds kept as given
    other = corpus_copy.parent / "other"
    shutil.copytree(corpus_copy, other)
    (other / "tasks.json").unlink()  # start from prepare's own split again
    report = json.loads((other / "prepare_report.json").read_text())
    report.update(split_method="hash of record id", split_owner=None)
    (other / "prepare_report.json").write_text(json.dumps(report))
    folds = [i % 5 for i in range(N_RECORDS)]
    rows = [[s, int("SR" in codes), f] for s, codes, f in zip(stems, ptbxl_db["codes"], folds)]
    add_labels(other, [write_csv(tmp_path / "sr.csv", ["record_id", "SR", "fold"], rows)])
    records = record_splits(Corpus(other)).loc[stems]
    assert records["fold"].tolist() == folds
    assert records["split"].tolist() == [{4: "test", 3: "val"}.get(f, "train") for f in folds]


def test_adding_a_task_reads_no_signal(base_corpus, corpus_copy, ptbxl_folder, ptbxl_db, tmp_path, monkeypatch):
    import crema.data.prepare as prepare_module
    import crema.data.sources as sources

    def no_reading(*args, **kwargs):
        raise AssertionError("a signal was read")

    monkeypatch.setattr(sources, "load_job", no_reading)
    monkeypatch.setattr(prepare_module, "process_chunk", no_reading)
    before = (corpus_copy / "signals.npy").stat()
    labels = multilabel_csv(tmp_path / "diag.csv", ptbxl_db)
    report = prepare_corpus(ptbxl_folder, corpus_copy, labels=[labels], workers=1, progress=False)
    assert report["up_to_date"] and report["labels_added"]["diag"]["matched_records"] == N_RECORDS
    after = (corpus_copy / "signals.npy").stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    assert Corpus(corpus_copy).task_type("diag") == "multilabel"
    # the same command again gives the same corpus (the seeded split is reproducible)
    index = (corpus_copy / "index.csv").read_text()
    prepare_corpus(ptbxl_folder, corpus_copy, labels=[labels], workers=1, progress=False)
    assert (corpus_copy / "index.csv").read_text() == index


def test_key_forms_and_reported_rows(corpus_copy, ptbxl_db, tmp_path):
    """Keys by id, relative path with and without extension, leading zeros; rows naming nothing and
    records without a row are reported, not dropped."""
    stems = ptbxl_db["stem"].tolist()
    keys = [s if i % 3 == 0 else (s + ".hea" if i % 3 == 1 else "./" + s) for i, s in enumerate(stems[:50])]
    rows = [[k, int("NORM" in codes)] for k, codes in zip(keys, ptbxl_db["codes"])] + [["99999_lr", 1]]
    s = add_labels(corpus_copy, [write_csv(tmp_path / "norm.csv", ["path", "NORM"], rows)])["norm"]
    assert s["matched_records"] == 50 and s["rows_without_record"] == ["99999_lr"]
    assert s["records_without_row"] == 10 and s["records_without_row_examples"] == stems[50:55]
    report = json.loads((corpus_copy / "prepare_report.json").read_text())
    assert report["labels"]["norm"]["rows_without_record"] == ["99999_lr"]
    _, _, has = Corpus(corpus_copy).labels("norm")
    assert has.sum() == 50


@pytest.mark.parametrize("case", ["unknown key column", "duplicate keys", "no matching records",
                                  "no positive in train", "conflicting split"])
def test_bad_labels_files_give_one_clear_message(case, corpus_copy, ptbxl_db, tmp_path):
    stems = ptbxl_db["stem"].tolist()
    norm = [int("NORM" in codes) for codes in ptbxl_db["codes"]]
    path = tmp_path / "bad.csv"
    if case == "unknown key column":
        write_csv(path, ["ecg", "NORM"], list(zip(stems, norm)))
        expected = "no key column; name the column of record ids one of record_id, record, file, path, ecg_id, exam_id"
    elif case == "duplicate keys":
        write_csv(path, ["record", "NORM"], [*zip(stems, norm), (stems[3], 1)])
        expected = f"duplicate keys: 1 values of 'record' appear on more than one row ('{stems[3]}' on lines 5, 62)"
    elif case == "no matching records":
        write_csv(path, ["record", "NORM"], [(f"x{i}", n) for i, n in enumerate(norm)])
        expected = "no row matches a record of the corpus"
    elif case == "no positive in train":
        split = ["train"] * N_RECORDS
        split[0], split[1] = "val", "test"
        rare = [1 if i == 1 else 0 for i in range(N_RECORDS)]
        write_csv(path, ["record", "RARE", "NORM", "split"], list(zip(stems, rare, norm, split)))
        expected = "class 'RARE' of task 'bad' has no positive example in the train split (1 in all"
    else:
        add_labels(corpus_copy, [write_csv(tmp_path / "first.csv", ["record", "NORM"], list(zip(stems, norm)))])
        split = record_splits(Corpus(corpus_copy)).loc[stems, "split"].tolist()
        split[7] = "test" if split[7] != "test" else "train"
        write_csv(path, ["record", "SR", "split"],
                  [(s, int("SR" in c), sp) for s, c, sp in zip(stems, ptbxl_db["codes"], split)])
        expected = "conflicting split: 1 of 60 records are in another split than the corpus's"
    index_before = (corpus_copy / "index.csv").read_text()
    with pytest.raises(CremaError) as info:
        add_labels(corpus_copy, [path])
    message = str(info.value)
    assert message.startswith(str(path)) and expected in message and "\n" not in message
    assert (corpus_copy / "index.csv").read_text() == index_before  # nothing written


def test_unlabelled_stack_is_grouped_by_patient(unlabeled_stack, tmp_path):
    """A stack whose ecg_ids.csv names patients: one patient's records share a split (30 records,
    3 per patient), and crema info says how the split was made."""
    rows = np.load(unlabeled_stack, mmap_mode="r")[:30]
    np.save(tmp_path / "signals.npy", np.asarray(rows))
    write_csv(tmp_path / "ecg_ids.csv", ["record_id", "patient_id"], [[f"r{i}", f"p{i // 3}"] for i in range(30)])
    prepare_corpus(tmp_path / "signals.npy", tmp_path / "c", input_fs=250, workers=1, progress=False)
    c = Corpus(tmp_path / "c")
    assert (c.index.groupby("patient_id")["split"].nunique() == 1).all()
    assert c.index["patient_id"].nunique() == 10
    assert c.split_method == "hash of patient id (records of one patient share a split)"


# ----------------------------------------------------------------------------- the command line

def test_cli_prepare_with_labels_and_info(ptbxl_folder, ptbxl_db, tmp_path, capsys):
    labels = multilabel_csv(tmp_path / "diag.csv", ptbxl_db)
    code = main(["prepare", str(ptbxl_folder), "--labels", str(labels), "--out", str(tmp_path / "c"),
                 "--workers", "1", "--quiet", "--split-seed", "3"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"labels diag.csv: key column 'record_id', {N_RECORDS} rows, {N_RECORDS} records matched" in out
    assert "task diag: multilabel: 3 0/1 columns, one class each" in out
    assert "split: seeded stratified patient-grouped 80/10/10, seed 3" in out
    assert main(["info", str(tmp_path / "c")]) == 0
    info = capsys.readouterr().out
    assert "(seeded stratified patient-grouped 80/10/10, seed 3)" in info
    assert f"task        diag: 3 classes, {N_RECORDS} labelled windows (multilabel)" in info
    assert "from diag.csv (key column record_id)" in info
    # a bad file through the CLI: one line on stderr, exit status 2 or 1, no traceback
    write_csv(tmp_path / "bad.csv", ["ecg", "NORM"], [["00001_lr", 1]])
    code = main(["label", str(tmp_path / "c"), "--labels", str(tmp_path / "bad.csv")])
    err = capsys.readouterr().err
    assert code != 0 and "no key column" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- Challenge 2011

@pytest.fixture(scope="module")
def challenge2011(data_root) -> Path:
    root = data_root / "challenge2011"
    if not (root / "set-a").is_dir():
        pytest.skip("challenge2011 not in the shared data")
    return root


def test_challenge2011_text_records_read_in_millivolts(challenge2011):
    path = challenge2011 / "set-a" / "1005639.txt"
    raw = np.loadtxt(path, delimiter=",")
    rec = read_record(path, fs=500, units="uV")
    assert rec.signal.shape == (12, 5000) and rec.fs == 500.0  # the sample counter is dropped
    assert np.allclose(rec.signal, raw[:, 1:].T / 1000.0)
    assert np.allclose(read_record(path, fs=500).signal, raw[:, 1:].T)  # mV by default
    # the quality lists beside the records are not records; the records are
    listed = find_records(challenge2011)
    assert not any(p.name.startswith("RECORDS") for p in listed)
    assert sum(p.parent.name == "set-a" for p in listed) == 1000


def test_challenge2011_prepare_with_quality_labels(challenge2011, tmp_path):
    records = sorted((challenge2011 / "set-a").glob("*.txt"))[:20]
    folder = tmp_path / "set-a"
    folder.mkdir()
    for p in records:
        shutil.copy(p, folder)
    # the docs' snippet: the two lists (names with spaces, one without a final newline) -> a CSV
    good = (challenge2011 / "RECORDS-Group I.txt").read_text().split()
    bad = (challenge2011 / "RECORDS-Group II.txt").read_text().split()
    write_csv(tmp_path / "quality.csv", ["record", "quality"], [[r, 1] for r in good] + [[r, 0] for r in bad])

    code = main(["prepare", str(folder), "--input-fs", "500", "--units", "uV", "--labels",
                 str(tmp_path / "quality.csv"), "--out", str(tmp_path / "c"), "--workers", "1", "--quiet"])
    c = Corpus(tmp_path / "c")
    report = c.report
    read = {str(r) for r in c.index["record_id"]}
    assert code == (1 if report["records_skipped"] else 0)
    assert report["records_read"] + report["records_skipped"] == 20
    summary = report["labels"]["quality"]
    labelled = read & (set(good) | set(bad))
    assert summary["matched_records"] == len(labelled) and summary["key"] == "record"
    unmatched = len(summary["rows_without_record"]) + len(summary["rows_of_skipped_records"])
    assert unmatched == len(good) + len(bad) - len(labelled)
    assert c.task_type("quality") == "multilabel" and c.classes["quality"] == ["quality"]
    y, _, has = c.labels("quality")
    ids = c.index["record_id"].astype(str).to_numpy()
    assert (y[:, 0] == np.isin(ids, good)).all() and (has == np.isin(ids, list(labelled))).all()
    assert set(c.index["original_fs"]) == {500.0}


def test_ptbxl_corpus_keeps_its_folds_and_matches_ecg_ids(tiny_ptbxl_corpus, ptbxl_db, tmp_path):
    """On a PTB-XL corpus, keys may be ecg_ids (no leading zeros) or filename_lr paths; the split
    stays PTB-XL's strat_fold, and the built-in tasks are untouched."""
    corpus_dir = tmp_path / "ptbxl"
    shutil.copytree(tiny_ptbxl_corpus.path, corpus_dir)
    before = Corpus(corpus_dir).index
    rows = [[ecg_id, int("SR" in codes)] for ecg_id, codes in zip(ptbxl_db.index, ptbxl_db["codes"])]
    paths = [[name, int("NORM" in codes)] for name, codes in zip(ptbxl_db["filename_lr"], ptbxl_db["codes"])]
    add_labels(corpus_dir, [write_csv(tmp_path / "sr.csv", ["ecg_id", "SR"], rows),
                            write_csv(tmp_path / "norm.csv", ["path", "NORM"], paths)])
    c = Corpus(corpus_dir)
    assert (c.index["split"] == before["split"]).all() and (c.index["fold"] == before["fold"]).all()
    assert c.task_info["sr"]["split"] == c.split_method == "PTB-XL strat_fold (folds 1-8 train, 9 val, 10 test)"
    assert int(c.labels("sr")[2].sum()) == int(c.labels("norm")[2].sum()) == N_RECORDS
    assert (c.index["labels:ptbxl-superdiagnostic"] == before["labels:ptbxl-superdiagnostic"]).all()
    with pytest.raises(CremaError, match="is a built-in task of this corpus"):
        add_labels(corpus_dir, [tmp_path / "sr.csv"], task="ptbxl-rhythm")
