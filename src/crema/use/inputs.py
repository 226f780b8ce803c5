"""What users hand to a CREMA model, turned into records that load one at a time.

Accepted inputs (alone or mixed in a list):

- a numpy array ``(12, T)`` (one record) or ``(B, 12, T)`` (B records) in mV, with ``fs`` and,
  when the rows are not the standard 12 in order, ``leads``; a torch tensor is taken as an array;
- a :class:`~crema.data.recording.Recording`;
- a file path, a folder (searched recursively) or a glob, in any format
  :func:`crema.data.readers.read_record` reads (``fs``/``leads`` apply to raw array files).

Each input becomes an :class:`InputItem` whose :meth:`~InputItem.load` reads the record only
when asked, so that a batch job can skip a bad file and go on with the rest.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..config import STANDARD_LEADS
from ..data.rates import MAX_FS, MIN_FS, check_fs  # noqa: F401  (re-exported)
from ..data.readers import find_records, read_record, real_dtype_problem
from ..data.recording import Recording
from ..errors import CremaError


@dataclass(frozen=True)
class InputItem:
    """One record to process: where it came from, and how to load it.

    Attributes:
        source: the file path, or ``<array>[i]`` / ``<recording>`` for in-memory inputs.
        record_id: the record's name (file stem, ``Recording.record_id``, or ``array<i>``).
    """

    source: str
    record_id: str
    loader: Callable[[], Recording]

    def load(self) -> Recording:
        """Read the record; raises :class:`~crema.errors.CremaError` naming the source."""
        return self.loader()


def collect_inputs(inputs: Any, fs: float | None = None,
                   leads: Sequence[str] | None = None) -> list[InputItem]:
    """Every record in ``inputs`` (see the module docstring), in the order given.

    Raises:
        CremaError: an input of an unsupported type or shape, a raw array without a valid
            ``fs``, a path that does not exist.
    """
    if fs is not None:
        check_fs(fs)
    if isinstance(inputs, (list, tuple)) and not _is_numeric_sequence(inputs):
        return [item for part in inputs for item in collect_inputs(part, fs, leads)]
    if isinstance(inputs, Recording):
        return [InputItem("<recording>", inputs.record_id, lambda rec=inputs: rec)]
    if isinstance(inputs, (str, os.PathLike)):
        return [path_item(path, fs, leads) for path in find_records(inputs)]
    array = _as_array(inputs)
    if array is not None:
        return _array_items(array, fs, leads)
    raise CremaError(f"cannot use input of type {type(inputs).__name__}: pass a numpy array "
                     "(12, T) or (B, 12, T), a Recording, a file, folder or glob, or a list of them")


def path_item(path: str | os.PathLike, fs: float | None = None,
              leads: Sequence[str] | None = None) -> InputItem:
    """An item that reads ``path`` with :func:`crema.data.readers.read_record`."""
    path = Path(path)
    return InputItem(str(path), path.stem, lambda: read_record(path, fs=fs, leads=leads))


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


def _array_items(array: np.ndarray, fs: float | None, leads: Sequence[str] | None) -> list[InputItem]:
    """Items for a ``(C, T)`` or ``(B, C, T)`` array."""
    if fs is None:
        raise CremaError("a raw array needs its sampling rate: pass fs=<Hz> (CLI: --fs)")
    leads = tuple(leads) if leads is not None else STANDARD_LEADS
    if array.ndim not in (2, 3):
        raise CremaError(f"expected an array (12, T) or (B, 12, T), got shape {array.shape}")
    problem = real_dtype_problem(array)
    if problem:
        raise CremaError(problem)
    batch = array[None] if array.ndim == 2 else array
    if batch.shape[1] != len(leads):
        hint = (" (it looks like (T, leads): pass array.T)"
                if batch.shape[2] == len(leads) else "")
        raise CremaError(f"array has {batch.shape[1]} rows but {len(leads)} lead names "
                         f"(shape {array.shape}){hint}")
    fs = check_fs(fs)
    items = []
    for i, signal in enumerate(batch):
        record_id = "array" if array.ndim == 2 else f"array{i}"
        source = "<array>" if array.ndim == 2 else f"<array>[{i}]"
        items.append(InputItem(source, record_id, lambda s=signal, r=record_id: Recording(
            signal=np.asarray(s, dtype=np.float32), fs=fs, leads=leads, record_id=r)))
    return items


__all__ = ["InputItem", "collect_inputs", "path_item", "check_fs"]
