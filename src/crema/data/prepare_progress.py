"""Where ``crema prepare`` builds a corpus, and what it has finished there: the hidden folder
``.DIR.partial`` beside ``DIR``, so that an interrupted run is resumed, not redone.

Layout of ``.DIR.partial``:

    progress.json               what is being built: format, the request (settings, as in
                                prepare_report.json), a digest of the record list, records per
                                chunk and the number of chunks; written once, atomically
    chunks/chunk_NNNNNN.npy     float16 (W, 12, window): the chunk's windows (a pool worker writes it)
    chunks/chunk_NNNNNN.csv     its index rows, without header (as they will appear in index.csv)
    chunks/chunk_NNNNNN.mask.npy  bool (W, 12): its lead masks
    chunks/chunk_NNNNNN.json    written last, atomically: the chunk is finished (windows, records,
                                skipped records and why); a chunk without it is done again
    assembled.json              how many chunks are already copied into signals.npy (their .npy
                                files are deleted as they are copied)
    signals.npy, lead_mask.npy, index.csv, ...   the corpus files, as they are written

A run with the same request and the same records (same digest) resumes the folder: finished
chunks are not read again, and the result is byte-for-byte what an uninterrupted run writes. Any
other run starts it afresh. The folder is renamed to ``DIR`` once complete (the progress files
removed first). The caller holds ``DIR``'s output lock, so one run at a time uses the folder.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from ..atomic import atomic_write_text, replace_directory
from .corpus import CORPUS_FILES

PARTIAL_SUFFIX = ".partial"
PROGRESS_FILE = "progress.json"
ASSEMBLED_FILE = "assembled.json"
CHUNK_DIR = "chunks"
FORMAT = 1


def partial_folder(out: Path) -> Path:
    """``.DIR.partial`` beside ``DIR``."""
    return out.parent / f".{out.name}{PARTIAL_SUFFIX}"


def jobs_digest(jobs: Sequence[object]) -> str:
    """sha256 of the record list in order (every field of every job: path, ids, labels known in
    advance...): a resumed run must be building from the same records."""
    digest = hashlib.sha256()
    for job in jobs:
        digest.update(repr(job).encode("utf-8", "surrogateescape"))
        digest.update(b"\n")
    return digest.hexdigest()


@dataclass
class PartialBuild:
    """The partial folder of one ``crema prepare`` run.

    Attributes:
        folder: ``.DIR.partial``.
        chunk_size: records per chunk (the last may hold fewer).
        n_chunks: chunks in all.
        done: chunks already finished when the run started (resumed from an earlier run).
    """

    folder: Path
    chunk_size: int
    n_chunks: int
    done: set[int] = field(default_factory=set)
    complete: bool = False
    _assembled: int = 0

    @classmethod
    def open(cls, out: Path, request: dict, jobs: Sequence[object], chunk_size: int) -> "PartialBuild":
        """Resume ``.DIR.partial`` when it was left by a run of the same ``request`` on the same
        ``jobs`` (its chunk size is kept, whatever ``chunk_size`` says now), or when it already
        holds the finished corpus of ``request`` (a run stopped just before the rename); else
        start it anew."""
        folder = partial_folder(out)
        if _holds_corpus(folder, request):
            return cls(folder, chunk_size, 0, complete=True)
        progress = dict(format=FORMAT, request=request, jobs=len(jobs), jobs_sha256=jobs_digest(jobs))
        previous = _read_json(folder / PROGRESS_FILE)
        if previous is not None and {k: previous.get(k) for k in progress} == progress:
            size, assembled = _count(previous, "chunk_size"), _count(_read_json(folder / ASSEMBLED_FILE), "chunks")
            if size is not None and size > 0 and assembled is not None:
                build = cls(folder, size, -(-len(jobs) // size), _assembled=assembled)
                build.done = {i for i in range(build.n_chunks) if build.finished(i)}
                return build
        if folder.exists():
            shutil.rmtree(folder)
        (folder / CHUNK_DIR).mkdir(parents=True)
        n_chunks = -(-len(jobs) // chunk_size)
        atomic_write_text(folder / PROGRESS_FILE, json.dumps(
            {**progress, "chunk_size": chunk_size, "chunks": n_chunks}, indent=2) + "\n")
        return cls(folder, chunk_size, n_chunks)

    # ------------------------------------------------------------------ chunk files

    def chunk_file(self, i: int, suffix: str = ".npy") -> Path:
        """``chunks/chunk_NNNNNN<suffix>`` (``.npy`` windows, ``.csv`` rows, ``.mask.npy``, ``.json``)."""
        return self.folder / CHUNK_DIR / f"chunk_{i:06d}{suffix}"

    def finished(self, i: int) -> bool:
        """Chunk ``i`` is recorded, with its files (its windows may already be in signals.npy)."""
        if not self.chunk_file(i, ".json").is_file():
            return False
        parts = [".csv", ".mask.npy"] + ([".npy"] if i >= self.assembled else [])
        return all(self.chunk_file(i, suffix).is_file() for suffix in parts)

    def record(self, i: int, outcome: dict) -> None:
        """Mark chunk ``i`` finished (its windows, rows and masks are written): the last write."""
        atomic_write_text(self.chunk_file(i, ".json"), json.dumps(outcome) + "\n")

    def outcome(self, i: int) -> dict:
        """What :meth:`record` stored for chunk ``i``."""
        return json.loads(self.chunk_file(i, ".json").read_text())

    # ------------------------------------------------------------------ assembly

    @property
    def assembled(self) -> int:
        """Chunks already copied into ``signals.npy`` (0 before the copy starts)."""
        return self._assembled

    def set_assembled(self, chunks: int) -> None:
        atomic_write_text(self.folder / ASSEMBLED_FILE, json.dumps({"chunks": chunks}) + "\n")
        self._assembled = chunks

    def finish(self, out: Path) -> None:
        """Remove the progress files and rename the folder to ``out``. The corpus files are all
        written (``prepare_report.json`` last), so a run stopped in here is finished by the next."""
        shutil.rmtree(self.folder / CHUNK_DIR, ignore_errors=True)
        (self.folder / ASSEMBLED_FILE).unlink(missing_ok=True)
        (self.folder / PROGRESS_FILE).unlink(missing_ok=True)
        replace_directory(self.folder, out)

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _holds_corpus(folder: Path, request: dict) -> bool:
    """``folder`` holds every corpus file, its report (written last) made for ``request``."""
    report = _read_json(folder / "prepare_report.json")
    return (report is not None and report.get("request") == request
            and all((folder / name).is_file() for name in CORPUS_FILES))


def _count(state: dict | None, key: str) -> int | None:
    """``state[key]`` as a count (0 when there is no state yet); None when it is not one."""
    if state is None:
        return 0
    value = state.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _read_json(path: Path) -> dict | None:
    """A JSON object from ``path``; None when absent or unreadable (a resumed run then starts over)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None
