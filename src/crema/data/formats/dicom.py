"""DICOM waveform (12-lead or general ECG IOD): the rhythm multiplex group of the
``WaveformSequence``; lead names from ``ChannelSourceSequence``; value = raw * sensitivity *
correction factor + baseline, in the units of ``ChannelSensitivityUnitsSequence``. pydicom is
optional (the ``formats`` extra) and imported only when a DICOM file is read or written."""
from __future__ import annotations

import re

import numpy as np

from ...atomic import atomic_path
from ...errors import ReadError
from ..recording import Recording
from ..units import mv_per_unit
from .common import PathLike, assemble, lead_or_none, quantise, require, step_for

# SCP-ECG / MDC lead numbers (DICOM CID 3001 code values "5.6.3-9-<n>" and "2:<n>").
_SCP_LEAD_NUMBERS: dict[int, str] = {
    1: "I", 2: "II", 3: "V1", 4: "V2", 5: "V3", 6: "V4", 7: "V5", 8: "V6",
    61: "III", 62: "aVR", 63: "aVL", 64: "aVF",
}
_SCP_NUMBER_OF_LEAD = {name: number for number, name in _SCP_LEAD_NUMBERS.items()}

DICOM_12LEAD_ECG_SOP = "1.2.840.10008.5.1.4.1.1.9.1.1"
DICOM_GENERAL_ECG_SOP = "1.2.840.10008.5.1.4.1.1.9.1.2"
_DICOM_12LEAD_MAX_SAMPLES = 16384  # 12-lead ECG IOD limit; longer records use the general ECG IOD
_DICOM_REQUIRED = ("NumberOfWaveformChannels", "NumberOfWaveformSamples", "SamplingFrequency",
                   "ChannelDefinitionSequence", "WaveformBitsAllocated", "WaveformData")


def read_dicom_ecg(path: PathLike) -> Recording:
    """Read a DICOM ECG waveform object (12-lead or general ECG). Returns ``signal (n_leads, T)``
    float32 mV from the rhythm multiplex group."""
    pydicom = require("pydicom", path)
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
    return assemble(path, rows, float(group.SamplingFrequency), "dicom", meta)


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
    if lead_or_none(meaning):
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
    require("pydicom", path)
    # pydicom is optional (the ``formats`` extra): imported only when a DICOM file is written
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    step_mv = step_for(rec.signal, resolution_uv / 1000.0, path, "DICOM")
    digits = quantise(rec.signal, step_mv, path, "DICOM")
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

    canon = lead_or_none(lead) or lead
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
