"""Tables and plots of the design search (``experiments/design_search.py``) as a committed report.

Reads ``screen.jsonl``, ``final.jsonl`` and ``release.jsonl`` of a search folder and writes
``report.md``, ``summary.json`` and ``plots/*.png`` into ``--out``:

* the screen: each variant's validation-fold (9) macro AUROC, mean and spread over pretraining
  seeds, at 100% and 10% labels, with its paired difference to plain MAE and to random init on
  the same seeds;
* the final stage: test fold (10) macro AUROC per method at 1/10/100% labels and CinC
  leave-one-source-out, and paired differences (method minus MAE, minus random init) with 95%
  intervals from a paired bootstrap over test records (scores averaged over pretraining seeds,
  the same resampled records for both methods), plus the per-seed differences.

Usage::

    python experiments/design_report.py runs/search --corpora runs/corpora --out results/design-search
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from lab import FRACTIONS, REPO, final_table, fmt, markdown_table, paired_bootstrap, read_jsonl, test_labels


# ----------------------------------------------------------------------------- screen

def screen_rows(records: list[dict], kind: str) -> list[dict]:
    """One row per variant: mean/sd over seeds and paired differences to MAE and random init."""
    by: dict[str, dict[int, dict]] = {}
    for r in records:
        if "error" not in r and kind in r.get("screen", {}):
            by.setdefault(r["variant"], {})[r["seed"]] = {**r["screen"][kind], "train": r.get("train") or {}}
    rows = []
    for variant, seeds in by.items():
        row = {"variant": variant, "n_seeds": len(seeds)}
        for metric in ("val_f1.0", "val_f0.1"):
            vals = np.array([v[metric] for v in seeds.values()])
            row[metric] = float(vals.mean())
            row[f"{metric}_sd"] = float(vals.std(ddof=1)) if len(vals) > 1 else float("nan")
            for ref in ("mae", "random_init"):
                diffs = [seeds[s][metric] - by[ref][s][metric] for s in seeds if s in by.get(ref, {})]
                row[f"{metric}_minus_{ref}"] = float(np.mean(diffs)) if diffs else float("nan")
                row[f"{metric}_minus_{ref}_wins"] = f"{sum(d > 0 for d in diffs)}/{len(diffs)}"
        logs = [v["train"] for v in seeds.values() if v["train"]]
        row["loss_rec"] = float(np.mean([t["loss_rec"] for t in logs])) if logs else float("nan")
        row["acc"] = float(np.mean([t["acc"] for t in logs])) if logs else float("nan")
        rows.append(row)
    return sorted(rows, key=lambda r: -r["val_f1.0"])


# ----------------------------------------------------------------------------- output

def plot_screen(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 0.32 * len(rows) + 1.2))
    names = [r["variant"] for r in rows][::-1]
    means = [r["val_f1.0"] for r in rows][::-1]
    sds = [0 if not np.isfinite(r["val_f1.0_sd"]) else r["val_f1.0_sd"] for r in rows][::-1]
    colours = ["#999999" if n in ("mae", "random_init") or n.startswith("mae") else "#c0392b" for n in names]
    ax.barh(names, means, xerr=sds, color=colours, alpha=0.85)
    for ref, style in (("mae", "--"), ("random_init", ":")):
        hit = [r for r in rows if r["variant"] == ref]
        if hit:
            ax.axvline(hit[0]["val_f1.0"], color="black", linestyle=style, linewidth=1, label=ref)
    ax.set_xlim(min(means) - 0.08, max(means) + 0.05)
    ax.set_xlabel("validation fold 9 macro AUROC (mean +- sd over pretraining seeds)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("search", type=Path)
    p.add_argument("--corpora", type=Path, default=REPO / "runs" / "corpora")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--extra-final", type=Path, nargs="*", default=[], help="more final.jsonl files (e.g. CPU baselines)")
    args = p.parse_args(argv)
    screen = read_jsonl(args.search / "screen.jsonl")
    final = read_jsonl(args.search / "final.jsonl")
    for extra in args.extra_final:
        final += read_jsonl(extra)
    release = read_jsonl(args.search / "release.jsonl")
    summary: dict = {"screen": {}, "final": {}, "release": {}}
    md = ["# Design search: which contrastive regulariser makes CREMA learn?", ""]

    for kind in ("pooled", "leads"):
        rows = screen_rows(screen, kind)
        if not rows:
            continue
        summary["screen"][kind] = rows
        plot_screen(rows, args.out / "plots" / f"screen_{kind}.png",
                    f"Screen ({kind} features): PTB-XL superdiagnostic, probe on folds 1-8")
        md += [f"## Screen, validation fold 9, {kind} features", "",
               f"![screen](plots/screen_{kind}.png)", "",
               markdown_table(["variant", "seeds", "AUROC 100%", "sd", "minus MAE (wins)", "minus random (wins)",
                         "AUROC 10%", "10% minus MAE", "loss_rec", "con. acc"],
                        [[r["variant"], str(r["n_seeds"]), fmt(r["val_f1.0"]), fmt(r["val_f1.0_sd"]),
                          f"{fmt(r['val_f1.0_minus_mae'])} ({r['val_f1.0_minus_mae_wins']})",
                          f"{fmt(r['val_f1.0_minus_random_init'])} ({r['val_f1.0_minus_random_init_wins']})",
                          fmt(r["val_f0.1"]), fmt(r["val_f0.1_minus_mae"]), fmt(r["loss_rec"]), fmt(r["acc"], 2)]
                         for r in rows]), ""]

    if final:
        y, classes = test_labels(args.corpora)
        for kind in ("pooled", "leads"):
            table = final_table(final, kind)
            if not table:
                continue
            methods = sorted(table, key=lambda m: -np.mean(table[m]["f1"]))
            md += [f"## Final stage, test fold 10 and CinC leave-one-source-out, {kind} features", "",
                   "Mean over pretraining seeds (each: logistic probe, C on fold 9; label subsets seeded 0-2).", "",
                   markdown_table(["method", "seeds", "1% labels", "10% labels", "100% labels", "CinC LOSO (mean of sources)"],
                            [[m, str(len(table[m]["f1"])), *(fmt(np.mean(table[m][f"f{f:g}"])) for f in FRACTIONS),
                              fmt(np.nanmean(table[m]["loso"]))] for m in methods]), ""]
            diffs = []
            for m in methods:
                for ref in ("mae", "random_init"):
                    if m == ref or ref not in table or m in ("mae", "random_init") and ref == "mae":
                        continue
                    for f in FRACTIONS:
                        a = np.mean(table[m]["scores"][f], axis=0)
                        b = np.mean(table[ref]["scores"][f], axis=0)
                        point, lo, hi = paired_bootstrap(y, a, b)
                        per_seed = [x - z for x, z in zip(table[m][f"f{f:g}"], table[ref][f"f{f:g}"])]
                        loso = [x - z for x, z in zip(table[m]["loso"], table[ref]["loso"])] if f == 1.0 else []
                        diffs.append({"method": m, "minus": ref, "fraction": f, "diff": point, "lo": lo, "hi": hi,
                                      "per_seed": per_seed, "loso_per_seed": loso})
            summary["final"][kind] = {"methods": {m: {k: v for k, v in table[m].items() if k != "scores"}
                                                  for m in methods}, "paired": diffs}
            md += ["Paired differences (test fold; scores averaged over seeds, 95% paired bootstrap over "
                   "records; per-seed differences beside):", "",
                   markdown_table(["method", "minus", "labels", "difference [95% CI]", "per seed", "CinC LOSO per seed"],
                            [[d["method"], d["minus"], f"{d['fraction']:.0%}",
                              f"{fmt(d['diff'])} [{fmt(d['lo'])}, {fmt(d['hi'])}]",
                              ", ".join(fmt(x) for x in d["per_seed"]),
                              ", ".join(fmt(x) for x in d["loso_per_seed"])] for d in diffs]), ""]
    if release:
        table = final_table(release, "pooled")
        summary["release"] = {m: {k: v for k, v in t.items() if k != "scores"} for m, t in table.items()}
        md += ["## Release-size runs (tiny, one seed), test fold, pooled features", "",
               markdown_table(["method", "steps", "1%", "10%", "100%", "CinC LOSO"],
                        [[m, str(next((r.get("steps") for r in release if r["variant"] == m), "")),
                          *(fmt(t[f"f{f:g}"][0]) for f in FRACTIONS), fmt(t["loso"][0])] for m, t in table.items()]), ""]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.md").write_text("\n".join(md) + "\n")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1, default=float) + "\n")
    print((args.out / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
