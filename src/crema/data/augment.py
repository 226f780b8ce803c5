"""ECG augmentations and corruptions as plain numpy functions.

Each function takes a signal ``x`` of shape ``(..., 12, T)`` (one ECG or a batch; float, in
z-scored units after preprocessing), an explicit ``np.random.Generator`` and a ``severity``,
and returns a new float32 array (the input is never modified, so memmap rows are safe).
The training dataset applies them from an ``AugmentConfig``; evaluation reuses them as
test-time corruptions at graded severities.
"""
from __future__ import annotations

import numpy as np

from ..config import STANDARD_LEADS, AugmentConfig
from .leads import canonical_lead

# Baseline wander (breathing, body movement): per lead, WANDER_SINES slow sines with
# frequencies uniform in WANDER_LOW_HZ + [0, WANDER_SPAN_HZ), i.e. 0.05-0.5 Hz.
WANDER_SINES = 2
WANDER_LOW_HZ = 0.05
WANDER_SPAN_HZ = 0.45


def amplitude_scale(x: np.ndarray, rng: np.random.Generator, severity: float) -> np.ndarray:
    """Multiply each lead by a factor drawn uniformly from ``1 +- severity``."""
    x = np.asarray(x, dtype=np.float32)
    if severity <= 0:
        return x.copy()
    factors = rng.uniform(1.0 - severity, 1.0 + severity, size=x.shape[:-1] + (1,))
    return (x * factors).astype(np.float32)


def gaussian_noise(x: np.ndarray, rng: np.random.Generator, severity: float) -> np.ndarray:
    """Add white Gaussian noise of standard deviation ``severity``."""
    x = np.asarray(x, dtype=np.float32)
    if severity <= 0:
        return x.copy()
    return x + np.float32(severity) * rng.standard_normal(size=x.shape, dtype=np.float32)


def wander_drift(seconds, freq, phase, amp, sin=np.sin):
    """The baseline-wander drift ``(..., T)``: ``sum_k amp_k sin(2 pi freq_k t + phase_k)``.

    Args:
        seconds: ``(T,)`` sample times; freq (Hz), phase (rad), amp: ``(..., WANDER_SINES, 1)``.
        sin: ``np.sin`` for numpy arrays, ``torch.sin`` for tensors (the pretraining views).
    """
    return (amp * sin(2.0 * np.pi * freq * seconds + phase)).sum(-2)


def baseline_wander(x: np.ndarray, rng: np.random.Generator, severity: float,
                    fs: float = 250.0) -> np.ndarray:
    """Add a slow drift: per lead, :data:`WANDER_SINES` sines of 0.05-0.5 Hz with random phases
    and amplitudes uniform in ``[0, severity)`` (the pretraining views' wander, see
    :func:`crema.model.crema.augment_view`)."""
    x = np.asarray(x, dtype=np.float32)
    if severity <= 0:
        return x.copy()
    shape = x.shape[:-1] + (WANDER_SINES, 1)
    freq = WANDER_LOW_HZ + WANDER_SPAN_HZ * rng.random(shape)
    phase = 2.0 * np.pi * rng.random(shape)
    amp = severity * rng.random(shape)
    seconds = np.arange(x.shape[-1], dtype=np.float64) / fs
    return (x + wander_drift(seconds, freq, phase, amp)).astype(np.float32)


def powerline_hum(x: np.ndarray, rng: np.random.Generator, severity: float, fs: float = 250.0,
                  hz: float = 50.0) -> np.ndarray:
    """Add mains interference: a sine at ``hz`` of amplitude ``severity`` with a random phase
    per lead (the same frequency in every lead, as from the mains)."""
    x = np.asarray(x, dtype=np.float32)
    if severity <= 0:
        return x.copy()
    t = np.arange(x.shape[-1], dtype=np.float64) / fs
    phases = rng.uniform(0.0, 2 * np.pi, size=x.shape[:-1] + (1,))
    return (x + severity * np.sin(2 * np.pi * hz * t + phases)).astype(np.float32)


def time_shift(x: np.ndarray, rng: np.random.Generator, severity: float) -> np.ndarray:
    """Circularly shift all leads together by up to ``severity`` of the length, either way."""
    x = np.asarray(x, dtype=np.float32)
    max_shift = int(round(severity * x.shape[-1]))
    if max_shift <= 0:
        return x.copy()
    return np.roll(x, int(rng.integers(-max_shift, max_shift + 1)), axis=-1)


def lead_dropout(x: np.ndarray, lead_mask: np.ndarray, rng: np.random.Generator,
                 p: float) -> tuple[np.ndarray, np.ndarray]:
    """Zero each lead with probability ``p`` and clear it in ``lead_mask`` (``(..., 12)`` bool).
    At least one present lead is always kept."""
    x = np.asarray(x, dtype=np.float32).copy()
    mask = np.asarray(lead_mask, dtype=bool).copy()
    if p <= 0:
        return x, mask
    drop = rng.random(mask.shape) < p
    drop = _keep_one(drop, mask, rng)
    x[drop] = 0.0
    mask[drop] = False
    return x, mask


def missing_leads(x: np.ndarray, lead_mask: np.ndarray, rng: np.random.Generator,
                  n_missing: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove exactly ``n_missing`` randomly chosen present leads of each ECG (``x`` of shape
    ``(..., 12, T)``, ``lead_mask`` ``(..., 12)``); fewer where fewer than ``n_missing + 1`` are
    present, since one lead is always kept."""
    x = np.asarray(x, dtype=np.float32).copy()
    mask = np.asarray(lead_mask, dtype=bool).copy()
    flat_x = x.reshape(-1, *x.shape[-2:])
    flat_mask = mask.reshape(-1, mask.shape[-1])
    for row in range(flat_mask.shape[0]):
        present = np.flatnonzero(flat_mask[row])
        n = int(min(max(n_missing, 0), max(len(present) - 1, 0)))
        if n:
            drop = rng.choice(present, size=n, replace=False)
            flat_x[row, drop] = 0.0
            flat_mask[row, drop] = False
    return flat_x.reshape(x.shape), flat_mask.reshape(mask.shape)


def keep_leads(x: np.ndarray, lead_mask: np.ndarray,
               names: tuple[str, ...] | list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Keep only the named leads (any spelling, e.g. ``("I", "II")`` or ``("V1",)``); zero and
    mask out the rest. Works on ``(12, T)`` or ``(B, 12, T)``."""
    keep = np.zeros(len(STANDARD_LEADS), dtype=bool)
    for name in names:
        keep[STANDARD_LEADS.index(canonical_lead(name))] = True
    x = np.asarray(x, dtype=np.float32).copy()
    mask = np.asarray(lead_mask, dtype=bool) & keep
    x[..., ~keep, :] = 0.0
    return x, mask


def _keep_one(drop: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Un-drop one random present lead wherever every present lead would be dropped."""
    drop = drop & mask
    flat_drop, flat_mask = drop.reshape(-1, drop.shape[-1]), mask.reshape(-1, mask.shape[-1])
    for row in np.flatnonzero((flat_drop == flat_mask).all(axis=1) & flat_mask.any(axis=1)):
        flat_drop[row, rng.choice(np.flatnonzero(flat_mask[row]))] = False
    return flat_drop.reshape(drop.shape)


def apply_augment(x: np.ndarray, lead_mask: np.ndarray, cfg: AugmentConfig,
                  rng: np.random.Generator, fs: float = 250.0) -> tuple[np.ndarray, np.ndarray]:
    """All augmentations of ``cfg`` in a fixed order (shift, scale, wander, noise, dropout) on
    one ECG ``(12, T)``; returns the new signal and lead mask. Absent leads stay zeros."""
    mask = np.asarray(lead_mask, dtype=bool)
    x = time_shift(x, rng, cfg.time_shift)
    x = amplitude_scale(x, rng, cfg.scale)
    x = baseline_wander(x, rng, cfg.wander, fs=fs)
    x = gaussian_noise(x, rng, cfg.noise)
    x, mask = lead_dropout(x, mask, rng, cfg.lead_dropout)
    x[~mask] = 0.0
    return x, mask


def is_identity(cfg: AugmentConfig | None) -> bool:
    """True when ``cfg`` changes nothing."""
    return cfg is None or not any((cfg.scale, cfg.noise, cfg.wander, cfg.lead_dropout, cfg.time_shift))
