"""Atomic file writes: a temporary file beside the target, renamed onto it only when complete.

Readers (and a crashed or interrupted writer) never see half a file, and every output gets the
ordinary permissions of a new file (``tempfile.mkstemp`` alone would leave it owner-only). An
``OSError`` while writing (full disk, no permission) becomes a :class:`~crema.errors.WriteError`
that names the file the user asked for rather than the temporary one.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import WriteError, printable


def default_file_mode() -> int:
    """The mode ``open()`` would give a new file under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path`` (same suffix, so writers that go by the
    suffix pick the right format); when the block succeeds, give it ordinary permissions and
    rename it onto ``path``; in any case leave no temporary file behind.

    Raises:
        WriteError: an ``OSError`` in the block or in the rename, named after ``path``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
        os.close(fd)
    except OSError as exc:
        raise WriteError(path, exc) from None
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except WriteError:
        raise
    except OSError as exc:
        raise WriteError(path, exc) from None
    finally:
        tmp.unlink(missing_ok=True)


def make_parent(path: str | os.PathLike) -> None:
    """Create the folder ``path`` goes in; a :class:`WriteError` naming ``path`` if it cannot."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(path, exc) from None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically, as UTF-8 (whatever the locale). A file name that is
    not valid UTF-8 inside ``text`` is written with ``\\xNN`` escapes instead of failing."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(printable(text).encode("utf-8"))


def replace_directory(tmp: str | os.PathLike, out: str | os.PathLike) -> None:
    """Rename the finished folder ``tmp`` to ``out``. A folder already at ``out`` is first renamed
    aside and deleted only once ``tmp`` is in place, so ``out`` is always old or new, never a mix."""
    tmp, out = Path(tmp), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists():
        os.rename(tmp, out)
        return
    old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(out, old)
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
