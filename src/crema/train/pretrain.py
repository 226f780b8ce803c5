"""Pretrain a CREMA model on prepared ECG corpora, from one CPU to many GPUs.

Single process (CPU, or the one GPU it finds)::

    crema pretrain --corpus runs/corpora/unlabeled --out runs/pretrain/tiny --size tiny --steps 20000

One node, 8 GPUs (the same flags; the effective batch is batch-size x accum x 8)::

    torchrun --standalone --nproc_per_node 8 -m crema pretrain \
        --corpus runs/corpora/unlabeled --out runs/pretrain/base --size base --batch-size 128

Two nodes (run on each, node-rank 0 and 1)::

    torchrun --nnodes 2 --node_rank 0 --nproc_per_node 8 --master_addr HOST0 --master_port 29500 \
        -m crema pretrain --corpus ... --out ...

SLURM (one task per GPU; MASTER_ADDR = the first host of the allocation)::

    export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    srun python -m crema pretrain --corpus ... --out ...

Continue an interrupted run exactly where its last checkpoint left it::

    crema pretrain --out runs/pretrain/tiny --resume

The run folder holds ``config.json`` (kind ``pretrain``: model, objective, preprocess, train,
step), ``model.safetensors``, ``training_state.pt`` and ``log.jsonl``. SIGINT/SIGTERM finish
the current step, write a checkpoint and stop.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import random
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, DistributedSampler
from tqdm.auto import tqdm

from .. import __version__, precision
from ..config import PreprocessConfig, RunConfig, atomic_write_text, load_json, to_dict
from ..data.corpus import parse_corpus_spec
from ..data.dataset import open_corpora
from ..errors import CremaError
from ..model.crema import CREMA, contrastive_scale
from .. import runtime as dist_utils
from .checkpoint import (CONFIG_FILE, load_checkpoint, load_config, load_state_into,
                         load_training_state, run_config_from_checkpoint, save_checkpoint)
from .schedule import lr_at, make_adamw, scaled_lr, set_lr

LOG_FILE = "log.jsonl"

# Fields of the train config that may change when a run is resumed; anything else would
# make the continuation differ from the uninterrupted run, so it is refused.
RESUME_MUTABLE = frozenset({"steps", "ckpt_every", "log_every", "num_workers", "device",
                            "tensorboard", "compile", "out"})


# ----------------------------------------------------------------------------- config <-> checkpoint

def checkpoint_config(cfg: RunConfig, step: int) -> dict[str, Any]:
    """The ``config.json`` of a pretraining checkpoint."""
    return {"kind": "pretrain", "crema_version": __version__, "step": int(step), **to_dict(cfg)}


def check_resumable(saved: RunConfig, cfg: RunConfig) -> None:
    """Refuse to resume with settings that would change the run (other than RESUME_MUTABLE)."""
    problems = []
    for part in ("model", "objective", "preprocess"):
        if to_dict(getattr(saved, part)) != to_dict(getattr(cfg, part)):
            problems.append(part)
    old, new = to_dict(saved.train), to_dict(cfg.train)
    problems += [f"train.{k}" for k in old if k not in RESUME_MUTABLE and old[k] != new.get(k)]
    if problems:
        raise CremaError(f"cannot resume: settings differ from the saved run in {', '.join(problems)}")


# ----------------------------------------------------------------------------- data

@dataclass
class PretrainData:
    """The training set of a run and the corpora's preprocessing.

    ``dataset`` is indexed by ``(epoch, i)`` pairs and yields dicts with ``signal (12, W)``
    (cropped to the model window), ``lead_mask (12,)``, ``row`` and ``patient`` (int, -1 =
    unknown).
    """

    dataset: Dataset
    preprocess: PreprocessConfig
    window: int


class EpochIndexed(Dataset):
    """Wraps a dataset with ``set_epoch`` so that the epoch travels inside the index
    ``(epoch, i)``: DataLoader workers hold their own copies of the dataset, which a
    ``set_epoch`` call in the main process would never reach. Adds each item's ``patient``."""

    def __init__(self, dataset: Dataset, patients: np.ndarray):
        self.dataset, self.patients, self.epoch = dataset, patients, None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        epoch, i = key
        if self.epoch != epoch:
            self.dataset.set_epoch(epoch)
            self.epoch = epoch
        item = dict(self.dataset[i])
        item["patient"] = int(self.patients[i])
        return item


def _patient_codes(corpus: Any, offset: int) -> tuple[np.ndarray, int]:
    """Integer code per corpus row for its (source, patient_id); -1 where the id is unknown.
    Codes of different corpora never collide (``offset``)."""
    index = corpus.index
    if "patient_id" not in index.columns:
        return np.full(len(index), -1, dtype=np.int64), offset
    pid = index["patient_id"].fillna("").astype(str)
    source = index["source"].fillna("").astype(str) if "source" in index.columns else ""
    key = (source + "/" + pid).where(pid != "", None)
    codes, uniques = pd.factorize(key, use_na_sentinel=True)
    codes = np.where(codes >= 0, codes + offset, -1).astype(np.int64)
    return codes, offset + len(uniques)


def open_pretrain_data(specs: tuple[str, ...] | list[str], window: int, seed: int = 0,
                       view_crop: str = "same") -> PretrainData:
    """Open every corpus spec (``DIR`` or ``DIR:split[,split]``) as one training set, with
    random crops of ``window`` samples (drawn per item from ``(seed, epoch, index)``) and
    duplicate records across corpora dropped (see :func:`crema.data.dataset.open_corpora`).
    With ``view_crop`` other than ``same`` items are whole corpus windows: the model crops
    each view itself (``disjoint`` needs corpus windows of at least twice ``window``).

    Raises :class:`CremaError` when a corpus is missing, the corpora were prepared with
    different preprocessing, or their windows are shorter than the model's.
    """
    if not specs:
        raise CremaError("no corpus given (--corpus DIR[:splits])")
    # Check preprocessing from each corpus's preprocess.json before reading any index.
    preprocess, first = None, None
    for spec in specs:
        path = parse_corpus_spec(spec)[0]
        if not (path / "preprocess.json").is_file():
            continue  # open_corpora reports what is missing
        cfg = load_json(path / "preprocess.json", PreprocessConfig)
        if preprocess is None:
            preprocess, first = cfg, path
        elif to_dict(cfg) != to_dict(preprocess):
            raise CremaError(
                f"corpora were prepared with different preprocessing: {first} has "
                f"{to_dict(preprocess)}, {path} has {to_dict(cfg)}; prepare them alike")
    if preprocess is not None and preprocess.window < window:
        raise CremaError(f"{first}: corpus windows have {preprocess.window} samples, "
                         f"fewer than the model window {window}")
    if view_crop == "disjoint" and preprocess is not None and preprocess.window < 2 * window:
        raise CremaError(f"{first}: view_crop 'disjoint' needs corpus windows of at least "
                         f"{2 * window} samples (twice the model window); they have {preprocess.window}")
    crop = window if view_crop == "same" else None
    concat = open_corpora(list(specs), crop=crop, random_crop=True, seed=seed)
    preprocess = concat.datasets[0].corpus.preprocess
    patients, offset = [], 0
    for part in concat.datasets:
        codes, offset = _patient_codes(part.corpus, offset)
        patients.append(codes[part.rows])
    return PretrainData(dataset=EpochIndexed(concat, np.concatenate(patients)),
                        preprocess=preprocess, window=window)


class EpochBatches:
    """Infinite batch sampler: DistributedSampler epochs (``set_epoch`` each pass) cut into
    full batches of ``(epoch, index)`` keys, starting ``skip`` batches in. Skipping costs no
    data loading, which is what makes resuming at the exact batch cheap."""

    def __init__(self, sampler: DistributedSampler, batch_size: int, skip: int = 0):
        self.sampler, self.batch_size, self.skip = sampler, batch_size, skip
        self.per_epoch = len(sampler) // batch_size
        if self.per_epoch == 0:
            raise CremaError(f"each process gets {len(sampler)} ECGs per epoch, fewer than one "
                             f"batch of {batch_size}; use a smaller --batch-size")

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, start = divmod(self.skip, self.per_epoch)
        while True:
            self.sampler.set_epoch(epoch)
            order = list(self.sampler)
            for b in range(start, self.per_epoch):
                yield [(epoch, i) for i in order[b * self.batch_size:(b + 1) * self.batch_size]]
            epoch, start = epoch + 1, 0


# ----------------------------------------------------------------------------- RNG state

def rng_state() -> dict[str, Any]:
    """This process's RNG states as tensors and plain values (safe for ``weights_only``)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npy = state["numpy"]
    np.random.set_state(("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# ----------------------------------------------------------------------------- signals

class StopFlag:
    """Turns SIGINT/SIGTERM into a flag checked between steps (a second signal is not caught)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopFlag":
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


# ----------------------------------------------------------------------------- the engine

@dataclass
class PretrainResult:
    """What a call to :func:`pretrain` did."""

    out: Path
    step: int                      # optimiser steps completed in total
    interrupted_by: int | None     # the signal that stopped it early, if any
    last_log: dict[str, Any] | None


def _autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """bf16 autocast or nothing, as ``amp`` resolves on ``device`` (:mod:`crema.precision`)."""
    try:
        return precision.autocast(device, amp)
    except ValueError as exc:
        raise CremaError(f"amp: {exc}") from None


def _truncate_log(path: Path, step: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be redone), and a
    partial last line left by a kill in the middle of writing it.

    Raises:
        CremaError: a line other than the last is not JSON (the file was damaged otherwise).
    """
    if not path.is_file():
        return
    lines = path.read_bytes().decode("utf-8", "replace").splitlines()
    kept = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):  # the write a kill interrupted: its step is redone anyway
                break
            raise CremaError(f"{path}: line {number} is not JSON ({line[:60]!r}); fix or delete "
                             "that line to resume") from None
        if isinstance(record, dict) and record.get("step", 0) <= step:
            kept.append(line)
    atomic_write_text(path, "".join(line + "\n" for line in kept))


class _Logger:
    """Rank-0 JSONL log (+ optional TensorBoard)."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool):
        self.path, self.enabled, self.tb = out / LOG_FILE, enabled, None
        if enabled and tensorboard:
            try:  # optional: the tensorboard package is not a dependency
                from torch.utils.tensorboard import SummaryWriter
                self.tb = SummaryWriter(str(out / "tensorboard"))
            except ImportError:
                warnings.warn("--tensorboard: the tensorboard package is not installed; JSONL only")

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.tb is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def pretrain(cfg: RunConfig, resume: bool = False, progress: bool = True,
             stop_at: int | None = None, data: PretrainData | None = None) -> PretrainResult:
    """Run (or continue) pretraining as described by ``cfg``; see the module docstring.

    Args:
        cfg: the run; ``cfg.preprocess`` is replaced by the corpora's own preprocessing.
        resume: continue from the checkpoint in ``cfg.train.out``.
        progress: show a tqdm bar on rank 0.
        stop_at: stop (with a checkpoint) after this many steps in total, as if interrupted
            there; the schedule still follows ``cfg.train.steps``.
        data: an already opened training set (tests); default opens ``cfg.train.corpora``.

    Returns:
        :class:`PretrainResult`. The process group, if this call created one, is left again.
    """
    owns_group = not dist_utils.is_initialized()
    info, device = dist_utils.setup(cfg.train.device)
    try:
        return Trainer(cfg, info, device, resume, progress, stop_at, data).run()
    finally:
        if owns_group:
            dist_utils.cleanup()


class Trainer:
    """One pretraining run in this process: model, optimiser, data stream and state.
    ``pretrain`` is the usual entry point; tests use the trainer to look inside."""

    def __init__(self, cfg: RunConfig, info: dist_utils.DistInfo, device: torch.device,
                 resume: bool, progress: bool, stop_at: int | None, data: PretrainData | None):
        self.info, self.device, self.progress = info, device, progress
        self.out = Path(cfg.train.out)
        data = data or open_pretrain_data(cfg.train.corpora, cfg.model.window, cfg.train.seed,
                                          cfg.objective.view_crop)
        self.cfg = cfg = dataclasses.replace(cfg, preprocess=data.preprocess)
        self.data = data
        self.stop_at = cfg.train.steps if stop_at is None else min(stop_at, cfg.train.steps)
        t = cfg.train
        _autocast(device, t.amp)  # refuse a bad amp setting before any work
        self.effective_batch = t.batch_size * t.accum_steps * info.world_size
        self.base_lr = scaled_lr(t.blr, self.effective_batch)

        # Same seed on every rank for the initial weights; then per-rank streams for masks.
        seed_everything(t.seed)
        self.model = CREMA(cfg.model, cfg.objective, fs=cfg.preprocess.fs).to(device)
        self.optimizer = make_adamw(self.model, self.base_lr, t.weight_decay, t.betas)
        self.step, self.batches_done, saved_rng = 0, 0, None
        self.resumed = resume
        if resume:
            saved_rng = self._load_resume_state()
        else:
            self._start_fresh()
        seed_everything(t.seed + 1000003 * info.rank)

        self.ddp = self.model
        if info.enabled:
            self.ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None)
        self.forward = torch.compile(self.ddp) if t.compile else self.ddp

        sampler = DistributedSampler(data.dataset, num_replicas=info.world_size, rank=info.rank,
                                     shuffle=True, seed=t.seed, drop_last=True)
        self.batches = EpochBatches(sampler, t.batch_size, skip=self.batches_done)
        loader = torch.utils.data.DataLoader(
            data.dataset, batch_sampler=self.batches, num_workers=t.num_workers,
            pin_memory=device.type == "cuda", persistent_workers=t.num_workers > 0)
        self.loader = iter(loader)
        # Creating the loader iterator draws from the RNG; restore after it so a resumed run's
        # streams are exactly those of the uninterrupted run.
        if saved_rng is not None:
            set_rng_state(saved_rng)
        self.logger = _Logger(self.out, info.is_main, t.tensorboard)

    # ------------------------------------------------------------------ state

    def _start_fresh(self) -> None:
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / LOG_FILE).unlink(missing_ok=True)
            atomic_write_text(self.out / CONFIG_FILE,
                              json.dumps(checkpoint_config(self.cfg, 0), indent=2) + "\n")
        dist_utils.barrier()

    def _load_resume_state(self) -> dict[str, Any] | None:
        saved = run_config_from_checkpoint(load_config(self.out))
        check_resumable(saved, self.cfg)
        state_dict, _ = load_checkpoint(self.out)
        load_state_into(self.model, state_dict, self.out)
        state = load_training_state(self.out)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.batches_done = int(state["step"]), int(state["batches_done"])
        if self.info.is_main:
            _truncate_log(self.out / LOG_FILE, self.step)
        dist_utils.barrier()
        rngs = state.get("rng", [])
        if len(rngs) == self.info.world_size:
            return rngs[self.info.rank]
        warnings.warn(f"resuming with {self.info.world_size} processes instead of {len(rngs)}: "
                      "masks and crops will not replay the uninterrupted run")
        return None

    def save(self) -> None:
        """Checkpoint (collective: every rank contributes its RNG state; rank 0 writes)."""
        rngs = dist_utils.all_gather_object(rng_state())
        if self.info.is_main:
            training_state = {"step": self.step, "batches_done": self.batches_done,
                              "world_size": self.info.world_size,
                              "optimizer": self.optimizer.state_dict(), "rng": rngs}
            save_checkpoint(self.out, self.model, checkpoint_config(self.cfg, self.step), training_state)
        dist_utils.barrier()

    # ------------------------------------------------------------------ steps

    def _micro_batch(self) -> tuple[Tensor, Tensor, Tensor]:
        batch = next(self.loader)
        self.batches_done += 1
        x = batch["signal"].to(self.device, non_blocking=True).float()
        lead_mask = batch["lead_mask"].to(self.device, non_blocking=True)
        patients = batch["patient"].to(self.device, non_blocking=True)
        return x, lead_mask, patients

    def train_step(self) -> dict[str, float]:
        """One optimiser step over ``accum_steps`` micro-batches; returns detached means."""
        t = self.cfg.train
        obj = self.cfg.objective
        set_lr(self.optimizer, lr_at(self.step, self.base_lr, t.min_lr, t.warmup_steps, t.steps))
        # A tensor, not a float: torch.compile would recompile for every new float value.
        con_scale = torch.tensor(contrastive_scale(self.step, obj.con_start_step, obj.con_ramp_steps),
                                 device=self.device)
        sums: dict[str, Tensor] = {}
        for micro in range(t.accum_steps):
            x, lead_mask, patients = self._micro_batch()
            last = micro == t.accum_steps - 1
            sync = contextlib.nullcontext() if last or not self.info.enabled else self.ddp.no_sync()
            with sync:
                with _autocast(self.device, t.amp):
                    out = self.forward(x, lead_mask=lead_mask, patient_ids=patients, con_scale=con_scale)
                (out["loss"] / t.accum_steps).backward()
            for key in ("loss", "loss_rec", "loss_con", "acc"):
                sums[key] = sums.get(key, 0.0) + out[key].detach().float() / t.accum_steps
        if t.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return sums

    def run(self) -> PretrainResult:
        t = self.cfg.train
        bar = tqdm(total=t.steps, initial=self.step, disable=not (self.progress and self.info.is_main),
                   desc="pretrain", unit="step", dynamic_ncols=True)
        window: dict[str, Tensor] = {}
        window_steps, window_start, run_start = 0, time.perf_counter(), time.perf_counter()
        last_log, interrupted = None, None
        if self.step >= self.stop_at and not self.resumed:
            # Nothing to train (``--steps 0``): checkpoint the initialised model, a random-init
            # baseline that embeds like any checkpoint. A finished run resumed is left as it is.
            self.save()
        with StopFlag() as stop:
            while self.step < self.stop_at:
                means = self.train_step()
                for key, value in means.items():
                    window[key] = window.get(key, 0.0) + value
                window_steps += 1
                bar.update(1)
                final = self.step >= self.stop_at
                if self.step % t.log_every == 0 or final:
                    last_log = self._log(window, window_steps, time.perf_counter() - window_start,
                                         time.perf_counter() - run_start)
                    bar.set_postfix(loss=f"{last_log['loss']:.4f}", lr=f"{last_log['lr']:.2e}")
                    window, window_steps, window_start = {}, 0, time.perf_counter()
                stopping = dist_utils.any_rank(stop.signum is not None, self.device)
                if final or stopping or self.step % t.ckpt_every == 0:
                    self.save()
                if stopping:
                    interrupted = stop.signum or signal.SIGTERM
                    break
        bar.close()
        self.logger.close()
        return PretrainResult(self.out, self.step, interrupted, last_log)

    def _log(self, window: dict[str, Tensor], steps: int, seconds: float, elapsed: float) -> dict[str, Any]:
        keys = sorted(window)
        stacked = torch.stack([torch.as_tensor(window[k], device=self.device) / steps for k in keys])
        means = dist_utils.all_reduce_mean(stacked).tolist()
        record: dict[str, Any] = {"step": self.step}
        record.update({k: float(v) for k, v in zip(keys, means)})
        if not math.isfinite(record["loss"]):
            raise CremaError(f"loss is {record['loss']} at step {self.step}; the last checkpoint "
                             f"in {self.out} is untouched (try a lower --blr or --amp off)")
        record["lr"] = self.optimizer.param_groups[0]["lr"]
        record["ecgs_per_s"] = steps * self.effective_batch / max(seconds, 1e-9)
        record["elapsed_s"] = elapsed
        record["epoch"] = self.batches_done // self.batches.per_epoch
        self.logger.write(record)
        return record

