"""MATLAB ``.mat`` files checked before ``scipy.io.loadmat`` reads them whole.

A MATLAB 5 file may hold zlib-compressed elements (``save`` compresses by default): a 2 MB file
may expand to gigabytes, which ``loadmat`` would inflate in memory at once. :func:`check_mat`
inflates every compressed element a block at a time, keeping nothing, and refuses a file whose
elements expand beyond :data:`crema.limits.DECOMPRESSED_BYTES` in all. MATLAB 4 files (the CinC
``.mat``) are never compressed: their size is their content.
"""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

from ...errors import ReadError
from ...limits import DECOMPRESSED_BYTES

_HEADER = 128            # MATLAB 5 text header, subsystem offset, version, endian indicator
_COMPRESSED = 15         # miCOMPRESSED
_BLOCK = 2**20           # compressed bytes read at a time
_OUT_BLOCK = 16 * 2**20  # inflated bytes produced (and dropped) at a time


def check_mat(path: Path) -> None:
    """Refuse a MATLAB 5 file whose compressed elements expand beyond ``DECOMPRESSED_BYTES``.

    Raises:
        LimitError: they do (the message names the limit and its setting).
    """
    limit = DECOMPRESSED_BYTES.value()
    with open(path, "rb") as fh:
        header = fh.read(_HEADER)
        endian = {b"IM": "<", b"MI": ">"}.get(header[126:128]) if len(header) == _HEADER else None
        if endian is None:
            return  # MATLAB 4 (never compressed) or not MATLAB: loadmat says which
        total = 0
        while tag := fh.read(8):
            if len(tag) < 8:
                return
            kind, nbytes = struct.unpack(endian + "II", tag)
            if kind >> 16:  # a small element packed in its tag
                continue
            if kind != _COMPRESSED:
                fh.seek(nbytes + (-nbytes % 8), 1)
                continue
            total += _inflated_size(fh, nbytes, limit - total, path)
            DECOMPRESSED_BYTES.check(total, f"{path}: compressed MATLAB data")


def _inflated_size(fh, nbytes: int, allowed: int, path: Path) -> int:
    """Bytes that the ``nbytes`` of zlib data at ``fh`` expand to, counted up to just past
    ``allowed`` (then the caller refuses the file); nothing inflated is kept."""
    inflate, size, left = zlib.decompressobj(), 0, nbytes
    pending = b""
    while size <= allowed:
        if not pending:
            if left <= 0:
                break
            pending = fh.read(min(_BLOCK, left))
            if not pending:
                break
            left -= len(pending)
        try:
            size += len(inflate.decompress(pending, _OUT_BLOCK))
        except zlib.error as exc:
            raise ReadError(path, f"damaged compressed MATLAB data ({exc})") from None
        pending = inflate.unconsumed_tail
        if inflate.eof:
            break
    fh.seek(left, 1)
    return size
