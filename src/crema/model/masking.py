"""Per-lead random patch masking with the same number of visible patches in every lead.

Each lead of each ECG gets its own random subset of visible time patches, but the count is
the same everywhere, so the visible tokens of a batch form a rectangular ``(B, C, K)`` grid
and no padding is needed. The subset comes from sorting uniform noise: the ``K`` patches
with the smallest noise stay visible, which draws a uniformly random K-subset in one
vectorised call.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Masking:
    """One draw of patch masks.

    Attributes:
        keep_idx: long ``(B, C, K)``, the visible patch positions of each lead, ascending.
        mask: bool ``(B, C, N)``, True = masked (hidden from the encoder).
        restore_idx: long ``(B, C, N)``, where each patch sits in the ``[visible, masked]``
            ordering: ``cat([visible, masked], -2).gather(-2, restore_idx)`` puts tokens back
            in time order.
    """

    keep_idx: Tensor
    mask: Tensor
    restore_idx: Tensor

    @property
    def n_visible(self) -> int:
        return self.keep_idx.shape[-1]


def n_visible(n_patches: int, mask_ratio: float) -> int:
    """Visible patches per lead: ``round(N * (1 - ratio))``, at least one, at most ``N``."""
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask ratio must be in [0, 1), got {mask_ratio}")
    return min(n_patches, max(1, int(round(n_patches * (1.0 - mask_ratio)))))


def random_masking(batch: int, n_leads: int, n_patches: int, mask_ratio: float,
                   generator: torch.Generator | None = None,
                   device: torch.device | str | None = None, mode: str = "per_lead") -> Masking:
    """Draw a random mask for every lead of every ECG.

    Args:
        batch, n_leads, n_patches: the grid ``(B, C, N)``.
        mask_ratio: fraction of each lead's patches to hide.
        generator: makes the draw reproducible; the noise is drawn on its device, then moved.
        device: where the returned indices live (default: the generator's device, else CPU).
        mode: ``per_lead`` draws each lead's subset independently; ``time`` hides the same time
            patches in every lead. Limb leads are linear combinations of two others (Einthoven,
            Goldberger), so with per-lead masks a hidden patch can often be rebuilt from the
            same moment in other leads; time-aligned masks leave only temporal context.

    Returns:
        :class:`Masking` with ``keep_idx (B, C, K)``, ``mask (B, C, N)``, ``restore_idx (B, C, N)``.
    """
    if mode not in ("per_lead", "time"):
        raise ValueError(f"unknown mask mode {mode!r}; choose 'per_lead' or 'time'")
    k = n_visible(n_patches, mask_ratio)
    noise_device = generator.device if generator is not None else device
    noise_leads = n_leads if mode == "per_lead" else 1
    noise = torch.rand(batch, noise_leads, n_patches, generator=generator, device=noise_device)
    noise = noise.expand(batch, n_leads, n_patches)
    if device is not None:
        noise = noise.to(device)
    order = noise.argsort(dim=-1)                                   # (B, C, N): visible first
    # Ascending positions keep each lead's tokens in time order, which makes the encoder's
    # token layout easy to read and costs one small sort.
    keep_idx = order[..., :k].sort(dim=-1).values                   # (B, C, K)
    masked_idx = order[..., k:].sort(dim=-1).values                 # (B, C, N - K)
    order = torch.cat([keep_idx, masked_idx], dim=-1)
    restore_idx = order.argsort(dim=-1)
    mask = torch.ones(batch, n_leads, n_patches, dtype=torch.bool, device=order.device)
    mask.scatter_(-1, keep_idx, False)
    return Masking(keep_idx=keep_idx, mask=mask, restore_idx=restore_idx)
