"""A corpus's index: ``index.csv`` (the human-readable source of truth) and its columnar copy
``index.npz``, which opens a corpus of a million windows in a fraction of a second.

``index.csv`` at a million windows is about 100 MB of text: parsing it takes seconds and its
strings hundreds of MB. ``index.npz`` (an uncompressed numpy archive beside it) holds the same
table by column: numbers as numpy arrays, each text column dictionary-encoded (``int32`` codes
``(N,)`` and its distinct values once, NUL-separated UTF-8). Split selection, label filters and
``crema info`` work on the codes and read only the columns they need; the text of a column is
decoded only when asked for, and the whole ``DataFrame`` only when ``Corpus.index`` is used.

It is derived, never edited by hand: :func:`write_index` writes ``index.csv`` and then builds the
columns from the CSV read back, so both give the same frame by construction. ``index.npz``
records the size and modification time of the ``index.csv`` it was built from; when either
differs (the CSV was edited or replaced, a corpus made before ``index.npz`` existed, a damaged
file) the CSV is read and the columns rebuilt, and written back when the folder is writable.
Reading goes through :class:`~crema.data.formats.npyfile.NpzArchive`: declared sizes are checked
and no object array is loaded, whatever the file holds.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..atomic import atomic_path
from ..errors import CremaError
from .formats.npyfile import NpzArchive

INDEX_CSV = "index.csv"
INDEX_NPZ = "index.npz"
LABEL_PREFIX = "labels:"
# index.csv columns read as text (ids like "00001" must keep their zeros).
TEXT_COLUMNS = ("record_id", "source", "patient_id", "split", "sex", "source_id", "path")
_FORMAT = 1
_SEP = "\x00"  # between the distinct values of a text column (a CSV cell never holds it)
_META = "meta"


def read_index(path: str | os.PathLike) -> pd.DataFrame:
    """``index.csv`` with ids as text, empty labels as ``""`` and missing ages as NaN."""
    header = pd.read_csv(path, nrows=0).columns
    text = {c: str for c in header if c in TEXT_COLUMNS or c.startswith(LABEL_PREFIX)}
    df = pd.read_csv(path, dtype=text, keep_default_na=False, na_values={"age": [""]})
    df["age"] = pd.to_numeric(df["age"], errors="coerce")
    return df


def write_index(index: pd.DataFrame, folder: str | os.PathLike) -> pd.DataFrame:
    """Write ``index`` as ``folder/index.csv`` and its columnar copy ``index.npz``, each
    atomically; returns the index as :func:`read_index` reads it back."""
    folder = Path(folder)
    with atomic_path(folder / INDEX_CSV) as tmp:
        index.to_csv(tmp, index=False)
    return index_from_csv(folder, strict=True)[1]


def index_from_csv(folder: str | os.PathLike, strict: bool = False) -> tuple["IndexColumns", pd.DataFrame]:
    """Read ``folder/index.csv``, build its columns and save them as ``index.npz`` (unless the CSV
    was replaced while it was read). The columns are built from the CSV as read back, so that
    both give the same frame by construction.

    Args:
        strict: raise when ``index.npz`` cannot be written (else a read-only corpus still opens,
            from its CSV each time).

    Returns:
        ``(columns, frame)``: the columns and the frame :func:`read_index` gives.
    """
    folder = Path(folder)
    stat = _csv_stat(folder)
    frame = read_index(folder / INDEX_CSV)
    columns = IndexColumns.from_frame(frame)
    if _csv_stat(folder) == stat:
        try:
            columns.save(folder, stat)
        except (OSError, CremaError):
            if strict:
                raise
    return columns, frame


def load_index(folder: str | os.PathLike) -> tuple["IndexColumns", pd.DataFrame | None]:
    """The columnar index of ``folder``: from ``index.npz`` when it matches ``index.csv``, else
    built from the CSV (returned too, so that it is not parsed twice) and saved when possible.

    Returns:
        ``(columns, frame)``; ``frame`` is None when the columns came from ``index.npz``.
    """
    columns = IndexColumns.load(folder)
    return (columns, None) if columns is not None else index_from_csv(folder)


def _csv_stat(folder: Path) -> tuple[int, int]:
    """``(size, mtime_ns)`` of ``folder/index.csv``: what ties ``index.npz`` to it."""
    st = (folder / INDEX_CSV).stat()
    return st.st_size, st.st_mtime_ns


def _narrow(values: np.ndarray) -> np.ndarray:
    """``values`` in the smallest dtype that holds them exactly (integers: 8, 16 or 32 bits;
    floats: 32 bits when every value, NaN included, survives the round trip), to keep
    ``index.npz`` small; the reader restores the recorded dtype."""
    if values.dtype.kind in "iu" and len(values):
        low, high = int(values.min()), int(values.max())
        for dtype in (np.uint8, np.int8, np.uint16, np.int16, np.int32, np.uint32):
            if np.iinfo(dtype).min <= low and high <= np.iinfo(dtype).max:
                return values.astype(dtype)
    if values.dtype == np.float64:
        narrow = values.astype(np.float32)
        if np.array_equal(narrow.astype(np.float64), values, equal_nan=True):
            return narrow
    return values


@dataclass
class TextColumn:
    """A dictionary-encoded text column: ``codes`` int32 ``(N,)`` into ``values`` (the distinct
    strings in order of first appearance)."""

    codes: np.ndarray
    values: list[str]

    def decode(self) -> np.ndarray:
        """The strings as an object array ``(N,)`` (equal strings share one object)."""
        return np.array(self.values, dtype=object)[self.codes]


class IndexColumns:
    """The index by column. Columns are read from ``index.npz`` when first asked for.

    Attributes:
        names: column names in ``index.csv`` order.
        kinds: ``{name: "number" | "text" | "object"}`` (``object``: text that pandas keeps as
            Python objects, as pandas before 3.0 reads every text column).
        n_rows: windows.
        path: the ``index.npz`` the columns are read from (None when built in memory).
        csv_stat: ``(size, mtime_ns)`` of the ``index.csv`` these columns describe.
    """

    def __init__(self, names: list[str], kinds: dict[str, str], n_rows: int,
                 data: dict[str, np.ndarray | TextColumn], path: Path | None = None,
                 csv_stat: tuple[int, int] | None = None, n_values: dict[str, int] | None = None):
        self.names, self.kinds, self.n_rows = list(names), dict(kinds), int(n_rows)
        self._data = dict(data)
        self.path = path
        self.csv_stat = csv_stat
        self._n_values = dict(n_values or {})  # distinct values per text column, as index.npz declares
        self._dtypes: dict[str, np.dtype] = {}   # the dtype of each number column (stored narrower)

    # ------------------------------------------------------------------ building and saving

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> "IndexColumns":
        """The columns of ``frame`` (as :func:`read_index` returns it): numbers kept as numpy
        arrays, text dictionary-encoded."""
        kinds, data = {}, {}
        for name in frame.columns:
            column = frame[name]
            if column.dtype.kind in "biuf":
                kinds[name], data[name] = "number", column.to_numpy()
                continue
            codes, uniques = pd.factorize(column, use_na_sentinel=True)
            if (codes < 0).any():
                raise CremaError(f"{INDEX_CSV}: column {name!r} has missing values")
            values = [str(v) for v in uniques]
            kinds[name] = "object" if column.dtype == object else "text"
            data[name] = TextColumn(codes.astype(np.int32), values)
        return cls(list(frame.columns), kinds, len(frame), data)

    def save(self, folder: str | os.PathLike, csv_stat: tuple[int, int] | None = None) -> None:
        """Write ``folder/index.npz`` atomically, tied to the ``index.csv`` there now (or to
        ``csv_stat``). Nothing is written when a value holds a NUL character."""
        folder = Path(folder)
        stat = csv_stat or _csv_stat(folder)
        arrays = {}
        for i, name in enumerate(self.names):
            item = self.column_data(name)
            if isinstance(item, TextColumn):
                if any(_SEP in v for v in item.values):
                    return
                arrays[f"c{i}.codes"] = _narrow(item.codes)
                arrays[f"c{i}.values"] = np.frombuffer(_SEP.join(item.values).encode("utf-8"), dtype=np.uint8)
            else:
                arrays[f"c{i}"] = _narrow(item)
        meta = dict(format=_FORMAT, rows=self.n_rows, csv_size=stat[0], csv_mtime_ns=stat[1],
                    columns=[dict(name=n, kind=self.kinds[n],
                                  dtype=self._data[n].dtype.str if self.kinds[n] == "number" else None,
                                  values=len(self._data[n].values) if self.kinds[n] != "number" else None)
                             for n in self.names])
        arrays[_META] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
        with atomic_path(folder / INDEX_NPZ) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
        self.csv_stat = stat

    @classmethod
    def load(cls, folder: str | os.PathLike) -> "IndexColumns | None":
        """The columns of ``folder/index.npz`` when it exists, is readable and was built from the
        ``index.csv`` there now; None otherwise (the caller reads the CSV)."""
        folder = Path(folder)
        path = folder / INDEX_NPZ
        if not path.is_file():
            return None
        try:
            with NpzArchive(path) as archive:
                raw = archive.array(_META, max_items=1 << 24)
            meta = json.loads(raw.tobytes().decode("utf-8")) if raw is not None else None
            if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
                return None
            if (meta["csv_size"], meta["csv_mtime_ns"]) != _csv_stat(folder):
                return None
            names = [str(c["name"]) for c in meta["columns"]]
            kinds = {str(c["name"]): c["kind"] for c in meta["columns"]}
            if len(set(names)) != len(names) or not set(kinds.values()) <= {"number", "text", "object"}:
                return None
            columns = cls(names, kinds, int(meta["rows"]), {}, path, (meta["csv_size"], meta["csv_mtime_ns"]),
                          {str(c["name"]): c.get("values") for c in meta["columns"]})
            columns._dtypes = {str(c["name"]): np.dtype(c["dtype"]) for c in meta["columns"]
                               if c["kind"] == "number"}
            if any(d.kind not in "biuf" for d in columns._dtypes.values()):
                return None
            return columns
        except (CremaError, OSError, ValueError, KeyError, TypeError):
            return None  # damaged or from another version: the CSV is the truth

    # ------------------------------------------------------------------ reading

    def column_data(self, name: str) -> np.ndarray | TextColumn:
        """Column ``name``: a numpy array (numbers) or a :class:`TextColumn`, read on first use.

        Raises:
            KeyError: no such column.
            CremaError: ``index.npz`` no longer matches what its header declared.
        """
        if name not in self._data:
            if name not in self.kinds or self.path is None:
                raise KeyError(name)
            self._data[name] = self._read(name)
        return self._data[name]

    def _read(self, name: str) -> np.ndarray | TextColumn:
        i = self.names.index(name)
        problem = f"{self.path}: damaged (column {name!r}); delete it and open the corpus again"
        with NpzArchive(self.path) as archive:
            if self.kinds[name] == "number":
                data = archive.array(f"c{i}", max_items=self.n_rows)
                if data is None or data.shape != (self.n_rows,) or data.dtype.kind not in "biuf":
                    raise CremaError(problem)
                return data.astype(self._dtypes[name], copy=False)
            codes = archive.array(f"c{i}.codes", max_items=self.n_rows)
            blob = archive.array(f"c{i}.values")
        if codes is None or blob is None or codes.shape != (self.n_rows,) or codes.dtype.kind not in "iu":
            raise CremaError(problem)
        expected = self._n_values.get(name)
        try:
            values = blob.tobytes().decode("utf-8").split(_SEP) if expected != 0 else []
        except UnicodeDecodeError:
            raise CremaError(problem) from None
        if len(values) != expected or (self.n_rows and (codes.min() < 0 or codes.max() >= len(values))):
            raise CremaError(problem)
        return TextColumn(codes, values)

    def text(self, name: str) -> TextColumn:
        """Text column ``name`` as codes and distinct values (numbers are encoded on the fly)."""
        item = self.column_data(name)
        if isinstance(item, TextColumn):
            return item
        codes, uniques = pd.factorize(item)
        return TextColumn(codes.astype(np.int32), [str(v) for v in uniques])

    def column(self, name: str) -> np.ndarray:
        """Column ``name`` as a numpy array ``(N,)``: numbers as stored, text as objects."""
        item = self.column_data(name)
        return item.decode() if isinstance(item, TextColumn) else item

    def frame(self) -> pd.DataFrame:
        """The whole index as :func:`read_index` gives it."""
        text_dtype = pd.Series([""], dtype=str).dtype  # what read_csv(dtype=str) makes here
        data = {}
        for name in self.names:
            item = self.column_data(name)
            if not isinstance(item, TextColumn):
                data[name] = item
            elif self.kinds[name] == "object":
                data[name] = item.decode()
            else:
                values = pd.array(np.asarray(item.values, dtype=object), dtype=text_dtype)
                data[name] = pd.Series(values.take(item.codes) if len(values) else
                                       pd.array([""] * self.n_rows, dtype=text_dtype))
        return pd.DataFrame(data, columns=self.names)
