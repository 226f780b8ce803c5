"""The exceptions CREMA raises for bad input: one clear message naming the file and the problem."""
from __future__ import annotations

import errno
import os


class CremaError(Exception):
    """Base class for every error CREMA raises on purpose."""


class ReadError(CremaError, ValueError):
    """A file could not be read as an ECG; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(f"{printable(self.path)}: {problem}" if self.path else problem)


class PreprocessError(CremaError, ValueError):
    """A recording cannot be turned into model input (too short, all leads missing, bad rate)."""


class CheckpointError(CremaError, ValueError):
    """A checkpoint folder is missing files or does not match the code."""


class ConfigError(CremaError, ValueError):
    """A configuration value has the wrong type or lies outside its range; the message names
    the field (``preprocess.fs``) and, where known, the file."""


class WriteError(CremaError, OSError):
    """An output could not be written (full disk, no permission, a file where a folder should
    be); the message names the output the user asked for, never a temporary name."""

    def __init__(self, path: str | os.PathLike, exc: OSError):
        self.path = str(path)
        super().__init__(exc.errno, describe_write_error(path, exc))

    def __str__(self) -> str:
        return self.strerror


# Short writes from numpy's tofile ("960000 requested and 440256 written") carry no errno; they
# happen when the device or quota is full, which is what the user needs to hear.
_SHORT_WRITE = "requested and"
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


def describe_write_error(path: str | os.PathLike | None, exc: OSError) -> str:
    """``no space left on device: PATH`` or ``cannot write PATH: reason`` for an OSError that hit
    while writing ``path`` (the error's own file name when ``path`` is None)."""
    where = printable(str(path if path is not None else (exc.filename or "output")))
    if exc.errno in _NO_SPACE or (exc.errno is None and _SHORT_WRITE in str(exc)):
        detail = exc.strerror or str(exc)
        return f"no space left on device: {where} ({detail})"
    blocker = exc.filename and os.path.isfile(exc.filename)
    if exc.errno == errno.ENOTDIR or (exc.errno == errno.EEXIST and blocker):
        # mkdir's own words ("File exists", "Not a directory") do not say which file is in the way
        return f"cannot write {where}: a file is in the way ({printable(os.fsdecode(exc.filename))} is not a folder)"
    return f"cannot write {where}: {exc.strerror or exc}"


def printable(text: str | None) -> str:
    """``text`` with bytes of a file name that are not valid UTF-8 shown as ``\\xNN``.

    Python keeps such bytes as lone surrogates (``surrogateescape``), which cannot be printed to a
    UTF-8 terminal or written to a UTF-8 file; every message and output file goes through here.
    """
    if text is None:
        return ""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # surrogates that did not come from a file name
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def is_utf8_name(path: str | os.PathLike) -> bool:
    """True when ``path`` decodes as UTF-8 (holds no surrogate-escaped bytes)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def install_hint(extra: str) -> str:
    """How to install one of the package's optional extras (``serve``, ``formats``, ``onnx``,
    ``parquet``): CREMA is installed from a clone, not from a package index."""
    return f"from the CREMA clone, pip install -e '.[{extra}]'"
