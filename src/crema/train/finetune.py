"""Supervised training of a classifier: fine-tuning a pretrained SiT, or training a SiT or the
1-D ResNet baseline from scratch (supervised from scratch = fine-tune from a random init).

Usage (the CLI wraps :func:`finetune`)::

    crema finetune --checkpoint runs/pretrain --corpus runs/corpora/ptbxl --task ptbxl-superdiagnostic --out runs/ft
    crema finetune --init random --arch resnet1d --corpus runs/corpora/ptbxl --task ptbxl-superdiagnostic --out runs/rn

Recipe: encoder + linear head, multi-label BCE on logits, AdamW with linear warm-up and a cosine
decay per step, layer-wise learning-rate decay for a pretrained encoder (``patch_embed``,
``lead_embed``, ``cls_token`` are layer 0, ``blocks.i`` layer ``i + 1``, ``norm`` and the head
layer ``depth + 1``; each layer's lr is scaled by ``layer_decay ** (depth + 1 - layer)``),
early stopping on validation macro AUROC. The best epoch is saved as a checkpoint folder
(``model.safetensors`` + ``config.json`` of kind ``classifier``) with F1 thresholds picked on
validation, next to ``finetune_log.jsonl`` and a ``results.json`` with its test metrics.
"""
from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .. import precision
from ..config import AugmentConfig, ModelConfig, atomic_write_text, from_dict, to_dict
from ..errors import CremaError
from ..model.heads import Classifier
from ..model.resnet1d import ResNet1d, ResNet1dConfig
from .checkpoint import load_checkpoint, load_encoder, load_state_into, save_checkpoint
from .schedule import is_no_decay, lr_at, set_lr

DEFAULT_LAYER_DECAY = 0.75  # for a pretrained encoder; training from scratch uses 1.0


@dataclass(frozen=True)
class FinetuneConfig:
    """One supervised training run; written into the checkpoint's ``config.json``."""

    corpus: str = ""                        # prepared corpus folder
    task: str = "ptbxl-superdiagnostic"     # label task in the corpus
    out: str = "runs/finetune"              # output folder (the classifier checkpoint)
    arch: Literal["sit", "resnet1d"] = "sit"  # encoder architecture
    checkpoint: str | None = None           # pretrained checkpoint folder; None = random init
    size: str = "tiny"                      # SiT preset for a random init
    model: dict | None = None               # ModelConfig overrides for a random-init SiT
    resnet: ResNet1dConfig = field(default_factory=ResNet1dConfig)  # ResNet1d widths
    epochs: int = 30                        # maximum epochs
    batch_size: int = 32                    # ECGs per step
    lr: float = 5e-4                        # peak learning rate (after warm-up)
    min_lr: float = 1e-6                    # floor of the cosine decay
    warmup_epochs: float = 1.0              # linear warm-up length, epochs
    weight_decay: float = 0.05              # AdamW weight decay (not norms, biases, embeddings)
    layer_decay: float | None = None        # None = 0.75 from a checkpoint, 1.0 from scratch
    dropout: float = 0.0                    # dropout before the linear head
    probe_init: bool = False                # LP-FT: start the head from a logistic probe on frozen
                                            # features (C on validation); the probe is "epoch -1", so
                                            # early stopping never ends below it on validation
    patience: int = 5                       # epochs without a better validation AUROC before stopping
    fraction: float = 1.0                   # fraction of labelled training records used
    seed: int = 0                           # init, data order, label subset, augmentation
    holdout_source: str | None = None       # leave-one-source-out: test on this source only
    sources: tuple[str, ...] | None = None  # restrict train/val (and test) to these sources
    crop: int | None = None                 # training crop length; None = model window (SiT) / corpus window
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # training augmentation
    eval_batch_size: int = 128              # ECGs per inference batch
    n_bootstrap: int = 1000                 # bootstrap resamples for test intervals
    device: str = "auto"                    # auto = cuda if available, else cpu
    num_workers: int = 0                    # DataLoader worker processes
    amp: Literal["auto", "bf16", "fp32", "off"] = "auto"  # training in bf16 autocast where the device has fast
                                            # bf16; validation and test stay fp32, like every evaluation

    @property
    def effective_layer_decay(self) -> float:
        if self.layer_decay is not None:
            return self.layer_decay
        return DEFAULT_LAYER_DECAY if self.checkpoint else 1.0


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

def _corpus_preprocess(corpus) -> dict:
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
        ckpt_fs = (ckpt_cfg.get("preprocess") or {}).get("fs")
        if ckpt_fs is not None and float(ckpt_fs) != float(corpus_fs):
            raise CremaError(f"{cfg.checkpoint}: the model was trained at {ckpt_fs} Hz but the corpus "
                             f"{cfg.corpus} is at {corpus_fs} Hz; prepare the corpus at the model's rate")
        model_cfg = encoder.cfg
    else:
        from ..model.sit import SiTEncoder
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
    (applied to ``sigmoid(logits)``).
    """
    state, config = load_checkpoint(directory, map_location)
    if config.get("kind") != "classifier":
        raise CremaError(f"{directory}: not a classifier checkpoint (kind {config.get('kind')!r})")
    n_classes = len(config.get("classes", []))
    arch = config.get("arch", "sit")
    try:
        if arch == "resnet1d":
            model: nn.Module = ResNet1d.from_config(from_dict(ResNet1dConfig, config["model"]), n_classes)
        elif arch == "sit":
            from ..model.sit import SiTEncoder
            model = Classifier(SiTEncoder(from_dict(ModelConfig, config["model"])), n_classes)
        else:
            raise CremaError(f"{directory}: unknown classifier arch {arch!r}")
    except (KeyError, TypeError, ValueError) as exc:
        raise CremaError(f"{directory}: bad classifier config ({exc})") from exc
    load_state_into(model, state, directory)
    return model.to(map_location).eval(), config


class Probabilities(nn.Module):
    """Wrap a classifier so that it returns probabilities ``(B, K)`` instead of logits."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, lead_mask: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.model(x, lead_mask=lead_mask))


# ----------------------------------------------------------------------------- training

def _loader(corpus, rows: np.ndarray, y: np.ndarray, cfg: FinetuneConfig, crop: int | None) -> DataLoader:
    from ..data.dataset import ECGWindows

    dataset = ECGWindows(corpus, rows, labels=y, augment=cfg.augment, crop=crop, seed=cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    # a last batch of one ECG breaks BatchNorm in training mode; drop it only then
    drop_last = len(rows) > cfg.batch_size and len(rows) % cfg.batch_size == 1
    return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, generator=generator,
                      num_workers=cfg.num_workers, drop_last=drop_last)


def predict_proba(model: nn.Module, corpus, rows: np.ndarray, crop: int | None, batch_size: int,
                  device: torch.device, transform=None, progress: bool = False) -> np.ndarray:
    """Probabilities ``(n, K)`` of a classifier over corpus rows (crops averaged, see features)."""
    from ..eval.features import apply_model

    return apply_model(Probabilities(model), corpus, rows, crop, batch_size, transform, device,
                       desc="predict", progress=progress).astype(np.float64)


def record_level(probs: np.ndarray, split, part: str) -> tuple[np.ndarray, np.ndarray]:
    """Window probabilities -> per-record ``(y (R, K), probs (R, K))``."""
    from ..eval.probe import record_mean

    means, first = record_mean(probs, split.keys[part])
    return split.y[part][first], means


def _validation_score(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """``(macro AUROC, BCE)``; early stopping uses AUROC, or minus BCE when no class has both
    a positive and a negative in validation."""
    from ..eval import metrics

    au = metrics.auroc(y, p).macro
    clipped = np.clip(p, 1e-7, 1 - 1e-7)
    bce = float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)))
    return au, bce


def init_head_from_probe(model: nn.Module, corpus, train_rows: np.ndarray, train_y: np.ndarray, split,
                         crop: int | None, cfg: FinetuneConfig, device: torch.device) -> None:
    """LP-FT (Kumar et al. 2022): fit the logistic probe on the frozen encoder's features of the
    training rows (C chosen on validation) and copy it into ``model.head``, so fine-tuning starts
    from the probe instead of a random head that would first distort the pretrained features."""
    from ..eval.features import encoder_features
    from ..eval.probe import fit_logistic_probe

    def feats(rows: np.ndarray) -> np.ndarray:
        return encoder_features(model.encoder, corpus, rows, crop, batch_size=cfg.eval_batch_size,
                                device=device, progress=False)

    probe, _ = fit_logistic_probe(feats(train_rows), train_y, feats(split.rows["val"]), split.y["val"],
                                  seed=cfg.seed)
    weight, bias = probe.as_linear()
    with torch.no_grad():
        model.head.weight.copy_(torch.as_tensor(weight, dtype=model.head.weight.dtype))
        model.head.bias.copy_(torch.as_tensor(bias, dtype=model.head.bias.dtype))


def finetune(cfg: FinetuneConfig, progress: bool = True, method: str | None = None) -> dict[str, Any]:
    """Train, early-stop, pick thresholds, test, and save the best classifier in ``cfg.out``.

    Args:
        method: the name results are filed under (default ``finetune_sit`` from a checkpoint,
            ``supervised_sit`` or ``supervised_resnet1d`` from scratch).

    Returns:
        the summary written to ``<out>/finetune_summary.json``: best epoch, validation AUROC per
        epoch, test metrics (:func:`crema.eval.metrics.evaluate`), sizes and data hashes, and
        ``result``, the entry of ``<out>/results.json``.
    """
    from ..data.corpus import Corpus
    from ..eval import metrics
    from ..eval.features import FINGERPRINT_WHAT, corpus_fingerprint, resolve_device, rows_sha256
    from ..eval.probe import fraction_subset, task_split
    from ..eval.report import make_result, write_results

    started = time.perf_counter()
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.patience < 1:
        raise CremaError(f"epochs ({cfg.epochs}), batch size ({cfg.batch_size}) and patience ({cfg.patience}) "
                         "must be at least 1")
    out = Path(cfg.out)
    corpus = Corpus(cfg.corpus)
    split = task_split(corpus, cfg.task, cfg.holdout_source, cfg.sources)
    keep = fraction_subset(split.y["train"], cfg.fraction, cfg.seed, groups=split.keys["train"])
    train_rows, train_y = split.rows["train"][keep], split.y["train"][keep]

    corpus_window = int(corpus.signals.shape[-1])
    preprocess = _corpus_preprocess(corpus)
    model, model_entry = build_classifier(cfg, len(split.classes), corpus_window, float(preprocess["fs"]))
    crop = cfg.crop or (min(model.encoder.cfg.window, corpus_window) if cfg.arch == "sit" else None)
    eval_crop = crop if cfg.arch == "sit" else None
    device = resolve_device(cfg.device)
    model.to(device)
    precision.autocast(device, cfg.amp)  # refuse a bad amp setting before any work

    layer_decay = cfg.effective_layer_decay
    optimizer = torch.optim.AdamW(layer_decay_groups(model, cfg.weight_decay, layer_decay), lr=cfg.lr)
    loader = _loader(corpus, train_rows, train_y, cfg, crop)
    steps_per_epoch = max(1, len(loader))
    total_steps = cfg.epochs * steps_per_epoch
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    loss_fn = nn.BCEWithLogitsLoss()

    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "finetune_log.jsonl"
    log_lines: list[str] = []
    history: list[dict] = []
    best = {"score": -math.inf, "epoch": -1, "state": None, "val_auroc": float("nan")}
    if cfg.probe_init:
        if cfg.arch != "sit":
            raise CremaError("--probe-init needs a SiT encoder (the ResNet baseline has no pretrained features)")
        init_head_from_probe(model, corpus, train_rows, train_y, split, eval_crop, cfg, device)
        y_val, p_val = record_level(predict_proba(model, corpus, split.rows["val"], eval_crop,
                                                  cfg.eval_batch_size, device), split, "val")
        val_auroc, val_bce = _validation_score(y_val, p_val)
        entry = {"epoch": -1, "step": 0, "train_loss": None, "head": "probe",
                 "val_auroc": None if not np.isfinite(val_auroc) else val_auroc, "val_bce": val_bce}
        history.append(entry)
        log_lines.append(json.dumps(entry))
        best = {"score": val_auroc if np.isfinite(val_auroc) else -val_bce, "epoch": -1, "val_auroc": val_auroc,
                "state": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}}
    step, stale = 0, 0
    for epoch in tqdm(range(cfg.epochs), desc=f"finetune {cfg.arch}", disable=not progress):
        model.train()
        loader.dataset.set_epoch(epoch)  # fresh crops and augmentations each epoch
        t0, losses = time.perf_counter(), []
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
        y_val, p_val = record_level(predict_proba(model, corpus, split.rows["val"], eval_crop,
                                                  cfg.eval_batch_size, device), split, "val")
        val_auroc, val_bce = _validation_score(y_val, p_val)
        score = val_auroc if np.isfinite(val_auroc) else -val_bce
        entry = {"epoch": epoch, "step": step, "train_loss": float(np.mean(losses)) if losses else None,
                 "val_auroc": None if not np.isfinite(val_auroc) else val_auroc, "val_bce": val_bce,
                 "lr": optimizer.param_groups[-1]["lr"], "seconds": round(time.perf_counter() - t0, 3)}
        history.append(entry)
        log_lines.append(json.dumps(entry))
        atomic_write_text(log_path, "\n".join(log_lines) + "\n")
        if score > best["score"]:
            best = {"score": score, "epoch": epoch, "val_auroc": val_auroc,
                    "state": {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}}
            stale = 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break

    model.load_state_dict(best["state"])
    y_val, p_val = record_level(predict_proba(model, corpus, split.rows["val"], eval_crop,
                                              cfg.eval_batch_size, device), split, "val")
    thresholds = metrics.pick_thresholds(y_val, p_val)
    y_test, p_test = record_level(predict_proba(model, corpus, split.rows["test"], eval_crop,
                                                cfg.eval_batch_size, device), split, "test")
    evaluation = metrics.evaluate(y_test, p_test, split.classes, thresholds, cfg.n_bootstrap, seed=0,
                                  keep_replicates=True)
    data_sha = corpus_fingerprint(cfg.corpus)
    config = {
        "kind": "classifier", "arch": cfg.arch, "model": model_entry, "preprocess": preprocess,
        "task": cfg.task, "classes": split.classes, "thresholds": [float(t) for t in thresholds],
        "crop": eval_crop, "init": cfg.checkpoint or "random", "best_epoch": best["epoch"],
        "val_auroc": None if not np.isfinite(best["val_auroc"]) else float(best["val_auroc"]),
        "finetune": to_dict(cfg), "data_sha256": data_sha,
    }
    save_checkpoint(out, model, config)
    summary = {
        "best_epoch": best["epoch"], "epochs_run": sum(h["epoch"] >= 0 for h in history), "history": history,
        "layer_decay": layer_decay, "n_train": int(len(train_rows)), "n_val": int(len(split.rows["val"])),
        "n_test_windows": int(len(split.rows["test"])), "test": evaluation,
        "train_rows_sha256": rows_sha256(train_rows), "test_rows_sha256": rows_sha256(split.rows["test"]),
        "data_sha256": data_sha, "data_hash_of": FINGERPRINT_WHAT, "classes": split.classes,
        "seconds": round(time.perf_counter() - started, 3),
    }
    atomic_write_text(out / "finetune_summary.json", json.dumps(summary, indent=2) + "\n")
    method = method or default_method(cfg)
    result = make_result(
        step=str(out), method=method, protocol="finetune", task=cfg.task,
        experiment="leave_source_out" if cfg.holdout_source else "label_fraction", seed=cfg.seed,
        evaluation=evaluation, config=to_dict(cfg), data_sha256=data_sha,
        train_rows_sha256=summary["train_rows_sha256"], test_rows_sha256=summary["test_rows_sha256"],
        n_train=summary["n_train"], n_val=summary["n_val"], fraction=cfg.fraction,
        holdout_source=cfg.holdout_source)
    write_results(out / "results.json", [result], {cfg.corpus: {"sha256": data_sha, "hash_of": FINGERPRINT_WHAT}})
    return {**summary, "result": result}


def default_method(cfg: FinetuneConfig) -> str:
    """How results of a run are labelled when the caller gives no method name."""
    if cfg.arch == "resnet1d":
        return "supervised_resnet1d"
    return "finetune_sit" if cfg.checkpoint else "supervised_sit"
