"""Data-parallel pretraining under ``torchrun --nproc_per_node 2`` (gloo, CPU).

One torchrun job runs a worker script that (1) checks ``gather_with_grad`` values and
gradients, (2) computes the two-view InfoNCE with negatives gathered from both ranks, and
(3) trains a tiny model for 3 steps on a real corpus; every rank writes what it saw, and the
test compares it with single-process references.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from crema.model.contrastive import info_nce

WORLD = 2

WORKER = r'''
import json, sys
from pathlib import Path
import torch
from safetensors.torch import save_file
from crema.config import ModelConfig, ObjectiveConfig, PretrainConfig, RunConfig
from crema.model.contrastive import two_view_info_nce
from crema import runtime as D
from crema.train.pretrain import Trainer

out, corpus = Path(sys.argv[1]), sys.argv[2]
info, device = D.setup("cpu")
r, w = info.rank, info.world_size
report = {"rank": r, "world": w, "initialized": D.is_initialized()}

x = torch.full((3, 2), float(r + 1), requires_grad=True)
g = D.gather_with_grad(x)
report["gathered"] = g.tolist()
weights = torch.arange(w * 3 * 2, dtype=torch.float32).view(w * 3, 2) * (r + 1)
(g * weights).sum().backward()
report["grad"] = x.grad.tolist()

torch.manual_seed(100 + r)
z = torch.randn(8, 16, requires_grad=True)
loss, acc = two_view_info_nce(z, tau=0.2)
loss.backward()
report.update(z=z.tolist(), loss=loss.item(), z_grad=z.grad.tolist())

model = ModelConfig(window=500, dim=32, depth=2, heads=2, stem_channels=8, drop_path=0.1,
                    decoder_dim=32, decoder_depth=1, decoder_heads=2, projector_hidden=64,
                    projector_dim=32)
cfg = RunConfig(model=model, objective=ObjectiveConfig(),
                train=PretrainConfig(corpora=(corpus,), out=str(out / "run"), steps=3, batch_size=4,
                                     warmup_steps=1, log_every=1, ckpt_every=100, device="cpu",
                                     blr=1e-3))
trainer = Trainer(cfg, info, device, resume=False, progress=False, stop_at=None, data=None)
result = trainer.run()
report["step"] = result.step
report["effective_batch"] = trainer.effective_batch
save_file({k: v.contiguous() for k, v in trainer.model.state_dict().items()},
          str(out / f"rank{r}.safetensors"))
(out / f"rank{r}.json").write_text(json.dumps(report))
D.cleanup()
'''


@pytest.fixture(scope="module")
def ddp_run(unlabeled_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    script = out / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           str(WORLD), str(script), str(out), str(unlabeled_corpus.path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]
    return out, reports


def test_gather_with_grad_values_and_gradients(ddp_run):
    _, reports = ddp_run
    expected_rows = [[1.0, 1.0]] * 3 + [[2.0, 2.0]] * 3
    base = torch.arange(WORLD * 3 * 2, dtype=torch.float32).view(WORLD * 3, 2)
    for rep in reports:
        assert rep["initialized"] and rep["world"] == WORLD
        assert rep["gathered"] == expected_rows               # world x local rows, rank order
        # each rank's loss weighs the gathered rows by (rank + 1): the gradient of rank q's rows
        # is the sum over ranks of those weights on q's slice
        q = rep["rank"]
        expected = sum(base[q * 3:(q + 1) * 3] * (r + 1) for r in range(WORLD))
        assert torch.equal(torch.tensor(rep["grad"]), expected)


def test_info_nce_negatives_come_from_every_rank(ddp_run):
    _, reports = ddp_run
    zs = [torch.tensor(rep["z"], requires_grad=True) for rep in reports]
    cands = F.normalize(torch.cat(zs), dim=-1)                 # (W * 8, d), rank order
    total = 0.0
    for r, rep in enumerate(reports):
        rows = torch.arange(8)
        positives = torch.zeros(8, WORLD * 8, dtype=torch.bool)
        positives[rows, r * 8 + (rows + 4) % 8] = True
        ref, _ = info_nce(cands[r * 8:(r + 1) * 8], cands, r * 8 + rows, positives, tau=0.2)
        assert rep["loss"] == pytest.approx(ref.item(), rel=1e-5)
        # with this rank's views only (7 candidates per anchor) the loss would differ
        own = cands[r * 8:(r + 1) * 8]
        local, _ = info_nce(own, own, rows, positives[:, r * 8:(r + 1) * 8], tau=0.2)
        assert rep["loss"] != pytest.approx(local.item(), rel=1e-3)
        total = total + ref
    total.backward()
    for z, rep in zip(zs, reports):
        torch.testing.assert_close(torch.tensor(rep["z_grad"]), z.grad, rtol=1e-4, atol=1e-6)


def test_ranks_hold_identical_parameters_after_training(ddp_run):
    out, reports = ddp_run
    assert [rep["step"] for rep in reports] == [3, 3]
    assert reports[0]["effective_batch"] == 4 * WORLD
    params = [load_file(str(out / f"rank{r}.safetensors")) for r in range(WORLD)]
    assert params[0].keys() == params[1].keys()
    assert all(torch.equal(params[0][k], params[1][k]) for k in params[0])
    # training did move them, and only rank 0 wrote the log and the checkpoint
    log = [json.loads(line) for line in (out / "run" / "log.jsonl").read_text().splitlines()]
    assert [rec["step"] for rec in log] == [1, 2, 3]
    saved = load_file(str(out / "run" / "model.safetensors"))
    assert all(torch.equal(saved[k], params[0][k]) for k in saved)
