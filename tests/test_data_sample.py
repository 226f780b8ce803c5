"""The real PTB-XL sample shipped inside the package."""
from __future__ import annotations

import collections

from crema.data import ptbxl
from crema.data.prepare import prepare_corpus
from crema.data.readers import find_records
from crema.paths import sample_root


def test_sample_layout_and_attribution():
    root = sample_root()
    assert (root / "LICENSE.txt").read_text().startswith("Creative Commons Attribution 4.0")
    notice = (root / "NOTICE.md").read_text()
    assert "Wagner" in notice and "Scientific Data" in notice and "Goldberger" in notice
    records = find_records(root)
    assert len(records) == 500 and all(p.name.endswith("_lr.hea") for p in records)
    assert not (root / "records500").exists()
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert 10e6 < size < 20e6


def test_sample_matches_the_shared_data(ptbxl_hr_root):
    """Without the shared copy the fixtures fall back to the sample; this checks that is sound."""
    ptbxl_root, root = ptbxl_hr_root, sample_root()
    for name in ("ptbxl_database.csv", "scp_statements.csv"):
        assert (root / name).read_bytes() == (ptbxl_root / name).read_bytes()
    for path in (root / "records100" / "00000").iterdir():
        assert path.read_bytes() == (ptbxl_root / "records100" / "00000" / path.name).read_bytes()


def test_sample_labels_and_prepare(tmp_path):
    root = sample_root()
    assert ptbxl.detect_rate(root) == 100
    index = ptbxl.load_ptbxl_index(root)
    counts = collections.Counter(n for names in index["labels:ptbxl-superdiagnostic"] for n in names)
    assert counts["NORM"] == 297
    report = prepare_corpus(root, tmp_path / "c", workers=1, limit=4, progress=False)
    assert report["records_read"] == 4 and report["request"]["ptbxl_rate"] is None
