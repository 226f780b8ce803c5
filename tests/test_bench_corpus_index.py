"""``benchmarks/corpus_index.py``: its synthetic corpus opens as a corpus with the shape it
declares, and the table in docs/BENCHMARKS.md is what ``--render`` makes of the committed JSON.
No timing is checked here."""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

from crema.data.corpus import Corpus
from crema.data.corpus_index import INDEX_NPZ

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    return importlib.import_module("corpus_index")  # benchmarks/ is on pytest's pythonpath


def test_synthetic_corpus_is_a_corpus(bench, tmp_path):
    bench.make_corpus(tmp_path / "c", 2_000)
    corpus = Corpus(tmp_path / "c")
    assert len(corpus) == 2_000 and corpus.signals.shape == (2_000, 12, corpus.window)
    assert (tmp_path / "c" / INDEX_NPZ).is_file() and corpus.columns.path is not None
    assert (tmp_path / "c" / "signals.npy").stat().st_blocks * 512 < 1 << 20   # sparse: no windows written
    assert len(corpus.tasks) == 6 and 0 < len(corpus.rows("train")) < 2_000
    y, _, has = corpus.labels(bench.TASK)
    assert has.any() and (y[has].sum(axis=1) >= 1).all()
    assert "records     1000 " in corpus.summary()


def test_benchmarks_page_shows_the_committed_run(bench, tmp_path):
    result = json.loads((ROOT / "results" / "bench" / "corpus-index.json").read_text())
    text = (ROOT / "docs" / "BENCHMARKS.md").read_text()
    block = text[text.index(bench.DOC_START) + len(bench.DOC_START):text.index(bench.DOC_END)]
    assert block == "\n" + bench.markdown(result)
    assert "/tmp" not in json.dumps(result)        # no temporary folder names kept
    page = tmp_path / "page.md"
    page.write_text(f"{bench.DOC_START}\nstale\n{bench.DOC_END}\n")
    bench.write_doc(page, bench.markdown(result), (bench.DOC_START, bench.DOC_END))
    assert "stale" not in page.read_text() and "| index.npz: all four |" in page.read_text()
    np.testing.assert_equal(result["rows"], 10**6)


def test_pretrain_open_step_and_its_table(bench, tmp_path):
    """The pretraining-set child on a small synthetic corpus (no DataFrame built, every window
    served), and the page's pretrain-open table is what --render makes of the committed JSON."""
    bench.make_corpus(tmp_path / "c", 2_000)
    run = bench.run_child(bench._PRETRAIN, str(tmp_path / "c"))
    assert run["items"] == 2_000 and not run["frame_built"] and 0 < run["patients"] <= 1_000
    result = json.loads((ROOT / "results" / "bench" / "pretrain-open.json").read_text())
    before = json.loads((ROOT / "results" / "bench" / "pretrain-open-before.json").read_text())
    start, end = bench.PRETRAIN_MARKERS
    text = (ROOT / "docs" / "BENCHMARKS.md").read_text()
    assert text[text.index(start) + len(start):text.index(end)] == "\n" + bench.pretrain_markdown(result, before)
    assert result["runs"][0]["digest"] == before["runs"][0]["digest"] and "crema" not in result["runs"][0]  # no local folder kept
