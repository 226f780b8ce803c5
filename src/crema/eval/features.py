"""Frozen pooled features of an encoder over corpus rows, cached on disk.

Evaluation inputs are read straight from the corpus memmap in batches (no shuffling, no
augmentation). When the corpus window is longer than the model's window, each window is covered
by evenly spaced crops of the model's length (first at 0, last at the end) and their outputs are
averaged (:func:`crema.model.inference.crop_average`), so nothing depends on a random crop.

The cache file name is a sha256 of: the encoder weights (the checkpoint's ``model.safetensors``
bytes, or the tensors of an in-memory encoder), the corpus fingerprint (:func:`corpus_fingerprint`),
the rows, the crop length and any test-time corruption; so a repeated probe reuses the features
and anything that changes them gives a new file.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..atomic import atomic_path
# the fingerprints live in the data layer (a pretraining run records its corpora's too); re-exported
from ..data.fingerprint import FINGERPRINT_BYTES, FINGERPRINT_WHAT, corpus_fingerprint, file_sha256  # noqa: F401
from ..model.heads import Probabilities
from ..model.inference import DEFAULT_BATCH, crop_starts, feature_kind, infer
from ..runtime import resolve_device

# (signals (B, C, T) float32, lead_mask (B, C) bool, rows (B,)) -> the same, corrupted
BatchTransform = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


# ----------------------------------------------------------------------------- hashing

def rows_sha256(rows: np.ndarray) -> str:
    """sha256 of a row-index array (as int64), to record exactly which rows a result saw."""
    return hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()


def module_sha256(module: nn.Module) -> str:
    """sha256 over a module's state dict (names, shapes, float32 values), for in-memory encoders."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()


# ----------------------------------------------------------------------------- batches

def iter_batches(corpus, rows: np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(signals (B, C, T) float32, lead_mask (B, C) bool, rows (B,))`` in row order."""
    rows = np.asarray(rows, dtype=np.int64)
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        order = np.argsort(batch, kind="stable")  # memmap reads are fastest in increasing order
        inverse = np.argsort(order)
        signals = np.asarray(corpus.signals[batch[order]], dtype=np.float32)[inverse]
        lead_mask = np.asarray(corpus.lead_mask[batch[order]], dtype=bool)[inverse]
        yield signals, lead_mask, batch


@torch.inference_mode()
def apply_model(model: nn.Module, corpus, rows: np.ndarray, crop: int | None = None, batch_size: int = DEFAULT_BATCH,
                transform: BatchTransform | None = None, device: str | torch.device | None = "cpu",
                desc: str = "features", progress: bool = True) -> np.ndarray:
    """Run ``model(x, lead_mask=...)`` over corpus rows; crop outputs are averaged.

    Args:
        model: maps ``(B, C, crop)`` + lead mask ``(B, C)`` to ``(B, F)`` (an encoder's pooled
            features or a classifier's logits). Put in eval mode here.
        corpus: a :class:`crema.data.corpus.Corpus`.
        rows: ``(n,)`` corpus rows.
        crop: model input length; default the corpus window.
        transform: optional test-time corruption applied to each full window before cropping.

    Returns:
        ``(n, F)`` float32 in the order of ``rows``.
    """
    device = resolve_device(device)
    model = model.to(device).eval()

    def forward(x: torch.Tensor, lead_mask: torch.Tensor) -> torch.Tensor:
        return model(x, lead_mask=lead_mask)

    crop_starts(int(corpus.signals.shape[-1]), crop)  # a corpus shorter than the crop fails before any work
    outputs = []
    for signals, lead_mask, batch_rows in tqdm(iter_batches(corpus, rows, batch_size),
                                               total=-(-len(rows) // batch_size), desc=desc,
                                               disable=not progress, leave=False):
        if transform is not None:
            signals, lead_mask = transform(signals, lead_mask, batch_rows)
        outputs.append(infer(forward, signals, lead_mask, crop, len(signals), device))
    if not outputs:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(outputs).astype(np.float32)


def predict_proba(model: nn.Module, corpus, rows: np.ndarray, crop: int | None, batch_size: int,
                  device: torch.device, transform: BatchTransform | None = None, progress: bool = False) -> np.ndarray:
    """Probabilities ``(n, K)`` float64 of a classifier (logits ``(B, K)``) over corpus rows,
    crops averaged as in :func:`apply_model`."""
    return apply_model(Probabilities(model), corpus, rows, crop, batch_size, transform, device,
                       desc="predict", progress=progress).astype(np.float64)


def predict_values(model: nn.Module, corpus, rows: np.ndarray, crop: int | None, batch_size: int,
                   device: torch.device, mean: float, std: float, progress: bool = False) -> np.ndarray:
    """Predicted values ``(n, 1)`` float64 of a regression head (one standardised output) over
    corpus rows: ``output * std + mean``, crops averaged as in :func:`apply_model`."""
    outputs = apply_model(model, corpus, rows, crop, batch_size, None, device, desc="predict", progress=progress)
    return outputs.astype(np.float64).reshape(len(rows), 1) * std + mean


# ----------------------------------------------------------------------------- cache

def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    """``np.save`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def cache_key(weights_sha: str, corpus_sha: str, rows: np.ndarray, crop: int | None, extra: str = "") -> str:
    """The cache file stem for one (weights, corpus, rows, crop, corruption) combination."""
    parts = [weights_sha, corpus_sha, rows_sha256(rows), str(crop), extra]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def encoder_features(encoder: nn.Module, corpus, rows: np.ndarray, crop: int | None = None,
                     cache_dir: str | os.PathLike | None = None, weights_sha: str | None = None,
                     corpus_sha: str | None = None, transform: BatchTransform | None = None,
                     transform_key: str = "", batch_size: int = DEFAULT_BATCH,
                     device: str | torch.device | None = "cpu", progress: bool = True) -> np.ndarray:
    """Features ``(n, F)`` float32 of a frozen encoder over corpus ``rows``, cached as
    ``<cache_dir>/<key>.npy`` when ``cache_dir`` is given. A SiT encoder gives its pooled ``mean``
    embedding; wrapped with :func:`crema.model.inference.readout` it gives that kind, which the
    cache key then includes (a weights hash names the weights, not the read-out).

    Args:
        weights_sha: identity of the weights (default :func:`module_sha256` of ``encoder``;
            pass :func:`file_sha256` of ``model.safetensors`` for a checkpoint).
        corpus_sha: default :func:`corpus_fingerprint` of ``corpus.path``.
        transform, transform_key: a test-time corruption and a string naming it (with its
            severity and seed) for the cache key; a transform without a key is never cached.
    """
    rows = np.asarray(rows, dtype=np.int64)
    use_cache = cache_dir is not None and (transform is None or transform_key)
    path = None
    if use_cache:
        weights_sha = weights_sha or module_sha256(encoder)
        corpus_sha = corpus_sha or corpus_fingerprint(corpus.path)
        kind = feature_kind(encoder)
        extra = transform_key if kind == "mean" else f"{transform_key}|features={kind}"  # mean: keys as before
        path = Path(cache_dir) / f"{cache_key(weights_sha, corpus_sha, rows, crop, extra)}.npy"
        if path.exists():
            cached = np.load(path)
            if cached.shape[0] == len(rows):
                return cached
    features = apply_model(encoder, corpus, rows, crop, batch_size, transform, device, progress=progress)
    if path is not None:
        _save_npy_atomic(path, features)
    return features
