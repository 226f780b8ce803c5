"""The log of a pretraining run: ``log.jsonl`` written by rank 0 (+ optional TensorBoard), and
its truncation to a checkpoint's step when the run is resumed."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..errors import CremaError

LOG_FILE = "log.jsonl"


def truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be redone), and a
    partial last line left by a kill in the middle of writing it.

    Raises:
        CremaError: a line other than the last is not JSON (the file was damaged otherwise).
    """
    if not path.is_file():
        return
    lines = path.read_bytes().decode("utf-8", "replace").splitlines()
    kept = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # the write a kill interrupted: its step is redone anyway
                break
            raise CremaError(f"{path}: line {number} is not JSON ({line[:60]!r}); fix or delete "
                             "that line to resume") from None
        if isinstance(record, dict) and record.get("step", 0) <= step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))


class RunLogger:
    """Rank-0 JSONL log (+ optional TensorBoard)."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool):
        self.path, self.enabled, self.tb = out / LOG_FILE, enabled, None
        if enabled and tensorboard:
            try:  # optional: the tensorboard package is not a dependency
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                warnings.warn("--tensorboard: the tensorboard package is not installed; JSONL only")

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
