"""A benchmark's table written into a page (docs/BENCHMARKS.md ...) between its two markers.

Every benchmark that takes ``--doc PAGE`` writes through :func:`write_doc`; the scripts import it
as ``from doc_table import write_doc`` (their own folder is first on ``sys.path`` when run as
``python benchmarks/NAME.py``; the tests get it from pytest's ``pythonpath``).
"""
from __future__ import annotations

from pathlib import Path

from crema.atomic import atomic_write_text


def write_doc(path: Path, table: str, markers: tuple[str, str]) -> None:
    """Replace the text between ``markers`` (start, end) of ``path`` by ``table``, atomically;
    exit with one line naming the page when it lacks either marker."""
    text = path.read_text()
    start_mark, end_mark = markers
    if start_mark not in text or end_mark not in text:
        raise SystemExit(f"{path}: no {start_mark} ... {end_mark} markers to write the table between")
    start, end = text.index(start_mark) + len(start_mark), text.index(end_mark)
    atomic_write_text(path, text[:start] + "\n" + table + text[end:])
