"""The worker side of ``crema prepare``: records read and preprocessed a chunk at a time in a
process pool, each chunk's windows written to a small ``.npy`` of its own, so that results never
travel through pipes (:mod:`crema.data.prepare` records and assembles the chunks).

Pool workers leave Ctrl-C to the parent, which stops the pool (SIGTERM does the same, see
:mod:`crema.cli`), and exit by themselves when the parent is killed outright.
"""
from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from ..config import STANDARD_LEADS, PreprocessConfig
from ..errors import CremaError
from .preprocess import preprocess_recording
from .sources import RecordJob, load_job

PARENT_POLL_S = 0.5  # how often a pool worker checks that its parent is still alive


@dataclass
class RecordResult:
    """What a worker returns for one record (its windows are in the chunk file)."""

    job: RecordJob
    n_windows: int = 0
    starts: np.ndarray | None = None
    lead_mask: np.ndarray | None = None
    fs: float | None = None
    meta: dict = field(default_factory=dict)
    error: str | None = None



def process_chunk(jobs: list[RecordJob], cfg: PreprocessConfig, chunk_path: str) -> list[RecordResult]:
    """Read and preprocess ``jobs``; write their windows, in order, as float16
    ``(sum W, 12, window)`` to ``chunk_path``; a failing record becomes a result with its error."""
    results, pieces = [], []
    for job in jobs:
        try:
            rec = load_job(job)
            win = preprocess_recording(rec, cfg)
        except CremaError as exc:
            # the report names the record beside its reason: do not name it twice
            results.append(RecordResult(job=job, error=str(exc).removeprefix(f"{job.key}: ")))
            continue
        except Exception as exc:  # an unexpected failure of one record must not stop the rest
            results.append(RecordResult(job=job, error=f"{type(exc).__name__}: {exc}"))
            continue
        pieces.append(win.signals.astype(np.float16))
        results.append(RecordResult(job=job, n_windows=len(win), starts=win.starts,
                                    lead_mask=win.lead_mask, fs=rec.fs, meta=rec.meta))
    stacked = (np.concatenate(pieces) if pieces
               else np.zeros((0, len(STANDARD_LEADS), cfg.window), dtype=np.float16))
    np.save(chunk_path, stacked)
    return results


def _worker_init() -> None:
    """Set up a pool worker. Ctrl-C reaches the whole process group; the parent handles it (it
    stops the pool and removes the temporary folder), so the worker ignores it rather than print
    a traceback. SIGTERM gets its default action back (the parent's handler, inherited through
    fork, would only fail the current chunk). A watcher thread ends the worker when its parent
    dies, which SIGKILL of the parent would otherwise leave running as an orphan."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True,
                     name="crema-parent-watch").start()


def _exit_with_parent(parent: int) -> None:
    """Exit the process at once when it is no longer the child of ``parent``."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os._exit(1)


def pool_map(todo: list[tuple[int, list[RecordJob], str]], cfg: PreprocessConfig,
              workers: int) -> Iterator[tuple[int, list[RecordResult]]]:
    """Yield ``(chunk number, results)`` for the ``(number, jobs, windows file)`` of ``todo`` as
    they finish, keeping at most ``2 * workers`` chunks in flight so that memory does not grow
    with the number of records."""
    with ProcessPoolExecutor(max_workers=workers, initializer=_worker_init) as pool:
        pending: dict[Future, int] = {}
        queue = iter(todo)
        try:
            for i, chunk, path in queue:
                pending[pool.submit(process_chunk, chunk, cfg, path)] = i
                if len(pending) >= 2 * workers:
                    break
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    i = pending.pop(future)
                    yield i, future.result()
                    nxt = next(queue, None)
                    if nxt is not None:
                        pending[pool.submit(process_chunk, nxt[1], cfg, nxt[2])] = nxt[0]
        finally:
            for future in pending:
                future.cancel()
