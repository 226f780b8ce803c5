"""Which sampling rates are ECG rates: one check shared by readers, ``prepare`` and ``embed``."""
from __future__ import annotations

import math
from typing import Any

from ..errors import CremaError

# Sampling rates outside this range are not ECGs (or the rate was given in the wrong unit):
# the slowest real ECG recorders store 50-100 Hz, the fastest research systems a few kHz.
MIN_FS, MAX_FS = 50.0, 20000.0


def rate_problem(fs: Any, name: str | None = None) -> str | None:
    """Why ``fs`` is not a usable ECG sampling rate, or None when it is; ``name`` is how the
    message calls the setting (``fs``, ``--input-fs``), if it is one."""
    shown = f"{name}={fs!r}" if name else repr(fs)
    try:
        value = float(fs)
    except (TypeError, ValueError):
        return f"sampling rate {shown} is not a number"
    if not math.isfinite(value) or not MIN_FS <= value <= MAX_FS:
        return (f"sampling rate {shown} Hz is not a plausible ECG rate "
                f"({MIN_FS:g}-{MAX_FS:g} Hz; give it in Hz)")
    return None


def check_fs(fs: Any, name: str = "fs") -> float:
    """``fs`` as a float, or a :class:`CremaError` saying why it is not a usable ECG rate."""
    problem = rate_problem(fs, name)
    if problem is not None:
        raise CremaError(problem)
    return float(fs)
