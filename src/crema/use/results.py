"""What the Python API hands back: one record's windows (:class:`Prepared`), its model outputs
(:class:`RecordOutput`) or why it failed (:class:`Failure`), the results of many records
(:class:`EmbedResult`, :class:`PredictResult`), and the window and record tables they are indexed by
(:func:`window_index`, :func:`stack_outputs`, :func:`stack_prepared`, :func:`mean_by_record`), and
what ``crema embed`` wrote, read back (:func:`read_embed_output`).

:class:`crema.use.api.CremaModel` makes them; ``crema embed`` / ``crema predict`` and the viewer
read them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..config import STANDARD_LEADS
from ..errors import ReadError

INDEX_COLUMNS = ("record_id", "source", "window", "start_s", "leads_present")
RECORD_COLUMNS = ("record_id", "source", "n_windows", "leads_present")


@dataclass
class Prepared:
    """One record as model input.

    Attributes:
        record_id, source: where it came from.
        signals: float32 ``(W, 12, window)``: exactly ``preprocess_recording(rec, cfg).signals``.
        lead_mask: bool ``(12,)``, True = lead present.
        start_s: float ``(W,)`` start of each window in the record, seconds.
    """

    record_id: str
    source: str
    signals: np.ndarray
    lead_mask: np.ndarray
    start_s: np.ndarray

    def index(self) -> pd.DataFrame:
        """One row per window: ``record_id, source, window, start_s, leads_present``."""
        return window_index(self.record_id, self.source, self.start_s, self.lead_mask)


@dataclass
class Failure:
    """A record that could not be used, and why."""

    record_id: str
    source: str
    reason: str


@dataclass
class RecordOutput:
    """What the model made of one record's windows (:meth:`CremaModel.iter_outputs`).

    Attributes:
        record_id, source: where it came from.
        values: ``(W, ...)`` one output per window (an embedding, class probabilities...).
        lead_mask: bool ``(12,)``, True = lead present.
        start_s: float ``(W,)`` start of each window in the record, seconds.
    """

    record_id: str
    source: str
    values: np.ndarray
    lead_mask: np.ndarray
    start_s: np.ndarray

    def index(self) -> pd.DataFrame:
        """One row per window: ``record_id, source, window, start_s, leads_present``."""
        return window_index(self.record_id, self.source, self.start_s, self.lead_mask)


@dataclass
class EmbedResult:
    """Embeddings ``(n_windows, D)`` float32, their ``index`` (one row per window, see
    :data:`INDEX_COLUMNS`) and the records that failed (empty unless ``on_error="skip"``)."""

    embeddings: np.ndarray
    index: pd.DataFrame
    errors: list[Failure] = field(default_factory=list)

    def by_record(self) -> "EmbedResult":
        """One row per record: the mean of its windows' embeddings ``(n_records, D)``, with an
        index of :data:`RECORD_COLUMNS` (a record of one window keeps that window's embedding)."""
        embeddings, index = mean_by_record(self.embeddings, self.index)
        return EmbedResult(embeddings, index, self.errors)


@dataclass
class PredictResult:
    """Classifier output.

    Attributes:
        window_probs: float32 ``(n_windows, K)`` sigmoid probabilities (a regression head:
            ``(n_windows, 1)`` predicted values).
        index: one row per window (:data:`INDEX_COLUMNS`).
        records: one row per record: ``record_id, source, n_windows``, one probability column
            per class (mean over the record's windows) and ``labels`` (``|``-joined classes at or
            above their threshold); a regression head: one column, named after the target, holding
            the mean predicted value, and no ``labels``.
        errors: records that failed (``on_error="skip"``).
    """

    window_probs: np.ndarray
    index: pd.DataFrame
    records: pd.DataFrame
    errors: list[Failure] = field(default_factory=list)


def window_index(record_id: str, source: str, start_s: np.ndarray, lead_mask: np.ndarray) -> pd.DataFrame:
    """One row per window of a record (:data:`INDEX_COLUMNS`)."""
    n = len(start_s)
    return pd.DataFrame({"record_id": [record_id] * n, "source": [source] * n, "window": np.arange(n),
                         "start_s": np.round(start_s, 4), "leads_present": int(lead_mask.sum())})


def stack_outputs(outputs: Sequence[RecordOutput], shape: tuple[int, ...]) -> tuple[np.ndarray, pd.DataFrame]:
    """The outputs of several records, ``(n_windows, *shape)`` float32, and their window index;
    ``shape`` is that of one window's output (for when there is none)."""
    if not outputs:
        return np.zeros((0, *shape), dtype=np.float32), pd.DataFrame(columns=list(INDEX_COLUMNS))
    values = np.concatenate([o.values for o in outputs]).reshape(-1, *shape)
    counts = [len(o.start_s) for o in outputs]
    # built column by column: a DataFrame per record would cost more than reading the record
    index = pd.DataFrame({
        "record_id": [o.record_id for o, n in zip(outputs, counts) for _ in range(n)],
        "source": [o.source for o, n in zip(outputs, counts) for _ in range(n)],
        "window": np.concatenate([np.arange(n) for n in counts]),
        "start_s": np.round(np.concatenate([o.start_s for o in outputs]), 4),
        "leads_present": np.repeat([int(o.lead_mask.sum()) for o in outputs], counts)})
    return values, index


def mean_by_record(values: np.ndarray, index: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """Average the rows of each record: ``values (n_windows, ...)`` with their window ``index``
    (:data:`INDEX_COLUMNS`; a record's windows are consecutive rows of one ``source`` numbered
    0, 1, ...) -> ``(n_records, ...)`` float32 and a record index (:data:`RECORD_COLUMNS`)."""
    if not len(index):
        return values[:0].astype(np.float32), pd.DataFrame(columns=list(RECORD_COLUMNS))
    source = index["source"].to_numpy()
    new_record = source[1:] != source[:-1]
    if "window" in index.columns:  # the same file given twice is two records: its windows restart at 0
        window = index["window"].to_numpy()
        new_record |= window[1:] != window[:-1] + 1
    starts = np.flatnonzero(np.r_[True, new_record])
    counts = np.diff(np.r_[starts, len(source)])
    # float64 sums so that a one-window record keeps its window's values bit for bit
    sums = np.add.reduceat(np.asarray(values, dtype=np.float64), starts, axis=0)
    means = (sums / counts.reshape(-1, *([1] * (sums.ndim - 1)))).astype(np.float32)
    first = index.iloc[starts]
    records = pd.DataFrame({"record_id": first["record_id"].to_numpy(), "source": first["source"].to_numpy(),
                            "n_windows": counts, "leads_present": first["leads_present"].to_numpy()})
    return means, records


def stack_prepared(prepared: Sequence[Prepared], window: int) -> tuple[np.ndarray, np.ndarray, pd.DataFrame]:
    """All windows of several records: ``signals (n, 12, T)``, ``lead_mask (n, 12)`` and the index."""
    if not prepared:
        return (np.zeros((0, len(STANDARD_LEADS), window), dtype=np.float32),
                np.zeros((0, len(STANDARD_LEADS)), dtype=bool), pd.DataFrame(columns=list(INDEX_COLUMNS)))
    signals = np.concatenate([p.signals for p in prepared])
    lead_mask = np.concatenate([np.repeat(p.lead_mask[None], len(p.signals), axis=0) for p in prepared])
    index = pd.concat([p.index() for p in prepared], ignore_index=True)
    return signals, lead_mask, index


def read_embed_output(npy: str | Path, index_csv: str | Path | None = None,
                      resuming: bool = False) -> tuple[np.ndarray, pd.DataFrame]:
    """``OUT.npy`` and its index table (default ``OUT.index.csv`` beside it), as ``crema embed``
    wrote them: ``(embeddings (N, F) float, index (N rows))``, checked before use.

    The array and the index have as many rows, except when ``resuming`` (``crema embed`` extending
    its own output): then rows of the array past the index are dropped, as they come from a flush
    that was interrupted (the array is written before the index). Anything that does not fit (a
    missing or damaged file, an array that is not 2-D finite floats, other row counts, an index
    without its ``source`` column) raises :class:`~crema.errors.ReadError` naming the file.
    """
    npy = Path(npy)
    index_csv = npy.with_name(npy.stem + ".index.csv") if index_csv is None else Path(index_csv)
    for path in (npy, index_csv):
        if not path.is_file():
            raise ReadError(path, "no such file (crema embed writes OUT.npy beside OUT.index.csv)")
    try:
        embeddings = np.load(npy, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ReadError(npy, f"not a NumPy array file ({_first_line(exc)})") from None
    try:
        index = pd.read_csv(index_csv, dtype={"record_id": str, "source": str})
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:  # EmptyDataError is a ValueError
        raise ReadError(index_csv, f"not an index table ({_first_line(exc)})") from None
    if "source" not in index.columns:
        raise ReadError(index_csv, f"no source column ({', '.join(map(str, index.columns))})")
    if embeddings.ndim != 2 or not np.issubdtype(embeddings.dtype, np.floating):
        raise ReadError(npy, f"holds a {embeddings.dtype} array of shape {embeddings.shape}, not (records, features) numbers")
    if len(embeddings) < len(index) or (len(embeddings) > len(index) and not resuming):
        raise ReadError(npy, f"{len(embeddings)} rows for the {len(index)} of {index_csv.name}")
    embeddings = np.ascontiguousarray(embeddings[:len(index)])
    if not np.isfinite(embeddings).all():
        raise ReadError(npy, "holds values that are not finite numbers")
    return embeddings, index


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
