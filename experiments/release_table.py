"""Tables of the release-length comparison (8,000 steps): probe scores from
``design_search.py score`` records and masked-QRS reconstruction from ``qrs_reconstruction.py``.

    python experiments/release_table.py results/design-search/release-length [--corpora runs/corpora]

With ``--corpora`` (the prepared corpora, for the test labels) it adds the paired differences
against plain MAE: test-fold scores averaged over the pretraining seeds both variants share, 95%
paired bootstrap over test records (the design report's procedure).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from lab import FRACTIONS, final_table, markdown_table, paired_bootstrap, read_jsonl, test_labels


def mean_auroc(scores: dict, prefix: str) -> float:
    """Mean AUROC of the entries whose key starts with ``prefix`` (label subsets, LOSO sources)."""
    values = [v["auroc"] for k, v in scores.items() if k.startswith(prefix) and "auroc" in v]
    return float(np.mean(values)) if values else float("nan")


def probe_rows(records: list[dict], kind: str) -> dict[str, dict[int, dict[str, float]]]:
    """``{variant: {seed: {column: AUROC}}}`` for one feature kind (pooled / leads)."""
    out: dict[str, dict[int, dict[str, float]]] = defaultdict(dict)
    for r in records:
        final = r["final"][kind]
        out[r["variant"]][r["seed"]] = {
            "val 100%": r["screen"][kind]["val_f1.0"], "val 10%": r["screen"][kind]["val_f0.1"],
            "test 1%": mean_auroc(final, "test/f0.01/"), "test 10%": mean_auroc(final, "test/f0.1/"),
            "test 100%": mean_auroc(final, "test/f1/"), "CinC LOSO": mean_auroc(final, "loso/")}
    return out


def paired_rows(records: list[dict], corpora: Path, a: str, b: str) -> list[list[str]]:
    """``a`` minus ``b`` per label fraction: difference [95% CI] of seed-averaged test scores."""
    seeds = {r["seed"] for r in records if r["variant"] == a} & {r["seed"] for r in records if r["variant"] == b}
    table = final_table([r for r in records if r["seed"] in seeds], "pooled")
    y, _ = test_labels(corpora)
    rows = []
    for f in FRACTIONS:
        d, low, high = paired_bootstrap(y, np.mean(table[a]["scores"][f], axis=0), np.mean(table[b]["scores"][f], axis=0))
        rows.append([f"{a} - {b}", f"{100 * f:g}%", f"{d:+.3f} [{low:+.3f}, {high:+.3f}]", str(len(seeds))])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="holds checkpoints.jsonl and qrs_reconstruction*.json")
    parser.add_argument("--corpora", type=Path, help="prepared corpora: adds paired differences against MAE")
    args = parser.parse_args(argv)
    records = read_jsonl(args.folder / "checkpoints.jsonl")
    columns = ["val 100%", "val 10%", "test 1%", "test 10%", "test 100%", "CinC LOSO"]
    for kind in ("pooled", "leads"):
        rows = []
        for variant, seeds in probe_rows(records, kind).items():
            for seed, cells in sorted(seeds.items()):
                rows.append([variant, str(seed)] + [f"{cells[c]:.3f}" for c in columns])
        print(f"\nProbe, {kind} features (validation fold 9 chooses; test fold 10 and LOSO report)\n")
        print(markdown_table(["variant", "seed"] + columns, rows))
    if args.corpora:
        print("\nPaired differences against plain MAE, test fold 10, pooled features\n")
        print(markdown_table(["difference", "labels", "AUROC difference [95% CI]", "seeds"],
                       paired_rows(records, args.corpora, "crema_disjoint_l001_8000", "mae_8000")))
    rows = []
    for path in sorted(args.folder.glob("qrs_reconstruction*.json")):
        for r in json.loads(path.read_text())["results"]:
            rows.append([r["model"], f"{r['qrs']['corr_median']:.3f}", f"{r['qrs']['share_corr_over_0.5']:.2f}",
                         f"{r['qrs']['amplitude_ratio_median']:.2f}", f"{r['other']['corr_median']:.3f}",
                         str(r["qrs"]["patches"])])
    print("\nMasked-patch reconstruction, validation fold 9 (300 windows, the same masks for every model)\n")
    print(markdown_table(["model", "QRS corr (median)", "QRS patches corr > 0.5", "QRS amplitude ratio",
                    "other patches corr", "QRS patches"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
