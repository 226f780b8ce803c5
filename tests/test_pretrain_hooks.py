"""Pretraining hooks (crema.train.pretrain.StepInfo): a hook sees every optimiser step before and
after it, reads the step's gradients, and the gradient diagnosis of experiments/ built on a hook
leaves the run as it would be without it."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from crema.train.pretrain import StepInfo, pretrain
from fixtures_model import tiny_run_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STEPS = 3
CLIP = 0.5


def _pretrain(model_cfg, corpus, out: Path, hooks=()) -> tuple[list[dict], dict[str, torch.Tensor]]:
    """Three steps of two accumulated batches of 8 real ECGs; returns (log.jsonl entries, weights)."""
    cfg = tiny_run_config(model_cfg, corpus.path, out, steps=STEPS, accum_steps=2, grad_clip=CLIP, amp="fp32")
    pretrain(cfg, progress=False, hooks=hooks)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    return log, load_file(str(out / "model.safetensors"))


def test_a_hook_sees_every_step_and_its_gradients(tiny_model_config, tiny_ptbxl_corpus, tmp_path):
    seen: list[tuple[str, int]] = []
    grad_norms, losses, moved, cleared = [], [], [], []
    before: dict[str, torch.Tensor] = {}

    def hook(info: StepInfo) -> None:
        seen.append((info.phase, info.step))
        params = dict(info.model.named_parameters())
        if info.phase == "gradients":
            grads = {n: p.grad for n, p in params.items() if p.grad is not None}
            assert any(n.startswith("encoder.blocks.") for n in grads)
            grad_norms.append(float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads.values()))))
            losses.append(float(info.losses["loss"]))
            assert info.batch["signal"].shape[:2] == (8, 12) and info.optimizer.param_groups[0]["lr"] > 0
            before.update({n: p.detach().clone() for n, p in params.items()})
        else:
            moved.append(any(not torch.equal(p, before[n]) for n, p in params.items()))
            cleared.append(all(p.grad is None for p in params.values()))

    log, _ = _pretrain(tiny_model_config, tiny_ptbxl_corpus, tmp_path / "run", hooks=[hook])
    assert seen == [(phase, step) for step in range(STEPS) for phase in ("gradients", "step")]
    assert all(np.isfinite(grad_norms)) and min(grad_norms) > 0
    assert max(grad_norms) > CLIP        # the gradients as computed, before clipping to 0.5
    assert moved == [True] * STEPS and cleared == [True] * STEPS
    # the losses the hook saw are the ones logged for those steps (one process: the mean is its own)
    assert [e["step"] for e in log] == [1, 2, 3]
    assert np.allclose(losses, [e["loss"] for e in log], rtol=1e-6)


def test_the_gradient_diagnosis_hook_leaves_the_run_unchanged(tiny_model_config, tiny_ptbxl_corpus, tmp_path):
    path = Path(__file__).resolve().parents[1] / "experiments" / "diagnose_gradients.py"
    spec = importlib.util.spec_from_file_location("crema_experiments_diagnose_gradients", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    diagnosis = module.GradientDiagnosis(every=2, last_step=STEPS - 1, lambda_con=0.1, grad_clip=CLIP)
    log, weights = _pretrain(tiny_model_config, tiny_ptbxl_corpus, tmp_path / "with", hooks=[diagnosis])
    plain_log, plain_weights = _pretrain(tiny_model_config, tiny_ptbxl_corpus, tmp_path / "without")
    assert [e["step"] for e in diagnosis.log] == [0, 2] and diagnosis.steps == STEPS
    for entry in diagnosis.log:
        assert len(entry["rec_block_norms"]) == len(entry["con_block_norms"]) == tiny_model_config.depth
        assert min(entry["rec_block_norms"]) > 0 and -1 <= entry["cosine_rec_con"] <= 1
        assert 0 <= entry["shared_visible"] <= 1 and np.isfinite(entry["loss_rec"])
    assert 0 <= diagnosis.clipped_fraction <= 1
    # the hook's own forward passes drew no number of the run's random streams
    drop = ("ecgs_per_s", "elapsed_s")
    assert [{k: v for k, v in e.items() if k not in drop} for e in log] == \
        [{k: v for k, v in e.items() if k not in drop} for e in plain_log]
    assert all(torch.equal(weights[k], plain_weights[k]) for k in plain_weights)
