"""Pytest fixtures for the eval area (imported by conftest.py).

- ``tiny_cinc_corpus``: a ``Corpus`` of the first 90 CinC records in sorted order (sources
  cpsc2018, cpsc2018-extra, georgia, ningbo) with default preprocessing, for leave-one-source-out.
- ``tiny_classifier_checkpoint``: a classifier folder fine-tuned for 3 epochs on
  ``tiny_ptbxl_corpus`` (``ptbxl-superdiagnostic``) from ``tiny_pretrain_checkpoint``.
- ``one_torch_thread``: run a test with one torch CPU thread (restored afterwards); small models
  on the shared test machine run many times faster that way.
"""
from __future__ import annotations

from pathlib import Path

import pytest

__all__ = ["tiny_cinc_corpus", "tiny_classifier_checkpoint", "one_torch_thread", "TINY_CINC_RECORDS",
           "TINY_FINETUNE_EPOCHS"]

TINY_CINC_RECORDS = 90
TINY_FINETUNE_EPOCHS = 3


@pytest.fixture(scope="session")
def tiny_cinc_corpus(cinc_root: Path, tmp_path_factory):
    from crema.data.corpus import Corpus
    from crema.data.prepare import prepare_corpus

    out = tmp_path_factory.mktemp("corpora") / "tiny_cinc"
    prepare_corpus(cinc_root, out, workers=1, limit=TINY_CINC_RECORDS, progress=False)
    return Corpus(out)


@pytest.fixture(scope="session")
def tiny_classifier_checkpoint(tiny_pretrain_checkpoint, tiny_ptbxl_corpus, tmp_path_factory) -> Path:
    from crema.runtime import torch_threads
    from crema.eval.finetune import finetune
    from crema.config import FinetuneConfig

    out = tmp_path_factory.mktemp("tiny_classifier")
    cfg = FinetuneConfig(corpus=str(tiny_ptbxl_corpus.path), task="ptbxl-superdiagnostic", out=str(out),
                         checkpoint=str(tiny_pretrain_checkpoint), epochs=TINY_FINETUNE_EPOCHS, batch_size=16,
                         lr=1e-3, patience=TINY_FINETUNE_EPOCHS, device="cpu", n_bootstrap=1000)
    with torch_threads(1):
        finetune(cfg, progress=False)
    return out


@pytest.fixture
def one_torch_thread():
    from crema.runtime import torch_threads

    with torch_threads(1):
        yield
