"""Pytest fixtures for the data area (imported by conftest.py).

Real data comes from ``crema.paths.data_root()`` (``$CREMA_DATA``, default ``../shared/data``);
every fixture that needs it skips cleanly when it is absent.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from crema.paths import data_root as _data_root

__all__ = ["data_root", "ptbxl_root", "cinc_root", "formats_root", "unlabeled_stack",
           "tiny_ptbxl_corpus", "unlabeled_corpus", "TINY_PTBXL_RECORDS", "UNLABELED_ROWS"]

TINY_PTBXL_RECORDS = 80    # first PTB-XL records in tiny_ptbxl_corpus (folds 1-10 all present)
UNLABELED_ROWS = 128       # first rows of ptbxl-unlabeled/signals.npy in unlabeled_corpus


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (set CREMA_DATA to the shared data folder)")
    return path


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared real-data folder; skips the test when it is absent."""
    return _require(_data_root(), "shared ECG data")


@pytest.fixture(scope="session")
def ptbxl_root(data_root: Path) -> Path:
    """PTB-XL 1.0.3 subset (ecg_id 1-500) in the official layout."""
    return _require(data_root / "ptbxl" / "ptbxl_database.csv", "PTB-XL").parent


@pytest.fixture(scope="session")
def cinc_root(data_root: Path) -> Path:
    """CinC 2020/2021 training records, one folder per source."""
    return _require(data_root / "cinc", "CinC data")


@pytest.fixture(scope="session")
def formats_root(data_root: Path) -> Path:
    """Odd real formats: original CPSC-2018 structs and PTB Diagnostic s0010_re (15 leads)."""
    return _require(data_root / "formats", "format samples")


@pytest.fixture(scope="session")
def unlabeled_stack(data_root: Path) -> Path:
    """``ptbxl-unlabeled/signals.npy``: float16 (1535, 12, 2500) at 250 Hz."""
    return _require(data_root / "ptbxl-unlabeled" / "signals.npy", "unlabeled PTB-XL stack")


@pytest.fixture(scope="session")
def tiny_ptbxl_corpus(ptbxl_root: Path, tmp_path_factory):
    """A ``Corpus`` prepared from the first 80 PTB-XL records at 100 Hz (default preprocessing:
    250 Hz, 10 s windows of 2500 samples; one window per record; all folds and PTB-XL tasks)."""
    from crema.data.corpus import Corpus
    from crema.data.prepare import prepare_corpus

    out = tmp_path_factory.mktemp("corpora") / "tiny_ptbxl"
    prepare_corpus(ptbxl_root, out, workers=1, ptbxl_rate=100, limit=TINY_PTBXL_RECORDS,
                   progress=False)
    return Corpus(out)


@pytest.fixture(scope="session")
def unlabeled_corpus(unlabeled_stack: Path, tmp_path_factory):
    """A ``Corpus`` from the first 128 rows of the unlabeled PTB-XL stack (no label tasks)."""
    from crema.data.corpus import Corpus
    from crema.data.prepare import prepare_corpus

    out = tmp_path_factory.mktemp("corpora") / "unlabeled"
    prepare_corpus(unlabeled_stack, out, workers=1, input_fs=250.0, limit=UNLABELED_ROWS,
                   progress=False)
    return Corpus(out)
