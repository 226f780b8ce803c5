"""``crema prepare`` resumes an interrupted run: finished chunks are not read again and the corpus
is byte-for-byte the one an uninterrupted run writes. Real records: the PTB-XL sample shipped in
the package (100 Hz)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crema.data import prepare as prepare_module
from crema.data.corpus import CORPUS_FILES, Corpus
from crema.data.prepare import prepare_corpus
from crema.data.prepare_progress import PROGRESS_FILE, PartialBuild, partial_folder
from crema.errors import CremaError
from crema.paths import sample_root

LIMIT = 120   # records; one worker makes chunks of 15 (8 chunks)
SAME_BYTES = [name for name in CORPUS_FILES if name != "prepare_report.json"]
SRC = Path(__file__).resolve().parents[1] / "src"

# Each chunk is slowed down after it is processed, so that the test can kill the run between
# two chunks whatever the machine's speed.
_SLOW_PREPARE = """
import sys, time
import crema.data.prepare as p
real = p.process_chunk
def slow(*args):
    results = real(*args)
    time.sleep(0.5)
    return results
p.process_chunk = slow
p.prepare_corpus(sys.argv[1], sys.argv[2], workers=1, limit=int(sys.argv[3]), progress=False)
"""


def _markers(out: Path) -> list[Path]:
    return sorted((partial_folder(out) / "chunks").glob("chunk_*.json"))


def _kill_after_first_chunk(out: Path) -> int:
    """Start a prepare of the sample in a subprocess, SIGKILL it once its first chunk is recorded;
    returns the number of chunks it recorded."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_PREPARE, str(sample_root()), str(out), str(LIMIT)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not _markers(out):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.time() < deadline, "no chunk recorded in time"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return len(_markers(out))


def _count_reads(monkeypatch) -> list[str]:
    """Record the keys of the records that ``process_chunk`` reads (one worker: in this process)."""
    keys: list[str] = []
    real = prepare_module.process_chunk

    def counting(jobs, cfg, path):
        keys.extend(job.key for job in jobs)
        return real(jobs, cfg, path)

    monkeypatch.setattr(prepare_module, "process_chunk", counting)
    return keys


def _same_corpus(a: Path, b: Path) -> None:
    for name in SAME_BYTES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    """The corpus of the first LIMIT sample records, prepared in one go with two workers (other
    chunk boundaries than one worker's)."""
    out = tmp_path_factory.mktemp("whole") / "c"
    prepare_corpus(sample_root(), out, workers=2, limit=LIMIT, progress=False)
    return out


def test_prepare_killed_after_a_chunk_resumes_without_redoing_it(tmp_path, monkeypatch, uninterrupted):
    out = tmp_path / "c"
    recorded = _kill_after_first_chunk(out)
    assert not out.exists() and 1 <= recorded < 8          # killed mid-run
    first = json.loads(_markers(out)[0].read_text())
    assert first["records"] == 15
    reads = _count_reads(monkeypatch)
    report = prepare_corpus(sample_root(), out, workers=1, limit=LIMIT, progress=False)
    assert report["records_resumed"] == 15 * recorded
    assert len(reads) == LIMIT - 15 * recorded              # finished chunks were not read again
    assert not any(key.endswith(("00001_lr.hea", "00015_lr.hea")) for key in reads)
    assert report["records_read"] == LIMIT and not partial_folder(out).exists()
    _same_corpus(out, uninterrupted)
    assert len(Corpus(out)) == LIMIT


def test_a_run_with_other_settings_starts_over(tmp_path, monkeypatch):
    out = tmp_path / "c"
    assert _kill_after_first_chunk(out) >= 1
    reads = _count_reads(monkeypatch)
    report = prepare_corpus(sample_root(), out, workers=1, limit=LIMIT // 2, progress=False)
    assert report["records_resumed"] == 0 and len(reads) == LIMIT // 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_interrupted_while_assembling_resumes_the_copy(tmp_path, monkeypatch, uninterrupted):
    out = tmp_path / "c"
    real = PartialBuild.set_assembled

    def interrupt_after_three(self, chunks):
        real(self, chunks)
        if chunks == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(PartialBuild, "set_assembled", interrupt_after_three)
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus(sample_root(), out, workers=1, limit=LIMIT, progress=False)
    partial = partial_folder(out)
    assert (partial / PROGRESS_FILE).is_file() and not out.exists()   # Ctrl-C keeps the progress
    assert not (partial / "chunks" / "chunk_000000.npy").exists()     # copied chunks are deleted
    monkeypatch.setattr(PartialBuild, "set_assembled", real)
    reads = _count_reads(monkeypatch)
    report = prepare_corpus(sample_root(), out, workers=1, limit=LIMIT, progress=False)
    assert reads == [] and report["records_resumed"] == LIMIT
    _same_corpus(out, uninterrupted)


def test_a_failure_that_is_not_an_interruption_removes_the_partial_folder(tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(prepare_module, "_assemble_index", broken)
    with pytest.raises(RuntimeError):
        prepare_corpus(sample_root(), tmp_path / "c", workers=1, limit=20, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_every_record_failing_is_one_error_and_leaves_nothing(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        (folder / f"bad{i}.csv").write_text("I,II\n1,2\n")   # far too short to make a window
    with pytest.raises(CremaError, match="no record could be prepared"):
        prepare_corpus(folder, tmp_path / "c", workers=1, input_fs=500, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_stopped_just_before_the_rename_finishes_without_reading(tmp_path, monkeypatch, uninterrupted):
    from crema.data import prepare_progress

    out = tmp_path / "c"

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_progress, "replace_directory", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_corpus(sample_root(), out, workers=1, limit=LIMIT, progress=False)
    monkeypatch.undo()
    reads = _count_reads(monkeypatch)
    prepare_corpus(sample_root(), out, workers=1, limit=LIMIT, progress=False)
    assert reads == [] and not partial_folder(out).exists()
    _same_corpus(out, uninterrupted)


def test_damaged_progress_starts_over(tmp_path, monkeypatch):
    out = tmp_path / "c"
    assert _kill_after_first_chunk(out) >= 1
    progress = partial_folder(out) / PROGRESS_FILE
    progress.write_text(progress.read_text().replace('"chunk_size": 15', '"chunk_size": "many"'))
    reads = _count_reads(monkeypatch)
    report = prepare_corpus(sample_root(), out, workers=1, limit=LIMIT, progress=False)
    assert report["records_resumed"] == 0 and len(reads) == LIMIT
