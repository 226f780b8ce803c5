"""Clinical formats (HL7 aECG, GE MUSE XML, DICOM, EDF+): ``crema convert`` output read back by
foreign readers (wfdb, pyedflib, pydicom; aECG and MUSE decoded here from their published layouts,
as no independent reader of them is installed), round trips through our readers, dispatch through
read_record, and a clear ReadError for every unsupported variant."""
from __future__ import annotations

import base64
import shutil
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from crema.cli import main as crema_main
from crema.data import formats
from crema.data.formats.aecg import HL7_NS
from crema.data.formats.common import lead_or_none
from crema.data.formats.dicom import DICOM_GENERAL_ECG_SOP
from crema.data.formats.muse import MUSE_INDEPENDENT_LEADS
from crema.data.leads import to_standard
from crema.data.readers import read_record
from crema.data.recording import Recording
from crema.errors import ReadError
from fixtures_data import ptbxl_record_500hz

pytest.importorskip("pydicom")
pytest.importorskip("pyedflib")

H = f"{{{HL7_NS}}}"


@pytest.fixture(scope="module")
def ptbxl_rec(ptbxl_root) -> Recording:
    """PTB-XL record 1 at 500 Hz: 12 leads, 5000 samples, mV (resampled from the sample's 100 Hz
    file without the shared data)."""
    rec = ptbxl_record_500hz(ptbxl_root, 1)
    rec.meta.update(age=56, sex="F")
    return rec


def _canonical(leads):
    return tuple(lead_or_none(name) for name in leads)


# (writer, reader, suffix, worst quantisation error in mV)
FORMATS = {
    "aecg": (formats.write_aecg, formats.read_xml_ecg, ".xml", 0.0005),
    "muse": (lambda r, p: formats.write_muse_xml(r, p, independent_only=False),
             formats.read_xml_ecg, ".xml", 0.00244 + 1e-6),
    "dicom": (formats.write_dicom_ecg, formats.read_dicom_ecg, ".dcm", 0.0005),
    "edf": (formats.write_edf, formats.read_edf_ecg, ".edf", 0.0001),
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_round_trip_keeps_signal_rate_and_leads(fmt, ptbxl_rec, tmp_path):
    writer, reader, suffix, tolerance = FORMATS[fmt]
    path = tmp_path / f"ecg_{fmt}{suffix}"
    writer(ptbxl_rec, path)
    back = reader(path)
    assert back.fs == ptbxl_rec.fs == 500.0
    assert back.leads == _canonical(ptbxl_rec.leads)
    assert back.signal.dtype == np.float32 and back.signal.shape == (12, 5000)
    error = np.abs(back.signal - ptbxl_rec.signal).max()
    assert error <= tolerance, f"{fmt}: max error {error * 1000:.3f} uV"
    assert np.abs(ptbxl_rec.signal).max() > 100 * tolerance  # the check is not vacuous
    assert back.record_id == f"ecg_{fmt}"
    # the generic reader dispatches on the suffix to the same reader
    assert np.array_equal(read_record(path).signal, back.signal)
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind


# ----------------------------------------------------------------------------- crema convert

# Foreign decoders, one per format, each returning (fs, lead names, signal (n_leads, T) in mV).
# None of them calls crema's readers, so a writer and reader sharing one mistake cannot pass.

def _foreign_wfdb(path):
    import wfdb

    record = wfdb.rdrecord(str(path.with_suffix("")))
    assert record.units == ["mV"] * record.n_sig
    return record.fs, record.sig_name, record.p_signal.T


def _foreign_edf(path):
    import pyedflib

    with pyedflib.EdfReader(str(path)) as edf:
        n = edf.signals_in_file
        assert [edf.getPhysicalDimension(i) for i in range(n)] == ["uV"] * n
        signal = np.stack([edf.readSignal(i) for i in range(n)]) / 1000.0
        return edf.getSampleFrequency(0), edf.getSignalLabels(), signal


def _foreign_dicom(path):
    import pydicom

    ds = pydicom.dcmread(path)
    channels = ds.WaveformSequence[0].ChannelDefinitionSequence
    assert {c.ChannelSensitivityUnitsSequence[0].CodeValue for c in channels} == {"uV"}
    names = [c.ChannelSourceSequence[0].CodeMeaning for c in channels]
    # pydicom applies ChannelSensitivity, its correction factor and the baseline
    return float(ds.WaveformSequence[0].SamplingFrequency), names, ds.waveform_array(0).T / 1000.0


def _foreign_aecg(path):
    """HL7 v3 aECG: a GLIST_TS time sequence (increment in s) and per lead an SLIST_PQ whose
    values are origin + scale * digits."""
    ns = {"h": HL7_NS}
    fs, names, rows = None, [], []
    for sequence in ET.parse(path).getroot().iterfind(".//h:sequenceSet/h:component/h:sequence", ns):
        code, value = sequence.find("h:code", ns).get("code"), sequence.find("h:value", ns)
        if code == "TIME_ABSOLUTE":
            fs = 1.0 / float(value.find("h:increment", ns).get("value"))
            continue
        origin, scale = value.find("h:origin", ns), value.find("h:scale", ns)
        assert origin.get("unit") == scale.get("unit") == "uV"
        digits = np.array(value.findtext("h:digits", namespaces=ns).split(), dtype=np.float64)
        names.append(code.removeprefix("MDC_ECG_LEAD_"))
        rows.append((float(origin.get("value")) + float(scale.get("value")) * digits) / 1000.0)
    return fs, names, np.stack(rows)


def _foreign_muse(path):
    """GE MUSE XML: rate SampleBase * 10**SampleExponent; per lead base64 little-endian int16
    samples times LeadAmplitudeUnitsPerBit microvolts."""
    waveform = ET.parse(path).getroot().find("Waveform")
    assert waveform.findtext("WaveformType") == "Rhythm"
    fs = float(waveform.findtext("SampleBase")) * 10.0 ** int(waveform.findtext("SampleExponent"))
    names, rows = [], []
    for lead in waveform.iterfind("LeadData"):
        assert lead.findtext("LeadAmplitudeUnits") == "MICROVOLTS"
        raw = np.frombuffer(base64.b64decode(lead.findtext("WaveFormData")), dtype="<i2")
        names.append(lead.findtext("LeadID"))
        rows.append(raw * float(lead.findtext("LeadAmplitudeUnitsPerBit")) / 1000.0)
    return fs, names, np.stack(rows)


# (foreign decoder, output suffix, worst quantisation error in mV)
CONVERTED = {
    "wfdb": (_foreign_wfdb, ".hea", 0.0005),   # 16-bit over each lead's own range
    "edf": (_foreign_edf, ".edf", 0.0001),
    "dicom": (_foreign_dicom, ".dcm", 0.0005),
    "aecg": (_foreign_aecg, ".xml", 0.0005),
    "muse": (_foreign_muse, ".xml", 0.00244 + 1e-6),
}


@pytest.mark.parametrize("fmt", sorted(CONVERTED))
def test_convert_output_reads_in_a_foreign_reader(fmt, ptbxl_headers, tmp_path, capsys):
    decode, suffix, tolerance = CONVERTED[fmt]
    source = ptbxl_headers[0]  # PTB-XL record 1 as its own WFDB files
    rec = read_record(source)
    assert crema_main(["convert", str(source), "--to", fmt, "--out", str(tmp_path / "out")]) == 0
    path = tmp_path / "out" / f"{source.stem}{suffix}"
    assert capsys.readouterr().out.split() == [str(path)]
    fs, names, signal = decode(path)
    assert fs == rec.fs
    assert [_canonical([n.removeprefix("ECG ").removeprefix("Lead ")])[0] for n in names] == list(_canonical(rec.leads))
    assert signal.shape == rec.signal.shape
    error = np.abs(signal - rec.signal).max()
    assert error <= tolerance, f"{fmt}: max error {error * 1000:.3f} uV"
    assert np.abs(rec.signal).max() > 100 * tolerance  # the check is not vacuous
    # and crema reads its own output back to the same values
    assert np.abs(read_record(path).signal - signal).max() < 1e-6
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [f"{source.stem}.hea", f"{source.stem}.dat"] if fmt == "wfdb" else [path.name])


def test_convert_refuses_overwrites_and_name_clashes_and_skips_bad_records(ptbxl_headers, tmp_path, capsys):
    out = tmp_path / "out"
    first, second = ptbxl_headers[:2]
    assert crema_main(["convert", str(first), "--to", "edf", "--out", str(out)]) == 0
    before = (out / f"{first.stem}.edf").read_bytes()
    capsys.readouterr()
    folder = tmp_path / "records"  # a folder: every record in it
    folder.mkdir()
    for header in (first, second):
        for suffix in (".hea", ".dat"):
            shutil.copy(header.with_suffix(suffix), folder)
    assert crema_main(["convert", str(folder), "--to", "edf", "--out", str(out)]) == 1
    assert "already exists" in capsys.readouterr().err and not (out / f"{second.stem}.edf").exists()
    assert crema_main(["convert", str(tmp_path / "absent.hea"), "--to", "edf", "--out", str(out)]) == 1
    assert "absent.hea: no such file" in capsys.readouterr().err
    clash = tmp_path / "other" / first.name
    clash.parent.mkdir()
    for suffix in (".hea", ".dat"):
        shutil.copy(first.with_suffix(suffix), clash.parent)
    assert crema_main(["convert", str(first), str(clash), "--to", "edf", "--out", str(out), "--force"]) == 1
    assert "would both be written" in capsys.readouterr().err
    broken = tmp_path / "broken.xml"
    broken.write_text("<RestingECG>")
    code = crema_main(["convert", str(broken), str(second), "--to", "edf", "--out", str(out), "--force"])
    captured = capsys.readouterr()
    assert code == 1 and "broken.xml: not well-formed XML" in captured.err
    assert "1 of 2 record(s) not converted" in captured.err
    assert captured.out.split() == [str(out / f"{second.stem}.edf")]
    assert (out / f"{first.stem}.edf").read_bytes() == before  # untouched without --force
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{first.stem}.edf", f"{second.stem}.edf"])


def test_muse_stores_eight_leads_and_the_rest_are_derived(ptbxl_rec, tmp_path):
    path = tmp_path / "muse.xml"
    formats.write_muse_xml(ptbxl_rec, path)
    back = formats.read_muse_xml(path)
    assert back.leads == MUSE_INDEPENDENT_LEADS
    assert back.meta["age"] == 56 and back.meta["sex"] == "F"
    full, present = to_standard(back.signal, back.leads)
    original, _ = to_standard(ptbxl_rec.signal, ptbxl_rec.leads)
    assert present.all()
    # III, aVR, aVL, aVF rebuilt from I and II: quantisation plus PTB-XL's own rounding
    assert np.abs(full - original).max() < 0.006


def test_dicom_long_record_uses_general_ecg_iod(data_root, tmp_path):
    import pydicom

    rec = read_record(data_root / "cinc" / "ptb" / "S0001.hea")  # 1000 Hz, longer than 16384 samples
    assert rec.signal.shape[1] > 16384
    path = tmp_path / "long.dcm"
    formats.write_dicom_ecg(rec, path)
    assert pydicom.dcmread(path).SOPClassUID == DICOM_GENERAL_ECG_SOP
    back = formats.read_dicom_ecg(path)
    assert back.fs == 1000.0 and back.signal.shape == rec.signal.shape
    assert np.abs(back.signal - rec.signal).max() <= 0.0005 + 1e-6


def test_edf_awkward_length_is_exact_and_unwritable_length_is_padded(ptbxl_rec, tmp_path):
    odd = Recording(ptbxl_rec.signal[:, :4321], 500.0, ptbxl_rec.leads, "odd")
    formats.write_edf(odd, tmp_path / "odd.edf")
    assert formats.read_edf_ecg(tmp_path / "odd.edf").signal.shape == (12, 4321)
    prime_rate = Recording(ptbxl_rec.signal[:, :4321], 257.0, ptbxl_rec.leads, "p")
    with pytest.warns(UserWarning, match="padded 48 samples"):
        formats.write_edf(prime_rate, tmp_path / "p.edf")
    back = formats.read_edf_ecg(tmp_path / "p.edf")
    assert back.fs == 257.0 and back.signal.shape == (12, 4369)
    assert np.abs(back.signal[:, :4321] - prime_rate.signal).max() < 1e-4


def test_edf_drops_non_ecg_signals_and_reads_mv(ptbxl_rec, tmp_path):
    import pyedflib

    path = tmp_path / "mixed.edf"
    signals = [ptbxl_rec.signal[0].astype(np.float64), ptbxl_rec.signal[1] * 1000.0, np.linspace(-1, 1, 5000)]
    headers = [
        dict(label="EKG I", dimension="mV", sample_frequency=500, physical_max=5, physical_min=-5,
             digital_max=32767, digital_min=-32768, transducer="", prefilter=""),
        dict(label="II", dimension="uV", sample_frequency=500, physical_max=5000, physical_min=-5000,
             digital_max=32767, digital_min=-32768, transducer="", prefilter=""),
        dict(label="Resp", dimension="mV", sample_frequency=500, physical_max=5, physical_min=-5,
             digital_max=32767, digital_min=-32768, transducer="", prefilter=""),
    ]
    writer = pyedflib.EdfWriter(str(path), 3, file_type=pyedflib.FILETYPE_EDFPLUS)
    writer.setSignalHeaders(headers)
    writer.writeSamples(signals)
    writer.close()
    back = formats.read_edf_ecg(path)
    assert back.leads == ("I", "II")
    assert back.meta["dropped_leads"] == ["Resp"]
    assert np.abs(back.signal - ptbxl_rec.signal[:2]).max() < 0.001  # mV and uV both end in mV


# ----------------------------------------------------------------------------- refused variants

def _edit_xml(src, dst, edit) -> None:
    tree = ET.parse(src)
    edit(tree.getroot())
    tree.write(dst, encoding="utf-8", xml_declaration=True)


def _drop_aecg_sequence_sets(root):
    series = root.find(f"{H}component/{H}series")
    for component in series.findall(f"{H}component"):
        series.remove(component)


def _drop_aecg_increment(root):
    for value in root.iter(f"{H}value"):
        increment = value.find(f"{H}increment")
        if increment is not None:
            value.remove(increment)


def _muse_median_only(root):
    root.find("Waveform/WaveformType").text = "Median"


def _muse_wrong_count(root):
    root.find("Waveform/LeadData/LeadSampleCountTotal").text = "4999"


def _aecg_fahrenheit(root):
    root.find(f".//{H}scale").set("unit", "degF")


@pytest.mark.parametrize("writer, edit, problem", [
    ("aecg", _drop_aecg_sequence_sets, "no sequenceSet"),
    ("aecg", _drop_aecg_increment, "no increment"),
    ("aecg", _aecg_fahrenheit, "not a voltage"),
    ("muse", _muse_median_only, "no Rhythm waveform"),
    ("muse", _muse_wrong_count, "declares 4999 samples but holds 5000"),
])
def test_xml_variants_are_refused_with_the_file_and_problem(writer, edit, problem, ptbxl_rec, tmp_path):
    good, bad = tmp_path / "good.xml", tmp_path / "bad.xml"
    (formats.write_aecg if writer == "aecg" else formats.write_muse_xml)(ptbxl_rec, good)
    _edit_xml(good, bad, edit)
    with pytest.raises(ReadError, match=problem) as info:
        formats.read_xml_ecg(bad)
    assert str(bad) in str(info.value)


def test_xml_of_another_kind_and_broken_xml_are_refused(tmp_path):
    other = tmp_path / "other.xml"
    other.write_text("<?xml version='1.0'?><catalog><book/></catalog>")
    with pytest.raises(ReadError, match="neither an HL7 aECG"):
        formats.read_xml_ecg(other)
    broken = tmp_path / "broken.xml"
    broken.write_text("<RestingECG><Waveform>")
    with pytest.raises(ReadError, match="not well-formed XML"):
        read_record(broken)


def test_dicom_without_waveform_is_refused(tmp_path):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # secondary capture image
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID, "OT"
    path = tmp_path / "image.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ReadError, match="no WaveformSequence") as info:
        formats.read_dicom_ecg(path)
    assert str(path) in str(info.value)


def test_dicom_non_voltage_channel_is_refused(ptbxl_rec, tmp_path):
    import pydicom

    path = tmp_path / "pressure.dcm"
    formats.write_dicom_ecg(ptbxl_rec, path)
    ds = pydicom.dcmread(path)
    ds.WaveformSequence[0].ChannelDefinitionSequence[0].ChannelSensitivityUnitsSequence[0].CodeValue = "mm[Hg]"
    ds.save_as(path)
    with pytest.raises(ReadError, match="not a voltage"):
        formats.read_dicom_ecg(path)


def test_edf_non_voltage_unit_is_refused(tmp_path):
    import pyedflib

    path = tmp_path / "temp.edf"
    writer = pyedflib.EdfWriter(str(path), 1, file_type=pyedflib.FILETYPE_EDFPLUS)
    writer.setSignalHeaders([dict(label="ECG I", dimension="degC", sample_frequency=100, physical_max=50,
                                  physical_min=-50, digital_max=32767, digital_min=-32768,
                                  transducer="", prefilter="")])
    writer.writeSamples([np.zeros(1000)])
    writer.close()
    with pytest.raises(ReadError, match="'degC', which is not a voltage") as info:
        formats.read_edf_ecg(path)
    assert str(path) in str(info.value)


def test_non_edf_and_missing_files_are_refused(tmp_path):
    fake = tmp_path / "fake.edf"
    fake.write_bytes(b"0" * 300)
    with pytest.raises(ReadError, match="not a readable EDF"):
        formats.read_edf_ecg(fake)
    with pytest.raises(ReadError, match="file not found"):
        formats.read_dicom_ecg(tmp_path / "absent.dcm")


def test_writers_refuse_nan(ptbxl_rec, tmp_path):
    signal = ptbxl_rec.signal.copy()
    signal[3, 100] = np.nan
    bad = Recording(signal, 500.0, ptbxl_rec.leads, "nan")
    for writer, name in ((formats.write_aecg, "a.xml"), (formats.write_dicom_ecg, "a.dcm"),
                         (formats.write_edf, "a.edf")):
        with pytest.raises(ReadError, match="NaN"):
            writer(bad, tmp_path / name)
        assert not (tmp_path / name).exists()


def test_muse_base64_payload_is_little_endian_int16(ptbxl_rec, tmp_path):
    path = tmp_path / "m.xml"
    formats.write_muse_xml(ptbxl_rec, path)
    lead = ET.parse(path).getroot().find("Waveform/LeadData")
    raw = np.frombuffer(base64.b64decode(lead.findtext("WaveFormData")), dtype="<i2")
    per_bit_uv = float(lead.findtext("LeadAmplitudeUnitsPerBit"))
    assert lead.findtext("LeadID") == "I" and raw.size == 5000
    assert np.allclose(raw * per_bit_uv / 1000.0, ptbxl_rec.signal[0], atol=per_bit_uv / 2000 + 1e-6)


def test_dicom_waveform_missing_a_required_field_is_refused(ptbxl_rec, tmp_path):
    import pydicom

    path = tmp_path / "no_rate.dcm"
    formats.write_dicom_ecg(ptbxl_rec, path)
    ds = pydicom.dcmread(path)
    del ds.WaveformSequence[0].SamplingFrequency
    ds.save_as(path)
    with pytest.raises(ReadError, match="lacks SamplingFrequency"):
        formats.read_dicom_ecg(path)
