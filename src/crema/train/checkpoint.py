"""Checkpoint folders: ``model.safetensors`` + ``config.json`` (+ ``training_state.pt`` to resume).

``config.json`` carries ``kind`` (``pretrain`` | ``classifier``), ``model`` (the ModelConfig),
``preprocess`` (the PreprocessConfig the inputs must go through) and whatever else the
writer adds (``objective``, ``train``, ``step``; for classifiers ``arch``, ``task``,
``classes``, ``thresholds``). Encoder weights live under the ``encoder.`` prefix in both
kinds, so :func:`load_encoder` reads either.

Every file is written to a temporary name and renamed into place; ``config.json`` goes last,
so a folder whose ``config.json`` names step ``s`` holds complete files of step ``s`` unless
a crash hit between renames, which :func:`load_training_state` detects by comparing steps.
``training_state.pt`` holds only tensors and plain containers and is read with
``torch.load(weights_only=True)``: nothing in it can run code.
"""
from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..config import ModelConfig, RunConfig, atomic_write_text, from_dict
from ..errors import CheckpointError
from ..atomic import atomic_path

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "training_state.pt"
ENCODER_PREFIX = "encoder."


def _plain_state_dict(model: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """CPU, contiguous, unshared copies (safetensors refuses tensors that share storage)."""
    state = model.state_dict() if isinstance(model, nn.Module) else model
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_checkpoint(directory: str | os.PathLike, model: nn.Module | Mapping[str, Tensor],
                    config: Mapping[str, Any], training_state: Mapping[str, Any] | None = None) -> Path:
    """Write a checkpoint folder atomically file by file; returns the folder.

    Args:
        directory: the folder (created if needed); existing checkpoint files are replaced.
        model: a module (its ``state_dict``) or a state dict. Pass the bare model, not a DDP
            or compiled wrapper, so keys carry no ``module.``/``_orig_mod.`` prefix.
        config: JSON-ready dict with at least ``kind`` and ``model``.
        training_state: optional dict of tensors and plain containers for resuming.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if "kind" not in config or "model" not in config:
        raise CheckpointError(f"{directory}: checkpoint config needs 'kind' and 'model'")
    metadata = {"kind": str(config["kind"]), "step": str(config.get("step", ""))}
    # Both files are complete before either is renamed into place (all or nothing).
    with atomic_path(directory / MODEL_FILE) as model_tmp:
        save_file(_plain_state_dict(model), str(model_tmp), metadata=metadata)
        if training_state is not None:
            with atomic_path(directory / STATE_FILE) as state_tmp:
                torch.save(dict(training_state), state_tmp)
    atomic_write_text(directory / CONFIG_FILE, json.dumps(dict(config), indent=2) + "\n")
    return directory


def load_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's ``config.json`` as a dict."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a checkpoint folder (no {CONFIG_FILE})")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: unreadable JSON ({exc})") from exc


def load_checkpoint(directory: str | os.PathLike,
                    map_location: str | torch.device = "cpu") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(state_dict, config)`` of a checkpoint folder."""
    directory = Path(directory)
    config = load_config(directory)
    path = directory / MODEL_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: checkpoint has no {MODEL_FILE}")
    try:
        state = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable weights ({exc})") from exc
    return state, config


def load_training_state(directory: str | os.PathLike) -> dict[str, Any]:
    """The resume state (``weights_only``), checked to belong to the same step as the weights."""
    directory = Path(directory)
    path = directory / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: cannot resume, no {STATE_FILE}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a corrupt or unsafe file
        raise CheckpointError(f"{path}: unreadable training state ({exc})") from exc
    config_step = load_config(directory).get("step")
    if config_step is not None and state.get("step") != config_step:
        raise CheckpointError(
            f"{directory}: {STATE_FILE} is from step {state.get('step')} but {CONFIG_FILE} "
            f"from step {config_step} (a save was interrupted); cannot resume exactly")
    return state


def load_state_into(module: nn.Module, state: Mapping[str, Tensor], where: str | os.PathLike) -> None:
    """``module.load_state_dict(state)`` with a :class:`CheckpointError` that names the folder
    and the mismatching keys instead of PyTorch's RuntimeError."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if keys:
                parts.append(f"{label} keys {keys[:5]}{' ...' if len(keys) > 5 else ''}")
        raise CheckpointError(f"{where}: weights do not match the model ({'; '.join(parts)})")
    module.load_state_dict(state, strict=True)


def encoder_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The ``encoder.*`` entries of a pretrain or classifier state dict, prefix removed."""
    return {k[len(ENCODER_PREFIX):]: v for k, v in state.items() if k.startswith(ENCODER_PREFIX)}


def load_encoder(directory: str | os.PathLike,
                 map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The SiT encoder of a ``pretrain`` or ``classifier`` checkpoint, with its config.

    Returns ``(SiTEncoder in eval mode, config dict)``.
    """
    from ..model.sit import SiTEncoder  # the model package imports this module's neighbours

    state, config = load_checkpoint(directory, map_location)
    kind = config.get("kind")
    if kind not in ("pretrain", "classifier"):
        raise CheckpointError(f"{directory}: unknown checkpoint kind {kind!r}")
    if config.get("arch", "sit") != "sit":
        raise CheckpointError(f"{directory}: a {config.get('arch')!r} classifier has no SiT encoder")
    try:
        model_cfg = from_dict(ModelConfig, config["model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{directory}: bad model config ({exc})") from exc
    encoder = SiTEncoder(model_cfg)
    weights = encoder_state(state)
    if not weights:
        raise CheckpointError(f"{directory}: no '{ENCODER_PREFIX}*' weights in {MODEL_FILE}")
    load_state_into(encoder, weights, directory)
    encoder.to(map_location).eval()
    return encoder, config


def run_config_from_checkpoint(config: Mapping[str, Any]) -> RunConfig:
    """The :class:`RunConfig` stored in a pretraining ``config.json`` (extra keys such as
    ``kind`` and ``step`` are ignored)."""
    if config.get("kind") != "pretrain":
        raise CheckpointError(f"not a pretraining checkpoint (kind {config.get('kind')!r})")
    names = {f.name for f in dataclasses.fields(RunConfig)}
    try:
        return from_dict(RunConfig, {k: v for k, v in config.items() if k in names})
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"bad pretraining config ({exc})") from exc


def load_pretrained(directory: str | os.PathLike,
                    map_location: str | torch.device = "cpu") -> tuple[nn.Module, RunConfig]:
    """The whole CREMA model (encoder, decoder, projector) of a ``pretrain`` checkpoint, in
    eval mode, with its run config: for reconstructions or to continue training elsewhere."""
    from ..model.crema import CREMA

    state, config = load_checkpoint(directory, map_location)
    try:
        cfg = run_config_from_checkpoint(config)
    except CheckpointError as exc:
        raise CheckpointError(f"{directory}: {exc}") from exc
    model = CREMA(cfg.model, cfg.objective, fs=cfg.preprocess.fs)
    load_state_into(model, state, directory)
    model.to(map_location).eval()
    return model, cfg
