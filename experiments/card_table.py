"""The measured table of the model card, from the card suite's ``results.json``.

Two Markdown tables: PTB-XL superdiagnostic on the test fold (probe and fine-tune at each label
fraction, mean over seeds with a 95% bootstrap interval) and CinC leave-one-source-out (probe,
each held-out source and their mean). Usage::

    python experiments/card_table.py runs/eval/card > results/card/card_table.md
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
NAMES = {"crema": "**crema-mini-ecg12** (CREMA)", "mae": "plain MAE, same recipe and steps",
         "random_sit": "random-init SiT (same size)", "random_kernels": "random kernels (2,000), no training",
         "supervised_resnet1d": "1-D ResNet, supervised"}


def md(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(r) + " |" for r in rows])


def main(run: str) -> int:
    sys.path.insert(0, str(REPO / "src"))
    from crema.eval.report import load_results
    from crema.eval.summary import pivot_table, summarise

    summaries = summarise(load_results(Path(run))["results"])
    out = []
    table = pivot_table(summaries, "ptbxl-superdiagnostic", "label_fraction", "fraction")
    if table:
        header, rows = table
        rows = [[r[0], NAMES.get(r[1], r[1]), *r[2:]] for r in rows]
        out += ["PTB-XL superdiagnostic, test fold 10 (66 records), macro AUROC, mean over seeds 0-2 "
                "(label subsets; fine-tune seeds) [95% bootstrap interval over test records]:", "", md(header, rows), ""]
    loso = [s for s in summaries if s.key["experiment"] == "leave_source_out"]
    if loso:
        sources = sorted({s.key["holdout_source"] for s in loso})
        methods = sorted({s.key["method"] for s in loso}, key=lambda m: list(NAMES).index(m) if m in NAMES else 99)
        cell = {(s.key["method"], s.key["holdout_source"]): s.mean for s in loso}
        rows = [[NAMES.get(m, m), *(f"{cell[(m, src)]:.3f}" if (m, src) in cell else "" for src in sources),
                 f"{np.nanmean([cell.get((m, src), np.nan) for src in sources]):.3f}"] for m in methods]
        out += ["CinC 2020/2021 scored classes, leave one source out (train on the other five), linear probe, "
                "macro AUROC:", "", md(["method", *sources, "mean"], rows), ""]
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
