"""`crema demo` end to end on a slice of the embedded real sample (the full demo is `make demo`)."""
import json

import numpy as np

import crema
from crema.cli import main
from crema.demo import SHIPPED
from crema.paths import sample_root


def _probe_results(out, name):
    results = json.loads((out / f"probe-{name}" / "results.json").read_text())["results"]
    assert {r["method"] for r in results} == {name}
    assert {r["fraction"] for r in results} == {0.1, 1.0}
    assert all(0.0 <= r["auroc"]["macro"] <= 1.0 for r in results)
    return results


def test_demo_starts_from_the_shipped_model(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--records", "120"]) == 0
    printed = capsys.readouterr().out
    assert "macro AUROC by label fraction" in printed and f"crema = {SHIPPED}" in printed
    # the demo's embeddings are the shipped model's, record for record
    records = sorted((sample_root() / "records100" / "00000").glob("*.hea"))[:8]
    expected = crema.load(SHIPPED, device="cpu").embed(records)
    assert np.allclose(np.load(out / "embeddings.npy"), expected, atol=1e-5)
    for image in ("ecg.png", "reconstruction.png"):
        assert (out / image).stat().st_size > 10_000
    for name in ("crema", "random_init"):
        _probe_results(out, name)
    assert not (out / "pretrain").exists()  # nothing was pretrained


def test_demo_pretrain_path_and_rerun(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--pretrain", "--out", str(out), "--steps", "2", "--batch-size", "8", "--records", "120"]
    assert main(argv) == 0
    assert "random_init" in capsys.readouterr().out
    log = [json.loads(line) for line in (out / "pretrain" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2
    _probe_results(out, "crema")

    # A second run finds the corpus and the finished pretraining in place and redoes neither.
    report = out / "corpus" / "prepare_report.json"
    weights = out / "pretrain" / "model.safetensors"
    stamps = report.stat().st_mtime_ns, weights.read_bytes()
    assert main(argv) == 0
    assert (report.stat().st_mtime_ns, weights.read_bytes()) == stamps
