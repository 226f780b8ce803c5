"""The Signal Transformer (SiT) encoder: per-lead patch tokens, a per-patch conv stem, and a
transformer over all leads and times.

Token layout: an ECG ``(B, C, T)`` is cut into ``N = T / P`` patches per lead; token
``c * K + k`` is the ``k``-th kept patch of lead ``c`` (``K = N`` without masking). Each token
is ``stem(patch) + lead_embed[c] + time_embed[n]``.

No-leakage guarantee: the stem runs on each patch alone (patches are folded into the batch
as ``(B*C*K, 1, P)`` with zero padding inside the patch), so a visible token can never see a
sample of a masked patch; under masking only the visible patches are embedded at all.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import kernels
from ..config import EMBEDDING_FEATURES, ModelConfig
from .blocks import Block, init_weights, key_padding_to_attn_mask, sinusoidal_embedding


def _tracing() -> bool:
    """True while an exporter or compiler traces the model: a chunk loop would be frozen at the
    example's batch size (ONNX exports have a dynamic batch axis), so the stem runs whole."""
    compiling = getattr(getattr(torch, "compiler", None), "is_compiling", lambda: False)
    return torch.jit.is_tracing() or compiling()


def _all_present(lead_mask: Tensor) -> bool:
    """True when a CPU lead mask marks every lead present: attention then needs no mask at all (a
    mask of only True changes no attention weight, and building and applying it is a dozen small
    ops per call). Never on another device, where the answer would wait for the device, nor
    while tracing, where it would freeze the example's answer into the graph."""
    return lead_mask.device.type == "cpu" and not _tracing() and bool(lead_mask.all())


class PatchEmbed(nn.Module):
    """A small 1-D conv stem applied to every patch on its own, then a projection to width D.

    Shapes: ``patches (M, P) -> (M, D)``. The stem is two convolutions with GELU (the second
    halves the length); the flattened feature map keeps the position of each feature inside
    the patch, which the projection needs to rebuild the waveform's shape.

    The patches go through in chunks of :attr:`crema.kernels.KernelPolicy.stem_chunk` (0 = all
    at once; why: see there). Each patch is its own sample, so chunking changes no output.
    """

    def __init__(self, patch_size: int, channels: int, dim: int):
        super().__init__()
        self.patch_size = patch_size
        self.stem = nn.Sequential(
            nn.Conv1d(1, channels, kernel_size=7, padding=3),
            nn.GELU(),
            nn.Conv1d(channels, channels, kernel_size=5, stride=2, padding=2),
            nn.GELU(),
        )
        stem_len = (patch_size + 1) // 2
        self.proj = nn.Linear(channels * stem_len, dim)

    def embed_chunk(self, patches: Tensor) -> Tensor:
        """``(m, P) -> (m, D)`` for one chunk."""
        features = self.stem(patches.unsqueeze(1))                  # (m, S, ceil(P/2))
        return self.proj(features.flatten(1))                       # (m, D)

    def forward(self, patches: Tensor) -> Tensor:
        chunk = kernels.current().stem_chunk
        if chunk <= 0 or len(patches) <= chunk or _tracing():
            return self.embed_chunk(patches)
        return torch.cat([self.embed_chunk(part) for part in patches.split(chunk)])


class SiTEncoder(nn.Module):
    """Signal Transformer encoder.

    Submodules (their names are a contract: fine-tuning assigns layer-wise learning rates by
    them): ``patch_embed``, ``lead_embed`` (learned ``(C, D)``), ``blocks``, ``norm``, and
    ``cls_token`` when ``cfg.pool == "cls"``. The sinusoidal ``time_embed (N, D)`` is a fixed,
    non-persistent buffer rebuilt from the config, so it is not in checkpoints.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.window % cfg.patch_size:
            raise ValueError(f"window {cfg.window} is not a multiple of patch size {cfg.patch_size}")
        self.cfg = cfg
        self.n_leads, self.patch_size, self.dim = cfg.n_leads, cfg.patch_size, cfg.dim
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.stem_channels, cfg.dim)
        self.lead_embed = nn.Parameter(torch.zeros(cfg.n_leads, cfg.dim))
        self.register_buffer("time_embed", sinusoidal_embedding(cfg.n_patches, cfg.dim),
                             persistent=False)
        if cfg.pool == "cls":
            self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim))
        elif cfg.pool != "mean":
            raise ValueError(f"unknown pool {cfg.pool!r}; choose 'mean' or 'cls'")
        # Stochastic depth grows linearly with depth: early blocks carry generic features.
        rates = torch.linspace(0.0, cfg.drop_path, cfg.depth).tolist()
        self.blocks = nn.ModuleList(
            Block(cfg.dim, cfg.heads, cfg.mlp_ratio, cfg.dropout, rate) for rate in rates)
        self.norm = nn.LayerNorm(cfg.dim)
        self.apply(init_weights)
        nn.init.trunc_normal_(self.lead_embed, std=0.02)
        if cfg.pool == "cls":
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    # ------------------------------------------------------------------ patches

    def patchify(self, x: Tensor) -> Tensor:
        """``(B, C, T) -> (B, C, N, P)`` with ``N = T / P``."""
        b, c, t = x.shape
        if t % self.patch_size:
            raise ValueError(f"signal length {t} is not a multiple of patch size {self.patch_size}")
        return x.reshape(b, c, t // self.patch_size, self.patch_size)

    def unpatchify(self, patches: Tensor) -> Tensor:
        """``(B, C, N, P) -> (B, C, N * P)``; the inverse of :meth:`patchify`."""
        b, c, n, p = patches.shape
        return patches.reshape(b, c, n * p)

    # ------------------------------------------------------------------ forward

    def _check_input(self, x: Tensor) -> None:
        if x.ndim != 3 or x.shape[1] != self.n_leads:
            raise ValueError(f"expected signals (B, {self.n_leads}, T), got {tuple(x.shape)}")
        n = x.shape[-1] // self.patch_size
        if x.shape[-1] % self.patch_size or n > self.cfg.n_patches or n == 0:
            raise ValueError(
                f"signal length {x.shape[-1]} must be a positive multiple of {self.patch_size} "
                f"and at most the model window {self.cfg.window}")

    def embed(self, x: Tensor, keep_idx: Tensor | None = None) -> Tensor:
        """Token embeddings before the transformer: ``(B, C, T) -> (B, C, K, D)``.

        With ``keep_idx (B, C, K)`` only those patches are embedded; otherwise all ``N``.
        """
        self._check_input(x)
        patches = self.patchify(x)                                   # (B, C, N, P)
        b, c, n, p = patches.shape
        if keep_idx is None:
            pos = self.time_embed[:n].expand(b, c, n, self.dim)      # (B, C, N, D)
        else:
            patches = patches.gather(2, keep_idx.unsqueeze(-1).expand(-1, -1, -1, p))
            pos = self.time_embed[keep_idx]                          # (B, C, K, D)
        k = patches.shape[2]
        tokens = self.patch_embed(patches.reshape(b * c * k, p)).view(b, c, k, self.dim)
        return tokens + self.lead_embed[None, :, None, :] + pos

    def forward_tokens(self, x: Tensor, keep_idx: Tensor | None = None,
                       lead_mask: Tensor | None = None) -> Tensor:
        """Transformer output tokens (before the final norm).

        Args:
            x: ``(B, C, T)`` float signals.
            keep_idx: optional long ``(B, C, K)`` visible patches per lead (see masking).
            lead_mask: optional bool ``(B, C)``, True = lead present; tokens of absent leads
                are excluded as attention keys, so they cannot change present leads' tokens.

        Returns:
            ``(B, L, D)`` with ``L = C * K`` (``K = N`` without ``keep_idx``), lead-major;
            with ``pool == "cls"`` the CLS token is prepended (``L = 1 + C * K``).
        """
        tokens = self.embed(x, keep_idx)                             # (B, C, K, D)
        b, c, k, d = tokens.shape
        tokens = tokens.reshape(b, c * k, d)
        key_valid = None
        if lead_mask is not None and not _all_present(lead_mask):
            key_valid = lead_mask.to(torch.bool)[:, :, None].expand(b, c, k).reshape(b, c * k)
        if self.cfg.pool == "cls":
            tokens = torch.cat([self.cls_token.to(tokens.dtype).expand(b, 1, d), tokens], dim=1)
            if key_valid is not None:
                key_valid = torch.cat([key_valid.new_ones(b, 1), key_valid], dim=1)
        attn_mask = key_padding_to_attn_mask(key_valid)
        for block in self.blocks:
            tokens = block(tokens, attn_mask)
        return tokens

    def pool(self, tokens: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        """The representation: ``(B, L, D) -> (B, D)``.

        Mean over the tokens of present leads, then LayerNorm; or the normed CLS token.
        """
        if self.cfg.pool == "cls":
            return self.norm(tokens[:, 0])
        if lead_mask is None:
            return self.norm(tokens.mean(dim=1))
        b, l, _ = tokens.shape
        weight = lead_mask.to(tokens.dtype)[:, :, None].expand(b, self.n_leads, l // self.n_leads)
        weight = weight.reshape(b, l, 1)
        pooled = (tokens * weight).sum(dim=1) / weight.sum(dim=1).clamp_min(1.0)
        return self.norm(pooled)

    def read_out(self, tokens: Tensor, lead_mask: Tensor | None = None, features: str = "mean") -> Tensor:
        """An embedding from the transformer's tokens: ``(B, L, D) -> (B, F)``, the one place
        every embedding kind is computed (``F = feature_dim(features)``).

        ``mean``: :meth:`pool`. ``leads``: each lead's mean token through the final LayerNorm,
        flattened lead by lead (``(B, C * D)``, lead ``c`` at ``[c * D:(c + 1) * D]``); a lead
        absent in ``lead_mask`` gets a block of zeros.
        """
        if features == "mean":
            return self.pool(tokens, lead_mask)
        if features != "leads":
            raise ValueError(f"unknown embedding features {features!r}; choose from {', '.join(EMBEDDING_FEATURES)}")
        if self.cfg.pool == "cls":
            tokens = tokens[:, 1:]
        b, l, d = tokens.shape
        per_lead = self.norm(tokens.reshape(b, self.n_leads, l // self.n_leads, d).mean(dim=2))  # (B, C, D)
        if lead_mask is not None:  # where, not a product: zeros even if an absent lead's tokens were not finite
            per_lead = torch.where(lead_mask.to(torch.bool)[:, :, None], per_lead, per_lead.new_zeros(()))
        return per_lead.flatten(1)

    def feature_dim(self, features: str = "mean") -> int:
        """Width F of :meth:`embedding`: D for ``mean``, ``n_leads * D`` for ``leads``."""
        return feature_dim(self.cfg, features)

    def embedding(self, x: Tensor, lead_mask: Tensor | None = None, features: str = "mean") -> Tensor:
        """The representation of unmasked signals: ``(B, C, T) -> (B, F)`` (:meth:`read_out`).

        Without autograd the batch goes through in parts of
        :attr:`crema.kernels.KernelPolicy.inference_batch` ECGs (each ECG is computed on its own,
        so the parts change nothing but memory traffic)."""
        n = kernels.current().inference_batch
        if n <= 0 or len(x) <= n or torch.is_grad_enabled() or _tracing():
            return self.read_out(self.forward_tokens(x, lead_mask=lead_mask), lead_mask, features)
        parts = []
        for start in range(0, len(x), n):
            mask = None if lead_mask is None else lead_mask[start:start + n]
            parts.append(self.read_out(self.forward_tokens(x[start:start + n], lead_mask=mask), mask, features))
        return torch.cat(parts)

    def forward(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        """Pooled representation of unmasked signals: ``(B, C, T) -> (B, D)``, the ``mean``
        :meth:`embedding` (what classifiers and the pretraining objective use)."""
        return self.embedding(x, lead_mask, "mean")


def feature_dim(cfg: ModelConfig, features: str = "mean") -> int:
    """Width F of an encoder's ``features`` embedding (see :meth:`SiTEncoder.read_out`)."""
    if features not in EMBEDDING_FEATURES:
        raise ValueError(f"unknown embedding features {features!r}; choose from {', '.join(EMBEDDING_FEATURES)}")
    return cfg.dim * (cfg.n_leads if features == "leads" else 1)
