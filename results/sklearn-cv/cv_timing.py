"""Wall time of 5-fold cross-validation of CremaEmbedder + logistic regression on 200 PTB-XL
records (the shared data's first 200, 500 Hz, label NORM vs the rest), with the shipped model
crema-mini-ecg12: without the cache, with cache=True, and the embed-once pattern.

    nice python results/sklearn-cv/cv_timing.py [--records 200] [--threads 1] [--out results/sklearn-cv/timing.json]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import crema
from crema.data import ptbxl
from crema.data.readers import read_record
from crema.paths import data_root
from crema.sklearn import CremaEmbedder, clear_cache

MODEL = "crema-mini-ecg12"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    index = ptbxl.load_ptbxl_index(data_root() / "ptbxl", rate=500).head(args.records)
    y = np.array(["NORM" in labels for labels in index["labels:ptbxl-superdiagnostic"]], dtype=int)
    X = np.stack([read_record(p).signal for p in index["path"]])         # (N, 12, 5000) mV at 500 Hz
    cv = StratifiedKFold(5, shuffle=True, random_state=0)
    model = crema.load(MODEL, device="cpu")
    rows = {}

    def timed(name, fn):
        start = time.perf_counter()
        scores = fn()
        rows[name] = {"seconds": round(time.perf_counter() - start, 1), "auroc_mean": round(float(np.mean(scores)), 4)}
        print(name, rows[name], flush=True)

    def pipeline(**options):
        embedder = CremaEmbedder(model, fs=500, **options)
        return make_pipeline(embedder, StandardScaler(), LogisticRegression(max_iter=2000))

    timed("pipeline, no cache", lambda: cross_val_score(pipeline(), X, y, cv=cv, scoring="roc_auc"))
    clear_cache()
    timed("pipeline, cache=True", lambda: cross_val_score(pipeline(cache=True), X, y, cv=cv, scoring="roc_auc"))

    def embed_once():
        features = model.embed_records(X, fs=500).by_record().embeddings
        lr = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        return cross_val_score(lr, features, y, cv=cv, scoring="roc_auc")

    timed("embed once, then cross-validate", embed_once)
    result = {"model": MODEL, "records": args.records, "folds": 5, "torch_threads": args.threads,
              "input": "numpy (N, 12, 5000) at 500 Hz", "runs": rows}
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(result, fh, indent=2)
            fh.write("\n")


if __name__ == "__main__":
    main()
