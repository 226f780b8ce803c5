"""A training run's checkpoint storage: each save is whole, and a run resumes exactly.

The folder's format (``config.json`` + ``model.safetensors`` + ``training_state.pt``), its checks
and loading are :mod:`crema.model.checkpoint`'s; this module writes it during training and reads
back the resume state.

How a save stays whole. Each save writes a complete snapshot folder
``DIR/.checkpoints/step-<step>-<id>/`` with all of its files, then makes it current in one atomic
step: a new link is renamed onto ``DIR/.checkpoints/current``. The names readers use are fixed
relative links through it (``DIR/config.json -> .checkpoints/current/config.json``, and so for
the weights and the training state), so a reader, or a run resumed after a kill at any moment,
sees the whole previous checkpoint or the whole new one, never a mix. The previous snapshot is
deleted only after the switch; whatever a killed save left behind (a half-written snapshot, a
spare link) is deleted by the next save. A folder written by an older CREMA (plain files) is
adopted on its first save, also without a moment where its files disagree. One process writes
a folder at a time (rank 0 under DDP).
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from ..errors import CheckpointError, WriteError
from ..model.checkpoint import CHECKPOINT_FILES, CONFIG_FILE, STATE_FILE, STORE, load_config, write_checkpoint_files

CURRENT = "current"             # the link in STORE that names the current snapshot
_TEMP = ".tmp-"                 # prefix of anything in STORE not yet complete


def save_checkpoint(directory: str | os.PathLike, model: nn.Module | Mapping[str, Tensor],
                    config: Mapping[str, Any], training_state: Mapping[str, Any] | None = None) -> Path:
    """Write a checkpoint into ``directory`` and make it current in one atomic step; returns
    the folder. See the module docstring for the layout.

    Args:
        directory: the folder (created if needed); the checkpoint in it is replaced, other files
            (``log.jsonl``...) are left alone.
        model: a module (its ``state_dict``) or a state dict. Pass the bare model, not a DDP
            or compiled wrapper, so keys carry no ``module.``/``_orig_mod.`` prefix.
        config: JSON-ready dict with at least ``kind`` and ``model``.
        training_state: optional dict of tensors and plain containers for resuming.

    Raises:
        CheckpointError: ``config`` lacks ``kind`` or ``model``.
        WriteError: the folder cannot be written (full disk, no permission).
    """
    directory = Path(directory)
    if "kind" not in config or "model" not in config:
        raise CheckpointError(f"{directory}: checkpoint config needs 'kind' and 'model'")
    try:
        store = directory / STORE
        store.mkdir(parents=True, exist_ok=True)
        _remove_all_but_current(store)  # what a killed save left behind
        _adopt_plain_files(directory, store)
        snapshot = _write_snapshot(store, model, config, training_state)
        names = [name for name in CHECKPOINT_FILES if (snapshot / name).exists()]
        for name in names:  # a link to a file the current snapshot lacks reads as absent
            _link_through_current(directory, name)
        _make_current(store, snapshot.name)
        for name in set(CHECKPOINT_FILES) - set(names):
            _unlink_if_ours(directory / name)
        _remove_all_but_current(store)
    except WriteError:
        raise
    except OSError as exc:
        raise WriteError(directory, exc) from None
    return directory


def _write_snapshot(store: Path, model, config: Mapping[str, Any],
                    training_state: Mapping[str, Any] | None) -> Path:
    """A complete snapshot folder in ``store`` (written under a temporary name, then renamed)."""
    tmp = store / f"{_TEMP}{uuid.uuid4().hex[:8]}"
    write_checkpoint_files(tmp, model, config, training_state)
    final = store / f"step-{config.get('step', 'final')}-{uuid.uuid4().hex[:8]}"
    os.rename(tmp, final)
    return final


def _make_current(store: Path, snapshot_name: str) -> None:
    """Point ``store/current`` at ``snapshot_name``: the one atomic step of a save."""
    link = store / f"{_TEMP}{CURRENT}-{uuid.uuid4().hex[:8]}"
    os.symlink(snapshot_name, link)
    os.replace(link, store / CURRENT)  # rename replaces the old link itself, atomically


def _link_target(name: str) -> str:
    return f"{STORE}/{CURRENT}/{name}"


def _link_through_current(directory: Path, name: str) -> None:
    """Make ``directory/name`` the link ``.checkpoints/current/name`` (replacing atomically)."""
    path = directory / name
    if path.is_symlink() and os.readlink(path) == _link_target(name):
        return
    tmp = directory / f".{name}{_TEMP}{uuid.uuid4().hex[:8]}"
    os.symlink(_link_target(name), tmp)
    os.replace(tmp, path)


def _unlink_if_ours(path: Path) -> None:
    if path.is_symlink() and os.readlink(path) == _link_target(path.name):
        path.unlink()


def _remove_all_but_current(store: Path) -> None:
    """Delete every snapshot and temporary in ``store`` except the current snapshot."""
    current = store / CURRENT
    keep = os.readlink(current) if current.is_symlink() else None
    for child in store.iterdir():
        if child.name in (CURRENT, keep):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _adopt_plain_files(directory: Path, store: Path) -> None:
    """Turn checkpoint files that are plain files (an older CREMA, or a config written before the
    first save) into a snapshot. The snapshot is made of exactly what the names read now, made
    current, and only then is each plain file replaced by its link: the content behind every
    name stays the same throughout, so a kill at any point leaves a consistent folder."""
    present = [name for name in CHECKPOINT_FILES if (directory / name).exists()]
    if all((directory / name).is_symlink() for name in present):
        return
    tmp = store / f"{_TEMP}{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    for name in present:
        _link_or_copy(directory / name, tmp / name)
    adopted = store / f"adopted-{uuid.uuid4().hex[:8]}"
    os.rename(tmp, adopted)
    _make_current(store, adopted.name)
    for name in present:
        _link_through_current(directory, name)


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link to what ``src`` reads (free, instant), or a copy where links are not possible."""
    try:
        os.link(src, dst, follow_symlinks=True)
    except OSError:
        shutil.copy2(src, dst)


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
