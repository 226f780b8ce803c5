"""The CR-MAE objective on real ECGs: losses, InfoNCE, modes, gradients, reconstruction."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from crema.config import ObjectiveConfig
from crema.model.contrastive import info_nce, two_view_info_nce
from crema.model.crema import CREMA
from crema.model.patch_loss import patch_targets


@pytest.fixture()
def batch(real_ecgs):
    return torch.from_numpy(real_ecgs[:8, :, :1000].copy())


def test_loss_is_finite_and_falls_on_real_ecgs(tiny_model_config, batch):
    torch.manual_seed(0)
    model = CREMA(tiny_model_config, ObjectiveConfig(lambda_con=0.1))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        out = model(batch)
        assert all(torch.isfinite(out[k]) for k in ("loss", "loss_rec", "loss_con"))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss_rec"].item())
    assert out["loss_rec_views"].shape == (2,)
    # per-patch normalised targets start near unit variance; 30 steps must cut that clearly
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5


def test_info_nce_identical_views_low_shuffled_views_near_log_2b_minus_1():
    torch.manual_seed(0)
    b, d = 32, 128
    view = F.normalize(torch.randn(b, d), dim=-1)
    loss_same, acc_same = two_view_info_nce(torch.cat([view, view]), tau=0.1)
    assert loss_same.item() < 0.01 and acc_same.item() == 1.0
    # unrelated "views": the positive is just another random vector
    other = F.normalize(torch.randn(b, d), dim=-1)
    loss_rand, _ = two_view_info_nce(torch.cat([view, other]), tau=1.0)
    assert loss_rand.item() == pytest.approx(math.log(2 * b - 1), abs=0.05)


def test_info_nce_patient_positives_add_targets():
    z = F.normalize(torch.randn(6, 16), dim=-1)
    cands = z
    one = torch.zeros(6, 6, dtype=torch.bool)
    one[torch.arange(6), (torch.arange(6) + 3) % 6] = True
    loss_one, _ = info_nce(z, cands, torch.arange(6), one, tau=0.5)
    # rows 0 and 1 belong to one patient: both views of the other record become positives too
    pid = torch.tensor([5, 5, -1])
    loss_pat, _ = two_view_info_nce(torch.cat([z[:3], z[3:]]), tau=0.5, patient_ids=pid)
    loss_none, _ = two_view_info_nce(torch.cat([z[:3], z[3:]]), tau=0.5)
    assert loss_none.item() == pytest.approx(loss_one.item(), rel=1e-6)
    assert loss_pat.item() != pytest.approx(loss_none.item(), rel=1e-3)


def test_mae_mode_equals_crema_with_lambda_zero_on_one_view(tiny_model_config, batch):
    obj = ObjectiveConfig(lambda_con=0.0)
    torch.manual_seed(1)
    crema = CREMA(tiny_model_config, obj).eval()
    mae = CREMA(tiny_model_config, dataclasses.replace(obj, mode="mae")).eval()
    mae.load_state_dict({k: v for k, v in crema.state_dict().items() if not k.startswith("projector.")})
    assert mae.projector is None
    out_c = crema(batch, generator=torch.Generator().manual_seed(5))
    out_m = mae(batch, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(out_m["loss"], out_c["loss_rec_views"][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out_c["loss"], out_c["loss_rec"])
    assert out_m["loss_con"].item() == 0.0


def test_gradients_reach_every_parameter_that_should_learn(tiny_model_config, batch):
    torch.manual_seed(0)
    for mode, idle in (("crema", ()), ("mae", ("projector",)), ("contrastive", ("decoder",))):
        model = CREMA(tiny_model_config, ObjectiveConfig(mode=mode))
        assert all(getattr(model, part) is None for part in idle)
        model(batch)["loss"].backward()
        frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
        assert frozen == (["encoder.norm.weight", "encoder.norm.bias"] if mode == "mae" else [])
        missing = [n for n, p in model.named_parameters()
                   if p.requires_grad and (p.grad is None or not p.grad.abs().sum() > 0)]
        assert missing == [], f"mode {mode}: no gradient for {missing}"


def test_targets_are_normalised_per_patch(batch):
    patches = batch.reshape(8, 12, 20, 50)
    t = patch_targets(patches, normalise=True)
    big = patches.std(dim=-1) > 0.5                       # high-amplitude (QRS) patches
    assert t.mean(dim=-1).abs().max() < 1e-4
    assert torch.allclose(t.std(dim=-1, unbiased=False)[big], torch.ones(()), atol=0.03)
    assert torch.equal(patch_targets(patches, normalise=False), patches)


def test_reconstruct_keeps_visible_patches_and_is_seeded(tiny_model_config, batch):
    torch.manual_seed(0)
    model = CREMA(tiny_model_config, ObjectiveConfig()).train()
    pred, mask = model.reconstruct(batch[:2], seed=4)
    assert model.training                                  # mode restored
    assert pred.shape == (2, 12, 1000) and mask.shape == (2, 12, 20)
    visible = ~mask.repeat_interleave(50, dim=-1)
    assert torch.equal(pred[visible], batch[:2][visible])
    assert not torch.allclose(pred[~visible], batch[:2][~visible])
    pred2, mask2 = model.reconstruct(batch[:2], seed=4)
    assert torch.equal(mask, mask2) and torch.equal(pred, pred2)
    with pytest.raises(ValueError, match="no decoder"):
        CREMA(tiny_model_config, ObjectiveConfig(mode="contrastive")).reconstruct(batch)


def test_lead_mask_excludes_absent_leads_from_the_loss(tiny_model_config, batch):
    torch.manual_seed(0)
    model = CREMA(tiny_model_config, ObjectiveConfig(aug_scale=0, aug_noise=0, aug_wander=0)).eval()
    lead_mask = torch.ones(8, 12, dtype=torch.bool)
    lead_mask[:, 2] = False
    other = batch.clone()
    other[:, 2] = 7.0 * torch.randn_like(other[:, 2])
    a = model(batch, lead_mask, generator=torch.Generator().manual_seed(0))
    b = model(other, lead_mask, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a["loss"], b["loss"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("variant", [dict(), dict(pool="cls", decoder_mode="joint")])
def test_bf16_autocast_keeps_losses_finite_and_fp32(tiny_model_config, batch, variant):
    torch.manual_seed(0)
    model = CREMA(dataclasses.replace(tiny_model_config, **variant), ObjectiveConfig())
    lead_mask = torch.ones(8, 12, dtype=torch.bool)
    lead_mask[:2, 6:] = False
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(batch, lead_mask)
    assert all(out[k].dtype == torch.float32 and torch.isfinite(out[k]) for k in ("loss", "loss_rec", "loss_con"))
    out["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
