"""Supervised training of a classifier: fine-tuning a pretrained SiT, or training a SiT or the
1-D ResNet baseline from scratch (supervised from scratch = fine-tune from a random init).

This module is the training half (its config, :class:`crema.config.FinetuneConfig`, is with the
others so that the CLI builds its flags without importing torch): the model, layer-wise lr decay,
the loader, one epoch and the loop (:func:`fit`: epochs, validation after each, early stopping,
the best epoch's weights). The evaluation around it (label split, what validation scores, LP-FT's
probe head, thresholds, test metrics, ``results.json``) is :func:`crema.eval.finetune.finetune`,
which the CLI wraps::

    crema finetune --checkpoint runs/pretrain --corpus runs/corpora/ptbxl --task ptbxl-superdiagnostic --out runs/ft
    crema finetune --init random --arch resnet1d --corpus runs/corpora/ptbxl --task ptbxl-superdiagnostic --out runs/rn

Recipe: encoder + linear head, multi-label BCE on logits (one-vs-rest for a multi-class task; for a
regression task the mean squared error on the standardised target), AdamW with linear warm-up and a cosine
decay per optimiser step, layer-wise learning-rate decay for a pretrained encoder (``patch_embed``,
``lead_embed``, ``cls_token`` are layer 0, ``blocks.i`` layer ``i + 1``, ``norm`` and the head
layer ``depth + 1``; each layer's lr is scaled by ``layer_decay ** (depth + 1 - layer)``); optional
gradient accumulation (``accum_steps`` batches per optimiser step) and clipping of the global
gradient norm (``grad_clip``).
"""
from __future__ import annotations

import itertools
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .. import precision
from ..atomic import atomic_write_text
from ..config import FinetuneConfig, ModelConfig
from ..config_io import from_dict, to_dict
from ..data.dataset import ECGWindows
from ..data.loader import BatchLoader, ShuffledBatches, batch_loader
from ..errors import CremaError
from ..interrupts import raise_if_stopped
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
                    ) -> BatchLoader:
    """Shuffled, augmented, labelled training batches: ``signal (B, 12, crop)``, ``lead_mask
    (B, 12)``, ``label (B, K)``, each read, cropped and augmented as a whole (the batched
    stream of :func:`crema.data.loader.batch_loader`); call ``.set_epoch(epoch)`` for another
    order and fresh draws."""
    dataset = ECGWindows(corpus, rows, labels=y, augment=cfg.augment, crop=crop, seed=cfg.seed)
    # a last batch of one ECG breaks BatchNorm in training mode; drop it only then
    drop_last = len(rows) > cfg.batch_size and len(rows) % cfg.batch_size == 1
    batches = ShuffledBatches(len(dataset), cfg.batch_size, seed=cfg.seed, drop_last=drop_last)
    return batch_loader(dataset, batches, num_workers=cfg.num_workers)


def loss_for(task_type: str) -> nn.Module:
    """The training loss of a task type: BCE on logits for classification (multi-label, and
    multi-class one-vs-rest), mean squared error for a regression target (given standardised)."""
    return nn.MSELoss() if task_type == "regression" else nn.BCEWithLogitsLoss()


def make_optimizer(model: nn.Module, cfg: FinetuneConfig) -> torch.optim.AdamW:
    """AdamW over :func:`layer_decay_groups` (``cfg.effective_layer_decay``), at ``cfg.lr``."""
    groups = layer_decay_groups(model, cfg.weight_decay, cfg.effective_layer_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _batch_loss(model: nn.Module, batch: dict, loss_fn: nn.Module, amp: str, device: torch.device) -> torch.Tensor:
    """The mean loss of one batch: ``signal (B, 12, T)``, ``lead_mask (B, 12)``, ``label (B, K)``."""
    x = batch["signal"].to(device, non_blocking=True)
    mask = batch["lead_mask"].to(device, non_blocking=True)
    target = batch["label"].to(device, torch.float32)
    with precision.autocast(device, amp):
        return loss_fn(model(x, lead_mask=mask), target)


def train_epoch(model: nn.Module, loader: BatchLoader | DataLoader, optimizer: torch.optim.Optimizer,
                cfg: FinetuneConfig, step: int, warmup: int, total_steps: int, device: torch.device,
                task_type: str = "multilabel") -> tuple[list[float], int]:
    """One pass over ``loader`` with the task's loss (:func:`loss_for`): an optimiser step every
    ``cfg.accum_steps`` batches (the epoch's last step takes the batches left), the global gradient
    norm clipped to ``cfg.grad_clip`` first (0 = no clipping), the lr set per step by the warm-up +
    cosine schedule. Returns ``(loss of each step, step after the epoch)``.

    Each batch's mean loss is weighted by its share of the step's ECGs, so that ``accum_steps``
    batches of B give the gradient (and loss) of one batch of ``accum_steps x B`` (BatchNorm, in
    the ResNet, still sees batches of B).
    """
    model.train()
    loss_fn = loss_for(task_type)
    losses = []
    batches = iter(loader)
    # the step's batches are read first: each one's weight needs the step's number of ECGs
    while group := list(itertools.islice(batches, cfg.accum_steps)):
        set_lr(optimizer, lr_at(step, cfg.lr, cfg.min_lr, warmup, total_steps))
        optimizer.zero_grad(set_to_none=True)
        total = sum(len(batch["label"]) for batch in group)
        step_loss = 0.0
        for batch in group:
            loss = _batch_loss(model, batch, loss_fn, cfg.amp, device) * (len(batch["label"]) / total)
            loss.backward()
            step_loss += loss.item()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        losses.append(step_loss)
        step += 1
        raise_if_stopped()  # a Ctrl-C or SIGTERM whose exception C code swallowed stops here
    return losses, step


# ----------------------------------------------------------------------------- the loop

LOG_FILE = "finetune_log.jsonl"  # one JSON line per epoch (and the starting head's, if any)

# The validation of the model as it is now: (score, fields for the log). Early stopping keeps the
# highest score; the fields (e.g. val_auroc, val_bce) go into the epoch's history entry.
Validate = Callable[[], tuple[float, dict[str, Any]]]


@dataclass
class FitResult:
    """What :func:`fit` did; the model it trained holds the best epoch's weights.

    Attributes:
        history: one entry per epoch run (``epoch``, ``step``, ``train_loss``, the validation
            fields, ``lr``, ``seconds``), after the starting head's (``epoch`` -1) if one was given.
        best_epoch: the epoch with the highest validation score (the first, on ties; -1: the start).
        best_val: that epoch's validation fields.
    """

    history: list[dict]
    best_epoch: int
    best_val: dict

    @property
    def epochs_run(self) -> int:
        return sum(entry["epoch"] >= 0 for entry in self.history)


def fit(model: nn.Module, loader: BatchLoader | DataLoader, cfg: FinetuneConfig, device: torch.device,
        validate: Validate, out: str | os.PathLike, *, task_type: str = "multilabel",
        start: tuple[float, dict] | None = None, progress: bool = True) -> FitResult:
    """Train ``model`` for up to ``cfg.epochs`` epochs (:func:`train_epoch`, AdamW of
    :func:`make_optimizer`), validating after each, and stop after ``cfg.patience`` epochs without a
    better score; then load the best epoch's weights into ``model``.

    Args:
        loader: the training batches (:func:`training_loader`); its ``set_epoch(epoch)`` (else its
            dataset's) is called before each epoch when it has one (fresh order, crops and
            augmentations).
        validate: scores the model as it is now (see :data:`Validate`).
        out: the run folder; the history is written there as ``finetune_log.jsonl`` after each epoch.
        start: ``(score, fields)`` of the model before training (LP-FT's probe head): logged as
            epoch -1 and the best so far, so early stopping never ends below it.

    Raises:
        CremaError: the loss or the weights became NaN or infinite (nothing of the run may be
            written as a result).
    """
    out = Path(out)
    optimizer = make_optimizer(model, cfg)
    steps_per_epoch = max(1, math.ceil(len(loader) / cfg.accum_steps))
    total_steps = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    out.mkdir(parents=True, exist_ok=True)
    history: list[dict] = []
    best = {"score": -math.inf, "epoch": -1, "val": {}, "state": None}
    if start is not None:
        score, fields = start
        history.append({"epoch": -1, "step": 0, "train_loss": None, **fields})
        best = {"score": score, "epoch": -1, "val": fields, "state": state_copy(model)}
    step, stale = 0, 0
    set_epoch = getattr(loader, "set_epoch", None) or getattr(loader.dataset, "set_epoch", None)
    for epoch in tqdm(range(cfg.epochs), desc=f"finetune {cfg.arch}", disable=not progress):
        if set_epoch is not None:
            set_epoch(epoch)
        t0 = time.perf_counter()
        losses, step = train_epoch(model, loader, optimizer, cfg, step, warmup, total_steps, device, task_type)
        if not (np.all(np.isfinite(losses)) and all(bool(torch.isfinite(w).all()) for w in model.parameters())):
            raise CremaError(f"{out}: training diverged in epoch {epoch} (the loss or the weights became NaN or "
                             "infinite); stopped without writing a classifier; try a lower --lr, or --amp fp32")
        score, fields = validate()
        history.append({"epoch": epoch, "step": step, "train_loss": float(np.mean(losses)) if losses else None,
                        **fields, "lr": optimizer.param_groups[-1]["lr"],
                        "seconds": round(time.perf_counter() - t0, 3)})
        atomic_write_text(out / LOG_FILE, "".join(json.dumps(entry) + "\n" for entry in history))
        if score > best["score"]:
            best = {"score": score, "epoch": epoch, "val": fields, "state": state_copy(model)}
            stale = 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    model.load_state_dict(best["state"])
    return FitResult(history, best["epoch"], best["val"])


def state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of ``model``'s state dict (the best epoch so far, kept while training goes on)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
