"""The contrastive regularisers of two views' projections: a multi-positive InfoNCE over the global
batch (every rank's views gathered with gradients), and the negative-free VICReg and SimSiam.
Each computes in fp32, outside bf16 autocast."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..runtime import gather_no_grad, gather_with_grad, rank


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
