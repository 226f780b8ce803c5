"""Per-lead random masking: counts, complementarity, order, determinism."""
from __future__ import annotations

import pytest
import torch

from crema.model.masking import n_visible, random_masking


@pytest.mark.parametrize("ratio,expected_k", [(0.75, 12), (0.5, 25), (0.0, 50), (0.99, 1)])
def test_same_count_in_every_lead(ratio, expected_k):
    m = random_masking(6, 12, 50, ratio, torch.Generator().manual_seed(0))
    assert m.keep_idx.shape == (6, 12, expected_k)
    assert (m.mask.sum(dim=-1) == 50 - expected_k).all()
    assert m.mask.float().mean().item() == pytest.approx(1 - expected_k / 50)


def test_keep_and_mask_are_complementary_and_restorable():
    m = random_masking(4, 12, 50, 0.75, torch.Generator().manual_seed(1))
    visible = torch.zeros_like(m.mask)
    visible.scatter_(-1, m.keep_idx, True)
    assert torch.equal(visible, ~m.mask)
    assert (m.keep_idx.diff(dim=-1) > 0).all()                      # ascending, no repeats
    # restore_idx puts [visible, masked] back into time order
    positions = torch.arange(50).expand(4, 12, 50)
    masked_idx = positions[m.mask].view(4, 12, -1)
    shuffled = torch.cat([m.keep_idx, masked_idx], dim=-1)
    assert torch.equal(shuffled.gather(-1, m.restore_idx), positions)


def test_leads_get_different_masks_and_generator_makes_them_reproducible():
    a = random_masking(2, 12, 50, 0.75, torch.Generator().manual_seed(7))
    b = random_masking(2, 12, 50, 0.75, torch.Generator().manual_seed(7))
    c = random_masking(2, 12, 50, 0.75, torch.Generator().manual_seed(8))
    assert torch.equal(a.mask, b.mask)
    assert not torch.equal(a.mask, c.mask)
    assert not torch.equal(a.mask[0, 0], a.mask[0, 1])              # per lead, not shared


def test_bad_ratio():
    with pytest.raises(ValueError, match="mask ratio"):
        n_visible(50, 1.0)
