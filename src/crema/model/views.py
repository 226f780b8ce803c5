"""The views of a pretraining batch: each ECG cropped, lightly augmented and masked, once per
view.

A view is its own ``W``-sample crop of the record (``view_crop``: ``disjoint``, the default, takes
non-overlapping crops, so the views share no samples; ``random`` independent crops; ``same`` one
shared crop), lightly augmented (amplitude scale, Gaussian noise, baseline wander) and given its
own random mask (``mask_mode``: per lead, or the same time patches in every lead). The views are
stacked view-major along the batch, so that the encoder sees them in one call.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import ObjectiveConfig
from ..data.augment import WANDER_LOW_HZ, WANDER_SINES, WANDER_SPAN_HZ, wander_drift
from .masking import random_masking


def augment_view(x: Tensor, scale: float, noise: float, wander: float, fs: float,
                 generator: torch.Generator | None = None) -> Tensor:
    """A lightly perturbed copy of ``x (B, C, T)``, drawn independently per ECG and lead.

    Amplitude is scaled by ``1 + U(-scale, scale)``; Gaussian noise of std ``noise`` is added;
    baseline wander is two sines of 0.05-0.5 Hz with random phases and amplitudes up to
    ``wander`` (:func:`crema.data.augment.wander_drift`). All draws come from ``generator`` (CPU)
    when given, so views are reproducible. Zero settings draw nothing.
    """
    if scale == 0 and noise == 0 and wander == 0:
        return x
    b, c, t = x.shape
    dev = generator.device if generator is not None else x.device

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=generator, device=dev).to(x.device, x.dtype)

    out = x
    if scale:
        out = out * (1.0 + scale * (2.0 * rand(b, c, 1) - 1.0))
    if noise:
        out = out + noise * torch.randn(b, c, t, generator=generator, device=dev).to(x.device, x.dtype)
    if wander:
        seconds = torch.arange(t, device=x.device, dtype=x.dtype) / fs               # (T,)
        freq = WANDER_LOW_HZ + WANDER_SPAN_HZ * rand(b, c, WANDER_SINES, 1)          # Hz
        phase = 2.0 * math.pi * rand(b, c, WANDER_SINES, 1)
        amp = wander * rand(b, c, WANDER_SINES, 1)
        out = out + wander_drift(seconds, freq, phase, amp, sin=torch.sin)
    return out


def crop_starts_for_views(batch: int, length: int, window: int, n_views: int, how: str,
                          generator: torch.Generator | None = None) -> Tensor | None:
    """Start samples ``(V, B)`` of each view's crop of a ``length``-sample signal, or None when
    the signal is already one window long (no crop, nothing drawn).

    ``same``: one random crop shared by all views; ``random``: an independent crop per view
    (they may overlap); ``disjoint``: two non-overlapping crops in random order, the contrastive
    positives of CLOCS/CMSC (two moments of one recording, so matching them needs what is
    stable in the patient's ECG rather than shared samples).
    """
    if length == window:
        return None
    if length < window:
        raise ValueError(f"signal of {length} samples is shorter than the model window {window}")
    dev = generator.device if generator is not None else None

    def uniform_int(high: Tensor | int) -> Tensor:
        """Integers in ``[0, high]`` per ECG."""
        u = torch.rand(batch, generator=generator, device=dev)
        return torch.floor(u * (torch.as_tensor(high, dtype=torch.float32, device=u.device) + 1)).long()

    if how == "same" or n_views == 1:  # one view (mode mae): a random crop whatever the setting
        return uniform_int(length - window).expand(n_views, batch).clone()
    if how == "random":
        return torch.stack([uniform_int(length - window) for _ in range(n_views)])
    if how == "disjoint":
        if n_views != 2 or length < 2 * window:
            raise ValueError(f"disjoint views need two crops of {window} in {length} samples")
        first = uniform_int(length - 2 * window)
        second = first + window + uniform_int(length - 2 * window - first)
        swap = torch.rand(batch, generator=generator, device=dev) < 0.5
        return torch.stack([torch.where(swap, second, first), torch.where(swap, first, second)])
    raise ValueError(f"unknown view_crop {how!r}; choose 'same', 'random' or 'disjoint'")


def take_crops(x: Tensor, starts: Tensor, window: int) -> Tensor:
    """``x (B, C, T)`` cropped at per-ECG ``starts (B,)`` -> ``(B, C, window)``."""
    idx = starts.to(x.device)[:, None] + torch.arange(window, device=x.device)       # (B, window)
    return x.gather(2, idx[:, None, :].expand(-1, x.shape[1], -1))


@dataclass
class Views:
    """The views of a batch, stacked view-major along the batch (``VB = V * B`` rows).

    Attributes:
        clean: ``(VB, C, W)`` each view's crop before augmentation (the reconstruction target).
        signal: ``(VB, C, W)`` the augmented crops the encoder sees.
        keep_idx: long ``(VB, C, K)`` visible patches; mask: bool ``(VB, C, N)``, True = masked.
    """

    clean: Tensor
    signal: Tensor
    keep_idx: Tensor
    mask: Tensor


def make_views(x: Tensor, objective: ObjectiveConfig, window: int, patch_size: int, n_views: int,
               fs: float, generator: torch.Generator | None = None) -> Views:
    """Crop, augment and mask ``x (B, C, T)`` into ``n_views`` :class:`Views` (``T >= window``).

    Draw order: crop starts for all views, then view by view augmentation and mask, so with ``T``
    equal to the window one view (mode ``mae``) is exactly view 1 of two (mode ``crema``).
    """
    obj = objective
    b, c, t = x.shape
    starts = crop_starts_for_views(b, t, min(window, t), n_views, obj.view_crop, generator)
    clean, signal, keeps, masks = [], [], [], []
    for v in range(n_views):
        crop = x if starts is None else take_crops(x, starts[v], window)
        clean.append(crop)
        signal.append(augment_view(crop, obj.aug_scale, obj.aug_noise, obj.aug_wander, fs, generator))
        m = random_masking(b, c, crop.shape[-1] // patch_size, obj.mask_ratio,
                           generator, device=x.device, mode=obj.mask_mode)
        keeps.append(m.keep_idx)
        masks.append(m.mask)
    return Views(torch.cat(clean), torch.cat(signal), torch.cat(keeps), torch.cat(masks))
