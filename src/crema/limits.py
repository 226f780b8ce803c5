"""The resource limits that keep a hostile or careless input from exhausting the machine.

One place for every bound CREMA puts on what it will read or accept: each is a setting with a sane
default, overridable by an environment variable, and a refused input says which limit it hit and
how to raise it. Readers check *declared* sizes (array headers, HDF5 shapes, zip members) against
these bounds and against the bytes really present before they allocate anything.
"""
from __future__ import annotations

import dataclasses
import os

from .errors import CremaError

MIB = 2**20


class LimitError(CremaError, ValueError):
    """An input would exceed one of the limits; the message names the input, the limit and its setting."""


@dataclasses.dataclass(frozen=True)
class Limit:
    """One bound: ``name`` (what it bounds, for messages), ``env`` (the setting), ``default``."""

    name: str
    env: str
    default: int
    unit: str = "bytes"

    def value(self) -> int:
        """The bound in force: ``$env`` when set to a positive whole number, else ``default``."""
        raw = os.environ.get(self.env, "").strip()
        if not raw:
            return self.default
        try:
            value = int(raw)
        except ValueError:
            raise CremaError(f"{self.env}={raw!r} is not a whole number ({self.describe()})") from None
        if value <= 0:
            raise CremaError(f"{self.env}={raw!r} must be positive ({self.describe()})")
        return value

    def describe(self) -> str:
        return f"{self.name}, default {_human(self.default, self.unit)}"

    def check(self, amount: int, what: str) -> None:
        """Raise ``LimitError`` when ``amount`` (in ``unit``) exceeds the bound; ``what`` names the input."""
        bound = self.value()
        if amount > bound:
            raise LimitError(
                f"{what}: needs {_human(amount, self.unit)}, over the {self.name} limit of "
                f"{_human(bound, self.unit)} (set {self.env} to raise it)")


def _human(amount: int, unit: str) -> str:
    if unit == "bytes":
        return f"{amount / MIB:,.1f} MiB" if amount >= MIB else f"{amount:,} bytes"
    return f"{amount:,} {unit}"


# Decoded float32 signal of one record held in memory at once. 12 leads x 1 h at 1 kHz is 165 MiB;
# longer records are streamed window by window instead of read whole.
RECORD_BYTES = Limit("record in memory", "CREMA_MAX_RECORD_BYTES", 512 * MIB)
# Records longer than this are read and preprocessed a span at a time (crema.data.stream), whatever
# their size: preprocessing a record whole needs about 14 times its file size at its peak.
STREAM_SECONDS = Limit("record read whole", "CREMA_STREAM_AFTER_S", 300, unit="seconds")
# Records of one stack file (.npy/.npz/HDF5): each is listed as an item of about 0.5 kB before any
# is read, so a small compressed file declaring millions of tiny rows would otherwise exhaust memory.
STACK_RECORDS = Limit("records in one stack file", "CREMA_MAX_STACK_RECORDS", 1_000_000, unit="records")
# What compressed data may expand to: all the compressed members of one .npz together, one chunk
# of an HDF5 dataset (decompressed whole whenever one of its rows is read), a MATLAB element.
DECOMPRESSED_BYTES = Limit("decompressed size", "CREMA_MAX_DECOMPRESSED_BYTES", 1024 * MIB)
# One file uploaded to the viewer, and all of one request's files together.
UPLOAD_BYTES = Limit("upload size", "CREMA_MAX_UPLOAD_BYTES", 200 * MIB)
# Text files (CSV labels, .csv/.txt signals, headers): larger ones are not ECG text.
TEXT_BYTES = Limit("text file size", "CREMA_MAX_TEXT_BYTES", 256 * MIB)

ALL = (RECORD_BYTES, STREAM_SECONDS, STACK_RECORDS, DECOMPRESSED_BYTES, UPLOAD_BYTES, TEXT_BYTES)
