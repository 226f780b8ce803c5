"""Lead names, their canonical order, aliases, and mapping any lead set onto the standard 12."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..config import STANDARD_LEADS
from ..errors import CremaError

_ALIASES: dict[str, str] = {
    **{name.lower(): name for name in STANDARD_LEADS},
    "d1": "I", "d2": "II", "d3": "III", "lead i": "I", "lead ii": "II", "lead iii": "III",
    "avr": "aVR", "avl": "aVL", "avf": "aVF", "-avr": "-aVR",
    "mlii": "II", "ml2": "II",
}
# Leads that records carry beyond the standard 12 and that CREMA ignores on purpose.
EXTRA_LEADS = frozenset({"vx", "vy", "vz", "x", "y", "z", "-avr"})


class UnknownLeadError(CremaError, ValueError):
    """A lead name that is neither one of the standard 12 (in any spelling) nor a known extra."""


def canonical_lead(name: str) -> str | None:
    """The standard spelling of ``name`` (case-insensitive, common aliases), ``None`` for a known
    extra lead (Frank X/Y/Z, -aVR); raises :class:`UnknownLeadError` for anything else."""
    return _canonical_lead(str(name))


@lru_cache(maxsize=4096)  # every record names its leads again: the same few dozen spellings
def _canonical_lead(name: str) -> str | None:
    key = " ".join(name.strip().lower().split())
    if key.startswith("lead "):
        key = key[5:] if key[5:] in _ALIASES else key
    if key in EXTRA_LEADS:
        return None
    if key not in _ALIASES or _ALIASES[key].startswith("-"):
        raise UnknownLeadError(f"unknown lead name {name!r}")
    return _ALIASES[key]


class DuplicateLeadError(CremaError, ValueError):
    """The same lead is named twice (``II`` and ``ii``, or ``I,I``): which row is real is unknown."""


def duplicate_leads(leads: tuple[str, ...] | list[str]) -> list[str]:
    """Standard lead names that ``leads`` names more than once (in any spelling), in order;
    unknown names and the known extras are left to :func:`canonical_lead`'s callers."""
    seen: set[str] = set()
    twice: list[str] = []
    for name in leads:
        try:
            canon = canonical_lead(name)
        except UnknownLeadError:
            continue
        if canon is not None and canon in seen and canon not in twice:
            twice.append(canon)
        seen.add(canon)
    return twice


def to_standard(signal: np.ndarray, leads: tuple[str, ...] | list[str],
                derive_limb_leads: bool = True,
                target: tuple[str, ...] = STANDARD_LEADS) -> tuple[np.ndarray, np.ndarray]:
    """Reorder ``signal`` into ``target`` lead order.

    Args:
        signal: ``(n_leads, T)`` float.
        leads: names of the rows of ``signal`` (any case or alias).
        derive_limb_leads: rebuild III, aVR, aVL, aVF from I and II when they are absent
            (Einthoven and Goldberger), since they carry no independent information.
        target: the lead order wanted (default the standard 12).

    Returns:
        ``(len(target), T)`` float32 with absent leads as zeros, and a bool ``(len(target),)``
        lead-present mask (True = the lead is real or derived).

    Raises:
        UnknownLeadError: a name that is not an ECG lead.
        DuplicateLeadError: one lead named twice.
    """
    signal = np.asarray(signal, dtype=np.float32)
    if signal.ndim != 2 or signal.shape[0] != len(leads):
        raise ValueError(f"signal shape {signal.shape} does not match {len(leads)} lead names")
    twice = duplicate_leads(leads)
    if twice:
        raise DuplicateLeadError(f"lead {', '.join(twice)} is named more than once "
                                 f"(leads: {', '.join(leads)})")
    by_name: dict[str, np.ndarray] = {}
    for row, name in zip(signal, leads):
        canon = canonical_lead(name)
        if canon is not None:
            by_name[canon] = row
    if derive_limb_leads and "I" in by_name and "II" in by_name:
        lead_i, lead_ii = by_name["I"], by_name["II"]
        by_name.setdefault("III", lead_ii - lead_i)
        by_name.setdefault("aVR", -(lead_i + lead_ii) / 2)
        by_name.setdefault("aVL", lead_i - lead_ii / 2)
        by_name.setdefault("aVF", lead_ii - lead_i / 2)
    out = np.zeros((len(target), signal.shape[1]), dtype=np.float32)
    present = np.zeros(len(target), dtype=bool)
    for i, name in enumerate(target):
        if name in by_name:
            out[i] = by_name[name]
            present[i] = True
    return out, present
