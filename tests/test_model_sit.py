"""The SiT encoder on real ECGs: tokens, pooling, no leakage across patches, lead masks."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from crema.model.masking import random_masking
from crema.model.sit import SiTEncoder


@pytest.fixture()
def encoder(tiny_model_config):
    torch.manual_seed(0)
    return SiTEncoder(tiny_model_config).eval()


@pytest.fixture()
def batch(real_ecgs):
    return torch.from_numpy(real_ecgs[:4, :, :1000].copy())


def test_patchify_round_trip_and_layout(encoder, batch):
    patches = encoder.patchify(batch)
    assert patches.shape == (4, 12, 20, 50)
    # patch n of lead c is samples [50n, 50n+50) of that lead
    assert torch.equal(patches[2, 7, 3], batch[2, 7, 150:200])
    assert torch.equal(encoder.unpatchify(patches), batch)


def test_forward_shapes_and_submodule_names(encoder, batch, tiny_model_config):
    names = {n.split(".")[0] for n, _ in encoder.named_parameters()}
    assert names == {"patch_embed", "lead_embed", "blocks", "norm"}
    assert encoder(batch).shape == (4, 32)
    assert encoder.forward_tokens(batch).shape == (4, 12 * 20, 32)
    keep = random_masking(4, 12, 20, 0.75).keep_idx
    assert encoder.forward_tokens(batch, keep).shape == (4, 12 * 5, 32)
    cls = SiTEncoder(dataclasses.replace(tiny_model_config, pool="cls"))
    assert "cls_token" in dict(cls.named_parameters())
    assert cls.forward_tokens(batch).shape == (4, 1 + 12 * 20, 32)
    assert cls(batch).shape == (4, 32)
    # a model window may be shorter than the data: half a window still encodes
    assert encoder(batch[..., :500]).shape == (4, 32)


def test_bad_input_is_refused(encoder, batch):
    with pytest.raises(ValueError, match=r"\(B, 12, T\)"):
        encoder(batch[:, :8])
    with pytest.raises(ValueError, match="multiple of 50"):
        encoder(batch[..., :990])
    with pytest.raises(ValueError, match="model window 1000"):
        encoder(torch.cat([batch, batch], dim=-1))


def test_stem_never_crosses_a_patch_boundary(encoder, batch):
    """Changing one patch changes that patch's embedding only (all tokens, no masking)."""
    before = encoder.embed(batch)
    x = batch.clone()
    x[1, 4, 300:350] += 5.0                      # patch 6 of lead 4
    after = encoder.embed(x)
    changed = (after != before).any(dim=-1)      # (B, C, N)
    assert changed[1, 4, 6]
    changed[1, 4, 6] = False
    assert not changed.any()


def test_no_leakage_from_masked_patches(encoder, batch):
    """Perturbing masked samples leaves the visible tokens bit-identical; perturbing a visible
    sample changes them."""
    g = torch.Generator().manual_seed(3)
    m = random_masking(4, 12, 20, 0.75, g)
    tokens = encoder.forward_tokens(batch, m.keep_idx)
    masked_samples = m.mask.repeat_interleave(50, dim=-1)                   # (B, C, T)
    noisy = torch.where(masked_samples, batch + 10 * torch.randn_like(batch), batch)
    assert not torch.equal(noisy, batch)
    assert torch.equal(encoder.forward_tokens(noisy, m.keep_idx), tokens)
    b, c = 2, 9
    n = int(m.keep_idx[b, c, 0])
    visible = batch.clone()
    visible[b, c, n * 50 + 10] += 1.0
    assert not torch.allclose(encoder.forward_tokens(visible, m.keep_idx), tokens)


def test_absent_leads_do_not_affect_the_representation(encoder, batch):
    lead_mask = torch.ones(4, 12, dtype=torch.bool)
    lead_mask[:, 6:] = False                    # limb leads only
    base = encoder(batch, lead_mask)
    other = batch.clone()
    other[:, 6:] = torch.randn_like(other[:, 6:]) * 3
    torch.testing.assert_close(encoder(other, lead_mask), base, rtol=0, atol=1e-6)
    # ... whereas without the lead mask the precordial leads do matter
    assert not torch.allclose(encoder(other), encoder(batch), atol=1e-3)
    # and a present lead does matter with the mask
    other[:, 0] += 1.0
    assert not torch.allclose(encoder(other, lead_mask), base, atol=1e-3)
