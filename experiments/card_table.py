"""The measured tables of the model card, from the card suite's ``summary.json``.

Two Markdown tables: PTB-XL superdiagnostic on the test fold (probe and fine-tune at each label
fraction, mean over seeds with a 95% bootstrap interval) and CinC leave-one-source-out (probe,
each held-out source and their mean). ``summary.json`` is what ``crema report RUN`` writes beside
the run's ``results.json``. Usage::

    python experiments/card_table.py runs/eval/card > results/card/card_table.md
    python experiments/card_table.py results/card          # the committed run gives the same tables
"""
from __future__ import annotations

import sys
from pathlib import Path

from lab import card_tables, load_summary


def main(run: str) -> int:
    print(card_tables(load_summary(Path(run))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
