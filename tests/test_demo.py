"""`crema demo` end to end on a slice of the embedded real sample (the full demo is `make demo`)."""
import json

from crema.cli import main


def test_demo_runs_every_step_and_prints_the_probe_table(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--steps", "2", "--batch-size", "8", "--records", "120"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "macro AUROC by label fraction" in printed
    assert "crema" in printed and "random_init" in printed
    assert (out / "reconstruction.png").stat().st_size > 10_000
    log = [json.loads(line) for line in (out / "pretrain" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2
    for name in ("crema", "random_init"):
        results = json.loads((out / f"probe-{name}" / "results.json").read_text())["results"]
        assert {r["method"] for r in results} == {name}
        assert all(0.0 <= r["auroc"]["macro"] <= 1.0 for r in results)

    # A second run finds the corpus and the finished pretraining in place and redoes neither.
    report = out / "corpus" / "prepare_report.json"
    weights = out / "pretrain" / "model.safetensors"
    stamps = report.stat().st_mtime_ns, weights.read_bytes()
    assert main(argv) == 0
    assert (report.stat().st_mtime_ns, weights.read_bytes()) == stamps
