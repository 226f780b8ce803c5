"""Pretrained CREMA models shipped inside the package, loadable by name with no network.

Each model is a folder here (``config.json``, ``model.safetensors``, ``MODEL_CARD.md``) listed in
``models.json`` with the SHA-256 of its weights (``sha256``) and of its ``config.json``
(``config_sha256``: the preprocessing a model's inputs go through lives there, so an edited
config would silently change every output). Anything that takes a checkpoint folder also takes a
shipped model's name: ``crema.load("crema-mini-ecg12")``, ``crema embed crema-mini-ecg12 ...``,
``crema probe --checkpoint crema-mini-ecg12 ...``. Both hashes are checked the first time a
process resolves the name, so a damaged or edited install is refused rather than silently used.

After a deliberate change to a shipped model's files, record their new hashes with
``python -m crema.weights --update`` (:func:`update_registry`); without ``--update`` it checks them.
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
# models.json key -> the file of the model folder whose SHA-256 it holds
HASHED_FILES = {"sha256": "model.safetensors", "config_sha256": "config.json"}


def shipped_models() -> dict[str, dict]:
    """``{name: {"sha256": ..., "config_sha256": ..., "summary": ...}}`` of the models in this package."""
    if not REGISTRY.is_file():
        return {}
    return json.loads(REGISTRY.read_text())


def model_dir(name: str) -> Path:
    """The folder of a shipped model (not checked)."""
    return WEIGHTS_DIR / name


def file_hashes(folder: Path) -> dict[str, str]:
    """``{models.json key: SHA-256}`` of the hashed files of a model folder (see HASHED_FILES)."""
    return {key: hashlib.sha256((folder / name).read_bytes()).hexdigest() for key, name in HASHED_FILES.items()}


@lru_cache(maxsize=None)
def _verified(name: str) -> Path:
    entry = shipped_models()[name]
    folder = model_dir(name)
    for key, file_name in HASHED_FILES.items():
        path = folder / file_name
        if not path.is_file():
            raise CheckpointError(f"shipped model {name}: {path} is missing (restore it in the clone: "
                                  "git checkout src/crema/weights)")
        expected = entry.get(key)
        if not expected:
            raise CheckpointError(f"shipped model {name}: models.json records no {key} for {file_name} "
                                  "(run python -m crema.weights --update after changing a shipped model)")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != expected:
            raise CheckpointError(f"shipped model {name}: {path} has SHA-256 {digest[:16]}..., expected "
                                  f"{expected[:16]}... (the file is damaged or was edited: restore it in the "
                                  "clone with git checkout src/crema/weights, or after a deliberate change run "
                                  f"python -m crema.weights --update {name})")
    return folder


def resolve(path_or_name: str | os.PathLike) -> Path:
    """A checkpoint folder for ``path_or_name``: an existing path is returned as it is; a shipped
    model's name (when no such path exists) becomes its verified folder."""
    path = Path(path_or_name)
    if not path.exists() and str(path_or_name) in shipped_models():
        return _verified(str(path_or_name))
    return path


def update_registry(names: list[str] | None = None) -> dict[str, dict[str, str]]:
    """Record the current SHA-256 of each shipped model's hashed files in ``models.json`` (all
    models, or ``names``); returns ``{name: {key: (old, new)}}`` of what changed."""
    models = shipped_models()
    changed: dict[str, dict[str, str]] = {}
    for name in names or sorted(models):
        if name not in models:
            raise CheckpointError(f"no shipped model {name!r} in {REGISTRY}")
        for key, digest in file_hashes(model_dir(name)).items():
            if models[name].get(key) != digest:
                changed.setdefault(name, {})[key] = (models[name].get(key), digest)
                models[name][key] = digest
    if changed:
        REGISTRY.write_text(json.dumps(models, indent=2) + "\n")  # package data: no atomic helper needed
        _verified.cache_clear()
    return changed
