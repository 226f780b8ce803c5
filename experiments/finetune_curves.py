"""Validation AUROC per fine-tuning epoch of a suite run: did the schedule end too early?

Reads ``OUT/finetune/<method>/<task>/<fraction>/<seed>/finetune_log.jsonl`` of a suite run and
plots one panel per label fraction, one line per (method, seed); epoch -1 is the linear probe
that ``--probe-init`` starts from. Writes ``--out`` (PNG) and prints, per method and fraction,
the mean best epoch and how many runs were still improving in their last two epochs.

Usage::

    python experiments/finetune_curves.py runs/eval/card --out results/card/plots/finetune_curves.png
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

COLOURS = {"crema": "#c0392b", "mae": "#7f8c8d", "contrastive": "#d68910", "supervised_resnet1d": "#2471a3",
           "supervised_sit": "#27ae60"}


def read_curves(run: Path) -> dict[tuple[str, str], list[list[dict]]]:
    """``{(method, fraction folder): [history of each seed]}``; the runs of every pretraining seed
    of a method (folders ``method@seedK``) count as that method's."""
    curves: dict[tuple[str, str], list[list[dict]]] = {}
    for log in sorted((run / "finetune").glob("*/*/*/*/finetune_log.jsonl")):
        method, fraction = log.parts[-5].split("@")[0], log.parts[-3]
        rows = [json.loads(x) for x in log.read_text().splitlines() if x.strip()]
        curves.setdefault((method, fraction), []).append(rows)
    return curves


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = read_curves(args.run)
    fractions = sorted({f for _, f in curves})
    fig, axes = plt.subplots(1, len(fractions), figsize=(6 * len(fractions), 3.8), squeeze=False)
    for ax, fraction in zip(axes[0], fractions):
        for (method, f), runs in sorted(curves.items()):
            if f != fraction:
                continue
            best_epochs, improving = [], 0
            for i, rows in enumerate(runs):
                rows = [r for r in rows if r.get("val_auroc") is not None]
                ax.plot([r["epoch"] for r in rows], [r["val_auroc"] for r in rows], color=COLOURS.get(method, "k"),
                        alpha=0.8, label=method if i == 0 else None, marker="o", markersize=2.5, linewidth=1)
                best = max(rows, key=lambda r: r["val_auroc"])
                best_epochs.append(best["epoch"])
                improving += int(best["epoch"] >= rows[-1]["epoch"] - 1)
            print(f"{method:20s} {fraction:5s} best epoch (mean) {sum(best_epochs) / len(best_epochs):5.1f}; "
                  f"runs whose best is in their last two epochs: {improving}/{len(runs)}")
        ax.set_title(f"fine-tuning, {float(fraction[1:]):.0%} of the labels (validation fold 9)", fontsize=10)
        ax.set_xlabel("epoch (-1 = the probe the head starts from)")
        ax.set_ylabel("validation macro AUROC")
        ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
