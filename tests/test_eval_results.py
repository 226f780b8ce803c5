"""The result record (crema.eval.results): dict -> ResultRecord -> dict round trips, a results.json
committed by an earlier run reads and writes back byte for byte, and records read the way the
summaries do."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from crema.errors import CremaError
from crema.eval import metrics
from crema.eval.results import ResultRecord, load_records, load_results, write_results
from crema.eval.summary import summarise

# Three results (two probes, one fine-tune) of the committed card run's results.json
# (results/card/results.json as committed in November 2026, before task types existed), with its
# suite, data and the steps they came from: written by the record code of that time.
OLD = Path(__file__).parent / "data" / "results_card_2026-11.json"


def _evaluations() -> dict[str, dict]:
    """A classification and a regression evaluation of seeded predictions, with replicates."""
    rng = np.random.default_rng(0)
    y = (rng.random((80, 3)) > 0.6).astype(np.float32)
    p = np.clip(y * 0.4 + rng.random((80, 3)) * 0.6, 0, 1)
    target = rng.normal(60, 12, size=(80, 1))
    return {"multilabel": metrics.evaluate(y, p, ["NORM", "MI", "STTC"], np.full(3, 0.5), 50, seed=0,
                                           keep_replicates=True),
            "regression": metrics.evaluate_regression(target, target + rng.normal(0, 5, size=(80, 1)), "age", 50,
                                                      seed=0, keep_replicates=True)}


def _record(evaluation: dict, **extra) -> ResultRecord:
    return ResultRecord.from_evaluation(
        step="probe/f0.5/s1", method="crema", protocol="probe", task="t", experiment="label_fraction", seed=1,
        evaluation=evaluation, config={"probe": "logistic"}, data_sha256="a" * 64, n_train=40, n_val=20,
        fraction=0.5, train_rows_sha256="b" * 64, test_rows_sha256="c" * 64, extra=extra or None)


@pytest.mark.parametrize("task_type", ["multilabel", "regression"])
def test_a_record_round_trips_through_its_dict(task_type):
    record = _record(_evaluations()[task_type], probe_fit={"C": 0.1})
    entry = json.loads(json.dumps(record.to_dict()))            # as results.json holds it
    again = ResultRecord.from_dict(entry)
    assert again == record and again.to_dict() == entry
    assert list(again.to_dict()) == list(entry)                  # key order too
    assert record.metrics() == metrics.TASK_METRICS[task_type]
    # the metrics and replicates follow config, then the extra keys
    keys = list(entry)
    assert keys[keys.index("config") + 1].startswith(("bootstrap_", "mae")) and keys[-1] == "probe_fit"
    if task_type == "regression":
        assert entry["auroc"] is None and len(entry["bootstrap_mae"]) == len(entry["bootstrap_pearson"]) == 50
        assert "bootstrap_auroc" not in entry
    else:
        assert len(entry["bootstrap_auroc"]) == 50 and "mae" not in entry
        assert all(v == round(v, 4) for v in entry["bootstrap_auroc"])


def test_extra_keys_that_name_fields_set_them():
    record = _record(_evaluations()["multilabel"], n_val=33, pretrain_seed=2)
    assert record.n_val == 33 and record.extra == {"pretrain_seed": 2}


def test_the_committed_results_file_reads_and_writes_back_unchanged(tmp_path):
    raw = OLD.read_text()
    data = load_results(OLD)
    records = load_records(OLD)
    assert len(records) == 3 and all(r.task_type is None for r in records)   # written before task types
    assert {r.protocol for r in records} == {"probe", "finetune"}
    assert [r.to_dict() for r in records] == data["results"]
    meta = {k: v for k, v in data.items() if k not in ("kind", "version", "data", "results")}
    write_results(tmp_path / "results.json", records, data["data"], meta)
    assert (tmp_path / "results.json").read_text() == raw                     # byte for byte
    # read as multilabel, with the extra keys kept
    assert records[0].metrics() == ("auroc",) and "probe_fit" in records[0].extra
    assert records[2].extra == {"pretrain_seed": 0}
    assert records[2].auroc["macro"] == data["results"][2]["auroc"]["macro"]
    # the summaries read the written records as they read the old ones
    again = load_results(tmp_path / "results.json")["results"]
    assert [s.to_dict() for s in summarise(again)] == [s.to_dict() for s in summarise(data["results"])]


def test_a_read_record_changed_writes_the_change_and_keeps_the_rest():
    entry = json.loads(OLD.read_text())["results"][0]
    record = ResultRecord.from_dict(entry)
    record.extra["note"] = "added"
    record.task_type = "multilabel"
    out = record.to_dict()
    assert list(out)[:len(entry)] == list(entry) and list(out)[len(entry):] == ["task_type", "note"]
    record.task_type = None
    assert "task_type" not in record.to_dict()


def test_a_dict_that_is_no_record_is_refused_in_one_line():
    entry = json.loads(OLD.read_text())["results"][0]
    del entry["data_sha256"], entry["n_test"]
    with pytest.raises(CremaError, match=r"^x.json: result 0: not a result record \(missing n_test, data_sha256\)$"):
        ResultRecord.from_dict(entry, "x.json: result 0")
    with pytest.raises(CremaError, match="must be a JSON object"):
        ResultRecord.from_dict([1, 2])
