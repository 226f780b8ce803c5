"""The reconstruction loss: target patches (each normalised by its own mean and std when
``norm_target``) and the mean squared error on the masked patches of present leads."""
from __future__ import annotations

import torch
from torch import Tensor

# Variance floor for per-patch target normalisation. Z-scored ECGs have many near-flat
# patches (about a tenth of 0.2 s patches have std < 0.07): MAE's 1e-6 would blow their noise
# up to unit variance and make them unpredictable targets; 1e-2 caps the gain at 10x.
TARGET_VAR_EPS = 1e-2


def patch_targets(patches: Tensor, normalise: bool) -> Tensor:
    """``(..., P)`` target patches, each normalised by its own mean and std if asked."""
    if not normalise:
        return patches
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True, unbiased=False)
    return (patches - mean) / torch.sqrt(var + TARGET_VAR_EPS)


def denormalise_prediction(pred: Tensor, true_patches: Tensor) -> Tensor:
    """Map normalised patch predictions ``(..., P)`` back to signal units with the mean and
    std of the *true* patch: the inverse of :func:`patch_targets`, used for display only."""
    mean = true_patches.mean(dim=-1, keepdim=True)
    var = true_patches.var(dim=-1, keepdim=True, unbiased=False)
    return pred * torch.sqrt(var + TARGET_VAR_EPS) + mean


def masked_mse(pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Mean squared error over the patches where ``weight (B, C, N)`` is True.

    ``pred``/``target`` are ``(B, C, N, P)``; each chosen patch counts once (mean over ``P``).
    """
    per_patch = (pred - target).pow(2).mean(dim=-1)                                   # (B, C, N)
    weight = weight.to(per_patch.dtype)
    return (per_patch * weight).sum() / weight.sum().clamp_min(1.0)
