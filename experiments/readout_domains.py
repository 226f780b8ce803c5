"""Which embedding read-out serves both a diagnosis task and a signal-quality task? VALIDATION only.

For one encoder, each read-out (``mean``: the pooled D values; ``leads``: 12 x D per-lead tokens;
``mean+leads``: both side by side) is probed with the library's validation-fold protocol
(``crema.eval.selection.validation_probe``: C by leave-one-fold-out over folds 1-8, refit, scored
on fold 9) on two labelled corpora prepared by ``crema prepare``: PTB-XL superdiagnostic and a
user's own task (here the Challenge 2011 phone-ECG quality labels of docs/FROM_YOUR_DATA.md). The
test fold 10 is never embedded.

    python experiments/readout_domains.py --checkpoint crema-mini-ecg12 \\
        --task runs/corpora/ptbxl ptbxl-superdiagnostic --task runs/own-task/c2011 quality \\
        --out results/embedding-features/readout-domains.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

import crema
from crema.data.corpus import Corpus
from crema.eval.selection import validation_probe

READOUTS = ("mean", "leads", "mean+leads")


def record_features(model, corpus: Path, task: str) -> dict:
    """Per-record features of every read-out, labels and folds of the corpus's folds 1-9."""
    prepared = Corpus(corpus)
    rows = prepared.rows(split=["train", "val"])
    labels, _, has_label = prepared.labels(task, rows)
    index = prepared.index.iloc[rows]
    keep = has_label & ~index[["source", "record_id"]].duplicated().to_numpy()
    spec = f"{corpus}:train,val"
    by_readout = {f: model.embed_records(spec, features=f, on_error="skip").by_record() for f in ("mean", "leads")}
    order = {rid: i for i, rid in enumerate(by_readout["mean"].index["record_id"].astype(str))}
    pick = np.array([order[str(r)] for r in index["record_id"][keep]])
    feats = {f: by_readout[f].embeddings[pick] for f in ("mean", "leads")}
    feats["mean+leads"] = np.hstack([feats["mean"], feats["leads"]])
    return {"features": feats, "y": labels[keep].astype(np.int64), "folds": index["fold"][keep].astype(int).to_numpy()}


def task_parser(description: str) -> argparse.ArgumentParser:
    """The command line of a study over labelled corpora: ``--checkpoint``, ``--task CORPUS TASK``
    (repeatable), ``--out``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--checkpoint", default="crema-mini-ecg12")
    p.add_argument("--task", nargs=2, action="append", metavar=("CORPUS", "TASK"), required=True)
    p.add_argument("--out", type=Path, required=True)
    return p


def main(argv: list[str] | None = None) -> int:
    args = task_parser(__doc__.split("\n")[0]).parse_args(argv)
    model = crema.load(args.checkpoint, device="cpu")
    result = {"checkpoint": args.checkpoint, "tasks": {}}
    for corpus, task in args.task:
        data = record_features(model, Path(corpus), task)
        scores = {}
        for readout in READOUTS:
            s = validation_probe(data["features"][readout], data["y"], data["folds"], n_bootstrap=1000, max_iter=2000)
            scores[readout] = {"cv_1_8": s.cv_auroc, "val": s.val_auroc, "val_ci95": list(s.val_ci95), "c": s.C}
            print(f"{task:<24} {readout:<11} CV 1-8 {s.cv_auroc:.3f}  fold 9 {s.val_auroc:.3f} "
                  f"[{s.val_ci95[0]:.3f}, {s.val_ci95[1]:.3f}]  C {s.C:g}")
        result["tasks"][task] = {"corpus": corpus, "records": int(len(data["y"])), "scores": scores}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
