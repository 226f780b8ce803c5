"""The cells of a labels file as every step reads them (unknown, 0/1, numbers, class lists),
and how messages quote examples."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..corpus import LABEL_NONE, LABEL_SEP

# Cells that mean "not known" (compared lower-cased, after stripping spaces).
MISSING_CELLS = frozenset({"", "na", "n/a", "nan", "null", "?", LABEL_NONE})
TRUE_CELLS = frozenset({"1", "1.0", "yes", "true"})
FALSE_CELLS = frozenset({"0", "0.0", "no", "false"})
EXAMPLES = 5                      # examples quoted in messages and summaries


def is_missing(text: str) -> bool:
    """Whether a cell means unknown (:data:`MISSING_CELLS`)."""
    return text.strip().lower() in MISSING_CELLS


def finite_number(text: str) -> float | None:
    """The cell as a finite number, or None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if np.isfinite(value) else None


def classes_of(cell: str) -> list[str]:
    """The classes of a task cell (none for empty or ``-``)."""
    return [] if cell in ("", LABEL_NONE) else cell.split(LABEL_SEP)


def first_few(items: Sequence, n: int = EXAMPLES) -> str:
    """The first ``n`` items for a message, with the count when there are more."""
    shown = ", ".join(str(i) for i in list(items)[:n])
    return shown + (f" ... ({len(items)} in all)" if len(items) > n else "")


def quoted(names: Sequence) -> str:
    """Column names quoted for a message."""
    return ", ".join(repr(str(n)) for n in names)
