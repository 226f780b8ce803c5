"""Supervised training of a classifier: fine-tuning a pretrained SiT, or training a SiT or the
1-D ResNet baseline from scratch (supervised from scratch = fine-tune from a random init).

This module is the training half (its config, :class:`crema.config.FinetuneConfig`, is with the
others so that the CLI builds its flags without importing torch): the model, layer-wise lr decay, the loader and
one epoch. The protocol around it (label split, early stopping on validation AUROC, thresholds,
test metrics, ``results.json``) is :func:`crema.eval.finetune.finetune`, which the CLI wraps::

    crema finetune --checkpoint runs/pretrain --corpus runs/corpora/ptbxl --task ptbxl-superdiagnostic --out runs/ft
    crema finetune --init random --arch resnet1d --corpus runs/corpora/ptbxl --task ptbxl-superdiagnostic --out runs/rn

Recipe: encoder + linear head, multi-label BCE on logits (one-vs-rest for a multi-class task; for a
regression task the mean squared error on the standardised target), AdamW with linear warm-up and a cosine
decay per step, layer-wise learning-rate decay for a pretrained encoder (``patch_embed``,
``lead_embed``, ``cls_token`` are layer 0, ``blocks.i`` layer ``i + 1``, ``norm`` and the head
layer ``depth + 1``; each layer's lr is scaled by ``layer_decay ** (depth + 1 - layer)``).
"""
from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .. import precision
from ..config import FinetuneConfig, ModelConfig, from_dict, to_dict
from ..data.dataset import ECGWindows
from ..errors import CremaError
from ..model.heads import Classifier
from ..model.resnet1d import ResNet1d
from ..model.sit import SiTEncoder
from ..weights import resolve as resolve_model
from ..model.checkpoint import check_corpus_rate, load_config, load_encoder, load_network, model_fs
from .schedule import is_no_decay, lr_at, set_lr

# ----------------------------------------------------------------------------- layer-wise lr decay

def layer_id(name: str, depth: int) -> int:
    """Layer of a parameter for layer-wise lr decay, by its name in a :class:`Classifier` or
    :class:`ResNet1d`.

    SiT: ``encoder.patch_embed/lead_embed/cls_token`` -> 0, ``encoder.blocks.i`` -> ``i + 1``,
    ``encoder.norm`` and ``head`` -> ``depth + 1``. ResNet1d: ``stem`` -> 0, ``stages.i`` ->
    ``i + 1``, ``head`` -> ``depth + 1`` (``depth`` = number of stages).
    """
    parts = name.split(".")
    if parts[0] == "encoder":
        parts = parts[1:]
    if parts[0] in ("patch_embed", "lead_embed", "cls_token", "stem"):
        return 0
    if parts[0] in ("blocks", "stages"):
        return int(parts[1]) + 1
    return depth + 1


def model_depth(model: nn.Module) -> int:
    """Transformer blocks of a Classifier's encoder, or stages of a ResNet1d."""
    if isinstance(model, ResNet1d):
        return len(model.stages)
    return len(model.encoder.blocks)


def layer_decay_groups(model: nn.Module, weight_decay: float, layer_decay: float) -> list[dict]:
    """AdamW parameter groups with ``lr_scale = layer_decay ** (depth + 1 - layer)``, split into
    decayed (matrices, kernels) and undecayed (norms, biases, embeddings) parameters.

    Returns:
        groups with keys ``params``, ``names``, ``weight_decay``, ``lr_scale``, ``layer``.
    """
    depth = model_depth(model)
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        layer = layer_id(name, depth)
        no_decay = is_no_decay(name, param)
        group = groups.setdefault((layer, no_decay), {
            "params": [], "names": [], "layer": layer, "weight_decay": 0.0 if no_decay else weight_decay,
            "lr_scale": layer_decay ** (depth + 1 - layer)})
        group["params"].append(param)
        group["names"].append(name)
    return [groups[k] for k in sorted(groups)]


# ----------------------------------------------------------------------------- building models

def corpus_preprocess(corpus) -> dict:
    """The corpus's ``PreprocessConfig`` as the plain dict a checkpoint's config stores."""
    pre = corpus.preprocess
    return to_dict(pre) if not isinstance(pre, dict) else dict(pre)


def build_classifier(cfg: FinetuneConfig, n_classes: int, corpus_window: int, corpus_fs: float
                     ) -> tuple[nn.Module, dict[str, Any]]:
    """The model to train and the ``model`` entry of its checkpoint config.

    A pretrained checkpoint must have been made at the corpus sampling rate.
    """
    torch.manual_seed(cfg.seed)  # the head (and a random encoder) start the same for a seed
    if cfg.arch == "resnet1d":
        if cfg.checkpoint:
            raise CremaError("the ResNet1d baseline has no pretrained checkpoint; use --init random")
        model = ResNet1d.from_config(cfg.resnet, n_classes)
        return model, to_dict(cfg.resnet)
    if cfg.arch != "sit":
        raise CremaError(f"unknown arch {cfg.arch!r}; choose 'sit' or 'resnet1d'")
    if cfg.checkpoint:
        encoder, ckpt_cfg = load_encoder(cfg.checkpoint)
        check_corpus_rate(model_fs(ckpt_cfg), corpus_fs, cfg.checkpoint, cfg.corpus)
        model_cfg = encoder.cfg
    else:
        overrides = dict(cfg.model or {})
        size = overrides.pop("size", cfg.size)
        overrides.setdefault("window", corpus_window)
        model_cfg = from_dict(ModelConfig, {**to_dict(ModelConfig.from_size(size)), **overrides})
        encoder = SiTEncoder(model_cfg)
    torch.manual_seed(cfg.seed)
    return Classifier(encoder, n_classes, dropout=cfg.dropout), to_dict(model_cfg)


def load_classifier(directory: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> tuple[nn.Module, dict[str, Any]]:
    """A ``classifier`` checkpoint folder -> ``(model in eval mode, config dict)``.

    The model maps signals ``(B, 12, T)`` (+ lead mask ``(B, 12)``) to logits ``(B, K)``;
    ``config["classes"]`` names the K outputs and ``config["thresholds"]`` their F1 cut-offs
    (applied to ``sigmoid(logits)``). A regression head (``config["task_type"] == "regression"``)
    has one output, the standardised target: the value is ``output * target_std + target_mean``.
    """
    kind = load_config(resolve_model(directory)).get("kind")
    if kind != "classifier":
        raise CremaError(f"{directory}: not a classifier checkpoint (kind {kind!r})")
    return load_network(directory, map_location)


# ----------------------------------------------------------------------------- training

def training_loader(corpus, rows: np.ndarray, y: np.ndarray, cfg: FinetuneConfig, crop: int | None
                    ) -> DataLoader:
    """Shuffled, augmented, labelled training batches: ``signal (B, 12, crop)``, ``lead_mask
    (B, 12)``, ``label (B, K)``; call ``.dataset.set_epoch(epoch)`` for fresh draws."""
    dataset = ECGWindows(corpus, rows, labels=y, augment=cfg.augment, crop=crop, seed=cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    # a last batch of one ECG breaks BatchNorm in training mode; drop it only then
    drop_last = len(rows) > cfg.batch_size and len(rows) % cfg.batch_size == 1
    return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, generator=generator,
                      num_workers=cfg.num_workers, drop_last=drop_last)


def loss_for(task_type: str) -> nn.Module:
    """The training loss of a task type: BCE on logits for classification (multi-label, and
    multi-class one-vs-rest), mean squared error for a regression target (given standardised)."""
    return nn.MSELoss() if task_type == "regression" else nn.BCEWithLogitsLoss()


def train_epoch(model: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, cfg: FinetuneConfig,
                step: int, warmup: int, total_steps: int, device: torch.device,
                task_type: str = "multilabel") -> tuple[list[float], int]:
    """One pass over ``loader`` with the task's loss (:func:`loss_for`), the lr set per step by the
    warm-up + cosine schedule; returns ``(losses of the steps, step after the epoch)``."""
    model.train()
    loss_fn = loss_for(task_type)
    losses = []
    for batch in loader:
        set_lr(optimizer, lr_at(step, cfg.lr, cfg.min_lr, warmup, total_steps))
        x = batch["signal"].to(device, non_blocking=True)
        mask = batch["lead_mask"].to(device, non_blocking=True)
        target = batch["label"].to(device, torch.float32)
        with precision.autocast(device, cfg.amp):
            loss = loss_fn(model(x, lead_mask=mask), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        step += 1
    return losses, step


def state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of ``model``'s state dict (the best epoch so far, kept while training goes on)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
