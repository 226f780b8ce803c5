"""Classification heads on top of a pretrained (or random) SiT encoder."""
from __future__ import annotations

import torch
from torch import nn


def encoder_dim(encoder: nn.Module) -> int:
    """Width D of an encoder's pooled representation.

    The SiT contract gives every encoder a final ``norm`` (LayerNorm over D); a ``cfg.dim``
    attribute is used when present.
    """
    cfg = getattr(encoder, "cfg", None)
    if cfg is not None and hasattr(cfg, "dim"):
        return int(cfg.dim)
    norm = getattr(encoder, "norm", None)
    if isinstance(norm, nn.LayerNorm):
        return int(norm.normalized_shape[-1])
    raise TypeError(f"cannot tell the output width of {type(encoder).__name__}: no cfg.dim or LayerNorm 'norm'")


class Classifier(nn.Module):
    """Encoder + dropout + linear head, for fine-tuning and supervised training.

    Parameter names start with ``encoder.`` or ``head.``, which the layer-wise learning-rate
    decay in :mod:`crema.train.finetune` relies on.

    Args:
        encoder: maps ``(B, C, T)`` (+ optional lead mask ``(B, C)``) to ``(B, D)``.
        n_classes: K outputs (logits, one per class; multi-label).
        dropout: dropout on the pooled representation before the head.
    """

    def __init__(self, encoder: nn.Module, n_classes: int, dropout: float = 0.0):
        super().__init__()
        self.encoder = encoder
        self.n_classes = n_classes
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder_dim(encoder), n_classes)
        # a small head init keeps the first fine-tuning steps from wrecking pretrained features
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)

    def features(self, x: torch.Tensor, lead_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled representation ``(B, D)`` of signals ``(B, C, T)``."""
        return self.encoder(x, lead_mask=lead_mask)

    def forward(self, x: torch.Tensor, lead_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, K)`` of signals ``(B, C, T)``; ``lead_mask`` ``(B, C)`` bool, True = present."""
        return fp32_head(self.head, self.dropout(self.features(x, lead_mask)))


def fp32_head(head: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """``head(features)`` in fp32 even under bf16 autocast: logits rounded to bf16's 8-bit
    mantissa tie many records' probabilities, which moves AUROCs and thresholds. ``(B, D) -> (B, K)``."""
    with torch.autocast(device_type=features.device.type, enabled=False):
        return head(features.float())


class Probabilities(nn.Module):
    """Wrap a classifier so that it returns sigmoid probabilities ``(B, K)`` instead of logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, lead_mask: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.model(x, lead_mask=lead_mask))
