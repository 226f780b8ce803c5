"""Fingerprints of files and prepared corpora: what makes results (cached features, a resumed
pretraining run) tied to exactly the data they were computed on.

Data layer, so that training (which may not import evaluation) and evaluation share one
implementation.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

FINGERPRINT_BYTES = 1 << 20
FINGERPRINT_WHAT = "sha256 of index.csv bytes + signals.npy size + first 1 MiB of signals.npy"


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """sha256 hex digest of a whole file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def corpus_fingerprint(corpus_dir: str | os.PathLike) -> str:
    """A cheap sha256 that identifies a prepared corpus: see :data:`FINGERPRINT_WHAT`. A corpus
    rebuilt with other records (another index) or other windows (their size or first MiB) gets
    another fingerprint; one prepared again from the same data with the same settings does not."""
    corpus_dir = Path(corpus_dir)
    digest = hashlib.sha256()
    digest.update((corpus_dir / "index.csv").read_bytes())
    signals = corpus_dir / "signals.npy"
    digest.update(str(signals.stat().st_size).encode())
    with open(signals, "rb") as fh:
        digest.update(fh.read(FINGERPRINT_BYTES))
    return digest.hexdigest()
