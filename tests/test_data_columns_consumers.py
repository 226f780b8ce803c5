"""The pretraining set, corpus selection and the suite's overlap notes read the index by column:
the same rows, dedup and patient codes from ``index.npz`` as from ``index.csv`` alone, and as
the whole DataFrame gives them."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from crema.data.corpus import Corpus
from crema.data.dataset import select_rows
from crema.data.prepare import prepare_corpus
from crema.eval.suite.config import suite_from_dict
from crema.eval.suite.workspace import Workspace
from crema.train.stream import open_pretrain_data


@pytest.fixture(scope="module")
def hr_corpus(cinc_root, tmp_path_factory):
    """CinC's PTB-XL copy: HR00001-HR00010 are records 1-10 of tiny_ptbxl_corpus."""
    out = tmp_path_factory.mktemp("corpora") / "hr"
    prepare_corpus(cinc_root / "ptbxl", out, workers=1, progress=False)
    return out


def _csv_only(folder, dest):
    """A copy of a corpus without ``index.npz``, where a folder of that name stops one from being
    written: every open parses ``index.csv``."""
    shutil.copytree(folder, dest, ignore=shutil.ignore_patterns("index.npz"))
    (dest / "index.npz").mkdir()
    return dest


@pytest.fixture(scope="module")
def both_ways(tiny_ptbxl_corpus, hr_corpus, tmp_path_factory):
    """``(from index.npz, from index.csv only)``: the PTB-XL and HR corpus folders each way."""
    base = tmp_path_factory.mktemp("csv-only")
    npz = (tiny_ptbxl_corpus.path, hr_corpus)
    assert all((p / "index.npz").is_file() for p in npz)
    return npz, (_csv_only(npz[0], base / "ptbxl"), _csv_only(npz[1], base / "hr"))


def _reference(specs):
    """Rows and patient codes as computed from the whole DataFrame of each index (the way they
    were before the columns): dedup on ``source_id``, patients keyed ``source/patient_id``."""
    seen, rows_of, patients, offset = set(), [], [], 0
    for spec in specs:
        folder, _, splits = str(spec).partition(":")
        corpus = Corpus(folder)
        index = corpus.index
        rows = corpus.rows(splits.split(",") if splits else None)
        ids = index["source_id"].to_numpy()
        rows = rows[~np.isin(ids[rows], list(seen))] if seen else rows
        seen.update(ids.tolist())
        key = (index["source"] + "/" + index["patient_id"]).where(index["patient_id"] != "", None)
        codes, uniques = pd.factorize(key, use_na_sentinel=True)
        patients.append(np.where(codes >= 0, codes + offset, -1)[rows])
        offset += len(uniques)
        rows_of.append(rows)
    return rows_of, np.concatenate(patients)


def test_pretraining_set_is_the_same_from_index_npz_and_from_index_csv(both_ways):
    (ptb, hr), (ptb_csv, hr_csv) = both_ways
    from_npz = open_pretrain_data([f"{ptb}:train", str(hr)], window=1250, seed=0)
    from_csv = open_pretrain_data([f"{ptb_csv}:train", str(hr_csv)], window=1250, seed=0)
    parts_npz, parts_csv = from_npz.dataset.dataset.datasets, from_csv.dataset.dataset.datasets
    # each way as meant: the columns of index.npz without a DataFrame; the CSV's columns in memory
    assert all(p.corpus.columns.path is not None and p.corpus._index is None for p in parts_npz)
    assert all(p.corpus.columns.path is None for p in parts_csv)
    rows, patients = _reference([f"{ptb}:train", str(hr)])
    assert [len(r) for r in rows] == [51, 29]  # HR00001-HR00010 dropped as PTB-XL records 1-10
    for part_npz, part_csv, expected in zip(parts_npz, parts_csv, rows):
        np.testing.assert_array_equal(part_npz.rows, expected)
        np.testing.assert_array_equal(part_csv.rows, expected)
    np.testing.assert_array_equal(from_npz.dataset.patients, patients)
    np.testing.assert_array_equal(from_csv.dataset.patients, patients)
    assert (patients[:51] >= 0).all() and len(np.unique(patients[:51])) < 51  # PTB-XL: some patients repeat
    assert len(from_npz.dataset) == len(from_csv.dataset) == 80
    item_npz, item_csv = from_npz.dataset[(0, 60)], from_csv.dataset[(0, 60)]
    assert item_npz["row"] == item_csv["row"] and item_npz["patient"] == item_csv["patient"]
    np.testing.assert_array_equal(item_npz["signal"].numpy(), item_csv["signal"].numpy())
    # a corpus named twice: the second copy serves nothing, either way
    twice = [[len(rows) for _, rows in select_rows([f"{a}:train", str(a)])] for a in (ptb, ptb_csv)]
    assert twice == [[51, 0], [51, 0]]


def test_suite_overlap_notes_are_the_same_from_index_npz_and_from_index_csv(both_ways, tmp_path):
    notes, sources = [], []
    for ptb, hr in both_ways:
        cfg = suite_from_dict({
            "corpora": {"ptbxl": str(ptb), "hr": str(hr)}, "pretrain": {"corpora": ["hr", "ptbxl:train"]},
            "methods": {"crema": {}}, "tasks": [{"corpus": "ptbxl", "task": "ptbxl-superdiagnostic"}],
            "leave_source_out": {"corpus": "hr", "task": "cinc-scored"}})
        workspace = Workspace(cfg, tmp_path / "suite", progress=False)
        notes.append(workspace.overlap_note())
        sources.append(workspace.loso_sources())
    assert notes[0] == notes[1] and sources[0] == sources[1]
    ptb_index, hr_index = Corpus(both_ways[0][0]).index, Corpus(both_ways[0][1]).index
    assert sources[0] == sorted(set(hr_index["source"]))
    # pretraining saw all of HR, then PTB-XL's train records but those HR already held (1-10)
    test = ptb_index.loc[ptb_index["split"] == "test", "source_id"]
    overlap = sorted(set(test) & set(hr_index["source_id"]))
    assert notes[0]["ptbxl:ptbxl-superdiagnostic:test"] == {"n_test_records": test.nunique(),
                                                           "also_in_pretraining": overlap}
    assert overlap  # some of records 1-10 are in PTB-XL's test fold: the note must find them
    assert notes[0]["hr:cinc-scored:all"] == {"n_records": hr_index["source_id"].nunique(),
                                              "also_in_pretraining": hr_index["source_id"].nunique()}


@pytest.mark.parametrize("sources", [["ptbxl", "ningbo", "ptbxl", "ningbo", "ptbxl", "ptbxl", "ptbxl"],
                                     ["a/b", "a", "a/b", "x", "a", "x", "a/b"]])
def test_patient_codes_follow_the_source_patient_key(sources):
    """Codes in order of first appearance of "source/patient_id", -1 without an id; a key that two
    (source, patient) pairs spell ("a/b" + "c", "a" + "b/c") has one code, as the key always had."""
    from crema.data.corpus_index import IndexColumns
    from crema.train.stream import _patient_codes

    frame = pd.DataFrame({"source": sources, "patient_id": ["c", "b/c", "", "7", "b/c", "7", "d"]})

    class Columns:  # what _patient_codes reads of a corpus
        columns = IndexColumns.from_frame(frame)

        def __len__(self):
            return len(frame)

    key = (frame["source"] + "/" + frame["patient_id"]).where(frame["patient_id"] != "", None)
    expected, uniques = pd.factorize(key, use_na_sentinel=True)
    codes, end = _patient_codes(Columns(), 10)
    np.testing.assert_array_equal(codes, np.where(expected >= 0, expected + 10, -1))
    assert end == 10 + len(uniques) and codes[2] == -1
    assert (codes[0] == codes[1]) == ("/" in sources[0])
