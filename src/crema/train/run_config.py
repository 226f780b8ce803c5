"""The ``config.json`` of a pretraining run, and which settings a resumed run may change."""
from __future__ import annotations

from typing import Any

from .. import __version__
from ..config import RunConfig
from ..config_io import to_dict
from ..errors import CremaError

# Fields of the train config that may change when a run is resumed; anything else would
# make the continuation differ from the uninterrupted run, so it is refused.
RESUME_MUTABLE = frozenset({"steps", "ckpt_every", "log_every", "num_workers", "device",
                            "tensorboard", "compile", "out"})


def checkpoint_config(cfg: RunConfig, step: int) -> dict[str, Any]:
    """The ``config.json`` of a pretraining checkpoint."""
    return {"kind": "pretrain", "crema_version": __version__, "step": int(step), **to_dict(cfg)}


def check_resumable(saved: RunConfig, cfg: RunConfig) -> None:
    """Refuse to resume with settings that would change the run (other than RESUME_MUTABLE)."""
    problems = []
    for part in ("model", "objective", "preprocess"):
        if to_dict(getattr(saved, part)) != to_dict(getattr(cfg, part)):
            problems.append(part)
    old, new = to_dict(saved.train), to_dict(cfg.train)
    problems += [f"train.{k}" for k in old if k not in RESUME_MUTABLE and old[k] != new.get(k)]
    if problems:
        raise CremaError(f"cannot resume: settings differ from the saved run in {', '.join(problems)}")
