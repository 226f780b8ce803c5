"""ECG augmentations and corruptions: numpy functions per ECG, and the same augmentations
vectorised over a batch in torch.

Each numpy function takes a signal ``x`` of shape ``(..., 12, T)`` (one ECG or a batch; float,
in z-scored units after preprocessing), an explicit ``np.random.Generator`` and a ``severity``,
and returns a new float32 array (the input is never modified, so memmap rows are safe).
The training dataset applies them per item from an ``AugmentConfig``; evaluation reuses them as
test-time corruptions at graded severities. :func:`augment_batch` applies an ``AugmentConfig``
to a whole batch ``(B, 12, T)`` with torch ops on the batch's device (the batched training
stream, in a loader worker or on the GPU after the transfer).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

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
    :func:`crema.model.views.augment_view`)."""
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


# ----------------------------------------------------------------------------- batches (torch)

def batch_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator of one batch's augmentation on ``device``, seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(int(seed))


def augment_batch(x: Tensor, lead_mask: Tensor, cfg: AugmentConfig, generator: torch.Generator,
                  fs: float = 250.0) -> tuple[Tensor, Tensor]:
    """:func:`apply_augment` over a batch: ``x (B, C, T)`` float, ``lead_mask (B, C)`` bool ->
    new float32 ``(x, lead_mask)`` on ``x``'s device (the inputs are not modified).

    The same augmentations in the same order (shift, scale, wander, noise, dropout), each drawn
    per ECG (shift) or per ECG and lead, all from ``generator`` (on ``x``'s device): the same
    distributions as the per-ECG numpy functions, not the same numbers. Absent leads are zeros.
    The steps are :func:`draw_shifts`, :func:`crop_batch` (the roll) and :func:`perturb_batch_`;
    a loader that crops anyway rolls in the same copy.
    """
    shifts = draw_shifts(cfg, x.shape[0], x.shape[-1], generator)
    out = x.to(torch.float32, copy=True) if shifts is None else crop_batch(x, None, None, shifts)
    return out, perturb_batch_(out, lead_mask, cfg, generator, fs)


def draw_shifts(cfg: AugmentConfig, b: int, t: int, generator: torch.Generator) -> Tensor | None:
    """The first draw of :func:`augment_batch`: a circular shift per ECG ``(B,)`` int64 of up
    to ``cfg.time_shift`` of ``t`` samples either way, on the generator's device; None when
    off."""
    most = int(round(cfg.time_shift * t))
    if most <= 0:
        return None
    return torch.randint(-most, most + 1, (b,), generator=generator, device=generator.device)


def crop_batch(x: Tensor, starts: np.ndarray | Tensor | None, length: int | None,
               shifts: Tensor | None = None, dtype: torch.dtype = torch.float32) -> Tensor:
    """``x (B, C, W)`` -> ``(B, C, length)`` of ``dtype``: ECG ``i`` cropped at ``starts[i]``
    (None: the whole of ``x``) and rolled by ``shifts[i]`` samples as ``np.roll`` does
    (``out[..., j] = crop[..., j - shift]``; None: no roll). A new tensor, except that with
    neither crop nor roll it is ``x.to(dtype)`` (``x`` itself when of that dtype)."""
    b, c, w = x.shape
    length = w if length is None else length
    if shifts is None and (starts is None or length == w):
        return x.to(dtype)
    starts = torch.zeros(b, dtype=torch.int64) if starts is None else torch.as_tensor(starts)
    rolls = torch.zeros(b, dtype=torch.int64) if shifts is None else torch.remainder(shifts, length)
    if x.device.type != "cpu" or x.dtype == torch.bfloat16:  # (numpy has no bfloat16)
        return _crop_gather(x, starts, length, rolls).to(dtype)
    # On the CPU: numpy slice copies (a torch slice costs microseconds of dispatch, 128 of them
    # per batch), in the stored dtype; the conversion is one vectorised pass after.
    source = x.numpy()
    out = np.empty((b, c, length), dtype=source.dtype)
    for i, (start, roll) in enumerate(zip(starts.tolist(), rolls.tolist())):
        crop = source[i, :, start:start + length]
        out[i, :, roll:] = crop[:, :length - roll]
        if roll:
            out[i, :, :roll] = crop[:, length - roll:]
    return torch.from_numpy(out).to(dtype)


def _crop_gather(x: Tensor, starts: Tensor, length: int, rolls: Tensor) -> Tensor:
    """:func:`crop_batch` as one gather kernel (what an accelerator runs best)."""
    source = starts.to(x.device)[:, None] + torch.remainder(
        torch.arange(length, device=x.device) - rolls.to(x.device)[:, None], length)
    return x.gather(2, source[:, None, :].expand(x.shape[0], x.shape[1], length))


def perturb_batch_(x: Tensor, lead_mask: Tensor, cfg: AugmentConfig, generator: torch.Generator,
                   fs: float = 250.0) -> Tensor:
    """The steps of :func:`augment_batch` after the shift, in place on ``x (B, C, T)`` float32:
    scale, wander, noise, lead dropout, absent leads zeroed. Returns the new lead mask
    ``(B, C)``."""
    b, c, t = x.shape
    dev = x.device

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=generator, device=dev)

    if cfg.scale > 0:
        x.mul_(1.0 + cfg.scale * (2.0 * rand(b, c, 1) - 1.0))
    if cfg.wander > 0:
        shape = (b, c, WANDER_SINES, 1)
        freq = WANDER_LOW_HZ + WANDER_SPAN_HZ * rand(*shape)
        phase = 2.0 * math.pi * rand(*shape)
        amp = cfg.wander * rand(*shape)
        add_wander_(x, fs, freq, phase, amp)
    if cfg.noise > 0:
        x.add_(torch.randn(b, c, t, generator=generator, device=dev), alpha=cfg.noise)
    mask = lead_mask.to(dev, torch.bool)
    if cfg.lead_dropout > 0:
        drop = (rand(b, c) < cfg.lead_dropout) & mask
        # Keep one lead: where every present lead would go, a random present one stays.
        every = (drop == mask).all(dim=1) & mask.any(dim=1)
        keep = torch.where(mask, rand(b, c), -1.0).argmax(dim=1)
        drop[every, keep[every]] = False
        mask = mask & ~drop
    x.mul_(mask[:, :, None])
    return mask


# Samples per block of add_wander_: the sines are evaluated at block starts and at the steps
# within a block, then combined by angle addition.
WANDER_BLOCK = 25


def add_wander_(x: Tensor, fs: float, freq: Tensor, phase: Tensor, amp: Tensor) -> Tensor:
    """Add :func:`wander_drift` to ``x (B, C, T)`` in place, for torch parameters ``(B, C, K, 1)``
    at rate ``fs``: the same sums of sines, computed by angle addition,
    ``sin(a + d) = sin a cos d + cos a sin d``, with ``a`` the block starts (every
    :data:`WANDER_BLOCK` samples) and ``d`` the steps within a block: sines of ``T / 25 + 25``
    angles per sine instead of ``T``, combined by one small matrix product per ECG and lead.
    Equal to adding :func:`wander_drift` to float32 rounding (the pretraining views keep that
    one, whose values are what their runs were trained on)."""
    b, c, t = x.shape
    blocks = -(-t // WANDER_BLOCK)
    dev, dtype = freq.device, freq.dtype
    omega = 2.0 * math.pi * freq                                                    # (B, C, K, 1)
    starts = omega * (torch.arange(blocks, device=dev, dtype=dtype) * (WANDER_BLOCK / fs)) + phase
    steps = omega * (torch.arange(WANDER_BLOCK, device=dev, dtype=dtype) / fs)    # (B, C, K, R)
    left = torch.cat([amp * torch.sin(starts), amp * torch.cos(starts)], dim=2)   # (B, C, 2K, J)
    right = torch.cat([torch.cos(steps), torch.sin(steps)], dim=2)                # (B, C, 2K, R)
    left, right = left.transpose(-1, -2).reshape(b * c, blocks, -1), right.reshape(b * c, -1, WANDER_BLOCK)
    if t % WANDER_BLOCK == 0 and x.is_contiguous():
        blocked = x.view(b * c, blocks, WANDER_BLOCK)                              # (B*C, J, R)
        blocked.baddbmm_(left, right)
    else:
        x.add_(torch.bmm(left, right).reshape(b, c, blocks * WANDER_BLOCK)[..., :t])
    return x
