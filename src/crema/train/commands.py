"""CLI subcommand of the training area: ``crema pretrain``.

Only the standard library, ``config`` and ``errors`` are imported at the top: the CLI imports every
commands module to build its parser, so each command imports its torch/pandas/scipy machinery
inside its run function, and ``crema --help`` or a typo stays fast.
"""
from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from ..config import MODEL_SIZES, ModelConfig, ObjectiveConfig, PretrainConfig, RunConfig, from_dict, read_json_object
from ..errors import CremaError

# flag dest -> (config part, field)
_MODEL_FLAGS = {"window": "window", "patch_size": "patch_size", "pool": "pool",
                "decoder_mode": "decoder_mode"}
_OBJECTIVE_FLAGS = {"lambda_con": "lambda_con", "tau": "tau", "mask_ratio": "mask_ratio",
                    "mode": "mode", "norm_target": "norm_target",
                    "patient_positives": "patient_positives", "mask_mode": "mask_mode",
                    "view_crop": "view_crop", "con_loss": "con_loss", "con_start_step": "con_start_step",
                    "con_ramp_steps": "con_ramp_steps"}
_TRAIN_FLAGS = {"corpus": "corpora", "out": "out", "steps": "steps", "batch_size": "batch_size",
                "accum": "accum_steps", "blr": "blr", "min_lr": "min_lr",
                "warmup_steps": "warmup_steps", "weight_decay": "weight_decay", "seed": "seed",
                "workers": "num_workers", "amp": "amp", "compile": "compile",
                "ckpt_every": "ckpt_every", "log_every": "log_every",
                "tensorboard": "tensorboard", "device": "device"}


def register(subparsers: Any) -> None:
    _register_pretrain(subparsers)


# ----------------------------------------------------------------------------- pretrain

def _register_pretrain(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "pretrain", help="self-supervised CR-MAE pretraining on prepared corpora",
        description="Pretrain a CREMA model. Runs as one process, under torchrun (DDP) or srun. "
                    "Flags not given keep the config defaults (or, with --resume, the saved run's values).")
    # Every default is None so that we can tell what the user set (matters for --resume).
    p.add_argument("--corpus", nargs="+", metavar="DIR[:splits]",
                   help="prepared corpus folders, optionally with splits, e.g. runs/corpora/ptbxl:train,val")
    p.add_argument("--config", metavar="FILE",
                   help="a RunConfig JSON (as written beside a checkpoint, e.g. configs/pretrain/*.json); "
                        "flags given here override its fields")
    p.add_argument("--out", metavar="RUN",
                   help="run folder (checkpoint, config.json, log.jsonl); default the config's train.out")
    p.add_argument("--size", choices=sorted(MODEL_SIZES), help="encoder size preset (default tiny)")
    p.add_argument("--window", type=int, help="model window in samples (default 2500; corpora are cropped)")
    p.add_argument("--patch-size", type=int, help="samples per token (default 50)")
    p.add_argument("--pool", choices=["mean", "cls"], help="representation pooling (default mean)")
    p.add_argument("--decoder-mode", choices=["per_lead", "joint"], help="decoder attention (default per_lead)")
    p.add_argument("--steps", type=int,
                   help="optimiser steps in total (default 1000; 0 writes the initialised model, e.g. "
                        "for a random-init baseline)")
    p.add_argument("--batch-size", type=int, help="ECGs per process per micro-step (default 64)")
    p.add_argument("--accum", type=int, help="gradient accumulation micro-steps (default 1)")
    p.add_argument("--blr", type=float, help="base lr; lr = blr * effective batch / 256 (default 1.5e-4)")
    p.add_argument("--min-lr", type=float, help="floor of the cosine schedule (default 1e-6)")
    p.add_argument("--warmup-steps", type=int, help="linear warm-up steps (default 100)")
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay (default 0.05)")
    p.add_argument("--lambda-con", type=float, help="weight of the contrastive term (default 0.1)")
    p.add_argument("--tau", type=float, help="InfoNCE temperature (default 0.1)")
    p.add_argument("--mask-ratio", type=float, help="fraction of each lead's patches masked (default 0.75)")
    p.add_argument("--mode", choices=["crema", "mae", "contrastive"], help="objective (default crema)")
    p.add_argument("--no-norm-target", dest="norm_target", action="store_const", const=False,
                   help="reconstruct raw patches instead of per-patch normalised ones")
    p.add_argument("--patient-positives", action="store_const", const=True,
                   help="records of the same patient are extra contrastive positives")
    p.add_argument("--mask-mode", choices=["per_lead", "time"],
                   help="per_lead: each lead its own masked patches (default); time: the same patches in every lead")
    p.add_argument("--view-crop", choices=["same", "random", "disjoint"],
                   help="the two views' time crops: one shared crop (default), one random crop each, or "
                        "non-overlapping crops (needs corpus windows of twice --window)")
    p.add_argument("--con-loss", choices=["infonce", "vicreg", "simsiam"],
                   help="the regulariser on the pooled views (default infonce)")
    p.add_argument("--con-start-step", type=int, help="contrastive weight is 0 before this step (default 0)")
    p.add_argument("--con-ramp-steps", type=int, help="then ramps linearly to lambda over this many steps")
    p.add_argument("--seed", type=int, help="seed of init, data order, masks (default 0)")
    p.add_argument("--workers", type=int, help="DataLoader worker processes (default 0)")
    p.add_argument("--amp", choices=["auto", "bf16", "fp32", "off"],
                   help="bf16 autocast (default auto: where the GPU or CPU has fast bf16; off = fp32)")
    p.add_argument("--compile", action="store_const", const=True, help="torch.compile the model")
    p.add_argument("--ckpt-every", type=int, help="checkpoint every N steps (default 500; always at the end)")
    p.add_argument("--log-every", type=int, help="log.jsonl line every N steps (default 10)")
    p.add_argument("--tensorboard", action="store_const", const=True, help="also log to TensorBoard")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh even though --out already holds a checkpoint (it is replaced)")
    p.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_pretrain)


def _given(args: argparse.Namespace, mapping: dict[str, str]) -> dict[str, Any]:
    out = {}
    for dest, name in mapping.items():
        value = getattr(args, dest, None)
        if value is not None:
            out[name] = tuple(value) if isinstance(value, list) else value
    return out


def build_run_config(args: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    """Map CLI flags onto a :class:`RunConfig`: onto the defaults (``size`` preset) for a new
    run, or onto ``base`` (the saved run) when resuming."""
    try:
        model_over, obj_over, train_over = (_given(args, _MODEL_FLAGS), _given(args, _OBJECTIVE_FLAGS),
                                            _given(args, _TRAIN_FLAGS))
        if base is None:
            model = ModelConfig.from_size(args.size or "tiny", **model_over)
            return RunConfig(model=model, objective=ObjectiveConfig(**obj_over),
                             train=PretrainConfig(**train_over))
        model = base.model
        if args.size is not None and args.size != base.model.size:
            model = ModelConfig.from_size(args.size, **model_over)
        model = dataclasses.replace(model, **model_over)
        return RunConfig(model=model, objective=dataclasses.replace(base.objective, **obj_over),
                         preprocess=base.preprocess, train=dataclasses.replace(base.train, **train_over))
    except (TypeError, ValueError) as exc:
        raise CremaError(f"bad settings: {exc}") from exc


def load_recipe(path: str | Path) -> RunConfig:
    """A :class:`RunConfig` from a JSON recipe; the extra keys of a checkpoint's ``config.json``
    (``kind``, ``step``, ``crema_version``) and a ``_comment`` are allowed and ignored."""
    data = read_json_object(path, "run config")
    data = {k: v for k, v in data.items() if k not in ("kind", "step", "crema_version", "_comment")}
    try:
        return from_dict(RunConfig, data)
    except (TypeError, ValueError) as exc:
        raise CremaError(f"{path}: bad run config ({exc})") from exc


def run_pretrain(args: argparse.Namespace) -> int:
    from .checkpoint import MODEL_FILE, load_config, run_config_from_checkpoint
    from .pretrain import pretrain

    recipe = load_recipe(args.config) if args.config else None
    if args.out is None:
        if recipe is None:
            raise CremaError("--out is required (or a --config whose train.out names the run folder)")
        args.out = recipe.train.out
    if not args.resume and not args.overwrite and (Path(args.out) / MODEL_FILE).exists():
        raise CremaError(f"{args.out} already holds a checkpoint: pass --resume to continue it, "
                         f"--overwrite to replace it, or choose another --out")
    base = run_config_from_checkpoint(load_config(args.out)) if args.resume else recipe
    cfg = build_run_config(args, base)
    result = pretrain(cfg, resume=args.resume, progress=not args.no_progress)
    from ..runtime import detect

    if detect().is_main:
        state = f"stopped by signal {result.interrupted_by} at" if result.interrupted_by else "finished"
        print(f"crema pretrain: {state} step {result.step}/{cfg.train.steps}; checkpoint in {result.out}")
    return 128 + int(result.interrupted_by) if result.interrupted_by else 0
