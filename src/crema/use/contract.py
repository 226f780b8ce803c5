"""The input contract of a model, checked on one record: is it the kind of ECG the model expects?

What the preprocessing will do with a record (resample it, pad it, rebuild limb leads, zero a
flat lead) is fine for a batch job but worth showing to someone looking at one ECG: a rate in the
wrong unit, a lead that is missing or flat, a record shorter than a window. The checks here only
describe; :func:`crema.data.preprocess.preprocess_recording` is what refuses.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from ..config import STANDARD_LEADS, PreprocessConfig
from ..data.leads import UnknownLeadError, canonical_lead, to_standard
from ..data.preprocess import FLAT_STD, window_starts
from ..data.recording import Recording
from .inputs import MAX_FS, MIN_FS

LEAD_STATES = ("recorded", "derived", "flat", "missing")


@dataclass
class Check:
    """One line of the contract: what was checked, whether it holds, and the detail."""

    name: str
    ok: bool
    detail: str


def lead_states(rec: Recording, derive_limb_leads: bool = True) -> dict[str, str]:
    """For each standard lead: ``recorded``, ``derived`` (rebuilt from I and II), ``flat``
    (recorded but constant) or ``missing`` (a zero row with the lead mask off)."""
    raw, recorded = to_standard(rec.signal, rec.leads, derive_limb_leads=False)
    _, present = to_standard(rec.signal, rec.leads, derive_limb_leads=derive_limb_leads)
    flat = recorded & (raw.std(axis=-1) < FLAT_STD)
    states = {}
    for i, name in enumerate(STANDARD_LEADS):
        states[name] = ("flat" if flat[i] else "recorded" if recorded[i]
                        else "derived" if present[i] else "missing")
    return states


def check_contract(rec: Recording, cfg: PreprocessConfig) -> list[Check]:
    """Rate, duration, leads present and flat leads of ``rec`` against the preprocessing ``cfg``."""
    states = lead_states(rec, cfg.derive_limb_leads)
    by_state = {state: [lead for lead, s in states.items() if s == state] for state in LEAD_STATES}
    rate_ok = MIN_FS <= rec.fs <= MAX_FS
    rate = f"{rec.fs:g} Hz" + (f", resampled to {cfg.fs:g} Hz" if rec.fs != cfg.fs else "")
    if not rate_ok:
        rate += f" (outside {MIN_FS:g}-{MAX_FS:g} Hz: is it given in Hz?)"
    duration = rec.duration_s
    n_windows = len(window_starts(int(round(duration * cfg.fs)), cfg.window, cfg.stride))
    length = f"{duration:.1f} s: {n_windows} window{'s' if n_windows > 1 else ''} of {cfg.window_s:g} s"
    if duration < cfg.window_s:
        length += f", zero-padded (shorter than {cfg.window_s:g} s)"
    if duration < cfg.min_length_s:
        length += f"; below the minimum {cfg.min_length_s:g} s, refused"
    leads = f"{len(by_state['recorded']) + len(by_state['flat'])} of 12 recorded"
    if by_state["derived"]:
        leads += f"; {', '.join(by_state['derived'])} rebuilt from I and II"
    if by_state["missing"]:
        leads += f"; {', '.join(by_state['missing'])} missing (zeros, masked)"
    ignored = [name for name in rec.leads if _is_extra(name)]
    if ignored:
        leads += f"; ignored: {', '.join(ignored)}"
    flat = (f"{', '.join(by_state['flat'])} flat (constant), given to the model as zeros"
            if by_state["flat"] else "none")
    return [Check("sampling rate", rate_ok, rate),
            Check("duration", duration >= cfg.min_length_s, length),
            Check("leads", not by_state["missing"], leads),
            Check("flat leads", not by_state["flat"], flat)]


def contract_report(rec: Recording, cfg: PreprocessConfig) -> dict:
    """JSON-ready: ``checks`` (name, ok, detail) and ``leads`` (standard lead -> state)."""
    return {"checks": [asdict(c) for c in check_contract(rec, cfg)],
            "leads": lead_states(rec, cfg.derive_limb_leads)}


def _is_extra(name: str) -> bool:
    try:
        return canonical_lead(name) is None
    except UnknownLeadError:
        return True


__all__ = ["Check", "check_contract", "contract_report", "lead_states", "LEAD_STATES"]
