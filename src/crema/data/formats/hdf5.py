"""HDF5 datasets read only from their own file, without trusting what the file declares.

An HDF5 file can put a dataset's data elsewhere: in external raw files, in other HDF5 files through
a virtual dataset or an external link, anywhere on the machine. It can also declare a shape larger
than what it stores (missing chunks read as fill values) or chunks that decompress to gigabytes.
:class:`H5Store` opens a dataset only after looking at every link on its path (soft links inside
the file followed, at most :data:`MAX_LINK_HOPS`; an external link refused, never opened) and at its
storage: a virtual dataset or external storage is refused, a contiguous one must have all its bytes
in the file, a chunked one every chunk stored and each chunk within
:data:`crema.limits.DECOMPRESSED_BYTES`. Rows are read as hyperslabs (what
:class:`crema.data.stacks.RecordStack` reads its HDF5 stacks through).
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ...errors import CremaError, ReadError
from ...limits import DECOMPRESSED_BYTES
from .arrays import RATE_KEYS, as_rate

MAX_LINK_HOPS = 16                # soft links followed inside an HDF5 file before calling it a loop


class H5Store:
    """The dataset ``dataset`` of the HDF5 file ``path``, read by hyperslab; only datasets stored
    in the file itself are read (:func:`_h5_dataset`). ``default_rate``: the rate (Hz) the caller
    assumes when the file stores none."""

    def __init__(self, path: Path, dataset: str, default_rate: float | None = None):
        try:
            import h5py
        except ImportError:  # a core dependency, but an environment may still lack it
            raise CremaError(f"{path}: reading HDF5 needs h5py (pip install h5py)") from None
        try:
            self.file = h5py.File(path, "r")
        except OSError as exc:
            raise ReadError(path, f"not a readable HDF5 file ({exc})") from None
        self.where = path
        self.name = dataset
        self.default_rate = default_rate
        try:
            node = _h5_dataset(self.file, self.name, path)
            if node is None:
                found = _h5_datasets(self.file)
                raise ReadError(path, f"no dataset {self.name!r} (datasets: "
                                      f"{', '.join(f'{k} {v}' for k, v in found.items()) or 'none'}); "
                                      "name the signals with --dataset NAME")
            if not np.issubdtype(node.dtype, np.number) or np.issubdtype(node.dtype, np.complexfloating):
                raise ReadError(path, f"dataset {self.name!r} has dtype {node.dtype}; expected real numbers")
        except BaseException:
            self.file.close()
            raise
        self.ds = node
        self.shape, self.itemsize = node.shape, node.dtype.itemsize

    def read(self, start: int, stop: int) -> np.ndarray:
        try:
            return self.ds[start:stop]
        except OSError as exc:  # a damaged chunk, data past the end of the file
            raise ReadError(self.where, f"cannot read rows {start}:{stop} of {self.name!r} ({exc})") from None

    def array(self, key: str, max_items: int) -> np.ndarray | None:
        node = _h5_dataset(self.file, key, self.where)
        if node is None:
            return None
        if node.size > max_items:
            raise ReadError(self.where, f"dataset {key!r} declares {node.size:,} values (shape {node.shape}); "
                                        f"at most {max_items:,} expected")
        return node[()]

    def arrays(self) -> list[str]:
        return list(_h5_datasets(self.file))

    def leads(self) -> Sequence[str] | None:
        value = self.ds.attrs.get("leads", self.file.attrs.get("leads"))
        if value is None:
            return None
        return [v.decode() if isinstance(v, bytes) else str(v) for v in np.asarray(value).ravel()]

    def rate(self) -> float | None:
        for attrs in (self.ds.attrs, self.file.attrs):
            for key in RATE_KEYS:
                if key in attrs:
                    return as_rate(self.where, key, attrs[key])
        return None

    def close(self) -> None:
        self.file.close()


def _h5_dataset(h5file, name: str, where: Path):
    """The dataset ``name`` of ``h5file``, or None when there is none; raises :class:`ReadError`
    for one whose data would come from elsewhere than this file, or that does not hold the data it
    declares (:func:`_h5_link_path`, :func:`_check_h5_storage`)."""
    import h5py

    path = _h5_link_path(h5file, name, where)
    node = None if path is None else h5file.get(path)
    if not isinstance(node, h5py.Dataset):
        return None
    _check_h5_storage(node, name, where)
    return node


def _h5_link_path(h5file, name: str, where: Path, hops: int = 0) -> str | None:
    """The path of ``name`` through hard links only (soft links inside the file resolved), or None
    when nothing is there. Each link is looked at before it is followed: an external link (to
    another file, anywhere on the machine) is refused, never opened."""
    import h5py

    current = ""
    for part in (p for p in name.split("/") if p):
        parent = h5file[current or "/"]
        if not isinstance(parent, h5py.Group):
            return None
        link = parent.get(part, getlink=True)
        if link is None:
            return None
        if isinstance(link, h5py.SoftLink):
            if hops >= MAX_LINK_HOPS:
                raise ReadError(where, f"{name!r}: soft links loop or nest deeper than {MAX_LINK_HOPS}")
            target = link.path if link.path.startswith("/") else f"{current}/{link.path}"
            current = _h5_link_path(h5file, target, where, hops + 1)
            if current is None:
                return None
        elif isinstance(link, h5py.HardLink):
            current = f"{current}/{part}"
        else:  # an external (or user-defined) link: its target is outside this file
            raise ReadError(where, f"{name!r} is a link to another file; CREMA reads an HDF5 file's "
                                   "data only from the file itself")
    return current or "/"


def _check_h5_storage(ds, name: str, where: Path) -> None:
    """Refuse a dataset stored outside the file (external raw files, a virtual dataset mapping
    other files) or that declares more than it holds: a contiguous one whose bytes are not all in
    the file, a chunked one with chunks missing (they would read as fill values) or a chunk over
    ``DECOMPRESSED_BYTES`` (a whole chunk is decompressed to read any of its rows)."""
    import h5py

    plist = ds.id.get_create_plist()
    layout = plist.get_layout()
    if layout == h5py.h5d.VIRTUAL:
        raise ReadError(where, f"dataset {name!r} is a virtual dataset (its data come from other files); "
                               "CREMA reads an HDF5 file's data only from the file itself")
    if plist.get_external_count() > 0:
        raise ReadError(where, f"dataset {name!r} keeps its data in external files; CREMA reads an HDF5 "
                               "file's data only from the file itself")
    declared = ds.size * ds.dtype.itemsize
    if declared == 0 or layout == h5py.h5d.COMPACT:  # compact data lie in the object header
        return
    if layout == h5py.h5d.CHUNKED:
        chunk_bytes = math.prod(ds.chunks) * ds.dtype.itemsize
        DECOMPRESSED_BYTES.check(chunk_bytes, f"{where}: one chunk {ds.chunks} of dataset {name!r}")
        needed = math.prod(-(-size // chunk) for size, chunk in zip(ds.shape, ds.chunks))
        stored = ds.id.get_num_chunks()
        if stored < needed:
            raise ReadError(where, f"dataset {name!r} declares shape {ds.shape} but stores {stored:,} of its "
                                   f"{needed:,} chunks: the rest is not in the file (truncated, or its "
                                   "header lies)")
        return
    stored = ds.id.get_storage_size()
    offset = ds.id.get_offset()
    if stored < declared or offset is None or offset + declared > os.path.getsize(where):
        raise ReadError(where, f"dataset {name!r} declares shape {ds.shape} of {ds.dtype} ({declared:,} bytes) "
                               "but the file does not hold them: it is truncated or its header lies")


def _h5_datasets(h5file) -> dict[str, tuple[int, ...]]:
    """Every dataset of an HDF5 file reached through hard links: ``{name: shape}`` (for messages)."""
    found: dict[str, tuple[int, ...]] = {}
    h5file.visititems(lambda name, node: found.setdefault(name, node.shape) if hasattr(node, "shape") else None)
    return found
