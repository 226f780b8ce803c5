"""Which corpus record each row of a labels file names: its id, its ``source_id``, its path
relative to the source (with or without extension), its file name, or a stack's row id."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

from ...errors import CremaError
from .cells import EXAMPLES, first_few
from .table import LabelsFile


@dataclass
class Match:
    """Rows of a labels file matched to corpus records.

    Attributes:
        record_of_row: ``(rows,)`` int, the record (position in the records table) each row
            names, -1 for none.
        rows_without_record: the keys of the rows that name no record.
        records_without_row: ids of the records no row names.
    """

    record_of_row: np.ndarray
    rows_without_record: list[str]
    records_without_row: list[str]

    @property
    def matched(self) -> int:
        return int((self.record_of_row >= 0).sum())


def record_table(index: pd.DataFrame) -> pd.DataFrame:
    """One row per record of a corpus index (its first window), in index order, with the columns
    matching needs: ``record_id, source, source_id, patient_id, fold, split`` and ``path`` ("" in
    corpora made before it was recorded)."""
    first = index.drop_duplicates(["source", "record_id"]).reset_index(drop=True)
    if "path" not in first.columns:
        first = first.assign(path="")
    return first[["record_id", "source", "source_id", "patient_id", "fold", "split", "path"]].copy()


def match_rows(labels: LabelsFile, records: pd.DataFrame) -> Match:
    """Match each row's key to a record by its id, its ``source_id``, its path relative to the
    source (with or without extension) or its file name; keys of digits also match ids of digits
    with other leading zeros.

    Raises:
        CremaError: a key matches several records, several rows name one record, or no row
            matches any record.
    """
    aliases: dict[str, set[int]] = {}
    for i, (record_id, source_id, path) in enumerate(zip(records["record_id"], records["source_id"],
                                                         records["path"])):
        for alias in record_aliases(str(record_id), str(source_id), str(path)):
            aliases.setdefault(alias, set()).add(i)
    found = np.full(len(labels), -1, dtype=np.int64)
    ambiguous, claimed, unmatched = [], {}, []
    for row, key in enumerate(labels.keys):
        hits = set().union(*(aliases.get(a, set()) for a in key_aliases(key)))
        if len(hits) > 1:
            ambiguous.append((key, sorted(hits)))
        elif hits:
            found[row] = hits.pop()
            claimed.setdefault(int(found[row]), []).append(key)
        else:
            unmatched.append(key)
    names = (records["source"].astype(str) + "/" + records["record_id"].astype(str)).tolist()
    if ambiguous:
        examples = "; ".join(f"{k!r} matches {', '.join(names[i] for i in hits[:3])}"
                             for k, hits in ambiguous[:EXAMPLES])
        raise CremaError(f"{labels.path}: {len(ambiguous)} keys match several records ({examples}); "
                         "use paths relative to the source as keys")
    several = {r: keys for r, keys in claimed.items() if len(keys) > 1}
    if several:
        examples = "; ".join(f"{names[r]} by {', '.join(map(repr, keys))}"
                             for r, keys in list(several.items())[:EXAMPLES])
        raise CremaError(f"{labels.path}: duplicate keys: {len(several)} records are named by more than one "
                         f"row ({examples}); give each record one row")
    if not (found >= 0).any():
        raise CremaError(f"{labels.path}: no row matches a record of the corpus (keys in column "
                         f"{labels.key!r}, e.g. {first_few(labels.keys)}; record ids e.g. "
                         f"{first_few(records['record_id'].tolist())}); keys are record ids (file stems), "
                         "paths relative to the source, or a stack's row ids")
    named = set(found[found >= 0].tolist())
    without = [str(records["record_id"].iloc[i]) for i in range(len(records)) if i not in named]
    return Match(found, unmatched, without)


def record_aliases(record_id: str, source_id: str, path: str) -> set[str]:
    names = {record_id, source_id}
    if path:
        pure = PurePosixPath(path)
        names |= {path, str(pure.with_suffix("")) if pure.suffix else path, pure.name}
    return {n for a in names for n in key_aliases(a)}


def key_aliases(key: str) -> set[str]:
    """``key`` and, for digits with leading zeros, the same number without them."""
    return {key, str(int(key))} if key.isdigit() else {key}
