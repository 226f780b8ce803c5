"""A training-free baseline: random convolutional kernels (ROCKET-style) with PPV and max pooling.

The bar a pretrained encoder must clear to be worth its cost. Each of ``K`` kernels has a random
length (7, 9 or 11), zero-mean normal weights on a random subset of leads, a random bias, an
exponentially distributed dilation and random "same" padding (Dempster et al. 2020, "ROCKET";
written here from the paper's description). Each kernel gives two features of a signal: the
proportion of positive values (PPV) and the maximum of its output, so ``(B, C, T) -> (B, 2K)``.
The features then go to the same logistic probe as any encoder's.

Kernels are drawn once from a seed; kernels of equal length, dilation and padding are run as one
grouped ``conv1d`` (zero weights on the leads a kernel does not use), so the whole transform is a
few dozen convolutions on any torch device.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

KERNEL_LENGTHS = (7, 9, 11)


@dataclass(frozen=True)
class KernelGroup:
    """Kernels sharing length, dilation and padding: ``weight (k, C, L)``, ``bias (k,)``."""

    weight: Tensor
    bias: Tensor
    dilation: int
    padding: int


def draw_kernel_groups(n_kernels: int, n_channels: int, length: int, seed: int = 0) -> list[KernelGroup]:
    """Draw ``n_kernels`` random kernels for ``(C, length)`` signals, grouped for ``conv1d``.

    Per kernel: length ``L`` from :data:`KERNEL_LENGTHS`; ``1 + floor(2^U(0, log2 C))`` leads
    (at least one, usually few, as in multivariate ROCKET); weights ``N(0, 1)`` made zero-mean per
    lead; bias ``U(-1, 1)``; dilation ``floor(2^U(0, log2((length - 1) / (L - 1))))``; padding
    ``(L - 1) * dilation // 2`` with probability 1/2, else none.
    """
    rng = np.random.default_rng(seed)
    groups: dict[tuple[int, int, int], tuple[list[np.ndarray], list[float]]] = {}
    for _ in range(n_kernels):
        klen = int(rng.choice(KERNEL_LENGTHS))
        n_used = min(n_channels, 1 + int(2 ** rng.uniform(0, np.log2(n_channels))))
        channels = rng.choice(n_channels, size=n_used, replace=False)
        weight = np.zeros((n_channels, klen), dtype=np.float32)
        w = rng.normal(0.0, 1.0, size=(n_used, klen))
        weight[channels] = w - w.mean(axis=1, keepdims=True)
        max_exp = np.log2(max(1.0, (length - 1) / (klen - 1)))
        dilation = int(2 ** rng.uniform(0, max_exp))
        padding = (klen - 1) * dilation // 2 if rng.integers(2) else 0
        ws, bs = groups.setdefault((klen, dilation, padding), ([], []))
        ws.append(weight)
        bs.append(float(rng.uniform(-1.0, 1.0)))
    return [KernelGroup(torch.from_numpy(np.stack(ws)), torch.tensor(bs, dtype=torch.float32), d, p)
            for (_, d, p), (ws, bs) in sorted(groups.items())]


class RandomKernelFeatures(nn.Module):
    """``(B, C, T) -> (B, 2K)`` PPV and max features of ``K`` fixed random kernels.

    Args:
        n_kernels: ``K`` (features are ``2K``); the ROCKET paper uses 10,000, 2,000 is plenty
            for a few hundred records.
        n_channels: leads ``C``.
        length: the signal length the dilations are drawn for (longer inputs work too).
        seed: draws the kernels; the same seed gives the same features.

    Feature order: for each kernel group in turn, its kernels' PPVs, then their maxima.
    Forward also accepts (and ignores) ``lead_mask``, so it runs wherever an encoder does.
    """

    def __init__(self, n_kernels: int = 2000, n_channels: int = 12, length: int = 2500, seed: int = 0):
        super().__init__()
        self.n_kernels, self.seed = n_kernels, seed
        self.groups = draw_kernel_groups(n_kernels, n_channels, length, seed)
        for i, g in enumerate(self.groups):  # buffers follow .to(device) and are hashed with the state
            self.register_buffer(f"weight_{i}", g.weight)
            self.register_buffer(f"bias_{i}", g.bias)

    def forward(self, x: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        ppv, peak = [], []
        for i, g in enumerate(self.groups):
            out = F.conv1d(x.float(), getattr(self, f"weight_{i}"), getattr(self, f"bias_{i}"),
                           padding=g.padding, dilation=g.dilation)                   # (B, k, T')
            ppv.append((out > 0).float().mean(dim=-1))
            peak.append(out.amax(dim=-1))
        return torch.cat(ppv + peak, dim=1)
