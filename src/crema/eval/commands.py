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

from ..config import (EMBEDDING_FEATURES, MODEL_SIZES, SELECT_C, AugmentConfig, FinetuneConfig, ModelConfig,
                      embedding_features)
from ..errors import CremaError
from ..flags import add_field_flags, check_flag_ranges, device_flag, flag_values


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

SELECT_C_HELP = ("how the logistic probe picks its C: val = the best macro AUROC on the validation split (default); "
                 "cv = 5-fold cross-validation over the training records, for a validation split of a few dozen "
                 "records, too small to rank C")



# ----------------------------------------------------------------------------- probe

def _register_probe(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "probe", help="linear probe of a frozen encoder at several label fractions and seeds",
        description="Frozen pooled features of an encoder (a checkpoint, or a random init as the honest "
                    "baseline), a linear classifier per label fraction and seed, test metrics with 95% "
                    "bootstrap intervals. Writes OUT/results.json (readable by `crema report OUT`).")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="pretraining or classifier checkpoint folder, or a shipped model's "
                                             "name (see crema models)")
    source.add_argument("--random-init", action="store_true", help="a randomly initialised SiT encoder")
    p.add_argument("--corpus", required=True, help="prepared corpus folder with labels for --task")
    p.add_argument("--task", required=True, help="label task, e.g. ptbxl-superdiagnostic or cinc-scored")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 1.0],
                   help="label fractions of the training folds (default 0.01 0.1 1)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="label-subset seeds (default 0 1 2)")
    p.add_argument("--head", choices=["logistic", "linear"], default="logistic",
                   help="logistic: scikit-learn one-vs-rest, C picked on validation (default); "
                        "linear: a torch linear head trained with BCE. A regression task is always "
                        "probed with ridge regression, alpha picked on validation")
    p.add_argument("--select-c", choices=SELECT_C, default="val", help=SELECT_C_HELP)
    p.add_argument("--holdout-source", help="leave one source out: test on this source, train on the others")
    p.add_argument("--features", choices=EMBEDDING_FEATURES,
                   help="encoder read-out: mean (pooled, D) or leads (each lead's mean token, normed, 12 x D); "
                        "default the checkpoint's own (mean unless its config says otherwise; for --random-init "
                        "that of --like, else mean)")
    p.add_argument("--size", choices=sorted(MODEL_SIZES), default="tiny", help="SiT preset for --random-init")
    p.add_argument("--like", metavar="CHECKPOINT",
                   help="with --random-init: the architecture, window and default read-out of this checkpoint "
                        "or shipped model, its weights drawn anew (instead of --size): the random baseline of "
                        "a given model")
    p.add_argument("--window", type=int, help="model window in samples for --random-init (default: corpus window, "
                                              "or that of --like)")
    p.add_argument("--init-seed", type=int, default=0, help="seed of the --random-init weights (default 0)")
    p.add_argument("--corruptions", nargs="*", metavar="NAME",
                   help="also AUROC vs severity for these test-time corruptions (no names = all defaults), "
                        "with the probe fitted on all training labels")
    p.add_argument("--name", help="method name in the results (default: random_sit, or the checkpoint folder name)")
    p.add_argument("--out", help="output folder (default runs/probe/<checkpoint or random>-<task>)")
    p.add_argument("--cache", help="feature cache folder (default runs/cache/features)")
    p.add_argument("--batch-size", type=int, default=64, help="ECGs per feature batch (default 64)")
    p.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--device", default="auto", type=device_flag, help="auto (default), cpu, cuda, ...")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; 1 is fastest for "
                   "small models on a busy machine)")
    p.set_defaults(func=run_probe)


def _probe_encoder(args: argparse.Namespace, corpus) -> tuple[Any, str, dict]:
    import torch

    from ..model.checkpoint import MODEL_FILE, check_corpus_rate, load_encoder, model_fs
    from ..model.inference import readout
    from ..model.sit import SiTEncoder
    from ..weights import resolve as resolve_model
    from .features import file_sha256, module_sha256

    if args.like and not args.random_init:
        raise CremaError("--like goes with --random-init (a checkpoint's architecture with new weights); "
                         "to probe the checkpoint itself give --checkpoint")
    if args.random_init:
        model_cfg, features = _random_init_model(args, corpus)
        torch.manual_seed(args.init_seed)
        encoder = SiTEncoder(model_cfg)
        return readout(encoder.eval(), features), module_sha256(encoder), {
            "init": "random", "size": model_cfg.size, "init_seed": args.init_seed, "features": features,
            **({"like": str(args.like)} if args.like else {})}
    encoder, config = load_encoder(args.checkpoint)
    check_corpus_rate(model_fs(config), corpus.preprocess.fs, args.checkpoint, corpus.path)
    features = args.features or embedding_features(config, args.checkpoint)
    return readout(encoder, features), file_sha256(resolve_model(args.checkpoint) / MODEL_FILE), {
        "checkpoint": str(args.checkpoint), "kind": config.get("kind"), "features": features}


def _random_init_model(args: argparse.Namespace, corpus) -> tuple[ModelConfig, str]:
    """The architecture and read-out of ``--random-init``: ``--like``'s (window: ``--window``, else
    its own) or the ``--size`` preset's (window: ``--window``, else the corpus's)."""
    from dataclasses import replace

    from .suite.own_task import encoder_model

    try:
        if args.like:
            model_cfg, features = encoder_model(args.like)  # what the suites' random_sit is built like
            model_cfg = replace(model_cfg, window=args.window) if args.window else model_cfg
            return model_cfg, args.features or features
        return (ModelConfig.from_size(args.size, window=args.window or int(corpus.signals.shape[-1])),
                args.features or "mean")
    except ValueError as exc:  # a ConfigError too
        raise CremaError(f"--random-init: {exc}") from exc


def run_probe(args: argparse.Namespace) -> int:
    from ..runtime import torch_threads

    with torch_threads(args.threads):
        return _run_probe(args)


def _run_probe(args: argparse.Namespace) -> int:
    from ..data.corpus import Corpus
    from .features import FINGERPRINT_WHAT, corpus_fingerprint, rows_sha256
    from .probe import check_select_c, fit_probe_on_fraction, probe_experiment, probe_features
    from .splits import task_split
    from .report import results_text
    from .results import ResultRecord, write_results
    from .robustness import DEFAULT_CORRUPTIONS, Inference, SeverityGrid, probe_severity_curve

    if any(not 0 < f <= 1 for f in args.fractions):
        raise CremaError(f"--fractions must be in (0, 1], got {args.fractions}")
    corpus = Corpus(args.corpus)
    split = task_split(corpus, args.task, args.holdout_source)
    check_select_c(args.select_c, args.head, args.task, split.task_type)
    if args.corruptions is not None and split.regression:
        raise CremaError(f"--corruptions: task {args.task!r} is a regression task; corruption curves are "
                         "measured for classification tasks only")
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
    options = {"select_c": args.select_c} if args.select_c != "val" else {}
    config.update(options)
    results = probe_experiment(feats, args.fractions, args.seeds, method=method, data_sha256=data_sha,
                               config=config, kind=args.head, n_bootstrap=args.n_bootstrap, progress=progress,
                               **options)
    if args.corruptions is not None:
        probe, info = fit_probe_on_fraction(feats, 1.0, args.seeds[0], args.head, **options)
        grid = SeverityGrid(tuple(args.corruptions or DEFAULT_CORRUPTIONS), n_bootstrap=args.n_bootstrap)
        run = Inference(crop, args.batch_size, args.device, progress, cache, weights_sha, data_sha)
        curve = probe_severity_curve(encoder, probe, feats, corpus, grid, run)
        results += [ResultRecord.from_evaluation(
            step=f"corruptions/{c['corruption']}/s{c['severity']}", method=method, protocol="probe",
            task=args.task, experiment="corruption", seed=args.seeds[0], evaluation=c["evaluation"],
            config={**config, "level": c["level"]}, data_sha256=data_sha,
            test_rows_sha256=rows_sha256(split.rows["test"]), n_train=info["n_train"], fraction=1.0,
            corruption=c["corruption"], severity=c["severity"]).to_dict() for c in curve]
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
                   "epochs": "epochs", "batch_size": "batch_size", "accum": "accum_steps", "lr": "lr",
                   "weight_decay": "weight_decay", "grad_clip": "grad_clip", "layer_decay": "layer_decay",
                   "warmup_epochs": "warmup_epochs", "dropout": "dropout",
                   "probe_init": "probe_init", "fraction": "fraction", "seed": "seed", "patience": "patience",
                   "holdout_source": "holdout_source", "crop": "crop", "n_bootstrap": "n_bootstrap",
                   "device": "device", "workers": "num_workers", "amp": "amp"}


def _register_finetune(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "finetune", help="fine-tune a pretrained encoder, or train a SiT / ResNet1d from scratch",
        description="Encoder + linear head, multi-label BCE, AdamW with layer-wise lr decay, early stopping "
                    "on validation macro AUROC. The best epoch is saved in OUT as a classifier checkpoint "
                    "(model.safetensors + config.json with classes and F1 thresholds picked on validation), "
                    "with finetune_log.jsonl, finetune_summary.json and results.json. A regression task "
                    "trains one output with the mean squared error on the standardised target, stops early "
                    "on the validation MAE and is tested with MAE and Pearson's r.")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="pretraining checkpoint folder to start from, or a shipped model's "
                                             "name (see crema models)")
    source.add_argument("--init", choices=["random"], help="random init: supervised training from scratch")
    p.add_argument("--window", type=int, help="SiT window for --init random (default: corpus window)")
    add_field_flags(p, FinetuneConfig, _FINETUNE_FLAGS, keep_defaults=True, options={
        "corpus": {"required": True}, "task": {"required": True}, "out": {"required": True},
        "size": {"choices": sorted(MODEL_SIZES)},
        "amp": {"choices": ["auto", "bf16", "fp32"]},  # "off" is the pretraining spelling of fp32
        "device": {"type": device_flag}})
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
    cfg = FinetuneConfig(**flag_values(args, _FINETUNE_FLAGS), checkpoint=args.checkpoint,
                         model=model if args.checkpoint is None else None, augment=augment)
    check_flag_ranges(cfg, _FINETUNE_FLAGS)  # the config's own range checks, named by flag (--batch-size 0)
    check_flag_ranges(cfg.augment, {}, "--augment ")
    return cfg


def run_finetune(args: argparse.Namespace) -> int:
    from ..locking import output_lock
    from ..runtime import torch_threads
    from .finetune import finetune

    cfg = finetune_config_from_args(args)
    with torch_threads(args.threads), output_lock(cfg.out, "crema finetune"):
        summary = finetune(cfg, progress=not args.no_progress)
    for line in finetune_lines(summary):
        print(line)
    print(f"  classifier checkpoint: {cfg.out}")
    return 0


def finetune_lines(summary: dict) -> list[str]:
    """What ``crema finetune`` prints about its best epoch and its test metrics."""
    test = summary["test"]
    best = next(h for h in summary["history"] if h["epoch"] == summary["best_epoch"])

    def fmt(v):
        return "-" if v is None else f"{v:.3f}"

    if summary.get("task_type") == "regression":
        mae, r = test["mae"], test["pearson"]
        return [f"crema finetune: best epoch {summary['best_epoch']} of {summary['epochs_run']} "
                f"(validation MAE {fmt(best['val_mae'])})",
                f"  test MAE {fmt(mae['value'])} [95% CI {fmt(mae['ci95'][0])}, {fmt(mae['ci95'][1])}], "
                f"Pearson r {fmt(r['value'])} [95% CI {fmt(r['ci95'][0])}, {fmt(r['ci95'][1])}] "
                f"on {test['n']} records"]
    au, f1 = test["auroc"], test["f1"]
    lines = [f"crema finetune: best epoch {summary['best_epoch']} of {summary['epochs_run']} "
             f"(validation macro AUROC {fmt(best['val_auroc'])})",
             f"  test macro AUROC {fmt(au['macro'])} [95% CI {fmt(au['ci95'][0])}, {fmt(au['ci95'][1])}], "
             f"macro F1 {fmt(f1['macro'])} on {test['n']} records"]
    if au["skipped"]:
        lines.append("  classes skipped: " + ", ".join(f"{c} ({why})" for c, why in au["skipped"].items()))
    return lines


# ----------------------------------------------------------------------------- evaluate

# flag dest -> FinetuneConfig field: the fine-tunes of `crema evaluate --task` (defaults of their own there)
_OWN_TASK_FINETUNE_FLAGS = {"epochs": "epochs", "patience": "patience", "batch_size": "batch_size", "lr": "lr"}


def _register_evaluate(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "evaluate", help="run an evaluation suite, or compare encoders with honest baselines on your own task",
        description="With --suite: runs every step of a suite config (see docs/EVALUATION.md): pretraining of "
                    "each method, linear probes, fine-tuning and supervised baselines at several label "
                    "fractions and seeds, leave-one-source-out and test-time corruptions. Without --suite, "
                    "with --corpus DIR --task NAME: is a foundation model worth it on this task? The "
                    "encoders (--checkpoint, default the shipped crema-w128-ecg12) against a random-init "
                    "SiT of the same size, training-free random kernels and a supervised 1-D ResNet: linear "
                    "probes at the label fractions the data allows, fine-tunes on all labels, bootstrap "
                    "intervals, paired differences, and OUT/report.md + report.html whose first sentence "
                    "says whether the encoder beat the random kernels. Each step's result is saved when it "
                    "finishes; --resume skips finished steps. Results go to OUT/results.json.")
    p.add_argument("--suite", help="suite config JSON, e.g. configs/suite-tiny.json (omit it to evaluate --task)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--resume", action="store_true", help="continue a run in OUT, skipping finished steps")
    p.add_argument("--corpus", action="append", metavar="DIR | NAME=DIR",
                   help="with --suite: use DIR for the suite's corpus NAME (repeatable); without: the "
                        "prepared corpus holding --task")
    p.add_argument("--device", help="override the suite's device (auto, cpu, cuda, ...)")
    p.add_argument("--threads", type=int, help="override the suite's torch CPU threads")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    own = p.add_argument_group("evaluating your own task (no --suite)")
    own.add_argument("--task", help="the label task of --corpus to evaluate on (e.g. one attached with "
                                    "crema prepare --labels)")
    own.add_argument("--checkpoint", action="extend", nargs="+", metavar="MODEL",
                     help="pretrained encoder(s) to evaluate: checkpoint folders or shipped model names "
                          "(default crema-w128-ecg12); the random SiT baseline has the first one's size")
    own.add_argument("--fractions", type=float, nargs="+",
                     help="candidate label fractions of the training records (default 0.01 0.1 1); each below 1 "
                          "is kept only when it holds at least --min-records records and a positive of every class")
    own.add_argument("--min-records", type=int, help="records a label fraction below 1 must hold (default 20)")
    own.add_argument("--seeds", type=int, nargs="+", help="label-subset and probe seeds (default 0 1 2)")
    own.add_argument("--finetune-seeds", type=int, nargs="+", help="seeds of the fine-tunes (default 0)")
    add_field_flags(own, FinetuneConfig, _OWN_TASK_FINETUNE_FLAGS, keep_defaults=False, options={
        "epochs": {"note": "default 5 here"}, "patience": {"note": "default 3 here"}})
    own.add_argument("--n-bootstrap", type=int, help="bootstrap resamples of the test records (default 1000)")
    own.add_argument("--kernels", type=int, help="random kernels of the training-free baseline (default 2000)")
    own.add_argument("--select-c", choices=SELECT_C, help=SELECT_C_HELP)
    own.add_argument("--features", choices=EMBEDDING_FEATURES,
                     help="read-out of every probed SiT, the encoders and the random one: mean (pooled, D) or "
                          "leads (each lead's mean token, normed, 12 x D); default the first encoder's own")
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    if args.suite is None:
        return _run_own_task(args)
    own_task_flags = ["task", "checkpoint", "fractions", "min_records", "seeds", "finetune_seeds", "n_bootstrap",
                      "kernels", "features", *_OWN_TASK_FINETUNE_FLAGS]
    given = [f"--{dest.replace('_', '-')}" for dest in own_task_flags if getattr(args, dest) is not None]
    if given:
        raise CremaError(f"{', '.join(given)}: only without --suite (a suite config names its tasks and encoders)")
    from .suite import run_suite

    counts = run_suite(args.suite, args.out, resume=args.resume,
                       corpus_overrides=_key_values(args.corpus, "--corpus"),
                       progress=not args.no_progress, device=args.device, threads=args.threads)
    print(f"crema evaluate: {counts['steps']} steps: {counts['ran']} ran, {counts['already_done']} already done, "
          f"{counts['skipped']} skipped (see {Path(args.out) / 'results.json'}) in {counts['seconds']:.1f} s; "
          f"`crema report {args.out}` writes the report")
    return 0


def own_task_settings(args: argparse.Namespace):
    """The :class:`~crema.eval.suite.own_task.OwnTaskSettings` the flags describe (its defaults
    for flags not given)."""
    import dataclasses

    from .suite.own_task import OwnTaskSettings

    defaults = OwnTaskSettings()
    given = {"fractions": args.fractions, "min_records": args.min_records, "seeds": args.seeds,
             "finetune_seeds": args.finetune_seeds, "n_bootstrap": args.n_bootstrap, "device": args.device,
             "threads": args.threads, "random_kernels": args.kernels, "features": args.features,
             "select_c": args.select_c}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in given.items() if v is not None}
    if any(not 0 < f <= 1 for f in values.get("fractions", ())):
        raise CremaError(f"--fractions must be in (0, 1], got {list(values['fractions'])}")
    finetune = dataclasses.replace(defaults.finetune, **flag_values(args, _OWN_TASK_FINETUNE_FLAGS))
    return dataclasses.replace(defaults, finetune=finetune, **values)


def _run_own_task(args: argparse.Namespace) -> int:
    if not args.task or not args.corpus or len(args.corpus) != 1 or "=" in args.corpus[0]:
        raise CremaError("crema evaluate needs --suite FILE, or --corpus DIR (one prepared corpus) and --task NAME")
    from .suite.own_task import run_own_task

    outcome = run_own_task(args.corpus[0], args.task, args.out, args.checkpoint, own_task_settings(args),
                           resume=args.resume, progress=not args.no_progress)
    dropped = "; ".join(f"{100 * f:g}% left out ({why})" for f, why in outcome["dropped_fractions"].items())
    print(outcome["headline"] or "No comparison with the random-kernel baseline could be made (see the report's "
                                 "Notes).")
    print(f"crema evaluate: {outcome['steps']} steps: {outcome['ran']} ran, {outcome['already_done']} already done, "
          f"{outcome['skipped']} skipped in {outcome['seconds']:.1f} s; label fractions "
          f"{', '.join(f'{100 * f:g}%' for f in outcome['fractions'])}" + (f" ({dropped})" if dropped else ""))
    print(f"  report: {outcome['report']['markdown']} and {outcome['report']['html']}")
    return 0


# ----------------------------------------------------------------------------- report

def _register_report(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "report", help="tables and plots of an evaluation run (report.md, report.html, PNGs)",
        description="Reads RUN_DIR/results.json (from crema evaluate, probe or finetune) and writes "
                    "report.md, a self-contained report.html, summary.json and plots/*.png into RUN_DIR.")
    p.add_argument("run_dir", help="folder holding results.json")
    p.add_argument("--reference", action="append", default=[], metavar="METHOD",
                   help="also pair every method against this one (repeatable; e.g. an existing encoder a new "
                        "one should beat); MAE and the baselines are always references")
    p.set_defaults(func=run_report)


def run_report(args: argparse.Namespace) -> int:
    from .report import build_report, results_text
    from .results import load_results

    written = build_report(args.run_dir, args.reference)
    print(results_text(load_results(args.run_dir)["results"]))
    print(f"\ncrema report: wrote {written['markdown']}, {written['html']} and "
          f"{sum(k.startswith('plot:') for k in written)} plots")
    return 0
