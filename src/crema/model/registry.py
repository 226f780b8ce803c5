"""Which module a checkpoint holds: the registry of model architectures.

A checkpoint's ``config.json`` names its ``kind`` (``pretrain`` | ``classifier``) and its ``arch``
(``sit`` when absent). :data:`ARCHS` maps each arch to what its ``model`` entry is, how each kind
of it is built and which weights its sizes set; :data:`BUILDERS` maps each kind to its builder.
Building a module from a config is thus two look-ups (:func:`build_network`), and adding an
architecture is one entry here. Nothing in this module reads files (:mod:`crema.model.checkpoint`
does, and builds through it).

The size presets of the SiT (``crema.config.MODEL_SIZES``: mini, tiny, small, base) stay with the
config classes: ``ModelConfig.from_size`` is a config constructor, and the CLI's flags and the
suite's recipe checks read the presets without importing torch, which this module needs.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from torch import nn

from ..config import ModelConfig, ResNet1dConfig, RunConfig
from ..config_io import from_dict
from ..errors import CheckpointError, ConfigError
from .crema import CREMA
from .heads import Classifier
from .resnet1d import ResNet1d
from .sit import SiTEncoder

DEFAULT_ARCH = "sit"  # a config.json without ``arch`` (every pretrain checkpoint) holds a SiT


@dataclass(frozen=True)
class WeightPart:
    """Tensors of a weights file whose sizes a config sets: those named ``prefix*`` must have each
    of ``widths`` (``{setting: int or tuple of ints}``) among their dimensions, and the numbered
    submodules ``prefix + stack`` (``levels`` numbers deep: ``blocks.3`` is one, a ResNet's
    ``stages.1.0`` two) must number ``depth`` (the setting ``depth_name``)."""

    prefix: str
    widths: Mapping[str, Any]
    stack: str | None = None
    levels: int = 1
    depth_name: str = ""
    depth: Any = None


@dataclass(frozen=True)
class Arch:
    """One architecture a checkpoint can hold.

    Attributes:
        config_class: the dataclass a checkpoint's ``model`` entry rebuilds.
        classifier: ``(model config, n_classes) -> module`` mapping ``(B, C, T)`` to logits ``(B, K)``.
        weight_parts: ``(model entry dict) -> [WeightPart]``, for :func:`crema.model.checkpoint.check_weights_fit`.
        encoder: ``(model config) -> SiTEncoder`` alone (:func:`build_encoder`); None: it has none.
        pretrain: ``(RunConfig) -> pretraining network``; None: no pretrain checkpoint holds it.
    """

    config_class: type
    classifier: Callable[[Any, int], nn.Module]
    weight_parts: Callable[[Mapping[str, Any]], list[WeightPart]]
    encoder: Callable[[Any], nn.Module] | None = None
    pretrain: Callable[[RunConfig], nn.Module] | None = None

    @property
    def kinds(self) -> tuple[str, ...]:
        """The checkpoint kinds this architecture can be."""
        return ("pretrain", "classifier") if self.pretrain is not None else ("classifier",)


def _sit_parts(model: Mapping[str, Any]) -> list[WeightPart]:
    """Encoder, MAE decoder and contrastive projector (a classifier carries the encoder only)."""
    dim, ratio = model.get("dim"), model.get("mlp_ratio", 4.0)
    hidden = int(dim * ratio) if isinstance(dim, int) and isinstance(ratio, (int, float)) else None
    encoder_widths = {"dim": dim, "mlp hidden width (dim * mlp_ratio)": hidden,
                      "stem_channels": model.get("stem_channels")}
    return [WeightPart("encoder.", encoder_widths, "blocks.", 1, "depth", model.get("depth")),
            WeightPart("decoder.", {"decoder_dim": model.get("decoder_dim")}, "blocks.", 1, "decoder_depth",
                       model.get("decoder_depth")),
            WeightPart("projector.", {"projector_hidden": model.get("projector_hidden"),
                                      "projector_dim": model.get("projector_dim")})]


def _resnet_parts(model: Mapping[str, Any]) -> list[WeightPart]:
    """The stem and stage widths over the whole module; ``stages.i.j`` blocks, ``sum(depths)``."""
    widths = (model.get("stem_width"), *(model.get("widths") or ()))
    return [WeightPart("", {"widths": widths}, "stages.", 2, "sum of depths", sum(model.get("depths") or ()))]


def _sit_classifier(cfg: ModelConfig, n_classes: int) -> nn.Module:
    return Classifier(SiTEncoder(cfg), n_classes)


def _crema(cfg: RunConfig) -> nn.Module:
    return CREMA(cfg.model, cfg.objective, fs=cfg.preprocess.fs)


ARCHS: dict[str, Arch] = {
    "sit": Arch(ModelConfig, _sit_classifier, _sit_parts, encoder=SiTEncoder, pretrain=_crema),
    "resnet1d": Arch(ResNet1dConfig, ResNet1d.from_config, _resnet_parts),
}


def get_arch(name: Any) -> Arch:
    """The registry's entry for ``name``. Raises ConfigError (field ``arch``) for an unknown one."""
    if not isinstance(name, str) or name not in ARCHS:  # a JSON list or object is no dict key
        raise ConfigError(f"unknown arch {name!r} ({' or '.join(ARCHS)})")
    return ARCHS[name]


def arch_of(config: Mapping[str, Any], where: Any) -> tuple[str, Arch]:
    """``(name, entry)`` of a checkpoint config's ``arch``; CheckpointError naming ``where``."""
    name = config.get("arch", DEFAULT_ARCH)
    try:
        return name, get_arch(name)
    except ConfigError as exc:
        raise CheckpointError(f"{where}: {exc}") from None


def model_config(arch: Arch, config: Mapping[str, Any]) -> Any:
    """A checkpoint's ``model`` entry rebuilt as ``arch.config_class``."""
    return from_dict(arch.config_class, config["model"], "model.")


def run_config_from_checkpoint(config: Mapping[str, Any]) -> RunConfig:
    """The :class:`RunConfig` stored in a pretraining ``config.json`` (extra keys such as
    ``kind`` and ``step`` are ignored)."""
    if config.get("kind") != "pretrain":
        raise CheckpointError(f"not a pretraining checkpoint (kind {config.get('kind')!r})")
    names = {f.name for f in dataclasses.fields(RunConfig)}
    config = {k: v for k, v in config.items() if k in names}
    if isinstance(config.get("objective"), Mapping) and "view_crop" not in config["objective"]:
        # Written before views had their own crops: they shared one, whatever today's default.
        config["objective"] = {**config["objective"], "view_crop": "same"}
    try:
        return from_dict(RunConfig, config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"bad pretraining config ({exc})") from exc


def _build_pretrain(name: str, arch: Arch, config: Mapping[str, Any]) -> nn.Module:
    if arch.pretrain is None:
        raise ConfigError(f"a {name!r} model has no pretraining network")
    return arch.pretrain(run_config_from_checkpoint(config))


def _build_classifier(name: str, arch: Arch, config: Mapping[str, Any]) -> nn.Module:
    return arch.classifier(model_config(arch, config), len(config["classes"]))


# checkpoint kind -> (arch name, arch, config.json) -> the module its weights belong to
BUILDERS: dict[str, Callable[[str, Arch, Mapping[str, Any]], nn.Module]] = {
    "pretrain": _build_pretrain,
    "classifier": _build_classifier,
}
KINDS: tuple[str, ...] = tuple(BUILDERS)


def build_network(config: Mapping[str, Any], where: Any) -> nn.Module:
    """The module a checkpoint's weights belong to, freshly initialised: ``CREMA`` (a SiT
    pretrain checkpoint), ``Classifier`` around a ``SiTEncoder`` (SiT classifier) or ``ResNet1d``
    (whose ``model`` entry is its ``ResNet1dConfig``). The one place that maps a ``config.json`` to
    a module; ``where`` names the checkpoint in errors.

    Raises:
        CheckpointError: an unknown kind or arch, or a config the module cannot be built from.
    """
    kind = config.get("kind")
    if kind not in KINDS:  # a tuple: any JSON value compares, a list is no dict key
        raise CheckpointError(f"{where}: unknown checkpoint kind {kind!r} ({' or '.join(KINDS)})")
    name, arch = arch_of(config, where)
    try:
        return BUILDERS[kind](name, arch, config)
    except (CheckpointError, ConfigError) as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: bad checkpoint config ({exc!r})") from None


def encoder_arch(config: Mapping[str, Any], where: Any) -> Arch:
    """The arch of a checkpoint config that has a SiT encoder; CheckpointError otherwise."""
    name, arch = arch_of(config, where)
    if arch.encoder is None:
        raise CheckpointError(f"{where}: a {name!r} classifier has no SiT encoder")
    return arch


def build_encoder(config: Mapping[str, Any], where: Any) -> nn.Module:
    """A freshly initialised SiT encoder for a checkpoint's ``model`` entry."""
    arch = encoder_arch(config, where)
    try:
        return arch.encoder(model_config(arch, config))
    except ConfigError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{where}: bad model config ({exc!r})") from None
