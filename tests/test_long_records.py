"""Long records read and preprocessed a span at a time (crema.data.spans, crema.data.stream): the same
windows as the whole-record path, through the API and crema embed, in flat memory; formats that
cannot seek are bounded by CREMA_MAX_RECORD_BYTES. Long records are real PTB-XL records tiled
(benchmarks/embed_throughput.py's tile_wfdb)."""
from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import crema
from crema.config import PreprocessConfig
from crema.data import formats
from crema.data.formats.wfdb import read_wfdb
from crema.data.preprocess import preprocess_recording
from crema.data.readers import read_record
from crema.data.recording import Recording
from crema.data.spans import EdfSpans, NpySpans, RecordingSpans, SpanReader, WfdbSpans, open_record
from crema.data.stream import StreamedRecord, stream_windows
from crema.errors import PreprocessError
from crema.limits import LimitError

ROOT = Path(__file__).resolve().parents[1]
# streamed windows vs the whole record's: float32 rounding (measured up to 3e-8 on these records)
TOLERANCE = 1e-6

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tile_wfdb():
    return importlib.import_module("embed_throughput").tile_wfdb  # benchmarks/ is on pytest's pythonpath


tile_wfdb = _tile_wfdb()


@pytest.fixture(scope="module")
def long_hea(ptbxl_headers, tmp_path_factory) -> Path:
    """20 minutes of PTB-XL record 1 (500 Hz with the shared data, else 100 Hz), WFDB format 16."""
    return tile_wfdb(ptbxl_headers[0], tmp_path_factory.mktemp("long"), "long", 20 * 60)


@pytest.fixture(scope="module")
def whole(long_hea):
    """The long record read whole and its windows made the whole-record way."""
    rec = read_record(long_hea)
    return rec, preprocess_recording(rec, PreprocessConfig())


def _streamed(spans: SpanReader, cfg: PreprocessConfig = PreprocessConfig(), **kwargs):
    mask, pieces = stream_windows(spans, cfg, **kwargs)
    pieces = list(pieces)
    return mask, np.concatenate([p.signals for p in pieces]), np.concatenate([p.starts for p in pieces])


def test_a_long_file_is_opened_in_spans_that_read_what_the_whole_read_holds(long_hea, whole, ptbxl_headers,
                                                                           monkeypatch):
    rec, _ = whole
    spans = open_record(long_hea)
    assert isinstance(spans, WfdbSpans) and spans.n_samples == rec.signal.shape[1] and spans.fs == rec.fs
    assert spans.leads == rec.leads and spans.record_id == "long"
    assert isinstance(open_record(ptbxl_headers[0]), Recording)  # 10 s: read whole
    n = spans.n_samples
    for start, stop in [(0, 1000), (12_345, 56_789), (n - 777, n), (n - 5, n + 50)]:
        assert np.array_equal(spans.read(start, stop), rec.signal[:, start:stop]), (start, stop)
    monkeypatch.setenv("CREMA_WFDB_READER", "wfdb")  # wfdb.rdrecord(sampfrom, sampto): the same values
    assert np.array_equal(spans.read(12_345, 23_456), rec.signal[:, 12_345:23_456])


@pytest.mark.parametrize("n_leads", [12, 3])
def test_format_212_spans_at_every_offset(ptbxl_headers, tmp_path, n_leads):
    """Format 212 packs two samples in three bytes: a span may start in the middle of a pair (an
    odd sample count before it with 3 leads)."""
    import wfdb

    rec = read_record(ptbxl_headers[1])
    signal = rec.signal[:n_leads].T.astype(np.float64)
    wfdb.wrsamp("r212", fs=rec.fs, units=["mV"] * n_leads, sig_name=list(rec.leads[:n_leads]), p_signal=signal,
                fmt=["212"] * n_leads, write_dir=str(tmp_path))
    full = read_wfdb(tmp_path / "r212.hea").signal
    for start, stop in [(0, 7), (1, 100), (333, 334), (999, full.shape[1])]:
        assert np.array_equal(read_wfdb(tmp_path / "r212.hea", start, stop).signal, full[:, start:stop])


@pytest.mark.parametrize("layout", ["leads-first", "time-first", "fortran"])
def test_npy_spans_seek_to_the_same_values(whole, tmp_path, layout):
    rec, _ = whole
    signal = rec.signal[:, :300_000] if rec.fs >= 500 else rec.signal
    array = {"leads-first": signal, "time-first": signal.T.copy(), "fortran": np.asfortranarray(signal)}[layout]
    np.save(tmp_path / "long.npy", array.astype(np.float64))
    spans = open_record(tmp_path / "long.npy", fs=rec.fs)
    assert isinstance(spans, NpySpans) and spans.n_samples == signal.shape[1]
    assert np.array_equal(spans.read(1234, 98_765), signal[:, 1234:98_765])
    assert np.array_equal(spans.read(0, spans.n_samples), read_record(tmp_path / "long.npy", fs=rec.fs).signal)


def test_edf_spans_read_what_the_whole_read_holds(whole, tmp_path):
    """A long EDF (a Holter's usual format) is read in spans too: the same samples, the same windows."""
    rec, expected = whole
    formats.write_edf(rec, tmp_path / "long.edf")
    spans = open_record(tmp_path / "long.edf")
    edf = read_record(tmp_path / "long.edf")
    assert isinstance(spans, EdfSpans) and spans.n_samples == rec.signal.shape[1] and spans.leads == edf.leads
    n = spans.n_samples
    for start, stop in [(0, 5000), (45_678, 123_456), (n - 99, n)]:
        assert np.array_equal(spans.read(start, stop), edf.signal[:, start:stop]), (start, stop)
    mask, signals, starts = _streamed(spans)
    whole_edf = preprocess_recording(edf, PreprocessConfig())
    assert np.array_equal(starts, whole_edf.starts) and np.abs(signals - whole_edf.signals).max() < TOLERANCE


def test_streamed_windows_equal_the_whole_record_windows(long_hea, whole):
    rec, expected = whole
    mask, signals, starts = _streamed(open_record(long_hea))
    assert np.array_equal(starts, expected.starts) and np.array_equal(mask, expected.lead_mask)
    assert len(starts) == 120 and signals.shape == expected.signals.shape
    assert np.abs(signals - expected.signals).max() < TOLERANCE  # the first and last windows included
    # other settings: notch, overlapping windows, another rate (so other resampling ratios), short chunks
    cfg = PreprocessConfig(fs=360.0, notch_hz=50.0, stride_s=7.0)
    expected = preprocess_recording(rec, cfg)
    mask, signals, starts = _streamed(RecordingSpans(rec), cfg, chunk_s=100.0)
    assert np.array_equal(starts, expected.starts) and np.abs(signals - expected.signals).max() < TOLERANCE


def test_a_flat_lead_and_bad_samples_in_a_long_record(whole):
    rec, _ = whole
    signal = rec.signal.copy()
    signal[4] = 0.25  # a disconnected electrode: absent, as in the whole-record path
    flat = Recording(signal, rec.fs, rec.leads, "flat")
    mask, signals, _ = _streamed(RecordingSpans(flat))
    expected = preprocess_recording(flat, PreprocessConfig())
    assert not mask[4] and np.array_equal(mask, expected.lead_mask)
    assert np.abs(signals - expected.signals).max() < TOLERANCE
    signal[2, signal.shape[1] // 2] = np.nan
    record = StreamedRecord(RecordingSpans(Recording(signal, rec.fs, rec.leads, "nan")), PreprocessConfig())
    with pytest.raises(PreprocessError, match="record nan: the signal contains NaN"):
        [record.stats(k) for k in range(record.n_chunks)]


def test_api_and_cli_embed_a_long_record_as_its_whole_windows(tiny_pretrain_checkpoint, long_hea, whole, tmp_path):
    from crema.cli import main

    _, expected = whole
    model = crema.load(tiny_pretrain_checkpoint, device="cpu", precision="fp32")
    result = model.embed_records(long_hea, workers=2)
    reference = model.encode_windows(expected.signals, np.repeat(expected.lead_mask[None], len(expected), 0))
    assert result.embeddings.shape == reference.shape and np.allclose(result.embeddings, reference, atol=1e-5)
    assert result.index["start_s"].tolist() == [10.0 * i for i in range(120)]
    assert main(["embed", str(tiny_pretrain_checkpoint), str(long_hea), "--out", str(tmp_path / "e"),
                 "--no-progress", "--per-window", "--workers", "2"]) == 0
    auto = crema.load(tiny_pretrain_checkpoint, device="cpu")  # the CLI's precision (bf16 where fast)
    reference = auto.encode_windows(expected.signals, np.repeat(expected.lead_mask[None], len(expected), 0))
    cli = np.load(tmp_path / "e.npy")
    assert cli.shape == reference.shape and np.allclose(cli, reference, atol=1e-5)


def test_a_record_over_the_memory_bound_is_streamed_or_refused(tiny_pretrain_checkpoint, long_hea, whole,
                                                              ptbxl_headers, tmp_path, monkeypatch):
    """Over CREMA_MAX_RECORD_BYTES a WFDB record is read in spans that fit the bound, whatever its
    length; a format that cannot seek (HL7 aECG XML here) is refused with one clear error naming the
    setting."""
    rec, expected = whole
    bound = rec.signal.nbytes // 8
    monkeypatch.setenv("CREMA_MAX_RECORD_BYTES", str(bound))
    monkeypatch.setenv("CREMA_STREAM_AFTER_S", str(10**6))  # streamed for its size, not its length
    spans = open_record(long_hea)
    assert isinstance(spans, WfdbSpans)
    record = StreamedRecord(spans, PreprocessConfig())
    assert record.n_chunks > 8 and (record.chunk + 2 * record.margin) * rec.fs / 250 * 12 * 4 < bound
    mask, signals, _ = _streamed(spans)
    assert np.abs(signals - expected.signals).max() < TOLERANCE
    short = read_record(ptbxl_headers[2])
    formats.write_aecg(short, tmp_path / "ecg.xml")
    monkeypatch.setenv("CREMA_MAX_RECORD_BYTES", str(short.signal.nbytes // 2))
    with pytest.raises(LimitError, match=r"ecg\.xml: read whole .* over the record in memory limit .*"
                                         r"set CREMA_MAX_RECORD_BYTES to raise it"):
        open_record(tmp_path / "ecg.xml")
    model = crema.load(tiny_pretrain_checkpoint, device="cpu")
    result = model.embed_records([long_hea, tmp_path / "ecg.xml"], on_error="skip")
    assert len(result.embeddings) == 0 and len(result.errors) == 2  # now neither fits
    assert all("CREMA_MAX_RECORD_BYTES" in failure.reason for failure in result.errors)


_LAUNCH = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"
_MEMORY = textwrap.dedent("""
    import json, resource, sys
    import crema
    from crema.data.preprocess import preprocess_recording
    from crema.data.readers import read_record
    checkpoint, path, short, how = sys.argv[1:]
    model = crema.load(checkpoint, device="cpu")
    model.embed_records(short, workers=2)  # the peak of a 30 s record: every code path warmed up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if how == "whole":  # what reading and preprocessing it whole takes, without the model
        preprocess_recording(read_record(path), model.preprocess)
    else:
        model.embed_records(path, workers=2)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps(dict(growth_mb=(after - before) / 1024)))
""")


def test_memory_stays_flat_for_a_long_record(tiny_pretrain_checkpoint, ptbxl_headers, tmp_path):
    """Embedding a 40-minute record raises the peak memory (ru_maxrss) of a process that has embedded
    a 30 s one by a small fraction of what reading and preprocessing it whole takes."""
    rate = read_record(ptbxl_headers[0]).fs
    seconds = 2400 if rate >= 500 else 2 * 3600  # a 27 MB file at 500 Hz (17 MB at 100 Hz)
    tile_wfdb(ptbxl_headers[0], tmp_path, "long", seconds)
    tile_wfdb(ptbxl_headers[0], tmp_path, "short", 30)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    growth = {}
    for how in ("whole", "streamed"):
        # through a small launcher: a process started by exec inherits its parent's peak memory as its
        # own ru_maxrss, and the test process's peak would hide what the measured process adds
        proc = subprocess.run([sys.executable, "-c", _LAUNCH, sys.executable, "-c", _MEMORY,
                               str(tiny_pretrain_checkpoint), str(tmp_path / "long.hea"),
                               str(tmp_path / "short.hea"), how], capture_output=True, text=True, env=env, timeout=300)
        assert proc.returncode == 0, proc.stderr
        growth[how] = json.loads(proc.stdout.strip().splitlines()[-1])["growth_mb"]
    file_mb = (tmp_path / "long.dat").stat().st_size / 2**20
    assert growth["whole"] > 4 * file_mb, growth  # the control: the whole-record path holds it several times over
    assert growth["streamed"] < 0.35 * growth["whole"] and growth["streamed"] < 100, growth
