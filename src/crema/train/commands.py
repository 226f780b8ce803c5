"""CLI subcommand of the training area: ``crema pretrain``.

Only the standard library, ``config``, ``flags`` and ``errors`` are imported at the top: the CLI imports every
commands module to build its parser, so each command imports its torch/pandas/scipy machinery
inside its run function, and ``crema --help`` or a typo stays fast.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from ..config import MODEL_SIZES, ModelConfig, ObjectiveConfig, PretrainConfig, RunConfig
from ..config_io import from_dict, read_json_object
from ..errors import CremaError
from ..flags import add_field_flags, check_flag_ranges, device_flag, flag_values

# flag dest -> field of the config part (ModelConfig, ObjectiveConfig, PretrainConfig)
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
    # Flags from the config fields (help = the field's comment); every default is None so that we
    # can tell what the user set (matters for --config and --resume).
    p.add_argument("--config", metavar="FILE",
                   help="a RunConfig JSON (as written beside a checkpoint, e.g. configs/pretrain/*.json); "
                        "flags given here override its fields")
    p.add_argument("--size", choices=sorted(MODEL_SIZES), help="encoder size preset (default tiny)")
    add_field_flags(p, PretrainConfig, _TRAIN_FLAGS, keep_defaults=False, options={
        "corpus": {"metavar": "DIR[:splits]"},
        "out": {"metavar": "RUN", "note": "default: the --config's train.out"},
        "device": {"type": device_flag}})
    add_field_flags(p, ModelConfig, _MODEL_FLAGS, keep_defaults=False)
    add_field_flags(p, ObjectiveConfig, _OBJECTIVE_FLAGS, keep_defaults=False)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its checkpoint (a torchrun job restarted by "
                        "--max-restarts resumes its own checkpoint without it)")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh even though --out already holds a checkpoint (it is replaced)")
    p.add_argument("--allow-corpus-change", action="store_true",
                   help="with --resume: continue even though a corpus differs from the one the run was "
                        "trained on (rebuilt with other records); by default such a resume is refused")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_pretrain)


def build_run_config(args: argparse.Namespace, base: RunConfig | None = None) -> RunConfig:
    """Map CLI flags onto a :class:`RunConfig`: onto the defaults (``size`` preset) for a new
    run, or onto ``base`` (the saved run) when resuming."""
    try:
        model_over, obj_over, train_over = (flag_values(args, _MODEL_FLAGS), flag_values(args, _OBJECTIVE_FLAGS),
                                            flag_values(args, _TRAIN_FLAGS))
        if base is None:
            model = ModelConfig.from_size(args.size or "tiny", **model_over)
            cfg = RunConfig(model=model, objective=ObjectiveConfig(**obj_over), train=PretrainConfig(**train_over))
        else:
            model = base.model
            if args.size is not None and args.size != base.model.size:
                model = ModelConfig.from_size(args.size, **model_over)
            model = dataclasses.replace(model, **model_over)
            cfg = RunConfig(model=model, objective=dataclasses.replace(base.objective, **obj_over),
                            preprocess=base.preprocess, train=dataclasses.replace(base.train, **train_over))
    except (TypeError, ValueError) as exc:
        raise CremaError(f"bad settings: {exc}") from exc
    # the configs' own range checks, phrased with the flag that set the field (--mask-ratio 1.0)
    for part, flags in (("model", _MODEL_FLAGS), ("objective", _OBJECTIVE_FLAGS), ("train", _TRAIN_FLAGS)):
        check_flag_ranges(getattr(cfg, part), flags, f"{part}.")
    return cfg


def load_recipe(path: str | Path) -> RunConfig:
    """A :class:`RunConfig` from a JSON recipe; the extra keys of a checkpoint's ``config.json``
    (``kind``, ``step``, ``crema_version``, ``corpora_sha256``) and a ``_comment`` are allowed and
    ignored."""
    data = read_json_object(path, "run config")
    data = {k: v for k, v in data.items()
            if k not in ("kind", "step", "crema_version", "corpora_sha256", "_comment")}
    try:
        return from_dict(RunConfig, data)
    except (TypeError, ValueError) as exc:
        raise CremaError(f"{path}: bad run config ({exc})") from exc


def run_pretrain(args: argparse.Namespace) -> int:
    from ..model.checkpoint import CONFIG_FILE, MODEL_FILE, load_config
    from ..model.registry import run_config_from_checkpoint
    from ..runtime import detect
    from .pretrain import pretrain
    from .restart import restart_warnings, resume_after_restart

    recipe = load_recipe(args.config) if args.config else None
    if args.out is None:
        if recipe is None:
            raise CremaError("--out is required (or a --config whose train.out names the run folder)")
        args.out = recipe.train.out
    # A torchrun restart (--max-restarts) reruns this same command line: continue the run's own
    # last checkpoint instead of refusing the folder or starting over (crema.train.restart).
    args.resume, notice = resume_after_restart(args.out, args.resume)
    if detect().is_main:
        lines = ([notice] if notice else []) + [f"warning: {w}" for w in restart_warnings()]
        for line in lines:
            print(f"crema pretrain: {line}", file=sys.stderr, flush=True)
    if args.resume and not (Path(args.out) / CONFIG_FILE).is_file():
        raise CremaError(f"{args.out} holds no run to resume (no {CONFIG_FILE}): leave out --resume to start it")
    if not args.resume and not args.overwrite and (Path(args.out) / MODEL_FILE).exists():
        raise CremaError(f"{args.out} already holds a checkpoint: pass --resume to continue it, "
                         f"--overwrite to replace it, or choose another --out")
    base = run_config_from_checkpoint(load_config(args.out)) if args.resume else recipe
    cfg = build_run_config(args, base)
    if args.allow_corpus_change and not args.resume:
        raise CremaError("--allow-corpus-change goes with --resume (a new run has no corpus to compare with)")
    result = pretrain(cfg, resume=args.resume, progress=not args.no_progress,
                      allow_corpus_change=args.allow_corpus_change)
    if detect().is_main:
        state = f"stopped by signal {result.interrupted_by} at" if result.interrupted_by else "finished"
        print(f"crema pretrain: {state} step {result.step}/{cfg.train.steps}; checkpoint in {result.out}")
    return 128 + int(result.interrupted_by) if result.interrupted_by else 0
