"""Rows of a corpus's ``signals.npy`` read a batch at a time, for training streams.

A corpus holds float16 windows ``(N, 12, window)``: 60 kB a row at 12 x 2500. Training reads
rows in random order, and a memmap serves that badly once the corpus is larger than the page
cache: a fault on a cold page reads ahead around it (about 3 MB per 60 kB window was measured
on a 12 GB corpus), and with ``madvise(MADV_RANDOM)`` it reads one 4 kB page per fault, one
fault after another. :class:`RowReader` instead reads each row with one ``pread`` on a file
opened with ``posix_fadvise(POSIX_FADV_RANDOM)``, so the kernel reads that row and nothing else,
in ascending file order within a batch. Rows already in the page cache are copied at once
(``RWF_NOWAIT``); the others are read by several threads together, so the disk sees several
requests at a time instead of one. :meth:`RowReader.advise` starts reading the rows of a batch
to come (a loader advises the next batch while this one is made).
"""
from __future__ import annotations

import mmap
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..errors import CremaError

# Threads that read the rows of a batch missing from the page cache: enough requests in flight
# to keep a disk or network volume busy, few enough to cost nothing when the cache holds all.
READ_THREADS = 16

_NOWAIT = getattr(os, "RWF_NOWAIT", 0)
_RANDOM_ADVICE = getattr(os, "POSIX_FADV_RANDOM", None)
_WILLNEED = getattr(os, "POSIX_FADV_WILLNEED", None)


def open_signals(path: str | os.PathLike) -> np.ndarray:
    """A read-only memory map of ``signals.npy`` ``(N, 12, window)`` advised for random access
    (``MADV_RANDOM``: a fault reads its page, not megabytes around it); the same values as
    ``np.load(path, mmap_mode="r")``, its header and size checked as :class:`RowReader` does."""
    path = Path(path)
    shape, dtype, offset = _npy_layout(path)
    if int(np.prod(shape, dtype=np.int64)) == 0:
        return np.empty(shape, dtype)  # (mmap cannot map an empty range)
    with open(path, "rb") as fh:
        mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    if hasattr(mapped, "madvise") and hasattr(mmap, "MADV_RANDOM"):
        mapped.madvise(mmap.MADV_RANDOM)
    return np.ndarray(shape, dtype=dtype, buffer=mapped, offset=offset)  # keeps the map open


def _npy_layout(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """``(shape, dtype, data offset)`` of a C-ordered ``.npy`` file holding all its data;
    :class:`CremaError` otherwise."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f"format version {version}")
            shape, fortran, dtype = read_header(fh)
            offset = fh.tell()
    except (OSError, ValueError, EOFError) as exc:
        raise CremaError(f"{path}: not a readable .npy array ({exc}); prepare the corpus again") from None
    if fortran or dtype.hasobject or not shape:
        raise CremaError(f"{path}: not a C-ordered array of numbers; prepare the corpus again")
    needed = offset + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if path.stat().st_size < needed:
        raise CremaError(f"{path}: damaged (cut short: {path.stat().st_size} of {needed} bytes); "
                         "prepare the corpus again")
    return tuple(shape), dtype, offset


class RowReader:
    """Reads batches of rows of one ``.npy`` array (a corpus's ``signals.npy``).

    The file is opened on first use in each process (a reader pickles as its path alone, so
    DataLoader workers open their own), with random-access advice.

    Args:
        path: the ``.npy`` file; C-ordered, at least 1-D.
    """

    def __init__(self, path: str | os.PathLike):
        self._fd: int | None = None
        self.path = Path(path)
        self.shape, self.dtype, self.offset = _npy_layout(self.path)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self._pid: int | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._nowait = bool(_NOWAIT)

    def __len__(self) -> int:
        return self.shape[0]

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_fd=None, _pid=None, _pool=None)
        return state

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Close the file and stop the threads of this process (the reader reopens on use)."""
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            os.close(self._fd)
            if self._pool is not None:
                self._pool.shutdown(wait=False)
        self._fd, self._pid, self._pool = None, None, None

    def _file(self) -> int:
        """This process's file descriptor (a forked child opens its own, with its own threads)."""
        if self._pid != os.getpid():
            self._fd = os.open(self.path, os.O_RDONLY)
            self._pid, self._pool = os.getpid(), None
            if _RANDOM_ADVICE is not None:
                os.posix_fadvise(self._fd, 0, 0, _RANDOM_ADVICE)
        return self._fd

    def advise(self, rows: np.ndarray | list[int]) -> None:
        """Ask the kernel to start reading ``rows`` into the page cache now, without waiting
        (``POSIX_FADV_WILLNEED``): a later :meth:`read` of them, in this process or another,
        then finds them there. Rows outside the file are ignored."""
        if _WILLNEED is None:
            return
        fd = self._file()
        for row in np.unique(np.asarray(rows, dtype=np.int64)):
            if 0 <= row < self.shape[0]:
                os.posix_fadvise(fd, self.offset + int(row) * self.row_bytes, self.row_bytes, _WILLNEED)

    def read(self, rows: np.ndarray | list[int], out: np.ndarray | None = None) -> np.ndarray:
        """Rows ``rows`` (B,) in that order -> ``(B, *shape[1:])`` of the file's dtype.

        Reads in ascending row order; ``out`` (C-contiguous, that shape and dtype) is filled
        in place when given. Raises :class:`CremaError` for a row outside the file or a file
        cut short."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.shape[0]):
            raise CremaError(f"{self.path}: rows outside 0..{self.shape[0] - 1}")
        if out is None:
            out = np.empty((len(rows),) + self.shape[1:], dtype=self.dtype)
        flat = out.reshape(len(rows), self.row_bytes // self.dtype.itemsize).view(np.uint8)
        fd = self._file()
        pending = []  # (position, bytes already read) of rows not in the page cache
        for pos in np.argsort(rows, kind="stable"):
            done = self._read_cached(fd, flat[pos], int(rows[pos])) if self._nowait else 0
            if done < self.row_bytes:
                pending.append((int(pos), done))
        if len(pending) == 1:
            self._read_rest(fd, flat, rows, pending[0])
        elif pending:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="crema-rows")
            list(self._pool.map(lambda item: self._read_rest(fd, flat, rows, item), pending))
        return out

    def _read_cached(self, fd: int, dest: np.ndarray, row: int) -> int:
        """Bytes of ``row`` copied from the page cache without waiting for the disk."""
        try:
            return os.preadv(fd, [dest], self.offset + row * self.row_bytes, _NOWAIT)
        except BlockingIOError:
            return 0
        except OSError:  # a file system without RWF_NOWAIT: every read waits
            self._nowait = False
            return 0

    def _read_rest(self, fd: int, flat: np.ndarray, rows: np.ndarray, item: tuple[int, int]) -> None:
        """Read the part of row ``rows[pos]`` after its first ``done`` bytes, waiting for it."""
        pos, done = item
        start = self.offset + int(rows[pos]) * self.row_bytes
        while done < self.row_bytes:
            n = os.preadv(fd, [flat[pos, done:]], start + done)
            if n <= 0:
                raise CremaError(f"{self.path}: cut short at row {int(rows[pos])}; prepare the corpus again")
            done += n
