"""ECG file formats, one module each. :func:`crema.data.readers.read_record` picks the module
by the file; the clinical formats (HL7 aECG XML, GE MUSE XML, DICOM 12-lead waveforms, EDF/EDF+)
are also exported here, with their writers.

Each clinical ``read_*`` function returns a :class:`~crema.data.recording.Recording` (float32
millivolts, lead names in CREMA's spelling, ``record_id`` = the file stem) and raises
:class:`~crema.errors.ReadError` naming the file and the problem for anything it cannot read.
Leads that are not ECG leads CREMA knows (e.g. respiration, V7, Frank X/Y/Z) are dropped and
listed in ``meta["dropped_leads"]``. A GE MUSE file usually stores only the 8 independent leads
(I, II, V1-V6); they are returned as they are, since :func:`crema.data.leads.to_standard`
rebuilds III, aVR, aVL and aVF downstream.

Each ``write_*`` function writes a :class:`Recording` in that format, atomically, so that users
can export ECGs and so that tests can build a file of every format from a real recording.

Modules (each docstring says what is read and what is refused):

- :mod:`.aecg` HL7 aECG XML, :mod:`.muse` GE MUSE XML, :mod:`.xml_ecg` (an ``.xml`` of either
  kind), :mod:`.dicom` DICOM waveforms, :mod:`.edf` EDF/EDF+; :mod:`.common` what they share;
- :mod:`.wfdb` WFDB records (``.hea``), with :mod:`.wfdb_header` (the header as text),
  :mod:`.wfdb_fast` (the fast path for the common layout) and :mod:`.cinc_mat` (the CinC ``.mat``
  fallback for headers ``wfdb`` refuses);
- :mod:`.cpsc` the original CPSC-2018 ``.mat`` struct; :mod:`.arrays` one record as a plain
  ``.npy``/``.npz``/``.csv`` array, and the lead-axis rules shared with stacks and the API.
- :mod:`.hdf5` an HDF5 dataset read only from its own file, its declared storage checked (what
  :mod:`crema.data.stacks` reads HDF5 stacks through).
"""
from __future__ import annotations

from .aecg import read_aecg, write_aecg
from .dicom import read_dicom_ecg, write_dicom_ecg
from .edf import read_edf_ecg, write_edf
from .muse import read_muse_xml, write_muse_xml
from .xml_ecg import read_xml_ecg

__all__ = ["read_aecg", "read_dicom_ecg", "read_edf_ecg", "read_muse_xml", "read_xml_ecg",
           "write_aecg", "write_dicom_ecg", "write_edf", "write_muse_xml"]
