"""The design-search options of the objective on real ECGs: view crops, time-aligned masks,
negative-free regularisers and the contrastive warm-up."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from crema.config import ObjectiveConfig
from crema.model.contrastive import simsiam_loss, vicreg_loss
from crema.model.crema import CREMA, contrastive_scale
from crema.model.masking import random_masking
from crema.model.views import crop_starts_for_views, take_crops


@pytest.fixture()
def long_batch(real_ecgs):
    """8 real ECGs of 2000 samples: twice the tiny model's 1000-sample window."""
    return torch.from_numpy(real_ecgs[:8, :, :2000].copy())


def test_crop_starts_same_random_disjoint():
    g = torch.Generator().manual_seed(0)
    assert crop_starts_for_views(4, 1000, 1000, 2, "disjoint", g) is None  # nothing to crop, nothing drawn
    same = crop_starts_for_views(256, 2500, 1000, 2, "same", g)
    assert torch.equal(same[0], same[1]) and same.min() >= 0 and same.max() <= 1500
    rand = crop_starts_for_views(256, 2500, 1000, 2, "random", g)
    assert (rand[0] != rand[1]).float().mean() > 0.9 and rand.max() <= 1500
    dis = crop_starts_for_views(256, 2500, 1000, 2, "disjoint", g)
    gap = (dis[0] - dis[1]).abs()
    assert gap.min() >= 1000, "disjoint crops overlap"
    assert dis.min() >= 0 and dis.max() <= 1500
    assert 0.3 < (dis[0] < dis[1]).float().mean() < 0.7, "view 1 should not always be the earlier crop"
    with pytest.raises(ValueError, match="disjoint"):
        crop_starts_for_views(4, 1500, 1000, 2, "disjoint", g)
    one = crop_starts_for_views(256, 2500, 1000, 1, "disjoint", g)  # mode mae: one random crop
    assert one.shape == (1, 256) and one.max() <= 1500 and len(set(one[0].tolist())) > 50


def test_take_crops_per_ecg(long_batch):
    starts = torch.tensor([0, 100, 500, 1000, 7, 8, 9, 10])
    crops = take_crops(long_batch, starts, 1000)
    for i, s in enumerate(starts.tolist()):
        assert torch.equal(crops[i], long_batch[i, :, s:s + 1000])


def test_disjoint_views_reconstruct_their_own_crops(tiny_model_config, long_batch):
    obj = ObjectiveConfig(view_crop="disjoint", aug_scale=0.0, aug_noise=0.0, aug_wander=0.0)
    model = CREMA(tiny_model_config, obj)
    g = torch.Generator().manual_seed(3)
    views = model.make_views(long_batch, g)
    b = long_batch.shape[0]
    assert views.clean.shape == (2 * b, 12, 1000)
    # without augmentation the encoder sees exactly the clean crops, and each view's crop is a
    # window of the input that does not overlap the other view's
    assert torch.equal(views.signal, views.clean)
    starts = crop_starts_for_views(b, 2000, 1000, 2, "disjoint", torch.Generator().manual_seed(3))
    for v in range(2):
        assert torch.equal(views.clean[v * b:(v + 1) * b], take_crops(long_batch, starts[v], 1000))
    out = model(long_batch, generator=torch.Generator().manual_seed(3))
    assert torch.isfinite(out["loss"]) and out["loss_rec_views"].shape == (2,)


def test_mae_is_view_one_of_crema_with_time_masks(tiny_model_config, long_batch):
    """The draw order keeps mode mae equal to view 1 of mode crema, also with time masks."""
    x = long_batch[..., :1000]
    crema = CREMA(tiny_model_config, ObjectiveConfig(mask_mode="time"))
    mae = CREMA(tiny_model_config, dataclasses.replace(crema.objective, mode="mae"))
    v_crema = crema.make_views(x, torch.Generator().manual_seed(5))
    v_mae = mae.make_views(x, torch.Generator().manual_seed(5))
    assert torch.equal(v_crema.mask[:8], v_mae.mask) and torch.equal(v_crema.signal[:8], v_mae.signal)


def test_time_masks_hide_the_same_patches_in_every_lead():
    g = torch.Generator().manual_seed(0)
    m = random_masking(16, 12, 50, 0.75, g, mode="time")
    assert (m.mask == m.mask[:, :1]).all()
    assert m.mask.sum(-1).eq(50 - 12).all()  # round(50 * 0.25) = 12 visible per lead
    per_lead = random_masking(16, 12, 50, 0.75, g)
    assert not (per_lead.mask == per_lead.mask[:, :1]).all()
    with pytest.raises(ValueError, match="mask mode"):
        random_masking(2, 12, 50, 0.75, g, mode="block")


def test_vicreg_terms():
    torch.manual_seed(0)
    z = torch.randn(64, 16) * 2.0                       # std 2 per dim: no variance penalty
    same = vicreg_loss(z, z)
    shifted = vicreg_loss(z, z + 0.5)
    assert shifted.item() == pytest.approx(same.item() + 0.25, abs=1e-4)  # invariance is the MSE
    collapsed = vicreg_loss(torch.zeros(64, 16), torch.zeros(64, 16))
    assert collapsed.item() == pytest.approx(1.0 - 1e-2, abs=1e-3)  # variance hinge: 1 - sqrt(1e-4)


def test_simsiam_gradient_stops_at_the_target():
    p = torch.randn(8, 4, requires_grad=True)
    z = torch.randn(8, 4, requires_grad=True)
    simsiam_loss(p, z).backward()
    assert p.grad.abs().sum() > 0 and z.grad is None
    aligned = torch.cat([z[4:], z[:4]]).detach()
    assert simsiam_loss(aligned, z).item() == pytest.approx(-1.0, abs=1e-5)


@pytest.mark.parametrize("con_loss", ["infonce", "vicreg", "simsiam"])
def test_every_regulariser_trains_the_encoder(tiny_model_config, long_batch, con_loss):
    torch.manual_seed(0)
    model = CREMA(tiny_model_config, ObjectiveConfig(mode="contrastive", con_loss=con_loss, view_crop="random"))
    out = model(long_batch, generator=torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and 0.0 <= out["acc"].item() <= 1.0
    grads = [p.grad for p in model.encoder.blocks.parameters() if p.grad is not None]
    assert grads and sum(g.abs().sum() for g in grads) > 0


def test_contrastive_scale_schedule():
    assert [contrastive_scale(s, 0, 0) for s in (0, 5)] == [1.0, 1.0]
    assert contrastive_scale(9, 10, 4) == 0.0
    assert [contrastive_scale(s, 10, 4) for s in (10, 11, 13, 100)] == [0.25, 0.5, 1.0, 1.0]


def test_con_scale_zero_is_plain_reconstruction(tiny_model_config, long_batch):
    model = CREMA(tiny_model_config, ObjectiveConfig(lambda_con=0.5))
    out = model(long_batch[..., :1000], generator=torch.Generator().manual_seed(1), con_scale=torch.tensor(0.0))
    assert out["loss"].item() == pytest.approx(out["loss_rec"].item())
    assert out["loss_con"].item() > 0


def test_checkpoints_from_before_view_crops_keep_their_shared_crop():
    """A config.json written before ``view_crop`` existed resumes with the design it was trained
    with (one shared crop), not today's default."""
    from crema.config import RunConfig
    from crema.config_io import to_dict
    from crema.model.registry import run_config_from_checkpoint

    old = {"kind": "pretrain", "step": 3, **to_dict(RunConfig())}
    for key in ("view_crop", "mask_mode", "con_loss", "con_start_step", "con_ramp_steps"):
        old["objective"].pop(key)
    assert run_config_from_checkpoint(old).objective.view_crop == "same"
    assert run_config_from_checkpoint({"kind": "pretrain", **to_dict(RunConfig())}).objective.view_crop == "disjoint"
