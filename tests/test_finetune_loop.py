"""The fine-tuning loop (crema.train.finetune): gradient accumulation gives the gradients of the
larger batch, clipping bounds the gradient norm the optimiser steps with, early stopping keeps the
best epoch's weights, and `crema finetune` prints the best epoch's validation AUROC."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from crema.config import FinetuneConfig
from crema.eval.commands import finetune_lines
from crema.model.heads import Classifier
from crema.model.sit import SiTEncoder
from crema.train.finetune import LOG_FILE, fit, state_copy, train_epoch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_ECGS = 30  # batches of 4 (accumulated in pairs) and of 8 both end with a smaller one (6 ECGs)


class RealWindows(Dataset):
    """The first 1000 samples of real ECGs, with two labels made from the signals (whether lead I's
    and lead V1's mean absolute amplitude is above the median)."""

    def __init__(self, ecgs: np.ndarray):
        self.x = torch.from_numpy(np.ascontiguousarray(ecgs[:N_ECGS, :, :1000]))
        amplitude = self.x.abs().mean(-1)[:, [0, 6]]
        self.y = (amplitude > amplitude.median(0).values).float()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"signal": self.x[i], "lead_mask": torch.ones(12, dtype=torch.bool), "label": self.y[i]}


class RecordingSGD(torch.optim.SGD):
    """SGD (an update proportional to the gradient, unlike Adam's) that keeps, at every step, the
    flat gradient it steps with."""

    def __init__(self, params, lr: float):
        super().__init__(params, lr=lr)
        self.seen: list[torch.Tensor] = []

    def step(self, closure=None):
        self.seen.append(torch.cat([p.grad.flatten().clone() for g in self.param_groups for p in g["params"]]))
        return super().step(closure)


def _model(tiny_model_config) -> Classifier:
    torch.manual_seed(0)
    return Classifier(SiTEncoder(tiny_model_config), n_classes=2)


def _epoch(model, data: Dataset, **settings) -> tuple[list[float], int, RecordingSGD]:
    """One epoch of :func:`train_epoch` with SGD; returns (step losses, steps, optimiser)."""
    cfg = FinetuneConfig(lr=0.05, warmup_epochs=0, epochs=1, amp="fp32", **settings)
    loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    optimizer = RecordingSGD(model.parameters(), cfg.lr)
    losses, steps = train_epoch(model, loader, optimizer, cfg, 0, 0, 4, torch.device("cpu"))
    return losses, steps, optimizer


def test_accumulating_two_batches_gives_the_gradients_of_one_twice_as_large(tiny_model_config, real_ecgs):
    data = RealWindows(real_ecgs)
    small, large = _model(tiny_model_config), _model(tiny_model_config)
    losses_a, steps_a, opt_a = _epoch(small, data, batch_size=4, accum_steps=2)
    losses_b, steps_b, opt_b = _epoch(large, data, batch_size=8, accum_steps=1)
    assert steps_a == steps_b == 4                           # 8 batches of 4 -> 4 steps, the last of 4 + 2
    assert np.allclose(losses_a, losses_b, rtol=1e-5)
    for a, b in zip(opt_a.seen, opt_b.seen):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)
    for (name, pa), pb in zip(small.named_parameters(), large.parameters()):
        assert torch.allclose(pa, pb, rtol=1e-4, atol=1e-6), name
    # and it is not what stepping on each batch of 4 does
    _, steps_c, opt_c = _epoch(_model(tiny_model_config), data, batch_size=4, accum_steps=1)
    assert steps_c == 8 and not torch.allclose(opt_c.seen[0], opt_b.seen[0], rtol=1e-2)


def test_clipping_bounds_the_gradient_norm_the_optimiser_steps_with(tiny_model_config, real_ecgs):
    data = RealWindows(real_ecgs)
    _, _, free = _epoch(_model(tiny_model_config), data, batch_size=8)
    norms = [float(g.norm()) for g in free.seen]
    limit = min(norms) / 2
    _, _, clipped = _epoch(_model(tiny_model_config), data, batch_size=8, grad_clip=limit)
    first = clipped.seen[0]
    assert float(first.norm()) == pytest.approx(limit, rel=1e-4)
    # the same direction as the unclipped first gradient (the same weights and batch), scaled down
    assert torch.allclose(first, free.seen[0] * (limit / norms[0]), rtol=1e-3, atol=1e-8)
    assert all(float(g.norm()) <= limit * (1 + 1e-4) for g in clipped.seen)


def test_early_stopping_keeps_the_best_epochs_weights(tiny_model_config, real_ecgs, tmp_path):
    """``validate`` scores epochs 0..4 as below; patience 2 stops after epoch 3 (two without a better
    score than epoch 1's) and the model ends with the weights it had after epoch 1."""
    data = RealWindows(real_ecgs)
    model = _model(tiny_model_config)
    scores = iter([0.3, 0.6, 0.5, 0.55, 0.9])
    states = []

    def validate():
        states.append(state_copy(model))
        score = next(scores)
        return score, {"val_auroc": score}

    cfg = FinetuneConfig(lr=1e-3, epochs=5, patience=2, batch_size=8, accum_steps=2, amp="fp32")
    loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    fitted = fit(model, loader, cfg, torch.device("cpu"), validate, tmp_path, progress=False)
    assert [h["epoch"] for h in fitted.history] == [0, 1, 2, 3] and fitted.epochs_run == 4
    assert fitted.best_epoch == 1 and fitted.best_val == {"val_auroc": 0.6}
    assert [h["step"] for h in fitted.history] == [2, 4, 6, 8]   # 4 batches of 8 in pairs: 2 steps an epoch
    logged = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert [e["val_auroc"] for e in logged] == [0.3, 0.6, 0.5, 0.55]
    assert not all(torch.equal(v, states[3][k]) for k, v in states[1].items())   # training moved the weights
    assert all(torch.equal(v, states[1][k]) for k, v in model.state_dict().items())

    # a starting head scored higher than every epoch is the one kept
    start_state = state_copy(model)
    scores = iter([0.5, 0.4])
    fitted = fit(model, loader, cfg, torch.device("cpu"), validate, tmp_path, start=(0.7, {"head": "probe"}),
                 progress=False)
    assert fitted.best_epoch == -1 and [h["epoch"] for h in fitted.history] == [-1, 0, 1]
    assert all(torch.equal(v, start_state[k]) for k, v in model.state_dict().items())


def test_finetune_prints_the_validation_auroc_of_the_best_epoch():
    """The history starts at epoch -1 with --probe-init, so its index is not the epoch number."""
    test = {"n": 10, "auroc": {"macro": 0.7, "ci95": [0.6, 0.8], "skipped": {}}, "f1": {"macro": 0.5}}
    history = [{"epoch": -1, "val_auroc": 0.61}, {"epoch": 0, "val_auroc": 0.72}, {"epoch": 1, "val_auroc": 0.65}]
    for best, shown in ((0, "0.720"), (-1, "0.610"), (1, "0.650")):
        summary = {"best_epoch": best, "epochs_run": 2, "history": history, "test": test}
        assert f"validation macro AUROC {shown})" in finetune_lines(summary)[0]
