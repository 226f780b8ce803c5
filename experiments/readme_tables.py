"""Every measured table of README.md, docs/RESULTS.md and docs/BENCHMARKS.md, made from the committed
files under results/. No figure in those pages is typed by hand: each table sits between two markers
and this script rewrites what is between them::

    <!-- table:NAME:start -->
    ...
    <!-- table:NAME:end -->

Usage (from the repository root)::

    python experiments/readme_tables.py              # rewrite every block of the three pages
    python experiments/readme_tables.py --check      # exit 1 naming each block that differs
    python experiments/readme_tables.py --print NAME # one table on stdout

``tests/test_readme_tables.py`` runs ``--check``. The MFU tables of docs/BENCHMARKS.md have their
own markers and are written by ``benchmarks/mfu.py --doc`` (``--render`` re-renders a saved JSON).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np

from crema.weights import model_dir
from lab import REPO, card_tables, fmt, load_summary, markdown_table, pick, read_jsonl, with_interval

RESULTS = REPO / "results"
PAGES = ("README.md", "docs/RESULTS.md", "docs/BENCHMARKS.md")
BLOCK = re.compile(r"(<!-- table:([a-z0-9-]+):start -->\n)(.*?)(<!-- table:\2:end -->)", re.DOTALL)
LOSO_MEAN = "mean of sources"  # crema.eval.paired's name for the mean over held-out sources
PROTOCOLS = {"probe": "probe", "finetune": "fine-tune"}

# Row labels of the suites' methods.
METHODS = {"crema": "CREMA", "mae": "plain MAE", "contrastive": "contrastive only", "random_sit": "random-init SiT",
           "random_kernels": "random kernels (2,000), no training", "supervised_sit": "SiT from scratch, supervised",
           "supervised_resnet1d": "1-D ResNet, supervised"}


# ----------------------------------------------------------------------------- small pieces

def signed(v: float | None) -> str:
    return "" if v is None or not np.isfinite(v) else f"{v:+.3f}"


def difference(d: dict) -> str:
    """``+0.012 [-0.020, +0.041]`` of a paired difference (paired.json or the search's summary)."""
    low, high = d["ci95"] if "ci95" in d else (d["lo"], d["hi"])
    value = d["difference"] if "difference" in d else d["diff"]
    return f"{signed(value)} [{signed(low)}, {signed(high)}]"


def verdict(d: dict) -> str:
    """Ahead or behind when the 95% interval excludes 0, else level."""
    low, high = d["ci95"]
    return "ahead" if low > 0 else "behind" if high < 0 else "level (interval covers 0)"


def loso_mean(summary: list[dict], protocol: str, method: str) -> float | None:
    """Mean macro AUROC over the held-out CinC sources (None without any)."""
    values = [s["auroc_mean"] for s in summary if s["experiment"] == "leave_source_out"
              and s["protocol"] == protocol and s["method"] == method and s["auroc_mean"] is not None]
    return float(np.mean(values)) if values else None


def n_sources(summary: list[dict]) -> int:
    return len({s["holdout_source"] for s in summary if s["experiment"] == "leave_source_out"})


def n_test(summary: list[dict], task: str) -> int:
    return next(s["n_test"] for s in summary if s["task"] == task and s["experiment"] == "label_fraction")


def paired(folder: Path) -> list[dict]:
    return json.loads((folder / "paired.json").read_text())


def pick_paired(rows: list[dict], **key) -> dict | None:
    return pick(rows, **key)


def fraction_table(summary: list[dict], task: str, rows: list[tuple[str, str, str]], fractions=(0.01, 0.1, 1.0),
                   loso: bool = True, interval: bool = False) -> str:
    """Methods as rows (``(protocol, method, label)``), label fractions as columns, and the mean over
    held-out CinC sources for probes."""
    cell = with_interval if interval else (lambda r: "" if r is None else fmt(r["auroc_mean"]))
    header = ["protocol", "method", *(f"{100 * f:g}% labels" for f in fractions)]
    if loso:
        header.append(f"CinC, held-out source (mean of {n_sources(summary)})")
    out = []
    for protocol, method, label in rows:
        shown = "supervised" if method.startswith("supervised") else PROTOCOLS[protocol]
        line = [shown, label] + [cell(pick(summary, task=task, experiment="label_fraction", protocol=protocol,
                                              method=method, fraction=f)) for f in fractions]
        if loso:
            line.append(fmt(loso_mean(summary, protocol, method)))
        out.append(line)
    return markdown_table(header, out)


def paired_rows(rows: list[dict], settings: list[tuple[str, dict]], method: str = "crema") -> list[list[str]]:
    """``[label, minus, difference [CI], per pretraining seed, ahead on]`` for each setting and reference."""
    out = []
    for label, key in settings:
        for d in rows:
            if d["method"] == method and all(d.get(k) == v for k, v in key.items()):
                seeds = ", ".join(signed(v) for v in d["per_pretrain_seed"].values())
                out.append([label, METHODS.get(d["minus"], d["minus"]), difference(d), seeds, d["wins"]])
    return out


# ----------------------------------------------------------------------------- the shipped model

def shipped_model(folder: Path = RESULTS / "card-w128", model: str = "crema-w128-ecg12") -> str:
    """README: the best shipped model against its baselines (its card suite), and the paired
    differences."""
    summary, pairs = load_summary(folder), paired(folder)
    task = "ptbxl-superdiagnostic"
    methods = {m["method"] for m in summary}
    rows = [("probe", "crema", f"**{model}**"), ("probe", "mae", "plain MAE, same recipe"),
            ("probe", "crema-mini-ecg12", "crema-mini-ecg12 (the small one)"),
            ("probe", "random_sit", "random-init SiT"), ("probe", "random_kernels", "random kernels, no training"),
            ("finetune", "crema", f"**{model}**"), ("finetune", "mae", "plain MAE, same recipe"),
            ("finetune", "crema-mini-ecg12", "crema-mini-ecg12 (the small one)"),
            ("finetune", "supervised_resnet1d", "1-D ResNet")]
    table = fraction_table(summary, task, [row for row in rows if row[1] in methods])
    lines = [f"PTB-XL superdiagnostic, test fold 10 ({n_test(summary, task)} scored records), macro AUROC, mean over "
             "3 label subsets or fine-tuning seeds; CinC 2020/2021 scored classes, linear probe trained on five "
             "sources and tested on the sixth, mean over the six. One pretraining seed.", "", table, "",
             f"{model} minus each baseline, linear probe (paired bootstrap over test records, 95%):", ""]
    references = [("random_sit", "a random-init SiT of the same size"),
                  ("random_kernels", "random convolutional kernels (no training)"), ("mae", "plain MAE"),
                  ("crema-mini-ecg12", "the small crema-mini-ecg12")]
    for ref, name in references:
        if ref not in methods:
            continue
        parts = []
        for f in (0.01, 0.1, 1.0):
            d = pick_paired(pairs, task=task, experiment="label_fraction", protocol="probe", method="crema",
                            minus=ref, fraction=f)
            parts.append(f"{100 * f:g}% labels {difference(d)}, {verdict(d)}")
        d = pick_paired(pairs, protocol="probe", method="crema", minus=ref, holdout_source=LOSO_MEAN)
        parts.append(f"CinC held-out sources {difference(d)}, {verdict(d)}")
        lines.append(f"- against {name}: " + "; ".join(parts) + ".")
    return "\n".join(lines) + "\n"


def card(folder: Path = RESULTS / "card", model: str = "crema-mini-ecg12") -> str:
    """RESULTS: a model card's tables (what experiments/card_table.py prints)."""
    return card_tables(load_summary(folder), model) + "\n"


def card_paired(folder: Path = RESULTS / "card", model: str = "crema-mini-ecg12") -> str:
    """RESULTS: every paired difference of a shipped model in its card suite."""
    pairs = paired(folder)
    settings = [(f"probe, {100 * f:g}% labels", {"task": "ptbxl-superdiagnostic", "protocol": "probe", "fraction": f})
                for f in (0.01, 0.1, 1.0)]
    settings += [("probe, CinC held-out sources (mean)", {"protocol": "probe", "holdout_source": LOSO_MEAN})]
    settings += [(f"fine-tune, {100 * f:g}% labels", {"task": "ptbxl-superdiagnostic", "protocol": "finetune",
                                                      "fraction": f}) for f in (0.1, 1.0)]
    return markdown_table(["setting", f"{model} minus", "difference [95% CI]", "per pretraining seed",
                           "ahead on"], paired_rows(pairs, settings)) + "\n"


# ----------------------------------------------------------------------------- the evaluation suites

SUITE_ROWS = [("probe", "crema", "**CREMA** (the default)"), ("probe", "mae", "plain MAE"),
              ("probe", "contrastive", "contrastive only"), ("probe", "random_sit", "random-init SiT"),
              ("probe", "random_kernels", "random kernels, no training"),
              ("finetune", "crema", "**CREMA**"), ("finetune", "mae", "plain MAE"),
              ("finetune", "contrastive", "contrastive only"), ("finetune", "supervised_sit", "SiT from scratch"),
              ("finetune", "supervised_resnet1d", "1-D ResNet")]


def suite_default() -> str:
    """RESULTS: the default objective's suite, three pretraining seeds (results/shared-default)."""
    summary = load_summary(RESULTS / "shared-default")
    task = "ptbxl-superdiagnostic"
    return (f"PTB-XL superdiagnostic, test fold 10 ({n_test(summary, task)} scored records), macro AUROC, mean over "
            "3 pretraining seeds and 3 label subsets or fine-tuning seeds:\n\n"
            + fraction_table(summary, task, SUITE_ROWS) + "\n")


def suite_default_paired() -> str:
    """RESULTS: CREMA minus each reference in the default suite, paired on seeds and test records."""
    pairs = paired(RESULTS / "shared-default")
    settings = [(f"probe, {100 * f:g}% labels", {"task": "ptbxl-superdiagnostic", "protocol": "probe", "fraction": f})
                for f in (0.01, 0.1, 1.0)]
    settings += [("probe, CinC held-out sources (mean)", {"protocol": "probe", "holdout_source": LOSO_MEAN})]
    settings += [(f"fine-tune, {100 * f:g}% labels", {"task": "ptbxl-superdiagnostic", "protocol": "finetune",
                                                      "fraction": f}) for f in (0.1, 1.0)]
    return markdown_table(["setting", "CREMA minus", "difference [95% CI]", "per pretraining seed", "ahead on"],
                          paired_rows(pairs, settings)) + "\n"


def suite_default_tasks() -> str:
    """RESULTS: the other PTB-XL label sets of the default suite (rhythm, form)."""
    folder = RESULTS / "shared-default"
    summary, pairs = load_summary(folder), paired(folder)
    rows = []
    for task in ("ptbxl-rhythm", "ptbxl-form"):
        for f in (0.1, 1.0):
            cells = [fmt((pick(summary, task=task, experiment="label_fraction", protocol="probe", method=m,
                               fraction=f) or {}).get("auroc_mean")) for m in ("crema", "mae", "random_kernels", "random_sit")]
            d = pick_paired(pairs, task=task, experiment="label_fraction", protocol="probe", method="crema",
                            minus="mae", fraction=f)
            rows.append([f"{task} ({n_test(summary, task)} records)", f"{100 * f:g}%", *cells, difference(d), d["wins"]])
    return markdown_table(["task (scored test records)", "labels", "CREMA", "plain MAE", "random kernels",
                           "random-init SiT", "CREMA minus MAE [95% CI]", "ahead on"], rows) + "\n"


def suite_lambda01() -> str:
    """RESULTS: the same suite at lambda 0.1, one pretraining seed (results/shared-disjoint)."""
    summary = load_summary(RESULTS / "shared-disjoint")
    rows = [(p, m, label.replace(" (the default)", ", lambda 0.1")) for p, m, label in SUITE_ROWS
            if m != "random_kernels"]
    return fraction_table(summary, "ptbxl-superdiagnostic", rows) + "\n"


def original() -> str:
    """RESULTS: the original design's suite (results/shared), with 95% bootstrap intervals."""
    summary = load_summary(RESULTS / "shared")
    rows = [(p, m, label.replace(" (the default)", " (one shared crop, lambda 0.1)"))
            for p, m, label in SUITE_ROWS if m != "random_kernels"]
    return fraction_table(summary, "ptbxl-superdiagnostic", rows, loso=False, interval=True) + "\n"


def ablation() -> str:
    """RESULTS: the lambda/tau ablation of the original design (results/ablation, with its two ends
    from results/shared), linear probe on the test fold."""
    shared, abl = load_summary(RESULTS / "shared"), load_summary(RESULTS / "ablation")
    runs = [("lambda 0 (plain MAE)", shared, "mae"), ("lambda 0.01, tau 0.1", abl, "crema_l0.01"),
            ("lambda 0.1, tau 0.1 (the design's default then)", shared, "crema"),
            ("lambda 0.1, tau 0.5", abl, "crema_l0.1_t0.5"), ("lambda 1, tau 0.1", abl, "crema_l1")]
    rows = [[label, *(with_interval(pick(summary, task="ptbxl-superdiagnostic", experiment="label_fraction",
                                         protocol="probe", method=m, fraction=f)) for f in (0.1, 1.0))]
            for label, summary, m in runs]
    return markdown_table(["pretraining (one shared crop, seed 0)", "probe, 10% labels", "probe, 100% labels"],
                          rows) + "\n"


# ----------------------------------------------------------------------------- the design search

SEARCH = RESULTS / "design-search"
VARIANT_LABELS = {
    "crema_disjoint": "views from disjoint halves (`view_crop disjoint`, the winner)",
    "crema_random": "views from independent random crops (`view_crop random`)",
    "crema_disjoint_l001": "disjoint, lambda 0.01",
    "crema_disjoint_t05": "disjoint, tau 0.5",
    "crema_disjoint_warmup": "disjoint, contrast off until step 600 then ramped",
    "crema_disjoint_l1": "disjoint, lambda 1",
    "crema_disjoint_vicreg_l1": "disjoint, VICReg, lambda 1",
    "crema_time_disjoint": "disjoint + time-aligned masks",
    "mae_2x": "plain MAE, compute-matched (2,400 steps)",
    "crema_disjoint_simsiam_l1": "disjoint, SimSiam, lambda 1",
    "mae_lr2": "plain MAE, twice the learning rate",
    "crema_disjoint_simsiam": "disjoint, SimSiam stop-gradient instead of InfoNCE",
    "crema_simsiam": "one shared crop, SimSiam",
    "mae_time": "plain MAE, time-aligned masks",
    "mae": "plain MAE (lambda 0)",
    "crema_disjoint_vicreg": "disjoint, VICReg",
    "crema_warmup": "one shared crop, contrast off until step 600",
    "mae_raw": "plain MAE, raw (unnormalised) patch targets",
    "random_init": "random-init SiT (not trained)",
    "crema_base": "**the original design** (two views of one shared crop)",
    "crema_vicreg": "one shared crop, VICReg",
    "crema_disjoint_joint": "disjoint, decoder attending across leads",
    "crema_disjoint_lr2": "disjoint, twice the learning rate",
    "crema_default": "today's default (disjoint, lambda 0.01)",
    "crema_default_aug3": "default, 3x stronger view augmentation",
    "crema_default_mask60": "default, mask ratio 0.6",
    "crema_default_patient": "default, same-patient records as extra positives",
    "crema_default_mask90": "default, mask ratio 0.9",
    "random_kernels": "random convolutional kernels (2,000), no training",
}


def search_summary() -> dict:
    return json.loads((SEARCH / "summary.json").read_text())


def search_screen() -> str:
    """RESULTS: the screen, validation fold 9, pooled features, every variant."""
    rows = [[VARIANT_LABELS.get(r["variant"], r["variant"]), f"`{r['variant']}`", str(r["n_seeds"]),
             fmt(r["val_f1.0"]), f"{signed(r['val_f1.0_minus_mae'])} ({r['val_f1.0_minus_mae_wins']})",
             signed(r["val_f1.0_minus_random_init"]), fmt(r["val_f0.1"])]
            for r in search_summary()["screen"]["pooled"]]
    return markdown_table(["variant", "name", "seeds", "AUROC, 100% labels", "minus MAE (seeds ahead)",
                           "minus random init", "AUROC, 10% labels"], rows) + "\n"


def search_cpu() -> str:
    """RESULTS: the one-seed CPU screens run after the search (raw/screen_cpu_*.jsonl)."""
    rows = []
    for path in sorted((SEARCH / "raw").glob("screen_cpu_*.jsonl")):
        for r in read_jsonl(path):
            pooled, leads = r["screen"]["pooled"], r["screen"].get("leads", {})
            rows.append([VARIANT_LABELS.get(r["variant"], r["variant"]), f"`{r['variant']}`", str(r["seed"]),
                         fmt(pooled["val_f1.0"]), fmt(pooled["val_f0.1"]), fmt(leads.get("val_f1.0")),
                         fmt(r["train"]["loss_rec"]), f"raw/{path.name}"])
    return markdown_table(["variant", "name", "seed", "pooled, 100%", "pooled, 10%", "per-lead, 100%",
                           "final L_rec", "records"], rows) + "\n"


def search_final() -> str:
    """RESULTS: the final stage on the test fold and CinC, and the paired differences of the winner."""
    final = search_summary()["final"]["pooled"]
    methods = sorted(final["methods"], key=lambda m: -np.mean(final["methods"][m]["f1"]))
    rows = [[VARIANT_LABELS.get(m, m), str(len(final["methods"][m]["f1"])),
             *(fmt(np.mean(final["methods"][m][k])) for k in ("f0.01", "f0.1", "f1")),
             fmt(np.nanmean(final["methods"][m]["loso"]))] for m in methods]
    table = markdown_table(["method", "pretraining seeds", "1% labels", "10% labels", "100% labels",
                            "CinC, held-out source (mean)"], rows)
    diffs = [[f"`{d['method']}` minus `{d['minus']}`", f"{100 * d['fraction']:g}%", difference(d),
              ", ".join(signed(v) for v in d["per_seed"]), ", ".join(signed(v) for v in d["loso_per_seed"])]
             for d in final["paired"] if d["method"] == "crema_disjoint"]
    return (table + "\n\nThe winner minus plain MAE and minus random init, paired on pretraining seeds (test scores "
            "averaged over seeds, 95% paired bootstrap over test records; per-seed differences beside):\n\n"
            + markdown_table(["difference", "labels", "AUROC difference [95% CI]", "per pretraining seed",
                              "CinC held-out sources, per seed"], diffs) + "\n")


def search_diagnosis() -> str:
    """RESULTS: the gradient diagnosis of the original and the winning views (diagnosis/diagnosis.json)."""
    runs = json.loads((SEARCH / "diagnosis" / "diagnosis.json").read_text())
    rows = []
    for run in runs:
        log = run["log"]
        for step in (0, 100, 200, 400, log[-1]["step"]):
            e = next((e for e in log if e["step"] == step), None)
            if e is None:
                continue
            ratio = np.mean(e["con_block_norms"]) / max(1e-12, np.mean(e["rec_block_norms"]))
            rows.append([run["design"], str(e["step"]), f"{ratio:.1f}", f"{e['cosine_rec_con']:+.2f}",
                         f"{e['acc']:.2f}", f"{e['loss_rec']:.3f}", f"{e['shared_visible']:.0%}"])
    clipped = ", ".join(f"{r['design']} {r['clipped_fraction']:.0%}" for r in runs)
    return (markdown_table(["views", "step", "grad norm of lambda x L_con / of L_rec (encoder blocks)",
                            "cosine of the two gradients", "contrastive top-1 accuracy", "L_rec",
                            "visible input shared by the two views"], rows)
            + f"\n\nSteps on which gradient clipping was active: {clipped}.\n")


# qrs_reconstruction.json names runs by folder; the release-length runs were renamed when the
# lambda-0.01 seed-0 run became the shipped model (and the lambda-0.1 run got the suffix).
QRS_RUNS = {"runs/pretrain/crema-mini-ecg12-lambda0.1": ("crema_disjoint_8000", 0),
            "runs/pretrain/crema-mini-ecg12": ("crema_disjoint_l001_8000", 0),
            "runs/pretrain/crema-l001-8000-s1": ("crema_disjoint_l001_8000", 1),
            "runs/pretrain/crema-l001-8000-s2": ("crema_disjoint_l001_8000", 2),
            "runs/pretrain/mae-mini-8000": ("mae_8000", 0), "runs/pretrain/mae-mini-8000-s1": ("mae_8000", 1),
            "runs/pretrain/mae-mini-8000-s2": ("mae_8000", 2)}
RELEASE_LABELS = {"crema_disjoint_8000": "CREMA, lambda 0.1 (the first shipped weights)",
                  "crema_disjoint_l001_8000": "CREMA, lambda 0.01", "mae_8000": "plain MAE"}
SHIPPED_RUN = ("crema_disjoint_l001_8000", 0)  # the weights shipped as crema-mini-ecg12


def release_length() -> str:
    """RESULTS: the 8,000-step runs: probe scores and masked-QRS reconstruction per run, and means."""
    folder = SEARCH / "release-length"
    qrs_file = json.loads((folder / "qrs_reconstruction.json").read_text())
    qrs = {QRS_RUNS[r["model"]]: r["qrs"]["corr_median"] for r in qrs_file["results"]}
    columns = ("val 100%", "val 10%", "test 1%", "test 10%", "test 100%", "CinC")

    def mean_of(final: dict, prefix: str) -> float:
        return float(np.mean([v["auroc"] for k, v in final.items() if k.startswith(prefix) and "auroc" in v]))

    cells: dict[str, dict[int, list[float]]] = {}
    for r in read_jsonl(folder / "checkpoints.jsonl"):
        screen, final = r["screen"]["pooled"], r["final"]["pooled"]
        cells.setdefault(r["variant"], {})[r["seed"]] = [
            screen["val_f1.0"], screen["val_f0.1"], mean_of(final, "test/f0.01/"), mean_of(final, "test/f0.1/"),
            mean_of(final, "test/f1/"), mean_of(final, "loso/"), qrs.get((r["variant"], r["seed"]), np.nan)]
    rows = []
    for variant in RELEASE_LABELS:
        for seed, values in sorted(cells.get(variant, {}).items()):
            shipped = " (shipped)" if (variant, seed) == SHIPPED_RUN else ""
            rows.append([RELEASE_LABELS[variant], f"{seed}{shipped}", *(fmt(v) for v in values[:-1]),
                         fmt(values[-1], 2)])
    for variant in RELEASE_LABELS:
        seeds = cells.get(variant, {})
        if len(seeds) > 1:
            mean = np.mean(list(seeds.values()), axis=0)
            rows.append([f"{RELEASE_LABELS[variant]}, mean of {len(seeds)} seeds", "", *(fmt(v) for v in mean[:-1]),
                         fmt(mean[-1], 2)])
    return (markdown_table(["run (8,000 steps, pooled features)", "seed", *columns, "masked-QRS correlation"], rows)
            + f"\n\nMasked-QRS correlation: median Pearson correlation between reconstruction and truth over the "
            f"{qrs_file['results'][0]['qrs']['patches']:,} masked patches holding an R peak in "
            f"{qrs_file['windows']} validation windows (each model masks the same windows with the same seeds).\n")


# ----------------------------------------------------------------------------- benchmarks

def bench_inference() -> str:
    """BENCHMARKS: inference throughput and latency (results/bench/inference-cpu-*.json)."""
    runs = {p.stem.rsplit("-", 1)[-1]: json.loads(p.read_text()) for p in sorted((RESULTS / "bench").glob("inference-cpu-*.json"))}
    auto, fp32 = runs["auto"], runs["fp32"]
    names = {"resnet1d": "1-D ResNet (reference)", "sit-tiny": "SiT tiny", "sit-small": "SiT small"}
    rows = []
    for key, model in auto["models"].items():
        other = fp32["models"][key]
        rows.append([names.get(key, key), f"{model['params_m']:.2f} M",
                     f"{model['embeddings_per_s']:.1f} ({other['embeddings_per_s']:.1f})",
                     f"{model['latency_ms_median']:.1f} / {model['latency_ms_p95']:.1f} "
                     f"({other['latency_ms_median']:.1f} / {other['latency_ms_p95']:.1f})"])
    e2e = [r["api_end_to_end"] for r in (auto, fp32)]
    return (f"`{auto['command']}` and its `--precision fp32` twin; {auto['cpu_count']} CPU cores, "
            f"{auto['torch_threads']} torch thread, torch {auto['torch']}, window {auto['window']} samples, "
            f"{auto['weights']}; `auto` ran in {auto['precision']}.\n\n"
            + markdown_table(["model", "parameters", f"embeddings/s at batch {auto['models']['sit-tiny']['batch']}, "
                              f"{auto['precision']} (fp32)", "batch-1 latency median / p95 ms, "
                              f"{auto['precision']} (fp32)"], rows)
            + f"\n\nThrough the Python API (read, preprocess and embed {e2e[0]['records']} {e2e[0]['source']} files): "
            f"{e2e[0]['records_per_s']:.1f} records/s ({auto['precision']}), {e2e[1]['records_per_s']:.1f} (fp32).\n")


def bench_gpu_pretrain() -> str:
    """BENCHMARKS: the GPU pretraining smoke runs logged by the design search's GPU script."""
    raw = SEARCH / "raw"
    device, software = (raw / "gpu.txt").read_text().splitlines()[:2]
    single = read_jsonl(raw / "smoke_bf16_log.jsonl")[-1]
    ddp = next(json.loads(line) for line in reversed((raw / "smoke.log").read_text().splitlines())
               if line.startswith("{"))
    rows = [["`crema pretrain` (one process)", str(single["step"]), f"{single['ecgs_per_s']:,.0f}"],
            ["`torchrun --standalone --nproc_per_node 1 -m crema pretrain` (NCCL)", str(ddp["step"]),
             f"{ddp['ecgs_per_s']:,.0f}"]]
    return (f"{device.split(',')[0]} ({software}); `tiny` CREMA, 5 s views, batch 64, bf16 autocast chosen by "
            "`--amp auto`; ECGs/s as logged at the step shown (files in `results/design-search/raw/`):\n\n"
            + markdown_table(["run", "step", "ECGs/s"], rows) + "\n")


def model_screen() -> str:
    """RESULTS: the model screen's tables, as ``experiments/model_screen.py --tables`` wrote them."""
    return (RESULTS / "model-screen" / "screen.md").read_text()


def demo() -> str:
    """README: the table ``make demo`` ends with, from its committed probe results."""
    from crema.eval.report import results_text
    from crema.eval.results import load_results

    results = [r for name in ("probe-crema", "probe-random_init")
               for r in load_results(RESULTS / "demo" / name)["results"]]
    return "```\n" + results_text(results).rstrip() + "\n```\n"


def shipped_classifier(folder: str = "shipped-classifier") -> str:
    """RESULTS: a shipped classifier's test table, as ``experiments/classifier_card.py`` wrote it."""
    return (RESULTS / folder / "card_table.md").read_text()


def shipped_classifiers() -> str:
    """RESULTS: the shipped classifiers side by side: validation macro AUROC at the early-stopping
    epoch (their configs) and test macro AUROC (their cards' measurements)."""
    rows = []
    for name, folder in (("crema-w128-ecg12-superdiagnostic", "shipped-classifier-w128"),
                         ("crema-mini-ecg12-superdiagnostic", "shipped-classifier")):
        config = json.loads((model_dir(name) / "config.json").read_text())
        card = json.loads((RESULTS / folder / "card.json").read_text())
        low, high = card["macro_ci95"]
        rows.append([f"`{name}`", config["init"], fmt(config["val_auroc"]),
                     f"{fmt(card['macro_auroc'])} [{fmt(low)}, {fmt(high)}]", str(card["n_test"])])
    return markdown_table(["classifier", "encoder", "validation macro AUROC (fold 9)", "test macro AUROC [95% CI]",
                           "test records"], rows) + "\n"


TABLES: dict[str, Callable[[], str]] = {
    "shipped-model": shipped_model, "card": card, "card-paired": card_paired, "demo": demo,
    "card-w128": partial(card, RESULTS / "card-w128", "crema-w128-ecg12"),
    "card-w128-paired": partial(card_paired, RESULTS / "card-w128", "crema-w128-ecg12"),
    "suite-default": suite_default, "suite-default-paired": suite_default_paired,
    "suite-default-tasks": suite_default_tasks, "suite-lambda01": suite_lambda01,
    "original": original, "ablation": ablation,
    "search-screen": search_screen, "search-cpu": search_cpu, "search-final": search_final,
    "search-diagnosis": search_diagnosis, "release-length": release_length,
    "bench-inference": bench_inference, "bench-gpu-pretrain": bench_gpu_pretrain,
    "model-screen": model_screen, "shipped-classifier": shipped_classifier,
    "shipped-classifier-w128": partial(shipped_classifier, "shipped-classifier-w128"),
    "shipped-classifiers": shipped_classifiers,
}


# ----------------------------------------------------------------------------- the pages

def fill(text: str, where: str) -> tuple[str, list[str]]:
    """``text`` with every table block regenerated, and the names of the blocks that changed."""
    changed: list[str] = []

    def replace(match: re.Match) -> str:
        name = match.group(2)
        if name not in TABLES:
            raise SystemExit(f"{where}: unknown table {name!r} (known: {', '.join(TABLES)})")
        body = TABLES[name]()
        if body != match.group(3):
            changed.append(name)
        return match.group(1) + body + match.group(4)

    return BLOCK.sub(replace, text), changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("pages", nargs="*", type=Path, help=f"Markdown files (default: {', '.join(PAGES)})")
    p.add_argument("--check", action="store_true", help="change nothing; exit 1 if a block differs")
    p.add_argument("--print", dest="name", choices=sorted(TABLES), help="print one table and exit")
    args = p.parse_args(argv)
    if args.name:
        print(TABLES[args.name](), end="")
        return 0
    stale = []
    for page in args.pages or [REPO / name for name in PAGES]:
        text = page.read_text()
        new, changed = fill(text, str(page))
        stale += [f"{page}: table {name!r} differs from the results (run python experiments/readme_tables.py)"
                  for name in changed]
        if changed and not args.check:
            page.write_text(new)
    if args.check and stale:
        print("\n".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
