"""Where CREMA finds real ECG data: one setting, ``CREMA_DATA``, and the sample shipped in the package."""
from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def data_root() -> Path:
    """The folder of public ECG data sets (laid out as the README's "Getting the data" says):
    ``$CREMA_DATA``; when it is not set, ``shared/data`` in the folder that holds the clone (a
    development layout), which need not exist: tests and benchmarks skip what is absent."""
    env = os.environ.get("CREMA_DATA")
    if env:
        return Path(env).expanduser().resolve()
    project_root = _PACKAGE_DIR.parents[1]  # src/crema -> project root
    return (project_root.parent / "shared" / "data").resolve()


def sample_root() -> Path:
    """The small real sample shipped inside the package (PTB-XL records 1-500 at 100 Hz)."""
    return _PACKAGE_DIR / "sample" / "ptbxl"
