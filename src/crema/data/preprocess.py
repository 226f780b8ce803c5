"""Raw recording -> model input windows: resample, filter, z-score, map leads, cut windows.

Everything here is deterministic numpy/scipy so that the exact preprocessing a model was
trained with can be re-run at inference time from the ``PreprocessConfig`` saved beside it.
A long record is preprocessed a span at a time with the same steps (:mod:`crema.data.stream`).

Order of operations (each step on ``(12, T)`` float arrays):
    1. map the file's leads onto the standard 12 (absent leads are zeros, limb leads derived);
    2. polyphase resampling to ``cfg.fs``;
    3. zero-phase Butterworth band-pass, optional notch;
    4. per-lead z-score over the whole record (flat or absent leads become zeros);
       a flat lead (a disconnected electrode) counts as absent in the lead mask, and a record
       whose leads are all flat is rejected: it carries no ECG.
    5. windows of ``cfg.window`` samples every ``cfg.stride`` samples.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

import numpy as np
from scipy import signal as sps

from ..config import PreprocessConfig
from ..errors import PreprocessError
from .leads import DuplicateLeadError, UnknownLeadError, to_standard
from .rates import rate_problem
from .recording import Recording

# A lead whose standard deviation is below this (mV, or z-units) carries no signal.
FLAT_STD = 1e-6
# Largest denominator tried when approximating the rate ratio by a fraction.
MAX_DENOMINATOR = 1000


@dataclass
class Windows:
    """Model input cut from one recording.

    Attributes:
        signals: float32 ``(W, 12, window)``.
        lead_mask: bool ``(12,)``, True = lead present (real or derived) and not flat.
        starts: int ``(W,)`` sample offset of each window at the target rate.
    """

    signals: np.ndarray
    lead_mask: np.ndarray
    starts: np.ndarray

    def __len__(self) -> int:
        return int(self.signals.shape[0])


def rate_ratio(fs_in: float, fs_out: float) -> tuple[int, int]:
    """``(up, down)`` small integers with ``up / down ~= fs_out / fs_in``."""
    if fs_in <= 0 or fs_out <= 0:
        raise PreprocessError(f"sampling rates must be positive, got {fs_in} -> {fs_out}")
    ratio = Fraction(fs_out / fs_in).limit_denominator(MAX_DENOMINATOR)
    return ratio.numerator, ratio.denominator


def resample(x: np.ndarray, fs_in: float, fs_out: float, padtype: str = "line") -> np.ndarray:
    """Polyphase resampling along the last axis: ``(C, T) -> (C, ~T * fs_out / fs_in)`` float32.
    ``padtype="constant"`` (zeros beyond the ends) is for a span that carries its own margins."""
    up, down = rate_ratio(fs_in, fs_out)
    if up == down:
        return np.asarray(x, dtype=np.float32)
    x = np.asarray(x)
    # padtype="line" takes out the line between the end samples first, so that a DC offset does
    # not ring at the edges as it would against zero padding.
    return sps.resample_poly(x, up, down, axis=-1, padtype=padtype,
                             window=resample_filter(up, down, x.dtype)).astype(np.float32)


def resample_filter(up: int, down: int, dtype=np.float32) -> np.ndarray:
    """The FIR low-pass ``resample_poly`` designs for ``up/down`` (its default Kaiser window, in the
    input's float type, as it makes it), designed once per ratio: that costs as much as applying it."""
    dtype = np.dtype(dtype) if np.issubdtype(np.dtype(dtype), np.floating) else np.dtype(np.float64)
    return _resample_filter(int(up), int(down)).astype(dtype)


@lru_cache(maxsize=32)
def _resample_filter(up: int, down: int) -> np.ndarray:
    half_len = 10 * max(up, down)
    return sps.firwin(2 * half_len + 1, 1.0 / max(up, down), window=("kaiser", 5.0))


def resample_margin(up: int, down: int) -> int:
    """Input samples on each side of a span that an output sample's FIR reaches into."""
    return -(-10 * max(up, down) // up) + 1


def bandpass(x: np.ndarray, fs: float, band: tuple[float, float], order: int) -> np.ndarray:
    """Zero-phase Butterworth band-pass of ``(C, T)`` along time; returns float32."""
    return _filtfilt_sos(_bandpass_sos(fs, band, order), x)


def _bandpass_sos(fs: float, band: tuple[float, float], order: int) -> np.ndarray:
    low, high = float(band[0]), float(band[1])
    if not 0 < low < high < fs / 2:
        raise PreprocessError(f"band-pass {low}-{high} Hz is not within (0, {fs / 2}) Hz at {fs} Hz")
    return _butter_bandpass(int(order), low, high, float(fs))


@lru_cache(maxsize=32)
def _butter_bandpass(order: int, low: float, high: float, fs: float) -> np.ndarray:
    # Designing the filter costs about as much as applying it, so records share one design.
    return sps.butter(order, [low, high], btype="bandpass", fs=fs, output="sos")


def notch(x: np.ndarray, fs: float, hz: float, quality: float = 30.0) -> np.ndarray:
    """Zero-phase notch at ``hz`` (mains hum) of ``(C, T)``; a no-op above Nyquist."""
    if hz >= fs / 2:
        return np.asarray(x, dtype=np.float32)
    return _filtfilt_sos(_notch_sos(fs, hz, quality), x)


def _notch_sos(fs: float, hz: float, quality: float = 30.0) -> np.ndarray:
    return sps.tf2sos(*sps.iirnotch(hz, quality, fs=fs))


def filter_design(cfg: PreprocessConfig) -> list[np.ndarray]:
    """The second-order sections :func:`filter_signal` applies: the band-pass, then the notch."""
    sections = []
    if cfg.band is not None:
        sections.append(_bandpass_sos(cfg.fs, cfg.band, cfg.filter_order))
    if cfg.notch_hz and cfg.notch_hz < cfg.fs / 2:
        sections.append(_notch_sos(cfg.fs, cfg.notch_hz))
    return sections


def filter_signal(x: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """``cfg``'s zero-phase band-pass and notch of ``(C, T)`` at ``cfg.fs``; float32."""
    for sos in filter_design(cfg):
        x = _filtfilt_sos(sos, x)
    return np.asarray(x, dtype=np.float32)


def _filtfilt_sos(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``scipy.signal.sosfiltfilt(sos, x, axis=-1, padlen=...)`` (odd extension), the same
    operations in the same order, with the filter's initial state designed once per filter:
    ``sosfilt_zi`` solves a linear system per section, which cost as much as the filtering."""
    # The default pad length (odd extension) needs a few dozen samples; shorter records are
    # padded as far as they allow rather than failing.
    x = np.asarray(x)
    padlen = max(min(3 * (2 * len(sos) + 1), x.shape[-1] - 1), 0)
    ext = _odd_extension(x, padlen) if padlen > 0 else x
    zi = _sos_initial_state(sos.tobytes(), sos.shape).reshape((len(sos),) + (1,) * (x.ndim - 1) + (2,))
    y, _ = sps.sosfilt(sos, ext, axis=-1, zi=zi * ext[..., :1])
    y, _ = sps.sosfilt(sos, y[..., ::-1], axis=-1, zi=zi * y[..., -1:])
    y = y[..., ::-1]
    if padlen > 0:
        y = y[..., padlen:-padlen]
    return y.astype(np.float32)


def _odd_extension(x: np.ndarray, n: int) -> np.ndarray:
    """``x`` extended by ``n`` samples at each end, mirrored about its end samples (point
    symmetry), in ``x``'s own float type, as ``sosfiltfilt`` pads."""
    left, right = x[..., :1], x[..., -1:]
    return np.concatenate((2 * left - x[..., n:0:-1], x, 2 * right - x[..., -2:-(n + 2):-1]), axis=-1)


@lru_cache(maxsize=32)
def _sos_initial_state(sos_bytes: bytes, shape: tuple[int, int]) -> np.ndarray:
    """``sosfilt_zi`` of the sections held in ``sos_bytes`` (float64, ``shape``), ``(n, 2)``."""
    zi = sps.sosfilt_zi(np.frombuffer(sos_bytes, dtype=np.float64).reshape(shape))
    zi.flags.writeable = False
    return zi


def zscore(x: np.ndarray) -> np.ndarray:
    """Per-lead z-score of ``(C, T)``; a flat lead (std ~ 0) becomes zeros, never NaN."""
    x = np.asarray(x, dtype=np.float32)
    mean = x.mean(axis=-1, keepdims=True, dtype=np.float64)
    std = x.std(axis=-1, keepdims=True, dtype=np.float64)
    return scale_leads(x, mean, std)


def scale_leads(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``(x - mean) / std`` per lead of ``(C, T)`` float32 with float64 ``mean``/``std`` ``(C, 1)``
    (the record's, also when ``x`` is a span of it); a flat lead (std ~ 0) becomes zeros."""
    flat = std < FLAT_STD
    out = (x - mean) / np.where(flat, 1.0, std)
    out[np.broadcast_to(flat, out.shape)] = 0.0
    return out.astype(np.float32)


def window_starts(length: int, window: int, stride: int) -> np.ndarray:
    """Start offsets of full windows in a record of ``length`` samples (tail shorter than a
    window is dropped); ``[0]`` when the record is shorter than one window (it will be padded)."""
    if stride <= 0 or window <= 0:
        raise PreprocessError(f"window ({window}) and stride ({stride}) must be positive")
    if length <= window:
        return np.zeros(1, dtype=np.int64)
    return np.arange(0, length - window + 1, stride, dtype=np.int64)


def cut_windows(x: np.ndarray, window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """``(C, T) -> (W, C, window)`` float32 plus starts ``(W,)``; a short record is zero-padded."""
    starts = window_starts(x.shape[-1], window, stride)
    out = np.zeros((len(starts), x.shape[0], window), dtype=np.float32)
    for i, start in enumerate(starts):
        piece = x[:, start:start + window]
        out[i, :, :piece.shape[-1]] = piece
    return out, starts


def standard_leads(rec: Recording, derive_limb_leads: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """The recording's signal in standard 12-lead order ``(12, T)`` and its present mask ``(12,)``."""
    try:
        x, present = to_standard(rec.signal, rec.leads, derive_limb_leads=derive_limb_leads)
    except (UnknownLeadError, DuplicateLeadError) as exc:
        raise PreprocessError(f"record {rec.record_id}: {exc}") from None
    if not present.any():
        raise PreprocessError(f"record {rec.record_id}: none of the standard 12 leads is present "
                              f"(leads: {', '.join(rec.leads)})")
    return x, present


def drop_flat_leads(rec: Recording, x12: np.ndarray, present: np.ndarray) -> np.ndarray:
    """The lead mask with flat leads (std below :data:`FLAT_STD`) marked absent, so that the
    model never attends to a disconnected electrode as if it were an ECG lead.

    Flatness is judged on the raw signal: filtering a constant leaves float dust, not zeros.

    Raises:
        PreprocessError: every present lead is flat (a blank or disconnected recording).
    """
    flat = present & (x12.std(axis=-1) < FLAT_STD)
    if flat.any() and not (present & ~flat).any():
        raise PreprocessError(f"record {rec.record_id}: every lead is flat (constant signal); "
                              "the recording carries no ECG")
    return present & ~flat


def check_length(rec: Recording, cfg: PreprocessConfig) -> None:
    """Reject records too short to use (always below ``min_length_s``; below one window when
    ``cfg.short == "reject"``)."""
    check_duration(rec.record_id, rec.duration_s, cfg)


def check_duration(record_id: str, duration: float, cfg: PreprocessConfig) -> None:
    """:func:`check_length` of a record known by its id and duration (s)."""
    if duration < cfg.min_length_s:
        raise PreprocessError(f"record {record_id}: {duration:.2f} s is shorter than the "
                              f"minimum {cfg.min_length_s} s")
    if cfg.short == "reject" and duration < cfg.window_s:
        raise PreprocessError(f"record {record_id}: {duration:.2f} s is shorter than one "
                              f"{cfg.window_s} s window (short='reject')")
    if cfg.short not in ("pad", "reject"):
        raise PreprocessError(f"unknown short-record policy {cfg.short!r} (pad or reject)")


def preprocess_recording(rec: Recording, cfg: PreprocessConfig = PreprocessConfig()) -> Windows:
    """Turn one recording into model input windows.

    Args:
        rec: any ``Recording`` (``(n_leads, T)`` mV at ``rec.fs``, any lead names).
        cfg: the preprocessing to apply.

    Returns:
        :class:`Windows` with ``signals (W, 12, cfg.window)`` float32.

    Raises:
        PreprocessError: NaN/inf in the signal, no standard lead, every lead flat, too short,
            bad rate or band.
    """
    if rec.signal.size == 0 or rec.signal.shape[-1] == 0:
        raise PreprocessError(f"record {rec.record_id}: the signal has no samples")
    if not np.isfinite(rec.signal).all():
        raise PreprocessError(f"record {rec.record_id}: the signal contains NaN or inf values")
    problem = rate_problem(rec.fs)
    if problem:
        raise PreprocessError(f"record {rec.record_id}: {problem}")
    check_length(rec, cfg)
    x12, present = standard_leads(rec, cfg.derive_limb_leads)
    present = drop_flat_leads(rec, x12, present)
    # Only the present leads are filtered: absent ones are zeros and stay zeros. (With all 12
    # present, as in most records, no lead is copied out and back.)
    every = bool(present.all())
    x = filter_signal(resample(x12 if every else x12[present], rec.fs, cfg.fs), cfg)
    if cfg.zscore:
        x = zscore(x)
    if every:
        full = x
    else:
        full = np.zeros((12, x.shape[-1]), dtype=np.float32)
        full[present] = x
    signals, starts = cut_windows(full, cfg.window, cfg.stride)
    return Windows(signals=signals, lead_mask=present, starts=starts)
