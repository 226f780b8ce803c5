"""Screen encoders on the VALIDATION fold: linear probes of their embeddings on PTB-XL superdiagnostic.

Each encoder embeds the PTB-XL records of folds 1-9 from their original files through the public
API (``crema.load(run).embed_records``), with the pooled (``mean``) and per-lead (``leads``)
read-outs. Per read-out, the library's
validation-fold protocol (``crema.eval.selection.validation_probe``): a logistic probe per class on
standardised features, C in {0.001, 0.01, 0.1, 1, 10} chosen by leave-one-fold-out over the
training folds 1-8 (their mean macro AUROC is reported as "CV 1-8"), refitted on folds 1-8 and
scored on fold 9 (macro AUROC, 95% bootstrap interval over records, paired difference to the first
encoder). Also at 10% of the training labels (three label subsets of ``fraction_subset``, seeds
0-2, same C). The test fold 10 is never read.

    python experiments/model_screen.py --corpus runs/corpora/ptbxl --records "$CREMA_DATA/ptbxl" \\
        --checkpoint crema-mini-ecg12 --checkpoint runs/screen/w128 ... --out results/model-screen/screen.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

import crema
from crema.data.corpus import Corpus
from crema.eval.metrics import paired_bootstrap_auroc
from crema.eval.selection import validation_probe

TASK = "ptbxl-superdiagnostic"
READOUTS = ("mean", "leads")
MAX_ITER = 2000  # the screen's iteration limit for the logistic regressions


def labelled_records(corpus: Path, records_root: Path) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    """Files, folds ``(n,)`` and labels ``(n, K)`` of the folds 1-9 records with a superdiagnostic
    label (one row per record: its first window)."""
    prepared = Corpus(corpus)
    rows = prepared.rows(split=["train", "val"])        # folds 1-9: the test fold is never listed
    labels, classes, has_label = prepared.labels(TASK, rows)
    index = prepared.index.iloc[rows]
    keep = has_label & ~index["record_id"].duplicated().to_numpy()
    index = index[keep]
    return ([str(records_root / p) for p in index["path"]], index["fold"].astype(int).to_numpy(),
            labels[keep].astype(np.int64), list(classes))


def screen_one(x: np.ndarray, y: np.ndarray, folds: np.ndarray, n_bootstrap: int, threads: int = 1) -> dict:
    """The validation-fold protocol (:func:`crema.eval.selection.validation_probe`) at 100% of the
    training labels, and at 10% (three seeded label subsets, the same C)."""
    full = validation_probe(x, y, folds, n_bootstrap=n_bootstrap, max_iter=MAX_ITER, threads=threads)
    tenth = [validation_probe(x, y, folds, C=full.C, fraction=0.1, seed=seed, n_bootstrap=0, max_iter=MAX_ITER,
                              threads=threads).val_auroc for seed in range(3)]
    interval = list(full.val_ci95) if full.val_ci95 else [float("nan")] * 2
    return {"c": full.C, "cv_1_8": full.cv_auroc, "val": full.val_auroc, "val_ci95": interval,
            "val_10pct": float(np.mean(tenth)), "val_scores": full.val_scores.tolist()}


def tables(results: dict, y_val: np.ndarray, pairs: list[list[str]], n_bootstrap: int,
           only: list[str] | None = None) -> str:
    """Markdown: one row per encoder (of ``only``, when given) and read-out, then the paired
    fold-9 differences."""
    lines = ["| encoder | read-out | width | C | CV folds 1-8 | fold 9 [95% CI] | fold 9, 10% labels |",
             "|---|---|---|---|---|---|---|"]
    for row in results.values():
        if only and row["checkpoint"] not in only:
            continue
        low, high = row["val_ci95"]
        lines.append(f"| {row['checkpoint']} | {row['readout']} | {row['dim']} | {row['c']:g} | {row['cv_1_8']:.3f} | "
                     f"{row['val']:.3f} [{low:.3f}, {high:.3f}] | {row['val_10pct']:.3f} |")
    if pairs:
        lines += ["", "| A - B (paired, fold 9) | read-out | difference [95% CI] | CV folds 1-8 | 10% labels |",
                  "|---|---|---|---|---|"]
        for a, b in pairs:
            for readout in READOUTS:
                ra, rb = results[f"{a} | {readout}"], results[f"{b} | {readout}"]
                diff, low, high = paired_bootstrap_auroc(y_val, np.array(ra["val_scores"]), np.array(rb["val_scores"]),
                                                         n_bootstrap, seed=0)
                lines.append(f"| {a} - {b} | {readout} | {diff:+.3f} [{low:+.3f}, {high:+.3f}] | "
                             f"{ra['cv_1_8'] - rb['cv_1_8']:+.3f} | {ra['val_10pct'] - rb['val_10pct']:+.3f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, required=True, help="prepared PTB-XL corpus (labels and folds)")
    p.add_argument("--records", type=Path, required=True, help="the PTB-XL folder it was prepared from")
    p.add_argument("--checkpoint", action="append", default=[], help="run folder or shipped name; the first is the reference")
    p.add_argument("--tables", action="store_true",
                   help="write the Markdown tables of --out (beside it, as .md) and print them; embed nothing")
    p.add_argument("--pair", nargs=2, action="append", default=[], metavar=("A", "B"),
                   help="with --tables: the paired fold-9 difference A - B of two checkpoints (same pretraining seed)")
    p.add_argument("--only", action="append", default=[], metavar="CHECKPOINT",
                   help="with --tables: rows of these checkpoints only (default all)")
    p.add_argument("--tables-out", type=Path, help="with --tables: write them here (default: --out as .md)")
    p.add_argument("--out", type=Path, required=True, help="JSON of results (merged with an existing one)")
    p.add_argument("--n-bootstrap", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    paths, folds, y, classes = labelled_records(args.corpus, args.records)
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if args.tables:
        text = tables(results, y[folds == 9], args.pair, args.n_bootstrap, args.only)
        (args.tables_out or args.out.with_suffix(".md")).write_text(text)
        print(text)
        return 0
    if not args.checkpoint:
        p.error("give --checkpoint (or --tables)")
    with threadpool_limits(args.threads):
        for checkpoint in args.checkpoint:
            model = crema.load(checkpoint)
            for readout in READOUTS:
                key = f"{checkpoint} | {readout}"
                if key in results:
                    continue
                start = time.time()
                x = model.embed_records(paths, features=readout, workers=1).by_record().embeddings
                results[key] = {"checkpoint": checkpoint, "readout": readout, "dim": int(x.shape[1]),
                                **screen_one(x, y, folds, args.n_bootstrap, args.threads), "seconds": round(time.time() - start, 1)}
                print(f"{key}: CV 1-8 {results[key]['cv_1_8']:.3f}, fold 9 {results[key]['val']:.3f}, "
                      f"10% {results[key]['val_10pct']:.3f}", flush=True)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                args.out.write_text(json.dumps(results, indent=1) + "\n")
    reference = {r: results[f"{args.checkpoint[0]} | {r}"] for r in READOUTS}
    yval = y[folds == 9]
    for key, row in results.items():
        ref = reference[row["readout"]]
        diff = paired_bootstrap_auroc(yval, np.array(row["val_scores"]), np.array(ref["val_scores"]),
                                      args.n_bootstrap, seed=0)
        row["val_minus_reference"] = diff
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
