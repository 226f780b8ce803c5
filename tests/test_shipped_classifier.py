"""The shipped classifier predicts out of the box, by name, from the CLI, the API and the viewer."""
from __future__ import annotations

import csv

import numpy as np
import pytest

import crema
from crema.cli import main
from crema.data.ptbxl import load_database, load_statements, multi_hot, task_labels
from crema.eval.metrics import auroc
from crema.paths import sample_root
from crema.weights import shipped_models

SUFFIX = "-superdiagnostic"
NAMES = sorted(name for name in shipped_models() if name.endswith(SUFFIX))
CLASSES = ["CD", "HYP", "MI", "NORM", "STTC"]


def test_a_classifier_of_each_shipped_encoder():
    assert NAMES == ["crema-mini-ecg12-superdiagnostic", "crema-w128-ecg12-superdiagnostic"]


@pytest.fixture(scope="module", params=NAMES)
def name(request):
    return request.param


@pytest.fixture(scope="module")
def classifier(name):
    return crema.load(name, device="cpu")


@pytest.fixture(scope="module")
def test_fold():
    """The sample's PTB-XL test-fold records (100 Hz files) with a superdiagnostic label."""
    root = sample_root()
    database = load_database(root)
    labels = task_labels(database, load_statements(root), "superdiagnostic")
    rows = database[(database["strat_fold"] == 10) & labels.map(len).gt(0)]
    y, classes = multi_hot(labels[rows.index])
    return [root / f"{path}.hea" for path in rows["filename_lr"]], y, classes


def test_its_config_is_a_classifier_of_the_five_classes(classifier, name):
    assert classifier.kind == "classifier" and list(classifier.classes) == CLASSES
    assert classifier.thresholds.shape == (5,) and ((classifier.thresholds > 0) & (classifier.thresholds < 1)).all()
    assert classifier.config["init"] == name.removesuffix(SUFFIX)
    # a shipped config names no folder of the machine that trained it
    assert "corpus" not in classifier.config["finetune"] and "out" not in classifier.config["finetune"]


def test_it_separates_the_classes_on_the_test_fold(classifier, test_fold):
    """On the sample's test-fold records (the 100 Hz copies of the records the card measures at
    500 Hz) its probabilities rank the diagnoses well above chance."""
    paths, y, classes = test_fold
    assert classes == CLASSES and len(paths) > 50
    probs = classifier.predict([str(p) for p in paths])
    assert list(probs.columns) == CLASSES and len(probs) == len(paths)
    values = probs.to_numpy()
    assert np.isfinite(values).all() and (values >= 0).all() and (values <= 1).all()
    assert auroc(y, values, CLASSES).macro > 0.75


def test_crema_predict_takes_its_name(name, tmp_path, test_fold):
    paths = test_fold[0][:3]
    out = tmp_path / "predictions.csv"
    assert main(["predict", name, *map(str, paths), "--out", str(out), "--no-progress"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["record_id"] for r in rows] == [p.stem for p in paths]
    assert all(set(CLASSES) <= set(r) and "labels" in r for r in rows)


def test_crema_plot_takes_its_name(name, tmp_path, test_fold):
    out = tmp_path / "ecg.png"
    assert main(["plot", str(test_fold[0][0]), "--checkpoint", name, "--out", str(out)]) == 0
    assert out.stat().st_size > 10_000


def test_crema_serve_takes_its_name(name, monkeypatch):
    """The viewer serves the classifier by name, with its shipped encoder for reconstructions."""
    uvicorn = pytest.importorskip("uvicorn")
    testclient = pytest.importorskip("starlette.testclient")
    served = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: served.update(app=app))
    assert main(["serve", name, "--device", "cpu", "--port", "9002"]) == 0
    info = testclient.TestClient(served["app"], base_url="http://127.0.0.1:9002").get("/api/info").json()
    assert info["source"] == name and info["kind"] == "classifier" and info["reconstruction"] is True
    assert info["classes"] == CLASSES
