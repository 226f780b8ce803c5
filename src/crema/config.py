"""Frozen configuration dataclasses for every CREMA run.

One config object describes one run; it is written next to the run's outputs as
``config.json`` and read back with :func:`crema.config_io.load_json`. CLI flags map onto fields.
Everything the design fixes is a default here, never a constant in code, so that
ablations are one flag away.
"""
from __future__ import annotations

import os
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from .config_io import from_dict
from .errors import CheckpointError, ConfigError

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

    def problems(self) -> list[str]:
        """Fields outside their range, for :func:`crema.config_io.check_config`."""
        problems = []
        for name in ("fs", "window_s", "stride_s"):
            if not getattr(self, name) > 0:
                problems.append(f"{name}: must be positive, got {getattr(self, name)!r}")
        if self.filter_order < 1:
            problems.append(f"filter_order: must be at least 1, got {self.filter_order!r}")
        if self.band is not None and not 0 < self.band[0] < self.band[1]:
            problems.append(f"band: must be two edges 0 < low < high in Hz, got {list(self.band)!r}")
        if self.notch_hz is not None and not self.notch_hz > 0:
            problems.append(f"notch_hz: must be positive or null, got {self.notch_hz!r}")
        if self.min_length_s < 0:
            problems.append(f"min_length_s: must not be negative, got {self.min_length_s!r}")
        if not problems and self.window < 1:
            problems.append(f"window_s: {self.window_s!r} s is less than one sample at {self.fs!r} Hz")
        return problems


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentations for supervised training, drawn per ECG and lead in the dataset (over a
    whole batch in torch, or per item in numpy). 0 = off."""

    scale: float = 0.0                      # amplitude scale drawn from 1 +- scale, per lead
    noise: float = 0.0                      # Gaussian noise std, z-scored units
    wander: float = 0.0                     # baseline wander amplitude (sum of slow sines), z-scored units
    lead_dropout: float = 0.0               # probability that each lead is zeroed (and masked out)
    time_shift: float = 0.0                 # max circular shift, fraction of the window

    def problems(self) -> list[str]:
        """Fields outside their range, for :func:`crema.config_io.check_config`."""
        problems = _negative(self, ("scale", "noise", "wander"))
        for name in ("lead_dropout", "time_shift"):
            if not 0 <= getattr(self, name) <= 1:
                problems.append(f"{name}: must be in [0, 1], got {getattr(self, name)!r}")
        return problems


MODEL_SIZES: dict[str, dict[str, int | float]] = {
    # mini: the design-search and CPU release model (a few hundred thousand parameters)
    "mini": dict(dim=64, depth=4, heads=4, stem_channels=16, drop_path=0.05, decoder_dim=64,
                 decoder_depth=1, decoder_heads=4, projector_hidden=128, projector_dim=64),
    "tiny": dict(dim=192, depth=6, heads=3),
    "small": dict(dim=384, depth=12, heads=6),
    "base": dict(dim=768, depth=12, heads=12),
}


MAX_TOKENS_PER_LEAD = 65536  # window / patch_size; far above any ECG window (5 min at 250 Hz: 1500)


@dataclass(frozen=True)
class ModelConfig:
    """The Signal Transformer (SiT) encoder, its MAE decoder and the contrastive projector."""

    size: str = "tiny"                      # name of the preset the widths came from (informational)
    leads: tuple[str, ...] = STANDARD_LEADS  # the lead set the model is trained on, in order
    window: int = 1250                      # input samples per lead (5 s at 250 Hz): two disjoint views fit
                                            # in one 10 s record; longer inputs are covered by averaged crops
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

    def problems(self) -> list[str]:
        """Fields outside their range, for :func:`crema.config_io.check_config`."""
        sizes = ("window", "patch_size", "dim", "depth", "heads", "stem_channels", "decoder_dim",
                 "decoder_depth", "decoder_heads", "projector_hidden", "projector_dim")
        problems = [f"{name}: must be positive, got {getattr(self, name)!r}"
                    for name in sizes if not getattr(self, name) > 0]
        if not problems and self.window % self.patch_size:
            problems.append(f"window: {self.window} is not a multiple of patch_size {self.patch_size}")
        if not problems and self.n_patches > MAX_TOKENS_PER_LEAD:  # each token costs memory in every block
            problems.append(f"window: {self.window} samples make {self.n_patches} tokens per lead of "
                            f"{self.patch_size} samples, more than {MAX_TOKENS_PER_LEAD}")
        for name in ("drop_path", "dropout"):
            if not 0 <= getattr(self, name) < 1:
                problems.append(f"{name}: must be in [0, 1), got {getattr(self, name)!r}")
        if not self.mlp_ratio > 0:
            problems.append(f"mlp_ratio: must be positive, got {self.mlp_ratio!r}")
        return problems

    @classmethod
    def from_size(cls, size: str, **overrides: Any) -> "ModelConfig":
        """A preset (``tiny``/``small``/``base``) with optional field overrides."""
        if size not in MODEL_SIZES:
            raise ValueError(f"unknown model size {size!r}; choose from {sorted(MODEL_SIZES)}")
        return cls(size=size, **{**MODEL_SIZES[size], **overrides})


# What an embedding is made of (model.sit.SiTEncoder.embedding): "mean" = the pooled representation
# (mean of the last block's tokens over present leads, then the final LayerNorm: D values);
# "leads" = each lead's mean token through the final LayerNorm, a missing lead's block zero (C * D).
EmbeddingFeatures = Literal["mean", "leads"]
EMBEDDING_FEATURES: tuple[str, ...] = typing.get_args(EmbeddingFeatures)

# How a logistic probe ranks its inverse penalties C (crema.eval.probe.fit_logistic_probe): "val" =
# macro AUROC on the validation split (the default protocol); "cv" = cross-validation over the
# training records (for a validation split too small to rank C).
SelectC = Literal["val", "cv"]
SELECT_C: tuple[str, ...] = typing.get_args(SelectC)


@dataclass(frozen=True)
class EmbeddingConfig:
    """How a checkpoint's embeddings are read out by default (``config.json``'s ``embedding``;
    absent in checkpoints written before it existed, which therefore embed with ``mean``)."""

    features: EmbeddingFeatures = "mean"    # mean: pooled (D); leads: per-lead mean tokens, normed (12 x D)


def embedding_features(checkpoint_config: Mapping[str, Any], where: str | os.PathLike = "") -> str:
    """The default ``features`` of a checkpoint's ``config.json`` (a dict): its
    ``embedding.features``, ``"mean"`` when absent.

    Raises:
        CheckpointError: the ``embedding`` entry is not an object or names an unknown read-out.
    """
    raw = checkpoint_config.get("embedding") or {}
    try:
        if not isinstance(raw, Mapping):
            raise ConfigError(f"embedding: expected an object like {{\"features\": \"mean\"}}, got {raw!r}")
        return from_dict(EmbeddingConfig, raw, "embedding.").features
    except ConfigError as exc:
        raise CheckpointError(f"{where}: {exc}" if where else str(exc)) from None


@dataclass(frozen=True)
class ObjectiveConfig:
    """The CR-MAE loss ``L = L_rec + lambda * L_con`` and its views."""

    mode: Literal["crema", "mae", "contrastive"] = "crema"  # the objective: crema = L_rec + lambda * L_con;
                                            # mae = one view, no L_con; contrastive = no L_rec
    mask_ratio: float = 0.75                # fraction of each lead's patches hidden from the encoder
    lambda_con: float = 0.01                # weight of the contrastive term; at 0.1 its gradient starves
                                            # reconstruction (masked QRS never redrawn; results/design-search)
    tau: float = 0.1                        # InfoNCE temperature
    norm_target: bool = True                # normalise each target patch by its own mean and std
    aug_scale: float = 0.1                  # view augmentation: amplitude scale drawn from 1 +- aug_scale
    aug_noise: float = 0.05                 # view augmentation: Gaussian noise std (z-scored units)
    aug_wander: float = 0.1                 # view augmentation: baseline wander amplitude (z-scored units)
    patient_positives: bool = False         # records of the same patient are extra positives
    mask_mode: Literal["per_lead", "time"] = "per_lead"  # per_lead = own patches per lead; time = the same
                                            # time patches hidden in every lead (no copying across leads)
    view_crop: Literal["same", "random", "disjoint"] = "disjoint"  # views' time crops when the training window
                                            # is longer than the model window: one shared crop, a random crop
                                            # each, or non-overlapping crops (CLOCS/CMSC-style positives)
    con_loss: Literal["infonce", "vicreg", "simsiam"] = "infonce"  # the regulariser on the pooled views
    con_start_step: int = 0                 # contrastive weight is 0 before this optimiser step
    con_ramp_steps: int = 0                 # then rises linearly to lambda_con over this many steps

    def problems(self) -> list[str]:
        """Fields outside their range, for :func:`crema.config_io.check_config`."""
        problems = []
        if not 0 <= self.mask_ratio < 1:  # at least one patch per lead stays visible
            problems.append(f"mask_ratio: must be in [0, 1), got {self.mask_ratio!r}")
        if not self.tau > 0:
            problems.append(f"tau: must be positive, got {self.tau!r}")
        problems += _negative(self, ("lambda_con", "aug_scale", "aug_noise", "aug_wander", "con_start_step",
                                     "con_ramp_steps"))
        return problems


@dataclass(frozen=True)
class PretrainConfig:
    """The pretraining engine: optimisation, schedule, checkpointing, logging."""

    corpora: tuple[str, ...] = ()           # corpus folders, each optionally "DIR:split[,split]"
    out: str = "runs/pretrain"              # run folder: checkpoints, log, config
    batch_size: int = 64                    # ECGs per process per step (before accumulation)
    accum_steps: int = 1                    # gradient accumulation steps
    steps: int = 1000                       # optimiser steps in total; 0 checkpoints the initialised model
                                            # (a random-init baseline)
    blr: float = 1.5e-4                     # base learning rate; lr = blr * effective_batch / 256
    min_lr: float = 1e-6                    # floor of the cosine schedule
    warmup_steps: int = 100                 # linear warm-up before the cosine decay
    weight_decay: float = 0.05              # AdamW weight decay (not on norms, biases, embeddings)
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW betas
    grad_clip: float = 1.0                  # max global gradient norm; 0 = off
    seed: int = 0                           # seeds data order, masks, init
    num_workers: int = 0                    # DataLoader worker processes
    amp: Literal["auto", "bf16", "fp32", "off"] = "auto"  # bf16 autocast: auto = where the device has fast
                                            # bf16 (GPU, or CPU with AVX512-BF16/AMX; crema.precision)
    compile: bool = False                   # torch.compile the model
    ckpt_every: int = 500                   # checkpoint every N steps (and always at the end)
    log_every: int = 10                     # JSONL log every N steps
    tensorboard: bool = False               # also log to TensorBoard if installed
    device: str = "auto"                    # auto = cuda if available, else cpu

    def problems(self) -> list[str]:
        """Fields outside their range, for :func:`crema.config_io.check_config`."""
        problems = _below_one(self, ("batch_size", "accum_steps", "ckpt_every", "log_every"))
        problems += _negative(self, ("steps", "min_lr", "warmup_steps", "weight_decay", "grad_clip", "seed",
                                     "num_workers"))
        if not self.blr > 0:
            problems.append(f"blr: must be positive, got {self.blr!r}")
        if not all(0 <= beta < 1 for beta in self.betas):
            problems.append(f"betas: each must be in [0, 1), got {list(self.betas)!r}")
        return problems


@dataclass(frozen=True)
class RunConfig:
    """Everything a pretraining run needs; written as ``config.json`` beside its checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    train: PretrainConfig = field(default_factory=PretrainConfig)


@dataclass(frozen=True)
class ResNet1dConfig:
    """Widths and depths of :class:`ResNet1d`; stored in a classifier checkpoint's config.json."""

    n_leads: int = 12                       # input channels
    stem_width: int = 32                    # channels of the three stem convolutions
    widths: tuple[int, ...] = (64, 128, 128, 256)  # channels of each residual stage
    depths: tuple[int, ...] = (1, 1, 1, 1)  # basic blocks per stage
    kernel_size: int = 5                    # odd kernel of every convolution
    dropout: float = 0.0                    # dropout before the linear head


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
    accum_steps: int = 1                    # batches per optimiser step (gradient accumulation: each update
                                            # sees this many batches)
    lr: float = 5e-4                        # peak learning rate (after warm-up)
    min_lr: float = 1e-6                    # floor of the cosine decay
    warmup_epochs: float = 1.0              # linear warm-up length, epochs
    weight_decay: float = 0.05              # AdamW weight decay (not norms, biases, embeddings)
    grad_clip: float = 0.0                  # max global gradient norm; 0 = off
    layer_decay: float | None = None        # layer-wise lr decay; None = 0.75 from a checkpoint, 1.0 from
                                            # scratch
    dropout: float = 0.0                    # dropout before the linear head
    probe_init: bool = False                # LP-FT: start the head from a logistic probe on frozen
                                            # features (C on validation); the probe is "epoch -1", so
                                            # early stopping never ends below it on validation
    patience: int = 5                       # epochs without a better validation AUROC before stopping
    fraction: float = 1.0                   # fraction of labelled training records used
    seed: int = 0                           # init, data order, label subset, augmentation
    holdout_source: str | None = None       # leave-one-source-out: test on this source only
    sources: tuple[str, ...] | None = None  # restrict train/val (and test) to these sources
    crop: int | None = None                 # training crop in samples; None = model window (SiT) / corpus
                                            # window
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # training augmentation
    eval_batch_size: int = 128              # ECGs per inference batch
    n_bootstrap: int = 1000                 # bootstrap resamples for test intervals
    device: str = "auto"                    # auto = cuda if available, else cpu
    num_workers: int = 0                    # DataLoader worker processes
    amp: Literal["auto", "bf16", "fp32", "off"] = "auto"  # training in bf16 autocast where the device has fast
                                            # bf16; validation and test stay fp32, like every evaluation

    def problems(self) -> list[str]:
        """Fields outside their range, for :func:`crema.config_io.check_config`."""
        problems = _below_one(self, ("epochs", "batch_size", "accum_steps", "patience", "eval_batch_size"))
        problems += _negative(self, ("min_lr", "warmup_epochs", "weight_decay", "grad_clip", "seed",
                                     "n_bootstrap", "num_workers"))
        if not self.lr > 0:
            problems.append(f"lr: must be positive, got {self.lr!r}")
        if not 0 < self.fraction <= 1:
            problems.append(f"fraction: must be in (0, 1], got {self.fraction!r}")
        if not 0 <= self.dropout < 1:
            problems.append(f"dropout: must be in [0, 1), got {self.dropout!r}")
        if self.layer_decay is not None and not 0 < self.layer_decay <= 1:
            problems.append(f"layer_decay: must be in (0, 1] or null, got {self.layer_decay!r}")
        if self.crop is not None and self.crop < 1:
            problems.append(f"crop: must be at least 1 sample or null, got {self.crop!r}")
        return problems

    @property
    def effective_layer_decay(self) -> float:
        if self.layer_decay is not None:
            return self.layer_decay
        return DEFAULT_LAYER_DECAY if self.checkpoint else 1.0


def _negative(cfg: Any, names: tuple[str, ...]) -> list[str]:
    """``name: must not be negative`` for each of ``names`` below 0."""
    return [f"{name}: must not be negative, got {getattr(cfg, name)!r}" for name in names
            if not getattr(cfg, name) >= 0]


def _below_one(cfg: Any, names: tuple[str, ...]) -> list[str]:
    """``name: must be at least 1`` for each of ``names`` below 1."""
    return [f"{name}: must be at least 1, got {getattr(cfg, name)!r}" for name in names
            if not getattr(cfg, name) >= 1]
