"""The shortcuts that make ``crema prepare`` faster give exactly what the plain computation gives:
the band-pass with its initial state designed once against ``scipy.signal.sosfiltfilt``, and
record paths relative to the source against ``Path.resolve``, links included. Real records:
the PTB-XL sample shipped in the package."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy import signal as sps

from crema.config import PreprocessConfig
from crema.data import preprocess
from crema.data.prepare_index import relative_path
from crema.data.readers import read_record
from crema.data.sources import RecordJob
from crema.paths import sample_root

RECORDS = sample_root() / "records100" / "00000"


@pytest.mark.parametrize("cfg", [PreprocessConfig(), PreprocessConfig(notch_hz=50.0, band=(0.5, 100.0))])
def test_filter_equals_scipy_sosfiltfilt_bit_for_bit(cfg):
    signals = [read_record(RECORDS / f"{i:05d}_lr.hea").signal for i in (1, 2, 3)]
    x12 = preprocess.resample(signals[0], 100, cfg.fs)
    for x in (x12, x12[:, :40], x12[:, :28], x12[:, :2], x12[0], signals[1].astype(np.float64), signals[2][:5]):
        for sos in preprocess.filter_design(cfg):
            padlen = max(min(3 * (2 * len(sos) + 1), x.shape[-1] - 1), 0)
            expected = sps.sosfiltfilt(sos, x, axis=-1, padlen=padlen).astype(np.float32)
            assert preprocess._filtfilt_sos(sos, x).tobytes() == expected.tobytes()


def _job(path: Path) -> RecordJob:
    return RecordJob(key=str(path), record_id=path.stem, source="s", path=str(path))


def _reference(path: Path, root: Path) -> str:
    """What the index's path column held before: the resolved file relative to the source."""
    try:
        return path.resolve().relative_to(root).as_posix()
    except ValueError:
        return path.name


def test_relative_paths_equal_resolving_each_file(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a" / "b").mkdir(parents=True)
    outside.mkdir()
    for folder in (root / "a" / "b", outside):
        for suffix in (".hea", ".dat"):
            shutil.copy(RECORDS / f"00001_lr{suffix}", folder / f"00001_lr{suffix}")
    os.symlink(outside / "00001_lr.hea", root / "a" / "linked.hea")      # a file link leading out
    os.symlink(root / "a" / "b", root / "via")                           # a folder link inside
    os.symlink(outside, root / "away")                                   # a folder link leading out
    os.symlink(root / "a" / "b" / "00001_lr.hea", root / "same.hea")     # a file link inside
    cases = [root / "a" / "b" / "00001_lr.hea", root / "a" / "linked.hea", root / "via" / "00001_lr.hea",
             root / "away" / "00001_lr.hea", root / "same.hea", root / "a" / ".." / "a" / "b" / "00001_lr.hea"]
    got = [relative_path(_job(p), root.resolve()) for p in cases]
    assert got == [_reference(p, root.resolve()) for p in cases]
    assert got == ["a/b/00001_lr.hea", "linked.hea", "a/b/00001_lr.hea", "00001_lr.hea", "a/b/00001_lr.hea",
                   "a/b/00001_lr.hea"]
    stack_row = RecordJob(key="x[3]", record_id="3", source="s", path=str(root / "x.npy"), row=3)
    assert relative_path(stack_row, root) == "x.npy[3]"
