"""PhysioNet/CinC Challenge 2020/2021 records: sources, scored classes, folds, dedup keys.

Labels: the SNOMED CT codes of a header's ``# Dx:`` line mapped onto the challenge's scored
classes (``challenge2021_dx_mapping.csv`` by default, 2020 as an option) with the challenge's
equivalent-class merges, as the task ``cinc-scored``. A record with no scored code has no label.
Folds: a stable hash (CRC-32) of the record id into 1-10 (no patient ids are published).
"""
from __future__ import annotations

import os
import zlib
from pathlib import Path

import pandas as pd

from ..errors import CremaError
from .ptbxl import ptbxl_source_id

TASK = "cinc-scored"
MAPPING_FILE = "challenge{year}_dx_mapping.csv"
# Copies shipped with the package, used when the CinC root has none.
PACKAGED_MAPPINGS = Path(__file__).resolve().parents[1] / "sample" / "cinc"

# Codes the challenge scores as one class: alias -> canonical code (whose abbreviation names it).
EQUIVALENT_CODES: dict[int, dict[str, str]] = {
    2020: {"713427006": "59118001",    # complete RBBB  -> RBBB
           "63593006": "284470004",    # SVPB           -> PAC
           "17338001": "427172004"},   # VPB            -> PVC
    2021: {"713427006": "59118001",
           "63593006": "284470004",
           "17338001": "427172004",
           "733534002": "164909002"},  # complete LBBB  -> LBBB
}

# Record-name prefix -> source (longest prefixes first so that "JS" wins over "S").
SOURCE_PREFIXES: tuple[tuple[str, str], ...] = (
    ("JS", "ningbo"), ("HR", "ptbxl"), ("A", "cpsc2018"), ("Q", "cpsc2018-extra"),
    ("E", "georgia"), ("S", "ptb"), ("I", "incart"),
)


def cinc_source(record_id: str, folder: str | None = None) -> str:
    """The database a CinC record comes from, by its name prefix; else the folder name."""
    for prefix, source in SOURCE_PREFIXES:
        if record_id.startswith(prefix) and record_id[len(prefix):].isdigit():
            return source
    if folder:
        return folder
    raise CremaError(f"cannot tell the source of CinC record {record_id!r}")


def cinc_source_id(record_id: str, source: str) -> str:
    """Dedup key: PTB-XL records in CinC format (``HR00001``) share PTB-XL's own key."""
    if source == "ptbxl" and record_id.startswith("HR") and record_id[2:].isdigit():
        return ptbxl_source_id(int(record_id[2:]))
    return f"{source}:{record_id}"


def hash_fold(key: str, n_folds: int = 10) -> int:
    """A fold in ``1..n_folds`` from a stable hash of ``key`` (same on every machine and run)."""
    return zlib.crc32(key.encode("utf-8")) % n_folds + 1


def mapping_path(year: int = 2021, root: str | os.PathLike | None = None) -> Path:
    """The challenge's dx mapping CSV: the CinC root's own copy when present, else the packaged one."""
    if year not in EQUIVALENT_CODES:
        raise CremaError(f"CinC mapping year must be 2020 or 2021, got {year}")
    name = MAPPING_FILE.format(year=year)
    if root is not None and (Path(root) / name).is_file():
        return Path(root) / name
    return PACKAGED_MAPPINGS / name


def scored_classes(year: int = 2021, root: str | os.PathLike | None = None
                   ) -> tuple[dict[str, str], list[str]]:
    """``(code -> class name, sorted class names)`` for the scored, merged classes."""
    table = pd.read_csv(mapping_path(year, root), dtype={"snomed_code": str})
    scored = table[table["scored"].astype(int) == 1]
    abbreviation = dict(zip(scored["snomed_code"], scored["abbreviation"]))
    equivalent = EQUIVALENT_CODES[year]
    code_to_class = {code: abbreviation[equivalent.get(code, code)] for code in abbreviation}
    return code_to_class, sorted(set(code_to_class.values()))


def dx_labels(dx_codes: list[str] | None, code_to_class: dict[str, str]) -> list[str]:
    """Sorted distinct scored class names of a record's ``# Dx`` codes (empty = no label)."""
    return sorted({code_to_class[c] for c in (dx_codes or []) if c in code_to_class})


def is_cinc_folder(records: list[Path]) -> bool:
    """True when every record is a WFDB header with a MATLAB signal file (the challenge layout)."""
    return bool(records) and all(p.suffix == ".hea" and p.with_suffix(".mat").exists()
                                 for p in records)
