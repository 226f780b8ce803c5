"""CLI subcommands of the evaluation area: ``crema probe``, ``crema finetune``, ``crema evaluate``
and ``crema report``.

Only the standard library, ``config``, ``flags`` and ``errors`` are imported at the top: the CLI imports every
commands module to build its parser, so each command imports its torch/pandas/scipy machinery
inside its run function, and ``crema --help`` or a typo stays fast.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..config import EMBEDDING_FEATURES, MODEL_SIZES, AugmentConfig, FinetuneConfig, ModelConfig, embedding_features
from ..errors import CremaError
from ..flags import add_field_flags, flag_values


def register(subparsers: Any) -> None:
    _register_probe(subparsers)
    _register_finetune(subparsers)
    _register_evaluate(subparsers)
    _register_report(subparsers)


def _key_values(pairs: list[str] | None, flag: str) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key or not value:
            raise CremaError(f"{flag} expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


# ----------------------------------------------------------------------------- probe

def _register_probe(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "probe", help="linear probe of a frozen encoder at several label fractions and seeds",
        description="Frozen pooled features of an encoder (a checkpoint, or a random init as the honest "
                    "baseline), a linear classifier per label fraction and seed, test metrics with 95%% "
                    "bootstrap intervals. Writes OUT/results.json (readable by `crema report OUT`).")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="pretraining or classifier checkpoint folder")
    source.add_argument("--random-init", action="store_true", help="a randomly initialised SiT encoder")
    p.add_argument("--corpus", required=True, help="prepared corpus folder with labels for --task")
    p.add_argument("--task", required=True, help="label task, e.g. ptbxl-superdiagnostic or cinc-scored")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 1.0],
                   help="label fractions of the training folds (default 0.01 0.1 1)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="label-subset seeds (default 0 1 2)")
    p.add_argument("--head", choices=["logistic", "linear"], default="logistic",
                   help="logistic: scikit-learn one-vs-rest, C picked on validation (default); "
                        "linear: a torch linear head trained with BCE")
    p.add_argument("--holdout-source", help="leave one source out: test on this source, train on the others")
    p.add_argument("--features", choices=EMBEDDING_FEATURES,
                   help="encoder read-out: mean (pooled, D) or leads (each lead's mean token, normed, 12 x D); "
                        "default the checkpoint's own (mean unless its config says otherwise; mean for --random-init)")
    p.add_argument("--size", choices=sorted(MODEL_SIZES), default="tiny", help="SiT preset for --random-init")
    p.add_argument("--window", type=int, help="model window in samples for --random-init (default: corpus window)")
    p.add_argument("--init-seed", type=int, default=0, help="seed of the --random-init weights (default 0)")
    p.add_argument("--corruptions", nargs="*", metavar="NAME",
                   help="also AUROC vs severity for these test-time corruptions (no names = all defaults), "
                        "with the probe fitted on all training labels")
    p.add_argument("--name", help="method name in the results (default: random_sit, or the checkpoint folder name)")
    p.add_argument("--out", help="output folder (default runs/probe/<checkpoint or random>-<task>)")
    p.add_argument("--cache", help="feature cache folder (default runs/cache/features)")
    p.add_argument("--batch-size", type=int, default=64, help="ECGs per feature batch (default 64)")
    p.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, ...")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; 1 is fastest for "
                   "small models on a busy machine)")
    p.set_defaults(func=run_probe)


def _probe_encoder(args: argparse.Namespace, corpus) -> tuple[Any, str, dict]:
    import torch

    from ..model.inference import readout
    from ..model.sit import SiTEncoder
    from ..train.checkpoint import MODEL_FILE, check_corpus_rate, load_encoder, model_fs
    from ..weights import resolve as resolve_model
    from .features import file_sha256, module_sha256

    if args.random_init:
        torch.manual_seed(args.init_seed)
        window = args.window or int(corpus.signals.shape[-1])
        try:
            encoder = SiTEncoder(ModelConfig.from_size(args.size, window=window))
        except ValueError as exc:
            raise CremaError(f"--random-init: {exc}") from exc
        features = args.features or "mean"
        return readout(encoder.eval(), features), module_sha256(encoder), {
            "init": "random", "size": args.size, "init_seed": args.init_seed, "features": features}
    encoder, config = load_encoder(args.checkpoint)
    check_corpus_rate(model_fs(config), corpus.preprocess.fs, args.checkpoint, corpus.path)
    features = args.features or embedding_features(config, args.checkpoint)
    return readout(encoder, features), file_sha256(resolve_model(args.checkpoint) / MODEL_FILE), {
        "checkpoint": str(args.checkpoint), "kind": config.get("kind"), "features": features}


def run_probe(args: argparse.Namespace) -> int:
    from ..runtime import torch_threads

    with torch_threads(args.threads):
        return _run_probe(args)


def _run_probe(args: argparse.Namespace) -> int:
    from ..data.corpus import Corpus
    from .features import FINGERPRINT_WHAT, corpus_fingerprint, rows_sha256
    from .probe import fit_probe_on_fraction, probe_experiment, probe_features, task_split
    from .report import make_result, results_text, write_results
    from .robustness import DEFAULT_CORRUPTIONS, Inference, SeverityGrid, probe_severity_curve

    if any(not 0 < f <= 1 for f in args.fractions):
        raise CremaError(f"--fractions must be in (0, 1], got {args.fractions}")
    corpus = Corpus(args.corpus)
    split = task_split(corpus, args.task, args.holdout_source)
    encoder, weights_sha, init = _probe_encoder(args, corpus)
    crop = min(encoder.cfg.window, int(corpus.signals.shape[-1]))
    name = args.name or ("random_sit" if args.random_init else Path(args.checkpoint).resolve().name)
    out = Path(args.out or Path("runs") / "probe" / f"{name}-{args.task}")
    cache = Path(args.cache or Path("runs") / "cache" / "features")
    data_sha = corpus_fingerprint(corpus.path)
    progress = not args.no_progress
    feats = probe_features(encoder, corpus, split, crop, cache, weights_sha, data_sha, args.batch_size,
                           args.device, progress)
    method = name  # --name, else "random_sit" or the checkpoint folder name
    config = {**init, "weights_sha256": weights_sha, "corpus": str(corpus.path), "crop": crop, "head": args.head}
    results = probe_experiment(feats, args.fractions, args.seeds, method=method, data_sha256=data_sha,
                               config=config, kind=args.head, n_bootstrap=args.n_bootstrap, progress=progress)
    if args.corruptions is not None:
        probe, info = fit_probe_on_fraction(feats, 1.0, args.seeds[0], args.head)
        grid = SeverityGrid(tuple(args.corruptions or DEFAULT_CORRUPTIONS), n_bootstrap=args.n_bootstrap)
        run = Inference(crop, args.batch_size, args.device, progress, cache, weights_sha, data_sha)
        curve = probe_severity_curve(encoder, probe, feats, corpus, grid, run)
        results += [make_result(step=f"corruptions/{c['corruption']}/s{c['severity']}", method=method,
                                protocol="probe", task=args.task, experiment="corruption", seed=args.seeds[0],
                                evaluation=c["evaluation"], config={**config, "level": c["level"]},
                                data_sha256=data_sha, test_rows_sha256=rows_sha256(split.rows["test"]),
                                n_train=info["n_train"], fraction=1.0, corruption=c["corruption"],
                                severity=c["severity"]) for c in curve]
    write_results(out / "results.json", results,
                  {str(corpus.path): {"sha256": data_sha, "hash_of": FINGERPRINT_WHAT}},
                  {"command": "probe", "sizes": split.sizes()})
    print(results_text(results))
    print(f"\ncrema probe: {len(results)} results in {out / 'results.json'} "
          f"(train/val/test windows {split.sizes()}); `crema report {out}` draws them")
    return 0


# ----------------------------------------------------------------------------- finetune

# flag dest -> FinetuneConfig field, for the flags made from the fields (help = the field's comment)
_FINETUNE_FLAGS = {"arch": "arch", "size": "size", "corpus": "corpus", "task": "task", "out": "out",
                   "epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "weight_decay": "weight_decay",
                   "layer_decay": "layer_decay", "warmup_epochs": "warmup_epochs", "dropout": "dropout",
                   "probe_init": "probe_init", "fraction": "fraction", "seed": "seed", "patience": "patience",
                   "holdout_source": "holdout_source", "crop": "crop", "n_bootstrap": "n_bootstrap",
                   "device": "device", "workers": "num_workers", "amp": "amp"}


def _register_finetune(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "finetune", help="fine-tune a pretrained encoder, or train a SiT / ResNet1d from scratch",
        description="Encoder + linear head, multi-label BCE, AdamW with layer-wise lr decay, early stopping "
                    "on validation macro AUROC. The best epoch is saved in OUT as a classifier checkpoint "
                    "(model.safetensors + config.json with classes and F1 thresholds picked on validation), "
                    "with finetune_log.jsonl, finetune_summary.json and results.json.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="pretraining checkpoint folder to start from")
    source.add_argument("--init", choices=["random"], help="random init: supervised training from scratch")
    p.add_argument("--window", type=int, help="SiT window for --init random (default: corpus window)")
    add_field_flags(p, FinetuneConfig, _FINETUNE_FLAGS, keep_defaults=True, options={
        "corpus": {"required": True}, "task": {"required": True}, "out": {"required": True},
        "size": {"choices": sorted(MODEL_SIZES)},
        "amp": {"choices": ["auto", "bf16", "fp32"]}})  # "off" is the pretraining spelling of fp32
    p.add_argument("--augment", nargs="*", metavar="KEY=VALUE",
                   help="training augmentation, e.g. scale=0.1 noise=0.05 wander=0.1 lead_dropout=0.1 time_shift=0.1")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; 1 is fastest for "
                   "small models on a busy machine)")
    p.set_defaults(func=run_finetune)


def finetune_config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    """The :class:`FinetuneConfig` the flags describe."""
    augment_values = _key_values(args.augment, "--augment")
    try:
        augment = AugmentConfig(**{k: float(v) for k, v in augment_values.items()})
    except (TypeError, ValueError) as exc:
        raise CremaError(f"--augment: {exc} (keys: scale, noise, wander, lead_dropout, time_shift)") from exc
    if not 0 < args.fraction <= 1:
        raise CremaError(f"--fraction must be in (0, 1], got {args.fraction}")
    model = {"size": args.size, **({"window": args.window} if args.window else {})}
    return FinetuneConfig(**flag_values(args, _FINETUNE_FLAGS), checkpoint=args.checkpoint,
                          model=model if args.checkpoint is None else None, augment=augment)


def run_finetune(args: argparse.Namespace) -> int:
    from .finetune import finetune
    from ..runtime import torch_threads

    cfg = finetune_config_from_args(args)
    with torch_threads(args.threads):
        summary = finetune(cfg, progress=not args.no_progress)
    test = summary["test"]
    au, f1 = test["auroc"], test["f1"]

    def fmt(v):
        return "-" if v is None else f"{v:.3f}"

    print(f"crema finetune: best epoch {summary['best_epoch']} of {summary['epochs_run']} "
          f"(validation macro AUROC {fmt(summary['history'][summary['best_epoch']]['val_auroc'])})")
    print(f"  test macro AUROC {fmt(au['macro'])} [95% CI {fmt(au['ci95'][0])}, {fmt(au['ci95'][1])}], "
          f"macro F1 {fmt(f1['macro'])} on {test['n']} records")
    if au["skipped"]:
        print("  classes skipped: " + ", ".join(f"{c} ({why})" for c, why in au["skipped"].items()))
    print(f"  classifier checkpoint: {cfg.out}")
    return 0


# ----------------------------------------------------------------------------- evaluate

def _register_evaluate(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate", help="run an evaluation suite: pretrain variants, baselines, probes, fine-tunes, shifts",
        description="Runs every step of a suite config (see docs/EVALUATION.md): pretraining of each method, "
                    "linear probes, fine-tuning and supervised baselines at several label fractions and seeds, "
                    "leave-one-source-out and test-time corruptions. Each step's result is saved when it "
                    "finishes; --resume skips finished steps. Results go to OUT/results.json.")
    p.add_argument("--suite", required=True, help="suite config JSON, e.g. configs/suite-tiny.json")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue a run in OUT, skipping finished steps")
    p.add_argument("--corpus", action="append", metavar="NAME=DIR",
                   help="use DIR for the suite's corpus NAME (repeatable)")
    p.add_argument("--device", help="override the suite's device (auto, cpu, cuda, ...)")
    p.add_argument("--threads", type=int, help="override the suite's torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    from .suite import run_suite

    counts = run_suite(args.suite, args.out, resume=args.resume,
                       corpus_overrides=_key_values(args.corpus, "--corpus"),
                       progress=not args.no_progress, device=args.device, threads=args.threads)
    print(f"crema evaluate: {counts['steps']} steps: {counts['ran']} ran, {counts['already_done']} already done, "
          f"{counts['skipped']} skipped (see {Path(args.out) / 'results.json'}) in {counts['seconds']:.1f} s; "
          f"`crema report {args.out}` writes the report")
    return 0


# ----------------------------------------------------------------------------- report

def _register_report(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report", help="tables and plots of an evaluation run (report.md, report.html, PNGs)",
        description="Reads RUN_DIR/results.json (from crema evaluate, probe or finetune) and writes "
                    "report.md, a self-contained report.html, summary.json and plots/*.png into RUN_DIR.")
    p.add_argument("run_dir", help="folder holding results.json")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from .report import build_report, load_results, results_text

    written = build_report(args.run_dir)
    print(results_text(load_results(args.run_dir)["results"]))
    print(f"\ncrema report: wrote {written['markdown']}, {written['html']} and "
          f"{sum(k.startswith('plot:') for k in written)} plots")
    return 0
