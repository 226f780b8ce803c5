"""Learning-rate schedule and optimiser parameter groups.

The schedule is a pure function of the step, so resuming needs only the step count.
"""
from __future__ import annotations

import math

import torch
from torch import nn

# Parameter names (last component) that are embeddings or learned tokens: weight decay would
# pull them towards zero for no benefit, as with norms and biases.
NO_DECAY_NAMES = ("lead_embed", "cls_token", "mask_token", "time_embed", "pos_embed")


def lr_at(step: int, base_lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Linear warm-up from ``base_lr / warmup`` to ``base_lr`` over ``warmup_steps``, then a
    half-cosine down to ``min_lr`` at ``total_steps``. ``step`` counts from 0."""
    if warmup_steps > 0 and step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def scaled_lr(blr: float, effective_batch: int) -> float:
    """The linear scaling rule: ``lr = blr * effective_batch / 256``."""
    return blr * effective_batch / 256.0


def is_no_decay(name: str, param: torch.Tensor) -> bool:
    """Norm weights, biases (all 1-D) and embeddings/tokens are not decayed."""
    return param.ndim <= 1 or name.split(".")[-1] in NO_DECAY_NAMES


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: ``decay`` (matrices, conv kernels) and ``no_decay`` (the rest)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if is_no_decay(name, param) else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate (times the group's ``lr_scale`` if it has one)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)


def make_adamw(model: nn.Module, lr: float, weight_decay: float,
               betas: tuple[float, float] = (0.9, 0.95)) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`, fused into one kernel per step where this torch build
    supports it (about half the optimiser time of the per-tensor loop on CPU)."""
    groups = param_groups(model, weight_decay)
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas)
