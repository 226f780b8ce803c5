"""Clinical ECG file formats: HL7 aECG XML, GE MUSE XML, DICOM 12-lead waveforms and EDF/EDF+.

Each ``read_*`` function returns a :class:`~crema.data.recording.Recording` (float32 millivolts,
lead names in CREMA's spelling, ``record_id`` = the file stem) and raises
:class:`~crema.errors.ReadError` naming the file and the problem for anything it cannot read.
Leads that are not ECG leads CREMA knows (e.g. respiration, V7, Frank X/Y/Z) are dropped and
listed in ``meta["dropped_leads"]``. A GE MUSE file usually stores only the 8 independent leads
(I, II, V1-V6); they are returned as they are, since :func:`crema.data.leads.to_standard`
rebuilds III, aVR, aVL and aVF downstream.

Each ``write_*`` function writes a :class:`Recording` in that format, atomically, so that users
can export ECGs and so that tests can build a file of every format from a real recording.

Formats in brief (what is read, what is refused):

- HL7 aECG (FDA annotated ECG, namespace ``urn:hl7-org:v3``): the rhythm ``series``, its first
  ``sequenceSet``; a regularly sampled time sequence (``GLIST_TS`` or ``GLIST_PQ`` increment ->
  sampling rate) and one ``SLIST_PQ`` sequence per lead (value = origin + scale * digit).
- GE MUSE XML (``RestingECG``): the ``Waveform`` whose ``WaveformType`` is ``Rhythm``; each
  ``LeadData`` holds base64 little-endian int16 samples times ``LeadAmplitudeUnitsPerBit``.
- DICOM waveform (12-lead or general ECG IOD): the rhythm multiplex group of the
  ``WaveformSequence``; lead names from ``ChannelSourceSequence``; value = raw * sensitivity *
  correction factor + baseline, in the units of ``ChannelSensitivityUnitsSequence``.
- EDF/EDF+: one signal per lead, labels such as ``ECG I`` or ``V1``, physical dimension in
  ``uV``/``mV``/``V``; all leads must share one sampling rate.
"""
from __future__ import annotations

import base64
import contextlib
import math
import os
import re
import sys
import warnings
import xml.etree.ElementTree as ET  # for building trees to write; never for parsing input
from pathlib import Path
from typing import Iterator

import numpy as np
from defusedxml import DefusedXmlException
from defusedxml import ElementTree as SafeET

from ..errors import ReadError
from .leads import UnknownLeadError, canonical_lead
from .recording import Recording
from .units import mv_per_unit
from ..atomic import atomic_path

PathLike = str | os.PathLike

HL7_NS = "urn:hl7-org:v3"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
_H = f"{{{HL7_NS}}}"
_XSI_TYPE = f"{{{XSI_NS}}}type"

# SCP-ECG / MDC lead numbers (DICOM CID 3001 code values "5.6.3-9-<n>" and "2:<n>").
_SCP_LEAD_NUMBERS: dict[int, str] = {
    1: "I", 2: "II", 3: "V1", 4: "V2", 5: "V3", 6: "V4", 7: "V5", 8: "V6",
    61: "III", 62: "aVR", 63: "aVL", 64: "aVF",
}
_SCP_NUMBER_OF_LEAD = {name: number for number, name in _SCP_LEAD_NUMBERS.items()}

# The leads a GE MUSE resting ECG stores; the other four are linear combinations of I and II.
MUSE_INDEPENDENT_LEADS: tuple[str, ...] = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")

DICOM_12LEAD_ECG_SOP = "1.2.840.10008.5.1.4.1.1.9.1.1"
DICOM_GENERAL_ECG_SOP = "1.2.840.10008.5.1.4.1.1.9.1.2"
_DICOM_12LEAD_MAX_SAMPLES = 16384  # 12-lead ECG IOD limit; longer records use the general ECG IOD
_DICOM_REQUIRED = ("NumberOfWaveformChannels", "NumberOfWaveformSamples", "SamplingFrequency",
                   "ChannelDefinitionSequence", "WaveformBitsAllocated", "WaveformData")


# ============================================================================ shared helpers

def _lead_or_none(name: str) -> str | None:
    """CREMA's spelling of a lead name, or ``None`` for a lead CREMA does not use."""
    try:
        return canonical_lead(name)
    except UnknownLeadError:
        return None


def _assemble(path: PathLike, named_rows: list[tuple[str, np.ndarray]], fs: float,
              fmt: str, meta: dict) -> Recording:
    """Stack ``(file lead name, samples in mV)`` rows into a :class:`Recording`, dropping unknown
    leads; raises :class:`ReadError` when no ECG lead is left or lengths differ."""
    kept, dropped = [], []
    for file_name, row in named_rows:
        lead = _lead_or_none(file_name)
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


def _parse_xml(path: PathLike) -> ET.Element:
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


def _write_xml(root: ET.Element, path: PathLike) -> None:
    ET.indent(root, space=" ")
    with atomic_path(path) as tmp:
        ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)


def _quantise(signal_mv: np.ndarray, step_mv: float, path: PathLike, fmt: str) -> np.ndarray:
    """Round ``signal_mv / step_mv`` to int16, refusing values that do not fit."""
    if not np.all(np.isfinite(signal_mv)):
        raise ReadError(path, f"cannot write {fmt}: the signal contains NaN or infinite values")
    digits = np.rint(signal_mv / step_mv)
    if digits.size and (digits.max() > 32767 or digits.min() < -32768):
        raise ReadError(path, f"cannot write {fmt}: amplitude {np.abs(signal_mv).max():.1f} mV "
                        f"overflows int16 at {step_mv * 1000:g} uV per unit")
    return digits.astype(np.int16)


def _step_for(signal_mv: np.ndarray, resolution_mv: float) -> float:
    """The quantisation step: ``resolution_mv``, coarsened only if int16 would overflow."""
    peak = float(np.abs(signal_mv).max()) if signal_mv.size else 0.0
    step = max(resolution_mv, peak / 32000.0)
    return float(f"{step:.6g}")  # what a decimal header field can hold exactly


# ============================================================================ XML (sniffing)

def read_xml_ecg(path: PathLike) -> Recording:
    """Read an ECG XML file, telling HL7 aECG from GE MUSE by its root element.

    Returns:
        :class:`Recording` with ``signal (n_leads, T)`` float32 mV.
    """
    root = _parse_xml(path)
    if root.tag == f"{_H}AnnotatedECG":
        return _read_aecg_root(root, path)
    if root.tag == "RestingECG":
        return _read_muse_root(root, path)
    raise ReadError(path, f"XML root element {root.tag!r} is neither an HL7 aECG "
                    "(AnnotatedECG in urn:hl7-org:v3) nor a GE MUSE RestingECG")


# ============================================================================ HL7 aECG

def read_aecg(path: PathLike) -> Recording:
    """Read an HL7 aECG file (FDA annotated ECG). Returns ``signal (n_leads, T)`` float32 mV."""
    root = _parse_xml(path)
    if root.tag != f"{_H}AnnotatedECG":
        raise ReadError(path, f"not an HL7 aECG: root element is {root.tag!r}")
    return _read_aecg_root(root, path)


def _read_aecg_root(root: ET.Element, path: PathLike) -> Recording:
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
    return _assemble(path, rows, _tidy_rate(fs), "hl7-aecg", meta)


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
    step_mv = _step_for(rec.signal, resolution_uv / 1000.0)
    digits = _quantise(rec.signal, step_mv, path, "HL7 aECG")
    ET.register_namespace("", HL7_NS)
    ET.register_namespace("xsi", XSI_NS)
    root = ET.Element(f"{_H}AnnotatedECG")
    ET.SubElement(root, f"{_H}id", root="2.16.840.1.113883.3.1", extension=str(rec.record_id))
    ET.SubElement(root, f"{_H}code", code="93000", codeSystem="2.16.840.1.113883.6.12")
    series = ET.SubElement(ET.SubElement(root, f"{_H}component"), f"{_H}series")
    ET.SubElement(series, f"{_H}code", code="RHYTHM", codeSystem="2.16.840.1.113883.5.4")
    sequence_set = ET.SubElement(ET.SubElement(series, f"{_H}component"), f"{_H}sequenceSet")
    time_value = _aecg_sequence(sequence_set, "TIME_ABSOLUTE", "2.16.840.1.113883.5.4", "GLIST_TS")
    ET.SubElement(time_value, f"{_H}head", value=start)
    ET.SubElement(time_value, f"{_H}increment", value=repr(1.0 / rec.fs), unit="s")
    for lead, row in zip(rec.leads, digits):
        code = "MDC_ECG_LEAD_" + (_lead_or_none(lead) or lead).upper()  # aVR -> MDC_ECG_LEAD_AVR
        value = _aecg_sequence(sequence_set, code, "2.16.840.1.113883.6.24", "SLIST_PQ")
        ET.SubElement(value, f"{_H}origin", value="0", unit="uV")
        ET.SubElement(value, f"{_H}scale", value=f"{step_mv * 1000:.6g}", unit="uV")
        ET.SubElement(value, f"{_H}digits").text = " ".join(map(str, row.tolist()))
    _write_xml(root, path)


def _aecg_sequence(sequence_set: ET.Element, code: str, code_system: str, kind: str) -> ET.Element:
    sequence = ET.SubElement(ET.SubElement(sequence_set, f"{_H}component"), f"{_H}sequence")
    ET.SubElement(sequence, f"{_H}code", code=code, codeSystem=code_system)
    return ET.SubElement(sequence, f"{_H}value", {_XSI_TYPE: kind})


# ============================================================================ GE MUSE XML

def read_muse_xml(path: PathLike) -> Recording:
    """Read a GE MUSE resting ECG XML file. Returns ``signal (n_leads, T)`` float32 mV (often the
    8 independent leads I, II, V1-V6)."""
    root = _parse_xml(path)
    if root.tag != "RestingECG":
        raise ReadError(path, f"not a GE MUSE XML file: root element is {root.tag!r}")
    return _read_muse_root(root, path)


def _read_muse_root(root: ET.Element, path: PathLike) -> Recording:
    waveforms = root.findall("Waveform")
    kinds = [(w.findtext("WaveformType") or "").strip() for w in waveforms]
    rhythm = [w for w, kind in zip(waveforms, kinds) if kind.lower() == "rhythm"]
    if not rhythm:
        raise ReadError(path, f"GE MUSE XML has no Rhythm waveform (found {kinds or 'none'})")
    waveform = rhythm[0]
    try:
        fs = float(waveform.findtext("SampleBase")) * 10.0 ** int(waveform.findtext("SampleExponent") or 0)
    except (TypeError, ValueError):
        raise ReadError(path, "GE MUSE XML: Rhythm waveform has no valid SampleBase") from None
    rows = [_muse_lead(lead_data, path) for lead_data in waveform.findall("LeadData")]
    if not rows:
        raise ReadError(path, "GE MUSE XML: Rhythm waveform has no LeadData")
    return _assemble(path, rows, fs, "ge-muse", _muse_meta(root))


def _muse_lead(lead_data: ET.Element, path: PathLike) -> tuple[str, np.ndarray]:
    """``(LeadID, samples in mV)`` of one MUSE ``LeadData`` element."""
    lead = (lead_data.findtext("LeadID") or "").strip()
    sample_size = int(lead_data.findtext("LeadSampleSize") or 2)
    if sample_size != 2:
        raise ReadError(path, f"GE MUSE XML: lead {lead} has {sample_size}-byte samples; only 2 is supported")
    encoded = lead_data.findtext("WaveFormData")
    if not encoded:
        raise ReadError(path, f"GE MUSE XML: lead {lead} has no WaveFormData")
    raw = base64.b64decode(encoded)
    if len(raw) % 2:
        raise ReadError(path, f"GE MUSE XML: lead {lead} has an odd number of data bytes")
    samples = np.frombuffer(raw, dtype="<i2")
    expected = lead_data.findtext("LeadSampleCountTotal")
    if expected is not None and int(expected) != samples.size:
        raise ReadError(path, f"GE MUSE XML: lead {lead} declares {expected} samples but holds {samples.size}")
    per_bit = float(lead_data.findtext("LeadAmplitudeUnitsPerBit") or 1.0)
    unit_mv = mv_per_unit(lead_data.findtext("LeadAmplitudeUnits") or "MICROVOLTS", path, f"lead {lead}")
    return lead, samples.astype(np.float64) * per_bit * unit_mv


def _muse_meta(root: ET.Element) -> dict:
    meta: dict = {}
    age = root.findtext("PatientDemographics/PatientAge")
    if age and age.strip().isdigit():
        meta["age"] = int(age)
    sex = (root.findtext("PatientDemographics/Gender") or "").strip().upper()
    if sex in {"MALE", "FEMALE"}:
        meta["sex"] = sex[0]
    statements = [(s.text or "").strip() for s in root.findall("Diagnosis/DiagnosisStatement/StmtText")]
    if any(statements):
        meta["statements"] = [s for s in statements if s]
    return meta


def write_muse_xml(rec: Recording, path: PathLike, independent_only: bool = True,
                   units_per_bit_uv: float = 4.88) -> None:
    """Write ``rec`` as a GE MUSE resting ECG XML file with one Rhythm waveform.

    Args:
        rec: ``signal (n_leads, T)`` float mV.
        path: the ``.xml`` file to write (atomically).
        independent_only: store only I, II, V1-V6 as MUSE does (when I and II are present).
        units_per_bit_uv: amplitude resolution (4.88 uV is GE's usual value), coarsened only if
            int16 would overflow.
    """
    canon = [_lead_or_none(lead) for lead in rec.leads]
    keep = list(range(len(rec.leads)))
    if independent_only and {"I", "II"} <= set(canon):
        keep = [i for i, lead in enumerate(canon) if lead in MUSE_INDEPENDENT_LEADS]
    signal = rec.signal[keep]
    step_mv = _step_for(signal, units_per_bit_uv / 1000.0)
    digits = _quantise(signal, step_mv, path, "GE MUSE XML")
    root = ET.Element("RestingECG")
    ET.SubElement(ET.SubElement(root, "MuseInfo"), "MuseVersion").text = "crema-export"
    demographics = ET.SubElement(root, "PatientDemographics")
    ET.SubElement(demographics, "PatientID").text = str(rec.meta.get("patient_id", rec.record_id))
    if rec.meta.get("age") is not None:
        ET.SubElement(demographics, "PatientAge").text = str(int(rec.meta["age"]))
        ET.SubElement(demographics, "AgeUnits").text = "YEARS"
    if str(rec.meta.get("sex", "")).upper()[:1] in {"M", "F"}:
        ET.SubElement(demographics, "Gender").text = {"M": "MALE", "F": "FEMALE"}[str(rec.meta["sex"]).upper()[0]]
    waveform = ET.SubElement(root, "Waveform")
    base, exponent = _muse_rate_fields(rec.fs)
    for tag, text in (("WaveformType", "Rhythm"), ("WaveformStartTime", "0"),
                      ("NumberofLeads", str(len(keep))), ("SampleType", "CONTINUOUS_SAMPLES"),
                      ("SampleBase", base), ("SampleExponent", exponent)):
        ET.SubElement(waveform, tag).text = text
    for i, row in zip(keep, digits):
        lead_data = ET.SubElement(waveform, "LeadData")
        fields = (("LeadByteCountTotal", str(2 * row.size)), ("LeadTimeOffset", "0"),
                  ("LeadSampleCountTotal", str(row.size)),
                  ("LeadAmplitudeUnitsPerBit", f"{step_mv * 1000:.6g}"),
                  ("LeadAmplitudeUnits", "MICROVOLTS"), ("LeadHighLimit", "32767"),
                  ("LeadLowLimit", "-32768"), ("LeadID", _muse_lead_name(rec.leads[i])),
                  ("LeadSampleSize", "2"),
                  ("WaveFormData", base64.b64encode(row.astype("<i2").tobytes()).decode("ascii")))
        for tag, text in fields:
            ET.SubElement(lead_data, tag).text = text
    _write_xml(root, path)


def _muse_rate_fields(fs: float) -> tuple[str, str]:
    """``SampleBase`` and ``SampleExponent`` so that base * 10**exponent == fs (integers)."""
    for exponent in range(0, -7, -1):
        base = fs / 10.0 ** exponent
        if abs(base - round(base)) < 1e-9 * max(1.0, base):
            return str(int(round(base))), str(exponent)
    raise ValueError(f"sampling rate {fs!r} has no short decimal form for MUSE")


def _muse_lead_name(lead: str) -> str:
    return _lead_or_none(lead) or lead


# ============================================================================ DICOM

def read_dicom_ecg(path: PathLike) -> Recording:
    """Read a DICOM ECG waveform object (12-lead or general ECG). Returns ``signal (n_leads, T)``
    float32 mV from the rhythm multiplex group."""
    pydicom = _require("pydicom", path)
    try:
        ds = pydicom.dcmread(path)
    except FileNotFoundError:
        raise ReadError(path, "file not found") from None
    except Exception as exc:  # pydicom raises several types for a file that is not DICOM
        raise ReadError(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from None
    groups = ds.get("WaveformSequence")
    if not groups:
        raise ReadError(path, f"DICOM file has no WaveformSequence (modality "
                        f"{ds.get('Modality', 'unknown')}); it is not an ECG waveform object")
    group = _dicom_rhythm_group(groups)
    absent = [name for name in _DICOM_REQUIRED if name not in group]
    if absent:
        raise ReadError(path, f"DICOM waveform lacks {', '.join(absent)}")
    raw = _dicom_raw_samples(group, path)
    rows = []
    for channel, samples in zip(group.ChannelDefinitionSequence, raw.T):
        rows.append((_dicom_lead_name(channel, path), _dicom_channel_mv(channel, samples, path)))
    meta = _dicom_meta(ds)
    return _assemble(path, rows, float(group.SamplingFrequency), "dicom", meta)


def _require(module: str, path: PathLike):
    try:
        return __import__(module)
    except ImportError:
        raise ReadError(path, f"reading this format needs the optional package {module!r}: "
                        "pip install 'crema-ecg[formats]'") from None


def _dicom_rhythm_group(groups):
    for group in groups:
        if str(group.get("MultiplexGroupLabel", "")).strip().upper() == "RHYTHM":
            return group
    return groups[0]


def _dicom_raw_samples(group, path: PathLike) -> np.ndarray:
    """The multiplexed samples as ``(T, n_channels)`` integers."""
    bits = int(group.get("WaveformBitsAllocated", 0))
    interpretation = str(group.get("WaveformSampleInterpretation", ""))
    dtypes = {(16, "SS"): "<i2", (16, "US"): "<u2", (8, "SB"): "i1", (8, "UB"): "u1"}
    if (bits, interpretation) not in dtypes:
        raise ReadError(path, f"DICOM waveform with {bits}-bit {interpretation or '?'} samples is not "
                        "supported (16-bit SS/US or 8-bit SB/UB only)")
    n_channels = int(group.NumberOfWaveformChannels)
    n_samples = int(group.NumberOfWaveformSamples)
    data = np.frombuffer(group.WaveformData, dtype=dtypes[(bits, interpretation)])
    if data.size < n_channels * n_samples:
        raise ReadError(path, f"DICOM WaveformData holds {data.size} values, expected "
                        f"{n_channels} channels x {n_samples} samples")
    if len(group.ChannelDefinitionSequence) != n_channels:
        raise ReadError(path, "DICOM ChannelDefinitionSequence does not match NumberOfWaveformChannels")
    return data[: n_channels * n_samples].reshape(n_samples, n_channels)


def _dicom_lead_name(channel, path: PathLike) -> str:
    """The lead of a channel from its source code meaning (``Lead I``) or SCP/MDC code value."""
    sources = channel.get("ChannelSourceSequence")
    if not sources:
        raise ReadError(path, "DICOM channel has no ChannelSourceSequence (lead unknown)")
    source = sources[0]
    meaning = re.sub(r"\(.*?\)", "", str(source.get("CodeMeaning", ""))).split(",")[0].strip()
    if _lead_or_none(meaning):
        return meaning
    code = str(source.get("CodeValue", ""))
    match = re.fullmatch(r"(?:5\.6\.3-9-|2:)(\d+)", code)
    if match and int(match.group(1)) in _SCP_LEAD_NUMBERS:
        return _SCP_LEAD_NUMBERS[int(match.group(1))]
    return meaning or code


def _dicom_channel_mv(channel, samples: np.ndarray, path: PathLike) -> np.ndarray:
    units = channel.get("ChannelSensitivityUnitsSequence")
    unit = str(units[0].get("CodeValue", "")) if units else ""
    unit_mv = mv_per_unit(unit, path, f"DICOM channel {channel.get('ChannelLabel', '')}".strip())
    sensitivity = float(channel.get("ChannelSensitivity", 1.0))
    correction = float(channel.get("ChannelSensitivityCorrectionFactor", 1.0))
    baseline = float(channel.get("ChannelBaseline", 0.0))
    return (samples.astype(np.float64) * sensitivity * correction + baseline) * unit_mv


def _dicom_meta(ds) -> dict:
    meta: dict = {}
    age = str(ds.get("PatientAge", ""))
    if re.fullmatch(r"\d{3}Y", age):
        meta["age"] = int(age[:3])
    sex = str(ds.get("PatientSex", "")).upper()
    if sex in {"M", "F"}:
        meta["sex"] = sex
    return meta


def write_dicom_ecg(rec: Recording, path: PathLike, resolution_uv: float = 1.0) -> None:
    """Write ``rec`` as a DICOM ECG waveform object (12-lead ECG IOD, or general ECG IOD when longer
    than 16384 samples), 16-bit signed samples.

    Args:
        rec: ``signal (n_leads, T)`` float mV.
        path: the ``.dcm`` file to write (atomically).
        resolution_uv: ``ChannelSensitivity`` in uV, coarsened only if int16 would overflow.
    """
    _require("pydicom", path)
    # pydicom is optional (the ``formats`` extra): imported only when a DICOM file is written
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    step_mv = _step_for(rec.signal, resolution_uv / 1000.0)
    digits = _quantise(rec.signal, step_mv, path, "DICOM")
    n_leads, n_samples = digits.shape
    sop_class = DICOM_12LEAD_ECG_SOP if n_samples <= _DICOM_12LEAD_MAX_SAMPLES else DICOM_GENERAL_ECG_SOP
    instance = generate_uid()
    file_meta = FileMetaDataset()
    file_meta.MediaStorageSOPClassUID = sop_class
    file_meta.MediaStorageSOPInstanceUID = instance
    file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = file_meta
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, instance
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "ECG"
    ds.PatientID = str(rec.meta.get("patient_id", rec.record_id))
    ds.PatientName = str(rec.record_id)
    if rec.meta.get("age") is not None:
        ds.PatientAge = f"{int(rec.meta['age']):03d}Y"
    if str(rec.meta.get("sex", "")).upper()[:1] in {"M", "F"}:
        ds.PatientSex = str(rec.meta["sex"]).upper()[0]
    group = Dataset()
    group.MultiplexGroupTimeOffset = "0"
    group.WaveformOriginality = "ORIGINAL"
    group.NumberOfWaveformChannels = n_leads
    group.NumberOfWaveformSamples = n_samples
    group.SamplingFrequency = f"{rec.fs:.6g}"
    group.MultiplexGroupLabel = "RHYTHM"
    group.ChannelDefinitionSequence = [_dicom_channel(lead, step_mv) for lead in rec.leads]
    group.WaveformBitsAllocated = 16
    group.WaveformSampleInterpretation = "SS"
    group.WaveformData = np.ascontiguousarray(digits.T).astype("<i2").tobytes()
    ds.WaveformSequence = [group]
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def _dicom_channel(lead: str, step_mv: float):
    from pydicom.dataset import Dataset  # optional, see write_dicom_ecg

    canon = _lead_or_none(lead) or lead
    source = Dataset()
    number = _SCP_NUMBER_OF_LEAD.get(canon)
    source.CodeValue = f"5.6.3-9-{number}" if number else canon
    source.CodingSchemeDesignator = "SCPECG" if number else "99CREMA"
    source.CodeMeaning = f"Lead {canon}"
    units = Dataset()
    units.CodeValue, units.CodingSchemeDesignator, units.CodeMeaning = "uV", "UCUM", "microvolt"
    channel = Dataset()
    channel.ChannelSourceSequence = [source]
    channel.ChannelSensitivity = f"{step_mv * 1000:.6g}"
    channel.ChannelSensitivityUnitsSequence = [units]
    channel.ChannelSensitivityCorrectionFactor = "1"
    channel.ChannelBaseline = "0"
    channel.WaveformBitsStored = 16
    return channel


# ============================================================================ EDF / EDF+

def read_edf_ecg(path: PathLike) -> Recording:
    """Read ECG leads from an EDF or EDF+ file. Returns ``signal (n_leads, T)`` float32 mV; signals
    whose labels are not ECG leads are dropped (``meta["dropped_leads"]``)."""
    pyedflib = _require("pyedflib", path)
    if not Path(path).is_file():
        raise ReadError(path, "file not found")
    try:
        with _c_stdout_silenced():  # pyedflib's C code prints its own diagnostics to stdout
            reader = pyedflib.EdfReader(str(path))
    except OSError as exc:
        problem = str(exc).removeprefix(f"{path}: ")  # pyedflib repeats the path
        raise ReadError(path, f"not a readable EDF/EDF+ file ({problem})") from None
    try:
        rows, rates, dropped = [], set(), []
        for i, label in enumerate(reader.getSignalLabels()):
            name = _edf_lead_name(label)
            if _lead_or_none(name) is None:
                dropped.append(label)
                continue
            unit_mv = mv_per_unit(reader.getPhysicalDimension(i), path, f"EDF signal {label!r}")
            rows.append((name, reader.readSignal(i) * unit_mv))
            rates.add(float(reader.getSampleFrequency(i)))
    finally:
        reader.close()
    if len(rates) > 1:
        raise ReadError(path, f"EDF ECG leads have different sampling rates {sorted(rates)}")
    rec = _assemble(path, rows, rates.pop() if rates else float("nan"), "edf", {})
    if dropped:
        rec.meta["dropped_leads"] = dropped + rec.meta.get("dropped_leads", [])
    return rec


@contextlib.contextmanager
def _c_stdout_silenced() -> Iterator[None]:
    """Send what C code writes to file descriptor 1 to /dev/null for the duration: a command's
    stdout holds its results, and a library's chatter there would corrupt a pipe."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):  # no real stdout (embedded, closed): nothing to guard
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _edf_lead_name(label: str) -> str:
    """``ECG I`` / ``EKG V1`` / ``I`` -> the bare lead name (EDF+ labels carry a type prefix)."""
    return re.sub(r"^(ECG|EKG)\s+", "", label.strip(), flags=re.IGNORECASE)


def write_edf(rec: Recording, path: PathLike) -> None:
    """Write ``rec`` as an EDF+ file, one 16-bit signal per lead labelled ``ECG <lead>`` in uV.

    The physical range of each lead is its own peak (whole uV, at least 1 mV), so the
    quantisation step is about ``2 * peak / 65535``. Data records last 1 s when the record's length
    is a whole number of seconds, else the longest duration that divides it exactly; when none
    does (an awkward rate and length), the tail is padded with the last sample to a whole second
    and a warning says so, since EDF cannot store a partial data record.

    Args:
        rec: ``signal (n_leads, T)`` float mV.
        path: the ``.edf`` file to write (atomically).
    """
    pyedflib = _require("pyedflib", path)
    signal_uv = rec.signal.astype(np.float64) * 1000.0
    if not np.all(np.isfinite(signal_uv)):
        raise ReadError(path, "cannot write EDF: the signal contains NaN or infinite values")
    samples_per_record = _edf_samples_per_record(rec.fs, signal_uv.shape[1])
    if samples_per_record is None:
        signal_uv, samples_per_record = _edf_pad_to_seconds(signal_uv, rec.fs, path)
    headers, digital = [], []
    for lead, row in zip(rec.leads, signal_uv):
        peak = max(1000.0, math.ceil(float(np.abs(row).max()) if row.size else 0.0))
        headers.append({"label": f"ECG {_lead_or_none(lead) or lead}", "dimension": "uV",
                        "sample_frequency": rec.fs, "physical_max": peak, "physical_min": -peak,
                        "digital_max": 32767, "digital_min": -32768, "transducer": "", "prefilter": ""})
        # EDF maps digital [-32768, 32767] linearly onto physical [-peak, peak].
        digital.append(np.rint((row + peak) / (2 * peak) * 65535 - 32768).astype(np.int32))
    with atomic_path(path) as tmp:
        writer = pyedflib.EdfWriter(str(tmp), len(rec.leads), file_type=pyedflib.FILETYPE_EDFPLUS)
        try:
            if samples_per_record != rec.fs:
                with warnings.catch_warnings():  # pyedflib warns that rates may shift; we chose
                    warnings.simplefilter("ignore")  # a duration that keeps them exact
                    writer.setDatarecordDuration(samples_per_record / rec.fs)
            writer.setSignalHeaders(headers)
            writer.writeSamples(digital, digital=True)
        finally:
            writer.close()


def _edf_samples_per_record(fs: float, n_samples: int) -> int | None:
    """Samples per data record: ``fs`` (1 s) when it divides the length, else the largest divisor
    of the length below ``fs`` whose duration EDF can state (whole multiples of 10 us)."""
    for candidate in range(min(int(fs), n_samples), 0, -1):
        duration_10us = candidate / fs * 1e5
        if n_samples % candidate == 0 and abs(duration_10us - round(duration_10us)) < 1e-6:
            return candidate
    return None


def _edf_pad_to_seconds(signal_uv: np.ndarray, fs: float, path: PathLike) -> tuple[np.ndarray, int]:
    """Pad ``(n_leads, T)`` with its last sample to whole 1-s data records."""
    if fs != int(fs):
        raise ReadError(path, f"cannot write EDF: no data-record length fits {signal_uv.shape[1]} "
                        f"samples at {fs} Hz")
    per_record = int(fs)
    pad = -signal_uv.shape[1] % per_record
    warnings.warn(f"{path}: EDF stores whole data records; padded {pad} samples at the end", stacklevel=3)
    return np.pad(signal_uv, ((0, 0), (0, pad)), mode="edge"), per_record
