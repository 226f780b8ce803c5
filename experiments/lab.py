"""Helpers shared by the experiment scripts beside this file.

The experiments are consumers of the installed package (``pip install -e .`` from the repository
root): they ``import crema`` and never edit the module path. Run them from the repository root as
``python experiments/NAME.py``; Python puts a script's own folder first on the module path, which
is how they import this module (``import lab``).

What is here, each used by more than one script:

* Markdown tables, JSON lines and committed ``summary.json`` files (every table script);
* the design search's recipe: its variants as config overrides and the run config of one
  (variant, seed) (``design_search.py``, ``diagnose_gradients.py``);
* the search's final-stage tables and paired bootstrap (``design_report.py``, ``release_table.py``);
* the model card's tables from a suite run's ``summary.json`` (``card_table.py``,
  ``readme_tables.py``).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
FRACTIONS = (0.01, 0.1, 1.0)


# ----------------------------------------------------------------------------- files and tables

def read_jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file; an absent file has none."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, one line per row (no trailing newline)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def fmt(v: float | None, digits: int = 3) -> str:
    """A figure with ``digits`` decimals; empty for a missing or non-finite one."""
    return "" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def load_summary(folder: Path) -> list[dict]:
    """The rows of ``folder/summary.json`` (written by ``crema report``): one per method and setting,
    with ``auroc_mean`` and ``auroc_ci95`` combined over seeds."""
    return json.loads((folder / "summary.json").read_text())


def pick(summary: list[dict], **key) -> dict | None:
    """The one summary row whose fields equal ``key`` (None when there is none)."""
    hits = [s for s in summary if all(s.get(k) == v for k, v in key.items())]
    if len(hits) > 1:
        raise ValueError(f"{len(hits)} summary rows match {key}")
    return hits[0] if hits else None


def with_interval(row: dict | None) -> str:
    """``mean [low, high]`` of a summary row's macro AUROC; empty without a row."""
    if row is None:
        return ""
    low, high = row["auroc_ci95"]
    return f"{fmt(row['auroc_mean'])} [{fmt(low)}, {fmt(high)}]"


# ----------------------------------------------------------------------------- the model card

def card_names(model: str) -> dict[str, str]:
    """Row labels of a card suite's methods, in the cards' order; ``model`` is the shipped name of
    the suite's ``crema`` run."""
    return {"crema": f"**{model}** (CREMA)", "mae": "plain MAE, same recipe and steps",
            "crema-mini-ecg12": "crema-mini-ecg12 (the small shipped model)",
            "random_sit": "random-init SiT (same size)", "random_kernels": "random kernels (2,000), no training",
            "supervised_resnet1d": "1-D ResNet, supervised"}


def card_tables(summary: list[dict], model: str = "crema-mini-ecg12") -> str:
    """The model card's two tables from the card suite's ``summary.json``: PTB-XL superdiagnostic on
    the test fold (probe and fine-tune at each label fraction, mean [95% interval]) and CinC
    leave-one-source-out (probe, each held-out source and their mean). ``model`` names the
    suite's ``crema`` run."""
    names = card_names(model)

    def order(method: str) -> int:
        return list(names).index(method) if method in names else len(names)

    out = []
    ptbxl = [s for s in summary if s["task"] == "ptbxl-superdiagnostic" and s["experiment"] == "label_fraction"]
    if ptbxl:
        fractions = sorted({s["fraction"] for s in ptbxl})
        keys = sorted({(s["protocol"], s["method"]) for s in ptbxl},
                      key=lambda k: (k[0] != "probe", order(k[1])))
        rows = [[protocol, names.get(method, method),
                 *(with_interval(pick(ptbxl, protocol=protocol, method=method, fraction=f)) for f in fractions)]
                for protocol, method in keys]
        out += [f"PTB-XL superdiagnostic, test fold 10 ({ptbxl[0]['n_test']} scored records), macro AUROC, mean "
                "over seeds 0-2 (label subsets; fine-tune seeds) [95% bootstrap interval over test records]:", "",
                markdown_table(["protocol", "method", *(f"{100 * f:g}% labels" for f in fractions)], rows), ""]
    loso = [s for s in summary if s["experiment"] == "leave_source_out"]
    if loso:
        sources = sorted({s["holdout_source"] for s in loso})
        methods = sorted({s["method"] for s in loso}, key=order)
        cell = {(s["method"], s["holdout_source"]): s["auroc_mean"] for s in loso}
        rows = [[names.get(m, m), *(fmt(cell.get((m, src))) for src in sources),
                 fmt(np.nanmean([np.nan if cell.get((m, src)) is None else cell[(m, src)] for src in sources]))]
                for m in methods]
        out += ["CinC 2020/2021 scored classes, leave one source out (train on the other five), linear probe, "
                "macro AUROC:", "", markdown_table(["method", *sources, "mean"], rows), ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------- the design search's recipe

DEFAULT_OBJECTIVE = {"view_crop": "disjoint", "lambda_con": 0.01}  # today's default (the pins below undone)
# Each: {"objective"|"model"|"train": overrides}. "random_init" and "random_kernels" are not trained.
VARIANTS: dict[str, dict] = {
    "random_init": {},
    "random_kernels": {},                                                  # training-free baseline (eval.rocket)
    "mae": {"objective": {"mode": "mae", "lambda_con": 0.0}},
    "crema_base": {"objective": {"mode": "crema"}},                       # the original design (lambda 0.1)
    # views that cannot be matched by copying
    "crema_random": {"objective": {"view_crop": "random"}},
    "crema_disjoint": {"objective": {"view_crop": "disjoint"}},
    "crema_disjoint_l1": {"objective": {"view_crop": "disjoint", "lambda_con": 1.0}},
    "crema_disjoint_l001": {"objective": {"view_crop": "disjoint", "lambda_con": 0.01}},
    "crema_disjoint_t05": {"objective": {"view_crop": "disjoint", "tau": 0.5}},
    # negative-free / asymmetric regularisers
    "crema_vicreg": {"objective": {"con_loss": "vicreg"}},
    "crema_simsiam": {"objective": {"con_loss": "simsiam"}},
    "crema_disjoint_vicreg": {"objective": {"view_crop": "disjoint", "con_loss": "vicreg"}},
    "crema_disjoint_simsiam": {"objective": {"view_crop": "disjoint", "con_loss": "simsiam"}},
    "crema_disjoint_vicreg_l1": {"objective": {"view_crop": "disjoint", "con_loss": "vicreg", "lambda_con": 1.0}},
    "crema_disjoint_simsiam_l1": {"objective": {"view_crop": "disjoint", "con_loss": "simsiam", "lambda_con": 1.0}},
    # schedule
    "crema_warmup": {"objective": {"con_start_step": 600, "con_ramp_steps": 200}},
    "crema_disjoint_warmup": {"objective": {"view_crop": "disjoint", "con_start_step": 600,
                                            "con_ramp_steps": 200}},
    # the MAE side: masks that cannot be filled in from other leads at the same moment
    "mae_time": {"objective": {"mode": "mae", "lambda_con": 0.0, "mask_mode": "time"}},
    "crema_time_disjoint": {"objective": {"mask_mode": "time", "view_crop": "disjoint"}},
    "mae_raw": {"objective": {"mode": "mae", "lambda_con": 0.0, "norm_target": False}},
    # a decoder that attends across leads (can it rebuild a masked QRS from the other leads?)
    "crema_disjoint_joint": {"objective": {"view_crop": "disjoint"}, "model": {"decoder_mode": "joint"}},
    "mae_lr2": {"objective": {"mode": "mae", "lambda_con": 0.0}, "train": {"blr": 0.01}},
    # after the search (CPU): the best MAE learning rate with the winning views
    "crema_disjoint_lr2": {"objective": {"view_crop": "disjoint"}, "train": {"blr": 0.01}},
    # compute-matched: one CREMA step costs about two MAE steps on a CPU
    "mae_2x": {"objective": {"mode": "mae", "lambda_con": 0.0}, "train": {"steps": 2400, "warmup_steps": 120}},
    # after the release-length runs (CPU): levers the search left untried, at the default views and weight
    "crema_default": {"objective": DEFAULT_OBJECTIVE},
    "crema_default_aug3": {"objective": {**DEFAULT_OBJECTIVE, "aug_scale": 0.3, "aug_noise": 0.1, "aug_wander": 0.3}},
    "crema_default_patient": {"objective": {**DEFAULT_OBJECTIVE, "patient_positives": True}},
    "crema_default_mask60": {"objective": {**DEFAULT_OBJECTIVE, "mask_ratio": 0.6}},
    "crema_default_mask90": {"objective": {**DEFAULT_OBJECTIVE, "mask_ratio": 0.9}},
}


def base_recipe() -> dict:
    """The ``pretrain`` section of ``configs/suite-shared.json`` (model, objective, train)."""
    suite = json.loads((REPO / "configs" / "suite-shared.json").read_text())
    return copy.deepcopy(suite["pretrain"])


def run_config(variant: str, seed: int, corpora: Path, out: Path, device: str, steps: int | None = None,
               extra: dict | None = None):
    """The :class:`crema.config.RunConfig` of one (variant, seed) of the search."""
    from crema.config import RunConfig
    from crema.config_io import from_dict

    recipe = base_recipe()
    specs = []
    for spec in recipe["corpora"]:
        name, _, split = spec.partition(":")
        specs.append(str(corpora / name) + (f":{split}" if split else ""))
    # The search started from the original design (two views of one shared crop); pinning it here
    # keeps every variant's meaning fixed now that the winner (disjoint crops) is the default.
    # lambda 0.1 likewise: the search ran at that weight before 0.01 became the default.
    parts = {"model": dict(recipe["model"]), "objective": {"view_crop": "same", **recipe["objective"],
                                                           "lambda_con": 0.1},
             "train": dict(recipe["train"])}
    for overrides in (VARIANTS.get(variant, {}), extra or {}):
        for part, fields in overrides.items():
            parts[part].update(fields)
    parts["train"].update(corpora=specs, out=str(out), seed=seed, device=device, amp="auto",
                          log_every=50, ckpt_every=10**9)
    if steps is not None:
        parts["train"]["steps"] = steps
        parts["train"]["warmup_steps"] = min(parts["train"].get("warmup_steps", 100), max(1, steps // 20))
    return from_dict(RunConfig, parts)


# ----------------------------------------------------------------------------- the search's final stage

def test_labels(corpora: Path) -> tuple[np.ndarray, list[str]]:
    """Record-level labels ``(R, K)`` of the PTB-XL test fold in the order the final stage scored them."""
    from crema.data.corpus import Corpus
    from crema.eval.splits import record_mean, task_split

    split = task_split(Corpus(corpora / "ptbxl"), "ptbxl-superdiagnostic")
    _, first = record_mean(np.zeros((len(split.rows["test"]), 1)), split.keys["test"])
    return split.y["test"][first], split.classes


def final_table(records: list[dict], kind: str) -> dict[str, dict]:
    """``{method: {"f0.01": [auroc per seed], ..., "loso": [mean over sources per seed],
    "loso_sources": {source: [auroc per seed]}, "scores": {fraction: [(R, K) per seed]}}}`` from
    final-stage records (records with an ``error`` are left out)."""
    out: dict[str, dict] = {}
    for r in records:
        if "error" in r:
            continue
        res = (r.get("final") or {}).get(kind) or (r.get("final") or {}).get("pooled")
        if not res:
            continue
        m = out.setdefault(r["variant"], {"scores": {}, "loso_sources": {}})
        for f in FRACTIONS:
            runs = [v for k, v in res.items() if k.startswith(f"test/f{f:g}/")]
            m.setdefault(f"f{f:g}", []).append(float(np.mean([v["auroc"] for v in runs])))
            m["scores"].setdefault(f, []).append(np.mean([np.array(v["scores"]) for v in runs], axis=0))
        loso = {k.split("/", 1)[1]: v["auroc"] for k, v in res.items()
                if k.startswith("loso/") and v.get("auroc") is not None and np.isfinite(v["auroc"])}
        m.setdefault("loso", []).append(float(np.mean(list(loso.values()))) if loso else float("nan"))
        for src, v in loso.items():
            m["loso_sources"].setdefault(src, []).append(v)
    return out


def paired_bootstrap(y: np.ndarray, a: np.ndarray, b: np.ndarray, n: int = 2000,
                     seed: int = 0) -> tuple[float, float, float]:
    """Macro AUROC of ``a`` minus ``b`` (record scores ``(R, K)``) and its 95% interval from a
    bootstrap over the records both scored (:func:`crema.eval.metrics.paired_bootstrap_auroc`)."""
    from crema.eval import metrics

    return metrics.paired_bootstrap_auroc(y, a, b, n, seed)
