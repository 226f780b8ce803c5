"""A PhysioNet/CinC record whose signals are a MATLAB ``val`` array, read without ``wfdb``: the
fallback for the headers ``wfdb`` refuses."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import ReadError
from ...limits import RECORD_BYTES
from ..recording import Recording
from ..units import mv_per_unit
from .matlab import check_mat
from .wfdb_header import parse_comments, parse_header, signal_file


def read_cinc_mat(header: Path, parsed: dict | None = None) -> Recording:
    """A PhysioNet/CinC record read without ``wfdb``: header parsed here, ``val`` (n_sig x N ADC
    units) from the ``.mat``, physical = (val - baseline) / gain."""
    from scipy.io import loadmat

    parsed = parsed or parse_header(header)
    mat_path = signal_file(header, parsed["signals"][0]["file"])
    if not mat_path.exists():
        mat_path = signal_file(header, header.with_suffix(".mat").name)
    n_sig, sig_len = parsed["n_sig"], parsed["sig_len"]
    RECORD_BYTES.check(n_sig * (sig_len or 0) * 4, f"{header}: {n_sig} signals x {sig_len} samples")
    _check_val_shape(mat_path, header, (n_sig, sig_len))
    try:
        val = loadmat(str(mat_path), variable_names=["val"])["val"]
    except KeyError:
        raise ReadError(mat_path, "MATLAB file has no 'val' array") from None
    except Exception as exc:
        raise ReadError(mat_path, f"cannot read MATLAB file: {exc}") from None
    val = np.asarray(val, dtype=np.float64)
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


def _check_val_shape(mat_path: Path, header: Path, expected: tuple) -> None:
    """Refuse, before ``loadmat`` reads it, a ``val`` whose declared shape is not the header's
    (a small compressed file may declare gigabytes), or a file that would inflate too far."""
    from scipy.io import whosmat

    try:
        shapes = {name: shape for name, shape, _ in whosmat(str(mat_path))}
    except Exception:  # not a MATLAB file: loadmat reports it
        return
    if "val" in shapes and tuple(shapes["val"]) != tuple(expected):
        raise ReadError(mat_path, f"'val' has shape {tuple(shapes['val'])} but the header ({header.name}) "
                                  f"declares {expected[0]} signals x {expected[1]} samples")
    check_mat(mat_path)
