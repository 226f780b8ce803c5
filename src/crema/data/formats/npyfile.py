"""``.npy`` arrays and ``.npz`` archives read without trusting what they declare.

A ``.npy`` header declares a shape and a dtype; a zip member of an ``.npz`` declares the size it
expands to. Both are a few bytes anyone can write: a 1 kB file may declare ten million records, a
1 MB archive may expand to gigabytes. Every ``.npy``/``.npz`` read in CREMA (one record, the rows
of a stack, the ``fs``/``leads``/ids arrays beside them) goes through here, which checks before
allocating anything:

* the declared data fit in the bytes really present (the file after its header, or the member's
  declared size, which the zip reader never exceeds): else the file is truncated or its header lies;
* an archive's compressed members expand to at most :data:`crema.limits.DECOMPRESSED_BYTES` in all;
* no object array (pickled Python objects) is ever loaded;
* small arrays (a rate, lead names, ids) hold no more items than their use allows.

Arrays are read with plain reads, a block at a time, converted into a preallocated result, so a
read holds the result plus one block (never a memmap, whose pages stay counted in the process).
The caller bounds the result itself (a record against :data:`crema.limits.RECORD_BYTES`).
"""
from __future__ import annotations

import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ...errors import ReadError
from ...limits import DECOMPRESSED_BYTES

READ_BLOCK = 16 * 2**20  # bytes read (and converted) at a time


@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` header declares, checked against the bytes present: ``shape``, ``fortran``
    order, ``dtype``, and ``offset``, where the data start in the file or member."""

    shape: tuple[int, ...]
    fortran: bool
    dtype: np.dtype
    offset: int

    @property
    def count(self) -> int:
        """Items declared."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.count * self.dtype.itemsize


def read_header(fh: BinaryIO, where: Path | str, size: int, name: str | None = None) -> NpyHeader:
    """The header of the ``.npy`` open in ``fh`` (``size`` bytes in all), leaving ``fh`` at its data.

    Raises:
        ReadError: not a ``.npy``, an object dtype (pickled Python objects, never loaded), or
            declared data larger than the bytes present.
    """
    label = f"array {name!r}" if name else "the array"
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"unknown .npy version {version}")
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ReadError(where, f"not a readable .npy array{f' ({name})' if name else ''}: {exc}") from None
    if dtype.hasobject:  # numpy's own message suggests loading it unsafely; never do
        raise ReadError(where, f"{label} holds pickled Python objects, which CREMA never loads; "
                               "save a plain numeric or text array")
    header = NpyHeader(tuple(int(n) for n in shape), bool(fortran), dtype, fh.tell())
    present = size - header.offset
    if header.nbytes > present:
        raise ReadError(where, f"{label} declares shape {header.shape} of {dtype} ({header.nbytes:,} bytes) "
                               f"but holds {max(present, 0):,} bytes: the file is truncated or its header lies")
    return header


def read_data(fh: BinaryIO, header: NpyHeader, where: Path | str, dtype=None) -> np.ndarray:
    """The array the header declares, read from ``fh`` (positioned at its data) as ``dtype``
    (default its own), a block at a time into the result: memory is the result plus one block."""
    out = np.empty(header.shape, dtype=dtype or header.dtype.newbyteorder("="),
                   order="F" if header.fortran else "C")
    flat = out.reshape(-1, order="A")  # a view in storage order
    itemsize = header.dtype.itemsize
    per_block = max(1, READ_BLOCK // max(itemsize, 1))
    for start in range(0, header.count, per_block):
        n = min(per_block, header.count - start)
        try:
            raw = fh.read(n * itemsize)
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:  # a damaged member (bad CRC...)
            raise ReadError(where, f"cannot read the data: {exc}") from None
        if len(raw) != n * itemsize:
            raise ReadError(where, f"truncated: {header.count:,} values declared, the data end after "
                                   f"{start + len(raw) // max(itemsize, 1):,}")
        flat[start:start + n] = np.frombuffer(raw, dtype=header.dtype)
    return out


def open_npy(path: Path) -> tuple[BinaryIO, NpyHeader]:
    """A ``.npy`` file open at its data, and its checked header (the caller closes the file)."""
    fh = open(path, "rb")
    try:
        return fh, read_header(fh, path, os.fstat(fh.fileno()).st_size)
    except BaseException:
        fh.close()
        raise


class NpzArchive:
    """The arrays of an ``.npz``, each read on demand through :func:`read_header`.

    Opening checks that the compressed members expand to at most ``DECOMPRESSED_BYTES`` in all
    (members stored uncompressed are bounded by the file's size).
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        try:
            self.zip = zipfile.ZipFile(self.path)
        except (OSError, zipfile.BadZipFile, ValueError) as exc:
            raise ReadError(self.path, f"not a readable .npz archive: {exc}") from None
        self.members = {info.filename[:-4]: info for info in self.zip.infolist()
                        if info.filename.endswith(".npy")}
        expands = sum(info.file_size for info in self.zip.infolist() if info.compress_type != zipfile.ZIP_STORED)
        try:
            DECOMPRESSED_BYTES.check(expands, f"{self.path}: compressed arrays")
        except BaseException:
            self.zip.close()
            raise

    @property
    def names(self) -> list[str]:
        return list(self.members)

    def open(self, name: str) -> tuple[BinaryIO, NpyHeader]:
        """Member ``name`` open at its data, and its checked header (the caller closes it)."""
        try:
            fh = self.zip.open(self.members[name])
        except (OSError, zipfile.BadZipFile, ValueError, NotImplementedError) as exc:
            raise ReadError(self.path, f"cannot read array {name!r}: {exc}") from None
        try:
            return fh, read_header(fh, self.path, self.members[name].file_size, name)
        except BaseException:
            fh.close()
            raise

    def header(self, name: str) -> NpyHeader:
        fh, header = self.open(name)
        fh.close()
        return header

    def array(self, name: str, max_items: int | None = None, what: str = "array") -> np.ndarray | None:
        """Array ``name`` whole (None when absent), refused when it declares more than
        ``max_items`` items (a rate is one number, lead names a few, ids one per record)."""
        if name not in self.members:
            return None
        fh, header = self.open(name)
        try:
            if max_items is not None and header.count > max_items:
                raise ReadError(self.path, f"{what} {name!r} declares {header.count:,} values "
                                           f"(shape {header.shape}); at most {max_items:,} expected")
            return read_data(fh, header, self.path)
        finally:
            fh.close()

    def close(self) -> None:
        self.zip.close()

    def __enter__(self) -> "NpzArchive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
