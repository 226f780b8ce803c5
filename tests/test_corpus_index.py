"""The columnar corpus index (``index.npz``) gives what ``index.csv`` gives: the same frame,
rows per split and source, labels and ``crema info``; it is rebuilt when missing, out of date or
damaged. Behaviour only, never timing (``benchmarks/corpus_index.py`` measures the speed)."""
from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pandas as pd
import pytest

from crema.cli import main as crema_main
from crema.config_io import save_json
from crema.data.corpus import LABEL_NONE, LABEL_PREFIX, LABEL_SEP, SPLITS, Corpus, split_of_fold
from crema.data.corpus_index import INDEX_CSV, INDEX_NPZ, IndexColumns, read_index, write_index

ROWS = 20_000


@pytest.fixture(scope="module")
def big_corpus(tiny_ptbxl_corpus, tmp_path_factory):
    """A corpus of 20,000 windows whose index is the real 80-record PTB-XL index tiled 250
    times (record ids made unique, two windows for every third record), plus a regression task,
    cells of LABEL_NONE and missing ages; signals.npy is a sparse file of the declared shape."""
    src = tiny_ptbxl_corpus
    base = read_index(src.path / INDEX_CSV)
    copies = -(-ROWS // len(base))
    index = pd.concat([base.assign(record_id=base["record_id"] + f"-{k:03d}",
                                   source_id=base["source_id"] + f"-{k:03d}",
                                   source=base["source"] if k % 3 else "ptbxl-copy")
                       for k in range(copies)], ignore_index=True).iloc[:ROWS].copy()
    index["window"] = np.arange(ROWS) % 3 // 2          # rows 2, 5, ... are second windows
    index.loc[np.arange(ROWS) % 3 == 2, "record_id"] = index["record_id"].shift(1)
    index.loc[np.arange(ROWS) % 7 == 0, "age"] = np.nan
    rhythm = LABEL_PREFIX + "ptbxl-rhythm"
    index.loc[(np.arange(ROWS) % 11 == 0) & (index[rhythm] == ""), rhythm] = LABEL_NONE
    index[LABEL_PREFIX + "age-years"] = [repr(float(a)) if a == a else "" for a in index["age"]]
    out = tmp_path_factory.mktemp("big") / "corpus"
    out.mkdir()
    write_index(index, out)
    np.save(out / "lead_mask.npy", np.repeat(src.lead_mask[:1], ROWS, axis=0))
    np.lib.format.open_memmap(out / "signals.npy", mode="w+", dtype=np.float16,
                              shape=(ROWS, 12, src.window))  # sparse: no data written
    for name in ("preprocess.json", "prepare_report.json"):
        shutil.copy(src.path / name, out / name)
    save_json(out / "classes.json", {**src.classes, "age-years": ["age"]})
    save_json(out / "tasks.json", {"age-years": {"type": "regression", "labels_file": "ages.csv",
                                                 "key": "record_id", "columns": ["age"], "split": "as prepared"}})
    return out


def _copy(corpus: os.PathLike, folder: os.PathLike):
    """A copy of the corpus folder whose signals.npy is a link (a plain copy would fill in the
    sparse file); the files keep their times, as ``cp -p`` would."""
    shutil.copytree(corpus, folder, ignore=shutil.ignore_patterns("signals.npy"))
    os.symlink(os.path.join(corpus, "signals.npy"), os.path.join(folder, "signals.npy"))
    return folder


def _csv_labels(frame: pd.DataFrame, task: str, classes: list[str], regression: bool):
    """Labels the way the CSV path computed them: one cell at a time."""
    cells = frame[LABEL_PREFIX + task].to_numpy(dtype=object)
    if regression:
        values = np.array([[float(c) if c else 0.0] for c in cells], dtype=np.float32)
        return values, cells != ""
    y = np.zeros((len(cells), len(classes)), dtype=np.float32)
    for i, cell in enumerate(cells):
        if cell and cell != LABEL_NONE:
            y[i, [classes.index(n) for n in cell.split(LABEL_SEP)]] = 1
    return y, y.any(axis=1) | (cells == LABEL_NONE)


def _check_against_csv(corpus: Corpus) -> None:
    frame = read_index(corpus.path / INDEX_CSV)
    assert len(corpus) == len(frame) == ROWS
    pd.testing.assert_frame_equal(corpus.columns.frame(), frame)
    for split in [*SPLITS, ["train", "val"]]:
        expected = np.flatnonzero(frame["split"].isin([split] if isinstance(split, str) else split))
        np.testing.assert_array_equal(corpus.rows(split), expected)
    np.testing.assert_array_equal(corpus.rows("train", sources="ptbxl-copy"),
                                  np.flatnonzero((frame["split"] == "train") & (frame["source"] == "ptbxl-copy")))
    np.testing.assert_array_equal(corpus.rows(exclude_sources=["ptbxl-copy"]),
                                  np.flatnonzero(frame["source"] != "ptbxl-copy"))
    rows = corpus.rows("val")
    for task in corpus.tasks:
        regression = corpus.task_type(task) == "regression"
        y, classes, has = corpus.labels(task, rows)
        y_csv, has_csv = _csv_labels(frame.iloc[rows], task, classes, regression)
        np.testing.assert_array_equal(y, y_csv)
        np.testing.assert_array_equal(has, has_csv)
    for name in ("record_id", "age", "fold"):
        np.testing.assert_array_equal(corpus.column(name), frame[name].to_numpy(
            dtype=object if name == "record_id" else None))


def test_columns_give_what_the_csv_gives(big_corpus):
    corpus = Corpus(big_corpus)
    assert corpus.columns.path == big_corpus / INDEX_NPZ       # read from index.npz, not the CSV
    _check_against_csv(corpus)
    frame = read_index(big_corpus / INDEX_CSV)
    assert corpus.index["record_id"].iloc[0].endswith("-000")  # ids keep their text ("00001-000")
    text = corpus.summary()
    records = frame[["source", "record_id"]].drop_duplicates()
    assert f"records     {len(records)} " in text and f"windows     {ROWS} x 12" in text
    assert ("sources     " + ", ".join(f"{s}: {n}" for s, n in records.groupby("source").size().items())) in text
    assert ("splits      " + ", ".join(f"{s}: {int((frame['split'] == s).sum())}" for s in SPLITS)) in text
    y, has = _csv_labels(frame, "ptbxl-superdiagnostic", corpus.classes["ptbxl-superdiagnostic"], False)
    assert f"{int(has.sum())} labelled windows" in text
    assert ", ".join(f"{c} {int(n)}" for c, n in zip(corpus.classes["ptbxl-superdiagnostic"], y.sum(0))) in text
    ages = frame["age"].dropna().to_numpy(dtype=np.float32)
    assert f"{ages.min():g} to {ages.max():g}, mean {ages.mean():.4g}" in text


def test_pickled_corpus_keeps_its_columns_not_its_frame(big_corpus):
    corpus = Corpus(big_corpus)
    _ = corpus.index
    copy = pickle.loads(pickle.dumps(corpus))
    assert copy._index is None and copy._signals is None
    np.testing.assert_array_equal(copy.rows("test"), corpus.rows("test"))
    pd.testing.assert_frame_equal(copy.index, corpus.index)


@pytest.mark.parametrize("change", ["missing", "csv edited", "damaged", "not an archive"])
def test_out_of_date_or_damaged_columns_are_rebuilt_from_the_csv(big_corpus, tmp_path, change):
    folder = _copy(big_corpus, tmp_path / "c")
    npz = folder / INDEX_NPZ
    if change == "missing":  # a corpus prepared before index.npz existed
        npz.unlink()
    elif change == "csv edited":  # by hand: the first row moves to the test split
        frame = read_index(folder / INDEX_CSV)
        frame.loc[0, "split"] = "test" if frame.loc[0, "split"] != "test" else "train"
        frame.to_csv(folder / INDEX_CSV, index=False)
    elif change == "damaged":
        npz.write_bytes(npz.read_bytes()[: npz.stat().st_size // 2])
    else:
        npz.write_bytes(b"not a zip file at all")
    corpus = Corpus(folder)
    assert corpus.columns.path is None           # built from the CSV this time
    _check_against_csv(corpus)
    again = Corpus(folder)                        # ... and written back for the next open
    assert again.columns.path == npz
    _check_against_csv(again)


def test_a_text_column_whose_codes_lie_is_refused_not_misread(big_corpus, tmp_path):
    folder = _copy(big_corpus, tmp_path / "c")
    columns = IndexColumns.from_frame(read_index(folder / INDEX_CSV))
    split = columns.text("split")
    split.values.pop()                            # one fewer value than the codes point to
    columns.save(folder)
    with pytest.raises(Exception, match="index.npz: damaged"):
        Corpus(folder).rows("train")


def test_crema_info_reads_only_the_columns(big_corpus, capsys, monkeypatch):
    def no_frame(self):
        raise AssertionError("crema info built the whole DataFrame")

    monkeypatch.setattr(IndexColumns, "frame", no_frame)
    assert crema_main(["info", str(big_corpus)]) == 0
    out = capsys.readouterr().out
    assert f"windows     {ROWS} x 12 leads" in out and "task        age-years: regression of age" in out


def test_prepared_corpus_has_matching_columns(tiny_ptbxl_corpus):
    assert (tiny_ptbxl_corpus.path / INDEX_NPZ).is_file()
    columns = IndexColumns.load(tiny_ptbxl_corpus.path)
    assert columns is not None
    pd.testing.assert_frame_equal(columns.frame(), read_index(tiny_ptbxl_corpus.path / INDEX_CSV))
    assert os.path.getsize(tiny_ptbxl_corpus.path / INDEX_NPZ) > 0


def test_split_of_fold_is_ptbxls_rule_and_a_labels_files_highest_two_folds():
    assert [split_of_fold(f) for f in range(1, 11)] == ["train"] * 8 + ["val", "test"]
    assert [split_of_fold(f, highest=4, second=2) for f in range(5)] == ["train", "train", "val", "train", "test"]
    with pytest.raises(ValueError, match="above the highest fold"):
        split_of_fold(11)


def test_record_groups_and_keys_come_from_the_columns_as_the_frame_gives_them(tiny_cinc_corpus):
    corpus = tiny_cinc_corpus
    for rows in (np.arange(len(corpus)), np.random.default_rng(0).permutation(len(corpus))[: len(corpus) // 2]):
        frame = corpus.index.iloc[rows]
        expected = frame.groupby(["source", "record_id"], sort=False).indices
        names, groups = corpus.record_groups(rows)
        assert names == list(expected) and len(names) < len(rows)       # some records have several windows
        assert all(np.array_equal(g, e) for g, e in zip(groups, expected.values()))
        keys = (frame["source"].astype(str) + "/" + frame["record_id"].astype(str)).to_numpy()
        assert np.array_equal(corpus.record_keys(rows), keys)
