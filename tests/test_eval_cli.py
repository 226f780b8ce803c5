"""End to end: `crema probe`, `crema finetune`, `crema evaluate` (tiny suite, then --resume) and
`crema report`, run in-process through the real CLI entry point."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from crema.cli import main
from crema.train.finetune import load_classifier

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TASK = "ptbxl-superdiagnostic"
SUITE_TINY = Path(__file__).resolve().parents[1] / "configs" / "suite-tiny.json"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_probe_command(tiny_pretrain_checkpoint, tiny_ptbxl_corpus, tmp_path, capsys):
    out = tmp_path / "probe"
    code = main(["probe", "--checkpoint", str(tiny_pretrain_checkpoint), "--corpus", str(tiny_ptbxl_corpus.path),
                 "--task", TASK, "--fractions", "0.5", "1", "--seeds", "0", "1", "--out", str(out),
                 "--cache", str(tmp_path / "cache"), "--corruptions", "gaussian_noise", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "macro AUROC by label fraction" in printed and "50% labels" in printed
    data = json.loads((out / "results.json").read_text())
    fractions = [(r["fraction"], r["seed"]) for r in data["results"] if r["experiment"] == "label_fraction"]
    assert fractions == [(0.5, 0), (0.5, 1), (1.0, 0)]
    severities = [r["severity"] for r in data["results"] if r["experiment"] == "corruption"]
    assert severities == [0, 1, 2, 3, 4, 5]
    assert data["data"][str(tiny_ptbxl_corpus.path)]["sha256"] == data["results"][0]["data_sha256"]


def test_probe_command_random_init_and_bad_input(tiny_ptbxl_corpus, tmp_path, capsys):
    out = tmp_path / "random"
    assert main(["probe", "--random-init", "--window", "500", "--corpus", str(tiny_ptbxl_corpus.path), "--task", TASK,
                 "--fractions", "1", "--seeds", "0", "--out", str(out), "--cache", str(tmp_path / "c"),
                 "--no-progress"]) == 0
    (result,) = json.loads((out / "results.json").read_text())["results"]
    assert result["method"] == "random_sit" and result["config"]["init"] == "random"
    assert result["probe_fit"]["selected_by"] == "val" and "select_c" not in result["config"]
    cv = tmp_path / "random-cv"
    assert main(["probe", "--random-init", "--window", "500", "--corpus", str(tiny_ptbxl_corpus.path), "--task", TASK,
                 "--fractions", "1", "--seeds", "0", "--select-c", "cv", "--out", str(cv), "--cache",
                 str(tmp_path / "c"), "--no-progress"]) == 0
    (by_cv,) = json.loads((cv / "results.json").read_text())["results"]
    assert by_cv["probe_fit"]["selected_by"] == "cv" and by_cv["config"]["select_c"] == "cv"
    cv_scores = {float(c): v for c, v in by_cv["probe_fit"]["cv_auroc"].items() if v is not None}
    assert by_cv["probe_fit"]["C"] == max(cv_scores, key=cv_scores.get)
    assert main(["probe", "--random-init", "--window", "500", "--corpus", str(tiny_ptbxl_corpus.path), "--task", TASK,
                 "--head", "linear", "--select-c", "cv", "--out", str(tmp_path / "lin"), "--cache",
                 str(tmp_path / "c"), "--no-progress"]) == 1
    assert "--select-c cv is for the logistic probe" in capsys.readouterr().err
    assert main(["probe", "--random-init", "--corpus", str(tiny_ptbxl_corpus.path), "--task", "nope",
                 "--out", str(tmp_path / "x"), "--no-progress"]) == 1
    assert "task 'nope' is not in this corpus" in capsys.readouterr().err


def test_probe_random_init_like_a_checkpoint(tiny_pretrain_checkpoint, tiny_ptbxl_corpus, tmp_path, capsys):
    """--like: the checkpoint's architecture and read-out with fresh weights (not its weights)."""
    like = json.loads((tiny_pretrain_checkpoint / "config.json").read_text())
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "model.safetensors").write_bytes((tiny_pretrain_checkpoint / "model.safetensors").read_bytes())
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({**like, "embedding": {"features": "leads"}}))
    common = ["--corpus", str(tiny_ptbxl_corpus.path), "--task", TASK, "--fractions", "1", "--seeds", "0",
              "--cache", str(tmp_path / "c"), "--no-progress"]
    assert main(["probe", "--random-init", "--like", str(tmp_path / "ckpt"), *common, "--out", str(tmp_path / "r")]) == 0
    (result,) = json.loads((tmp_path / "r" / "results.json").read_text())["results"]
    assert result["method"] == "random_sit" and result["config"]["like"] == str(tmp_path / "ckpt")
    assert result["config"]["features"] == "leads" and result["config"]["size"] == like["model"]["size"]
    assert main(["probe", "--checkpoint", str(tmp_path / "ckpt"), *common, "--out", str(tmp_path / "p")]) == 0
    (trained,) = json.loads((tmp_path / "p" / "results.json").read_text())["results"]
    assert result["config"]["weights_sha256"] != trained["config"]["weights_sha256"]  # new weights
    assert main(["probe", "--checkpoint", str(tmp_path / "ckpt"), "--like", str(tmp_path / "ckpt"), *common]) == 1
    assert "--like goes with --random-init" in capsys.readouterr().err
    assert main(["probe", "--random-init", "--like", str(tmp_path / "nothing"), *common]) == 1
    assert "nothing" in capsys.readouterr().err


def test_finetune_command(tiny_ptbxl_corpus, tmp_path, capsys):
    out = tmp_path / "resnet"
    code = main(["finetune", "--init", "random", "--arch", "resnet1d", "--corpus", str(tiny_ptbxl_corpus.path),
                 "--task", TASK, "--out", str(out), "--epochs", "2", "--batch-size", "16", "--seed", "3",
                 "--augment", "noise=0.05", "scale=0.1", "--no-progress"])
    assert code == 0
    assert "test macro AUROC" in capsys.readouterr().out
    model, config = load_classifier(out)
    assert config["finetune"]["augment"]["noise"] == 0.05 and config["finetune"]["seed"] == 3
    assert main(["finetune", "--init", "random", "--corpus", str(tiny_ptbxl_corpus.path), "--task", TASK,
                 "--out", str(tmp_path / "bad"), "--augment", "fog=1", "--no-progress"]) == 1
    assert "--augment" in capsys.readouterr().err


def test_evaluate_resume_and_report(tiny_ptbxl_corpus, unlabeled_corpus, tiny_cinc_corpus, tmp_path, capsys):
    """The tiny suite with two pretraining seeds: every step runs, resumes, and reports paired differences."""
    out = tmp_path / "suite"
    corpora = ["--corpus", f"ptbxl={tiny_ptbxl_corpus.path}", "--corpus", f"unlabeled={unlabeled_corpus.path}",
               "--corpus", f"cinc={tiny_cinc_corpus.path}"]
    suite = tmp_path / "suite-tiny-2-seeds.json"
    suite.write_text(json.dumps({**json.loads(SUITE_TINY.read_text()), "pretrain_seeds": [0, 1]}))
    assert main(["evaluate", "--suite", str(suite), "--out", str(out), *corpora, "--no-progress"]) == 0
    first = capsys.readouterr().out
    data = json.loads((out / "results.json").read_text())
    steps = data["steps"]
    assert steps and all(s["status"] == "done" for s in steps), [s for s in steps if s["status"] != "done"]
    assert f"{len(steps)} ran" in first

    results = data["results"]
    methods = {(r["method"], r["protocol"]) for r in results if r["experiment"] == "label_fraction"}
    assert methods == {("crema", "probe"), ("mae", "probe"), ("contrastive", "probe"), ("random_sit", "probe"),
                       ("crema", "finetune"), ("mae", "finetune"), ("contrastive", "finetune"),
                       ("supervised_sit", "finetune"), ("supervised_resnet1d", "finetune")}
    assert {r["holdout_source"] for r in results if r["experiment"] == "leave_source_out"} == {"cpsc2018-extra",
                                                                                               "georgia"}
    assert {r["severity"] for r in results if r["experiment"] == "corruption"} == {0, 1, 3, 5}
    for r in results:
        assert len(r["data_sha256"]) == 64 and r["config"]["suite"] == "tiny" and isinstance(r["seed"], int)
    # every method pretrained to the configured number of steps, each from its own objective, once
    # per pretraining seed (seed 0 keeps the folder and step names of a one-seed suite)
    for method, mode in (("crema", "crema"), ("mae", "mae"), ("contrastive", "contrastive")):
        for folder, seed in ((method, 0), (f"{method}@seed1", 1)):
            ckpt = json.loads((out / "pretrain" / folder / "config.json").read_text())
            assert ckpt["step"] == 6 and ckpt["objective"]["mode"] == mode and ckpt["train"]["seed"] == seed
    weights = {json.loads((out / "steps" / "pretrain" / f"{name}.json").read_text())["weights_sha256"]
               for name in ("crema", "crema@seed1")}
    assert len(weights) == 2
    probe_seeds = {(r["method"], r["pretrain_seed"]) for r in results
                   if r["protocol"] == "probe" and r["experiment"] == "label_fraction"}
    assert probe_seeds == {(m, s) for m in ("crema", "mae", "contrastive", "random_sit") for s in (0, 1)}
    assert {r["pretrain_seed"] for r in results if r["method"] == "supervised_sit"} == {None}

    # --resume runs nothing the second time; without it the folder is refused
    stamp = (out / "steps").stat().st_mtime_ns, sorted(p.stat().st_mtime_ns for p in (out / "steps").rglob("*.json"))
    assert main(["evaluate", "--suite", str(suite), "--out", str(out), *corpora, "--resume", "--no-progress"]) == 0
    assert f"0 ran, {len(steps)} already done" in capsys.readouterr().out
    assert sorted(p.stat().st_mtime_ns for p in (out / "steps").rglob("*.json")) == stamp[1]
    assert main(["evaluate", "--suite", str(suite), "--out", str(out), *corpora, "--no-progress"]) == 1
    assert "--resume" in capsys.readouterr().err
    # a pretraining step whose record is lost resumes from its checkpoint instead of starting over
    record = json.loads((out / "steps" / "pretrain" / "mae.json").read_text())
    (out / "steps" / "pretrain" / "mae.json").unlink()
    assert main(["evaluate", "--suite", str(suite), "--out", str(out), *corpora, "--resume", "--no-progress"]) == 0
    assert f"1 ran, {len(steps) - 1} already done" in capsys.readouterr().out
    again = json.loads((out / "steps" / "pretrain" / "mae.json").read_text())
    assert again["resumed"] and again["pretrain_step"] == 6 and again["weights_sha256"] == record["weights_sha256"]

    # --reference pairs every method against a further one (here contrastive-only), once
    assert main(["report", str(out), "--reference", "nothing-by-that-name"]) == 1
    assert "no results of nothing-by-that-name" in capsys.readouterr().err
    assert main(["report", str(out), "--reference", "contrastive"]) == 0
    capsys.readouterr()
    minus = {(d["method"], d["minus"]) for d in json.loads((out / "paired.json").read_text())}
    assert ("crema", "contrastive") in minus and ("mae", "contrastive") in minus
    assert main(["report", str(out)]) == 0
    assert "macro AUROC by label fraction" in capsys.readouterr().out
    assert "contrastive" not in {d["minus"] for d in json.loads((out / "paired.json").read_text())}
    md = (out / "report.md").read_text()
    for heading in ("ptbxl-superdiagnostic: macro AUROC by label fraction",
                    "cinc-scored: macro AUROC on each held-out source",
                    "ptbxl-superdiagnostic: macro AUROC by corruption severity (0 = clean)"):
        assert f"## {heading}" in md
    assert "![ptbxl-superdiagnostic: AUROC vs label fraction](plots/fractions_ptbxl-superdiagnostic.png)" in md
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and "<style>" in html and "<script" not in html
    for name in ("fractions_ptbxl-superdiagnostic", "per_class_ptbxl-superdiagnostic", "sources_cinc-scored",
                 "corruptions_ptbxl-superdiagnostic"):
        assert (out / "plots" / f"{name}.png").read_bytes()[:8] == PNG_MAGIC
    summary = json.loads((out / "summary.json").read_text())
    row = next(s for s in summary if s["method"] == "crema" and s["protocol"] == "finetune"
               and s["experiment"] == "label_fraction")
    assert row["seeds"] == [0, 1] and row["auroc_ci95"][0] <= row["auroc_mean"] <= row["auroc_ci95"][1]
    assert row["pretrain_seeds"] == [0, 1]
    # paired differences: CREMA minus MAE and minus random init, on both pretraining seeds
    paired = json.loads((out / "paired.json").read_text())
    for reference in ("mae", "random_sit"):
        d = next(d for d in paired if d["method"] == "crema" and d["minus"] == reference and d["fraction"] == 1.0
                 and d["protocol"] == "probe" and d["task"] == TASK)
        assert set(d["per_pretrain_seed"]) == {"0", "1"} and d["n_pairs"] == 2
        assert d["ci95"][0] <= d["difference"] <= d["ci95"][1]
    assert any(d["minus"] == "supervised_sit" and d["protocol"] == "finetune" for d in paired)
    assert f"## {TASK}: paired differences in macro AUROC" in md


def test_evaluate_rejects_bad_configs(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"tasks": [{"corpus": "p", "task": "t"}], "corpora": {"p": "x"}, "method": {}}))
    assert main(["evaluate", "--suite", str(bad), "--out", str(tmp_path / "o")]) == 1
    assert "bad.json: SuiteConfig: unknown config keys ['method']" in capsys.readouterr().err
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({"methods": {}, "tasks": [{"corpus": "p", "task": "t"}]}))
    assert main(["evaluate", "--suite", str(missing), "--out", str(tmp_path / "o")]) == 1
    assert "corpus 'p' is used but not defined" in capsys.readouterr().err
    assert main(["report", str(tmp_path)]) == 1
    assert "no results.json" in capsys.readouterr().err
