"""Is a foundation model worth it on my task? ``crema evaluate --corpus DIR --task NAME --out OUT``
without a suite file: the honest comparison on one labelled task of a user's corpus.

The run is an ordinary suite (:class:`~crema.eval.suite.runner.Suite`, so ``--resume``, the step
records, ``results.json`` and the report work as for any suite), built here from the corpus and
the task, with no pretraining because the encoders are given:

* the given encoders (default the shipped ``crema-w128-ecg12``; several allowed), linearly
  probed at the label fractions the training split allows (:func:`usable_fractions`) and
  fine-tuned (LP-FT, few epochs) on all training labels;
* ``random_sit``: a randomly initialised SiT of the first encoder's size, probed the same way
  (every SiT through the same embedding read-out: the first encoder's default, or ``features``);
* ``random_kernels``: the training-free random-kernel features (:mod:`crema.eval.rocket`), probed;
* ``supervised_resnet1d``: the 1-D ResNet trained from scratch on the same labels.

The report (:func:`crema.eval.report.build_report`) opens with one sentence saying whether the
(first) pretrained encoder beat the random-kernel baseline (:mod:`crema.eval.headline`).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ...config import FinetuneConfig, ModelConfig, embedding_features
from ...config_io import from_dict, to_dict
from ...data.corpus import Corpus
from ...errors import ConfigError, CremaError
from ...model.checkpoint import load_config
from ...runtime import torch_threads
from ...weights import shipped_models
from ..probe import check_select_c
from ..splits import TaskSplit, task_split
from ..report import build_report, report_headline
from ..results import load_results
from .config import BASELINES, PretrainSettings, ProbeSettings, SuiteConfig, TaskEval, suite_from_dict
from .runner import Suite

DEFAULT_CHECKPOINT = "crema-w128-ecg12"  # the best shipped encoder
CANDIDATE_FRACTIONS: tuple[float, ...] = (0.01, 0.1, 1.0)
MIN_RECORDS = 20                      # labelled training records a label fraction must hold
OWN_TASK_BASELINES = ("random_sit", "random_kernels", "supervised_resnet1d")
CORPUS_NAME = "corpus"                # the corpus's name inside the suite


@dataclass(frozen=True)
class OwnTaskSettings:
    """What the comparison runs with; the defaults fit ~1,000 records in a few CPU minutes."""

    fractions: tuple[float, ...] = CANDIDATE_FRACTIONS  # candidates; kept where the data allows them
    min_records: int = MIN_RECORDS      # training records a fraction below 1 must hold
    seeds: tuple[int, ...] = (0, 1, 2)  # label subsets and probe seeds
    finetune_seeds: tuple[int, ...] = (0,)  # fine-tunes (of the encoders and of the ResNet)
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(
        epochs=5, patience=3, probe_init=True))  # every fine-tune's settings (LP-FT for pretrained encoders)
    n_bootstrap: int = 1000             # bootstrap resamples of the test records
    random_kernels: int = 2000          # kernels of the random-kernel baseline
    features: str | None = None         # SiT read-out probed (mean | leads); None = the first encoder's default
    select_c: str = "val"               # how the logistic probes pick C (crema.config.SELECT_C)
    device: str = "auto"
    threads: int | None = None


def usable_fractions(split: TaskSplit, candidates: tuple[float, ...] = CANDIDATE_FRACTIONS,
                     min_records: int = MIN_RECORDS) -> tuple[tuple[float, ...], dict[float, str]]:
    """The label fractions the training split supports, and why the others were dropped.

    A fraction below 1 is kept when its subset holds at least ``min_records`` labelled records
    and, for a classification task, when every class present in training would have at least
    one positive record at that fraction (``fraction x positives >= 1``), so that the subset is
    not padded out to reach each class. All training labels (fraction 1) are always used.

    Returns:
        ``(kept fractions, {dropped fraction: reason})``.
    """
    keys = split.keys["train"]
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    n_records = len(first)
    positives = np.zeros(split.y["train"].shape[1])
    if not split.regression:
        per_record = np.zeros((n_records, split.y["train"].shape[1]), dtype=bool)
        np.logical_or.at(per_record, inverse, split.y["train"] > 0.5)
        positives = per_record.sum(0)
    rare = positives[positives > 0].min() if (positives > 0).any() else 0
    kept, dropped = [], {}
    for fraction in sorted(set(candidates) | {1.0}):
        if fraction < 1 and math.ceil(fraction * n_records) < min_records:
            dropped[fraction] = f"{math.ceil(fraction * n_records)} records, fewer than {min_records}"
        elif fraction < 1 and not split.regression and fraction * rare < 1:
            dropped[fraction] = f"the rarest class has {int(rare)} positive records, none left at this fraction"
        else:
            kept.append(fraction)
    return tuple(kept), dropped


def encoder_names(checkpoints: list[str]) -> dict[str, str]:
    """``{method name: checkpoint}``: a shipped model's name, else the folder's name (made unique,
    and never a baseline's name)."""
    names: dict[str, str] = {}
    for checkpoint in checkpoints:
        base = str(checkpoint) if str(checkpoint) in shipped_models() else Path(checkpoint).resolve().name
        base = base.replace("@", "_").replace(":", "_") or "encoder"
        name, k = base, 2
        while name in names or name in BASELINES:
            name, k = f"{base}-{k}", k + 1
        names[name] = str(checkpoint)
    return names


def encoder_model(checkpoint: str) -> tuple[ModelConfig, str]:
    """The SiT config of a given encoder (what ``random_sit`` is built like) and its default
    embedding read-out (``mean`` or ``leads``)."""
    config = load_config(checkpoint)
    if config.get("arch", "sit") != "sit":
        raise CremaError(f"{checkpoint}: a {config.get('arch')} classifier has no SiT encoder to evaluate")
    return from_dict(ModelConfig, config["model"]), embedding_features(config, checkpoint)


def own_task_suite(corpus_dir: str | os.PathLike, task: str, checkpoints: list[str], fractions: tuple[float, ...],
                   settings: OwnTaskSettings) -> SuiteConfig:
    """The suite of the comparison on ``task`` (see the module docstring), checked as a suite file
    would be.

    Raises:
        ConfigError: a setting out of its range (e.g. zero epochs), naming it.
    """
    encoders = encoder_names(checkpoints)
    model, features = encoder_model(checkpoints[0])
    cfg = SuiteConfig(
        name=f"own-task-{task}",
        description=f"crema evaluate --corpus {corpus_dir} --task {task}: the given encoders against a random "
                    "SiT, random kernels and a supervised 1-D ResNet on the user's task",
        corpora={CORPUS_NAME: str(corpus_dir)},
        pretrain=PretrainSettings(model=model),
        # every SiT (the encoders and the random one) probed through the same read-out
        probe=ProbeSettings(features=settings.features or features, select_c=settings.select_c),
        methods={}, encoders=encoders, baselines=OWN_TASK_BASELINES,
        seeds=settings.seeds, pretrain_seeds=(0,), n_bootstrap=settings.n_bootstrap,
        random_kernels=settings.random_kernels,
        device=settings.device, threads=settings.threads, finetune=settings.finetune,
        tasks=(TaskEval(corpus=CORPUS_NAME, task=task, fractions=fractions, finetune_fractions=(1.0,),
                        finetune_seeds=settings.finetune_seeds),))
    try:
        return suite_from_dict(to_dict(cfg))  # the one checker of suite configs: types and ranges
    except ConfigError as exc:
        raise ConfigError(f"crema evaluate --task {task}: {exc}") from None


def run_own_task(corpus_dir: str | os.PathLike, task: str, out: str | os.PathLike,
                 checkpoints: list[str] | None = None, settings: OwnTaskSettings = OwnTaskSettings(),
                 resume: bool = False, progress: bool = True) -> dict:
    """Run the comparison into ``out`` and write its report.

    Returns:
        ``{"steps", "ran", "already_done", "skipped", "seconds", "fractions", "dropped_fractions",
        "report" (paths written), "headline" (the report's first sentence, or None)}``.

    Raises:
        CremaError: the corpus lacks the task, a split has no labelled record, or a checkpoint is
            not a SiT encoder at the corpus's rate.
    """
    checkpoints = list(checkpoints or [DEFAULT_CHECKPOINT])
    split = task_split(Corpus(corpus_dir), task)
    check_select_c(settings.select_c, "logistic", task, split.task_type)
    fractions, dropped = usable_fractions(split, settings.fractions, settings.min_records)
    cfg = own_task_suite(corpus_dir, task, checkpoints, fractions, settings)
    with torch_threads(cfg.threads):
        counts = Suite(cfg, out, progress).run(resume=resume)
    written = build_report(out)
    return {**counts, "fractions": fractions, "dropped_fractions": dropped, "report": written,
            "headline": report_headline(load_results(out))}
