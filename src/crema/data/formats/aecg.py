"""HL7 aECG (FDA annotated ECG, namespace ``urn:hl7-org:v3``): the rhythm ``series``, its first
``sequenceSet``; a regularly sampled time sequence (``GLIST_TS`` or ``GLIST_PQ`` increment ->
sampling rate) and one ``SLIST_PQ`` sequence per lead (value = origin + scale * digit)."""
from __future__ import annotations

import xml.etree.ElementTree as ET  # for building trees to write; never for parsing input

import numpy as np

from ...errors import ReadError
from ..recording import Recording
from ..units import mv_per_unit
from .common import PathLike, assemble, lead_or_none, parse_xml, quantise, step_for, write_xml

HL7_NS = "urn:hl7-org:v3"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
_H = f"{{{HL7_NS}}}"
_XSI_TYPE = f"{{{XSI_NS}}}type"
ROOT_TAG = f"{_H}AnnotatedECG"


def read_aecg(path: PathLike) -> Recording:
    """Read an HL7 aECG file (FDA annotated ECG). Returns ``signal (n_leads, T)`` float32 mV."""
    root = parse_xml(path)
    if root.tag != ROOT_TAG:
        raise ReadError(path, f"not an HL7 aECG: root element is {root.tag!r}")
    return read_aecg_root(root, path)


def read_aecg_root(root: ET.Element, path: PathLike) -> Recording:
    """The recording of a parsed aECG tree (root element ``AnnotatedECG``)."""
    series = _aecg_rhythm_series(root, path)
    sequence_sets = series.findall(f"{_H}component/{_H}sequenceSet")
    if not sequence_sets:
        raise ReadError(path, "HL7 aECG: the rhythm series has no sequenceSet (no waveform data)")
    fs, rows = None, []
    for sequence in sequence_sets[0].findall(f"{_H}component/{_H}sequence"):
        code = _attr(sequence.find(f"{_H}code"), "code", "")
        value = sequence.find(f"{_H}value")
        if value is None:
            raise ReadError(path, f"HL7 aECG: sequence {code!r} has no value")
        if code.startswith("TIME_"):
            fs = 1.0 / _aecg_increment_s(value, path)
        else:
            rows.append((code.removeprefix("MDC_ECG_LEAD_"), _aecg_lead_mv(value, code, path)))
    if fs is None:
        raise ReadError(path, "HL7 aECG: the sequenceSet has no time sequence (sampling rate unknown)")
    meta = {"sequence_sets": len(sequence_sets)}
    return assemble(path, rows, _tidy_rate(fs), "hl7-aecg", meta)


def _attr(element: ET.Element | None, name: str, default: str | None = None) -> str | None:
    return default if element is None else element.get(name, default)


def _aecg_rhythm_series(root: ET.Element, path: PathLike) -> ET.Element:
    """The top-level ``series`` coded RHYTHM, or the first one (derived beats live deeper)."""
    series = root.findall(f"{_H}component/{_H}series")
    if not series:
        raise ReadError(path, "HL7 aECG: no series element (no waveform data)")
    for candidate in series:
        if _attr(candidate.find(f"{_H}code"), "code", "").upper() == "RHYTHM":
            return candidate
    return series[0]


def _aecg_increment_s(value: ET.Element, path: PathLike) -> float:
    increment = value.find(f"{_H}increment")
    if increment is None or increment.get("value") is None:
        raise ReadError(path, "HL7 aECG: the time sequence has no increment "
                        "(irregularly sampled time lists are not supported)")
    unit = (increment.get("unit") or "s").strip()
    seconds_per_unit = {"s": 1.0, "ms": 1e-3, "us": 1e-6}.get(unit)
    if seconds_per_unit is None:
        raise ReadError(path, f"HL7 aECG: time increment unit {unit!r} is not s, ms or us")
    step = float(increment.get("value")) * seconds_per_unit
    if not step > 0:
        raise ReadError(path, f"HL7 aECG: time increment {step!r} s is not positive")
    return step


def _aecg_lead_mv(value: ET.Element, code: str, path: PathLike) -> np.ndarray:
    """``origin + scale * digits`` of one SLIST_PQ lead sequence, in mV."""
    kind = value.get(_XSI_TYPE, "SLIST_PQ")
    if kind.split(":")[-1] != "SLIST_PQ":
        raise ReadError(path, f"HL7 aECG: lead {code!r} has value type {kind!r}, expected SLIST_PQ")
    origin, scale, digits = (value.find(f"{_H}{tag}") for tag in ("origin", "scale", "digits"))
    if scale is None or digits is None or digits.text is None:
        raise ReadError(path, f"HL7 aECG: lead {code!r} lacks scale or digits")
    scale_mv = float(scale.get("value")) * mv_per_unit(scale.get("unit"), path, f"lead {code} scale")
    origin_mv = 0.0
    if origin is not None:
        origin_mv = float(origin.get("value", 0)) * mv_per_unit(
            origin.get("unit", scale.get("unit")), path, f"lead {code} origin")
    try:
        samples = np.array(digits.text.split(), dtype=np.float64)
    except ValueError:
        raise ReadError(path, f"HL7 aECG: lead {code!r} has non-numeric digits") from None
    return origin_mv + scale_mv * samples


def _tidy_rate(fs: float) -> float:
    """Undo float noise in ``1 / increment`` (e.g. 499.99999999 -> 500)."""
    rounded = round(fs, 3)
    return rounded if abs(rounded - fs) < 1e-6 * fs else fs


def write_aecg(rec: Recording, path: PathLike, resolution_uv: float = 1.0,
               start: str = "20000101000000") -> None:
    """Write ``rec`` as an HL7 aECG file: one rhythm series, one sequenceSet.

    Args:
        rec: ``signal (n_leads, T)`` float mV.
        path: the ``.xml`` file to write (atomically).
        resolution_uv: the digit step (``scale``), coarsened only if int16 would overflow.
        start: acquisition time for the ``GLIST_TS`` head, ``YYYYMMDDhhmmss``.
    """
    step_mv = step_for(rec.signal, resolution_uv / 1000.0, path, "HL7 aECG")
    digits = quantise(rec.signal, step_mv, path, "HL7 aECG")
    ET.register_namespace("", HL7_NS)
    ET.register_namespace("xsi", XSI_NS)
    root = ET.Element(ROOT_TAG)
    ET.SubElement(root, f"{_H}id", root="2.16.840.1.113883.3.1", extension=str(rec.record_id))
    ET.SubElement(root, f"{_H}code", code="93000", codeSystem="2.16.840.1.113883.6.12")
    series = ET.SubElement(ET.SubElement(root, f"{_H}component"), f"{_H}series")
    ET.SubElement(series, f"{_H}code", code="RHYTHM", codeSystem="2.16.840.1.113883.5.4")
    sequence_set = ET.SubElement(ET.SubElement(series, f"{_H}component"), f"{_H}sequenceSet")
    time_value = _aecg_sequence(sequence_set, "TIME_ABSOLUTE", "2.16.840.1.113883.5.4", "GLIST_TS")
    ET.SubElement(time_value, f"{_H}head", value=start)
    ET.SubElement(time_value, f"{_H}increment", value=repr(1.0 / rec.fs), unit="s")
    for lead, row in zip(rec.leads, digits):
        code = "MDC_ECG_LEAD_" + (lead_or_none(lead) or lead).upper()  # aVR -> MDC_ECG_LEAD_AVR
        value = _aecg_sequence(sequence_set, code, "2.16.840.1.113883.6.24", "SLIST_PQ")
        ET.SubElement(value, f"{_H}origin", value="0", unit="uV")
        ET.SubElement(value, f"{_H}scale", value=f"{step_mv * 1000:.6g}", unit="uV")
        ET.SubElement(value, f"{_H}digits").text = " ".join(map(str, row.tolist()))
    write_xml(root, path)


def _aecg_sequence(sequence_set: ET.Element, code: str, code_system: str, kind: str) -> ET.Element:
    sequence = ET.SubElement(ET.SubElement(sequence_set, f"{_H}component"), f"{_H}sequence")
    ET.SubElement(sequence, f"{_H}code", code=code, codeSystem=code_system)
    return ET.SubElement(sequence, f"{_H}value", {_XSI_TYPE: kind})
