"""The Contrastive Regularised Masked Autoencoder: ``L = L_rec + lambda * L_con``.

One training step on a batch ``x (B, C, T)`` (``T`` may be longer than the model window ``W``):

1. ``make_views``: two views of every ECG (one in ``mode="mae"``), each its own ``W``-sample
   crop of the record (``view_crop``: ``disjoint``, the default, takes non-overlapping crops,
   so the views share no samples; ``random`` independent crops; ``same`` one shared crop), each
   lightly augmented (amplitude scale, Gaussian noise, baseline wander) and given its own random
   mask (``mask_mode``: per lead, or the same time patches in every lead).
2. Both views go through the encoder **together**, concatenated along the batch
   (``(2B, C, W)``), so two views cost one encoder call on twice the rows rather than two
   calls, and only the visible ``K`` of ``N`` patches per lead are embedded.
3. ``reconstruction_loss``: the decoder predicts every patch; the loss is the mean squared error
   on the masked patches of present leads only, against each view's *clean* (un-augmented) crop,
   each target patch normalised by its own mean and std when ``norm_target``. Averaged over views.
4. ``contrastive_loss``: visible tokens are mean-pooled (the encoder's own pooling), projected
   (Linear-LayerNorm-ReLU-Linear) to ``projector_dim`` and regularised (``con_loss``): a
   symmetric InfoNCE with temperature ``tau`` (the default; the two views of one ECG are
   positives, every other view in the global batch, all ranks gathered with gradients, a
   negative; with ``patient_positives`` views of other records of the same patient are positives
   too), or the negative-free VICReg or SimSiam. ``con_scale`` (the warm-up of
   :func:`contrastive_scale`) multiplies ``lambda``.

``mode="contrastive"`` drops ``L_rec`` (no decoder is built); ``mode="mae"`` uses one view
and no ``L_con`` (no projector is built).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ModelConfig, ObjectiveConfig
from ..data.augment import WANDER_LOW_HZ, WANDER_SINES, WANDER_SPAN_HZ, wander_drift
from ..runtime import gather_no_grad, gather_with_grad, rank
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
    ``wander`` (:func:`crema.data.augment.wander_drift`). All draws come from ``generator`` (CPU) when given, so views are reproducible.
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
        freq = WANDER_LOW_HZ + WANDER_SPAN_HZ * rand(b, c, WANDER_SINES, 1)          # Hz
        phase = 2.0 * math.pi * rand(b, c, WANDER_SINES, 1)
        amp = wander * rand(b, c, WANDER_SINES, 1)
        out = out + wander_drift(seconds, freq, phase, amp, sin=torch.sin)
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


# ----------------------------------------------------------------------------- negative-free regularisers

def vicreg_loss(z1: Tensor, z2: Tensor) -> Tensor:
    """Variance-invariance-covariance regulariser (Bardes et al. 2022) of two views ``(B, d)``.

    The usual weights 25 / 25 / 1, divided by 25 so the term sits on the scale of ``L_rec``:
    ``invariance (MSE) + variance hinge (std >= 1 per dim) + covariance / 25``. Statistics are
    per process (under DDP each rank regularises its own batch).
    """
    with torch.autocast(device_type=z1.device.type, enabled=False):
        z1, z2 = z1.float(), z2.float()
        invariance = F.mse_loss(z1, z2)
        variance = cov = z1.new_zeros(())
        for z in (z1, z2):
            z = z - z.mean(dim=0)
            std = torch.sqrt(z.var(dim=0) + 1e-4)
            variance = variance + F.relu(1.0 - std).mean() / 2
            c = (z.t() @ z) / max(z.shape[0] - 1, 1)                                  # (d, d)
            off = c - torch.diag(torch.diagonal(c))
            cov = cov + off.pow(2).sum() / z.shape[1] / 2
        return invariance + variance + cov / 25.0


def simsiam_loss(p: Tensor, z: Tensor) -> Tensor:
    """Stop-gradient regulariser (SimSiam, Chen & He 2021) for ``[view 1; view 2]`` rows.

    ``p (2B, d)`` are predictor outputs, ``z (2B, d)`` projector outputs; each view's
    prediction is pulled towards the *detached* projection of the other view: ``-cos`` averaged
    over both directions, in ``[-1, 1]``.
    """
    b = p.shape[0] // 2
    target = torch.cat([z[b:], z[:b]]).detach()
    with torch.autocast(device_type=p.device.type, enabled=False):
        return -F.cosine_similarity(p.float(), target.float(), dim=-1).mean()


def contrastive_scale(step: int, start: int, ramp: int) -> float:
    """The fraction of ``lambda_con`` in force at optimiser ``step``: 0 before ``start``, then a
    linear rise over ``ramp`` steps to 1 (reconstruction can leave its plateau first)."""
    if step < start:
        return 0.0
    return 1.0 if ramp <= 0 else min(1.0, (step - start + 1) / ramp)


# ----------------------------------------------------------------------------- views

def crop_starts_for_views(batch: int, length: int, window: int, n_views: int, how: str,
                          generator: torch.Generator | None = None) -> Tensor | None:
    """Start samples ``(V, B)`` of each view's crop of a ``length``-sample signal, or None when
    the signal is already one window long (no crop, nothing drawn).

    ``same``: one random crop shared by all views; ``random``: an independent crop per view
    (they may overlap); ``disjoint``: two non-overlapping crops in random order, the contrastive
    positives of CLOCS/CMSC (two moments of one recording, so matching them needs what is
    stable in the patient's ECG rather than shared samples).
    """
    if length == window:
        return None
    if length < window:
        raise ValueError(f"signal of {length} samples is shorter than the model window {window}")
    dev = generator.device if generator is not None else None

    def uniform_int(high: Tensor | int) -> Tensor:
        """Integers in ``[0, high]`` per ECG."""
        u = torch.rand(batch, generator=generator, device=dev)
        return torch.floor(u * (torch.as_tensor(high, dtype=torch.float32, device=u.device) + 1)).long()

    if how == "same" or n_views == 1:  # one view (mode mae): a random crop whatever the setting
        return uniform_int(length - window).expand(n_views, batch).clone()
    if how == "random":
        return torch.stack([uniform_int(length - window) for _ in range(n_views)])
    if how == "disjoint":
        if n_views != 2 or length < 2 * window:
            raise ValueError(f"disjoint views need two crops of {window} in {length} samples")
        first = uniform_int(length - 2 * window)
        second = first + window + uniform_int(length - 2 * window - first)
        swap = torch.rand(batch, generator=generator, device=dev) < 0.5
        return torch.stack([torch.where(swap, second, first), torch.where(swap, first, second)])
    raise ValueError(f"unknown view_crop {how!r}; choose 'same', 'random' or 'disjoint'")


def take_crops(x: Tensor, starts: Tensor, window: int) -> Tensor:
    """``x (B, C, T)`` cropped at per-ECG ``starts (B,)`` -> ``(B, C, window)``."""
    idx = starts.to(x.device)[:, None] + torch.arange(window, device=x.device)       # (B, window)
    return x.gather(2, idx[:, None, :].expand(-1, x.shape[1], -1))


@dataclass
class Views:
    """The views of a batch, stacked view-major along the batch (``VB = V * B`` rows).

    Attributes:
        clean: ``(VB, C, W)`` each view's crop before augmentation (the reconstruction target).
        signal: ``(VB, C, W)`` the augmented crops the encoder sees.
        keep_idx: long ``(VB, C, K)`` visible patches; mask: bool ``(VB, C, N)``, True = masked.
    """

    clean: Tensor
    signal: Tensor
    keep_idx: Tensor
    mask: Tensor


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
        objective_cfg: mode, masking, views, regulariser, lambda, tau, targets, augmentation.
        fs: sampling rate of the input, Hz (sets the baseline-wander frequencies).
    """

    def __init__(self, model_cfg: ModelConfig, objective_cfg: ObjectiveConfig, fs: float = 250.0):
        super().__init__()
        obj = objective_cfg
        if obj.mode not in ("crema", "mae", "contrastive"):
            raise ValueError(f"unknown objective mode {obj.mode!r}")
        if obj.con_loss not in ("infonce", "vicreg", "simsiam"):
            raise ValueError(f"unknown con_loss {obj.con_loss!r}; choose infonce, vicreg or simsiam")
        self.model_cfg, self.objective, self.fs = model_cfg, obj, fs
        self.encoder = SiTEncoder(model_cfg)
        self.decoder = MAEDecoder(model_cfg) if obj.mode != "contrastive" else None
        uses_con = obj.mode != "mae"
        self.projector = (Projector(model_cfg.dim, model_cfg.projector_hidden, model_cfg.projector_dim)
                          if uses_con else None)
        self.predictor = (Projector(model_cfg.projector_dim, model_cfg.projector_hidden, model_cfg.projector_dim)
                          if uses_con and obj.con_loss == "simsiam" else None)
        if obj.mode == "mae":
            # Plain MAE never pools, so the representation norm gets no gradient; freezing it
            # (at the identity affine) keeps DDP from waiting for gradients that never come.
            self.encoder.norm.requires_grad_(False)

    @property
    def n_views(self) -> int:
        return 1 if self.objective.mode == "mae" else 2

    def _visible_tokens(self, tokens: Tensor) -> Tensor:
        """Drop the CLS token, if any: ``(B, L, D) -> (B, C*K, D)``."""
        return tokens[:, 1:] if self.model_cfg.pool == "cls" else tokens

    # ------------------------------------------------------------------ the four steps

    def make_views(self, x: Tensor, generator: torch.Generator | None = None) -> Views:
        """Crop, augment and mask ``x (B, C, T)`` into :class:`Views` (``T`` >= model window).

        Draw order: crop starts for all views, then view by view augmentation and mask, so
        with ``T`` equal to the window mode ``mae`` is exactly view 1 of mode ``crema``.
        """
        obj, w = self.objective, self.model_cfg.window
        b, c, t = x.shape
        starts = crop_starts_for_views(b, t, min(w, t), self.n_views, obj.view_crop, generator)
        clean, signal, keeps, masks = [], [], [], []
        for v in range(self.n_views):
            crop = x if starts is None else take_crops(x, starts[v], w)
            clean.append(crop)
            signal.append(augment_view(crop, obj.aug_scale, obj.aug_noise, obj.aug_wander, self.fs, generator))
            m = random_masking(b, c, crop.shape[-1] // self.model_cfg.patch_size, obj.mask_ratio,
                               generator, device=x.device, mode=obj.mask_mode)
            keeps.append(m.keep_idx)
            masks.append(m.mask)
        return Views(torch.cat(clean), torch.cat(signal), torch.cat(keeps), torch.cat(masks))

    def reconstruction_loss(self, tokens: Tensor, views: Views, lead_mask: Tensor | None) -> Tensor:
        """Per-view masked MSE ``(V,)`` of the decoder's patches against each view's clean crop."""
        n = views.mask.shape[-1]
        pred = self.decoder(self._visible_tokens(tokens), views.keep_idx, n, lead_mask).float()
        target = patch_targets(self.encoder.patchify(views.clean), self.objective.norm_target)
        weight = views.mask if lead_mask is None else views.mask & lead_mask[:, :, None]
        return torch.stack([masked_mse(p, t_, w_) for p, t_, w_ in zip(
            pred.chunk(self.n_views), target.chunk(self.n_views), weight.chunk(self.n_views))])

    def contrastive_loss(self, tokens: Tensor, lead_mask: Tensor | None,
                         patient_ids: Tensor | None) -> tuple[Tensor, Tensor]:
        """The regulariser on the pooled views and the positive-retrieval accuracy (InfoNCE
        top-1 of the other view, logged for every regulariser)."""
        obj = self.objective
        z = self.projector(self.encoder.pool(tokens, lead_mask))                     # (2B, d)
        pids = patient_ids if obj.patient_positives else None
        if obj.con_loss == "infonce":
            return two_view_info_nce(z, obj.tau, pids)
        with torch.no_grad():
            _, acc = two_view_info_nce(z.detach(), obj.tau, pids)
        if obj.con_loss == "vicreg":
            return vicreg_loss(*z.chunk(2)), acc
        return simsiam_loss(self.predictor(z), z), acc

    def forward(self, x: Tensor, lead_mask: Tensor | None = None, patient_ids: Tensor | None = None,
                generator: torch.Generator | None = None, con_scale: float | Tensor = 1.0) -> dict[str, Tensor]:
        """The CR-MAE loss of a batch.

        Args:
            x: ``(B, C, T)`` float signals (z-scored); ``T`` may exceed the model window when
                the views take their own crops (``view_crop``).
            lead_mask: optional bool ``(B, C)``, True = lead present.
            patient_ids: optional long ``(B,)`` (negative = unknown) for patient positives.
            generator: optional CPU generator for the views' crops, augmentation and masks.
            con_scale: multiplies ``lambda_con`` (the warm-up of :func:`contrastive_scale`).

        Returns:
            ``loss``, ``loss_rec``, ``loss_con``, ``acc`` (contrastive top-1 accuracy of the
            positive), ``loss_rec_views (V,)`` (reconstruction loss of each view) — scalars
            are 0-d tensors; terms that the mode does not use are 0.
        """
        views = self.make_views(x, generator)
        lm = None if lead_mask is None else lead_mask.to(torch.bool).repeat(self.n_views, 1)
        tokens = self.encoder.forward_tokens(views.signal, views.keep_idx, lm)        # (VB, L, D)

        zero = x.new_zeros(())
        out = {"loss_rec": zero, "loss_con": zero, "acc": zero,
               "loss_rec_views": x.new_zeros(self.n_views)}
        if self.decoder is not None:
            out["loss_rec_views"] = self.reconstruction_loss(tokens, views, lm)
            out["loss_rec"] = out["loss_rec_views"].mean()
        if self.projector is not None:
            out["loss_con"], out["acc"] = self.contrastive_loss(tokens, lm, patient_ids)
        out["loss"] = self.total_loss(out["loss_rec"], out["loss_con"], con_scale)
        return out

    def total_loss(self, loss_rec: Tensor, loss_con: Tensor, con_scale: float | Tensor) -> Tensor:
        """The mode's loss from its terms: ``crema`` = ``loss_rec + lambda_con * con_scale *
        loss_con``; ``mae`` = ``loss_rec``; ``contrastive`` = ``loss_con``."""
        obj = self.objective
        if obj.mode == "crema":
            return loss_rec + obj.lambda_con * con_scale * loss_con
        return loss_rec if obj.mode == "mae" else loss_con

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
            m = random_masking(b, c, n, self.objective.mask_ratio, generator, device=x.device,
                               mode=self.objective.mask_mode)
            tokens = self.encoder.forward_tokens(x, m.keep_idx, lead_mask)
            pred = self.decoder(self._visible_tokens(tokens), m.keep_idx, n, lead_mask).float()
            true = self.encoder.patchify(x.float())
            if self.objective.norm_target:
                pred = denormalise_prediction(pred, true)
            pred = torch.where(m.mask[..., None], pred, true)
            return self.encoder.unpatchify(pred), m.mask
        finally:
            self.train(was_training)
