"""An ``.xml`` ECG of either kind CREMA reads, told apart by its root element."""
from __future__ import annotations

from ...errors import ReadError
from ..recording import Recording
from .aecg import ROOT_TAG as AECG_ROOT, read_aecg_root
from .common import PathLike, parse_xml
from .muse import read_muse_root


def read_xml_ecg(path: PathLike) -> Recording:
    """Read an ECG XML file, telling HL7 aECG from GE MUSE by its root element.

    Returns:
        :class:`Recording` with ``signal (n_leads, T)`` float32 mV.
    """
    root = parse_xml(path)
    if root.tag == AECG_ROOT:
        return read_aecg_root(root, path)
    if root.tag == "RestingECG":
        return read_muse_root(root, path)
    raise ReadError(path, f"XML root element {root.tag!r} is neither an HL7 aECG "
                    "(AnnotatedECG in urn:hl7-org:v3) nor a GE MUSE RestingECG")
