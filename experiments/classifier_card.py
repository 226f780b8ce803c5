"""Measure a fine-tuned classifier for its model card: per-class test AUROC with 95% intervals.

The classifier is run exactly as a user runs it, through ``crema.load(...).predict_records`` on
the original record files (not on the prepared corpus), for the records of the corpus's test split.
The labels come from the corpus's ``index.csv``. Per class: AUROC, 95% percentile bootstrap
interval over records (1,000 resamples), positives in the test split, the shipped threshold, and
sensitivity / specificity at that threshold. Writes ``OUT/card_table.md`` and ``OUT/card.json``.

    python experiments/classifier_card.py runs/release/crema-mini-ecg12-superdiagnostic \\
        --corpus runs/corpora/ptbxl --task ptbxl-superdiagnostic --records "$CREMA_DATA/ptbxl" \\
        --out results/shipped-classifier
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import crema
from crema.eval.metrics import auroc, bootstrap_auroc, percentile_interval


def test_records(corpus: Path, task: str, records_root: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Record files of the test split with a label for ``task``, their ``(n, K)`` labels, the classes."""
    classes = json.loads((corpus / "classes.json").read_text())[task]
    index = pd.read_csv(corpus / "index.csv", dtype=str, keep_default_na=False)
    rows = index[(index["split"] == "test") & (index[f"labels:{task}"] != "")].drop_duplicates("record_id")
    labels = np.array([[c in cell.split("|") for c in classes] for cell in rows[f"labels:{task}"]], dtype=np.int64)
    return [records_root / p for p in rows["path"]], labels, classes


def class_rows(y: np.ndarray, probs: np.ndarray, classes: list[str], thresholds: list[float],
               n_resamples: int) -> list[dict]:
    """One dict per class: AUROC, interval, positives, threshold, sensitivity, specificity."""
    per_class = auroc(y, probs, classes).per_class
    out = []
    for k, name in enumerate(classes):
        low, high = percentile_interval(bootstrap_auroc(y[:, [k]], probs[:, [k]], n_resamples, seed=0))
        predicted = probs[:, k] >= thresholds[k]
        positives = y[:, k] == 1
        out.append({"class": name, "auroc": per_class[name], "ci95": [low, high], "positives": int(positives.sum()),
                    "threshold": thresholds[k],
                    "sensitivity": float(predicted[positives].mean()) if positives.any() else None,
                    "specificity": float((~predicted[~positives]).mean()) if (~positives).any() else None})
    return out


def markdown(rows: list[dict], macro: float, macro_ci: tuple[float, float], n: int) -> str:
    lines = ["| class | test AUROC [95% CI] | positives | threshold | sensitivity | specificity |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['class']} | {r['auroc']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}] | "
                     f"{r['positives']} of {n} | {r['threshold']:.3f} | {r['sensitivity']:.2f} | {r['specificity']:.2f} |")
    lines.append(f"| **macro** | **{macro:.3f}** [{macro_ci[0]:.3f}, {macro_ci[1]:.3f}] | | | | |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("classifier", help="classifier folder or shipped name")
    p.add_argument("--corpus", type=Path, required=True, help="the prepared corpus it was fine-tuned on")
    p.add_argument("--task", required=True)
    p.add_argument("--records", type=Path, required=True, help="the folder the corpus was prepared from")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--n-bootstrap", type=int, default=1000)
    args = p.parse_args(argv)

    model = crema.load(args.classifier)
    paths, y, classes = test_records(args.corpus, args.task, args.records)
    table = model.predict([str(path) for path in paths])
    if len(table) != len(paths):
        raise SystemExit(f"{args.classifier}: predicted {len(table)} of {len(paths)} test records")
    probs = table[classes].to_numpy(dtype=np.float64)
    thresholds = [float(t) for t in model.thresholds]
    rows = class_rows(y, probs, classes, thresholds, args.n_bootstrap)
    macro = auroc(y, probs, classes).macro
    macro_ci = percentile_interval(bootstrap_auroc(y, probs, args.n_bootstrap, seed=0))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "card_table.md").write_text(markdown(rows, macro, macro_ci, len(y)))
    (args.out / "card.json").write_text(json.dumps(
        {"classifier": str(args.classifier), "task": args.task, "n_test": len(y), "macro_auroc": macro,
         "macro_ci95": list(macro_ci), "classes": rows}, indent=2) + "\n")
    print((args.out / "card_table.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
