"""A model's checkpoint folder: ``config.json`` + ``model.safetensors`` (+ ``training_state.pt``
to resume a run), how it is checked and how it is loaded into a module.

``config.json`` carries ``kind`` (``pretrain`` | ``classifier``), ``model`` (the ModelConfig),
``preprocess`` (the PreprocessConfig the inputs must go through) and whatever else the
writer adds (``objective``, ``train``, ``step``; for classifiers ``arch``, ``task``,
``classes``, ``thresholds``). Encoder weights live under the ``encoder.`` prefix in both
kinds, so :func:`load_encoder` reads either. Loading checks every field's type and range
(:func:`check_checkpoint_config`): a damaged or hand-edited file fails with the field's name.
The weights are checked before they are used: the sizes a config gives the model are compared
with the tensor shapes in the weights file's header before the module is built
(:func:`check_weights_fit`), so an absurd width in a hand-edited config is refused before
anything is allocated; integer tensors where the model holds float weights, and NaN or infinite
values, are refused with the file and the tensor named. Which module a config is built into is
:mod:`crema.model.registry`'s.

The names in a folder may be links through ``.checkpoints/current`` (:data:`STORE`), where a
training run keeps its snapshots so that each save is atomic (:mod:`crema.train.checkpoint`);
readers follow them like plain files. An exported model folder holds plain files
(:func:`write_checkpoint_files`).

``training_state.pt`` holds only tensors and plain containers and is read with
``torch.load(weights_only=True)``: nothing in it can run code.
"""
from __future__ import annotations

import errno
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..config import ObjectiveConfig, PreprocessConfig, PretrainConfig, RunConfig
from ..config_io import from_dict
from ..data.corpus import TASK_TYPES
from ..errors import CheckpointError, ConfigError
from ..weights import resolve as resolve_model
from .registry import (DEFAULT_ARCH, KINDS, arch_of, build_encoder, build_network, encoder_arch,
                       get_arch, run_config_from_checkpoint)

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
STATE_FILE = "training_state.pt"
ENCODER_PREFIX = "encoder."
CHECKPOINT_FILES = (MODEL_FILE, CONFIG_FILE, STATE_FILE)
STORE = ".checkpoints"          # a training run's snapshot folders, inside the checkpoint folder


# ----------------------------------------------------------------------------- writing

def _plain_state_dict(model: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """CPU, contiguous, unshared copies (safetensors refuses tensors that share storage)."""
    state = model.state_dict() if isinstance(model, nn.Module) else model
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def write_checkpoint_files(folder: str | os.PathLike, model: nn.Module | Mapping[str, Tensor],
                           config: Mapping[str, Any], training_state: Mapping[str, Any] | None = None) -> None:
    """Write the checkpoint's files as plain files into ``folder``, which nobody reads yet (a
    snapshot, or an exported model folder before it is renamed into place)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    metadata = {"kind": str(config["kind"]), "step": str(config.get("step", ""))}
    try:
        save_file(_plain_state_dict(model), str(folder / MODEL_FILE), metadata=metadata)
        if training_state is not None:
            torch.save(dict(training_state), folder / STATE_FILE)
    except (RuntimeError, SafetensorError) as exc:  # their own types for a failed write
        raise as_os_error(exc, folder) from None
    (folder / CONFIG_FILE).write_text(json.dumps(dict(config), indent=2) + "\n", encoding="utf-8")


# What safetensors (Rust: "I/O error: File too large (os error 27)", older "Os { code: 28, kind:
# StorageFull ...") and torch.save (C++: "unexpected pos 704 vs 598", "file write failed") say when
# a write stops short; no errno is attached to either.
_OS_CODE = re.compile(r"(?:os error |Os \{ code: )(\d+)")
_SHORT_WRITE = ("unexpected pos", "file write failed", "No space left", "StorageFull", "File too large")


def as_os_error(exc: Exception, where: Path) -> Exception:
    """The OSError a failed weights or state write stands for (a full disk, most often), so that
    the caller reports ``no space left on device: PATH`` (:func:`crema.errors.describe_write_error`);
    any other error is returned as it is."""
    text = str(exc)
    code = _OS_CODE.search(text)
    if code:
        number = int(code.group(1))
        return OSError(number, os.strerror(number), str(where))
    if any(marker in text for marker in _SHORT_WRITE):
        return OSError(errno.ENOSPC, "No space left on device (the write stopped short)", str(where))
    return exc


# ----------------------------------------------------------------------------- reading

def load_config(directory: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's ``config.json`` as a dict, checked (:func:`check_checkpoint_config`).
    ``directory`` may also name a shipped model (:mod:`crema.weights`)."""
    directory = resolve_model(directory)
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: not a checkpoint folder (no {CONFIG_FILE})")
    try:
        config = json.loads(path.read_bytes().decode("utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: unreadable JSON ({exc})") from exc
    except UnicodeDecodeError:
        raise CheckpointError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    check_checkpoint_config(config, path)
    return config


def check_checkpoint_config(config: Any, path: str | os.PathLike) -> None:
    """Check the types and ranges of a checkpoint's ``config.json`` (``path`` names it in
    messages): a JSON object; a known ``kind`` and ``arch``; ``model``, ``preprocess``,
    ``objective`` and ``train`` that rebuild their config classes; for classifiers distinct class
    names and one threshold in [0, 1] per class.

    Raises:
        CheckpointError: naming the file and the field.
    """
    try:
        if not isinstance(config, dict):
            raise ConfigError(f"expected a JSON object of settings, got a {type(config).__name__}")
        kind, name = config.get("kind"), config.get("arch", DEFAULT_ARCH)
        if kind not in KINDS:
            raise ConfigError(f"unknown checkpoint kind {kind!r} ({' or '.join(KINDS)})")
        arch = get_arch(name)
        if kind not in arch.kinds:
            raise ConfigError(f"arch: a {name!r} model cannot be a {kind} checkpoint")
        if "model" not in config:
            raise ConfigError("model: missing")
        from_dict(arch.config_class, config["model"], "model.")
        parts = {"preprocess": PreprocessConfig, "objective": ObjectiveConfig}
        if kind == "pretrain":
            parts["train"] = PretrainConfig
        for key, cls in parts.items():
            if key in config:
                from_dict(cls, config[key], f"{key}.")
        step = config.get("step")
        if step is not None and not (isinstance(step, int) and not isinstance(step, bool) and step >= 0):
            raise ConfigError(f"step: expected a whole number of steps, got {step!r}")
        if kind == "classifier":
            _check_classifier_fields(config)
    except ConfigError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def _check_classifier_fields(config: dict) -> None:
    """A classifier's ``classes``, task head, ``thresholds`` and ``crop``: each is checked
    whatever the others hold (a regression head's thresholds are null, its crop is not)."""
    classes = config.get("classes")
    if not (isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes)):
        raise ConfigError(f"classes: expected a non-empty list of class names, got {classes!r}")
    if len(set(classes)) != len(classes):
        raise ConfigError(f"classes: names repeat ({classes!r})")
    _check_task_head(config, classes)
    _check_thresholds(config.get("thresholds"), classes)
    crop = config.get("crop")
    if crop is not None and not (isinstance(crop, int) and not isinstance(crop, bool) and crop > 0):
        raise ConfigError(f"crop: expected a positive number of samples or null, got {crop!r}")


def _check_thresholds(raw: Any, classes: list[str]) -> None:
    """Null, or one probability in [0, 1] per class (a list, or a dict by class name)."""
    if raw is None:
        return
    if isinstance(raw, dict):
        values = list(raw.values())
    elif isinstance(raw, list):
        if len(raw) != len(classes):
            raise ConfigError(f"thresholds: {len(raw)} thresholds for {len(classes)} classes")
        values = raw
    else:
        raise ConfigError(f"thresholds: expected a list of numbers, got {raw!r}")
    for value in values:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and 0 <= value <= 1):
            raise ConfigError(f"thresholds: expected probabilities between 0 and 1, got {value!r}")


def _check_task_head(config: dict, classes: list[str]) -> None:
    """A classifier's ``task_type`` (multilabel when absent) and, for a regression head, its one
    target, no thresholds, and the ``target_mean``/``target_std`` its output is scaled back with."""
    task_type = config.get("task_type", "multilabel")
    if task_type not in TASK_TYPES:
        raise ConfigError(f"task_type: expected one of {', '.join(TASK_TYPES)}, got {task_type!r}")
    if task_type != "regression":
        return
    if len(classes) != 1:
        raise ConfigError(f"classes: a regression head predicts one target, got {classes!r}")
    if config.get("thresholds") is not None:
        raise ConfigError("thresholds: a regression head has none (expected null)")
    for key in ("target_mean", "target_std"):
        value = config.get(key)
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)):
            raise ConfigError(f"{key}: expected a finite number, got {value!r}")
    if not config["target_std"] > 0:
        raise ConfigError(f"target_std: expected a positive number, got {config['target_std']!r}")


def load_checkpoint(directory: str | os.PathLike,
                    map_location: str | torch.device = "cpu") -> tuple[dict[str, Tensor], dict[str, Any]]:
    """``(state_dict, config)`` of a checkpoint folder (or a shipped model's name)."""
    directory = resolve_model(directory)
    config = load_config(directory)
    path = directory / MODEL_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory}: checkpoint has no {MODEL_FILE}")
    try:
        state = load_file(str(path), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable weights ({exc})") from exc
    check_finite_weights(state, path)
    return state, config


def check_finite_weights(state: Mapping[str, Tensor], path: str | os.PathLike) -> None:
    """Refuse float tensors holding NaN or infinite values (a diverged run saved, or a damaged
    file): such a model writes NaN embeddings and empty predictions that read as results.

    Raises:
        CheckpointError: naming the file and the first such tensor.
    """
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise CheckpointError(f"{path}: tensor {name} holds {bad} NaN or infinite value(s); these "
                                  "weights cannot give meaningful outputs (a diverged training run, or a "
                                  "damaged file)")


def weight_shapes(path: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], bool]]:
    """``{tensor name: (shape, is floating point)}`` from a safetensors file's header, without
    reading the tensors."""
    if not Path(path).is_file():
        raise CheckpointError(f"{Path(path).parent}: checkpoint has no {Path(path).name}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            slices = {name: handle.get_slice(name) for name in handle.keys()}
            return {name: (tuple(piece.get_shape()), piece.get_dtype().startswith(("F", "BF")))
                    for name, piece in slices.items()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable weights ({exc})") from None


def check_weights_fit(config: Mapping[str, Any], weights: str | os.PathLike, encoder_only: bool = False) -> None:
    """Compare the sizes a checkpoint's config gives its module with the weights file's header,
    before the module is built: every width (``dim``, the MLP's hidden width, ``stem_channels``,
    the decoder's and projector's widths, a ResNet's stage widths) must be a dimension of the
    tensors of its part, and each stack of blocks must hold as many blocks as the file (the
    documented submodules ``blocks`` of the SiT encoder and decoder, ``stages`` of the ResNet).
    A hand-edited width of 10^6 is thus refused instead of allocating gigabytes. The exact shapes
    are compared once the module exists (:func:`load_state_into`).

    Raises:
        CheckpointError: naming the weights file and the setting that does not fit.
    """
    shapes = weight_shapes(weights)
    if encoder_only:
        if not any(name.startswith(ENCODER_PREFIX) for name in shapes):
            raise CheckpointError(f"{weights}: no '{ENCODER_PREFIX}*' weights")
        shapes = {name: shape for name, shape in shapes.items() if name.startswith(ENCODER_PREFIX)}
    for problem in _size_problems(config, shapes):
        raise CheckpointError(f"{weights}: the config's model does not fit these weights: {problem}")


def _size_problems(config: Mapping[str, Any], shapes: Mapping[str, tuple[tuple[int, ...], bool]]) -> list[str]:
    """Where ``config["model"]``'s sizes disagree with the tensors ``shapes`` of a weights file
    (the parts whose sizes each arch's settings set: :attr:`crema.model.registry.Arch.weight_parts`)."""
    _, arch = arch_of(config, config.get("arch", DEFAULT_ARCH))
    problems = []
    for part in arch.weight_parts(config.get("model") or {}):
        if not any(name.startswith(part.prefix) for name in shapes):
            continue  # a part this checkpoint does not carry (a classifier has no decoder)
        problems += _widths_missing(shapes, part.prefix, part.widths)
        if part.stack:
            problems += _count_differs(shapes, part.prefix + part.stack, part.levels, part.depth_name, part.depth)
    return problems


def _widths_missing(shapes: Mapping[str, tuple[tuple[int, ...], bool]], prefix: str,
                    widths: Mapping[str, Any]) -> list[str]:
    """``name N`` for each width that is no dimension of any tensor under ``prefix``."""
    sizes = {size for name, (shape, _) in shapes.items() if name.startswith(prefix) for size in shape}
    problems = []
    for name, value in widths.items():
        values = value if isinstance(value, tuple) else (value,)
        for one in values:
            if isinstance(one, int) and one not in sizes:
                problems.append(f"{name} {one} is no dimension of the {prefix.rstrip('.') or 'model'}'s "
                                f"weights (they have {sorted(sizes)[-6:]})")
    return problems


def _count_differs(shapes: Mapping[str, tuple[tuple[int, ...], bool]], prefix: str, levels: int,
                   name: str, expected: Any) -> list[str]:
    """``name`` against the number of distinct numbered submodules under ``prefix`` (the first
    ``levels`` numbers after it: ``blocks.3`` is one level, ResNet ``stages.1.0`` two)."""
    pattern = re.compile(re.escape(prefix) + r"\.".join([r"(\d+)"] * levels) + r"\.")
    found = {match.groups() for match in map(pattern.match, shapes) if match}
    if isinstance(expected, int) and expected != len(found):
        return [f"{name} is {expected} but the weights hold {len(found)} {prefix.rstrip('.')}"]
    return []


def _state_mismatch(own: Mapping[str, tuple[tuple[int, ...], bool]],
                    found: Mapping[str, tuple[tuple[int, ...], bool]]) -> str | None:
    """What differs between a module's ``{name: (shape, is float)}`` and a file's, or None."""
    missing = sorted(set(own) - set(found))
    unexpected = sorted(set(found) - set(own))
    common = sorted(set(own) & set(found))
    wrong_shape = [f"{k} {list(found[k][0])} (model {list(own[k][0])})" for k in common if own[k][0] != found[k][0]]
    integer = [k for k in common if own[k][1] and not found[k][1]]
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape),
                        ("integer-typed where the model holds float weights", integer)):
        if keys:
            parts.append(f"{label} keys {keys[:5]}{' ...' if len(keys) > 5 else ''}")
    return "; ".join(parts) or None


def model_fs(config: Mapping[str, Any]) -> float | None:
    """The sampling rate a checkpoint's inputs were preprocessed to (None if unrecorded)."""
    fs = (config.get("preprocess") or {}).get("fs")
    return None if fs is None else float(fs)


def check_corpus_rate(fs: float | None, corpus_fs: float, model: str | os.PathLike,
                      corpus: str | os.PathLike) -> None:
    """Refuse a corpus prepared at another sampling rate than the model's inputs, ``fs`` (None
    = unknown, accepted): a model sees time through its patch length, so another rate silently
    changes what it sees."""
    if fs is not None and float(fs) != float(corpus_fs):
        raise CheckpointError(f"{model}: the model was trained at {fs} Hz but the corpus {corpus} is at "
                              f"{corpus_fs} Hz; prepare the corpus at the model's rate")


def load_state_into(module: nn.Module, state: Mapping[str, Tensor], where: str | os.PathLike) -> None:
    """``module.load_state_dict(state)`` with a :class:`CheckpointError` that names the folder
    and the mismatching keys instead of PyTorch's RuntimeError."""
    def described(tensors: Mapping[str, Tensor]) -> dict[str, tuple[tuple[int, ...], bool]]:
        return {k: (tuple(v.shape), v.is_floating_point()) for k, v in tensors.items()}

    problem = _state_mismatch(described(module.state_dict()), described(state))
    if problem:
        raise CheckpointError(f"{where}: weights do not match the model ({problem})")
    module.load_state_dict(state, strict=True)


def encoder_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The ``encoder.*`` entries of a pretrain or classifier state dict, prefix removed."""
    return {k[len(ENCODER_PREFIX):]: v for k, v in state.items() if k.startswith(ENCODER_PREFIX)}


# ----------------------------------------------------------------------------- loading into modules

def load_network(directory: str | os.PathLike, map_location: str | torch.device = "cpu"
                 ) -> tuple[nn.Module, dict[str, Any]]:
    """A checkpoint folder (or a shipped model's name) -> ``(module in eval mode on
    map_location, config dict)``; the module is :func:`crema.model.registry.build_network`'s."""
    directory = resolve_model(directory)
    config = load_config(directory)
    check_weights_fit(config, directory / MODEL_FILE)
    state, config = load_checkpoint(directory, map_location)
    network = build_network(config, directory)
    load_state_into(network, state, directory / MODEL_FILE)
    return network.to(map_location).eval(), config


def load_encoder(directory: str | os.PathLike,
                 map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The SiT encoder of a ``pretrain`` or ``classifier`` checkpoint, with its config.

    Returns ``(SiTEncoder in eval mode, config dict)``.
    """
    directory = resolve_model(directory)
    config = load_config(directory)
    encoder_arch(config, directory)  # before the weights are read: a ResNet has no encoder
    check_weights_fit(config, directory / MODEL_FILE, encoder_only=True)
    state, config = load_checkpoint(directory, map_location)
    encoder = build_encoder(config, directory)
    weights = encoder_state(state)
    if not weights:
        raise CheckpointError(f"{directory}: no '{ENCODER_PREFIX}*' weights in {MODEL_FILE}")
    load_state_into(encoder, weights, directory / MODEL_FILE)
    return encoder.to(map_location).eval(), config


def load_pretrained(directory: str | os.PathLike,
                    map_location: str | torch.device = "cpu") -> tuple[nn.Module, RunConfig]:
    """The whole CREMA model (encoder, decoder, projector) of a ``pretrain`` checkpoint, in
    eval mode, with its run config: for reconstructions or to continue training elsewhere."""
    try:
        cfg = run_config_from_checkpoint(load_config(resolve_model(directory)))
    except CheckpointError as exc:
        raise CheckpointError(f"{directory}: {exc}") from exc
    model, _ = load_network(directory, map_location)
    return model, cfg
