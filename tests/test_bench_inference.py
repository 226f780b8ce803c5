"""benchmarks/inference_throughput.py --small-model: one short run of the shipped model writes its
JSON and table between the markers, the speed-up column compares with a baseline run, and the
table in docs/BENCHMARKS.md is the committed JSON's."""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    return importlib.import_module("inference_throughput")  # benchmarks/ is on pytest's pythonpath


def test_small_model_run_writes_json_and_table(bench, tmp_path, one_torch_thread):
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{bench.SMALL_DOC[0]}\nold\n{bench.SMALL_DOC[1]}\nafter\n")
    out = tmp_path / "small.json"
    assert bench.main(["--small-model", "crema-mini-ecg12", "--latency-runs", "2", "--out", str(out),
                       "--doc", str(doc)]) == 0
    result = json.loads(out.read_text())
    rows = result["threads"]["1"]
    assert list(rows) == ["reference matmul", "encode 1 window", "embed(Recording)", "embed(file)", "embed(8 files)"]
    assert rows["reference matmul"]["vs_matmul"] == 1.0 and all(r["wall_ms"] > 0 for r in rows.values())
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text
    assert "| 1 | encode 1 window |" in text
    # against a baseline whose every CPU ratio is twice this run's: a speed-up of 2.00x per row
    slower = json.loads(out.read_text())
    for row in slower["threads"]["1"].values():
        row["cpu_vs_matmul"] *= 2
    table = bench.small_model_table(result, slower)
    assert table.count("| 2.00x |") == len(rows)


def test_the_committed_table_is_the_committed_json(bench):
    results = ROOT / "results" / "bench"
    table = bench.small_model_table(json.loads((results / "small-model-latency.json").read_text()),
                                    json.loads((results / "small-model-latency-before.json").read_text()))
    doc = (ROOT / "docs" / "BENCHMARKS.md").read_text()
    start, end = bench.SMALL_DOC
    assert doc[doc.index(start) + len(start):doc.index(end)].strip() == table.strip()
