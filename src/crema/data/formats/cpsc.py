"""The original CPSC 2018 MATLAB file (a ``.mat`` with no ``.hea`` beside it)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...config import STANDARD_LEADS
from ...errors import ReadError
from ...limits import RECORD_BYTES
from ..recording import Recording
from .common import parse_age, parse_sex
from .matlab import check_mat

# CPSC 2018 originals and the CinC challenge data are all at this rate.
CPSC_FS = 500.0


def read_cpsc_struct(path: Path) -> Recording:
    """The original CPSC 2018 MATLAB file: struct ``ECG`` with ``sex``, ``age`` and
    ``data`` (12 x N, mV, 500 Hz, standard lead order)."""
    from scipy.io import loadmat

    check_mat(path)  # a compressed file may expand to gigabytes: refused before loadmat inflates it
    try:
        mat = loadmat(str(path))
    except Exception as exc:
        raise ReadError(path, f"cannot read MATLAB file: {exc}") from None
    if "ECG" not in mat:
        if "val" in mat:
            raise ReadError(path, "a CinC .mat needs its .hea header beside it")
        keys = [k for k in mat if not k.startswith("__")]
        raise ReadError(path, f"MATLAB file holds neither an 'ECG' struct nor 'val' (keys: {keys})")
    ecg = mat["ECG"]
    try:
        fields = {name: ecg[name][0, 0] for name in ecg.dtype.names}
        data = np.asarray(fields["data"])
    except (KeyError, TypeError, IndexError, ValueError):
        raise ReadError(path, "'ECG' struct has no 'data' field") from None
    RECORD_BYTES.check(data.size * 4, f"{path}: 'ECG.data' of shape {data.shape}")
    try:
        data = np.asarray(data, dtype=np.float64)
    except (TypeError, ValueError):
        raise ReadError(path, f"'ECG.data' holds {data.dtype} values, not numbers") from None
    if data.ndim != 2 or data.shape[0] != len(STANDARD_LEADS):
        raise ReadError(path, f"'ECG.data' has shape {data.shape}, expected (12, N)")
    sex = fields.get("sex")
    sex = parse_sex(np.asarray(sex).ravel()[0]) if sex is not None and np.asarray(sex).size else None
    age = fields.get("age")
    age = parse_age(age) if age is not None and np.asarray(age).size else None
    return Recording(signal=data, fs=CPSC_FS, leads=STANDARD_LEADS, record_id=path.stem,
                     meta={"age": age, "sex": sex})
