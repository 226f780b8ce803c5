"""``crema evaluate``: the whole evaluation protocol of a pretraining recipe, as resumable steps.

For one recipe (model, objective, pretraining data and schedule) a suite runs, with the same
data and seeds for every method:

* pretraining of each method in ``methods`` (default CREMA with the recipe's lambda, MAE only,
  contrastive only) through :func:`crema.train.pretrain.pretrain`;
* linear probes of every pretrained encoder and of a randomly initialised SiT (``random_sit``),
  at every label fraction and seed, on every task in ``tasks``;
* fine-tuning of every pretrained encoder, and supervised training from scratch of a SiT
  (``supervised_sit``) and of the 1-D ResNet (``supervised_resnet1d``);
* leave-one-source-out on a multi-source corpus (CinC): train on the other sources, test on the
  held-out one (classes absent from it are skipped and named);
* test-time corruptions at graded severities (AUROC vs severity) for probes and fine-tunes.

Each unit of work is a step whose outcome is saved as ``<out>/steps/<step id>.json`` the moment it
finishes; ``--resume`` skips finished steps and continues an interrupted pretraining from its
checkpoint. ``results.json`` (all results so far) is rewritten after every step, so
``crema report OUT`` works at any time. A step that cannot run on the data (e.g. a task without
labelled test rows) is recorded as skipped with the reason and does not stop the suite.

Suite config (JSON; every key is optional except ``tasks`` or ``leave_source_out``; see
``docs/EVALUATION.md`` and ``configs/suite-*.json``)::

    {"name": ..., "corpora": {NAME: DIR}, "pretrain": {"corpora": ["NAME[:splits]"], "model": {...},
     "objective": {...}, "train": {...}}, "methods": {NAME: {objective overrides}},
     "baselines": [...], "seeds": [...], "n_bootstrap": 1000, "device": "auto", "threads": null,
     "probe": {...}, "finetune": {...}, "tasks": [{"corpus", "task", "fractions", "protocols",
     "finetune_fractions"}], "leave_source_out": {"corpus", "task", "sources", "protocols"},
     "corruptions": {"corpus", "task", "names", "severities", "protocols", "seed"}}
"""
from __future__ import annotations

import copy
import json
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..config import (AugmentConfig, ModelConfig, ObjectiveConfig, PretrainConfig, RunConfig, atomic_write_text,
                      from_dict, load_json, read_json_object, save_json, to_dict)
from ..data.corpus import parse_corpus_spec
from ..errors import CremaError
from ..runtime import torch_threads
from ..train.checkpoint import check_corpus_rate

BASELINES = ("random_sit", "random_kernels", "supervised_sit", "supervised_resnet1d")
RANDOM_KERNELS = 2000  # kernels of the training-free baseline (4,000 PPV + max features)
PROTOCOLS = ("probe", "finetune")
RESULTS_EVERY_S = 30.0  # rewrite results.json at most this often while a suite runs (and at the end)

DEFAULTS: dict[str, Any] = {
    "name": "suite",
    "description": "",
    "corpora": {},
    "pretrain": {"corpora": [], "model": {"size": "tiny"}, "objective": {}, "train": {}},
    "methods": {"crema": {"mode": "crema"}, "mae": {"mode": "mae", "lambda_con": 0.0},
                "contrastive": {"mode": "contrastive"}},
    "baselines": list(BASELINES),
    "seeds": [0, 1, 2],
    "n_bootstrap": 1000,
    "device": "auto",
    "threads": None,
    "probe": {"kind": "logistic", "Cs": None, "batch_size": 64},
    "finetune": {},
    "tasks": [],
    "leave_source_out": None,
    "corruptions": None,
}
TASK_DEFAULTS = {"fractions": [0.01, 0.1, 1.0], "protocols": list(PROTOCOLS), "finetune_fractions": None}
LOSO_DEFAULTS = {"sources": None, "protocols": ["probe"], "fraction": 1.0}
CORRUPTION_DEFAULTS = {"names": None, "severities": [0, 1, 2, 3, 4, 5], "protocols": list(PROTOCOLS), "seed": 0}


# ----------------------------------------------------------------------------- config

def _check_keys(where: str, given: dict, allowed: dict) -> None:
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise CremaError(f"suite config: unknown key(s) {unknown} in {where}; known: {sorted(allowed)}")


def load_suite_config(path: str | os.PathLike, corpus_overrides: dict[str, str] | None = None) -> dict:
    """Read a suite config, fill in defaults, apply ``NAME=DIR`` corpus overrides, and check it.

    Raises:
        CremaError: unreadable JSON, unknown keys or names, nothing to evaluate.
    """
    path = Path(path)
    raw = read_json_object(path, "suite config")
    _check_keys("the top level", raw, DEFAULTS)
    cfg = copy.deepcopy(DEFAULTS)
    for key, value in raw.items():
        if key == "pretrain":
            _check_keys("pretrain", value, DEFAULTS["pretrain"])
            cfg["pretrain"].update(value)
        else:
            cfg[key] = value
    cfg["corpora"] = {**cfg["corpora"], **(corpus_overrides or {})}
    cfg["tasks"] = [_with_defaults("a tasks entry", t, TASK_DEFAULTS, ("corpus", "task")) for t in cfg["tasks"]]
    if cfg["leave_source_out"]:
        cfg["leave_source_out"] = _with_defaults("leave_source_out", cfg["leave_source_out"], LOSO_DEFAULTS,
                                                 ("corpus", "task"))
    if cfg["corruptions"]:
        cfg["corruptions"] = _with_defaults("corruptions", cfg["corruptions"], CORRUPTION_DEFAULTS,
                                            ("corpus", "task"))
    unknown = sorted(set(cfg["baselines"]) - set(BASELINES))
    if unknown:
        raise CremaError(f"suite config: unknown baselines {unknown}; choose from {list(BASELINES)}")
    clash = sorted(set(cfg["methods"]) & set(BASELINES))
    if clash:
        raise CremaError(f"suite config: method names {clash} are reserved for baselines")
    if not cfg["tasks"] and not cfg["leave_source_out"]:
        raise CremaError(f"{path}: the suite has no 'tasks' and no 'leave_source_out': nothing to evaluate")
    if cfg["methods"] and not cfg["pretrain"]["corpora"]:
        raise CremaError(f"{path}: 'methods' need pretraining data in pretrain.corpora")
    for name in _referenced_corpora(cfg):
        if name not in cfg["corpora"]:
            raise CremaError(f"suite config: corpus {name!r} is used but not defined in 'corpora' "
                             f"(defined: {sorted(cfg['corpora'])}; add it or pass --corpus {name}=DIR)")
    return cfg


def _with_defaults(where: str, entry: dict, defaults: dict, required: tuple[str, ...]) -> dict:
    _check_keys(where, entry, {**defaults, **{k: None for k in required}})
    missing = [k for k in required if k not in entry]
    if missing:
        raise CremaError(f"suite config: {where} needs {missing}")
    for key in ("protocols",):
        bad = sorted(set(entry.get(key, [])) - set(PROTOCOLS))
        if bad:
            raise CremaError(f"suite config: unknown protocols {bad} in {where}; choose from {list(PROTOCOLS)}")
    return {**copy.deepcopy(defaults), **entry}


def _split_spec(spec: str) -> tuple[str, str]:
    """``"name:train,val"`` -> ``("name", ":train,val")`` by the one corpus-spec rule
    (:func:`crema.data.corpus.parse_corpus_spec`)."""
    name, splits = parse_corpus_spec(spec)
    return str(name), (":" + ",".join(splits) if splits else "")


def _referenced_corpora(cfg: dict) -> list[str]:
    names = [_split_spec(s)[0] for s in cfg["pretrain"]["corpora"]] if cfg["methods"] else []
    names += [t["corpus"] for t in cfg["tasks"]]
    for key in ("leave_source_out", "corruptions"):
        if cfg[key]:
            names.append(cfg[key]["corpus"])
    return sorted(set(names))


# ----------------------------------------------------------------------------- steps

@dataclass
class Step:
    """One unit of work; ``run()`` returns a JSON-ready dict with at least ``results`` (a list)."""

    id: str
    kind: str
    run: Callable[[], dict]


def _safe(step_id: str) -> str:
    return step_id.replace(":", "_")


class Suite:
    """A suite run in ``out`` (see the module docstring)."""

    def __init__(self, cfg: dict, out: str | os.PathLike, progress: bool = True):
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        self._corpora: dict[str, Any] = {}
        self._fingerprints: dict[str, str] = {}
        self._encoders: dict[str, tuple] = {}

    # ------------------------------------------------------------------ data

    def corpus_dir(self, name: str) -> Path:
        return Path(self.cfg["corpora"][name])

    def corpus(self, name: str):
        from ..data.corpus import Corpus

        if name not in self._corpora:
            self._corpora[name] = Corpus(self.corpus_dir(name))
        return self._corpora[name]

    def fingerprint(self, name: str) -> str:
        from .features import corpus_fingerprint

        if name not in self._fingerprints:
            self._fingerprints[name] = corpus_fingerprint(self.corpus_dir(name))
        return self._fingerprints[name]

    def data_section(self) -> dict:
        from .features import FINGERPRINT_WHAT

        return {name: {"path": str(self.corpus_dir(name)), "sha256": self.fingerprint(name),
                       "hash_of": FINGERPRINT_WHAT} for name in _referenced_corpora(self.cfg)}

    def check_corpora(self) -> None:
        from ..data.corpus import is_corpus

        for name in _referenced_corpora(self.cfg):
            if not is_corpus(self.corpus_dir(name)):
                raise CremaError(f"corpus {name!r}: {self.corpus_dir(name)} is not a prepared corpus; "
                                 f"run `crema prepare` into it or pass --corpus {name}=DIR")

    # ------------------------------------------------------------------ models

    def model_config(self) -> ModelConfig:
        model = dict(self.cfg["pretrain"]["model"])
        size = model.pop("size", "tiny")
        try:
            return ModelConfig.from_size(size, **model)
        except (TypeError, ValueError) as exc:
            raise CremaError(f"suite config: bad pretrain.model ({exc})") from exc

    def run_config(self, method: str) -> RunConfig:
        pre = self.cfg["pretrain"]
        specs = []
        for spec in pre["corpora"]:
            name, splits = _split_spec(spec)
            specs.append(f"{self.corpus_dir(name)}{splits}")
        try:
            objective = ObjectiveConfig(**{**pre["objective"], **self.cfg["methods"][method]})
            train = PretrainConfig(**{"device": self.cfg["device"], **pre["train"], "corpora": tuple(specs),
                                      "out": str(self.out / "pretrain" / method)})
        except TypeError as exc:
            raise CremaError(f"suite config: bad pretraining settings for {method!r} ({exc})") from exc
        return RunConfig(model=self.model_config(), objective=objective, train=train)

    def checkpoint_dir(self, method: str) -> Path:
        return self.out / "pretrain" / method

    def encoder(self, method: str):
        """``(encoder, weights sha256, extra config)`` of a pretrained method or ``random_sit``."""
        import torch

        from ..model.sit import SiTEncoder
        from ..train.checkpoint import MODEL_FILE, load_encoder
        from .features import file_sha256, module_sha256

        if method not in self._encoders:
            if method == "random_kernels":
                from .rocket import RandomKernelFeatures

                seed = int(self.cfg["pretrain"]["train"].get("seed", 0))
                enc = RandomKernelFeatures(RANDOM_KERNELS, self.model_config().n_leads, seed=seed).eval()
                self._encoders[method] = (enc, module_sha256(enc), {"init": "random kernels",
                                                                    "kernels": RANDOM_KERNELS, "init_seed": seed})
            elif method == "random_sit":
                seed = int(self.cfg["pretrain"]["train"].get("seed", 0))
                torch.manual_seed(seed)
                enc = SiTEncoder(self.model_config()).eval()
                self._encoders[method] = (enc, module_sha256(enc), {"init": "random", "init_seed": seed})
            else:
                ckpt = self.checkpoint_dir(method)
                enc, config = load_encoder(ckpt)
                self._encoders[method] = (enc, file_sha256(ckpt / MODEL_FILE),
                                          {"checkpoint": str(ckpt), "pretrain_step": config.get("step"),
                                           "objective": config.get("objective"),
                                           "fs": (config.get("preprocess") or {}).get("fs")})
        return self._encoders[method]

    def encoder_for(self, method: str, corpus):
        """:meth:`encoder`, refusing a corpus prepared at another rate than the pretraining data."""
        encoder, weights_sha, extra = self.encoder(method)
        check_corpus_rate(extra.get("fs"), corpus.preprocess.fs, method, corpus.path)
        return encoder, weights_sha, extra

    def crop_for(self, corpus, method: str | None = None) -> int:
        """Model input length: the SiT window, or the whole corpus window for random kernels."""
        if method == "random_kernels":
            return int(corpus.signals.shape[-1])
        return min(self.model_config().window, int(corpus.signals.shape[-1]))

    # ------------------------------------------------------------------ step builders

    def probe_methods(self) -> list[str]:
        frozen = [b for b in ("random_sit", "random_kernels") if b in self.cfg["baselines"]]
        return list(self.cfg["methods"]) + frozen

    def finetune_methods(self) -> list[str]:
        extra = [b for b in ("supervised_sit", "supervised_resnet1d") if b in self.cfg["baselines"]]
        return list(self.cfg["methods"]) + extra

    def steps(self) -> list[Step]:
        cfg = self.cfg
        steps = [Step(f"pretrain/{m}", "pretrain", lambda m=m: self.pretrain_step(m)) for m in cfg["methods"]]
        seed0 = cfg["seeds"][0]
        for t in cfg["tasks"]:
            if "probe" in t["protocols"]:
                steps += [Step(f"probe/{m}/{t['task']}", "probe",
                               lambda m=m, t=t: self.probe_step(m, t["corpus"], t["task"], t["fractions"]))
                          for m in self.probe_methods()]
            if "finetune" in t["protocols"]:
                fractions = t["finetune_fractions"] or t["fractions"]
                steps += [Step(self.finetune_id(m, t["task"], f, s), "finetune",
                               lambda m=m, t=t, f=f, s=s: self.finetune_step(m, t["corpus"], t["task"], f, s))
                          for m in self.finetune_methods() for f in fractions for s in cfg["seeds"]]
        loso = cfg["leave_source_out"]
        if loso:
            for source in self.loso_sources(loso):
                if "probe" in loso["protocols"]:
                    steps += [Step(f"probe/{m}/{loso['task']}/holdout-{source}", "probe",
                                   lambda m=m, src=source: self.probe_step(
                                       m, loso["corpus"], loso["task"], [loso["fraction"]], holdout=src))
                              for m in self.probe_methods()]
                if "finetune" in loso["protocols"]:
                    steps += [Step(self.finetune_id(m, loso["task"], loso["fraction"], s, source), "finetune",
                                   lambda m=m, s=s, src=source: self.finetune_step(
                                       m, loso["corpus"], loso["task"], loso["fraction"], s, holdout=src))
                              for m in self.finetune_methods() for s in cfg["seeds"]]
        cor = cfg["corruptions"]
        if cor:
            if "probe" in cor["protocols"]:
                steps += [Step(f"corruptions/probe/{m}/{cor['task']}", "corruptions",
                               lambda m=m: self.probe_corruption_step(m, cor)) for m in self.probe_methods()]
            if "finetune" in cor["protocols"]:
                for m in self.finetune_methods():
                    dep = self.finetune_id(m, cor["task"], 1.0, seed0)
                    if not any(s.id == dep for s in steps):
                        steps.append(Step(dep, "finetune", lambda m=m: self.finetune_step(
                            m, cor["corpus"], cor["task"], 1.0, seed0)))
                    steps.append(Step(f"corruptions/finetune/{m}/{cor['task']}", "corruptions",
                                      lambda m=m, dep=dep: self.finetune_corruption_step(m, cor, dep)))
        return steps

    def loso_sources(self, loso: dict) -> list[str]:
        if loso["sources"]:
            return list(loso["sources"])
        return sorted(set(self.corpus(loso["corpus"]).index["source"].astype(str)))

    @staticmethod
    def finetune_id(method: str, task: str, fraction: float, seed: int, holdout: str | None = None) -> str:
        where = f"holdout-{holdout}" if holdout else f"f{fraction:g}"
        return f"finetune/{method}/{task}/{where}/s{seed}"

    # ------------------------------------------------------------------ step bodies

    def pretrain_step(self, method: str) -> dict:
        from ..train.checkpoint import MODEL_FILE, STATE_FILE
        from ..train.pretrain import pretrain
        from .features import file_sha256

        run_cfg = self.run_config(method)
        out = self.checkpoint_dir(method)
        resume = (out / STATE_FILE).is_file()
        result = pretrain(run_cfg, resume=resume, progress=self.progress)
        if result.interrupted_by:
            raise KeyboardInterrupt(f"pretraining {method} stopped by signal {result.interrupted_by}")
        return {"results": [], "checkpoint": str(out), "pretrain_step": result.step, "resumed": resume,
                "last_log": result.last_log, "weights_sha256": file_sha256(out / MODEL_FILE),
                "pretrain_data": {spec: self.fingerprint(_split_spec(spec)[0]) for spec in self.cfg["pretrain"]["corpora"]},
                "run_config": to_dict(run_cfg)}

    def _base_config(self, method: str, extra: dict) -> dict:
        return {"suite": self.cfg["name"], "method": method, **extra}

    def probe_step(self, method: str, corpus_name: str, task: str, fractions: list[float],
                   holdout: str | None = None) -> dict:
        from .probe import probe_experiment, probe_features, task_split

        corpus = self.corpus(corpus_name)
        split = task_split(corpus, task, holdout)
        encoder, weights_sha, extra = self.encoder_for(method, corpus)
        pcfg = self.cfg["probe"]
        feats = probe_features(encoder, corpus, split, self.crop_for(corpus, method), self.out / "cache" / "features",
                               weights_sha, self.fingerprint(corpus_name), batch_size=pcfg.get("batch_size", 64),
                               device=self.cfg["device"], progress=self.progress)
        step = f"probe/{method}/{task}" + (f"/holdout-{holdout}" if holdout else "")
        results = probe_experiment(
            feats, fractions, self.cfg["seeds"], method=method, data_sha256=self.fingerprint(corpus_name),
            config=self._base_config(method, {**extra, "weights_sha256": weights_sha, "corpus": corpus_name}),
            kind=pcfg.get("kind", "logistic"), n_bootstrap=self.cfg["n_bootstrap"], step_prefix=step,
            progress=self.progress, **self._probe_kwargs())
        return {"results": results, "sizes": split.sizes()}

    def _probe_kwargs(self) -> dict:
        pcfg = self.cfg["probe"]
        if pcfg.get("kind", "logistic") == "logistic" and pcfg.get("Cs"):
            return {"Cs": tuple(pcfg["Cs"])}
        return {}

    def finetune_config(self, method: str, corpus_name: str, task: str, fraction: float, seed: int,
                        holdout: str | None, out: Path):
        from ..model.resnet1d import ResNet1dConfig
        from ..train.finetune import FinetuneConfig

        settings = dict(self.cfg["finetune"])
        resnet = from_dict(ResNet1dConfig, settings.pop("resnet", {}))
        augment = from_dict(AugmentConfig, settings.pop("augment", {}))
        common = dict(corpus=str(self.corpus_dir(corpus_name)), task=task, out=str(out), fraction=fraction,
                      seed=seed, holdout_source=holdout, device=self.cfg["device"],
                      n_bootstrap=self.cfg["n_bootstrap"], resnet=resnet, augment=augment)
        if method in ("supervised_resnet1d", "supervised_sit"):
            settings.pop("probe_init", None)  # LP-FT starts from pretrained features; these have none
        if method == "supervised_resnet1d":
            common.update(arch="resnet1d")
        elif method == "supervised_sit":
            common.update(arch="sit", model=to_dict(self.model_config()))
        else:
            common.update(arch="sit", checkpoint=str(self.checkpoint_dir(method)))
        try:
            return FinetuneConfig(**{**settings, **common})
        except TypeError as exc:
            raise CremaError(f"suite config: bad finetune settings ({exc})") from exc

    def finetune_step(self, method: str, corpus_name: str, task: str, fraction: float, seed: int,
                      holdout: str | None = None) -> dict:
        from .finetune import finetune

        step_id = self.finetune_id(method, task, fraction, seed, holdout)
        out = self.out / _safe(step_id)
        cfg = self.finetune_config(method, corpus_name, task, fraction, seed, holdout, out)
        summary = finetune(cfg, progress=self.progress, method=method)
        result = summary["result"]
        result["step"] = step_id
        result["config"] = self._base_config(method, {"finetune": result["config"]})
        return {"results": [result], "checkpoint": str(out), "best_epoch": summary["best_epoch"],
                "epochs_run": summary["epochs_run"], "n_train": summary["n_train"]}

    def _corruption_results(self, method: str, protocol: str, task: str, corpus_name: str, curve: list[dict],
                            step: str, config: dict, n_train: int | None, test_rows_sha: str) -> list[dict]:
        from .report import make_result

        return [make_result(
            step=step, method=method, protocol=protocol, task=task, experiment="corruption",
            seed=self.cfg["seeds"][0], evaluation=c["evaluation"], config={**config, "level": c["level"]},
            data_sha256=self.fingerprint(corpus_name), test_rows_sha256=test_rows_sha, n_train=n_train,
            corruption=c["corruption"], severity=c["severity"], fraction=1.0) for c in curve]

    def probe_corruption_step(self, method: str, cor: dict) -> dict:
        from .features import rows_sha256
        from .probe import fit_probe_on_fraction, probe_features, task_split
        from .robustness import DEFAULT_CORRUPTIONS, probe_severity_curve

        corpus = self.corpus(cor["corpus"])
        split = task_split(corpus, cor["task"])
        encoder, weights_sha, extra = self.encoder_for(method, corpus)
        cache = self.out / "cache" / "features"
        crop = self.crop_for(corpus, method)
        feats = probe_features(encoder, corpus, split, crop, cache, weights_sha, self.fingerprint(cor["corpus"]),
                               device=self.cfg["device"], progress=self.progress)
        kind = self.cfg["probe"].get("kind", "logistic")
        probe, info = fit_probe_on_fraction(feats, 1.0, self.cfg["seeds"][0], kind, **self._probe_kwargs())
        curve = probe_severity_curve(encoder, probe, feats, corpus, crop, cor["names"] or DEFAULT_CORRUPTIONS,
                                     cor["severities"], cor["seed"], cache, weights_sha,
                                     self.fingerprint(cor["corpus"]), device=self.cfg["device"],
                                     n_bootstrap=self.cfg["n_bootstrap"])
        step = f"corruptions/probe/{method}/{cor['task']}"
        config = self._base_config(method, {**extra, "probe": kind, "corruption_seed": cor["seed"]})
        return {"results": self._corruption_results(method, "probe", cor["task"], cor["corpus"], curve, step, config,
                                                    info["n_train"], rows_sha256(split.rows["test"]))}

    def finetune_corruption_step(self, method: str, cor: dict, dep: str) -> dict:
        from ..train.finetune import load_classifier
        from .features import rows_sha256
        from .probe import task_split
        from .robustness import DEFAULT_CORRUPTIONS, classifier_severity_curve

        ckpt = self.out / _safe(dep)
        model, config = load_classifier(ckpt)
        corpus = self.corpus(cor["corpus"])
        split = task_split(corpus, cor["task"])
        curve = classifier_severity_curve(model, split, corpus, config.get("crop"), np.asarray(config["thresholds"]),
                                          cor["names"] or DEFAULT_CORRUPTIONS, cor["severities"], cor["seed"],
                                          device=self.cfg["device"], n_bootstrap=self.cfg["n_bootstrap"])
        step = f"corruptions/finetune/{method}/{cor['task']}"
        extra = {"classifier": str(ckpt), "corruption_seed": cor["seed"]}
        return {"results": self._corruption_results(method, "finetune", cor["task"], cor["corpus"], curve, step,
                                                    self._base_config(method, extra), None,
                                                    rows_sha256(split.rows["test"]))}

    # ------------------------------------------------------------------ bookkeeping

    def step_file(self, step_id: str) -> Path:
        return self.out / "steps" / f"{_safe(step_id)}.json"

    def overlap_note(self) -> dict:
        """Records of the evaluation test sets that pretraining also saw (matched on
        ``source_id``; self-supervised, but worth knowing)."""
        if not self.cfg["methods"]:
            return {}
        from ..data.dataset import select_rows

        specs = []
        for spec in self.cfg["pretrain"]["corpora"]:
            name, splits = _split_spec(spec)
            specs.append(f"{self.corpus(name).path}{splits}")
        seen: set[str] = set()
        for corpus, rows in select_rows(specs):  # the rows pretraining really saw, deduplicated
            seen.update(corpus.index["source_id"].astype(str).to_numpy()[rows].tolist())
        notes = {}
        entries = [(t["corpus"], t["task"], None) for t in self.cfg["tasks"]]
        loso = self.cfg["leave_source_out"]
        for corpus_name, task, _ in entries:
            corpus = self.corpus(corpus_name)
            test = corpus.index["source_id"].astype(str).to_numpy()[corpus.rows(split="test")]
            both = sorted(set(test) & seen)
            notes[f"{corpus_name}:{task}:test"] = {"n_test_records": int(len(set(test))),
                                                   "also_in_pretraining": both}
        if loso:
            corpus = self.corpus(loso["corpus"])
            ids = set(corpus.index["source_id"].astype(str))
            notes[f"{loso['corpus']}:{loso['task']}:all"] = {"n_records": len(ids),
                                                             "also_in_pretraining": len(ids & seen)}
        return notes

    def collect(self, steps: list[Step]) -> tuple[list[dict], list[dict]]:
        results, status = [], []
        for step in steps:
            path = self.step_file(step.id)
            if path.is_file():
                record = load_json(path)
                results += record.get("results", [])
                status.append({"step": step.id, "status": record["status"], "seconds": record.get("seconds"),
                               **({"reason": record["reason"]} if "reason" in record else {})})
            else:
                status.append({"step": step.id, "status": "pending"})
        return results, status

    def write_results(self, steps: list[Step]) -> Path:
        from .report import write_results

        results, status = self.collect(steps)
        write_results(self.out / "results.json", results, self.data_section(),
                      {"suite": self.cfg, "steps": status, "pretraining_overlap": self.overlap_note()})
        return self.out / "results.json"

    def run(self, resume: bool = False) -> dict:
        """Run every pending step; returns ``{"done", "skipped", "ran", "seconds"}`` counts."""
        from tqdm.auto import tqdm

        self.check_corpora()
        steps_dir = self.out / "steps"
        if steps_dir.is_dir() and any(steps_dir.iterdir()) and not resume:
            raise CremaError(f"{self.out} already holds suite results; pass --resume to continue it "
                             "or choose another --out")
        saved = self.out / "suite.json"
        if resume and saved.is_file() and _identity(load_json(saved)) != _identity(self.cfg):
            raise CremaError(f"{self.out}: the suite config differs from the one this run started with "
                             f"({saved}); resume with the same config or choose another --out")
        save_json(saved, self.cfg)
        steps = self.steps()
        ids = [s.id for s in steps]
        if len(set(ids)) != len(ids):
            raise CremaError("suite config: two steps have the same id (a task listed twice?)")
        counts = {"ran": 0, "skipped": 0, "already_done": 0}
        started = last_write = time.perf_counter()
        bar = tqdm(steps, desc=f"suite {self.cfg['name']}", unit="step", disable=not self.progress)
        try:
            for step in bar:
                if self.step_file(step.id).is_file():
                    counts["already_done"] += 1
                    continue
                bar.set_postfix_str(step.id)
                counts[self.run_step(step)] += 1
                if time.perf_counter() - last_write > RESULTS_EVERY_S:
                    self.write_results(steps)
                    last_write = time.perf_counter()
        finally:  # also when interrupted: results.json shows every finished step
            self.write_results(steps)
        return {**counts, "steps": len(steps), "seconds": round(time.perf_counter() - started, 3)}

    def run_step(self, step: Step) -> str:
        """Run one step and save its record; returns ``"ran"`` or ``"skipped"``."""
        t0 = time.perf_counter()
        try:
            record, outcome = {"status": "done", **step.run()}, "ran"
        except CremaError as exc:  # the data cannot support this step: record why, go on
            record = {"status": "skipped", "reason": str(exc), "results": [],
                      "traceback": traceback.format_exc(limit=3)}
            outcome = "skipped"
        record.update(step=step.id, kind=step.kind, seconds=round(time.perf_counter() - t0, 3))
        # compact: the results inside carry 1000 bootstrap replicates each
        atomic_write_text(self.step_file(step.id), json.dumps(record, separators=(",", ":")) + "\n")
        return outcome


def _identity(cfg: dict) -> dict:
    """What must not change between a run and its resumption: everything but where the corpora
    live (their contents are fingerprinted) and the device."""
    return {k: v for k, v in json.loads(json.dumps(cfg)).items() if k not in ("corpora", "device", "threads")}


def run_suite(config_path: str | os.PathLike, out: str | os.PathLike, resume: bool = False,
              corpus_overrides: dict[str, str] | None = None, progress: bool = True,
              device: str | None = None, threads: int | None = None) -> dict:
    """Load a suite config and run it into ``out`` (see :class:`Suite`)."""
    cfg = load_suite_config(config_path, corpus_overrides)
    if device:
        cfg["device"] = device
    if threads:
        cfg["threads"] = threads
    with torch_threads(cfg["threads"]):
        return Suite(cfg, out, progress).run(resume=resume)

