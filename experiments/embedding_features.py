"""Which read-out of a frozen CREMA encoder probes best: measured on the VALIDATION fold only.

For each encoder, every read-out below is computed from one pass over the corpus windows (the
tokens of the last two blocks captured with hooks; a window longer than the model's input is
covered by evenly spaced crops whose features are averaged, as the library does). Then, per
read-out, the library's validation-fold protocol (``crema.eval.selection.validation_probe``: the
logistic probe of eval.probe, standardised features and one L2 logistic regression per class,
fitted on the training folds 1-8 with C chosen by leave-one-fold-out cross-validation over those 8
folds) scores fold 9 by macro AUROC (95% bootstrap interval, and paired bootstrap against the
pooled mean). A second table uses the library's own protocol
(``crema probe``: C picked on fold 9, so its fold-9 figure is the best over the C grid) at 10% and
100% of the training labels (label subsets of eval.splits.fraction_subset, seeds 0-2), for the
main candidates. The test fold 10 is never read: its rows are not even embedded.

    nice python experiments/embedding_features.py --corpus runs/embedding-features/ptbxl \
        --checkpoint crema-mini-ecg12 [--checkpoint runs/...] --out results/embedding-features/results.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from crema.data.corpus import Corpus
from crema.eval import metrics
from crema.eval.probe import DEFAULT_CS, fit_logistic_probe
from crema.eval.splits import fraction_subset, task_split
from crema.eval.selection import VAL_FOLD, validation_probe
from crema.model.checkpoint import load_encoder
from crema.model.inference import crop_starts

TASK = "ptbxl-superdiagnostic"
FRACTION_KINDS = ("mean", "leads (LayerNorm)", "leads (L2)")
FRACTIONS = (0.1, 1.0)
SEEDS = (0, 1, 2)


def _lead_means(tokens: torch.Tensor, n_leads: int) -> torch.Tensor:
    """``(B, C*N, D)`` lead-major tokens -> ``(B, C, D)`` per-lead means."""
    b, l, d = tokens.shape
    return tokens.reshape(b, n_leads, l // n_leads, d).mean(dim=2)


def _masked_mean(tokens: torch.Tensor, lead_mask: torch.Tensor, n_leads: int) -> torch.Tensor:
    b, l, d = tokens.shape
    w = lead_mask.float()[:, :, None].expand(b, n_leads, l // n_leads).reshape(b, l, 1)
    return (tokens * w).sum(1) / w.sum(1).clamp_min(1.0)


def _masked_max(tokens: torch.Tensor, lead_mask: torch.Tensor, n_leads: int) -> torch.Tensor:
    b, l, d = tokens.shape
    w = lead_mask[:, :, None].expand(b, n_leads, l // n_leads).reshape(b, l, 1)
    return tokens.masked_fill(~w, float("-inf")).amax(1)


def readouts(encoder, x: torch.Tensor, lead_mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every candidate read-out of one crop ``x (B, 12, crop)``: name -> ``(B, F)``."""
    captured = []
    hooks = [encoder.blocks[i].register_forward_hook(lambda m, a, out: captured.append(out))
             for i in (-2, -1)]
    try:
        last = encoder.forward_tokens(x, lead_mask=lead_mask)
    finally:
        for h in hooks:
            h.remove()
    before_last = captured[0]
    c, norm = encoder.n_leads, encoder.norm
    keep = lead_mask.float()[:, :, None]
    lead = _lead_means(last, c)                                     # (B, C, D)
    lead_prev = _lead_means(before_last, c)
    leads_ln = (norm(lead) * keep).flatten(1)
    mean = norm(_masked_mean(last, lead_mask, c))
    return {
        "mean": mean,
        "leads (LayerNorm)": leads_ln,
        "leads (L2)": (torch.nn.functional.normalize(lead, dim=-1) * keep).flatten(1),
        "leads (no norm)": (lead * keep).flatten(1),
        "mean+max": torch.cat([mean, norm(_masked_max(last, lead_mask, c))], 1),
        "last two layers (mean)": torch.cat([mean, norm(_masked_mean(before_last, lead_mask, c))], 1),
        "leads, last two layers": torch.cat([leads_ln, (norm(lead_prev) * keep).flatten(1)], 1),
        "leads+mean": torch.cat([leads_ln, mean], 1),
        "mean of normed tokens": _masked_mean(norm(last), lead_mask, c),
    }


@torch.inference_mode()
def features(encoder, corpus, rows: np.ndarray, batch: int = 64) -> dict[str, np.ndarray]:
    crop = min(encoder.cfg.window, corpus.signals.shape[-1])
    starts = crop_starts(corpus.signals.shape[-1], crop)
    out: dict[str, list[np.ndarray]] = {}
    for s in range(0, len(rows), batch):
        r = rows[s:s + batch]
        x = torch.from_numpy(np.asarray(corpus.signals[r], dtype=np.float32))
        m = torch.from_numpy(np.asarray(corpus.lead_mask[r], dtype=bool))
        parts = [readouts(encoder, x[..., a:a + crop], m) for a in starts]
        for name in parts[0]:
            out.setdefault(name, []).append((sum(p[name] for p in parts) / len(parts)).numpy())
    return {name: np.concatenate(v).astype(np.float32) for name, v in out.items()}


def evaluate(name: str, feats: dict[str, np.ndarray], y: np.ndarray, folds: np.ndarray, n_boot: int) -> list[dict]:
    """Per read-out ``(n, F)`` of the train and val rows: the validation-fold protocol, and each
    read-out's paired difference to ``mean`` on fold 9."""
    results, val_scores = [], {}
    for kind, x in feats.items():
        started = time.perf_counter()
        scored = validation_probe(x, y, folds, n_bootstrap=n_boot)
        val_scores[kind] = scored.val_scores
        low, high = scored.val_ci95
        results.append({"encoder": name, "features": kind, "dim": int(x.shape[1]), "C": scored.C,
                        "cv_train_auroc": round(scored.cv_auroc, 4), "val_auroc": round(scored.val_auroc, 4),
                        "val_ci": [round(low, 4), round(high, 4)],
                        "seconds": round(time.perf_counter() - started, 1)})
        print(json.dumps(results[-1]), flush=True)
    y_val = y[folds == VAL_FOLD]
    for r in results:
        d, lo, hi = metrics.paired_bootstrap_auroc(y_val, val_scores[r["features"]], val_scores["mean"], n_boot, 0)
        r["val_minus_mean"] = [round(d, 4), round(lo, 4), round(hi, 4)]
    return results


def library_protocol(name: str, feats: dict[str, np.ndarray], split) -> list[dict]:
    """Fold-9 macro AUROC with C picked on fold 9 (eval.probe.fit_logistic_probe, ``crema probe``'s
    choice of C), per label fraction, mean over label-subset seeds; ``feats`` rows: the train rows
    then the val rows of ``split``."""
    n_train = len(split.rows["train"])
    out = []
    for kind in FRACTION_KINDS:
        x_train, x_val = feats[kind][:n_train], feats[kind][n_train:]
        for fraction in FRACTIONS:
            scores = []
            for seed in SEEDS if fraction < 1 else SEEDS[:1]:
                keep = fraction_subset(split.y["train"], fraction, seed)
                _, info = fit_logistic_probe(x_train[keep], split.y["train"][keep], x_val, split.y["val"], seed=seed)
                scores.append(info["val_auroc"][info["C"]])
            out.append({"encoder": name, "features": kind, "fraction": fraction, "seeds": len(scores),
                        "val_auroc": round(float(np.mean(scores)), 4), "per_seed": [round(v, 4) for v in scores]})
            print(json.dumps(out[-1]), flush=True)
    return out


def tables(path: Path) -> str:
    """The README's two markdown tables from a results file."""
    data = json.loads(path.read_text())
    encoders = list(dict.fromkeys(r["encoder"] for r in data["results"]))
    short = {e: Path(e).name for e in encoders}
    lines = ["| features | F | " + " | ".join(f"{short[e]}: CV folds 1-8 / fold 9 [95% CI] / fold 9 minus mean [95% CI]"
                                             for e in encoders) + " |",
             "|---|---|" + "---|" * len(encoders)]
    for kind in dict.fromkeys(r["features"] for r in data["results"]):
        cells = []
        for e in encoders:
            r = next(r for r in data["results"] if r["encoder"] == e and r["features"] == kind)
            d = r["val_minus_mean"]
            cells.append(f"{r['cv_train_auroc']:.3f} / {r['val_auroc']:.3f} [{r['val_ci'][0]:.3f}, {r['val_ci'][1]:.3f}]"
                         + ("" if kind == "mean" else f" / {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]"))
        dim = next(r["dim"] for r in data["results"] if r["features"] == kind)
        lines.append(f"| {kind} | {dim} | " + " | ".join(cells) + " |")
    lines += ["", "| features | " + " | ".join(f"{short[e]}: 10% labels / 100%" for e in encoders) + " |",
              "|---|" + "---|" * len(encoders)]
    for kind in FRACTION_KINDS:
        cells = []
        for e in encoders:
            by = {r["fraction"]: r["val_auroc"] for r in data["fractions"] if r["encoder"] == e and r["features"] == kind}
            cells.append(" / ".join(f"{by[f]:.3f}" for f in FRACTIONS))
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", action="store_true", help="print the markdown tables of --out and stop")
    parser.add_argument("--corpus")
    parser.add_argument("--checkpoint", action="append", default=[])
    parser.add_argument("--out", required=True)
    parser.add_argument("--n-bootstrap", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.tables:
        print(tables(Path(args.out)))
        return
    torch.set_num_threads(args.threads)
    corpus = Corpus(args.corpus)
    split = task_split(corpus, TASK)
    rows = np.concatenate([split.rows["train"], split.rows["val"]])   # fold 10 is never embedded
    y = np.concatenate([split.y["train"], split.y["val"]])
    folds = corpus.index["fold"].to_numpy()[rows]
    out = Path(args.out)
    saved = json.loads(out.read_text()) if out.is_file() else {}
    results, fractions = saved.get("results", []), saved.get("fractions", [])
    for checkpoint in args.checkpoint:
        if any(r["encoder"] == checkpoint for r in fractions):
            continue
        encoder, _ = load_encoder(checkpoint)
        started = time.perf_counter()
        embedded = features(encoder.eval(), corpus, rows)
        print(f"{checkpoint}: features of {len(rows)} windows in {time.perf_counter() - started:.1f} s", flush=True)
        with threadpool_limits(1, user_api="blas"):
            if not any(r["encoder"] == checkpoint for r in results):
                results += evaluate(checkpoint, embedded, y, folds, args.n_bootstrap)
            fractions += library_protocol(checkpoint, embedded, split)
        out.write_text(json.dumps({"task": TASK, "corpus": str(args.corpus), "sizes": {
            "train": int(len(split.rows["train"])), "val": int(len(split.rows["val"]))}, "Cs": list(DEFAULT_CS),
            "results": results, "fractions": fractions}, indent=2) + "\n")


if __name__ == "__main__":
    main()
