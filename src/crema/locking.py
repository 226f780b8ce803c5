"""A lock on an output, so that two runs never write the same output at the same time.

The lock is an ``flock`` on a hidden file beside the output (``.NAME.lock``). The kernel drops it
when its process ends, however it ends, so a killed run never leaves a stale lock behind; the
file itself is removed when the lock is released. Where ``fcntl`` does not exist (Windows) the
lock is a no-op.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import CremaError, WriteError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on POSIX
    fcntl = None  # type: ignore[assignment]

# A holder may remove the lock file just after we opened it; opening again a few times is enough.
_ATTEMPTS = 5


class BusyError(CremaError):
    """Another process is writing the same output."""


@contextmanager
def output_lock(target: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold the lock of ``target`` for the block.

    Args:
        target: the output (a file or folder) about to be written.
        what: who writes it, for the message (``crema prepare``).

    Raises:
        BusyError: another process holds the lock (the message names it and its pid).
        WriteError: the lock file cannot be created (the output's folder is not writable).
    """
    if fcntl is None:
        yield
        return
    target = Path(target)
    lock_path = target.parent / f".{target.name}.lock"
    fd = _acquire(lock_path, target, what)
    try:
        yield
    finally:
        # Removed while still held: whoever opens the path next makes a fresh file.
        lock_path.unlink(missing_ok=True)
        os.close(fd)


def _acquire(lock_path: Path, target: Path, what: str) -> int:
    for _ in range(_ATTEMPTS):
        try:
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise WriteError(target, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            raise BusyError(f"{target}: another {what} is writing it right now"
                            + (f" (process {holder})" if holder else "")
                            + "; wait for it to finish or choose another output") from None
        if _still_named(fd, lock_path):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)  # the previous holder removed this file as it finished: open the new one
    raise BusyError(f"{target}: could not take the lock {lock_path}; another {what} keeps "
                    "starting and stopping on it")


def _still_named(fd: int, path: Path) -> bool:
    """True when ``path`` is still the file open as ``fd``."""
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)


def _read_pid(fd: int) -> str:
    try:
        return os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
