"""GE MUSE XML (``RestingECG``): the ``Waveform`` whose ``WaveformType`` is ``Rhythm``; each
``LeadData`` holds base64 little-endian int16 samples times ``LeadAmplitudeUnitsPerBit``. A MUSE
file usually stores only the 8 independent leads (I, II, V1-V6); they are returned as they are,
since :func:`crema.data.leads.to_standard` rebuilds III, aVR, aVL and aVF downstream."""
from __future__ import annotations

import base64
import xml.etree.ElementTree as ET  # for building trees to write; never for parsing input

import numpy as np

from ...errors import ReadError
from ..recording import Recording
from ..units import mv_per_unit
from .common import PathLike, assemble, lead_or_none, parse_xml, quantise, step_for, write_xml

# The leads a GE MUSE resting ECG stores; the other four are linear combinations of I and II.
MUSE_INDEPENDENT_LEADS: tuple[str, ...] = ("I", "II", "V1", "V2", "V3", "V4", "V5", "V6")


def read_muse_xml(path: PathLike) -> Recording:
    """Read a GE MUSE resting ECG XML file. Returns ``signal (n_leads, T)`` float32 mV (often the
    8 independent leads I, II, V1-V6)."""
    root = parse_xml(path)
    if root.tag != "RestingECG":
        raise ReadError(path, f"not a GE MUSE XML file: root element is {root.tag!r}")
    return read_muse_root(root, path)


def read_muse_root(root: ET.Element, path: PathLike) -> Recording:
    """The recording of a parsed MUSE tree (root element ``RestingECG``)."""
    waveforms = root.findall("Waveform")
    kinds = [(w.findtext("WaveformType") or "").strip() for w in waveforms]
    rhythm = [w for w, kind in zip(waveforms, kinds) if kind.lower() == "rhythm"]
    if not rhythm:
        raise ReadError(path, f"GE MUSE XML has no Rhythm waveform (found {kinds or 'none'})")
    waveform = rhythm[0]
    fs = _muse_rate(waveform, path)
    rows = [_muse_lead(lead_data, path) for lead_data in waveform.findall("LeadData")]
    if not rows:
        raise ReadError(path, "GE MUSE XML: Rhythm waveform has no LeadData")
    return assemble(path, rows, fs, "ge-muse", _muse_meta(root))


def _muse_rate(waveform: ET.Element, path: PathLike) -> float:
    """``SampleBase * 10 ** SampleExponent`` in Hz; any exponent beyond a few places is a damaged
    file (``10.0 ** 400`` would overflow), refused with the field named."""
    base, exponent = waveform.findtext("SampleBase"), waveform.findtext("SampleExponent") or "0"
    try:
        base_hz, power = float(base), int(exponent)
    except (TypeError, ValueError):
        raise ReadError(path, f"GE MUSE XML: Rhythm waveform has no valid SampleBase/SampleExponent "
                        f"({base!r}, {exponent!r})") from None
    if not -6 <= power <= 6:
        raise ReadError(path, f"GE MUSE XML: SampleExponent {power} is out of range (a rate of "
                        f"{base_hz:g} x 10^{power} Hz)")
    return base_hz * 10.0 ** power


def _muse_lead(lead_data: ET.Element, path: PathLike) -> tuple[str, np.ndarray]:
    """``(LeadID, samples in mV)`` of one MUSE ``LeadData`` element."""
    lead = (lead_data.findtext("LeadID") or "").strip()
    sample_size = _muse_number(lead_data, "LeadSampleSize", "2", int, lead, path)
    if sample_size != 2:
        raise ReadError(path, f"GE MUSE XML: lead {lead} has {sample_size}-byte samples; only 2 is supported")
    encoded = lead_data.findtext("WaveFormData")
    if not encoded:
        raise ReadError(path, f"GE MUSE XML: lead {lead} has no WaveFormData")
    try:
        raw = base64.b64decode(encoded)
    except ValueError:  # binascii.Error
        raise ReadError(path, f"GE MUSE XML: lead {lead} WaveFormData is not valid base64") from None
    if len(raw) % 2:
        raise ReadError(path, f"GE MUSE XML: lead {lead} has an odd number of data bytes")
    samples = np.frombuffer(raw, dtype="<i2")
    expected = lead_data.findtext("LeadSampleCountTotal")
    if expected is not None and _muse_number(lead_data, "LeadSampleCountTotal", "0", int, lead, path) != samples.size:
        raise ReadError(path, f"GE MUSE XML: lead {lead} declares {expected} samples but holds {samples.size}")
    per_bit = _muse_number(lead_data, "LeadAmplitudeUnitsPerBit", "1.0", float, lead, path)
    if not (np.isfinite(per_bit) and per_bit > 0):
        raise ReadError(path, f"GE MUSE XML: lead {lead} LeadAmplitudeUnitsPerBit {per_bit!r} is not a positive number")
    unit_mv = mv_per_unit(lead_data.findtext("LeadAmplitudeUnits") or "MICROVOLTS", path, f"lead {lead}")
    return lead, samples.astype(np.float64) * per_bit * unit_mv


def _muse_number(element: ET.Element, tag: str, default: str, kind: type, lead: str, path: PathLike):
    """The number in ``element``'s child ``tag`` (``default`` when absent), or a ReadError naming it."""
    text = (element.findtext(tag) or default).strip()
    try:
        return kind(text)
    except ValueError:
        raise ReadError(path, f"GE MUSE XML: lead {lead} {tag} {text!r} is not a number") from None


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
    canon = [lead_or_none(lead) for lead in rec.leads]
    keep = list(range(len(rec.leads)))
    if independent_only and {"I", "II"} <= set(canon):
        keep = [i for i, lead in enumerate(canon) if lead in MUSE_INDEPENDENT_LEADS]
    signal = rec.signal[keep]
    step_mv = step_for(signal, units_per_bit_uv / 1000.0, path, "GE MUSE XML")
    digits = quantise(signal, step_mv, path, "GE MUSE XML")
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
    write_xml(root, path)


def _muse_rate_fields(fs: float) -> tuple[str, str]:
    """``SampleBase`` and ``SampleExponent`` so that base * 10**exponent == fs (integers)."""
    for exponent in range(0, -7, -1):
        base = fs / 10.0 ** exponent
        if abs(base - round(base)) < 1e-9 * max(1.0, base):
            return str(int(round(base))), str(exponent)
    raise ValueError(f"sampling rate {fs!r} has no short decimal form for MUSE")


def _muse_lead_name(lead: str) -> str:
    return lead_or_none(lead) or lead
