"""What each kind of suite step does: ``run_step(workspace, step)`` returns the step's record,
a JSON-ready dict with at least ``results`` (a list of ``results.json`` entries)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ...config_io import to_dict
from ...model.checkpoint import MODEL_FILE, STATE_FILE
from ...train.finetune import load_classifier
from ...train.pretrain import pretrain
from ..features import file_sha256, rows_sha256
from ..finetune import finetune
from ..probe import fit_probe_on_fraction, probe_experiment, probe_features
from ..splits import task_split
from ..results import ResultRecord
from ..robustness import DEFAULT_CORRUPTIONS, Inference, SeverityGrid, classifier_severity_curve, probe_severity_curve
from .plan import Encoder, Finetune, FinetuneCorruption, Pretrain, Probe, ProbeCorruption, Step
from .workspace import Workspace


def step_folder(ws: Workspace, step: Step) -> Path:
    """Where a step writes files of its own (a fine-tune's classifier checkpoint)."""
    return ws.out / step.id.replace(":", "_")


def _config(ws: Workspace, encoder: Encoder, extra: dict) -> dict:
    """The ``config`` of a result: the suite, the method and its pretraining seed, and ``extra``."""
    return {"suite": ws.cfg.name, "method": encoder.method, "pretrain_seed": encoder.pretrain_seed, **extra}


def _probe_options(ws: Workspace) -> dict:
    probe = ws.cfg.probe
    if probe.kind != "logistic":
        return {}
    return {**({"Cs": tuple(probe.Cs)} if probe.Cs else {}), **({"select_c": "cv"} if probe.select_c == "cv" else {})}


def run_pretrain(ws: Workspace, step: Pretrain) -> dict:
    run_cfg = ws.run_config(step.encoder)
    out = ws.checkpoint_dir(step.encoder)
    resume = (out / STATE_FILE).is_file()
    result = pretrain(run_cfg, resume=resume, progress=ws.progress)
    if result.interrupted_by:
        raise KeyboardInterrupt(f"pretraining {step.encoder.name} stopped by signal {result.interrupted_by}")
    return {"results": [], "checkpoint": str(out), "pretrain_step": result.step, "resumed": resume,
            "last_log": result.last_log, "weights_sha256": file_sha256(out / MODEL_FILE),
            "pretrain_data": ws.pretrain_data(), "run_config": to_dict(run_cfg)}


def _features(ws: Workspace, encoder: Encoder, corpus_name: str, split):
    """Cached frozen features of every row of ``split``, and what identifies the encoder."""
    corpus = ws.corpus(corpus_name)
    module, weights_sha, extra = ws.encoder_for(encoder, corpus)
    feats = probe_features(module, corpus, split, ws.crop_for(corpus, encoder), ws.out / "cache" / "features",
                           weights_sha, ws.fingerprint(corpus_name), batch_size=ws.cfg.probe.batch_size,
                           device=ws.cfg.device, progress=ws.progress)
    return feats, module, weights_sha, extra


def run_probe(ws: Workspace, step: Probe) -> dict:
    split = task_split(ws.corpus(step.corpus), step.task, step.holdout)
    feats, _, weights_sha, extra = _features(ws, step.encoder, step.corpus, split)
    results = probe_experiment(
        feats, step.fractions, ws.cfg.seeds, method=step.encoder.method, data_sha256=ws.fingerprint(step.corpus),
        config=_config(ws, step.encoder, {**extra, "weights_sha256": weights_sha, "corpus": step.corpus}),
        kind=ws.cfg.probe.kind, n_bootstrap=ws.cfg.n_bootstrap, step_prefix=step.id, progress=ws.progress,
        **_probe_options(ws))
    return {"results": results, "sizes": split.sizes()}


def run_finetune(ws: Workspace, step: Finetune) -> dict:
    out = step_folder(ws, step)
    cfg = ws.finetune_config(step.encoder, step.corpus, step.task, step.fraction, step.seed, step.holdout, out)
    summary = finetune(cfg, progress=ws.progress, method=step.encoder.method)
    result = summary["result"]
    result["step"] = step.id
    result["config"] = _config(ws, step.encoder, {"finetune": result["config"]})
    return {"results": [result], "checkpoint": str(out), "best_epoch": summary["best_epoch"],
            "epochs_run": summary["epochs_run"], "n_train": summary["n_train"]}


def _grid(ws: Workspace) -> SeverityGrid:
    cor = ws.cfg.corruptions
    return SeverityGrid(tuple(cor.names or DEFAULT_CORRUPTIONS), tuple(cor.severities), cor.seed, ws.cfg.n_bootstrap)


def _curve_results(ws: Workspace, step: Step, encoder: Encoder, protocol: str, curve: list[dict], config: dict,
                   n_train: int | None, test_rows_sha: str) -> list[dict]:
    cor = ws.cfg.corruptions
    return [ResultRecord.from_evaluation(
        step=step.id, method=encoder.method, protocol=protocol, task=cor.task, experiment="corruption",
        seed=ws.cfg.seeds[0], evaluation=c["evaluation"], config={**config, "level": c["level"]},
        data_sha256=ws.fingerprint(cor.corpus), test_rows_sha256=test_rows_sha, n_train=n_train,
        corruption=c["corruption"], severity=c["severity"], fraction=1.0).to_dict() for c in curve]


def run_probe_corruption(ws: Workspace, step: ProbeCorruption) -> dict:
    corpus = ws.corpus(step.corpus)
    split = task_split(corpus, step.task)
    feats, module, weights_sha, extra = _features(ws, step.encoder, step.corpus, split)
    probe, info = fit_probe_on_fraction(feats, 1.0, ws.cfg.seeds[0], ws.cfg.probe.kind, **_probe_options(ws))
    run = Inference(ws.crop_for(corpus, step.encoder), ws.cfg.probe.batch_size, ws.cfg.device, False,
                    ws.out / "cache" / "features", weights_sha, ws.fingerprint(step.corpus))
    curve = probe_severity_curve(module, probe, feats, corpus, _grid(ws), run)
    config = _config(ws, step.encoder, {**extra, "probe": ws.cfg.probe.kind, "corruption_seed": _grid(ws).seed})
    return {"results": _curve_results(ws, step, step.encoder, "probe", curve, config, info["n_train"],
                                      rows_sha256(split.rows["test"]))}


def run_finetune_corruption(ws: Workspace, step: FinetuneCorruption) -> dict:
    ckpt = step_folder(ws, step.after)
    model, config = load_classifier(ckpt)
    corpus = ws.corpus(step.after.corpus)
    split = task_split(corpus, step.after.task)
    run = Inference(config.get("crop"), device=ws.cfg.device)
    curve = classifier_severity_curve(model, split, corpus, np.asarray(config["thresholds"]), _grid(ws), run)
    extra = {"classifier": str(ckpt), "corruption_seed": _grid(ws).seed}
    return {"results": _curve_results(ws, step, step.after.encoder, "finetune", curve,
                                      _config(ws, step.after.encoder, extra), None, rows_sha256(split.rows["test"]))}


RUNNERS = {Pretrain: run_pretrain, Probe: run_probe, Finetune: run_finetune, ProbeCorruption: run_probe_corruption,
           FinetuneCorruption: run_finetune_corruption}


def run_step(ws: Workspace, step: Step) -> dict:
    """Run one step; every result it returns carries the pretraining seed of its encoder."""
    record = RUNNERS[type(step)](ws, step)
    encoder = step.after.encoder if isinstance(step, FinetuneCorruption) else step.encoder
    for result in record["results"]:
        result["pretrain_seed"] = encoder.pretrain_seed
    return record
