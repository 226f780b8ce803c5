"""Pytest fixtures for the data area (imported by conftest.py).

Real data comes from ``crema.paths.data_root()`` (``$CREMA_DATA``, default ``../shared/data``).
When that folder is absent (a bare clone), the fixtures fall back to the PTB-XL sample shipped in
the package (``crema.paths.sample_root()``: records 1-500 at 100 Hz, the same files as
``ptbxl/records100`` in the shared folder), so most tests still run on real ECGs. Only what the
sample cannot stand in for skips: CinC records, the odd formats, the 500 Hz PTB-XL files.
``CREMA_DATA=/nonexistent`` simulates a bare clone.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crema.paths import data_root as _data_root
from crema.paths import sample_root

__all__ = ["data_root", "ptbxl_root", "ptbxl_hr_root", "ptbxl_headers", "cinc_root", "formats_root",
           "unlabeled_stack", "tiny_ptbxl_corpus", "unlabeled_corpus", "TINY_PTBXL_RECORDS",
           "UNLABELED_ROWS", "shared_ptbxl_present", "ptbxl_record_500hz"]

TINY_PTBXL_RECORDS = 80    # first PTB-XL records in tiny_ptbxl_corpus (folds 1-10 all present)
UNLABELED_ROWS = 128       # first rows of ptbxl-unlabeled/signals.npy in unlabeled_corpus
# The sample's last 128 records stand in for the unlabeled stack: disjoint from the 80 records of
# tiny_ptbxl_corpus, as the shared stack is disjoint from ptbxl/.
SAMPLE_UNLABELED_IDS = range(373, 501)


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        pytest.skip(f"{what} not found at {path} (set CREMA_DATA to the shared data folder)")
    return path


def shared_ptbxl_present() -> bool:
    return (_data_root() / "ptbxl" / "ptbxl_database.csv").is_file()


def ptbxl_record_500hz(ptbxl_root: Path, ecg_id: int):
    """PTB-XL record ``ecg_id`` at 500 Hz (12 leads, 5000 samples, mV): the real 500 Hz file where
    the shared copy has it, else the sample's 100 Hz file resampled to 500 Hz. For tests that need
    a real ECG at a rate where 50/60 Hz hum exists and lengths like 4321 samples fit, not the
    genuine 500 Hz file (those ask for ``ptbxl_hr_root``)."""
    import dataclasses

    from crema.data.preprocess import resample
    from crema.data.readers import read_record

    hr = ptbxl_root / "records500" / "00000" / f"{ecg_id:05d}_hr.hea"
    if hr.is_file():
        return read_record(hr)
    lr = read_record(ptbxl_root / "records100" / "00000" / f"{ecg_id:05d}_lr.hea")
    return dataclasses.replace(lr, signal=resample(lr.signal, 100, 500).astype(np.float32), fs=500.0)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared real-data folder; skips the test when it is absent."""
    return _require(_data_root(), "shared ECG data")


@pytest.fixture(scope="session")
def ptbxl_root() -> Path:
    """PTB-XL 1.0.3 subset (ecg_id 1-500) in the official layout: the shared copy, else the sample
    (which lacks ``records500``; tests that need 500 Hz files ask for ``ptbxl_hr_root``)."""
    return _data_root() / "ptbxl" if shared_ptbxl_present() else sample_root()


@pytest.fixture(scope="session")
def ptbxl_hr_root() -> Path:
    """The shared PTB-XL copy with its 500 Hz ``records500``; skips without it."""
    return _require(_data_root() / "ptbxl" / "records500", "PTB-XL at 500 Hz").parent


@pytest.fixture(scope="session")
def ptbxl_headers(ptbxl_root: Path) -> list[Path]:
    """The 500 PTB-XL headers in ecg_id order, 500 Hz where the shared copy is present, else the
    sample's 100 Hz ones; for tests that need real records but not one particular rate."""
    hr = ptbxl_root / "records500" / "00000"
    folder, pattern = (hr, "*_hr.hea") if hr.is_dir() else (ptbxl_root / "records100" / "00000", "*_lr.hea")
    return sorted(folder.glob(pattern))


@pytest.fixture(scope="session")
def cinc_root(data_root: Path) -> Path:
    """CinC 2020/2021 training records, one folder per source."""
    return _require(data_root / "cinc", "CinC data")


@pytest.fixture(scope="session")
def formats_root(data_root: Path) -> Path:
    """Odd real formats: original CPSC-2018 structs and PTB Diagnostic s0010_re (15 leads)."""
    return _require(data_root / "formats", "format samples")


@pytest.fixture(scope="session")
def unlabeled_stack(tmp_path_factory) -> Path:
    """``ptbxl-unlabeled/signals.npy``: float16 ``(N, 12, 2500)`` at 250 Hz, band-passed and
    z-scored, with ``ecg_ids.csv`` beside it. The shared stack has N = 1535; without it, the same
    layout is built from the sample's records 373-500 (N = 128) with the same 0.5-40 Hz band."""
    shared = _data_root() / "ptbxl-unlabeled" / "signals.npy"
    if shared.is_file():
        return shared
    from crema.config import PreprocessConfig
    from crema.data.preprocess import preprocess_recording
    from crema.data.readers import read_record

    folder = tmp_path_factory.mktemp("sample_stack") / "ptbxl-unlabeled"
    folder.mkdir()
    cfg = PreprocessConfig(band=(0.5, 40.0))
    records = sample_root() / "records100" / "00000"
    rows = [preprocess_recording(read_record(records / f"{i:05d}_lr.hea"), cfg).signals[0]
            for i in SAMPLE_UNLABELED_IDS]
    np.save(folder / "signals.npy", np.stack(rows).astype(np.float16))
    (folder / "ecg_ids.csv").write_text("ecg_id\n" + "".join(f"{i}\n" for i in SAMPLE_UNLABELED_IDS))
    return folder / "signals.npy"


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
