"""Uploads are data, never paths: each uploaded file is written under a sanitised name
(:func:`upload_name`) to a private temporary folder, at most ``limits.UPLOAD_BYTES`` in all, and read
by the library's readers, which read a record only from beside the file named (a WFDB header naming
a signal file by a path is refused, as are HDF5 data stored in other files) and check declared and
decompressed sizes against :mod:`crema.limits` before they allocate. What goes wrong is one
:class:`UploadError` line that names files as they were uploaded, never the private folder.
"""
from __future__ import annotations

import io
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Sequence

from .. import limits
from ..data.corpus import is_corpus
from ..data.stacks import RecordStack, is_stack
from ..errors import CremaError, printable
from ..use.inputs import check_fs, collect_inputs

MAX_UPLOAD_FILES = 8        # a WFDB record is two or three files; more is not one ECG
MAX_NAME_BYTES = 200        # of an upload's name on disk (file systems allow 255)
MAX_SHOWN_NAME = 120        # characters of a name shown back to the user
MAX_MESSAGE = 500           # characters of an error message
COPY_CHUNK = 2**20          # bytes copied at a time from an upload to its file
UNSAFE_NAME_CHARS = re.compile(r"[/\\*?\[\]]")   # folder separators and glob characters

log = logging.getLogger(__name__)


class UploadError(CremaError):
    """An upload the viewer cannot show; the message (one line) is shown to the user as it is;
    ``status`` is the HTTP status the viewer answers it with."""

    status = 400


class UploadTooLarge(UploadError, limits.LimitError):
    """An upload over a limit of :mod:`crema.limits` (or over the memory the server has)."""

    status = 413


class UploadUnusable(UploadError):
    """An upload that failed in a way no reader describes (a ``ValueError`` from a library)."""

    status = 422


@dataclass(frozen=True)
class UploadName:
    """An uploaded file's name: ``disk``, the name its bytes are written under (no folder parts,
    control or glob characters, not hidden, at most MAX_NAME_BYTES of UTF-8), and ``shown``,
    the name as the user gave it, printable and shortened, for messages and the page."""

    disk: str
    shown: str


def upload_name(raw: str) -> UploadName:
    """The :class:`UploadName` of a file uploaded as ``raw`` (the part after its last ``/``: a
    browser sends the name alone, another client may send a path; a ``\\`` is a character of the
    name, as on the server's file system, and becomes ``_`` on disk)."""
    base = raw.rpartition("/")[2]
    shown = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in printable(base))
    if len(shown) > MAX_SHOWN_NAME:
        shown = shown[:MAX_SHOWN_NAME - 23] + "..." + shown[-20:]
    disk = "".join("_" if UNSAFE_NAME_CHARS.match(ch) or not ch.isprintable() else ch for ch in base)
    if disk.startswith("."):        # hidden files are skipped by the record finder
        disk = "_" + disk
    stem, dot, suffix = disk.rpartition(".")
    if not (dot and stem and suffix) or len(suffix) > 10:
        stem, suffix = disk, ""
    suffix = "." + suffix if suffix else ""
    while stem and len((stem + suffix).encode("utf-8")) > MAX_NAME_BYTES:
        stem = stem[:-1]
    return UploadName(disk=(stem or "unnamed") + suffix, shown=shown or "(no name)")


def read_upload(folder: Path, files: Sequence[tuple[str, bytes | BinaryIO]], fs, leads,
                names: dict[str, str]) -> tuple:
    """Write the uploaded ``files`` into ``folder`` (``names``: disk name -> shown name, filled
    as they are written) and read the one record they hold: ``(what its input item loads, its
    source)``.

    Raises:
        UploadError: no file, too many, two of one name, a corpus, no record or several.
    """
    if not files:
        raise UploadError("no file uploaded")
    if len(files) > MAX_UPLOAD_FILES:
        raise UploadError(f"{len(files)} files uploaded; drop one ECG (a WFDB record is its .hea with "
                          "its .dat or .mat)")
    written = 0
    for raw, content in files:
        name = upload_name(raw)
        if name.disk in names:
            raise UploadError(f"two uploaded files are both named {name.shown}")
        names[name.disk] = name.shown
        written += _write_upload(content, folder / name.disk, written)
    if is_corpus(folder):
        raise UploadError("the upload is a prepared corpus; the viewer shows one ECG file")
    _check_one_record_per_stack(folder, names, fs, leads)
    items = collect_inputs(folder, fs, leads)
    if not items:
        raise UploadError(f"no ECG record in {', '.join(names.values())} (a WFDB record "
                          "needs its .hea and its .dat or .mat, dropped together)")
    if len(items) > 1:
        raise UploadError(f"the upload holds {len(items)} records; the viewer shows one ECG at a time")
    return items[0].load(), items[0].source


def _write_upload(content: bytes | BinaryIO, target: Path, before: int) -> int:
    """Copy ``content`` to ``target`` a chunk at a time; its size in bytes.

    Raises:
        LimitError: ``before`` (bytes already written) plus this file exceed ``limits.UPLOAD_BYTES``.
    """
    source = io.BytesIO(content) if isinstance(content, (bytes, bytearray, memoryview)) else content
    written = 0
    with open(target, "xb") as out:
        while chunk := source.read(COPY_CHUNK):
            written += len(chunk)
            limits.UPLOAD_BYTES.check(before + written, "the upload")
            out.write(chunk)
    return written


def _check_one_record_per_stack(folder: Path, names: dict[str, str], fs, leads) -> None:
    """Refuse a stack of several records from its declared shape, before one item per row is
    listed (a 1 kB ``.npy`` may declare millions of rows)."""
    for disk, shown in names.items():
        if not is_stack(folder / disk):
            continue
        stack = RecordStack(folder / disk, fs=None if fs is None else check_fs(fs), leads=leads)
        try:
            if len(stack) != 1:
                raise UploadError(f"{shown} holds {len(stack)} records; the viewer shows one ECG at a time")
        finally:
            stack.close()


def scrubbed(text: str, folder: Path, names: dict[str, str]) -> str:
    """``text`` with the private folder left out and each file named as it was uploaded."""
    text = text.replace(f"{folder}{os.sep}", "").replace(str(folder), "the upload")
    for disk, shown in names.items():
        if disk != shown:
            text = text.replace(disk, shown)
    return text


def upload_error(exc: BaseException, folder: Path, names: dict[str, str]) -> UploadError:
    """The :class:`UploadError` (one line, no server path) for what reading or analysing raised."""
    uploaded = ", ".join(names.values()) or "the upload"
    if isinstance(exc, MemoryError):
        return UploadTooLarge(f"{uploaded}: too large to analyse in the memory this server has")
    lines = [line for line in scrubbed(str(exc), folder, names).splitlines() if line.strip()]
    text = (lines[0] if lines else type(exc).__name__)[:MAX_MESSAGE]
    if isinstance(exc, limits.LimitError):
        return UploadTooLarge(text)
    if isinstance(exc, CremaError):
        return type(exc)(text) if isinstance(exc, UploadError) else UploadError(text)
    # a ValueError no reader turned into a message: say so in one line, keep the details here
    log.warning("crema serve: %s raised %s", uploaded, type(exc).__name__, exc_info=exc)
    return UploadUnusable(f"{uploaded}: cannot be analysed ({text})")
