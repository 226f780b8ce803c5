"""A Ctrl-C or SIGTERM whose exception some C code swallowed still stops embed, predict and
fine-tuning at their next safe point (crema.interrupts), keeping what was written."""
from __future__ import annotations

import signal

import numpy as np
import pytest
import torch
from torch import nn

import crema.use.batch
from crema import interrupts
from crema.cli import main
from crema.config import FinetuneConfig
from crema.data.readers import read_record
from crema.interrupts import Terminated
from crema.paths import sample_root
from crema.train.finetune import train_epoch


@pytest.fixture(autouse=True)
def no_recorded_stop():
    interrupts.clear()
    yield
    interrupts.clear()


def _records(n: int):
    return sorted((sample_root() / "records100").rglob("*.hea"))[:n]


class CountingHead(nn.Module):
    """A linear head over the whole signal that counts its forward passes."""

    def __init__(self, samples: int):
        super().__init__()
        self.linear = nn.Linear(12 * samples, 5)
        self.calls = 0

    def forward(self, x, lead_mask=None):
        self.calls += 1
        return self.linear(x.flatten(1))


def test_a_swallowed_signal_stops_fine_tuning_after_the_step_it_arrived_in():
    signals = torch.from_numpy(np.stack([read_record(p).signal[:, :200] for p in _records(8)])).float()
    batches = [{"signal": signals[i:i + 2], "lead_mask": torch.ones(2, 12, dtype=torch.bool),
                "label": torch.zeros(2, 5)} for i in range(0, 8, 2)]
    model = CountingHead(200)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    cfg = FinetuneConfig(lr=0.1)
    before = model.linear.weight.detach().clone()
    losses, step = train_epoch(model, batches, optimizer, cfg, 0, 0, 8, torch.device("cpu"))
    assert step == 4 and model.calls == 4                     # no signal: the whole epoch
    interrupts.request_stop(signal.SIGTERM)                   # recorded, its exception lost
    with pytest.raises(Terminated):
        train_epoch(model, batches, optimizer, cfg, 4, 0, 8, torch.device("cpu"))
    assert model.calls == 5 and not torch.equal(model.linear.weight, before)
    interrupts.request_stop(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        train_epoch(model, batches, optimizer, cfg, 5, 0, 8, torch.device("cpu"))


def test_a_swallowed_sigterm_stops_embed_after_its_next_flush_and_the_run_resumes(
        tiny_pretrain_checkpoint, tmp_path, capsys, monkeypatch):
    records = tmp_path / "in"
    records.mkdir()
    for hea in _records(3):
        for part in hea.parent.glob(hea.stem + ".*"):
            (records / part.name).write_bytes(part.read_bytes())
    real = crema.use.batch.record_results

    def stop_after_the_first(*args, **kwargs):
        for i, result in enumerate(real(*args, **kwargs)):
            if i == 0:
                interrupts.request_stop(signal.SIGTERM)  # as if numpy had cleared Terminated
            yield result
    monkeypatch.setattr(crema.use.batch, "record_results", stop_after_the_first)
    argv = ["embed", str(tiny_pretrain_checkpoint), str(records), "--out", str(tmp_path / "e"), "--chunk", "1",
            "--no-progress"]
    assert main(argv) == 143
    assert "crema embed: terminated (SIGTERM)" in capsys.readouterr().err
    assert np.load(tmp_path / "e.npy").shape[0] == 1          # the first record, flushed before stopping
    monkeypatch.setattr(crema.use.batch, "record_results", real)
    assert main(argv) == 0 and np.load(tmp_path / "e.npy").shape[0] == 3
