"""The suite's steps as typed values, and the plan: which steps a config asks for, in order.

A step names its inputs (which encoder, which task, which fine-tune it corrupts), not a string to
parse; its :attr:`id` is only where its record is saved (``OUT/steps/<id>.json``) and what
``--resume`` matches. Ids of pretraining seed 0 are the ids of suites written before there were
several pretraining seeds, so their finished steps still count.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence, Union

from .config import SuiteConfig

FROZEN_BASELINES = ("random_sit", "random_kernels")          # probed like a pretrained encoder
SUPERVISED_BASELINES = ("supervised_sit", "supervised_resnet1d")  # trained from scratch on labels


@dataclass(frozen=True)
class Encoder:
    """A pretrained method or a baseline; ``pretrain_seed`` seeds its pretraining (or random
    initialisation), None for models trained from scratch on the labels."""

    method: str
    pretrain_seed: int | None = 0

    @property
    def name(self) -> str:
        """Its name in step ids and folders: the method, with ``@seed<k>`` for pretraining seed k > 0."""
        return f"{self.method}@seed{self.pretrain_seed}" if self.pretrain_seed else self.method

    @property
    def pretrained(self) -> bool:
        return self.method not in FROZEN_BASELINES + SUPERVISED_BASELINES


@dataclass(frozen=True)
class Pretrain:
    """Pretrain one method with one seed (resumed from its checkpoint when interrupted)."""

    kind: ClassVar[str] = "pretrain"
    encoder: Encoder

    @property
    def id(self) -> str:
        return f"pretrain/{self.encoder.name}"


@dataclass(frozen=True)
class Probe:
    """Linear probes of a frozen encoder at every fraction and seed (or with a source held out)."""

    kind: ClassVar[str] = "probe"
    encoder: Encoder
    corpus: str
    task: str
    fractions: tuple[float, ...]
    holdout: str | None = None

    @property
    def id(self) -> str:
        return f"probe/{self.encoder.name}/{self.task}" + (f"/holdout-{self.holdout}" if self.holdout else "")


@dataclass(frozen=True)
class Finetune:
    """One fine-tune (or supervised training from scratch) at one fraction and seed."""

    kind: ClassVar[str] = "finetune"
    encoder: Encoder
    corpus: str
    task: str
    fraction: float
    seed: int
    holdout: str | None = None

    @property
    def id(self) -> str:
        where = f"holdout-{self.holdout}" if self.holdout else f"f{self.fraction:g}"
        return f"finetune/{self.encoder.name}/{self.task}/{where}/s{self.seed}"


@dataclass(frozen=True)
class ProbeCorruption:
    """AUROC vs corruption severity of a probe fitted on all labels (first seed)."""

    kind: ClassVar[str] = "corruptions"
    encoder: Encoder
    corpus: str
    task: str

    @property
    def id(self) -> str:
        return f"corruptions/probe/{self.encoder.name}/{self.task}"


@dataclass(frozen=True)
class FinetuneCorruption:
    """AUROC vs corruption severity of the classifier that ``after`` trained."""

    kind: ClassVar[str] = "corruptions"
    after: Finetune

    @property
    def id(self) -> str:
        return f"corruptions/finetune/{self.after.encoder.name}/{self.after.task}"


Step = Union[Pretrain, Probe, Finetune, ProbeCorruption, FinetuneCorruption]


def pretrained_encoders(cfg: SuiteConfig) -> list[Encoder]:
    """The encoders the suite pretrains: every method at every pretraining seed."""
    return [Encoder(m, s) for m in cfg.methods for s in cfg.pretrain_seeds]


def given_encoders(cfg: SuiteConfig) -> list[Encoder]:
    """The pretrained checkpoints the config names (``encoders``), evaluated as they are. They are
    filed under the first pretraining seed, so that they pair with the random baselines of it."""
    return [Encoder(name, cfg.pretrain_seeds[0]) for name in cfg.encoders]


def probe_encoders(cfg: SuiteConfig) -> list[Encoder]:
    """Every pretrained or given encoder and the frozen baselines, each at every pretraining seed."""
    frozen = [Encoder(b, s) for b in FROZEN_BASELINES if b in cfg.baselines for s in cfg.pretrain_seeds]
    return pretrained_encoders(cfg) + given_encoders(cfg) + frozen


def finetune_encoders(cfg: SuiteConfig) -> list[Encoder]:
    """Every pretrained or given encoder and the supervised baselines (which no pretraining seed
    touches)."""
    supervised = [Encoder(b, None) for b in SUPERVISED_BASELINES if b in cfg.baselines]
    return pretrained_encoders(cfg) + given_encoders(cfg) + supervised


def plan_steps(cfg: SuiteConfig, loso_sources: Sequence[str] = ()) -> list[Step]:
    """Every step of the suite in the order it runs: pretraining of the methods first (given
    encoders are not pretrained), then per task probes and
    fine-tunes, leave-one-source-out over ``loso_sources``, and corruptions (whose fine-tune
    dependency is planned before them when no task asked for it)."""
    steps: list[Step] = [Pretrain(e) for e in pretrained_encoders(cfg)]
    for t in cfg.tasks:
        if "probe" in t.protocols:
            steps += [Probe(e, t.corpus, t.task, t.fractions) for e in probe_encoders(cfg)]
        if "finetune" in t.protocols:
            steps += [Finetune(e, t.corpus, t.task, f, s) for e in finetune_encoders(cfg)
                      for f in t.finetune_fractions or t.fractions for s in t.finetune_seeds or cfg.seeds]
    loso = cfg.leave_source_out
    for source in loso_sources if loso else ():
        if "probe" in loso.protocols:
            steps += [Probe(e, loso.corpus, loso.task, (loso.fraction,), source) for e in probe_encoders(cfg)]
        if "finetune" in loso.protocols:
            steps += [Finetune(e, loso.corpus, loso.task, loso.fraction, s, source)
                      for e in finetune_encoders(cfg) for s in cfg.seeds]
    return steps + _corruption_steps(cfg, steps)


def _corruption_steps(cfg: SuiteConfig, planned: list[Step]) -> list[Step]:
    cor = cfg.corruptions
    if cor is None:
        return []
    steps: list[Step] = []
    if "probe" in cor.protocols:
        steps += [ProbeCorruption(e, cor.corpus, cor.task) for e in probe_encoders(cfg)]
    if "finetune" in cor.protocols:
        for e in finetune_encoders(cfg):
            # the classifier trained on all labels with the first seed
            after = Finetune(e, cor.corpus, cor.task, 1.0, cfg.seeds[0])
            if after not in planned:
                steps.append(after)
            steps.append(FinetuneCorruption(after))
    return steps
