"""The machinery that keeps the model fed: records read and preprocessed by a pool of threads ahead of
it, and windows of consecutive records gathered into full batches for it.

:meth:`crema.use.api.CremaModel.iter_outputs` (behind ``embed_records``, ``predict_records`` and the
``crema embed`` / ``crema predict`` commands) puts the two together:

* :class:`Pool` runs a function over items in ``workers`` threads, at most ``ahead`` ahead of the
  consumer, and hands the results back in input order. Reading files (``np.fromfile``), resampling
  and filtering (scipy's C loops) release the GIL, and so does torch, so the threads read and
  preprocess while the model runs in the caller's thread;
* :class:`WindowBatches` gathers the windows of consecutive records into batches of exactly
  ``batch_size`` windows for the model, whatever record they come from, and hands back one record at
  a time, in order, once its last window is through. The batches depend only on the windows, never
  on the number of workers or on timing, so outputs are byte-identical for any ``--workers``.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

import numpy as np

# (signals (n, 12, T), lead_mask (n, 12)) -> outputs (n, ...)
ApplyFn = Callable[[np.ndarray, np.ndarray], np.ndarray]


def default_workers() -> int:
    """Threads that read and preprocess records: ``min(4, CPUs)`` (more rarely helps: one thread
    keeps up with the model on a CPU, and four with a small model on a GPU)."""
    return max(1, min(4, os.cpu_count() or 1))


class Pool:
    """``workers`` threads mapping a function over items in order, a bounded number ahead.

    Use as a context manager; leaving it cancels what has not started (a Ctrl-C does not wait for
    the records queued ahead, only for the few being read).
    """

    def __init__(self, workers: int | None = None):
        self.workers = default_workers() if workers is None else int(workers)
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="crema-read")

    def map(self, fn: Callable[[Any], Any], items: Iterable, ahead: int) -> Iterator:
        """``fn(item)`` for each item, in order, computed by the pool at most ``ahead`` items ahead of
        the consumer; an exception of ``fn`` is raised here, at its item. A sequence of one item is
        computed in the caller's thread: there is nothing to overlap with, and handing it to a
        thread (started on first use) and back costs more than reading a small record."""
        if isinstance(items, (list, tuple, range)) and len(items) == 1:
            yield fn(items[0])
            return
        pending: deque[Future] = deque()
        iterator = iter(items)
        try:
            for item in iterator:
                pending.append(self._executor.submit(fn, item))
                if len(pending) >= max(1, ahead):
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:  # the consumer stopped early: drop what has not started
                future.cancel()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class _Record:
    """A record in :class:`WindowBatches`: what the caller handed in, and its outputs so far."""

    meta: Any
    extras: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    waiting: int = 0          # windows handed in, not yet through the model
    closed: bool = False      # its last piece has been handed in
    failed: bool = False


@dataclass
class Done:
    """A record through the model: ``meta`` (its first piece, as handed in), ``extras`` (one per
    piece, in order) and ``outputs`` ``(n_windows, ...)`` (None without windows); or, with
    ``failed``, a record handed to :meth:`WindowBatches.fail`."""

    meta: Any
    extras: list
    outputs: np.ndarray | None
    failed: bool = False


class WindowBatches:
    """Windows of consecutive records in, model outputs per record out, in the same order.

    :meth:`add` hands in a piece of a record (a whole record, or a chunk of a long one); whenever
    ``batch_size`` windows are waiting, ``apply`` runs on exactly that many. :meth:`add`,
    :meth:`fail` and :meth:`finish` return the records now complete (:class:`Done`), in order.
    """

    def __init__(self, apply: ApplyFn, batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.apply, self.batch_size = apply, int(batch_size)
        self._records: deque[_Record] = deque()
        self._pending: deque[tuple[_Record, np.ndarray, np.ndarray]] = deque()
        self._waiting = 0

    def add(self, meta: Any, signals: np.ndarray, lead_mask: np.ndarray, extra: Any = None,
            first: bool = True, last: bool = True) -> list[Done]:
        """Hand in ``signals (w, 12, T)`` with ``lead_mask (12,)`` of a record; ``first``/``last``
        say whether this piece starts/ends it (a long record comes in several pieces)."""
        if first or not self._records or self._records[-1].closed:
            self._records.append(_Record(meta))
        record = self._records[-1]
        record.extras.append(extra)
        record.closed = last
        if len(signals):
            record.waiting += len(signals)
            self._pending.append((record, signals, np.repeat(np.asarray(lead_mask)[None], len(signals), axis=0)))
            self._waiting += len(signals)
        while self._waiting >= self.batch_size:
            self._run(self.batch_size)
        return self._pop_done()

    def fail(self, meta: Any, drop_open: bool = False) -> list[Done]:
        """A record that failed: handed back in its place with ``outputs`` None. ``drop_open``: the
        record being handed in piece by piece is the one that failed (its windows are dropped)."""
        if drop_open and self._records and not self._records[-1].closed:
            dropped = self._records.pop()
            kept = [entry for entry in self._pending if entry[0] is not dropped]
            self._waiting -= sum(len(entry[1]) for entry in self._pending if entry[0] is dropped)
            self._pending = deque(kept)
        self._records.append(_Record(meta, closed=True, failed=True))
        return self._pop_done()

    def finish(self) -> list[Done]:
        """Run the windows left (a last, smaller batch) and hand back every record."""
        if self._waiting:
            self._run(self._waiting)
        if self._records and not self._records[-1].closed:
            raise RuntimeError("WindowBatches.finish with a record still open")
        return self._pop_done()

    def _run(self, n: int) -> None:
        """Apply the model to the first ``n`` waiting windows and share out the outputs."""
        parts, owners = [], []
        while n:
            record, signals, mask = self._pending[0]
            take = min(n, len(signals))
            parts.append((signals[:take], mask[:take]))
            owners.append((record, take))
            if take == len(signals):
                self._pending.popleft()
            else:
                self._pending[0] = (record, signals[take:], mask[take:])
            n -= take
        signals = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])
        mask = parts[0][1] if len(parts) == 1 else np.concatenate([p[1] for p in parts])
        outputs = self.apply(np.ascontiguousarray(signals), np.ascontiguousarray(mask))
        offset = 0
        for record, take in owners:
            record.outputs.append(outputs[offset:offset + take])
            record.waiting -= take
            offset += take
        self._waiting -= offset

    def _pop_done(self) -> list[Done]:
        done = []
        while self._records and self._records[0].closed and not self._records[0].waiting:
            record = self._records.popleft()
            outputs = np.concatenate(record.outputs) if record.outputs else None
            done.append(Done(record.meta, record.extras, outputs, record.failed))
        return done
