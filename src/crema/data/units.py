"""Voltage units: the one table every reader converts to millivolts with."""
from __future__ import annotations

import os

from ..errors import CremaError, ReadError

# Millivolts per unit, keyed by a lower-cased unit with the micro sign spelled "u".
MV_PER_UNIT: dict[str, float] = {
    "v": 1000.0, "volt": 1000.0, "volts": 1000.0,
    "mv": 1.0, "millivolt": 1.0, "millivolts": 1.0,
    "uv": 1e-3, "microvolt": 1e-3, "microvolts": 1e-3,
    "nv": 1e-6, "nanovolt": 1e-6, "nanovolts": 1e-6,
}


def mv_per_unit(unit: str | None, path: str | os.PathLike, what: str) -> float:
    """Millivolts per ``unit`` (``uV``, ``µV``, ``mV``, ``V``, ``MICROVOLTS`` ...).

    Raises:
        ReadError: naming ``path`` and ``what`` carries the unit, when it is not a voltage.
    """
    key = (unit or "").strip().lower().replace("µ", "u").replace("μ", "u")
    if key not in MV_PER_UNIT:
        raise ReadError(path, f"{what} has unit {unit!r}, which is not a voltage (uV, mV or V)")
    return MV_PER_UNIT[key]


def check_unit(unit: str | None, option: str = "--units") -> str | None:
    """``unit`` when it is a voltage unit (or None); a :class:`crema.errors.CremaError` naming
    ``option`` otherwise, so that a bad command-line unit is refused before any file is read."""
    if unit is None:
        return None
    try:
        mv_per_unit(unit, option, "it")
    except ReadError:
        raise CremaError(f"{option} {unit!r} is not a voltage unit (uV, mV or V)") from None
    return unit
