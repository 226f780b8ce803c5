"""benchmarks/dataset_throughput.py: the corpus it builds, its targets and its table."""
from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    return importlib.import_module("dataset_throughput")  # benchmarks/ is on pytest's pythonpath


def test_built_corpus_tiles_real_windows(bench, tmp_path, unlabeled_stack):
    from crema.data.corpus import Corpus

    path, _ = bench.build_corpus(tmp_path, windows=40, base_records=16)
    corpus = Corpus(path)
    assert len(corpus) == 40 and corpus.signals.dtype == np.float16
    np.testing.assert_array_equal(corpus.signals[35], corpus.signals[3])  # row 35 is copy 2 of row 3
    assert corpus.index["source_id"].nunique() == 40  # every copy its own record
    assert not (tmp_path / "base").exists()
    check = bench.eviction_check(path / "signals.npy", 40, seed=0)
    assert set(check) == {"cold_ms", "warm_ms", "evicts"}


def _row(name, mode, cache, workers, rate):
    return {"name": name, "mode": mode, "cache": cache, "workers": workers, "windows_per_s": rate,
            "windows_per_cpu_s": rate * 1.5, "ratio_vs_memmap": rate / 1000}


def test_targets_and_table(bench, tmp_path):
    rows = [_row("memmap", "reference", "warm", 0, 1000), _row("memmap", "reference", "cold", 0, 400),
            _row("batches", "crop_augment", "warm", 0, 9000), _row("batches", "crop_augment", "warm", 1, 5000),
            _row("batches", "crop_augment", "warm", 2, 7000)]
    targets = bench.targets(rows)
    assert [t["met"] for t in targets] == [True, True, False]  # windows/s, per CPU-s, 2 vs 1 workers
    assert targets[2]["measured"] == 1.4
    rows.append(_row("items", "crop_augment", "warm", 0, 2000))
    assert [(t["measured"], t["met"]) for t in bench.targets(rows)][2] == (4.5, False)
    result = {"command": "benchmarks/dataset_throughput.py --windows 100", "date": "2026-01-01T00:00:00",
              "windows": 100, "window_samples": 2500, "corpus_gb": 0.01, "batch_size": 64, "batches": 2,
              "repeats": 1, "crop": 1000, "augment": {"scale": 0.1, "noise": 0.0}, "cpu_count": 2,
              "memory_gb": 8, "torch": "2", "kernel": "6", "glibc_tunables": "x",
              "eviction_check": {"cold_ms": 9.0, "warm_ms": 1.0}, "load_average_1min": {"start": 1.0, "end": 2.0},
              "busy_processes": {"start": [], "end": []}, "note": "Nothing else ran.", "rows": rows,
              "targets": targets}
    table = bench.markdown(result)
    assert "| `ECGWindows` batches, crop + augment | 0 | 9,000 | 9.00 | 13,500 | - | - | - |" in table
    assert ("| memmap rows -> float32 numpy, one by one (reference) | 0 | 1,000 | 1.00 | 1,500 | 400 | 0.40 | 600 |"
            in table)
    assert "| 1.40x | **no** |" in table and "Nothing else ran." in table
    assert bench.short_command("50% /x/.venv/bin/python -m pytest /x/tests/a.py") == "50% python -m pytest a.py"
    doc = tmp_path / "doc.md"
    doc.write_text(f"a\n{bench.DOC_START}\nold\n{bench.DOC_END}\nb\n")
    bench.write_doc(doc, table, (bench.DOC_START, bench.DOC_END))
    assert doc.read_text() == f"a\n{bench.DOC_START}\n{table}{bench.DOC_END}\nb\n"


def test_the_doc_table_is_the_committed_json(bench):
    import json

    result = json.loads((ROOT / "results" / "bench" / "dataset-throughput.json").read_text())
    result["targets"] = bench.targets(result["rows"])
    doc = (ROOT / "docs" / "BENCHMARKS.md").read_text()
    start = doc.index(bench.DOC_START) + len(bench.DOC_START)
    assert doc[start:doc.index(bench.DOC_END)] == "\n" + bench.markdown(result)
