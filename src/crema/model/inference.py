"""Running a trained network on preprocessed windows: the one implementation behind evaluation
(:mod:`crema.eval.features`), the Python API (:mod:`crema.use.api`) and the CLI.

Crop-averaged inference: a window longer than the model's input is covered by evenly spaced crops
of the input length (the first at 0, the last at the end) and their outputs are averaged, so no
result depends on a random crop and a classifier's thresholds, picked that way on validation,
apply wherever it runs.

Reconstruction: a window longer than the model's input is centre-cropped to it, masked with a
seeded mask and decoded.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn

from .. import kernels
from ..errors import CremaError
from ..runtime import torch_threads

# ECGs handed to the model per call unless a caller asks otherwise. On a CPU big batches page-fault
# their activations; the encoder keeps its working set small itself (no-grad inference in parts,
# the stem in chunks of patches, bf16 attention scores in bounded parts: crema.kernels), so this is
# only how many windows are gathered per call.
DEFAULT_BATCH = 64

# (x (B, C, crop), lead_mask (B, C)) -> (B, ...)
WindowFn = Callable[[Tensor, Tensor], Tensor]


def crop_starts(window: int, crop: int | None) -> list[int]:
    """Start offsets of the evenly spaced crops of length ``crop`` that cover ``window`` samples
    (``[0]`` when ``crop`` is None or the whole window).

    Raises:
        CremaError: the window is shorter than the crop.
    """
    if crop is None or crop == window:
        return [0]
    if crop > window:
        raise CremaError(f"windows have {window} samples, fewer than the model's {crop}")
    n = -(-window // crop)  # ceil: enough crops to cover every sample
    return [int(round(s)) for s in np.linspace(0, window - crop, n)]


def crop_average(fn: WindowFn, x: Tensor, lead_mask: Tensor, crop: int | None) -> Tensor:
    """The mean of ``fn`` over the crops of :func:`crop_starts` that cover ``x (B, C, T)``;
    ``(B, ...)`` float32.

    A call of at most :attr:`crema.kernels.KernelPolicy.merge_crops_up_to` crops in all runs them
    through ``fn`` as one batch ``(n_crops * B, C, crop)``; the sum is taken in the same order, so
    the result is the same as crop by crop for any ``fn`` that computes each ECG on its own."""
    length = x.shape[-1] if crop is None else crop
    starts = crop_starts(x.shape[-1], crop)
    if len(starts) > 1 and len(starts) * len(x) <= kernels.current().merge_crops_up_to:
        merged = fn(torch.cat([x[..., s:s + length] for s in starts]), lead_mask.repeat(len(starts), 1))
        outputs = merged.float().split(len(x))
    else:
        outputs = (fn(x[..., s:s + length], lead_mask).float() for s in starts)
    return sum(outputs) / len(starts)


@torch.inference_mode()
def infer(fn: WindowFn, signals: np.ndarray, lead_mask: np.ndarray, crop: int | None = None,
          batch_size: int = DEFAULT_BATCH, device: torch.device | str = "cpu") -> np.ndarray:
    """Crop-averaged ``fn`` over windows ``signals (n, C, T)`` with ``lead_mask (n, C)``, in
    chunks of ``batch_size``; returns numpy ``(n, ...)`` float32 (``(0,)`` when ``n`` is 0)."""
    if batch_size < 1:
        raise CremaError(f"batch_size must be at least 1, got {batch_size}")
    outputs = []
    with torch_threads(kernels.current().inference_threads or None):
        for start in range(0, len(signals), batch_size):
            x = torch.from_numpy(np.ascontiguousarray(signals[start:start + batch_size])).to(device)
            mask = torch.from_numpy(np.ascontiguousarray(lead_mask[start:start + batch_size])).to(device)
            outputs.append(crop_average(fn, x, mask, crop).cpu().numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0,), dtype=np.float32)


class Readout(nn.Module):
    """An encoder seen through one embedding kind: ``forward(x (B, C, T), lead_mask=None) ->
    (B, F)`` is ``encoder.embedding(x, lead_mask, features)``, so that code written for a module
    mapping windows to features (:func:`crema.eval.features.apply_model`, the probes, the
    corruption curves) reads the kind the checkpoint or the user chose.

    Attributes:
        encoder: the :class:`~crema.model.sit.SiTEncoder`; features: the kind; cfg: its ModelConfig.
    """

    def __init__(self, encoder: nn.Module, features: str):
        super().__init__()
        encoder.feature_dim(features)  # an unknown kind fails here, not in the first batch
        self.encoder = encoder
        self.features = features

    @property
    def cfg(self):
        return self.encoder.cfg

    def forward(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        return self.encoder.embedding(x, lead_mask, self.features)


def readout(encoder: nn.Module, features: str = "mean") -> nn.Module:
    """``encoder`` itself for ``mean`` (its ``forward`` is the pooled embedding, so existing
    weights hashes and feature caches keep their meaning), else a :class:`Readout`."""
    return encoder if features == "mean" else Readout(encoder, features)


def feature_kind(module: nn.Module) -> str:
    """The embedding kind a module computes: a :class:`Readout`'s, else ``mean``."""
    return module.features if isinstance(module, Readout) else "mean"


def centre_crop(signals: np.ndarray, window: int) -> np.ndarray:
    """``(..., T) -> (..., min(T, window))``, the middle ``window`` samples."""
    offset = max(signals.shape[-1] - window, 0) // 2
    return signals[..., offset:offset + window]


@torch.inference_mode()
def reconstruct_windows(model: nn.Module, signals: np.ndarray, lead_mask: np.ndarray, seed: int | None = 0,
                        batch_size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mask and reconstruct windows with a pretrained :class:`crema.model.crema.CREMA`.

    Args:
        signals: ``(n, 12, T)`` preprocessed windows, centre-cropped to the model window.
        lead_mask: ``(n, 12)`` bool, True = present.
        seed: seeds the masks; each chunk of ``batch_size`` windows is seeded with ``seed`` plus
            its first row, so a window's mask depends on the seed, its row and ``batch_size``.

    Returns:
        ``pred (n, 12, W)`` float32 (visible patches are the input, masked ones predicted),
        ``mask (n, 12, N)`` bool (True = masked), ``windows (n, 12, W)`` float32 (the input).
    """
    windows = np.ascontiguousarray(centre_crop(np.asarray(signals, dtype=np.float32), model.model_cfg.window))
    device = next(model.parameters()).device
    preds, masks = [], []
    for start in range(0, len(windows), batch_size):
        x = torch.from_numpy(windows[start:start + batch_size]).to(device)
        m = torch.from_numpy(np.ascontiguousarray(lead_mask[start:start + batch_size], dtype=bool)).to(device)
        pred, mask = model.reconstruct(x, seed=None if seed is None else seed + start, lead_mask=m)
        preds.append(pred.float().cpu().numpy())
        masks.append(mask.cpu().numpy())
    return np.concatenate(preds), np.concatenate(masks), windows
