"""The one atomic-write mechanism every output goes through."""
import os
import stat

import pytest

from crema.atomic import atomic_path, atomic_write_text, default_file_mode


def test_complete_write_lands_with_ordinary_permissions(tmp_path):
    target = tmp_path / "sub" / "out.png"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".png" and not target.exists()
        tmp.write_bytes(b"png")
    assert target.read_bytes() == b"png"
    assert stat.S_IMODE(os.stat(target).st_mode) == default_file_mode()
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.png"]


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "config.json"
    atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]
