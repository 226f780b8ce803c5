"""What the steps of a suite share: its corpora (opened once, fingerprinted once), its models
(pretraining configs, checkpoints, encoders) and its output folder."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...config import FinetuneConfig, ModelConfig, RunConfig, embedding_features
from ...config_io import to_dict
from ...data.corpus import Corpus, is_corpus
from ...data.dataset import select_rows
from ...errors import CremaError
from ...model.checkpoint import MODEL_FILE, check_corpus_rate, load_encoder
from ...model.inference import readout
from ...model.sit import SiTEncoder
from ...weights import resolve as resolve_model
from ..features import FINGERPRINT_WHAT, corpus_fingerprint, file_sha256, module_sha256
from ..rocket import RandomKernelFeatures
from .config import SuiteConfig, referenced_corpora, split_spec
from .plan import Encoder


class Workspace:
    """A suite's config, output folder ``out`` and the corpora and encoders its steps load."""

    def __init__(self, cfg: SuiteConfig, out: str | os.PathLike, progress: bool = True):
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self._corpora: dict[str, Corpus] = {}
        self._fingerprints: dict[str, str] = {}
        self._encoders: dict[Encoder, tuple] = {}

    # ------------------------------------------------------------------ data

    def corpus_dir(self, name: str) -> Path:
        return Path(self.cfg.corpora[name])

    def corpus(self, name: str) -> Corpus:
        if name not in self._corpora:
            self._corpora[name] = Corpus(self.corpus_dir(name))
        return self._corpora[name]

    def fingerprint(self, name: str) -> str:
        if name not in self._fingerprints:
            self._fingerprints[name] = corpus_fingerprint(self.corpus_dir(name))
        return self._fingerprints[name]

    def data_section(self) -> dict:
        """``results.json``'s ``data``: each corpus read, with its fingerprint."""
        return {name: {"path": str(self.corpus_dir(name)), "sha256": self.fingerprint(name),
                       "hash_of": FINGERPRINT_WHAT} for name in referenced_corpora(self.cfg)}

    def check_corpora(self) -> None:
        for name in referenced_corpora(self.cfg):
            if not is_corpus(self.corpus_dir(name)):
                raise CremaError(f"corpus {name!r}: {self.corpus_dir(name)} is not a prepared corpus; "
                                 f"run `crema prepare` into it or pass --corpus {name}=DIR")

    def loso_sources(self) -> list[str]:
        """The sources held out in turn (all of the corpus's when the config names none)."""
        loso = self.cfg.leave_source_out
        if loso is None:
            return []
        if loso.sources:
            return list(loso.sources)
        return _distinct_values(self.corpus(loso.corpus), "source")

    # ------------------------------------------------------------------ models

    @property
    def model_config(self) -> ModelConfig:
        return self.cfg.pretrain.model

    def checkpoint_dir(self, encoder: Encoder) -> Path:
        """Where a pretrained encoder's checkpoint is: a given encoder's folder (a shipped model's
        name resolved), else the suite's own pretraining run."""
        if encoder.method in self.cfg.encoders:
            return resolve_model(self.cfg.encoders[encoder.method])
        return self.out / "pretrain" / encoder.name

    def run_config(self, encoder: Encoder) -> RunConfig:
        """The pretraining run of a method at one seed, as ``crema pretrain --config`` reads it."""
        pre = self.cfg.pretrain
        specs = []
        for spec in pre.corpora:
            name, splits = split_spec(spec)
            specs.append(f"{self.corpus_dir(name)}{splits}")
        train = dataclasses.replace(pre.train, corpora=tuple(specs), out=str(self.checkpoint_dir(encoder)),
                                    seed=encoder.pretrain_seed, device=self.cfg.device)
        return RunConfig(model=pre.model, objective=self.cfg.methods[encoder.method], train=train)

    def pretrain_data(self) -> dict[str, str]:
        return {spec: self.fingerprint(split_spec(spec)[0]) for spec in self.cfg.pretrain.corpora}

    def encoder(self, encoder: Encoder) -> tuple[torch.nn.Module, str, dict]:
        """``(module, weights sha256, what to record about it)`` of a pretrained checkpoint or a
        randomly initialised baseline (seeded by its pretraining seed)."""
        if encoder not in self._encoders:
            self._encoders[encoder] = self._load(encoder)
        return self._encoders[encoder]

    def _load(self, encoder: Encoder) -> tuple[torch.nn.Module, str, dict]:
        seed = encoder.pretrain_seed
        if encoder.method == "random_kernels":
            kernels = self.cfg.random_kernels
            module = RandomKernelFeatures(kernels, self.model_config.n_leads, seed=seed).eval()
            return module, module_sha256(module), {"init": "random kernels", "kernels": kernels, "init_seed": seed}
        if encoder.method == "random_sit":
            torch.manual_seed(seed)
            module = SiTEncoder(self.model_config).eval()
            features = self.cfg.probe.features or "mean"
            extra = {"init": "random", "init_seed": seed, **({"features": features} if features != "mean" else {})}
            return readout(module, features), module_sha256(module), extra
        ckpt = self.checkpoint_dir(encoder)
        module, config = load_encoder(ckpt)
        # the suite's read-out, else the checkpoint's own (mean unless it says)
        features = self.cfg.probe.features or embedding_features(config, ckpt)
        extra = {"checkpoint": str(ckpt), "pretrain_step": config.get("step"), "objective": config.get("objective"),
                 "fs": (config.get("preprocess") or {}).get("fs")}
        if features != "mean":
            extra["features"] = features
        return readout(module, features), file_sha256(ckpt / MODEL_FILE), extra

    def encoder_for(self, encoder: Encoder, corpus: Corpus) -> tuple[torch.nn.Module, str, dict]:
        """:meth:`encoder`, refusing a corpus prepared at another rate than the pretraining data."""
        module, weights_sha, extra = self.encoder(encoder)
        check_corpus_rate(extra.get("fs"), corpus.preprocess.fs, encoder.name, corpus.path)
        return module, weights_sha, extra

    def crop_for(self, corpus: Corpus, encoder: Encoder) -> int:
        """Model input length: the SiT window (a given encoder's own), or the whole corpus window
        for random kernels."""
        if encoder.method == "random_kernels":
            return int(corpus.signals.shape[-1])
        given = encoder.method in self.cfg.encoders
        window = self.encoder(encoder)[0].cfg.window if given else self.model_config.window
        return min(window, int(corpus.signals.shape[-1]))

    def finetune_config(self, encoder: Encoder, corpus_name: str, task: str, fraction: float, seed: int,
                        holdout: str | None, out: Path) -> FinetuneConfig:
        """The suite's fine-tuning settings for one run of ``encoder``."""
        settings = self.cfg.finetune
        if not encoder.pretrained:  # LP-FT starts from pretrained features; these have none
            settings = dataclasses.replace(settings, probe_init=False)
        arch: dict[str, Any] = {"arch": "sit", "checkpoint": str(self.checkpoint_dir(encoder))}
        if encoder.method == "supervised_resnet1d":
            arch = {"arch": "resnet1d"}
        elif encoder.method == "supervised_sit":
            arch = {"arch": "sit", "model": to_dict(self.model_config)}
        return dataclasses.replace(settings, corpus=str(self.corpus_dir(corpus_name)), task=task, out=str(out),
                                   fraction=fraction, seed=seed, holdout_source=holdout, device=self.cfg.device,
                                   n_bootstrap=self.cfg.n_bootstrap, **arch)

    # ------------------------------------------------------------------ notes

    def overlap_note(self) -> dict:
        """Records of the evaluation test sets that pretraining also saw (matched on
        ``source_id``; self-supervised, but worth knowing)."""
        if not self.cfg.methods:
            return {}
        specs = [f"{self.corpus(name).path}{splits}" for name, splits in map(split_spec, self.cfg.pretrain.corpora)]
        seen: set[str] = set()
        for corpus, rows in select_rows(specs):  # the rows pretraining really saw, deduplicated
            seen.update(_distinct_values(corpus, "source_id", rows))
        notes = {}
        for t in self.cfg.tasks:
            corpus = self.corpus(t.corpus)
            test = set(_distinct_values(corpus, "source_id", corpus.rows(split="test")))
            notes[f"{t.corpus}:{t.task}:test"] = {"n_test_records": len(test),
                                                  "also_in_pretraining": sorted(test & seen)}
        loso = self.cfg.leave_source_out
        if loso:
            ids = set(_distinct_values(self.corpus(loso.corpus), "source_id"))
            notes[f"{loso.corpus}:{loso.task}:all"] = {"n_records": len(ids), "also_in_pretraining": len(ids & seen)}
        return notes


def _distinct_values(corpus: Corpus, name: str, rows: np.ndarray | None = None) -> list[str]:
    """The distinct values (sorted) of text column ``name`` over ``rows`` (default all), from the
    column's codes: no DataFrame of the index is built."""
    column = corpus.columns.text(name)
    codes = column.codes if rows is None else column.codes[np.asarray(rows, dtype=np.int64)]
    present = np.flatnonzero(np.bincount(codes, minlength=len(column.values)))
    return sorted(column.values[code] for code in present)
