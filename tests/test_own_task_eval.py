"""A user's own tasks through the whole evaluation stack, on real PTB-XL records: a multi-label 0/1
task, a multi-class text task and a regression on age, written into a copy of the tiny PTB-XL
corpus as ``crema prepare --labels`` writes them (``labels:<task>`` columns, ``classes.json``,
``tasks.json``), then probed, fine-tuned, predicted with and compared end to end
(``crema evaluate --corpus --task`` without a suite)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from scipy.stats import pearsonr

from crema.cli import main
from crema.data.corpus import LABEL_NONE, LABEL_PREFIX, Corpus
from crema.eval import metrics
from crema.eval.headline import headline
from crema.eval.paired import paired_differences
from crema.eval.splits import task_split
from crema.eval.suite.own_task import usable_fractions
from crema.errors import CheckpointError
from crema.model.checkpoint import check_checkpoint_config

TASKS = {"norm-mi": "multilabel", "age-group": "multiclass", "age": "regression"}
FAST = ["--n-bootstrap", "200", "--threads", "1", "--no-progress"]


def _age_group(age: float) -> str:
    return "" if not np.isfinite(age) else "under 50" if age < 50 else "50 to 69" if age < 70 else "70 or over"


@pytest.fixture(scope="module")
def user_corpus(tiny_ptbxl_corpus, tmp_path_factory):
    """The tiny PTB-XL corpus with three user tasks: ``norm-mi`` (NORM and MI as 0/1 columns;
    a record with neither is labelled with no class), ``age-group`` (three age bands as text) and
    ``age`` (years, a regression target)."""
    out = tmp_path_factory.mktemp("user_corpus") / "corpus"
    shutil.copytree(tiny_ptbxl_corpus.path, out)
    index = pd.read_csv(out / "index.csv", dtype=str, keep_default_na=False)
    superdiagnostic = index[LABEL_PREFIX + "ptbxl-superdiagnostic"].str.split("|")
    index[LABEL_PREFIX + "norm-mi"] = ["|".join(c for c in ("NORM", "MI") if c in cell) or LABEL_NONE
                                       for cell in superdiagnostic]
    ages = pd.to_numeric(index["age"], errors="coerce").to_numpy()
    index[LABEL_PREFIX + "age-group"] = [_age_group(a) for a in ages]
    index[LABEL_PREFIX + "age"] = ["" if not np.isfinite(a) else f"{a:g}" for a in ages]
    index.to_csv(out / "index.csv", index=False)
    classes = json.loads((out / "classes.json").read_text())
    classes.update({"norm-mi": ["NORM", "MI"], "age-group": ["under 50", "50 to 69", "70 or over"], "age": ["age"]})
    (out / "classes.json").write_text(json.dumps(classes))
    (out / "tasks.json").write_text(json.dumps({task: {"type": kind} for task, kind in TASKS.items()}))
    return Corpus(out)


# ----------------------------------------------------------------------------- metrics

def test_regression_metrics_match_scipy_and_bootstrap_pairs_with_auroc_resamples():
    rng = np.random.default_rng(0)
    y = rng.normal(60, 15, size=(120, 1))
    p = y + rng.normal(0, 8, size=y.shape)
    result = metrics.evaluate_regression(y, p, "age", n_resamples=500, seed=3, keep_replicates=True)
    assert result["mae"]["value"] == pytest.approx(np.mean(np.abs(y - p)))
    assert result["pearson"]["value"] == pytest.approx(pearsonr(y[:, 0], p[:, 0])[0])
    for name in ("mae", "pearson"):
        low, high = result[name]["ci95"]
        assert low < result[name]["value"] < high and len(result["bootstrap"][name]) == 500
    # replicate r resamples the same records as the AUROC bootstrap with the same seed, so a
    # regression result and any other result on these records pair up
    idx = np.random.default_rng(3).integers(0, 120, size=(500, 120))
    assert result["bootstrap"]["mae"][7] == pytest.approx(np.mean(np.abs(y[idx[7]] - p[idx[7]])))
    assert np.isnan(metrics.pearson(y, np.full_like(y, 5.0)))  # a constant prediction has no r


def test_paired_mae_counts_a_lower_error_as_ahead():
    reps = np.linspace(8.0, 9.0, 100)
    results = [{"method": m, "pretrain_seed": 0, "seed": 0, "task": "age", "task_type": "regression",
                "protocol": "probe", "experiment": "label_fraction", "fraction": 1.0, "holdout_source": None,
                "test_rows_sha256": "r", "n_test": 100, "bootstrap": {"n_resamples": 100, "seed": 0},
                "mae": {"value": mae}, "pearson": {"value": r},
                "bootstrap_mae": list(reps + mae - 8.5), "bootstrap_pearson": list(np.full(100, r))}
               for m, mae, r in (("mine", 7.5, 0.6), ("random_kernels", 8.5, 0.4))]
    by_metric = {d.metric: d for d in paired_differences(results)}
    assert by_metric["mae"].difference == pytest.approx(-1.0) and by_metric["mae"].wins == "1/1"
    assert by_metric["pearson"].difference == pytest.approx(0.2) and by_metric["pearson"].wins == "1/1"
    sentence = headline(results, ["mine"])
    assert sentence.startswith("On age, with a linear probe on 100% of the training labels, the pretrained "
                               "encoder mine beat the training-free random-kernel baseline (MAE 7.500 against "
                               "8.500, lower is better; difference -1.000")


@pytest.mark.parametrize("gap, spread, verdict", [(0.05, 0.01, "beat"), (-0.05, 0.01, "did worse than"),
                                                   (0.01, 0.05, "did not clearly beat"),
                                                   (-0.01, 0.05, "did not beat")])
def test_headline_says_beat_only_when_the_interval_excludes_zero(gap, spread, verdict):
    rng = np.random.default_rng(0)
    shared = rng.normal(0.8, 0.03, 1000)
    reps = {"mine": shared + gap + rng.normal(0, spread, 1000), "random_kernels": shared}
    results = [{"method": m, "pretrain_seed": 0, "seed": 0, "task": "t", "protocol": "probe",
                "experiment": "label_fraction", "fraction": 1.0, "holdout_source": None, "test_rows_sha256": "r",
                "n_test": 50, "bootstrap": {"n_resamples": 1000, "seed": 0},
                "auroc": {"macro": float(np.mean(r)), "per_class": {}, "skipped": {}}, "bootstrap_auroc": list(r)}
               for m, r in reps.items()]
    sentence = headline(results, ["mine"])
    assert f"the pretrained encoder mine {verdict} the training-free random-kernel baseline (macro AUROC" in sentence
    assert headline(results, ["someone else"]) is None


def test_usable_fractions_need_records_and_positives(user_corpus):
    split = task_split(user_corpus, "norm-mi")
    n_records = len(set(split.keys["train"]))
    kept, dropped = usable_fractions(split, (0.01, 0.5, 1.0), min_records=10)
    assert kept == (0.5, 1.0) and set(dropped) == {0.01}          # 1% of ~50 records is one record
    kept, dropped = usable_fractions(split, (0.5,), min_records=n_records)
    assert kept == (1.0,) and "fewer than" in dropped[0.5]
    mi = int(split.y["train"][:, 1].sum())
    kept, dropped = usable_fractions(split, (0.5 / mi,), min_records=1)  # MI would have half a positive
    assert kept == (1.0,) and "rarest class" in dropped[0.5 / mi]
    assert usable_fractions(task_split(user_corpus, "age"), (0.5,), min_records=20)[0] == (0.5, 1.0)


def test_a_regression_head_config_is_checked():
    base = {"kind": "classifier", "arch": "resnet1d", "model": {}, "classes": ["age"], "task_type": "regression",
            "thresholds": None, "target_mean": 60.0, "target_std": 15.0}
    check_checkpoint_config(base, "config.json")
    for change, field in (({"target_std": 0.0}, "target_std"), ({"target_mean": None}, "target_mean"),
                          ({"classes": ["a", "b"]}, "classes"), ({"thresholds": [0.5]}, "thresholds"),
                          ({"task_type": "ordinal"}, "task_type")):
        with pytest.raises(CheckpointError, match=f"config.json: {field}"):
            check_checkpoint_config({**base, **change}, "config.json")


# ----------------------------------------------------------------------------- commands

def test_probe_each_task_type(user_corpus, tiny_pretrain_checkpoint, tmp_path, capsys):
    cache = tmp_path / "cache"
    for task, kind in TASKS.items():
        out = tmp_path / task
        assert main(["probe", "--checkpoint", str(tiny_pretrain_checkpoint), "--corpus", str(user_corpus.path),
                     "--task", task, "--fractions", "0.5", "1", "--seeds", "0", "1", "--out", str(out),
                     "--cache", str(cache), *FAST]) == 0
        results = json.loads((out / "results.json").read_text())["results"]
        assert len(results) == 3 and {r["task_type"] for r in results} == {kind}  # 1 seed at 100%
        for r in results:
            if kind == "regression":
                assert r["config"]["probe"] == "ridge" and str(r["probe_fit"]["alpha"]) in r["probe_fit"]["val_mae"]
                assert r["auroc"] is None and 0 < r["mae"]["value"] < 40 and -1 <= r["pearson"]["value"] <= 1
                assert r["mae"]["ci95"][0] <= r["mae"]["value"] <= r["mae"]["ci95"][1]
                assert len(r["bootstrap_mae"]) == len(r["bootstrap_pearson"]) == 200
            else:
                assert 0 <= r["auroc"]["macro"] <= 1 and set(r["f1"]["thresholds"]) == set(user_corpus.classes[task])
    assert "age-group: macro AUROC by label fraction" in capsys.readouterr().out
    assert main(["report", str(tmp_path / "age")]) == 0
    md = (tmp_path / "age" / "report.md").read_text()
    assert "## age: MAE (lower is better) by label fraction" in md and "## age: Pearson r by label fraction" in md
    assert (tmp_path / "age" / "plots" / "fractions_age_mae.png").is_file()
    capsys.readouterr()


def test_finetune_and_predict_regression(user_corpus, tiny_pretrain_checkpoint, tmp_path, capsys):
    import crema

    out = tmp_path / "ft"
    assert main(["finetune", "--checkpoint", str(tiny_pretrain_checkpoint), "--corpus", str(user_corpus.path),
                 "--task", "age", "--out", str(out), "--epochs", "1", "--batch-size", "16", "--probe-init",
                 "--device", "cpu", *FAST]) == 0
    assert "test MAE" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    train_ages = task_split(user_corpus, "age").y["train"][:, 0]
    assert config["task_type"] == "regression" and config["classes"] == ["age"] and config["thresholds"] is None
    assert config["target_mean"] == pytest.approx(train_ages.mean(), rel=1e-5)
    assert config["target_std"] == pytest.approx(train_ages.std(), rel=1e-4)

    csv = tmp_path / "pred.csv"
    assert main(["predict", str(out), f"{user_corpus.path}:test", "--out", str(csv), "--device", "cpu"]) == 0
    table = pd.read_csv(csv)
    assert list(table.columns) == ["record_id", "source", "n_windows", "age"]
    assert np.isfinite(table["age"]).all() and table["age"].between(0, 120).all()
    # the API gives the same values, in years: the standardised output scaled back
    model = crema.load(out, device="cpu")  # the precision crema predict uses (auto)
    values = model.predict(f"{user_corpus.path}:test")
    assert list(values.columns) == ["age"] and model.thresholds is None
    assert values["age"].to_numpy() == pytest.approx(table["age"].to_numpy(), abs=1e-3)
    assert abs(values["age"].mean() - config["target_mean"]) < 3 * config["target_std"]


def test_finetune_and_predict_multiclass(user_corpus, tmp_path, capsys):
    out = tmp_path / "ft"
    assert main(["finetune", "--init", "random", "--arch", "resnet1d", "--corpus", str(user_corpus.path),
                 "--task", "age-group", "--out", str(out), "--epochs", "1", "--batch-size", "16",
                 "--device", "cpu", *FAST]) == 0
    capsys.readouterr()
    config = json.loads((out / "config.json").read_text())
    assert config["task_type"] == "multiclass" and len(config["thresholds"]) == 3
    csv = tmp_path / "pred.csv"
    assert main(["predict", str(out), f"{user_corpus.path}:val", "--out", str(csv), "--device", "cpu"]) == 0
    table = pd.read_csv(csv, keep_default_na=False)
    classes = ["under 50", "50 to 69", "70 or over"]
    assert list(table.columns) == ["record_id", "source", "n_windows", *classes, "labels"]
    assert table[classes].to_numpy().min() >= 0 and table[classes].to_numpy().max() <= 1


def test_evaluate_without_a_suite_refuses_what_it_cannot_run(user_corpus, tmp_path, capsys):
    assert main(["evaluate", "--out", str(tmp_path / "a"), "--task", "age"]) == 1
    assert "--corpus DIR (one prepared corpus) and --task NAME" in capsys.readouterr().err
    assert main(["evaluate", "--suite", "s.json", "--out", str(tmp_path / "b"), "--epochs", "2"]) == 1
    assert "--epochs: only without --suite" in capsys.readouterr().err
    assert main(["evaluate", "--corpus", str(user_corpus.path), "--task", "sex", "--out", str(tmp_path / "c")]) == 1
    assert "task 'sex' is not in this corpus" in capsys.readouterr().err
    assert main(["evaluate", "--corpus", str(user_corpus.path), "--task", "age", "--select-c", "cv",
                 "--out", str(tmp_path / "d")]) == 1
    assert "'age' is a regression task" in capsys.readouterr().err and not (tmp_path / "d").exists()


@pytest.mark.parametrize("task, fractions, features", [("age", ["0.5", "1"], "mean"), ("norm-mi", ["1"], "leads")])
def test_evaluate_own_task_end_to_end(user_corpus, tiny_pretrain_checkpoint, tmp_path, capsys, task, fractions,
                                      features):
    out = tmp_path / "run"
    argv = ["evaluate", "--corpus", str(user_corpus.path), "--task", task, "--checkpoint",
            str(tiny_pretrain_checkpoint), "--out", str(out), "--fractions", *fractions, "--seeds", "0",
            "--epochs", "1", "--batch-size", "16", "--kernels", "200", "--device", "cpu", *FAST]
    argv += [] if features == "mean" else ["--features", features, "--select-c", "cv"]  # (its default: mean, val)
    assert main(argv) == 0
    printed = capsys.readouterr().out
    md = (out / "report.md").read_text().splitlines()
    name, label = tiny_pretrain_checkpoint.name, "MAE" if task == "age" else "macro AUROC"
    assert md[2].startswith(f"On {task}, with a linear probe on 100% of the training labels, the pretrained "
                            f"encoder {name} ") and "the training-free random-kernel baseline (" + label in md[2]
    assert md[2] in printed and f"label fractions {', '.join(f'{100 * float(f):g}%' for f in fractions)}" in printed
    text = "\n".join(md)
    assert "minus | difference" in text
    for method in ("random_sit", "random_kernels", "supervised_resnet1d"):
        assert f"| probe | {name} | {method} |" in text or f"| finetune | {name} | {method} |" in text
    assert (out / "report.html").read_text().count(md[2].split(" (")[0]) == 1
    results = json.loads((out / "results.json").read_text())["results"]
    assert {(r["protocol"], r["method"]) for r in results} == {
        ("probe", name), ("probe", "random_sit"), ("probe", "random_kernels"),
        ("finetune", name), ("finetune", "supervised_resnet1d")}
    # every classification probe picks its C as asked (a regression probe is ridge: always on validation)
    if task != "age":
        assert {r["probe_fit"]["selected_by"] for r in results if r["protocol"] == "probe"} == {"cv"}
    # the encoder and the random SiT are probed through the same read-out
    assert {r["config"].get("features", "mean") for r in results
            if r["protocol"] == "probe" and r["method"] != "random_kernels"} == {features}
    plots = sorted(p.name for p in (out / "plots").iterdir())
    assert (plots == ["fractions_age_mae.png", "fractions_age_pearson.png"] if task == "age"
            else plots == ["fractions_norm-mi.png", "per_class_norm-mi.png"])
    if task != "age":
        return
    # a second run resumes: every step is already done and the report is the same
    assert main(argv + ["--resume"]) == 0
    assert "5 already done" in capsys.readouterr().out
    assert (out / "report.md").read_text().splitlines()[2] == md[2]
