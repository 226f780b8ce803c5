"""The one type every reader returns."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Recording:
    """One ECG record as read from disk, before any preprocessing.

    Attributes:
        signal: float32 ``(n_leads, T)`` in millivolts.
        fs: sampling rate in Hz.
        leads: lead names as the file gives them, one per row of ``signal``.
        record_id: identifier, unique within its source (e.g. ``"00001"``, ``"E00001"``).
        meta: anything else known: ``age``, ``sex``, ``labels``, ``patient_id``, ``source``, ...
    """

    signal: np.ndarray
    fs: float
    leads: tuple[str, ...]
    record_id: str
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.signal = np.asarray(self.signal, dtype=np.float32)
        self.leads = tuple(self.leads)
        if self.signal.ndim != 2 or self.signal.shape[0] != len(self.leads):
            raise ValueError(
                f"record {self.record_id}: signal shape {self.signal.shape} does not match "
                f"{len(self.leads)} lead names")

    @property
    def duration_s(self) -> float:
        return self.signal.shape[1] / self.fs
