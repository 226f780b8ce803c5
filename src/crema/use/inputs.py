"""What users hand to a CREMA model, turned into records that load one at a time.

Accepted inputs (alone or mixed in a list):

- a numpy array ``(C, T)`` / ``(T, C)`` (one record) or ``(B, C, T)`` / ``(B, T, C)`` (B records) in
  mV, with ``fs`` and, when the C rows are not the standard 12 in order, ``leads`` (the lead axis
  is the one whose size is the lead count); a torch tensor is taken as an array;
- a :class:`~crema.data.recording.Recording`;
- a file path, a folder (searched recursively) or a glob, in any format
  :func:`crema.data.readers.read_record` reads (``fs``/``leads`` apply to raw array files);
- a stack file: a ``.npy``/``.npz`` holding a 3-D array, or an HDF5 file (CODE-15% layout by
  default; ``dataset`` and ``ids`` name other arrays): one record per row, read a block of rows at
  a time (:mod:`crema.data.stacks`);
- a prepared corpus folder, or ``DIR:split[,split]`` for some of its splits: one record per
  ``(source, record_id)`` of its index, its stored windows used as they are (they must have been
  made with the model's preprocessing).

Each input becomes an :class:`InputItem` whose :meth:`~InputItem.load` reads the record only
when asked, so that a batch job can skip a bad file and go on with the rest, and so that a stack
or corpus larger than memory is never loaded whole.
"""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from ..config import STANDARD_LEADS, PreprocessConfig
from ..config_io import to_dict
from ..data.corpus import Corpus, parse_corpus_spec
from ..data.formats.arrays import lead_axis, real_dtype_problem
from ..data.inputs import InputKind, classify_input
from ..data.rates import MAX_FS, MIN_FS, check_fs  # noqa: F401  (re-exported)
from ..data.readers import find_records, read_record
from ..data.recording import Recording
from ..data.spans import SpanReader, open_record
from ..data.stacks import RecordStack
from ..errors import CremaError, ReadError

if TYPE_CHECKING:  # preprocess imports scipy.signal: the CLI builds its parser without it
    from ..data.preprocess import Windows

# Preprocessing settings that change the content of a window: a corpus's stored windows can stand
# in for the model's own preprocessing only when these agree (stride, short-record policy and
# minimum length decide which windows exist, not what is in them).
WINDOW_FIELDS = ("fs", "band", "filter_order", "notch_hz", "zscore", "window_s", "derive_limb_leads")


@dataclass(frozen=True, slots=True)
class InputItem:
    """One record to process: where it came from, and how to load it.

    Attributes:
        source: the file path, ``file[row]`` for a row of a stack, ``corpus[source/record_id]`` for
            a record of a corpus, or ``<array>[i]`` / ``<recording>[i]`` for the ``i``-th
            in-memory record of a list (``<array>`` / ``<recording>`` for a lone one).
        record_id: the record's name (file stem, stack or corpus id, ``Recording.record_id``,
            ``array<i>``).
        loader: reads the record: a :class:`Recording`, or, when ``preprocess`` is set, the
            :class:`~crema.data.preprocess.Windows` already made with that preprocessing.
        preprocess: set for corpus records (their windows are stored preprocessed).
        opener: for a file, what :meth:`open` calls: a long record is not read whole.
        lock: shared by the items of one stack or corpus, whose reader must not be used by several
            threads at once (the batch commands load items in parallel threads).
    """

    source: str
    record_id: str
    loader: Callable[[], Recording | Windows]
    preprocess: PreprocessConfig | None = None
    opener: Callable[[], Recording | SpanReader] | None = None
    lock: Any = None

    def load(self) -> Recording | Windows:
        """Read the record; raises :class:`~crema.errors.CremaError` naming the source."""
        if self.lock is None:
            return self.loader()
        with self.lock:
            return self.loader()

    def open(self) -> Recording | Windows | SpanReader:
        """As :meth:`load`, except that a long file comes as a
        :class:`~crema.data.spans.SpanReader` to preprocess a span at a time
        (:func:`crema.data.spans.open_record`)."""
        return self.load() if self.opener is None else self.opener()


def collect_inputs(inputs: Any, fs: float | None = None, leads: Sequence[str] | None = None, *,
                   dataset: str | None = None, ids: str | os.PathLike | None = None,
                   preprocess: PreprocessConfig | None = None) -> list[InputItem]:
    """Every record in ``inputs`` (see the module docstring), in the order given.

    Args:
        fs, leads: sampling rate and lead names of raw arrays and stacks that carry none.
        dataset: the array of an ``.npz`` / dataset of an HDF5 stack holding the signals.
        ids: a file of record ids, or the name of the ids array in an ``.npz`` / HDF5 stack.
        preprocess: the model's preprocessing; a corpus made with another one is refused here,
            once, rather than record by record.

    Raises:
        CremaError: an input of an unsupported type or shape, a raw array without a valid
            ``fs``, a path that does not exist, an unreadable stack, a corpus whose windows were
            made with another preprocessing.
    """
    return [item for group in collect_each(inputs, fs, leads, dataset=dataset, ids=ids, preprocess=preprocess)
            for item in group]


def collect_each(inputs: Any, fs: float | None = None, leads: Sequence[str] | None = None, *,
                 dataset: str | None = None, ids: str | os.PathLike | None = None,
                 preprocess: PreprocessConfig | None = None) -> list[list[InputItem]]:
    """The records of each element of a list of inputs (one group per element; a single input is
    a list of one): what :func:`collect_inputs` flattens, for callers that need every element to
    be one record (:class:`crema.sklearn.CremaEmbedder`).

    In-memory records are named by their position among all the records: ``<array>[i]`` and
    ``array<i>``, ``<recording>[i]`` (a Recording without a ``record_id`` gets ``recording<i>``),
    so that records given as a list stay apart in per-record results even when their ids repeat.
    """
    if fs is not None:
        check_fs(fs)
    options = dict(dataset=dataset, ids=ids, preprocess=preprocess)
    if not _is_input_list(inputs):
        return [_collect(inputs, fs, leads, options, None)]
    return _collect_list(inputs, fs, leads, options, 0)


def _is_input_list(inputs: Any) -> bool:
    """A list or tuple of inputs, not an array written as nested lists of numbers."""
    return isinstance(inputs, (list, tuple)) and not _is_numeric_sequence(inputs)


def _collect_list(inputs: Sequence, fs: float | None, leads: Sequence[str] | None, options: dict,
                  first: int) -> list[list[InputItem]]:
    """One group of records per element of ``inputs`` (a nested list is one group); in-memory
    records are numbered from ``first`` on."""
    groups: list[list[InputItem]] = []
    for part in inputs:
        if _is_input_list(part):
            groups.append([item for group in _collect_list(part, fs, leads, options, first) for item in group])
        else:
            groups.append(_collect(part, fs, leads, options, first))
        first += len(groups[-1])
    return groups


def _collect(inputs: Any, fs: float | None, leads: Sequence[str] | None, options: dict,
             first: int | None) -> list[InputItem]:
    """The records of one input (not a list of inputs); in-memory records are numbered from
    ``first`` (``None``: a lone input, named without a number)."""
    dataset, ids, preprocess = options["dataset"], options["ids"], options["preprocess"]
    if isinstance(inputs, Recording):
        return [_recording_item(inputs, first)]
    if isinstance(inputs, (str, os.PathLike)):
        if classify_input(inputs, look_inside=False) is InputKind.CORPUS:
            return corpus_items(*parse_corpus_spec(inputs), preprocess)
        items: list[InputItem] = []
        for path in find_records(inputs):
            if classify_input(path, dataset).is_stack:
                items.extend(_stack_items_or_failure(path, fs, leads, dataset, ids))
            else:
                items.append(path_item(path, fs, leads))
        return items
    array = _as_array(inputs)
    if array is not None:
        return _array_items(array, fs, leads, first)
    raise CremaError(f"cannot use input of type {type(inputs).__name__}: pass a numpy array "
                     "(12, T) or (B, 12, T), a Recording, a file, folder or glob, or a list of them")


def _stack_items_or_failure(path: Path, fs, leads, dataset, ids) -> list[InputItem]:
    """:func:`stack_items`, or for a stack that cannot be opened (a lying header, object ids...)
    one item whose load raises why: a batch lists it as failed and goes on with the files beside it."""
    try:
        return stack_items(path, fs, leads, dataset, ids)
    except CremaError as exc:
        return [InputItem(str(path), path.stem, partial(_raise, exc))]


def _raise(exc: Exception):
    raise exc


def stack_items(path: str | os.PathLike, fs: float | None = None, leads: Sequence[str] | None = None,
                dataset: str | None = None, ids: str | os.PathLike | None = None) -> list[InputItem]:
    """One item per row of a stack file; they share one :class:`RecordStack`, which reads a block
    of rows at a time, so items loaded in order read the file once, front to back."""
    stack = RecordStack(path, fs=fs if fs is None else check_fs(fs), leads=leads, dataset=dataset, ids=ids)
    lock = threading.Lock()  # one reader for all its rows
    return [InputItem(f"{path}[{row}]", record_id, partial(stack.record, row), lock=lock)
            for row, record_id in enumerate(stack.ids)]


def corpus_items(path: str | os.PathLike, splits: Sequence[str] | None = None,
                 preprocess: PreprocessConfig | None = None) -> list[InputItem]:
    """One item per record (``source``, ``record_id``) of a prepared corpus, in index order,
    restricted to ``splits``; each loads the record's stored windows."""
    corpus = Corpus(path)
    if preprocess is not None:
        check_same_windows(corpus.path, corpus.preprocess, preprocess)
    rows = corpus.rows(split=splits)
    if not len(rows):
        raise CremaError(f"{corpus.path}: no windows in split(s) {', '.join(splits or [])}")
    # Windows are read through the stack reader (seek and read, a block at a time), not the
    # corpus memmap, so that memory stays flat on a corpus larger than memory.
    stack = RecordStack(corpus.path / "signals.npy", fs=corpus.preprocess.fs)
    starts = np.round(corpus.columns.column("start_s").astype(np.float64) * corpus.preprocess.fs)
    names, groups = corpus.record_groups(rows)  # from the columnar index: no DataFrame of every window
    lock = threading.Lock()  # one reader for all its records
    return [InputItem(f"{corpus.path}[{source}/{record_id}]", record_id,
                      partial(_corpus_windows, stack, corpus.lead_mask, starts, rows[positions]),
                      corpus.preprocess, lock=lock)
            for (source, record_id), positions in zip(names, groups)]


def _corpus_windows(stack: RecordStack, lead_mask: np.ndarray, starts: np.ndarray,
                    rows: np.ndarray) -> Windows:
    """The stored windows ``rows`` of one record: ``(W, 12, window)`` float32."""
    from ..data.preprocess import Windows

    first, last = int(rows[0]), int(rows[-1]) + 1
    signals = stack.rows(first, last)[rows - first]  # a record's windows are consecutive rows
    return Windows(signals=signals, lead_mask=lead_mask[first].copy(), starts=starts[rows].astype(np.int64))


def check_same_windows(where: str | os.PathLike, stored: PreprocessConfig, expected: PreprocessConfig) -> None:
    """Raise a :class:`CremaError` unless windows made with ``stored`` are what ``expected`` makes
    (the settings of :data:`WINDOW_FIELDS` agree)."""
    have, want = to_dict(stored), to_dict(expected)
    differ = [f"{key} {have.get(key)!r} (model: {want.get(key)!r})" for key in WINDOW_FIELDS
              if have.get(key) != want.get(key)]
    if differ:
        raise CremaError(f"{where}: this corpus was prepared with another preprocessing than the model's: "
                         f"{', '.join(differ)}; prepare the raw data again with the model's settings, "
                         "or give the model the raw files")


def path_item(path: str | os.PathLike, fs: float | None = None,
              leads: Sequence[str] | None = None) -> InputItem:
    """An item that reads ``path`` with :func:`crema.data.readers.read_record` (and opens it
    with :func:`crema.data.spans.open_record`)."""
    path = Path(path)
    return InputItem(str(path), path.stem, lambda: read_record(path, fs=fs, leads=leads),
                     opener=lambda: open_record(path, fs=fs, leads=leads))


def _is_numeric_sequence(items: Iterable) -> bool:
    """A nested list of numbers (an array written as lists) rather than a list of inputs."""
    first = next(iter(items), None)
    return isinstance(first, (int, float, np.number)) or (
        isinstance(first, (list, tuple)) and _is_numeric_sequence(first))


def _as_array(value: Any) -> np.ndarray | None:
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # a torch tensor
        return value.detach().cpu().numpy()
    if isinstance(value, (list, tuple)):
        return np.asarray(value)
    return None


def _recording_item(rec: Recording, position: int | None) -> InputItem:
    """An item for an in-memory Recording, the ``position``-th record of a list (None: alone)."""
    source = "<recording>" if position is None else f"<recording>[{position}]"
    if not rec.record_id:  # an empty id would name nothing in the index and in messages
        rec = replace(rec, record_id=f"recording{position or 0}")
    return InputItem(source, rec.record_id, lambda: rec)


def _array_items(array: np.ndarray, fs: float | None, leads: Sequence[str] | None,
                 first: int | None = None) -> list[InputItem]:
    """Items for a ``(C, T)`` / ``(T, C)`` or ``(B, C, T)`` / ``(B, T, C)`` array whose records are
    numbered from ``first`` (``None``: a lone input; a lone ``(C, T)`` array is just ``array``)."""
    if fs is None:
        raise CremaError("a raw array needs its sampling rate: pass fs=<Hz> (CLI: --fs)")
    leads = tuple(leads) if leads is not None else STANDARD_LEADS
    if array.ndim not in (2, 3):
        raise CremaError(f"expected an array (12, T) or (B, 12, T), got shape {array.shape}")
    problem = real_dtype_problem(array)
    if problem:
        raise CremaError(problem)
    batch = array[None] if array.ndim == 2 else array
    try:
        if lead_axis(None, batch.shape[1:], len(leads)) == 1:
            batch = batch.transpose(0, 2, 1)
    except ReadError as exc:
        raise CremaError(f"array of shape {array.shape} with {len(leads)} lead names: {exc.problem}") from None
    fs = check_fs(fs)
    items = []
    for i, signal in enumerate(batch):
        number = None if first is None and array.ndim == 2 else (first or 0) + i
        record_id = "array" if number is None else f"array{number}"
        source = "<array>" if number is None else f"<array>[{number}]"
        items.append(InputItem(source, record_id, lambda s=signal, r=record_id: Recording(
            signal=np.asarray(s, dtype=np.float32), fs=fs, leads=leads, record_id=r)))
    return items


__all__ = ["InputItem", "collect_inputs", "collect_each", "path_item", "stack_items", "corpus_items",
           "check_same_windows", "check_fs"]
