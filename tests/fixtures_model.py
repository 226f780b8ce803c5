"""Pytest fixtures for the model area (imported by conftest.py).

- ``tiny_model_config``: a ModelConfig small enough for CPU tests (width 32, depth 2, window 1000).
- ``real_ecgs``: the first 32 real ECGs of ``ptbxl-unlabeled/signals.npy`` as float32
  ``(32, 12, 2500)`` at 250 Hz (z-scored); from the shared stack, else the one built from the sample.
- ``tiny_pretrain_checkpoint``: a pretraining checkpoint folder (4 steps on ``tiny_ptbxl_corpus``).
"""
from __future__ import annotations

import numpy as np
import pytest

from crema.config import ModelConfig, ObjectiveConfig, PretrainConfig, RunConfig

__all__ = ["tiny_model_config", "real_ecgs", "tiny_pretrain_checkpoint", "tiny_run_config"]


def tiny_run_config(model_cfg: ModelConfig, corpus_dir, out, **train: object) -> RunConfig:
    """A RunConfig for a few CPU steps of pretraining (helper, not a fixture)."""
    settings = dict(corpora=(str(corpus_dir),), out=str(out), steps=4, batch_size=8,
                    warmup_steps=1, ckpt_every=100, log_every=1, device="cpu", seed=0, blr=1e-3)
    settings.update(train)
    return RunConfig(model=model_cfg, objective=ObjectiveConfig(), train=PretrainConfig(**settings))


@pytest.fixture(scope="session")
def tiny_model_config() -> ModelConfig:
    return ModelConfig(size="tiny", window=1000, patch_size=50, dim=32, depth=2, heads=2,
                       stem_channels=8, drop_path=0.0, decoder_dim=32, decoder_depth=1,
                       decoder_heads=2, projector_hidden=64, projector_dim=32)


@pytest.fixture(scope="session")
def real_ecgs(unlabeled_stack) -> np.ndarray:
    return np.load(unlabeled_stack, mmap_mode="r")[:32].astype(np.float32)


@pytest.fixture(scope="session")
def tiny_pretrain_checkpoint(tiny_model_config, tiny_ptbxl_corpus, tmp_path_factory):
    from crema.train.pretrain import pretrain

    out = tmp_path_factory.mktemp("tiny_pretrain")
    cfg = tiny_run_config(tiny_model_config, tiny_ptbxl_corpus.path, out, ckpt_every=4)
    pretrain(cfg, progress=False)
    return out
