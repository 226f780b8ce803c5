"""The Contrastive Regularised Masked Autoencoder: ``L = L_rec + lambda * L_con``.

One training step on a batch ``x (B, C, T)``:

1. Two views of every ECG (one in ``mode="mae"``), each lightly augmented (amplitude scale,
   Gaussian noise, baseline wander) and given its own independent per-lead random mask.
2. Both views go through the encoder **together**, concatenated along the batch
   (``(2B, C, T)``), so two views cost one encoder call on twice the rows rather than two
   calls, and only the visible ``K`` of ``N`` patches per lead are embedded.
3. ``L_rec``: the decoder predicts every patch; the loss is the mean squared error on the
   masked patches of present leads only, against the *clean* (un-augmented) signal, each
   target patch normalised by its own mean and std when ``norm_target``. Averaged over views.
4. ``L_con``: visible tokens are mean-pooled (the encoder's own pooling), projected
   (Linear-LayerNorm-ReLU-Linear) to ``projector_dim``, L2-normalised, and enter a
   symmetric InfoNCE with temperature ``tau``: the two views of one ECG are positives,
   every other view in the global batch (all ranks, gathered with gradients) a negative.
   With ``patient_positives`` views of other records of the same patient are positives too
   (multi-positive InfoNCE, the mean of the positives' log-probabilities).

``mode="contrastive"`` drops ``L_rec`` (no decoder is built); ``mode="mae"`` uses one view
and no ``L_con`` (no projector is built).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig, ObjectiveConfig
from ..train.distributed import gather_no_grad, gather_with_grad, rank
from .decoder import MAEDecoder
from .masking import random_masking
from .sit import SiTEncoder

# Variance floor for per-patch target normalisation. Z-scored ECGs have many near-flat
# patches (about a tenth of 0.2 s patches have std < 0.07): MAE's 1e-6 would blow their noise
# up to unit variance and make them unpredictable targets; 1e-2 caps the gain at 10x.
TARGET_VAR_EPS = 1e-2


# ----------------------------------------------------------------------------- augmentation

def augment_view(x: Tensor, scale: float, noise: float, wander: float, fs: float,
                 generator: torch.Generator | None = None) -> Tensor:
    """A lightly perturbed copy of ``x (B, C, T)``, drawn independently per ECG and lead.

    Amplitude is scaled by ``1 + U(-scale, scale)``; Gaussian noise of std ``noise`` is added;
    baseline wander is two sines of 0.05-0.5 Hz with random phases and amplitudes up to
    ``wander``. All draws come from ``generator`` (CPU) when given, so views are reproducible.
    Zero settings draw nothing.
    """
    if scale == 0 and noise == 0 and wander == 0:
        return x
    b, c, t = x.shape
    dev = generator.device if generator is not None else x.device

    def rand(*shape: int) -> Tensor:
        return torch.rand(*shape, generator=generator, device=dev).to(x.device, x.dtype)

    out = x
    if scale:
        out = out * (1.0 + scale * (2.0 * rand(b, c, 1) - 1.0))
    if noise:
        out = out + noise * torch.randn(b, c, t, generator=generator, device=dev).to(x.device, x.dtype)
    if wander:
        seconds = torch.arange(t, device=x.device, dtype=x.dtype) / fs               # (T,)
        freq = 0.05 + 0.45 * rand(b, c, 2, 1)                                        # Hz
        phase = 2.0 * math.pi * rand(b, c, 2, 1)
        amp = wander * rand(b, c, 2, 1)
        out = out + (amp * torch.sin(2.0 * math.pi * freq * seconds + phase)).sum(dim=2)
    return out


# ----------------------------------------------------------------------------- losses

def patch_targets(patches: Tensor, normalise: bool) -> Tensor:
    """``(..., P)`` target patches, each normalised by its own mean and std if asked."""
    if not normalise:
        return patches
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True, unbiased=False)
    return (patches - mean) / torch.sqrt(var + TARGET_VAR_EPS)


def denormalise_prediction(pred: Tensor, true_patches: Tensor) -> Tensor:
    """Map normalised patch predictions ``(..., P)`` back to signal units with the mean and
    std of the *true* patch: the inverse of :func:`patch_targets`, used for display only."""
    mean = true_patches.mean(dim=-1, keepdim=True)
    var = true_patches.var(dim=-1, keepdim=True, unbiased=False)
    return pred * torch.sqrt(var + TARGET_VAR_EPS) + mean


def masked_mse(pred: Tensor, target: Tensor, weight: Tensor) -> Tensor:
    """Mean squared error over the patches where ``weight (B, C, N)`` is True.

    ``pred``/``target`` are ``(B, C, N, P)``; each chosen patch counts once (mean over ``P``).
    """
    per_patch = (pred - target).pow(2).mean(dim=-1)                                   # (B, C, N)
    weight = weight.to(per_patch.dtype)
    return (per_patch * weight).sum() / weight.sum().clamp_min(1.0)


def info_nce(anchors: Tensor, candidates: Tensor, self_idx: Tensor, positives: Tensor,
             tau: float) -> tuple[Tensor, Tensor]:
    """Multi-positive InfoNCE (NT-Xent when each anchor has one positive).

    Args:
        anchors: ``(n, d)`` L2-normalised embeddings whose loss is computed here.
        candidates: ``(M, d)`` L2-normalised embeddings of the whole (global) batch; the
            anchors are among them at ``self_idx``.
        self_idx: long ``(n,)`` each anchor's own row in ``candidates`` (never a candidate).
        positives: bool ``(n, M)``, True where a candidate is a positive of the anchor.
        tau: temperature.

    Returns:
        ``(loss, acc)``: the mean over anchors of ``-mean_p log softmax(sim / tau)_p``, and the
        fraction of anchors whose most similar other candidate is a positive.
    """
    n = anchors.shape[0]
    logits = anchors @ candidates.t() / tau                                           # (n, M)
    is_self = torch.zeros_like(positives)
    is_self[torch.arange(n, device=anchors.device), self_idx] = True
    logits = logits.masked_fill(is_self, float("-inf"))
    positives = positives & ~is_self
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    n_pos = positives.sum(dim=1).clamp_min(1)
    loss = -(log_prob.masked_fill(~positives, 0.0).sum(dim=1) / n_pos).mean()
    hit = positives.gather(1, logits.argmax(dim=1, keepdim=True)).squeeze(1)
    return loss, hit.float().mean()


def two_view_info_nce(z: Tensor, tau: float, patient_ids: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Symmetric InfoNCE for ``z (2B, d)`` = ``[view 1 of B ECGs; view 2 of the same B]``.

    Under DDP the candidates are every rank's ``z`` (gathered with gradients) and this rank's
    anchors sit at offset ``rank * 2B``. ``patient_ids (B,)`` long, negative = unknown, adds
    every view of a record of the same patient as a positive.
    """
    local = z.shape[0]
    b = local // 2
    with torch.autocast(device_type=z.device.type, enabled=False):
        # Similarities / tau span about +-1/tau: keep them out of bf16 autocast.
        return _two_view_info_nce_fp32(F.normalize(z.float(), dim=-1), b, tau, patient_ids)


def _two_view_info_nce_fp32(z: Tensor, b: int, tau: float,
                            patient_ids: Tensor | None) -> tuple[Tensor, Tensor]:
    local = z.shape[0]
    candidates = gather_with_grad(z)                                                  # (W*2B, d)
    offset = rank() * local if candidates.shape[0] > local else 0
    rows = torch.arange(local, device=z.device)
    self_idx = offset + rows
    partner = offset + (rows + b) % local                                             # the other view
    positives = torch.zeros(local, candidates.shape[0], dtype=torch.bool, device=z.device)
    positives[rows, partner] = True
    if patient_ids is not None:
        pid = patient_ids.to(z.device, torch.long).repeat(2)                          # (2B,)
        pid_all = gather_no_grad(pid)
        positives |= (pid[:, None] == pid_all[None, :]) & (pid[:, None] >= 0)
    return info_nce(z, candidates, self_idx, positives, tau)


# ----------------------------------------------------------------------------- the model

class Projector(nn.Module):
    """Contrastive head ``(B, D) -> (B, out)``: Linear-LayerNorm-ReLU-Linear.

    LayerNorm rather than BatchNorm: no batch statistics to synchronise across ranks and no
    dependence of one ECG's embedding on the rest of its batch.
    """

    def __init__(self, dim: int, hidden: int, out: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.LayerNorm(hidden), nn.ReLU(),
                                 nn.Linear(hidden, out))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class CREMA(nn.Module):
    """SiT encoder + MAE decoder + contrastive projector, trained with the CR-MAE loss.

    Args:
        model_cfg: encoder/decoder/projector widths.
        objective_cfg: mode, mask ratio, lambda, tau, targets, view augmentation.
        fs: sampling rate of the input, Hz (sets the baseline-wander frequencies).
    """

    def __init__(self, model_cfg: ModelConfig, objective_cfg: ObjectiveConfig, fs: float = 250.0):
        super().__init__()
        if objective_cfg.mode not in ("crema", "mae", "contrastive"):
            raise ValueError(f"unknown objective mode {objective_cfg.mode!r}")
        self.model_cfg, self.objective, self.fs = model_cfg, objective_cfg, fs
        self.encoder = SiTEncoder(model_cfg)
        self.decoder = MAEDecoder(model_cfg) if objective_cfg.mode != "contrastive" else None
        self.projector = (Projector(model_cfg.dim, model_cfg.projector_hidden, model_cfg.projector_dim)
                          if objective_cfg.mode != "mae" else None)
        if objective_cfg.mode == "mae":
            # Plain MAE never pools, so the representation norm gets no gradient; freezing it
            # (at the identity affine) keeps DDP from waiting for gradients that never come.
            self.encoder.norm.requires_grad_(False)

    @property
    def n_views(self) -> int:
        return 1 if self.objective.mode == "mae" else 2

    def _visible_tokens(self, tokens: Tensor) -> Tensor:
        """Drop the CLS token, if any: ``(B, L, D) -> (B, C*K, D)``."""
        return tokens[:, 1:] if self.model_cfg.pool == "cls" else tokens

    def forward(self, x: Tensor, lead_mask: Tensor | None = None, patient_ids: Tensor | None = None,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The CR-MAE loss of a batch.

        Args:
            x: ``(B, C, T)`` float signals (z-scored).
            lead_mask: optional bool ``(B, C)``, True = lead present.
            patient_ids: optional long ``(B,)`` (negative = unknown) for patient positives.
            generator: optional CPU generator for the views' augmentation and masks.

        Returns:
            ``loss``, ``loss_rec``, ``loss_con``, ``acc`` (contrastive top-1 accuracy of the
            positive), ``loss_rec_views (V,)`` (reconstruction loss of each view) — scalars
            are 0-d tensors; terms that the mode does not use are 0.
        """
        obj, b = self.objective, x.shape[0]
        n = x.shape[-1] // self.model_cfg.patch_size
        views, keeps, masks = [], [], []
        for _ in range(self.n_views):
            # Augment then mask, view by view: view 1 consumes the same draws in every mode,
            # which makes mode "mae" exactly view 1 of mode "crema".
            views.append(augment_view(x, obj.aug_scale, obj.aug_noise, obj.aug_wander, self.fs, generator))
            m = random_masking(b, x.shape[1], n, obj.mask_ratio, generator, device=x.device)
            keeps.append(m.keep_idx)
            masks.append(m.mask)
        xs, keep, mask = torch.cat(views), torch.cat(keeps), torch.cat(masks)       # (VB, ...)
        lm = None if lead_mask is None else lead_mask.to(torch.bool).repeat(self.n_views, 1)
        tokens = self.encoder.forward_tokens(xs, keep, lm)                            # (VB, L, D)

        zero = x.new_zeros(())
        out = {"loss_rec": zero, "loss_con": zero, "acc": zero,
               "loss_rec_views": x.new_zeros(self.n_views)}
        if self.decoder is not None:
            pred = self.decoder(self._visible_tokens(tokens), keep, n, lm)            # (VB, C, N, P)
            target = patch_targets(self.encoder.patchify(x), obj.norm_target)        # (B, C, N, P), clean
            weight = mask if lm is None else mask & lm[:, :, None]
            pred = pred.float()                                                       # loss in fp32 under autocast
            per_view = torch.stack([
                masked_mse(p, target, w)
                for p, w in zip(pred.chunk(self.n_views), weight.chunk(self.n_views))])
            out["loss_rec_views"] = per_view
            out["loss_rec"] = per_view.mean()
        if self.projector is not None:
            z = self.projector(self.encoder.pool(tokens, lm))                         # (2B, d)
            out["loss_con"], out["acc"] = two_view_info_nce(
                z, obj.tau, patient_ids if obj.patient_positives else None)
        if obj.mode == "crema":
            out["loss"] = out["loss_rec"] + obj.lambda_con * out["loss_con"]
        elif obj.mode == "mae":
            out["loss"] = out["loss_rec"]
        else:
            out["loss"] = out["loss_con"]
        return out

    @torch.no_grad()
    def reconstruct(self, x: Tensor, seed: int | None = None,
                    lead_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Mask ``x``, encode the visible patches, and decode every patch (eval mode, no views).

        Args:
            x: ``(B, C, T)`` float signals.
            seed: seeds the mask (a CPU generator), so a figure can be redrawn identically.
            lead_mask: optional bool ``(B, C)``.

        Returns:
            ``pred (B, C, T)`` in the input's units: visible patches are the input itself, masked
            patches the decoder's prediction. With ``norm_target`` the prediction is
            de-normalised with the mean and std of the *true* patch: for display only, since
            those statistics are exactly what the model was not shown.
            ``mask (B, C, N)`` bool, True = masked.
        """
        if self.decoder is None:
            raise ValueError("a contrastive-only model has no decoder to reconstruct with")
        was_training = self.training
        self.eval()
        try:
            generator = torch.Generator().manual_seed(int(seed)) if seed is not None else None
            b, c, t = x.shape
            n = t // self.model_cfg.patch_size
            m = random_masking(b, c, n, self.objective.mask_ratio, generator, device=x.device)
            tokens = self.encoder.forward_tokens(x, m.keep_idx, lead_mask)
            pred = self.decoder(self._visible_tokens(tokens), m.keep_idx, n, lead_mask).float()
            true = self.encoder.patchify(x.float())
            if self.objective.norm_target:
                pred = denormalise_prediction(pred, true)
            pred = torch.where(m.mask[..., None], pred, true)
            return self.encoder.unpatchify(pred), m.mask
        finally:
            self.train(was_training)
