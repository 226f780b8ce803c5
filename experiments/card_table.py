"""The measured tables of the model card, from the card suite's ``summary.json``.

Two Markdown tables: PTB-XL superdiagnostic on the test fold (probe and fine-tune at each label
fraction, mean over seeds with a 95% bootstrap interval) and CinC leave-one-source-out (probe,
each held-out source and their mean). ``summary.json`` is what ``crema report RUN`` writes beside
the run's ``results.json``. Usage::

    python experiments/card_table.py runs/eval/card > results/card/card_table.md
    python experiments/card_table.py results/card          # the committed run gives the same tables
    python experiments/card_table.py runs/eval/card-w128 --model crema-w128-ecg12 > results/card-w128/card_table.md
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lab import card_tables, load_summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a card suite's run folder (or its committed results folder)")
    p.add_argument("--model", default="crema-mini-ecg12", help="shipped name of the suite's crema run")
    args = p.parse_args(argv)
    print(card_tables(load_summary(args.run), args.model))
    return 0


if __name__ == "__main__":
    sys.exit(main())
