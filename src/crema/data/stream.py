"""A long record preprocessed a chunk at a time: the windows of
:func:`~crema.data.preprocess.preprocess_recording` in flat memory.

Preprocessing a record whole holds it several times over (float64 samples, the 12 standard leads,
the resampled and filtered copies, the windows): about 14 times its file size at the peak. Here the
record is cut into chunks of :data:`CHUNK_S` seconds at the model's rate, and each chunk is computed
from a span of the file with margins on both sides wide enough that the resampling and the
zero-phase filters see what they see in the whole record:

* resampling (polyphase FIR): a margin of half the FIR's length; at the record's own ends the span
  is extended with the line through the record's end samples, as ``resample_poly(padtype="line")``
  does for the whole record;
* band-pass and notch (IIR filters run forwards and backwards): a chunk's filters start from
  another state than the whole record's; the difference decays with the filters' slowest pole, and
  the margin is :data:`MARGIN_SAFETY` times the samples it takes to fall to :data:`DECAY`
  (about 35 s each side for the default 0.67 Hz band-pass);
* the z-score uses the whole record's mean and standard deviation, and the flat-lead check the raw
  signal's: a first pass over the chunks gathers both (:meth:`StreamedRecord.stats`), a second cuts
  the windows (:meth:`StreamedRecord.windows`).

So the record is read and filtered twice, plus the margins. Given the first pass's totals the
chunks are independent, and a caller may compute them in parallel (:mod:`crema.use.pipeline`
does). The windows equal the whole-record path's to float32 rounding (tests/test_long_records.py
measures the largest difference).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import signal as sps

from ..config import PreprocessConfig
from ..errors import PreprocessError
from ..limits import RECORD_BYTES
from .preprocess import (FLAT_STD, Windows, check_duration, filter_design, filter_signal, rate_ratio,
                         resample, resample_margin, scale_leads, standard_leads, window_starts)
from .rates import rate_problem
from .recording import Recording
from .spans import SpanReader

CHUNK_S = 180.0      # seconds of output per chunk (margins come on top)
DECAY = 1e-9         # what is left of a filter's start-up transient at the edge of a chunk's core
MARGIN_SAFETY = 2.0  # repeated poles decay slower than one alone: twice the single-pole margin


@dataclass(frozen=True)
class Moments:
    """Running totals of rows of samples: ``count``, per-row ``mean`` and ``m2`` (sum of squared
    deviations), float64; combined chunk by chunk (Chan et al.'s parallel update)."""

    count: int
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray) -> "Moments":
        """The moments of ``x (rows, n)``."""
        mean = np.asarray(x).mean(axis=-1, dtype=np.float64)
        # a row at a time: a float64 copy of the whole span would double the chunk's memory
        m2 = np.array([np.square(row - m, dtype=np.float64).sum() for row, m in zip(x, mean)], dtype=np.float64)
        return cls(x.shape[-1], mean, m2)

    def __add__(self, other: "Moments") -> "Moments":
        if not other.count:
            return self
        if not self.count:
            return other
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / count)
        m2 = self.m2 + other.m2 + np.square(delta) * (self.count * other.count / count)
        return Moments(count, mean, m2)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.count, 1))


@dataclass(frozen=True)
class ChunkStats:
    """What the first pass learns from one chunk: moments of the raw standard leads (the flat-lead
    check) and of the filtered ones at the model rate (the z-score; None without z-score)."""

    raw: Moments
    filtered: Moments | None


def filter_margin(cfg: PreprocessConfig) -> int:
    """Samples at ``cfg.fs`` on each side of a chunk after which the filters' start-up transient
    is below :data:`DECAY` (times :data:`MARGIN_SAFETY`); 0 without filters."""
    sections = filter_design(cfg)
    if not sections:
        return 0
    radius = max(float(np.abs(sps.sos2zpk(sos)[1]).max()) for sos in sections)
    pad = max(3 * (2 * len(sos) + 1) for sos in sections)  # the odd extension at a span's ends
    return int(math.ceil(MARGIN_SAFETY * math.log(DECAY) / math.log(radius))) + pad


class StreamedRecord:
    """One long record's preprocessing, a chunk at a time.

    Use: ``stats = [s.stats(k) for k in range(s.n_chunks)]``, then ``s.normalise(stats)`` (sets
    :attr:`lead_mask`), then ``s.windows(k)`` for each chunk: :class:`Windows` whose starts lie in
    chunk ``k``, together exactly the windows of ``preprocess_recording`` (to float32 rounding).
    The chunk methods only read, so chunks may be computed in parallel threads.

    Attributes:
        record_id, spans: the record and its reader.
        n_chunks: chunks of :data:`CHUNK_S` s at ``cfg.fs``.
        starts: ``(W,)`` every window's start at ``cfg.fs``.
        lead_mask: ``(12,)`` bool once :meth:`normalise` has run.

    Raises:
        PreprocessError: a bad rate, too short a record, no standard lead, (in the passes) NaN or
            infinite samples, every lead flat.
    """

    def __init__(self, spans: SpanReader, cfg: PreprocessConfig, chunk_s: float = CHUNK_S):
        self.spans, self.cfg, self.record_id = spans, cfg, spans.record_id
        problem = rate_problem(spans.fs)
        if problem:
            raise PreprocessError(f"record {self.record_id}: {problem}")
        check_duration(self.record_id, spans.duration_s, cfg)
        self.up, self.down = rate_ratio(spans.fs, cfg.fs)
        n = spans.n_samples
        self.n_out = -(-n * self.up // self.down)  # resample_poly's output length
        self.margin = filter_margin(cfg)
        self.fir_margin = resample_margin(self.up, self.down) if self.up != self.down else 0
        # chunk edges at multiples of `up` fall on whole input samples
        self.chunk = self._fitting_chunk(chunk_s) // self.up * self.up
        self.n_chunks = -(-self.n_out // self.chunk)
        self.starts = window_starts(self.n_out, cfg.window, cfg.stride)
        first = self._standard(spans.read(0, 1), 0)
        self.present = first.present
        last = self._standard(spans.read(n - 1, n), n - 1).signal[self.present]
        # resample_poly(padtype="line") extends the record along the line through its end samples
        self._first = first.signal[self.present][:, 0].astype(np.float64)
        self._last = last[:, 0].astype(np.float64)
        self._slope = (self._last - self._first) / max(n - 1, 1)
        self.lead_mask: np.ndarray | None = None
        self._mean = self._std = None

    # ------------------------------------------------------------------ the two passes

    def stats(self, k: int) -> ChunkStats:
        """First pass over chunk ``k``: moments of its raw and filtered samples."""
        a, b = self._core(k)
        lo, hi = self._input_index(a), self._input_index(b)
        raw = Moments.of(self._raw(lo, hi))
        filtered = Moments.of(self._filtered(a, b)) if self.cfg.zscore else None
        return ChunkStats(raw, filtered)

    def normalise(self, stats: list[ChunkStats]) -> np.ndarray:
        """Combine every chunk's :meth:`stats` (in chunk order): the lead mask (flat leads absent)
        and the z-score's mean and std; returns the lead mask ``(12,)``."""
        if len(stats) != self.n_chunks:
            raise ValueError(f"{len(stats)} chunk stats for {self.n_chunks} chunks")
        raw = sum((s.raw for s in stats[1:]), stats[0].raw)
        flat = raw.std < FLAT_STD
        if flat.all():
            raise PreprocessError(f"record {self.record_id}: every lead is flat (constant signal); "
                                  "the recording carries no ECG")
        mask = self.present.copy()
        mask[np.flatnonzero(self.present)[flat]] = False
        self.lead_mask, self._keep = mask, ~flat
        if self.cfg.zscore:
            filtered = sum((s.filtered for s in stats[1:]), stats[0].filtered)
            self._mean, self._std = filtered.mean[:, None], filtered.std[:, None]
        return mask

    def windows(self, k: int) -> Windows:
        """Second pass over chunk ``k``: its windows ``(w, 12, window)`` (those starting in it)."""
        if self.lead_mask is None:
            raise RuntimeError("StreamedRecord.windows before normalise")
        a, b = self._core(k)
        starts = self.starts[(self.starts >= a) & (self.starts < b)]
        window = self.cfg.window
        if not len(starts):
            return Windows(np.zeros((0, 12, window), np.float32), self.lead_mask.copy(), starts)
        x = self._filtered(a, int(starts[-1]) + window)[self._keep]
        if self.cfg.zscore:
            x = scale_leads(x, self._mean[self._keep], self._std[self._keep])
        signals = np.zeros((len(starts), 12, window), dtype=np.float32)
        rows = np.flatnonzero(self.lead_mask)
        for i, start in enumerate(starts - a):
            signals[i, rows] = x[:, start:start + window]
        return Windows(signals, self.lead_mask.copy(), starts)

    # ------------------------------------------------------------------ spans of the signal

    def _fitting_chunk(self, chunk_s: float) -> int:
        """Output samples per chunk: ``chunk_s`` seconds, fewer when a chunk's span of the file
        (margins and the last window's overhang included) would exceed ``RECORD_BYTES``."""
        wanted = max(self.up, math.ceil(chunk_s * self.cfg.fs))
        frames = RECORD_BYTES.value() // (len(self.spans.leads) * 4)  # float32 samples of every lead
        extra = 2 * self.margin + self.cfg.window + 2 * self.up
        fits = (frames - 2 * self.fir_margin - 2) * self.up // self.down - extra
        if fits < self.up:
            RECORD_BYTES.check(self.spans.n_samples * len(self.spans.leads) * 4,
                               f"record {self.record_id}: even a span of {extra / self.cfg.fs:.0f} s "
                               f"(filter margins and one window) exceeds the limit, and the whole record")
        return min(wanted, fits)

    def _core(self, k: int) -> tuple[int, int]:
        """Output samples ``[a, b)`` of chunk ``k``."""
        if not 0 <= k < self.n_chunks:
            raise IndexError(f"chunk {k} of {self.n_chunks}")
        return k * self.chunk, min((k + 1) * self.chunk, self.n_out)

    def _input_index(self, out: int) -> int:
        """The input sample at output sample ``out`` (a multiple of ``up``, or the end)."""
        return self.spans.n_samples if out >= self.n_out else out * self.down // self.up

    def _standard(self, raw: np.ndarray, start: int):
        """The span's standard leads ``(12, n)`` and present mask (a :class:`Recording` of it)."""
        if not np.isfinite(raw).all():
            raise PreprocessError(f"record {self.record_id}: the signal contains NaN or inf values "
                                  f"(samples {start}-{start + raw.shape[-1]})")
        rec = Recording(raw, self.spans.fs, self.spans.leads, self.record_id)
        signal, present = standard_leads(rec, self.cfg.derive_limb_leads)
        return _Standard(signal, present)

    def _raw(self, lo: int, hi: int) -> np.ndarray:
        """Present standard leads at input samples ``[lo, hi)`` ``(P, hi - lo)`` float32; beyond
        the record's ends, the line through its end samples (as ``resample_poly`` extends it)."""
        n = self.spans.n_samples
        inside = self._standard(self.spans.read(lo, hi), max(lo, 0)).signal[self.present]
        if lo >= 0 and hi <= n:
            return inside
        slope = self._slope[:, None]
        left = self._first[:, None] + slope * np.arange(lo, min(hi, 0))
        right = self._last[:, None] + slope * (np.arange(max(lo, n), hi) - (n - 1))
        return np.concatenate([left.astype(np.float32), inside, right.astype(np.float32)], axis=-1)

    def _resampled(self, p: int, q: int) -> np.ndarray:
        """Output samples ``[p, q)`` of the resampled present leads (``p`` a multiple of ``up``)."""
        if self.up == self.down:
            return self._raw(p, q)
        up, down = self.up, self.down
        lo = p * down // up - self.fir_margin
        lo -= lo % down  # a multiple of `down` starts an output sample exactly
        hi = -(-q * down // up) + self.fir_margin
        y = resample(self._raw(lo, hi), self.spans.fs, self.cfg.fs, padtype="constant")
        offset = lo * up // down
        return y[:, p - offset:q - offset]

    def _filtered(self, a: int, b: int) -> np.ndarray:
        """Output samples ``[a, b)`` resampled and filtered ``(P, b - a)`` float32, computed from a
        span with :attr:`margin` samples more on each side (fewer at the record's ends, where the
        whole record's filter sees the same end)."""
        p = max(0, a - self.margin)
        p -= p % self.up
        q = min(self.n_out, b + self.margin)
        x = filter_signal(self._resampled(p, q), self.cfg)
        return x[:, a - p:b - p]


@dataclass(frozen=True)
class _Standard:
    signal: np.ndarray
    present: np.ndarray


def stream_windows(spans: SpanReader, cfg: PreprocessConfig = PreprocessConfig(), chunk_s: float = CHUNK_S):
    """The windows of a long record chunk by chunk, in one thread: ``(lead_mask (12,), iterator of
    Windows)``; the first pass runs before this returns."""
    record = StreamedRecord(spans, cfg, chunk_s)
    mask = record.normalise([record.stats(k) for k in range(record.n_chunks)])
    return mask, (record.windows(k) for k in range(record.n_chunks))
