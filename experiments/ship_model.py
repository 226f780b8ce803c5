"""Package a finished pretraining run or fine-tuned classifier as a shipped model, in a release
folder outside the source tree.

Writes ``OUT/NAME/{config.json, model.safetensors, MODEL_CARD.md}`` and ``OUT/models.json`` (the
installed package's registry with this model's entry added or replaced: SHA-256 of the weights and
a one-line summary). The card is rendered from ``--card-template`` (Markdown with
``{placeholders}`` filled from the run's config and log) and ``--table`` (the measured tables,
Markdown, from ``experiments/card_table.py``). Nothing under ``src/`` is written: a release copies
the folder into the package by hand, so that the change is one reviewable commit.

Usage::

    python experiments/ship_model.py runs/pretrain/crema-mini-ecg12 --name crema-mini-ecg12 \\
        --summary "CREMA mini (...)" --card-template docs/MODEL_CARD.template.md \\
        --table results/card/card_table.md --out runs/release
    # the release step: copy into the package, check, commit
    cp -r runs/release/crema-mini-ecg12 src/crema/weights/
    cp runs/release/models.json src/crema/weights/models.json
    python -m crema.weights --update crema-mini-ecg12
    crema models

A classifier folder (``crema finetune --out``) is packaged the same way with
``--card-template docs/CLASSIFIER_CARD.template.md`` and ``--table`` from
``experiments/classifier_card.py``; its card fields come from ``finetune_summary.json`` and
``results.json``, and the machine-local paths of its fine-tuning settings are dropped.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

from crema.config import EMBEDDING_FEATURES, ModelConfig, embedding_features
from crema.config_io import from_dict
from crema.data.corpus import Corpus, parse_corpus_spec
from crema.model.sit import feature_dim
from crema.weights import shipped_models

from lab import read_jsonl


def count_params(weights: Path) -> dict[str, int]:
    """Parameters per top-level part of the network (``encoder``, ``decoder``, ``projector``, ...)."""
    from safetensors.torch import load_file

    state = load_file(str(weights))
    parts: dict[str, int] = {}
    for key, tensor in state.items():
        part = key.split(".")[0]
        parts[part] = parts.get(part, 0) + tensor.numel()
    return parts


def output_text(config: dict) -> str:
    """The card's sentence on what an embedding holds: the default read-out named by the
    config's ``embedding.features`` and its width, and the other kind."""
    model_cfg = from_dict(ModelConfig, config["model"], "model")
    kind = embedding_features(config)
    width = {k: feature_dim(model_cfg, k) for k in EMBEDDING_FEATURES}
    if kind == "leads":
        return (f"Output: by default (`embedding.features` `leads` in `config.json`) the {model_cfg.n_leads} "
                f"per-lead mean tokens through the final LayerNorm, lead-major: {width['leads']} values "
                f"({model_cfg.n_leads} x {model_cfg.dim}); `features=\"mean\"` / `--features mean` gives the "
                f"{width['mean']} pooled values (mean of the tokens, LayerNorm).")
    return (f"Output: by default (`embedding.features` `mean`) {width['mean']} values, the mean of the tokens "
            f"through the final LayerNorm; `features=\"leads\"` / `--features leads` gives the "
            f"{model_cfg.n_leads} per-lead mean tokens ({width['leads']} values).")


def architecture_text(config: dict) -> str:
    """The card's sentence on the network, from the config's ``model`` and ``preprocess``."""
    m, fs = config["model"], config["preprocess"]["fs"]
    within = "within each lead" if m.get("decoder_mode") == "per_lead" else "across all leads"
    return (f"Signal Transformer (SiT) `{m['size']}`: width {m['dim']}, {m['depth']} pre-norm blocks, "
            f"{m['heads']} heads, per-patch convolutional stem ({m['stem_channels']} channels), "
            f"{m['patch_size'] / fs:g} s patches ({m['patch_size']} samples at {fs:g} Hz), learned lead and "
            f"sinusoidal time embeddings; MAE decoder width {m['decoder_dim']}, {m['decoder_depth']} "
            f"block{'s' if m['decoder_depth'] != 1 else ''}, attention {within}.")


def crop_text(config: dict) -> str:
    """The card's sentence on how much of a 10 s window the model sees at once."""
    pre, window = config["preprocess"], config["model"]["window"]
    samples = round(pre["window_s"] * pre["fs"])
    if window >= samples:
        return f"The model sees the whole {pre['window_s']:g} s window ({samples:,} samples)."
    parts = {2: "two", 3: "three", 4: "four"}.get(samples // window, str(samples // window))
    return (f"The model sees {window / pre['fs']:g} s ({window:,} samples); a {pre['window_s']:g} s window's "
            f"representation is the mean of its {parts} {window / pre['fs']:g} s parts.")


# What each pretraining corpus of the committed recipes holds (README, "Getting the data")
CORPUS_TEXT = {
    "unlabeled": "`ptbxl-unlabeled`, PTB-XL records with ecg_id > 500",
    "ptbxl": "PTB-XL records 1-500",
    "cinc": "CinC 2020/2021 records of six sources (CPSC 2018, CPSC extra, Georgia, Ningbo, PTB, PTB-XL), "
            "CinC copies of PTB-XL records removed",
    "challenge2011": "the Challenge 2011 set-A mobile-phone recordings",
}


def pretraining_data(corpora: list[str]) -> tuple[str, int]:
    """The card's list of the run's pretraining corpora (``DIR`` or ``DIR:split``) and their
    number of windows, counted in the prepared corpora (which must be at hand)."""
    parts, total = [], 0
    for spec in corpora:
        path, splits = parse_corpus_spec(spec)
        n = len(Corpus(path).rows(list(splits) if splits else None))
        where = f" of the {'/'.join(splits)} split" if splits else ""
        parts.append(f"{CORPUS_TEXT.get(path.name, f'`{path.name}`')}: {n:,} windows{where}")
        total += n
    return "; ".join(parts) + f"; {total:,} windows of 10 s in all", total


def speed_text(bench: Path) -> str:
    """The card's section on speed, from ``benchmarks/embed_throughput.py``'s JSON for the model."""
    d = json.loads(bench.read_text())
    rows, start = d["rows"], d["startup"]
    return (f"## Speed on a CPU\n\n"
            f"`crema embed` of {d['records']} PTB-XL 10 s records on one thread of a {d['cpus']}-core machine "
            f"(`python benchmarks/embed_throughput.py --model {d.get('model', 'NAME')}`, `{bench}`): the model alone "
            f"{rows['model']['records_per_s']:.1f} records/s, the whole command "
            f"{rows['end to end']['records_per_s_without_startup']:.1f} records/s once started, "
            f"{start['one_record_s']:.2f} s for one record from a fresh process (importing torch, scipy and pandas "
            f"took {start['imports_s']:.2f} s of it), peak memory {rows['end to end']['maxrss_mb']:.0f} MB.\n\n")


def wall_seconds(log: list[dict]) -> float:
    """Seconds of training in a run's log, over every working period (``elapsed_s`` restarts from
    zero when a run is resumed)."""
    total, last = 0.0, 0.0
    for entry in log:
        if entry["elapsed_s"] < last:
            total += last
        last = entry["elapsed_s"]
    return total + last


def card_fields(name: str, config: dict, log: list[dict], weights: Path, digest: str, table: str,
                texts: dict[str, str]) -> dict:
    """The values the card template's ``{placeholders}`` name; ``texts`` holds those given on the
    command line (recipe, card command, notes, ...)."""
    params = count_params(weights)
    train = config["train"]
    data, n_windows = pretraining_data(train["corpora"])
    return {
        "name": name, "sha256": digest, "step": config["step"], "steps": train["steps"],
        "batch_size": train["batch_size"], "seed": train["seed"], "blr": f"{train['blr']:g}",
        "warmup_steps": train["warmup_steps"], "weight_decay": f"{train['weight_decay']:g}",
        "grad_clip": f"{train['grad_clip']:g}", "data": data, "n_windows": f"{n_windows:,}",
        "wall_min": f"{wall_seconds(log) / 60:.0f}", "loss_rec": f"{log[-1]['loss_rec']:.3f}",
        "acc": f"{log[-1]['acc']:.2f}", "encoder_params": f"{params.get('encoder', 0):,}",
        "all_params": f"{sum(params.values()):,}", "size_kb": f"{weights.stat().st_size / 1024:.0f}",
        "table": table, "output": output_text(config), "architecture": architecture_text(config),
        "crop_text": crop_text(config), "model_json": json.dumps(config["model"]),
        "objective_json": json.dumps(config["objective"]), **texts,
    }


# fine-tuning settings that name folders of the machine that trained it: not shipped
LOCAL_PATH_FIELDS = ("corpus", "out")


def classifier_fields(name: str, config: dict, run: Path, weights: Path, digest: str, table: str) -> dict:
    """The values the classifier card template's ``{placeholders}`` name."""
    summary = json.loads((run / "finetune_summary.json").read_text())
    result = json.loads((run / "results.json").read_text())["results"][0]
    settings = config["finetune"]
    return {
        "name": name, "sha256": digest, "init": config["init"], "classes": ", ".join(config["classes"]),
        "n_train": result["n_train"], "n_val": result["n_val"], "n_test": result["n_test"],
        "epochs": settings["epochs"], "patience": settings["patience"], "seed": settings["seed"],
        "best_epoch": summary["best_epoch"], "epochs_run": summary["epochs_run"], "val_auroc": config["val_auroc"],
        "size_kb": f"{weights.stat().st_size / 1024:.0f}", "table": table,
        "finetune_json": json.dumps(settings),
    }


def shipped_config(config: dict) -> dict:
    """``config`` without the machine-local paths of a classifier's fine-tuning settings."""
    if "finetune" not in config:
        return config
    settings = {k: v for k, v in config["finetune"].items() if k not in LOCAL_PATH_FIELDS}
    return {**config, "finetune": settings}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a finished pretraining run folder")
    p.add_argument("--name", required=True, help="the model's name (what crema.load takes)")
    p.add_argument("--summary", required=True, help="one line for `crema models`")
    p.add_argument("--card-template", type=Path, required=True)
    p.add_argument("--table", type=Path, help="measured tables (Markdown) to put in the card")
    p.add_argument("--out", type=Path, required=True, help="release folder (outside src/), e.g. runs/release")
    p.add_argument("--features", choices=EMBEDDING_FEATURES,
                   help="the encoder's default read-out, stored as config.json's embedding.features "
                        "(default: the run's own, mean when it names none)")
    p.add_argument("--recipe", default="configs/pretrain/crema-release.json", help="the run's committed recipe")
    p.add_argument("--card-command", default="bash experiments/card.sh", help="what measures the card's tables")
    p.add_argument("--suite", default="configs/suite-card.json", help="the card suite's config")
    p.add_argument("--card-results", help="where the card's measured outputs are committed (default "
                                           "results/card/, results/shipped-classifier for a classifier)")
    p.add_argument("--machine", default="one CPU thread of a shared 2-core machine", help="what trained it")
    p.add_argument("--notes", type=Path, action="append", default=[],
                   help="Markdown for the card, before its limits (repeatable: the files in order)")
    p.add_argument("--limit", action="append", default=[], help="a further limit (a bullet; repeatable)")
    p.add_argument("--benchmark", type=Path,
                   help="benchmarks/embed_throughput.py's JSON for this model: the card's speed section")
    args = p.parse_args(argv)

    config = shipped_config(json.loads((args.run / "config.json").read_text()))
    if args.features:
        config = {**config, "embedding": {"features": args.features}}
    dst = args.out / args.name
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.run / "model.safetensors", dst / "model.safetensors")  # follows checkpoint links
    (dst / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    digest = hashlib.sha256((dst / "model.safetensors").read_bytes()).hexdigest()
    table = args.table.read_text() if args.table else "(not yet measured)"
    if config.get("kind") == "classifier":
        fields = classifier_fields(args.name, config, args.run, dst / "model.safetensors", digest, table)
        fields["card_results"] = args.card_results or "results/shipped-classifier"
    else:
        texts = {"recipe": args.recipe, "card_command": args.card_command, "suite": args.suite,
                 "card_results": args.card_results or "results/card/", "machine": args.machine,
                 "notes": "".join(path.read_text().rstrip() + "\n\n" for path in args.notes)
                          + (speed_text(args.benchmark) if args.benchmark else ""),
                 "limits": "".join(f"- {text}\n" for text in args.limit)}
        fields = card_fields(args.name, config, read_jsonl(args.run / "log.jsonl"), dst / "model.safetensors",
                             digest, table, texts)
    (dst / "MODEL_CARD.md").write_text(args.card_template.read_text().format(**fields))
    config_digest = hashlib.sha256((dst / "config.json").read_bytes()).hexdigest()
    entry = {"sha256": digest, "config_sha256": config_digest, "summary": args.summary}
    registry = {**shipped_models(), args.name: entry}
    (args.out / "models.json").write_text(json.dumps(registry, indent=2, sort_keys=True) + "\n")
    print(f"packaged {args.name} in {dst}: {fields['size_kb']} KB, sha256 {digest[:16]}...; "
          f"copy {dst} and {args.out / 'models.json'} into src/crema/weights/ to ship it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
