"""A 1-D ResNet for 12-lead ECG classification: the supervised convolutional baseline.

Written for CREMA in the spirit of the xresnet1d models that do well on PTB-XL: a stem of three
convolutions, residual stages of BatchNorm/ReLU basic blocks that halve the time axis, adaptive
concat pooling (average and max) and a linear head.

    x (B, C, T) -> stem (B, w0, T/4) -> stages (B, w_last, T/4/2^(S-1)) -> pool (B, 2*w_last) -> (B, K)
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import ResNet1dConfig
from .heads import fp32_head


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv1d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm1d(c_out),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class BasicBlock1d(nn.Module):
    """Two convolutions with a residual connection; a strided 1x1 projection when shapes change.

    ``(B, c_in, T) -> (B, c_out, T / stride)``
    """

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int):
        super().__init__()
        self.convs = nn.Sequential(_conv_bn(c_in, c_out, kernel, stride),
                                   _conv_bn(c_out, c_out, kernel, relu=False))
        # zero-init the last BatchNorm so each block starts as the identity (stable from scratch)
        nn.init.zeros_(self.convs[1][1].weight)
        if stride != 1 or c_in != c_out:
            pool = nn.AvgPool1d(stride, ceil_mode=True) if stride > 1 else nn.Identity()
            self.shortcut: nn.Module = nn.Sequential(pool, _conv_bn(c_in, c_out, 1, relu=False))
        else:
            self.shortcut = nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.convs(x)
        short = self.shortcut(x)
        return self.act(out + short[..., : out.shape[-1]])


class ConcatPool1d(nn.Module):
    """Average and max over time, concatenated: ``(B, C, T) -> (B, 2C)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(-1), x.amax(-1)], dim=1)


class ResNet1d(nn.Module):
    """The supervised 1-D ResNet baseline.

    Args:
        n_leads: input channels (12).
        n_classes: outputs K (logits).
        widths, depths, stem_width, kernel_size, dropout: see :class:`ResNet1dConfig`.
    """

    def __init__(self, n_leads: int = 12, n_classes: int = 5, widths: tuple[int, ...] = (64, 128, 128, 256),
                 depths: tuple[int, ...] = (1, 1, 1, 1), stem_width: int = 32, kernel_size: int = 5,
                 dropout: float = 0.0):
        super().__init__()
        if len(widths) != len(depths):
            raise ValueError(f"widths {widths} and depths {depths} must have the same length")
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.config = ResNet1dConfig(n_leads, stem_width, tuple(widths), tuple(depths), kernel_size, dropout)
        self.n_classes = n_classes
        self.stem = nn.Sequential(
            _conv_bn(n_leads, stem_width, kernel_size, stride=2),
            _conv_bn(stem_width, stem_width, kernel_size),
            _conv_bn(stem_width, stem_width, kernel_size),
            nn.MaxPool1d(3, stride=2, padding=1),
        )
        stages, c_in = [], stem_width
        for i, (width, depth) in enumerate(zip(widths, depths)):
            blocks = [BasicBlock1d(c_in if b == 0 else width, width, kernel_size,
                                   stride=2 if (b == 0 and i > 0) else 1) for b in range(depth)]
            stages.append(nn.Sequential(*blocks))
            c_in = width
        self.stages = nn.ModuleList(stages)
        self.pool = ConcatPool1d()
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * c_in, n_classes)

    @classmethod
    def from_config(cls, cfg: ResNet1dConfig, n_classes: int) -> "ResNet1d":
        return cls(cfg.n_leads, n_classes, cfg.widths, cfg.depths, cfg.stem_width, cfg.kernel_size, cfg.dropout)

    def features(self, x: torch.Tensor, lead_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled features ``(B, 2 * widths[-1])`` of signals ``(B, C, T)``; absent leads
        (``lead_mask`` False, shape ``(B, C)``) are zeroed first."""
        if lead_mask is not None:
            x = x * lead_mask[:, :, None].to(x.dtype)
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return self.pool(x)

    def forward(self, x: torch.Tensor, lead_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, K)`` of signals ``(B, C, T)``."""
        return fp32_head(self.head, self.dropout(self.features(x, lead_mask)))
