"""A PhysioNet/CinC record whose signals are a MATLAB ``val`` array, read without ``wfdb``: the
fallback for the headers ``wfdb`` refuses."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import ReadError
from ..recording import Recording
from ..units import mv_per_unit
from .wfdb_header import parse_comments, parse_header


def read_cinc_mat(header: Path, parsed: dict | None = None) -> Recording:
    """A PhysioNet/CinC record read without ``wfdb``: header parsed here, ``val`` (n_sig x N ADC
    units) from the ``.mat``, physical = (val - baseline) / gain."""
    from scipy.io import loadmat

    parsed = parsed or parse_header(header)
    mat_path = header.parent / parsed["signals"][0]["file"]
    if not mat_path.exists():
        mat_path = header.with_suffix(".mat")
    try:
        val = loadmat(str(mat_path))["val"]
    except KeyError:
        raise ReadError(mat_path, "MATLAB file has no 'val' array") from None
    except Exception as exc:
        raise ReadError(mat_path, f"cannot read MATLAB file: {exc}") from None
    val = np.asarray(val, dtype=np.float64)
    n_sig, sig_len = parsed["n_sig"], parsed["sig_len"]
    if val.shape != (n_sig, sig_len):
        raise ReadError(mat_path, f"'val' has shape {val.shape} but the header ({header.name}) "
                                  f"declares {n_sig} signals x {sig_len} samples")
    sigs = parsed["signals"]
    baseline = np.array([s["baseline"] for s in sigs], dtype=np.float64)[:, None]
    gain = np.array([s["gain"] for s in sigs], dtype=np.float64)[:, None]
    scale = np.array([mv_per_unit(s["units"] or "mV", header, "a signal") for s in sigs], dtype=np.float64)[:, None]
    signal = (val - baseline) / gain * scale
    return Recording(signal=signal, fs=parsed["fs"], leads=tuple(s["name"] for s in sigs),
                     record_id=header.stem, meta=parse_comments(parsed["comments"]))
