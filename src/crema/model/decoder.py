"""The light MAE decoder: visible encoder tokens plus mask tokens -> the samples of every patch.

The encoder's visible tokens ``(B, C*K, D)`` are projected to the decoder width, scattered
back to their places in a ``(B, C, N)`` grid filled with a learned mask token, given the
decoder's own lead and time embeddings, and run through a few transformer blocks.

``decoder_mode``:
    ``per_lead`` (default) folds leads into the batch, so attention runs over the ``N``
    tokens of one lead: ``C`` sequences of ``N`` cost ``C`` times less attention than one
    of ``C*N``. Cross-lead information still arrives through the encoder's tokens.
    ``joint`` attends over all ``C*N`` tokens of an ECG.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..config import ModelConfig
from .blocks import Block, init_weights, key_padding_to_attn_mask, sinusoidal_embedding


class MAEDecoder(nn.Module):
    """Predicts the ``P`` samples of every patch: ``(B, C*K, D) -> (B, C, N, P)``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.decoder_mode not in ("per_lead", "joint"):
            raise ValueError(f"unknown decoder_mode {cfg.decoder_mode!r}; choose 'per_lead' or 'joint'")
        self.cfg = cfg
        self.n_leads, self.dim = cfg.n_leads, cfg.decoder_dim
        # The encoder hands over un-normalised tokens; normalising here keeps the decoder's
        # input scale independent of the encoder's depth.
        self.embed = nn.Sequential(nn.LayerNorm(cfg.dim), nn.Linear(cfg.dim, cfg.decoder_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, 1, cfg.decoder_dim))
        self.lead_embed = nn.Parameter(torch.zeros(cfg.n_leads, cfg.decoder_dim))
        self.register_buffer("time_embed", sinusoidal_embedding(cfg.n_patches, cfg.decoder_dim),
                             persistent=False)
        self.blocks = nn.ModuleList(
            Block(cfg.decoder_dim, cfg.decoder_heads, cfg.mlp_ratio) for _ in range(cfg.decoder_depth))
        self.norm = nn.LayerNorm(cfg.decoder_dim)
        self.head = nn.Linear(cfg.decoder_dim, cfg.patch_size)
        self.apply(init_weights)
        nn.init.trunc_normal_(self.mask_token, std=0.02)
        nn.init.trunc_normal_(self.lead_embed, std=0.02)

    def forward(self, tokens: Tensor, keep_idx: Tensor, n_patches: int,
                lead_mask: Tensor | None = None) -> Tensor:
        """Reconstruct every patch.

        Args:
            tokens: ``(B, C*K, D)`` encoder output for the visible patches (no CLS token).
            keep_idx: long ``(B, C, K)`` positions of those patches.
            n_patches: ``N``, patches per lead.
            lead_mask: optional bool ``(B, C)``; in ``joint`` mode absent leads are not keys.

        Returns:
            ``(B, C, N, P)`` predicted samples (normalised per patch when the loss is).
        """
        b, c, k = keep_idx.shape
        visible = self.embed(tokens).view(b, c, k, self.dim)
        grid = self.mask_token.to(visible.dtype).expand(b, c, n_patches, self.dim)  # bf16 under autocast
        grid = grid.scatter(2, keep_idx.unsqueeze(-1).expand(-1, -1, -1, self.dim), visible)
        grid = grid + self.lead_embed[None, :, None, :] + self.time_embed[None, None, :n_patches]
        if self.cfg.decoder_mode == "per_lead":
            seq, attn_mask = grid.reshape(b * c, n_patches, self.dim), None
        else:
            seq = grid.reshape(b, c * n_patches, self.dim)
            key_valid = None
            if lead_mask is not None:
                key_valid = lead_mask.to(torch.bool)[:, :, None].expand(b, c, n_patches)
                key_valid = key_valid.reshape(b, c * n_patches)
            attn_mask = key_padding_to_attn_mask(key_valid)
        for block in self.blocks:
            seq = block(seq, attn_mask)
        return self.head(self.norm(seq)).view(b, c, n_patches, -1)
