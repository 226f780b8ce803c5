"""What the format modules share: lead names, assembling a :class:`Recording` from named rows,
safe XML parsing and atomic XML writing, int16 quantisation, optional packages, and the age and
sex values of ``meta`` read from text or MATLAB arrays (WFDB header comments, the CPSC struct)."""
from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET  # for building trees to write; never for parsing input
from pathlib import Path

import numpy as np
from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET

from ...atomic import atomic_path
from ...errors import ReadError, install_hint
from ..leads import UnknownLeadError, canonical_lead
from ..recording import Recording

PathLike = str | os.PathLike


def lead_or_none(name: str) -> str | None:
    """CREMA's spelling of a lead name, or ``None`` for a lead CREMA does not use."""
    try:
        return canonical_lead(name)
    except UnknownLeadError:
        return None


def assemble(path: PathLike, named_rows: list[tuple[str, np.ndarray]], fs: float,
              fmt: str, meta: dict) -> Recording:
    """Stack ``(file lead name, samples in mV)`` rows into a :class:`Recording`, dropping unknown
    leads; raises :class:`ReadError` when no ECG lead is left or lengths differ."""
    kept, dropped = [], []
    for file_name, row in named_rows:
        lead = lead_or_none(file_name)
        if lead is None:
            dropped.append(file_name)
        elif lead in {k for k, _ in kept}:
            # two different rows claim to be the same lead: which one is real is unknown
            raise ReadError(path, f"{fmt}: lead {lead} appears more than once "
                                  f"(leads: {', '.join(n for n, _ in named_rows)})")
        else:
            kept.append((lead, row))
    if not kept:
        names = [n for n, _ in named_rows]
        raise ReadError(path, f"{fmt}: no ECG lead CREMA knows among {names}")
    lengths = {len(row) for _, row in kept}
    if len(lengths) != 1:
        raise ReadError(path, f"{fmt}: leads have different lengths {sorted(lengths)}")
    if not (math.isfinite(fs) and fs > 0):
        raise ReadError(path, f"{fmt}: invalid sampling rate {fs!r}")
    signal = np.stack([row for _, row in kept]).astype(np.float32)
    meta = {"format": fmt, "path": str(path), **meta}
    if dropped:
        meta["dropped_leads"] = dropped
    return Recording(signal=signal, fs=float(fs), leads=tuple(k for k, _ in kept),
                     record_id=Path(path).stem, meta=meta)


def parse_xml(path: PathLike) -> ET.Element:
    """The root element of an XML file, parsed with ``defusedxml``: entity declarations (the
    "billion laughs" bomb) and external references are refused whatever the runtime's expat."""
    try:
        return SafeET.parse(path).getroot()
    except FileNotFoundError:
        raise ReadError(path, "file not found") from None
    except ET.ParseError as exc:
        raise ReadError(path, f"not well-formed XML ({exc})") from None
    except DefusedXmlException as exc:
        raise ReadError(path, f"XML with entity declarations or external references is refused "
                              f"(a possible XML bomb): {type(exc).__name__}") from None


def write_xml(root: ET.Element, path: PathLike) -> None:
    ET.indent(root, space=" ")
    with atomic_path(path) as tmp:
        ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)


def require_finite(signal: np.ndarray, path: PathLike, fmt: str, what: str = "the signal") -> None:
    """Refuse to write a signal (or ``what`` else: a model's output) with NaN or infinite values:
    no format can store them, and no output may pass them off as results."""
    if not np.all(np.isfinite(signal)):
        raise ReadError(path, f"cannot write {fmt}: {what} contains NaN or infinite values")


def quantise(signal_mv: np.ndarray, step_mv: float, path: PathLike, fmt: str) -> np.ndarray:
    """Round ``signal_mv / step_mv`` to int16, refusing values that do not fit."""
    require_finite(signal_mv, path, fmt)
    digits = np.rint(signal_mv / step_mv)
    if digits.size and (digits.max() > 32767 or digits.min() < -32768):
        raise ReadError(path, f"cannot write {fmt}: amplitude {np.abs(signal_mv).max():.1f} mV "
                        f"overflows int16 at {step_mv * 1000:g} uV per unit")
    return digits.astype(np.int16)


# The coarsest amplitude step a writer may fall back to: 16-bit samples then span +-640 mV, far
# beyond any ECG. A signal that needs more (a baseline offset of volts, values in the wrong unit)
# would be flattened to a few levels, so it is refused instead of written as if it were the ECG.
MAX_STEP_MV = 0.02


def step_for(signal_mv: np.ndarray, resolution_mv: float, path: PathLike = "", fmt: str = "") -> float:
    """The quantisation step: ``resolution_mv``, coarsened only if int16 would overflow, and
    never beyond :data:`MAX_STEP_MV` (:func:`require_resolution`)."""
    peak = float(np.abs(signal_mv).max()) if signal_mv.size and np.isfinite(signal_mv).all() else 0.0
    step = max(resolution_mv, peak / 32000.0)
    if step > resolution_mv:
        require_resolution(step, peak, path, fmt)
    return float(f"{step:.6g}")  # what a decimal header field can hold exactly


def require_resolution(step_mv: float, peak_mv: float, path: PathLike, fmt: str) -> None:
    """Refuse a quantisation step coarser than :data:`MAX_STEP_MV` (the ECG would be lost in it)."""
    if step_mv > MAX_STEP_MV:
        raise ReadError(path, f"cannot write {fmt}: values up to {peak_mv:.6g} mV would need an amplitude step of "
                        f"{step_mv * 1000:.4g} uV to fit 16-bit samples, which would flatten the ECG (at most "
                        f"{MAX_STEP_MV * 1000:g} uV, +-{MAX_STEP_MV * 32000:g} mV); an ECG spans a few mV: check "
                        "the signal's unit and baseline offset")


def require(module: str, path: PathLike):
    """The optional package ``module`` (pydicom, pyedflib), or a ReadError saying how to install it."""
    try:
        return __import__(module)
    except ImportError:
        raise ReadError(path, f"reading this format needs the optional package {module!r}: "
                        f"{install_hint('formats')}") from None


def parse_age(value) -> float | None:
    """A finite non-negative age in years, else None (``NaN``, ``Unknown``, empty)."""
    try:
        age = float(np.asarray(value).squeeze()) if not isinstance(value, str) else float(value)
    except (TypeError, ValueError):
        return None
    return age if math.isfinite(age) and age >= 0 else None


def parse_sex(value) -> str | None:
    """'M', 'F' or None from ``Male``/``female``/``M``/``F`` (anything else is unknown)."""
    text = str(value).strip().lower()
    if text in ("m", "male", "man"):
        return "M"
    if text in ("f", "female", "woman"):
        return "F"
    return None
