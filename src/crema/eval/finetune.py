"""The fine-tuning protocol: split the labels, train a classifier with the loop of
:func:`crema.train.finetune.fit` (early stopping on what :func:`validation_entry` scores: validation
macro AUROC), pick F1 thresholds on validation, test once, and save the best epoch.

The best epoch is saved as a checkpoint folder (``model.safetensors`` + ``config.json`` of kind
``classifier``) with its thresholds, next to ``finetune_log.jsonl``, ``finetune_summary.json``
and a ``results.json`` with its test metrics. Scores are per record: the mean over a record's
windows (:meth:`crema.eval.splits.TaskSplit.record_level`).

A regression task trains one output on the target standardised with the training rows' mean and
standard deviation (:class:`Target`, stored in the checkpoint as ``target_mean``/``target_std``),
early-stops on the validation MAE and is tested with MAE and Pearson's r; it has no thresholds.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import precision
from ..atomic import atomic_write_text
from ..config import FinetuneConfig
from ..config_io import to_dict
from ..data.corpus import Corpus
from ..errors import CremaError
from ..runtime import resolve_device
from ..train.checkpoint import save_checkpoint
from ..train.finetune import build_classifier, corpus_preprocess, fit, training_loader
from . import metrics
from .features import (FINGERPRINT_WHAT, corpus_fingerprint, encoder_features, predict_proba, predict_values,
                       rows_sha256)
from .probe import fit_probe, probe_kind
from .splits import TaskSplit, fraction_subset, task_split
from .results import ResultRecord, write_results


@dataclass(frozen=True)
class Target:
    """How a regression head's one output maps to the target: ``value = output * std + mean``,
    with the mean and standard deviation of the training rows' values (the head learns the
    standardised target, so one learning rate suits targets of any scale)."""

    mean: float
    std: float

    @classmethod
    def of(cls, y: np.ndarray) -> "Target":
        """The target of training values ``y (n, 1)``; a constant target keeps std 1."""
        std = float(np.std(y))
        return cls(float(np.mean(y)), std if std > 0 else 1.0)

    def standardise(self, y: np.ndarray) -> np.ndarray:
        return ((np.asarray(y, dtype=np.float64) - self.mean) / self.std).astype(np.float32)


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def validation_score(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """``(macro AUROC, BCE)`` of record-level ``y, p (R, K)``; early stopping uses AUROC, or
    minus BCE when no class has both a positive and a negative in validation."""
    au = metrics.auroc(y, p).macro
    clipped = np.clip(p, 1e-7, 1 - 1e-7)
    bce = float(-np.mean(y * np.log(clipped) + (1 - y) * np.log(1 - clipped)))
    return au, bce


def validation_entry(task_type: str, y: np.ndarray, p: np.ndarray) -> tuple[float, dict]:
    """``(score, log fields)`` of record-level validation predictions ``y, p (R, K)``; early stopping
    keeps the highest score: macro AUROC (minus BCE when no class is evaluable), or minus the MAE
    of a regression target."""
    if task_type == "regression":
        error = metrics.mae(y, p)
        return -error, {"val_mae": error, "val_pearson": _finite(metrics.pearson(y, p))}
    val_auroc, val_bce = validation_score(y, p)
    return (val_auroc if np.isfinite(val_auroc) else -val_bce), {"val_auroc": _finite(val_auroc), "val_bce": val_bce}


def init_head_from_probe(model: nn.Module, corpus, train_rows: np.ndarray, train_y: np.ndarray, split: TaskSplit,
                         crop: int | None, cfg: FinetuneConfig, device: torch.device,
                         val_y: np.ndarray | None = None) -> None:
    """LP-FT (Kumar et al. 2022): fit the logistic probe on the frozen encoder's features of the
    training rows (C chosen on validation) and copy it into ``model.head``, so fine-tuning starts
    from the probe instead of a random head that would first distort the pretrained features.
    A regression head starts from the ridge probe of the standardised target (``train_y`` and
    ``val_y`` given standardised)."""
    def feats(rows: np.ndarray) -> np.ndarray:
        return encoder_features(model.encoder, corpus, rows, crop, batch_size=cfg.eval_batch_size,
                                device=device, progress=False)

    probe, _ = fit_probe(probe_kind("logistic", split.task_type), feats(train_rows), train_y,
                         feats(split.rows["val"]), split.y["val"] if val_y is None else val_y, seed=cfg.seed)
    weight, bias = probe.as_linear()
    with torch.no_grad():
        model.head.weight.copy_(torch.as_tensor(weight, dtype=model.head.weight.dtype))
        model.head.bias.copy_(torch.as_tensor(bias, dtype=model.head.bias.dtype))


def finetune(cfg: FinetuneConfig, progress: bool = True, method: str | None = None) -> dict[str, Any]:
    """Train, early-stop, pick thresholds, test, and save the best classifier (or regression head)
    in ``cfg.out``.

    Args:
        method: the name results are filed under (default ``finetune_sit`` from a checkpoint,
            ``supervised_sit`` or ``supervised_resnet1d`` from scratch).

    Returns:
        the summary written to ``<out>/finetune_summary.json``: best epoch, validation AUROC
        (regression: MAE and r) per epoch, test metrics (:func:`crema.eval.metrics.evaluate` or
        :func:`~crema.eval.metrics.evaluate_regression`), sizes and data hashes, the ``task_type``,
        and ``result``, the entry of ``<out>/results.json``.
    """
    started = time.perf_counter()
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.patience < 1:
        raise CremaError(f"epochs ({cfg.epochs}), batch size ({cfg.batch_size}) and patience ({cfg.patience}) "
                         "must be at least 1")
    out = Path(cfg.out)
    corpus = Corpus(cfg.corpus)
    split = task_split(corpus, cfg.task, cfg.holdout_source, cfg.sources)
    keep = fraction_subset(split.strata("train"), cfg.fraction, cfg.seed, groups=split.keys["train"])
    train_rows, train_y = split.rows["train"][keep], split.y["train"][keep]
    target = Target.of(train_y) if split.regression else None
    if target is not None:
        train_y = target.standardise(train_y)

    corpus_window = int(corpus.signals.shape[-1])
    preprocess = corpus_preprocess(corpus)
    model, model_entry = build_classifier(cfg, len(split.classes), corpus_window, float(preprocess["fs"]))
    crop = cfg.crop or (min(model.encoder.cfg.window, corpus_window) if cfg.arch == "sit" else None)
    eval_crop = crop if cfg.arch == "sit" else None
    device = resolve_device(cfg.device)
    model.to(device)
    precision.autocast(device, cfg.amp)  # refuse a bad amp setting before any work

    def record_scores(part: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-record ``(y, probabilities)`` (a regression target: ``(y, values)``) of the model as
        it is now on ``part``."""
        if target is not None:
            out = predict_values(model, corpus, split.rows[part], eval_crop, cfg.eval_batch_size, device,
                                 target.mean, target.std)
        else:
            out = predict_proba(model, corpus, split.rows[part], eval_crop, cfg.eval_batch_size, device)
        return split.record_level(out, part)

    def validate() -> tuple[float, dict]:
        return validation_entry(split.task_type, *record_scores("val"))

    loader = training_loader(corpus, train_rows, train_y, cfg, crop)
    start = None
    if cfg.probe_init:
        if cfg.arch != "sit":
            raise CremaError("--probe-init needs a SiT encoder (the ResNet baseline has no pretrained features)")
        val_y = None if target is None else target.standardise(split.y["val"])
        init_head_from_probe(model, corpus, train_rows, train_y, split, eval_crop, cfg, device, val_y)
        score, fields = validate()
        start = (score, {"head": "probe", **fields})
    fitted = fit(model, loader, cfg, device, validate, out, task_type=split.task_type, start=start,
                 progress=progress)
    y_test, p_test = record_scores("test")
    if target is not None:
        evaluation = metrics.evaluate_regression(y_test, p_test, split.classes[0], cfg.n_bootstrap, seed=0,
                                                 keep_replicates=True)
        head = {"thresholds": None, "target_mean": target.mean, "target_std": target.std,
                "val_mae": _finite(fitted.best_val["val_mae"])}
    else:
        thresholds = metrics.pick_thresholds(*record_scores("val"))
        evaluation = metrics.evaluate(y_test, p_test, split.classes, thresholds, cfg.n_bootstrap, seed=0,
                                      keep_replicates=True, task_type=split.task_type)
        head = {"thresholds": [float(t) for t in thresholds], "val_auroc": fitted.best_val.get("val_auroc")}
    data_sha = corpus_fingerprint(cfg.corpus)
    config = {
        "kind": "classifier", "arch": cfg.arch, "model": model_entry, "preprocess": preprocess,
        "task": cfg.task, "task_type": split.task_type, "classes": split.classes, **head,
        "crop": eval_crop, "init": cfg.checkpoint or "random", "best_epoch": fitted.best_epoch,
        "finetune": to_dict(cfg), "data_sha256": data_sha,
    }
    save_checkpoint(out, model, config)
    summary = {
        "best_epoch": fitted.best_epoch, "epochs_run": fitted.epochs_run, "history": fitted.history,
        "layer_decay": cfg.effective_layer_decay, "n_train": int(len(train_rows)), "n_val": int(len(split.rows["val"])),
        "n_test_windows": int(len(split.rows["test"])), "test": evaluation,
        "train_rows_sha256": rows_sha256(train_rows), "test_rows_sha256": rows_sha256(split.rows["test"]),
        "data_sha256": data_sha, "data_hash_of": FINGERPRINT_WHAT, "classes": split.classes,
        "task_type": split.task_type,
        "seconds": round(time.perf_counter() - started, 3),
    }
    atomic_write_text(out / "finetune_summary.json", json.dumps(summary, indent=2) + "\n")
    method = method or default_method(cfg)
    result = ResultRecord.from_evaluation(
        step=str(out), method=method, protocol="finetune", task=cfg.task,
        experiment="leave_source_out" if cfg.holdout_source else "label_fraction", seed=cfg.seed,
        evaluation=evaluation, config=to_dict(cfg), data_sha256=data_sha,
        train_rows_sha256=summary["train_rows_sha256"], test_rows_sha256=summary["test_rows_sha256"],
        n_train=summary["n_train"], n_val=summary["n_val"], fraction=cfg.fraction,
        holdout_source=cfg.holdout_source).to_dict()
    write_results(out / "results.json", [result], {cfg.corpus: {"sha256": data_sha, "hash_of": FINGERPRINT_WHAT}})
    return {**summary, "result": result}


def default_method(cfg: FinetuneConfig) -> str:
    """How results of a run are labelled when the caller gives no method name."""
    if cfg.arch == "resnet1d":
        return "supervised_resnet1d"
    return "finetune_sit" if cfg.checkpoint else "supervised_sit"
