"""The suite config: frozen dataclasses with the JSON round trip of :class:`crema.config.RunConfig`.

A suite config file is read with :func:`load_suite_config`: the same :func:`crema.config_io.from_dict`
checks every key and value (unknown keys, wrong types and bad ranges fail with the file and the
field's path), and :func:`crema.config_io.to_dict` writes it back (as ``OUT/suite.json``). Two short
forms of the file are expanded before that check, so that hand-written configs stay short:

* ``pretrain.model.size`` names a preset of :data:`crema.config.MODEL_SIZES` whose widths fill the
  fields the file leaves out (another name is a model of the file's own, which then gives ``dim``,
  ``depth`` and ``heads``: e.g. the ``w128`` of a release config);
* each entry of ``methods`` lists only the objective fields that differ from ``pretrain.objective``.

Written back, both are complete, and reading the written file gives the same config.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ...config import (MODEL_SIZES, EmbeddingFeatures, FinetuneConfig, ModelConfig, ObjectiveConfig, PretrainConfig,
                      SelectC)
from ...config_io import from_dict, read_json_object
from ...data.corpus import parse_corpus_spec
from ...errors import ConfigError
from ..robustness import CORRUPTIONS, N_SEVERITIES

Protocol = Literal["probe", "finetune"]
Baseline = Literal["random_sit", "random_kernels", "supervised_sit", "supervised_resnet1d"]
BASELINES: tuple[str, ...] = ("random_sit", "random_kernels", "supervised_sit", "supervised_resnet1d")
PROTOCOLS: tuple[str, ...] = ("probe", "finetune")
# objective overrides of the methods a config that names none pretrains
DEFAULT_METHODS: dict[str, dict[str, Any]] = {"crema": {"mode": "crema"}, "mae": {"mode": "mae", "lambda_con": 0.0},
                                              "contrastive": {"mode": "contrastive"}}
# fields of the engines' configs that the suite sets itself for every run (from the corpora, the
# method, the seeds, the device and OUT): a config must leave them at their defaults
SUITE_SET_TRAIN = ("corpora", "out", "seed", "device")
SUITE_SET_FINETUNE = ("corpus", "task", "out", "arch", "checkpoint", "size", "model", "fraction", "seed",
                      "holdout_source", "device", "n_bootstrap")


@dataclass(frozen=True)
class TaskEval:
    """One labelled task evaluated at several label fractions."""

    corpus: str                             # a name in ``corpora``
    task: str                               # a label task of that corpus (e.g. ptbxl-superdiagnostic)
    fractions: tuple[float, ...] = (0.01, 0.1, 1.0)  # fractions of the labelled training records
    protocols: tuple[Protocol, ...] = PROTOCOLS      # linear probe and/or fine-tuning
    finetune_fractions: tuple[float, ...] | None = None  # fine-tune at these only; None = ``fractions``
    finetune_seeds: tuple[int, ...] | None = None    # fine-tune with these seeds only; None = the suite's ``seeds``

    def problems(self) -> list[str]:
        fractions = self.fractions + (self.finetune_fractions or ())
        return [f"fractions: each must be in (0, 1], got {f!r}" for f in fractions if not 0 < f <= 1][:1]


@dataclass(frozen=True)
class LeaveSourceOut:
    """Train on every source of a multi-source corpus but one, test on the one held out."""

    corpus: str                             # a name in ``corpora`` with a ``source`` column (CinC)
    task: str                               # its label task
    sources: tuple[str, ...] | None = None  # sources to hold out in turn; None = every source
    protocols: tuple[Protocol, ...] = ("probe",)
    fraction: float = 1.0                   # fraction of the other sources' labelled records used

    def problems(self) -> list[str]:
        return [] if 0 < self.fraction <= 1 else [f"fraction: must be in (0, 1], got {self.fraction!r}"]


@dataclass(frozen=True)
class Corruptions:
    """Test-time corruptions at graded severities (AUROC vs severity, :mod:`crema.eval.robustness`)."""

    corpus: str                             # a name in ``corpora``
    task: str                               # its label task
    names: tuple[str, ...] | None = None    # corruptions; None = all but 60 Hz hum
    severities: tuple[int, ...] = tuple(range(N_SEVERITIES + 1))  # 0 = clean
    protocols: tuple[Protocol, ...] = PROTOCOLS
    seed: int = 0                           # seeds each record's corruption stream

    def problems(self) -> list[str]:
        unknown = sorted(set(self.names or ()) - set(CORRUPTIONS))
        if unknown:
            return [f"names: unknown corruptions {unknown}; choose from {sorted(CORRUPTIONS)}"]
        bad = [s for s in self.severities if not 0 <= s <= N_SEVERITIES]
        return [f"severities: each must be 0..{N_SEVERITIES}, got {bad}"] if bad else []


@dataclass(frozen=True)
class ProbeSettings:
    """The linear probe on frozen features."""

    kind: Literal["logistic", "linear"] = "logistic"  # scikit-learn logistic regression, or a torch head
    Cs: tuple[float, ...] | None = None     # logistic: inverse regularisation grid, chosen on validation
    select_c: SelectC = "val"               # logistic: rank C on validation (val) or by 5-fold CV of training (cv)
    batch_size: int = 64                    # ECGs per feature-extraction batch
    features: EmbeddingFeatures | None = None  # read-out of every probed SiT (mean: pooled D; leads: 12 x D);
                                            # None = each checkpoint's own default, mean for random_sit


def _suite_set_problems(cfg: Any, names: tuple[str, ...], where: str, instead: str) -> list[str]:
    """Fields of an engine config that the suite fills in itself but the file set."""
    default = type(cfg)()
    return [f"{where}.{name}: set by the suite for every run ({instead}); leave it out"
            for name in names if getattr(cfg, name) != getattr(default, name)]


@dataclass(frozen=True)
class PretrainSettings:
    """What every method's pretraining shares: data, model, objective and schedule."""

    corpora: tuple[str, ...] = ()           # "NAME" or "NAME:split[,split]" of names in ``corpora``
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)  # each method overrides fields
    train: PretrainConfig = field(default_factory=PretrainConfig)

    def problems(self) -> list[str]:
        return _suite_set_problems(self.train, SUITE_SET_TRAIN, "train",
                                   "pretrain.corpora, pretrain_seeds, device and OUT")


def _default_methods() -> dict[str, ObjectiveConfig]:
    return {name: ObjectiveConfig(**overrides) for name, overrides in DEFAULT_METHODS.items()}


def _finetune_problems(cfg: FinetuneConfig) -> list[str]:
    return _suite_set_problems(cfg, SUITE_SET_FINETUNE, "finetune", "tasks, methods, seeds, device and OUT")


@dataclass(frozen=True)
class SuiteConfig:
    """One evaluation suite: every method and baseline on the same data, seeds and protocols."""

    name: str = "suite"                     # label of the run (in every result's config)
    description: str = ""                   # free text: what the suite is for, how to prepare its data
    corpora: dict[str, str] = field(default_factory=dict)  # NAME -> prepared corpus folder
    pretrain: PretrainSettings = field(default_factory=PretrainSettings)
    methods: dict[str, ObjectiveConfig] = field(default_factory=_default_methods)  # one pretraining each
    encoders: dict[str, str] = field(default_factory=dict)  # NAME -> a pretrained checkpoint folder or shipped
                                            # model to evaluate as it is (no pretraining); probed and
                                            # fine-tuned like a method
    baselines: tuple[Baseline, ...] = BASELINES  # reference encoders and supervised models
    seeds: tuple[int, ...] = (0, 1, 2)      # label subsets, probe and fine-tuning init, data order
    pretrain_seeds: tuple[int, ...] = (0,)  # each method pretrained once per seed (random baselines
                                            # initialised with it); results combine over them
    n_bootstrap: int = 1000                 # bootstrap resamples of the test records per result
    random_kernels: int = 2000              # kernels of the random_kernels baseline (2 features each)
    device: str = "auto"                    # torch device for everything
    threads: int | None = None              # torch CPU threads; None = torch's choice
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)  # every fine-tune's settings
    tasks: tuple[TaskEval, ...] = ()
    leave_source_out: LeaveSourceOut | None = None
    corruptions: Corruptions | None = None

    def problems(self) -> list[str]:
        return _finetune_problems(self.finetune) + _name_problems(self) + _seed_problems(self) + [
            f"corpora: corpus {name!r} is used but not defined (defined: {sorted(self.corpora)}; add it or "
            f"pass --corpus {name}=DIR)" for name in referenced_corpora(self) if name not in self.corpora]


def _name_problems(cfg: SuiteConfig) -> list[str]:
    problems = []
    if not cfg.tasks and cfg.leave_source_out is None:
        problems.append("tasks: the suite has no 'tasks' and no 'leave_source_out': nothing to evaluate")
    if cfg.methods and not cfg.pretrain.corpora:
        problems.append("pretrain.corpora: 'methods' need pretraining data")
    for section, names in (("methods", cfg.methods), ("encoders", cfg.encoders)):
        clash = sorted(set(names) & set(BASELINES))
        if clash:
            problems.append(f"{section}: names {clash} are reserved for baselines")
        odd = sorted(m for m in names if not m or "/" in m or "@" in m or ":" in m)
        if odd:  # method names become step ids and folder names
            problems.append(f"{section}: names {odd} may not be empty or hold '/', '@' or ':'")
    both = sorted(set(cfg.methods) & set(cfg.encoders))
    if both:
        problems.append(f"encoders: names {both} are also methods; give each encoder its own name")
    return problems


def _seed_problems(cfg: SuiteConfig) -> list[str]:
    problems = []
    for name in ("seeds", "pretrain_seeds"):
        values = getattr(cfg, name)
        if not values or len(set(values)) != len(values) or min(values) < 0:
            problems.append(f"{name}: must be distinct non-negative integers, at least one, got {list(values)}")
    if cfg.n_bootstrap < 1:
        problems.append(f"n_bootstrap: must be positive, got {cfg.n_bootstrap}")
    if cfg.random_kernels < 1:
        problems.append(f"random_kernels: must be positive, got {cfg.random_kernels}")
    if cfg.threads is not None and cfg.threads < 1:
        problems.append(f"threads: must be positive or null, got {cfg.threads}")
    return problems


def split_spec(spec: str) -> tuple[str, str]:
    """``"ptbxl:train"`` -> ``("ptbxl", ":train")``; ``"unlabeled"`` -> ``("unlabeled", "")``, by the
    one corpus-spec rule (:func:`crema.data.corpus.parse_corpus_spec`)."""
    name, splits = parse_corpus_spec(spec)
    return str(name), (":" + ",".join(splits) if splits else "")


def referenced_corpora(cfg: SuiteConfig) -> list[str]:
    """Names of the corpora the suite reads (pretraining data only when it pretrains)."""
    names = [split_spec(s)[0] for s in cfg.pretrain.corpora] if cfg.methods else []
    names += [t.corpus for t in cfg.tasks]
    names += [entry.corpus for entry in (cfg.leave_source_out, cfg.corruptions) if entry is not None]
    return sorted(set(names))


# ----------------------------------------------------------------------------- reading

# What a model of the file's own (a ``size`` no preset has) must state, since no preset fills it in
OWN_SIZE_FIELDS = ("depth", "dim", "heads")


def expand_short_forms(raw: dict[str, Any]) -> dict[str, Any]:
    """The file's JSON with the model preset and the methods' objective overrides written out
    (see the module docstring); everything else is left for :func:`crema.config_io.from_dict`."""
    raw = dict(raw)
    pretrain = raw.get("pretrain")
    if not isinstance(pretrain, dict):
        return raw
    pretrain = raw["pretrain"] = dict(pretrain)
    model = pretrain.get("model")
    if isinstance(model, dict) and "size" in model:
        if model["size"] in MODEL_SIZES:
            pretrain["model"] = {**MODEL_SIZES[model["size"]], **model}
        elif not set(OWN_SIZE_FIELDS) <= set(model):
            raise ConfigError(f"pretrain.model.size: unknown preset {model['size']!r}; choose from "
                              f"{sorted(MODEL_SIZES)}, or give {', '.join(OWN_SIZE_FIELDS)} for a size of your own")
    shared = pretrain.get("objective", {})
    methods = raw.get("methods", DEFAULT_METHODS)
    if isinstance(shared, dict) and isinstance(methods, dict):
        raw["methods"] = {name: {**shared, **over} if isinstance(over, dict) else over
                          for name, over in methods.items()}
    return raw


def suite_from_dict(raw: dict[str, Any]) -> SuiteConfig:
    """A :class:`SuiteConfig` from a config file's JSON object (short forms allowed).

    Raises:
        ConfigError: unknown keys, a bad value or an inconsistent suite; the message names the field.
    """
    return from_dict(SuiteConfig, expand_short_forms(raw))


def load_suite_config(path: str | os.PathLike, corpus_overrides: dict[str, str] | None = None) -> SuiteConfig:
    """Read a suite config file, with ``NAME=DIR`` corpus overrides applied.

    Raises:
        ConfigError: unreadable JSON, unknown keys or names, nothing to evaluate; the message
            names the file and the field.
    """
    raw = read_json_object(path, "suite config")
    if corpus_overrides:
        corpora = raw.get("corpora", {})
        raw = {**raw, "corpora": {**corpora, **corpus_overrides} if isinstance(corpora, dict) else corpora}
    try:
        return suite_from_dict(raw)
    except ConfigError as exc:
        raise ConfigError(f"{Path(path)}: {exc}") from None


def with_run_settings(cfg: SuiteConfig, device: str | None = None, threads: int | None = None) -> SuiteConfig:
    """``cfg`` with the command line's device and threads, when given."""
    changes = {k: v for k, v in (("device", device), ("threads", threads)) if v}
    return dataclasses.replace(cfg, **changes) if changes else cfg
