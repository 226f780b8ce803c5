"""Pretrained CREMA models shipped inside the package, loadable by name with no network.

Each model is a folder here (``config.json``, ``model.safetensors``, ``MODEL_CARD.md``) listed in
``models.json`` with the SHA-256 of its weights. Anything that takes a checkpoint folder also
takes a shipped model's name: ``crema.load("crema-mini-ecg12")``, ``crema embed crema-mini-ecg12
...``, ``crema probe --checkpoint crema-mini-ecg12 ...``. The weights' hash is checked the first
time a process resolves the name, so a damaged install is refused rather than silently used.
"""
from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path

from ..errors import CheckpointError

WEIGHTS_DIR = Path(__file__).resolve().parent
REGISTRY = WEIGHTS_DIR / "models.json"
CARD_FILE = "MODEL_CARD.md"


def shipped_models() -> dict[str, dict]:
    """``{name: {"sha256": ..., "summary": ...}}`` of the models in this package."""
    if not REGISTRY.is_file():
        return {}
    return json.loads(REGISTRY.read_text())


def model_dir(name: str) -> Path:
    """The folder of a shipped model (not checked)."""
    return WEIGHTS_DIR / name


@lru_cache(maxsize=None)
def _verified(name: str) -> Path:
    entry = shipped_models()[name]
    folder = model_dir(name)
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError(f"shipped model {name}: {weights} is missing (reinstall crema-ecg)")
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    if digest != entry["sha256"]:
        raise CheckpointError(f"shipped model {name}: {weights} has SHA-256 {digest[:16]}..., expected "
                              f"{entry['sha256'][:16]}... (the file is damaged; reinstall crema-ecg)")
    return folder


def resolve(path_or_name: str | os.PathLike) -> Path:
    """A checkpoint folder for ``path_or_name``: an existing path is returned as it is; a shipped
    model's name (when no such path exists) becomes its verified folder."""
    path = Path(path_or_name)
    if not path.exists() and str(path_or_name) in shipped_models():
        return _verified(str(path_or_name))
    return path
