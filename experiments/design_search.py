"""The design search: which contrastive regulariser makes CREMA learn?

Every variant is a set of config-field overrides on one base recipe (the pretraining recipe of
``configs/suite-shared.json``: width 64, 4 blocks, 5 s crops, 1,200 steps of 32 ECGs); the
variants and the run config of one (variant, seed) are in ``lab.py``. Each (variant, seed)
pretrains, embeds PTB-XL and CinC once, and is probed.

Stages (one process pool; several small runs share one GPU, or run one at a time on a CPU):

``screen``   every variant x seed; the selection metric is the **validation fold 9** macro AUROC
             of a logistic probe trained on folds 1-8 (the library's validation-fold protocol,
             ``crema.eval.selection.validation_probe``: C chosen by leave-one-fold-out over the
             training folds, so fold 9 is never used to tune the probe), at 100% and 10% of the
             labels.
``final``    the best CREMA variant by mean validation AUROC, plain MAE and random init, with the
             same seeds: the library protocol (C on fold 9, test fold 10) at 1/10/100% labels and
             CinC leave-one-source-out; per-record test scores are saved for paired bootstraps.
``release``  (optional) the winner at ``tiny`` size for as many steps as the time budget allows.

Usage (corpora prepared as in ``configs/suite-shared.json``)::

    python experiments/design_search.py run --corpora runs/corpora --out runs/search \
        --seeds 0 1 2 --jobs 2 --variants mae crema_disjoint ...
    python experiments/design_search.py summarise runs/search

``pack``/``unpack`` turn the prepared corpora into a compact archive (int16 at 1/256 of a z-score
unit, second differences, lzma) so that they travel to a GPU machine in a few tens of MB.
"""
from __future__ import annotations

import argparse
import json
import lzma
import shutil
import sys
import time
import traceback
from pathlib import Path

import numpy as np

from lab import VARIANTS, run_config

CORPORA = ("ptbxl", "cinc", "unlabeled")
CORPUS_META = ("index.csv", "lead_mask.npy", "classes.json", "preprocess.json", "prepare_report.json")
PACK_SCALE = 256.0

# The release size: the ``tiny`` preset with the recipe's 5 s windows.
RELEASE_MODEL = {"size": "tiny", "dim": 192, "depth": 6, "heads": 3, "stem_channels": 32, "drop_path": 0.1,
                 "decoder_dim": 128, "decoder_depth": 2, "decoder_heads": 4, "projector_hidden": 512,
                 "projector_dim": 128}


# ----------------------------------------------------------------------------- features

def _feature_module(encoder):
    """``(B, C, T) -> (B, D + C*D)``: the encoder's pooled representation and, beside it, the
    per-lead mean of its tokens (each LayerNormed): a screen of the representation itself."""
    import torch
    from torch import nn

    class Both(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = encoder

        def forward(self, x, lead_mask=None):
            tokens = self.encoder.forward_tokens(x, lead_mask=lead_mask)               # (B, C*N, D)
            pooled = self.encoder.pool(tokens, lead_mask)
            b, l, d = tokens.shape
            c = self.encoder.n_leads
            per_lead = self.encoder.norm(tokens[:, -c * (l // c):].reshape(b, c, -1, d).mean(2))
            return torch.cat([pooled, per_lead.reshape(b, c * d)], dim=1)

    return Both()


def embed_corpora(encoder, corpora: Path, crop: int | None, device: str) -> dict[str, np.ndarray]:
    """Features of every row of the labelled corpora: ``{"ptbxl": (n, F), "cinc": (n, F)}``."""
    from crema.data.corpus import Corpus
    from crema.eval.features import apply_model
    from crema.model.sit import SiTEncoder

    module = _feature_module(encoder) if isinstance(encoder, SiTEncoder) else encoder
    out = {}
    for name in ("ptbxl", "cinc"):
        corpus = Corpus(corpora / name)
        out[name] = apply_model(module, corpus, np.arange(len(corpus)), crop=crop, batch_size=128,
                                device=device, progress=False)
    return out


# ----------------------------------------------------------------------------- probes

def screen_scores(features: np.ndarray, corpora: Path, dims: dict[str, slice]) -> dict:
    """Validation-fold macro AUROC at 100% and 10% labels (mean of 3 subsets), per feature kind,
    by the library's validation-fold protocol (:func:`crema.eval.selection.validation_probe`: C
    chosen by leave-one-fold-out over folds 1-8, on each label subset; fold 10 is never read)."""
    from crema.data.corpus import Corpus
    from crema.eval.splits import task_split
    from crema.eval.selection import validation_probe

    corpus = Corpus(corpora / "ptbxl")
    split = task_split(corpus, "ptbxl-superdiagnostic")
    rows = np.concatenate([split.rows["train"], split.rows["val"]])
    y = np.concatenate([split.y["train"], split.y["val"]])
    groups = np.concatenate([split.keys["train"], split.keys["val"]])
    folds = corpus.index["fold"].to_numpy()[rows]
    result = {}
    for kind, sl in dims.items():
        x = features[rows, sl]
        full = validation_probe(x, y, folds, n_bootstrap=0)
        tenth = [validation_probe(x, y, folds, fraction=0.1, seed=s, groups=groups, n_bootstrap=0).val_auroc
                 for s in range(3)]
        result[kind] = {"val_f1.0": full.val_auroc, "val_f0.1": float(np.mean(tenth)),
                        "C_f1.0": full.C, "cv_f1.0": full.cv_auroc}
    return result


def final_scores(features: dict[str, np.ndarray], corpora: Path, dims: dict[str, slice]) -> dict:
    """The library protocol on the test fold (1/10/100% labels, subsets seeded 0-2) and CinC
    leave-one-source-out (100%), with per-record test scores for paired comparisons."""
    from crema.data.corpus import Corpus
    from crema.eval import metrics
    from crema.eval.probe import ProbeFeatures, fit_probe_on_fraction, seeds_for
    from crema.eval.splits import task_split

    out = {}
    for kind, sl in dims.items():
        res = {}
        corpus = Corpus(corpora / "ptbxl")
        split = task_split(corpus, "ptbxl-superdiagnostic")
        x = features["ptbxl"][:, sl]
        feats = ProbeFeatures(split, {p: x[r] for p, r in split.rows.items()})
        for fraction in (0.01, 0.1, 1.0):
            for seed in seeds_for(fraction, [0, 1, 2], "logistic"):
                probe, _ = fit_probe_on_fraction(feats, fraction, seed)
                y, scores = split.record_level(probe.predict_proba(feats.x["test"]), "test")
                res[f"test/f{fraction:g}/s{seed}"] = {
                    "auroc": float(metrics.auroc(y, scores).macro),
                    "scores": scores.round(5).tolist()}
        cinc = Corpus(corpora / "cinc")
        xc = features["cinc"][:, sl]
        for source in sorted(set(cinc.index["source"].astype(str))):
            try:
                s_split = task_split(cinc, "cinc-scored", holdout_source=source)
            except Exception as exc:  # a source without labelled rows: recorded, not fatal
                res[f"loso/{source}"] = {"skipped": str(exc)}
                continue
            s_feats = ProbeFeatures(s_split, {p: xc[r] for p, r in s_split.rows.items()})
            probe, _ = fit_probe_on_fraction(s_feats, 1.0, 0)
            y, scores = s_split.record_level(probe.predict_proba(s_feats.x["test"]), "test")
            res[f"loso/{source}"] = {"auroc": float(metrics.auroc(y, scores).macro)}
        out[kind] = res
    return out


# ----------------------------------------------------------------------------- one job

def score_checkpoint(model: Path, name: str, seed: int, corpora: Path, out: Path) -> dict:
    """Embed and probe an already trained checkpoint (e.g. a release-length run) with the same
    screen (fold 9) and final (fold 10, CinC LOSO) protocol as the search; appends one record."""
    import torch

    from crema.model.checkpoint import load_encoder

    torch.set_num_threads(1)
    encoder, config = load_encoder(model)
    features = embed_corpora(encoder, corpora, config["model"]["window"], "cpu")
    d = config["model"]["dim"]
    dims = {"pooled": slice(0, d), "leads": slice(d, None)}
    record = {"variant": name, "seed": seed, "stage": "checkpoint", "model": str(model),
              "steps": config["train"]["steps"], "screen": screen_scores(features["ptbxl"], corpora, dims),
              "final": final_scores(features, corpora, dims)}
    with open(_mk(out) / "checkpoints.jsonl", "a") as fh:
        fh.write(json.dumps(record) + "\n")
    return record


def run_job(job: dict) -> dict:
    """Pretrain (unless random init), embed and probe one (variant, seed); never raises."""
    import torch

    torch.set_num_threads(1)
    start = time.time()
    variant, seed, stage = job["variant"], job["seed"], job["stage"]
    out = Path(job["out"]) / ("release" if stage == "release" else "runs") / f"{variant}_s{seed}"
    corpora = Path(job["corpora"])
    record = {"variant": variant, "seed": seed, "stage": stage}
    try:
        from crema.model.crema import CREMA
        from crema.model.checkpoint import load_encoder
        from crema.train.pretrain import pretrain
        from crema.train.rng import seed_everything

        steps = job.get("steps")
        if job.get("budget_s") and variant != "random_init":
            steps = min(steps, affordable_steps(job, corpora, out.parent / f"{variant}_calibration"))
            record["steps"] = steps
        cfg = run_config(variant, seed, corpora, out, job["device"], steps, job.get("extra"))
        feat_file = out / "features.npz"
        if feat_file.exists():
            cached = np.load(feat_file)
            features = {k: cached[k] for k in ("ptbxl", "cinc")}
        else:
            crop = cfg.model.window
            if variant == "random_kernels":
                from crema.eval.rocket import RandomKernelFeatures

                encoder, crop = RandomKernelFeatures(2000, cfg.model.n_leads, seed=seed), None
                record["train"] = {}
            elif variant == "random_init":
                seed_everything(seed)
                encoder = CREMA(cfg.model, cfg.objective).encoder
                record["train"] = {}
            else:
                result = pretrain(cfg, progress=False)
                encoder, _ = load_encoder(out)
                record["train"] = result.last_log
            record["pretrain_s"] = time.time() - start
            features = embed_corpora(encoder, corpora, crop, job["device"])
            np.savez(feat_file if out.exists() else _mk(out) / "features.npz", **features)
        d = cfg.model.dim
        dims = ({"pooled": slice(None)} if variant == "random_kernels" else
                {"pooled": slice(0, d), "leads": slice(d, None)})
        if stage == "release":
            record["final"] = final_scores(features, corpora, dims)
        elif stage == "screen":
            record["screen"] = screen_scores(features["ptbxl"], corpora, dims)
        else:
            record["final"] = final_scores(features, corpora, dims)
    except Exception:
        record["error"] = traceback.format_exc()
    record["wall_s"] = time.time() - start
    return record


def affordable_steps(job: dict, corpora: Path, scratch: Path, probe_steps: int = 60) -> int:
    """Steps that fit ``job["budget_s"]`` (minus a reserve for embedding and probes), from the
    time per step of a short calibration run of the same configuration (its first 20 steps,
    which include warm-up costs, are not counted)."""
    from crema.train.pretrain import pretrain

    cfg = run_config(job["variant"], job["seed"], corpora, scratch, job["device"], probe_steps, job.get("extra"))
    t0 = time.time()
    pretrain(cfg, progress=False, stop_at=20)
    t1 = time.time()
    pretrain(cfg, resume=True, progress=False)
    per_step = (time.time() - t1) / (probe_steps - 20)
    spent = time.time() - t0
    steps = int((job["budget_s"] - spent - 45.0) / per_step)
    return max(100, steps // 100 * 100)


def _mk(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_jobs(jobs: list[dict], n_workers: int, log: Path, deadline: float | None = None) -> list[dict]:
    """Run jobs in a spawn pool, appending each record to ``log`` (JSONL) as it finishes; jobs
    not started before ``deadline`` (time.time()) are skipped."""
    import multiprocessing as mp

    done = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    finished = {(r["variant"], r["seed"], r["stage"]) for r in done if "error" not in r}
    todo = [j for j in jobs if (j["variant"], j["seed"], j["stage"]) not in finished]
    records = [r for r in done if (r["variant"], r["seed"], r["stage"]) in
               {(j["variant"], j["seed"], j["stage"]) for j in jobs}]
    ctx = mp.get_context("spawn")
    with ctx.Pool(n_workers, maxtasksperchild=1) as pool:
        pending = []
        for job in todo:
            pending.append(pool.apply_async(run_job, (job,)))
        for handle, job in zip(pending, todo):
            remaining = None if deadline is None else max(1.0, deadline - time.time())
            try:
                record = handle.get(timeout=remaining)
            except mp.TimeoutError:
                print(f"deadline: {job['variant']} s{job['seed']} not finished", flush=True)
                continue
            records.append(record)
            with log.open("a") as fh:
                fh.write(json.dumps(record) + "\n")
            brief = record.get("screen") or {}
            print(f"[{time.strftime('%H:%M:%S')}] {record['stage']} {record['variant']} s{record['seed']} "
                  f"{record['wall_s']:.0f}s {'ERROR' if 'error' in record else json.dumps(brief)}", flush=True)
            if "error" in record:
                print(record["error"], flush=True)
        pool.terminate()
    return records


# ----------------------------------------------------------------------------- selection

def screen_table(records: list[dict], kind: str = "pooled") -> list[dict]:
    """Mean validation AUROC per variant, with each seed's paired difference to MAE."""
    by = {}
    for r in records:
        if r.get("stage") == "screen" and "screen" in r:
            by.setdefault(r["variant"], {})[r["seed"]] = r["screen"][kind]
    mae = by.get("mae", {})
    rows = []
    for variant, seeds in by.items():
        full = [v["val_f1.0"] for v in seeds.values()]
        tenth = [v["val_f0.1"] for v in seeds.values()]
        diff = [seeds[s]["val_f1.0"] - mae[s]["val_f1.0"] for s in seeds if s in mae]
        rows.append({"variant": variant, "seeds": sorted(seeds), "val_f1.0": float(np.mean(full)),
                     "val_f1.0_sd": float(np.std(full)), "val_f0.1": float(np.mean(tenth)),
                     "minus_mae_f1.0": float(np.mean(diff)) if diff else None})
    return sorted(rows, key=lambda r: -r["val_f1.0"])


def pick_winner(records: list[dict]) -> str:
    """The CREMA variant (mode crema, lambda > 0) with the best mean validation AUROC at 100%
    labels, among those with the most finished seeds (a deadline may cut the last seed short)."""
    rows = [r for r in screen_table(records) if r["variant"].startswith("crema")]
    if not rows:
        raise SystemExit("no CREMA variant finished")
    most = max(len(r["seeds"]) for r in rows)
    return [r for r in rows if len(r["seeds"]) == most][0]["variant"]


# ----------------------------------------------------------------------------- packing

def pack(corpora: Path, archive: Path, scale: float = PACK_SCALE, train_only: tuple[str, ...] = ()) -> None:
    """Compact copy of every prepared corpus under ``corpora`` for transfer: lossy at 1/``scale``
    z-score unit; in the corpora named in ``train_only`` every window outside the train split is
    zeros (it compresses to nothing), so such an archive serves pretraining on ``NAME:train``
    only, never evaluation."""
    import pandas as pd

    archive.mkdir(parents=True, exist_ok=True)
    (archive / "pack.json").write_text(json.dumps({"scale": scale, "train_only": list(train_only)}))
    for src in sorted(p.parent for p in corpora.glob("*/signals.npy")):
        name = src.name
        sig = np.load(src / "signals.npy", mmap_mode="r").astype(np.float32)
        if name in train_only:
            split = pd.read_csv(src / "index.csv", usecols=["split"])["split"].to_numpy()
            sig[split != "train"] = 0.0
        q = np.clip(np.round(sig * scale), -32768, 32767).astype(np.int16)
        d = np.diff(np.diff(q, axis=-1, prepend=0), axis=-1, prepend=0).astype(np.int16)
        shuffled = np.frombuffer(d.tobytes(), np.uint8).reshape(-1, 2).T.copy().tobytes()
        (archive / f"{name}.shape.json").write_text(json.dumps(list(sig.shape)))
        (archive / f"{name}.xz").write_bytes(lzma.compress(shuffled, preset=6))
        for meta in CORPUS_META:
            shutil.copy(src / meta, archive / f"{name}.{meta}")


def unpack(archive: Path, corpora: Path) -> None:
    """Inverse of :func:`pack`: float16 ``signals.npy`` corpora under ``corpora``."""
    settings = archive / "pack.json"
    scale = json.loads(settings.read_text())["scale"] if settings.exists() else PACK_SCALE
    for name in sorted(p.name.removesuffix(".shape.json") for p in archive.glob("*.shape.json")):
        dst = _mk(corpora / name)
        shape = tuple(json.loads((archive / f"{name}.shape.json").read_text()))
        raw = np.frombuffer(lzma.decompress((archive / f"{name}.xz").read_bytes()), np.uint8)
        d = raw.reshape(2, -1).T.copy().view(np.int16).reshape(shape)
        q = np.cumsum(np.cumsum(d, axis=-1, dtype=np.int32), axis=-1, dtype=np.int32)
        np.save(dst / "signals.npy", (q / scale).astype(np.float16))
        for meta in CORPUS_META:
            shutil.copy(archive / f"{name}.{meta}", dst / meta)


# ----------------------------------------------------------------------------- CLI

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("corpora", type=Path)
    p.add_argument("archive", type=Path)
    p.add_argument("--scale", type=float, default=PACK_SCALE, help="quantisation steps per z-score unit")
    p.add_argument("--train-only", nargs="*", default=[],
                   help="corpora whose windows outside the train split are packed as zeros")
    p = sub.add_parser("unpack")
    p.add_argument("archive", type=Path)
    p.add_argument("corpora", type=Path)
    p = sub.add_parser("run")
    p.add_argument("--corpora", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--variants", nargs="*", default=list(VARIANTS))
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int, default=None, help="override the recipe's steps (smoke tests)")
    p.add_argument("--screen-budget-s", type=float, default=None, help="stop starting screen jobs after this")
    p.add_argument("--final", action="store_true", help="after the screen, run the final stage")
    p.add_argument("--final-only", action="store_true", help="skip the screen (give --final-variants)")
    p.add_argument("--final-variants", nargs="*", default=None, help="default: winner, mae, random_init")
    p.add_argument("--release-budget-s", type=float, default=0,
                   help="then train the winner and MAE at tiny size for about this long (0 = skip)")
    p.add_argument("--release-max-steps", type=int, default=20000)
    p.add_argument("--release-batch", type=int, default=64)
    p = sub.add_parser("score", help="probe an already trained checkpoint with the search's protocol")
    p.add_argument("model", type=Path)
    p.add_argument("--name", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--corpora", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("summarise")
    p.add_argument("out", type=Path)
    args = parser.parse_args(argv)

    if args.cmd == "pack":
        pack(args.corpora, args.archive, args.scale, tuple(args.train_only))
        return 0
    if args.cmd == "unpack":
        unpack(args.archive, args.corpora)
        return 0
    if args.cmd == "score":
        record = score_checkpoint(args.model, args.name, args.seed, args.corpora, args.out)
        print(json.dumps({"variant": record["variant"], "screen": record["screen"]}))
        return 0
    if args.cmd == "summarise":
        records = [json.loads(x) for x in (args.out / "screen.jsonl").read_text().splitlines()]
        for kind in ("pooled", "leads"):
            print(f"\n== validation fold 9, {kind} features")
            for row in screen_table(records, kind):
                print(json.dumps(row))
        return 0

    args.out.mkdir(parents=True, exist_ok=True)
    common = {"corpora": str(args.corpora.resolve()), "out": str(args.out.resolve()),
              "device": args.device, "steps": args.steps}
    jobs = [{**common, "variant": v, "seed": s, "stage": "screen"} for s in args.seeds for v in args.variants
            if v != "random_kernels"]  # measured on CPU beside the final stage (no GPU needed)
    deadline = None if args.screen_budget_s is None else time.time() + args.screen_budget_s
    if args.final_only:
        jobs = [{**common, "variant": v, "seed": s, "stage": "final"} for s in args.seeds for v in args.final_variants]
        run_jobs(jobs, args.jobs, args.out / "final.jsonl")
        return 0
    records = run_jobs(jobs, args.jobs, args.out / "screen.jsonl", deadline)
    table = screen_table(records)
    (args.out / "screen_table.json").write_text(json.dumps(table, indent=2))
    for row in table:
        print(json.dumps(row), flush=True)
    if args.final:
        variants = args.final_variants or [pick_winner(records), "mae", "random_init"]
        print(f"final stage: {variants}", flush=True)
        jobs = [{**common, "variant": v, "seed": s, "stage": "final"} for s in args.seeds for v in variants]
        run_jobs(jobs, args.jobs, args.out / "final.jsonl")
    if args.release_budget_s:
        winner = pick_winner(records)
        extra = {"model": RELEASE_MODEL, "train": {"batch_size": args.release_batch, "ckpt_every": 10**9}}
        jobs = [{**common, "variant": v, "seed": 0, "stage": "release", "steps": args.release_max_steps,
                 "budget_s": args.release_budget_s, "extra": extra} for v in (winner, "mae", "random_init")]
        run_jobs(jobs, 3, args.out / "release.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
