"""The Contrastive Regularised Masked Autoencoder: ``L = L_rec + lambda * L_con``.

One training step on a batch ``x (B, C, T)`` (``T`` may be longer than the model window ``W``):

1. ``make_views`` (:mod:`crema.model.views`): two views of every ECG (one in ``mode="mae"``),
   each its own ``W``-sample crop of the record (``view_crop``: ``disjoint``, the default, takes
   non-overlapping crops, so the views share no samples; ``random`` independent crops; ``same``
   one shared crop), each lightly augmented (amplitude scale, Gaussian noise, baseline wander)
   and given its own random mask (``mask_mode``: per lead, or the same time patches in every
   lead).
2. Both views go through the encoder **together**, concatenated along the batch
   (``(2B, C, W)``), so two views cost one encoder call on twice the rows rather than two
   calls, and only the visible ``K`` of ``N`` patches per lead are embedded.
3. ``reconstruction_loss`` (:mod:`crema.model.patch_loss`): the decoder predicts every patch;
   the loss is the mean squared error on the masked patches of present leads only, against each
   view's *clean* (un-augmented) crop, each target patch normalised by its own mean and std when
   ``norm_target``. Averaged over views.
4. ``contrastive_loss``: visible tokens are mean-pooled (the encoder's own pooling), projected
   (Linear-LayerNorm-ReLU-Linear) to ``projector_dim`` and regularised (``con_loss``): a
   symmetric InfoNCE with temperature ``tau`` (the default; the two views of one ECG are
   positives, every other view in the global batch, all ranks gathered with gradients, a
   negative; with ``patient_positives`` views of other records of the same patient are positives
   too), or the negative-free VICReg or SimSiam (:mod:`crema.model.contrastive`).
   ``con_scale`` (the warm-up of :func:`contrastive_scale`) multiplies ``lambda``.

``mode="contrastive"`` drops ``L_rec`` (no decoder is built); ``mode="mae"`` uses one view
and no ``L_con`` (no projector is built).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import ModelConfig, ObjectiveConfig
from .contrastive import simsiam_loss, two_view_info_nce, vicreg_loss
from .decoder import MAEDecoder
from .masking import random_masking
from .patch_loss import denormalise_prediction, masked_mse, patch_targets
from .sit import SiTEncoder
from .views import Views, make_views


def contrastive_scale(step: int, start: int, ramp: int) -> float:
    """The fraction of ``lambda_con`` in force at optimiser ``step``: 0 before ``start``, then a
    linear rise over ``ramp`` steps to 1 (reconstruction can leave its plateau first)."""
    if step < start:
        return 0.0
    return 1.0 if ramp <= 0 else min(1.0, (step - start + 1) / ramp)


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
        """Crop, augment and mask ``x (B, C, T)`` into :class:`~crema.model.views.Views` (``T`` >=
        model window; :func:`crema.model.views.make_views`)."""
        return make_views(x, self.objective, self.model_cfg.window, self.model_cfg.patch_size, self.n_views,
                          self.fs, generator)

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
