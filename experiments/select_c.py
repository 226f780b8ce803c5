"""How should the logistic probe pick its C on a small validation split? VALIDATION only.

``crema probe`` fits the probe on the training records at each C of a grid and keeps the C
that ranks best: on the validation split (``--select-c val``) or by 5-fold cross-validation of
the training records (``cv``). This compares the two choices as a user meets them, with fold 9
as the untouched judge: for each k of folds 1-8, the probe trains on the other seven folds,
``val`` ranks C on fold k (a validation split of a few dozen records, like a user's), ``cv``
ranks it on the seven training folds, and both probes are scored on fold 9 (macro AUROC). Eight
paired differences per task, read-out and label fraction; the test fold 10 is never embedded.

    python experiments/select_c.py --checkpoint crema-mini-ecg12 \\
        --task runs/corpora/ptbxl ptbxl-superdiagnostic --task runs/own-task/c2011 quality \\
        --out results/embedding-features/select-c.json
"""
from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np

import crema
from crema.eval.metrics import auroc
from crema.eval.probe import fit_logistic_probe
from crema.use.api import MissingLeadsWarning
from readout_domains import record_features, task_parser

READOUTS = ("mean", "leads")
FRACTIONS = (1.0, 0.25)
METHODS = ("val", "cv")


def fold9_scores(x: np.ndarray, y: np.ndarray, folds: np.ndarray, fraction: float, seed: int = 0) -> dict:
    """``{method: [fold-9 macro AUROC for each pseudo-validation fold 1..8]}`` and the Cs chosen."""
    judge = folds == 9
    out = {m: [] for m in METHODS} | {f"C_{m}": [] for m in METHODS}
    for k in range(1, 9):
        train = np.flatnonzero((folds != k) & (folds <= 8))
        if fraction < 1.0:
            rng = np.random.default_rng([seed, k])
            train = np.sort(rng.choice(train, max(10, int(round(fraction * len(train)))), replace=False))
        val = folds == k
        for method in METHODS:
            probe, info = fit_logistic_probe(x[train], y[train], x[val], y[val], select_c=method, max_iter=2000)
            out[method].append(float(auroc(y[judge], probe.predict_proba(x[judge])).macro))
            out[f"C_{method}"].append(info["C"])
    return out


def summary(scores: dict) -> dict:
    """Means and the paired difference cv - val over the eight pseudo-validation folds."""
    diff = np.array(scores["cv"]) - np.array(scores["val"])
    return {"val_mean": float(np.mean(scores["val"])), "cv_mean": float(np.mean(scores["cv"])),
            "cv_minus_val_mean": float(diff.mean()), "cv_minus_val_min": float(diff.min()),
            "cv_minus_val_max": float(diff.max()), "cv_better_in": int((diff > 0).sum()),
            "cv_ahead_by_over_0.05_in": int((diff > 0.05).sum()),
            "val_ahead_by_over_0.05_in": int((diff < -0.05).sum())}


def main(argv: list[str] | None = None) -> int:
    args = task_parser(__doc__.split("\n")[0]).parse_args(argv)
    warnings.simplefilter("ignore", MissingLeadsWarning)  # phone ECGs with flat leads: one line each
    model = crema.load(args.checkpoint, device="cpu")
    result = {"checkpoint": args.checkpoint, "command": "python experiments/select_c.py " + " ".join(argv or []),
              "tasks": {}}
    for corpus, task in args.task:
        data = record_features(model, Path(corpus), task)
        sizes = {k: int((data["folds"] == k).sum()) for k in range(1, 10)}
        entry = {"corpus": corpus, "records_per_fold": sizes, "runs": {}}
        for readout in READOUTS:
            for fraction in FRACTIONS:
                scores = fold9_scores(data["features"][readout], data["y"], data["folds"], fraction)
                s = summary(scores)
                entry["runs"][f"{readout}@{fraction:g}"] = {**s, **scores}
                print(f"{task:<22} {readout:<6} {fraction:>5g}  fold 9: val-picked C {s['val_mean']:.3f}, "
                      f"cv-picked {s['cv_mean']:.3f}, cv - val {s['cv_minus_val_mean']:+.3f} "
                      f"[{s['cv_minus_val_min']:+.3f}, {s['cv_minus_val_max']:+.3f}], cv ahead in "
                      f"{s['cv_better_in']} of 8", flush=True)
        result["tasks"][task] = entry
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
