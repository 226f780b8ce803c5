"""PTB-XL and CinC indexes and label tasks on the shared data."""
from __future__ import annotations

import collections
import shutil

import numpy as np
import pytest

from crema.data import cinc, ptbxl
from crema.data.readers import find_records, read_record
from crema.errors import CremaError
from crema.paths import data_root


@pytest.fixture(scope="module")
def index(ptbxl_root):
    return ptbxl.load_ptbxl_index(ptbxl_root)


def test_superdiagnostic_counts(index):
    labels = index["labels:ptbxl-superdiagnostic"]
    counts = collections.Counter(name for names in labels for name in names)
    assert dict(counts) == {"NORM": 297, "MI": 73, "STTC": 96, "CD": 78, "HYP": 40}
    assert int((labels.apply(len) == 0).sum()) == 12


def test_task_class_sets(index):
    sizes = {}
    for task in ptbxl.PTBXL_TASKS:
        y, classes = ptbxl.multi_hot(index[f"labels:ptbxl-{task}"])
        assert classes == sorted(classes) and y.shape == (500, len(classes))
        sizes[task] = (len(classes), int((y.sum(axis=1) > 0).sum()))
    assert sizes["superdiagnostic"] == (5, 488)
    assert sizes["all"][1] == 500  # every record has at least one statement
    assert sizes["rhythm"][1] < 500 and sizes["form"][1] < 500
    # the hierarchy: sub- and superclasses come from the same diagnostic statements
    has_diag = index["labels:ptbxl-diagnostic"].apply(bool)
    assert (has_diag == index["labels:ptbxl-superdiagnostic"].apply(bool)).all()
    assert (has_diag == index["labels:ptbxl-subdiagnostic"].apply(bool)).all()


def test_record_one(index):
    row = index.loc[1]
    assert row["record_id"] == "00001" and row["patient_id"] == "15709"
    assert row["age"] == 56 and row["sex"] == "F" and row["fold"] == 3 and row["split"] == "train"
    assert row["labels:ptbxl-superdiagnostic"] == ["NORM"]
    assert row["labels:ptbxl-all"] == ["LVOLT", "NORM", "SR"]  # any likelihood counts (LVOLT 0.0)
    # the highest rate present: 500 Hz in the shared copy, 100 Hz in the shipped sample
    hr = (row["path"].parents[2] / "records500").is_dir()
    assert row["path"].name == ("00001_hr.hea" if hr else "00001_lr.hea") and row["path"].exists()
    assert row["source_id"] == "ptbxl:1"


def test_folds_and_splits(index):
    assert set(index["fold"]) == set(range(1, 11))
    expected = {f: ("train" if f <= 8 else "val" if f == 9 else "test") for f in range(1, 11)}
    assert (index["split"] == index["fold"].map(expected)).all()
    assert ptbxl.clean_age(300.0) == 90.0 and ptbxl.clean_age(float("nan")) is None


def test_rate_detection(ptbxl_root, tmp_path):
    assert ptbxl.detect_rate(ptbxl_root) == (500 if (ptbxl_root / "records500").is_dir() else 100)
    assert ptbxl.load_ptbxl_index(ptbxl_root, rate=100)["path"].iloc[0].name == "00001_lr.hea"
    only100 = tmp_path / "ptbxl100"
    only100.mkdir()
    for name in ("ptbxl_database.csv", "scp_statements.csv"):
        shutil.copy(ptbxl_root / name, only100 / name)
    (only100 / "records100").symlink_to(ptbxl_root / "records100")
    assert ptbxl.detect_rate(only100) == 100
    with pytest.raises(CremaError, match="100 or 500"):
        ptbxl.load_ptbxl_index(ptbxl_root, rate=250)


@pytest.fixture(scope="module")
def mapping_root():
    """A folder holding the CinC dx mapping tables: the shared CinC folder, else the packaged copy
    (the shipped sample holds the tables but no CinC record)."""
    shared = data_root() / "cinc"
    return shared if shared.is_dir() else cinc.mapping_path(2021).parent


def test_cinc_scored_classes_and_merges(mapping_root):
    cinc_root = mapping_root
    code_to_class, classes = cinc.scored_classes(2021, cinc_root)
    assert len(classes) == 26  # 30 scored codes, 4 merged pairs
    assert code_to_class["713427006"] == code_to_class["59118001"] == "RBBB"
    assert code_to_class["63593006"] == code_to_class["284470004"] == "PAC"
    assert code_to_class["17338001"] == code_to_class["427172004"] == "PVC"
    assert code_to_class["733534002"] == code_to_class["164909002"] == "LBBB"
    code_2020, classes_2020 = cinc.scored_classes(2020)  # the packaged copy
    assert len(classes_2020) == 24 and "733534002" not in code_2020
    assert cinc.mapping_path(2021, cinc_root).parent == cinc_root
    assert cinc.mapping_path(2021).read_bytes() == (cinc_root / "challenge2021_dx_mapping.csv").read_bytes()
    assert cinc.dx_labels(["713427006", "426783006", "999"], code_to_class) == ["NSR", "RBBB"]


def test_cinc_sources_and_labels_on_every_header(cinc_root):
    code_to_class, _ = cinc.scored_classes(2021, cinc_root)
    labelled = 0
    for header in find_records(cinc_root):
        source = cinc.cinc_source(header.stem)
        assert source == header.parent.name
        labelled += bool(cinc.dx_labels(read_record(header).meta.get("dx"), code_to_class))
    assert 0 < labelled <= 221
    assert cinc.cinc_source("I0001") == "incart"
    assert cinc.cinc_source("X9", folder="mine") == "mine"


def test_cinc_dedup_keys_and_folds():
    assert cinc.cinc_source_id("HR00001", "ptbxl") == ptbxl.ptbxl_source_id(1) == "ptbxl:1"
    assert cinc.cinc_source_id("E00001", "georgia") == "georgia:E00001"
    folds = [cinc.hash_fold(f"georgia:E{i:05d}") for i in range(2000)]
    assert set(folds) == set(range(1, 11))
    assert cinc.hash_fold("georgia:E00001") == cinc.hash_fold("georgia:E00001")
    counts = np.bincount(folds)[1:]
    assert counts.min() > 140  # roughly uniform over the 10 folds
