"""`crema demo` end to end on a slice of the embedded real sample (the full demo is `make demo`)."""
import json
import math

import numpy as np
import pandas as pd
import pytest

import crema
from crema.cli import main
from crema.data.corpus import Corpus
from crema.demo import SHIPPED, TASK
from crema.eval.report import results_text
from crema.paths import sample_root

RECORDS = 120


def _probe_results(out, name):
    """The probe's results, checked against the corpus it ran on: the test set is fold 10, the
    100% run trains on every training record and the 10% run on a tenth of them."""
    results = json.loads((out / f"probe-{name}" / "results.json").read_text())["results"]
    corpus = Corpus(out / "corpus")
    n_train, n_test = len(corpus.rows(split="train")), len(corpus.rows(split="test"))
    by_fraction = {r["fraction"]: r for r in results}
    assert {r["method"] for r in results} == {name} and sorted(by_fraction) == [0.1, 1.0]
    assert all(r["task"] == TASK and r["n_test"] == n_test for r in results)
    assert by_fraction[1.0]["n_train"] == n_train
    # a tenth, rounded up, plus at most one record per class to give every class a positive
    assert math.ceil(0.1 * n_train) <= by_fraction[0.1]["n_train"] <= math.ceil(0.1 * n_train) + 5
    for r in results:
        per_class = r["auroc"]["per_class"]
        assert set(per_class) | set(r["auroc"]["skipped"]) == set(corpus.classes[TASK])
        assert r["auroc"]["macro"] == pytest.approx(np.mean(list(per_class.values())))
        assert 0.0 <= r["auroc"]["ci95"][0] <= r["auroc"]["ci95"][1] <= 1.0
    return results


def _check_corpus_and_embeddings(out, model):
    report = json.loads((out / "corpus" / "prepare_report.json").read_text())
    assert report["records_read"] == report["windows"] == RECORDS and report["records_skipped"] == 0
    assert len(Corpus(out / "corpus")) == RECORDS
    index = pd.read_csv(out / "embeddings.index.csv", dtype={"record_id": str})
    assert index["record_id"].tolist() == [f"{i:05d}_lr" for i in range(1, 9)]
    assert (index["n_windows"] == 1).all() and (index["leads_present"] == 12).all()
    emb = np.load(out / "embeddings.npy")
    assert emb.shape == (8, crema.load(model, device="cpu").feature_dim()) and np.isfinite(emb).all()
    assert emb.std(axis=0).min() > 0  # eight different ECGs, eight different embeddings
    for image in ("ecg.png", "reconstruction.png"):
        assert (out / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / image).stat().st_size > 10_000


def test_demo_starts_from_the_shipped_model(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--records", str(RECORDS)]) == 0
    printed = capsys.readouterr().out
    assert f"crema = {SHIPPED}" in printed
    _check_corpus_and_embeddings(out, SHIPPED)
    # the demo's embeddings are the shipped model's, record for record
    records = sorted((sample_root() / "records100" / "00000").glob("*.hea"))[:8]
    expected = crema.load(SHIPPED, device="cpu").embed(records)
    assert np.allclose(np.load(out / "embeddings.npy"), expected, atol=1e-5)
    results = [r for name in ("crema", "random_init") for r in _probe_results(out, name)]
    # the table printed is the one the stored results give, numbers included
    assert results_text(results) in printed
    assert not (out / "pretrain").exists()  # nothing was pretrained


def test_demo_pretrain_path_and_rerun(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--pretrain", "--out", str(out), "--steps", "2", "--batch-size", "8", "--records", str(RECORDS)]
    assert main(argv) == 0
    assert f"crema = {out / 'pretrain'}" in capsys.readouterr().out
    log = [json.loads(line) for line in (out / "pretrain" / "log.jsonl").read_text().splitlines()]
    train = [entry for entry in log if "loss" in entry]
    assert [entry["step"] for entry in train][-1] == 2 and all(math.isfinite(e["loss"]) for e in train)
    _check_corpus_and_embeddings(out, out / "pretrain")
    _probe_results(out, "crema")

    # A second run finds the corpus and the finished pretraining in place and redoes neither.
    report = out / "corpus" / "prepare_report.json"
    weights = out / "pretrain" / "model.safetensors"
    stamps = report.stat().st_mtime_ns, weights.read_bytes()
    assert main(argv) == 0
    assert (report.stat().st_mtime_ns, weights.read_bytes()) == stamps
