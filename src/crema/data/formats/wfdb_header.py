"""The WFDB header (``.hea``) read as text, without the ``wfdb`` library: the record line, one
line per signal, and the ``#`` comment lines where PhysioNet/CinC records keep age, sex and
``Dx`` codes. The WFDB reader checks signal files against it, and the CinC ``.mat`` reader reads
by it when ``wfdb`` refuses a header.

A header is text anyone can write, and it names the files that hold the record's samples: those
names are the one way a WFDB record could make CREMA read a file the user never gave it
(``/some/where/patient.mat``, ``../x.dat``). :func:`parse_header` accepts only bare file names,
and every reader opens a signal file through :func:`signal_file`, which also refuses a link that
leads out of the header's folder; the refusal says nothing about the file named (whether it
exists, its size)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable

from ...errors import ReadError, is_utf8_name, printable
from ...limits import TEXT_BYTES
from ..rates import rate_problem
from .common import parse_age, parse_sex


def parse_header(header: Path) -> dict:
    """The fields of a WFDB header the readers need, parsed without ``wfdb``.

    Returns a dict with ``n_sig``, ``fs``, ``sig_len``, ``comments`` (list of str) and
    ``signals``: a list of dicts ``file, fmt, offset, gain, baseline, units, name``.
    """
    try:
        TEXT_BYTES.check(header.stat().st_size, str(header))
        # surrogateescape keeps bytes that are not UTF-8, so that a file name in the header still
        # names the file on disk (errors="replace" would turn it into a name that does not exist)
        lines = header.read_bytes().decode("utf-8", "surrogateescape").splitlines()
    except OSError as exc:
        raise ReadError(header, f"cannot read the header: {exc}") from None
    comments = [ln.lstrip("#").strip() for ln in lines if ln.startswith("#")]
    body = [ln.split() for ln in lines if ln.strip() and not ln.startswith("#")]
    if not body:
        raise ReadError(header, "empty WFDB header")
    record_line = body[0]
    try:
        n_sig = int(record_line[1])
        fs = float(record_line[2].split("/")[0]) if len(record_line) > 2 else 250.0
        sig_len = int(record_line[3]) if len(record_line) > 3 else None
    except (IndexError, ValueError):
        raise ReadError(header, f"bad record line {' '.join(record_line)!r}") from None
    if n_sig <= 0:
        raise ReadError(header, "header declares no signals")
    problem = rate_problem(record_line[2].split("/")[0]) if len(record_line) > 2 else None
    if problem:
        raise ReadError(header, f"header's {problem}")
    if len(body) - 1 < n_sig:
        raise ReadError(header, f"header declares {n_sig} signals but describes {len(body) - 1}")
    signals = [_parse_signal_line(header, fields) for fields in body[1:1 + n_sig]]
    for name in [record_line[0]] + [s["file"] for s in signals]:
        if not is_utf8_name(name):
            raise ReadError(header, f"the header names '{printable(name)}', which is not valid UTF-8; "
                                    "rename the files and the names in the header")
    if "/" in record_line[0]:
        raise ReadError(header, f"multi-segment WFDB records ({printable(record_line[0])}) are not supported")
    for sig in signals:
        _require_bare_name(header, sig["file"])
    return dict(n_sig=n_sig, fs=fs, sig_len=sig_len, comments=comments, signals=signals)


def signal_file(header: Path, name: str) -> Path:
    """The signal file ``name`` of ``header``: beside it, named without a folder, and, when it is a
    link, leading to a file in the same folder (what the link points at is never looked at more)."""
    _require_bare_name(header, name)
    path = header.parent / name
    try:
        if not path.is_symlink():  # a bare name that is no link lies in the header's folder
            return path
        inside = path.resolve().parent == header.parent.resolve()
    except (OSError, RuntimeError, ValueError):  # a link loop
        inside = False
    if not inside:
        raise ReadError(header, f"its signal file {printable(name)} is a link leading out of the header's "
                                "folder; a record's signal files must lie beside its header")
    return path


def _require_bare_name(header: Path, name: str) -> None:
    """Refuse a signal file name with a folder part (absolute, ``..``, ``/`` or ``\\``)."""
    if not name or name in (".", "..") or any(ch in name for ch in "/\\\0"):
        raise ReadError(header, f"the header names its signal file by a path ('{printable(name)}'); a record's "
                                "signal files must lie beside its header, named without a folder")


def _parse_signal_line(header: Path, fields: list[str]) -> dict:
    try:
        fmt_field = fields[1]
        fmt = re.split(r"[x:+]", fmt_field)[0]
        offset = int(fmt_field.split("+")[1]) if "+" in fmt_field else 0
        gain_field = fields[2] if len(fields) > 2 else "200"
        match = re.match(r"^([-+0-9.eE]+)(?:\(([-0-9]+)\))?(?:/(\S+))?$", gain_field)
        if not match:
            raise ValueError(gain_field)
        gain = float(match.group(1)) or 200.0  # WFDB: a gain of 0 means the default 200
        units = match.group(3) or "mV"
        adc_zero = int(fields[4]) if len(fields) > 4 else 0
        baseline = int(match.group(2)) if match.group(2) is not None else adc_zero
        name = " ".join(fields[8:]) if len(fields) > 8 else ""
    except (IndexError, ValueError):
        raise ReadError(header, f"bad signal line {' '.join(fields)!r}") from None
    return dict(file=fields[0], fmt=fmt, offset=offset, gain=gain, baseline=baseline,
                units=units, name=name)


def parse_comments(comments: Iterable[str]) -> dict:
    """``age``, ``sex`` and CinC ``dx`` codes from header comment lines (any case, with or
    without a space after ``#``); unknown values become None."""
    meta: dict = {"age": None, "sex": None}
    for line in comments:
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key == "age":
            meta["age"] = parse_age(value)
        elif key == "sex":
            meta["sex"] = parse_sex(value)
        elif key == "dx":
            meta["dx"] = [code.strip() for code in value.split(",") if code.strip()]
    return meta
