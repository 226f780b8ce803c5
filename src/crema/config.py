"""Frozen configuration dataclasses for every CREMA run, with a JSON round trip.

One config object describes one run; it is written next to the run's outputs as
``config.json`` and read back with :func:`load_json`. CLI flags map onto fields.
Everything the design fixes is a default here, never a constant in code, so that
ablations are one flag away.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field, fields, asdict
from pathlib import Path
from typing import Any, Literal, Mapping

from .atomic import atomic_write_text  # noqa: F401  (re-exported: config files are written with it)

STANDARD_LEADS: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
)


@dataclass(frozen=True)
class PreprocessConfig:
    """How a raw recording becomes model input windows ``(W, 12, window)``."""

    fs: float = 250.0                       # target sampling rate, Hz
    band: tuple[float, float] | None = (0.67, 40.0)  # zero-phase Butterworth band-pass, Hz; None = off
    filter_order: int = 4                   # Butterworth order (applied forwards and backwards)
    notch_hz: float | None = None           # 50 or 60 to remove mains hum; None = off
    zscore: bool = True                     # per-lead z-score; a flat lead becomes zeros
    window_s: float = 10.0                  # window length, seconds (2500 samples at 250 Hz)
    stride_s: float = 10.0                  # hop between windows of a long record, seconds
    short: Literal["pad", "reject"] = "pad"  # records shorter than a window: zero-pad or reject
    min_length_s: float = 2.0               # shorter than this is always rejected
    derive_limb_leads: bool = True          # rebuild III, aVR, aVL, aVF from I and II when absent

    @property
    def window(self) -> int:
        """Window length in samples."""
        return int(round(self.window_s * self.fs))

    @property
    def stride(self) -> int:
        """Hop between windows in samples."""
        return int(round(self.stride_s * self.fs))


@dataclass(frozen=True)
class AugmentConfig:
    """Per-sample augmentations for supervised training (numpy, in the dataset). 0 = off."""

    scale: float = 0.0                      # amplitude scale drawn from 1 +- scale, per lead
    noise: float = 0.0                      # Gaussian noise std, z-scored units
    wander: float = 0.0                     # baseline wander amplitude (sum of slow sines), z-scored units
    lead_dropout: float = 0.0               # probability that each lead is zeroed (and masked out)
    time_shift: float = 0.0                 # max circular shift, fraction of the window


MODEL_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(dim=192, depth=6, heads=3),
    "small": dict(dim=384, depth=12, heads=6),
    "base": dict(dim=768, depth=12, heads=12),
}


@dataclass(frozen=True)
class ModelConfig:
    """The Signal Transformer (SiT) encoder, its MAE decoder and the contrastive projector."""

    size: str = "tiny"                      # name of the preset the widths came from (informational)
    leads: tuple[str, ...] = STANDARD_LEADS  # the lead set the model is trained on, in order
    window: int = 2500                      # input samples per lead (10 s at 250 Hz)
    patch_size: int = 50                    # samples per token (0.2 s at 250 Hz)
    dim: int = 192                          # encoder width D
    depth: int = 6                          # encoder blocks
    heads: int = 3                          # encoder attention heads
    mlp_ratio: float = 4.0                  # MLP hidden width / D
    drop_path: float = 0.1                  # stochastic depth at the last block (linear ramp)
    dropout: float = 0.0                    # dropout in attention projections and MLPs
    stem_channels: int = 32                 # channels of the per-patch 1-D conv stem
    pool: Literal["mean", "cls"] = "mean"   # representation: mean of tokens (+LayerNorm) or a CLS token
    decoder_dim: int = 128                  # decoder width
    decoder_depth: int = 2                  # decoder blocks
    decoder_heads: int = 4                  # decoder attention heads
    decoder_mode: Literal["per_lead", "joint"] = "per_lead"  # attention within each lead, or over all tokens
    projector_hidden: int = 512             # hidden width of the 2-layer contrastive projector
    projector_dim: int = 128                # output width of the projector (L2-normalised)

    @property
    def n_leads(self) -> int:
        return len(self.leads)

    @property
    def n_patches(self) -> int:
        """Tokens per lead, N = window / patch_size."""
        return self.window // self.patch_size

    @classmethod
    def from_size(cls, size: str, **overrides: Any) -> "ModelConfig":
        """A preset (``tiny``/``small``/``base``) with optional field overrides."""
        if size not in MODEL_SIZES:
            raise ValueError(f"unknown model size {size!r}; choose from {sorted(MODEL_SIZES)}")
        return cls(size=size, **{**MODEL_SIZES[size], **overrides})


@dataclass(frozen=True)
class ObjectiveConfig:
    """The CR-MAE loss ``L = L_rec + lambda * L_con`` and its views."""

    mode: Literal["crema", "mae", "contrastive"] = "crema"  # mae = one view, no L_con; contrastive = no L_rec
    mask_ratio: float = 0.75                # fraction of each lead's patches hidden from the encoder
    lambda_con: float = 0.1                 # weight of the contrastive term
    tau: float = 0.1                        # InfoNCE temperature
    norm_target: bool = True                # normalise each target patch by its own mean and std
    aug_scale: float = 0.1                  # view augmentation: amplitude scale drawn from 1 +- aug_scale
    aug_noise: float = 0.05                 # view augmentation: Gaussian noise std (z-scored units)
    aug_wander: float = 0.1                 # view augmentation: baseline wander amplitude (z-scored units)
    patient_positives: bool = False         # records of the same patient are extra positives
    mask_mode: Literal["per_lead", "time"] = "per_lead"  # per_lead = own patches per lead; time = the same
                                            # time patches hidden in every lead (no copying across leads)
    view_crop: Literal["same", "random", "disjoint"] = "same"  # views' time crops when the training window
                                            # is longer than the model window: one shared crop, a random crop
                                            # each, or non-overlapping crops (CLOCS/CMSC-style positives)
    con_loss: Literal["infonce", "vicreg", "simsiam"] = "infonce"  # the regulariser on the pooled views
    con_start_step: int = 0                 # contrastive weight is 0 before this optimiser step
    con_ramp_steps: int = 0                 # then rises linearly to lambda_con over this many steps


@dataclass(frozen=True)
class PretrainConfig:
    """The pretraining engine: optimisation, schedule, checkpointing, logging."""

    corpora: tuple[str, ...] = ()           # corpus folders, each optionally "DIR:split[,split]"
    out: str = "runs/pretrain"              # run folder: checkpoints, log, config
    batch_size: int = 64                    # ECGs per process per step (before accumulation)
    accum_steps: int = 1                    # gradient accumulation steps
    steps: int = 1000                       # optimiser steps in total
    blr: float = 1.5e-4                     # base learning rate; lr = blr * effective_batch / 256
    min_lr: float = 1e-6                    # floor of the cosine schedule
    warmup_steps: int = 100                 # linear warm-up before the cosine decay
    weight_decay: float = 0.05              # AdamW weight decay (not on norms, biases, embeddings)
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW betas
    grad_clip: float = 1.0                  # max global gradient norm; 0 = off
    seed: int = 0                           # seeds data order, masks, init
    num_workers: int = 0                    # DataLoader worker processes
    amp: Literal["auto", "bf16", "off"] = "auto"  # bf16 autocast: auto = on GPU only
    compile: bool = False                   # torch.compile the model
    ckpt_every: int = 500                   # checkpoint every N steps (and always at the end)
    log_every: int = 10                     # JSONL log every N steps
    tensorboard: bool = False               # also log to TensorBoard if installed
    device: str = "auto"                    # auto = cuda if available, else cpu


@dataclass(frozen=True)
class RunConfig:
    """Everything a pretraining run needs; written as ``config.json`` beside its checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    train: PretrainConfig = field(default_factory=PretrainConfig)


# ----------------------------------------------------------------------------- JSON round trip

def to_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass (nested) as plain JSON-ready types (tuples become lists)."""
    return json.loads(json.dumps(asdict(cfg)))


def from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """Rebuild dataclass ``cls`` from :func:`to_dict` output; unknown keys are an error."""
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown config keys {sorted(unknown)}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(known[name], value)
    return cls(**kwargs)


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    default = f.default if f.default is not dataclasses.MISSING else (
        f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
    if dataclasses.is_dataclass(default) and isinstance(value, Mapping):
        return from_dict(type(default), value)
    if isinstance(value, list):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


def save_json(path: str | os.PathLike, data: Any) -> None:
    """Write a dataclass or a JSON-ready object to ``path`` atomically, pretty-printed."""
    if dataclasses.is_dataclass(data):
        data = to_dict(data)
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def load_json(path: str | os.PathLike, cls: type | None = None) -> Any:
    """Read ``path``; with ``cls``, rebuild that dataclass."""
    data = json.loads(Path(path).read_text())
    return from_dict(cls, data) if cls is not None else data
