"""The pre-norm transformer block shared by the SiT encoder and the MAE decoder.

Written here rather than taken from timm so that checkpoints never depend on another
library's private class names. Attention runs through
:func:`torch.nn.functional.scaled_dot_product_attention`, which picks a fused kernel
(flash / memory-efficient) where the device has one, except in bf16 on a CPU where explicit
matrix multiplies are faster (see :func:`use_explicit_attention`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import kernels


def sinusoidal_embedding(n_positions: int, dim: int) -> Tensor:
    """Fixed sine/cosine position table ``(n_positions, dim)`` (Vaswani et al. 2017).

    Half the channels carry sines and half cosines of geometrically spaced frequencies, so
    that a relative shift is a rotation every block can learn to read.
    """
    if dim % 2:
        raise ValueError(f"sinusoidal embedding needs an even width, got {dim}")
    position = torch.arange(n_positions, dtype=torch.float64)[:, None]          # (N, 1)
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    angle = position * freq[None, :]                                            # (N, dim/2)
    table = torch.cat([torch.sin(angle), torch.cos(angle)], dim=1)
    return table.float()


def key_padding_to_attn_mask(key_valid: Tensor | None) -> Tensor | None:
    """Turn a per-token validity mask ``(B, L)`` (True = may be attended to) into the
    boolean ``(B, 1, 1, L)`` mask that SDPA broadcasts over heads and queries.

    A row with no valid key at all (every lead absent) would make softmax return NaN; such
    rows attend to everything instead, and callers exclude them from any pooled output.
    """
    if key_valid is None:
        return None
    empty = ~key_valid.any(dim=1, keepdim=True)                                 # (B, 1)
    key_valid = key_valid | empty
    return key_valid[:, None, None, :]


class DropPath(nn.Module):
    """Stochastic depth: drop a whole residual branch for a random subset of samples.

    Kept samples are rescaled by ``1 / (1 - p)`` so the expected output is unchanged.
    """

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x: Tensor) -> Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        survive = x.new_empty(shape).bernoulli_(keep)
        return x * survive / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def explicit_attention(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None = None,
                       dropout_p: float = 0.0) -> Tensor:
    """Softmax attention as two matrix multiplies with the softmax in fp32.

    Shapes: ``q, k, v (B, H, L, d_h)``, ``attn_mask`` bool ``(B or 1, 1 or H, 1 or L, L)``
    (True = attend) -> ``(B, H, L, d_h)`` in ``v``'s dtype. The same function as SDPA; used in
    bf16 on CPU, where the fused kernel's bf16 backward is slower than these matmuls, and so is
    its bf16 forward for wide heads (:func:`use_explicit_attention`). The scores are
    upcast before the softmax because bf16's 8-bit mantissa would round small weights away.
    Without autograd it runs over batch chunks whose scores fit in
    :attr:`crema.kernels.KernelPolicy.attention_scores_bytes` (the same outputs).
    """
    if q.requires_grad or not len(q):
        return _attend(q, k, v, attn_mask, dropout_p)
    limit = kernels.current().attention_scores_bytes
    rows = max(1, limit // (4 * q.shape[1] * q.shape[2] * k.shape[2]))
    if len(q) <= rows:
        return _attend(q, k, v, attn_mask, dropout_p)
    parts = []
    for start in range(0, len(q), rows):
        end = start + rows
        mask = attn_mask if attn_mask is None or len(attn_mask) == 1 else attn_mask[start:end]
        parts.append(_attend(q[start:end], k[start:end], v[start:end], mask, dropout_p))
    return torch.cat(parts)


def _attend(q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, dropout_p: float) -> Tensor:
    """:func:`explicit_attention` on one chunk."""
    scores = torch.matmul(q, k.transpose(-2, -1)).float() * (q.shape[-1] ** -0.5)   # (B, H, L, L)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    if dropout_p > 0.0:
        weights = F.dropout(weights, dropout_p)
    return torch.matmul(weights.to(v.dtype), v)


def use_explicit_attention(q: Tensor) -> bool:
    """True in bf16 on CPU for training, and for inference with heads of at least
    :attr:`crema.kernels.KernelPolicy.explicit_attention_min_head_dim` channels: where explicit
    matmuls beat the fused kernel (``benchmarks/mfu.py``, rows ``bf16 sdpa`` / ``bf16 explicit``).
    In fp32 the fused kernel is faster."""
    if q.device.type != "cpu" or q.dtype != torch.bfloat16:
        return False
    return q.requires_grad or q.shape[-1] >= kernels.current().explicit_attention_min_head_dim


class Attention(nn.Module):
    """Multi-head self-attention with one fused qkv projection.

    Shapes: ``x (B, L, D)``, ``attn_mask`` bool ``(B, 1, 1, L)`` (True = attend) -> ``(B, L, D)``.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, d // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)                          # each (B, H, L, d_h)
        dropout_p = self.dropout if self.training else 0.0
        attend = explicit_attention if use_explicit_attention(q) else F.scaled_dot_product_attention
        out = attend(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
        out = out.transpose(1, 2).reshape(b, n, d)
        return self.proj_drop(self.proj(out))


class MLP(nn.Module):
    """Two linear layers with a GELU between: ``(B, L, D) -> (B, L, D)``."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + DropPath(Attn(LN(x)))``, then ``x + DropPath(MLP(LN(x)))``.

    Shapes: ``x (B, L, D)``, optional ``attn_mask`` bool ``(B, 1, 1, L)`` -> ``(B, L, D)``.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0,
                 dropout: float = 0.0, drop_path: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio), dropout)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), attn_mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def init_weights(module: nn.Module) -> None:
    """Xavier-uniform linears with zero bias, unit LayerNorms: the usual ViT start, which keeps
    the residual stream's scale steady through depth. Use with ``model.apply``."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
