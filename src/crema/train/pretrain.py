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
step, and ``corpora_sha256``, each corpus's fingerprint), ``model.safetensors``,
``training_state.pt`` and ``log.jsonl``. SIGINT/SIGTERM finish the current step, write a
checkpoint and stop. One run writes a folder at a time (an output lock, as ``crema prepare``
takes); a resume onto a corpus that was rebuilt with other content is refused unless
``allow_corpus_change``.

This module holds the engine (:class:`Trainer`, :func:`pretrain`); its parts live beside it:
:mod:`.stream` (corpora -> training set, the resumable batch sampler), :mod:`.rng` (RNG state),
:mod:`.stop` (SIGINT/SIGTERM), :mod:`.logger` (``log.jsonl``), :mod:`.run_config` (the run's
``config.json`` and what a resume may change).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import DistributedSampler
from tqdm.auto import tqdm

from .. import precision
from .. import runtime as dist_utils
from ..atomic import atomic_write_text
from ..config import RunConfig
from ..config_io import to_dict
from ..data.corpus import is_corpus, parse_corpus_spec
from ..data.loader import batch_loader
from ..data.fingerprint import FINGERPRINT_WHAT, corpus_fingerprint
from ..errors import CremaError
from ..locking import output_lock
from ..model.checkpoint import CONFIG_FILE, MODEL_FILE, check_weights_fit, load_checkpoint, load_config, load_state_into
from ..model.crema import CREMA, contrastive_scale
from ..model.registry import run_config_from_checkpoint
from .checkpoint import load_training_state, save_checkpoint
from .logger import LOG_FILE, RunLogger, truncate_log
from .restart import RUN_ID_KEY
from .rng import rng_state, seed_everything, set_rng_state
from .run_config import check_resumable, checkpoint_config
from .schedule import lr_at, make_adamw, scaled_lr, set_lr
from .stop import StopFlag
from .stream import EpochBatches, PretrainData, open_pretrain_data


CORPORA_KEY = "corpora_sha256"  # config.json: {corpus folder: corpus_fingerprint} of the run's corpora


@dataclass
class PretrainResult:
    """What a call to :func:`pretrain` did."""

    out: Path
    step: int                      # optimiser steps completed in total
    interrupted_by: int | None     # the signal that stopped it early, if any
    last_log: dict[str, Any] | None


@dataclass(frozen=True)
class StepInfo:
    """What a hook (``pretrain(..., hooks=[...])``) is called with, twice per optimiser step.

    Attributes:
        phase: ``"gradients"``: after the step's backward passes, before clipping and the optimiser
            step (``param.grad`` holds the step's unclipped gradient, the mean over its
            micro-batches); ``"step"``: after the optimiser step (weights updated, gradients cleared).
        step: the step's index (0 for the first: the step the lr schedule was evaluated at); the same
            in both phases.
        losses: the step's detached means over its micro-batches on this process: ``loss``,
            ``loss_rec``, ``loss_con``, ``acc`` (0-d tensors).
        model: the :class:`~crema.model.crema.CREMA` module (not its DDP or compiled wrapper).
        optimizer: the AdamW, its lr set for this step.
        batch: the step's last micro-batch on the device: ``signal (B, 12, T)``, ``lead_mask (B, 12)``,
            ``patient (B,)``.

    A hook that runs the model itself should do so under ``torch.random.fork_rng`` so that the
    run's masks and crops stay those of a run without it.
    """

    phase: str
    step: int
    losses: dict[str, Tensor]
    model: nn.Module
    optimizer: torch.optim.Optimizer
    batch: dict[str, Tensor]


Hook = Callable[[StepInfo], None]


def _resolve_amp(device: torch.device, amp: str) -> str:
    """``"bf16"`` or ``"fp32"``: what ``amp`` means on ``device`` (:mod:`crema.precision`)."""
    try:
        return precision.resolve(amp, device)
    except ValueError as exc:
        raise CremaError(f"amp: {exc}") from None


def pretrain(cfg: RunConfig, resume: bool = False, progress: bool = True,
             stop_at: int | None = None, data: PretrainData | None = None,
             allow_corpus_change: bool = False, hooks: Sequence[Hook] = ()) -> PretrainResult:
    """Run (or continue) pretraining as described by ``cfg``; see the module docstring.

    Args:
        cfg: the run; ``cfg.preprocess`` is replaced by the corpora's own preprocessing.
        resume: continue from the checkpoint in ``cfg.train.out``.
        progress: show a tqdm bar on rank 0.
        stop_at: stop (with a checkpoint) after this many steps in total, as if interrupted
            there; the schedule still follows ``cfg.train.steps``.
        data: an already opened training set (tests); default opens ``cfg.train.corpora``.
        allow_corpus_change: resume even when a corpus's fingerprint differs from the one saved.
        hooks: called with a :class:`StepInfo` before and after every optimiser step, in order, on
            every process (diagnostics: gradient norms, extra logs).

    Returns:
        :class:`PretrainResult`. The process group, if this call created one, is left again.

    Raises:
        BusyError: another run is writing ``cfg.train.out``.
        CremaError: resuming onto a changed corpus (see ``allow_corpus_change``), and the other
            problems of a run's settings and data.
    """
    owns_group = not dist_utils.is_initialized()
    info, device = dist_utils.setup(cfg.train.device)
    try:
        with contextlib.ExitStack() as held:
            _lock_run_folder(held, cfg.train.out, info, device)
            return Trainer(cfg, info, device, resume, progress, stop_at, data, allow_corpus_change, hooks).run()
    finally:
        if owns_group:
            dist_utils.cleanup()


def _lock_run_folder(held: contextlib.ExitStack, out: str, info: dist_utils.DistInfo, device: torch.device) -> None:
    """Hold the output lock of the run folder (rank 0 takes it; every rank stops if it is busy,
    so that no rank waits forever for one that left)."""
    problem = None
    if info.is_main:
        try:
            held.enter_context(output_lock(out, "crema pretrain"))
        except CremaError as exc:
            problem = exc
    if dist_utils.any_rank(problem is not None, device):
        raise problem or CremaError(f"{out}: the first process could not lock the run folder")


def corpora_fingerprints(specs) -> dict[str, str]:
    """``{corpus folder: corpus_fingerprint}`` of the prepared corpora among ``specs``
    (``DIR[:splits]``), what a checkpoint records so that a resume notices a rebuilt corpus."""
    found = {}
    for spec in specs:
        path = parse_corpus_spec(spec)[0]
        if is_corpus(path):
            found[str(path)] = corpus_fingerprint(path)
    return found


def check_same_corpora(saved: dict | None, current: dict[str, str], out: Path) -> None:
    """Refuse to resume when a corpus the run was trained on now holds other content (``saved``
    None = a checkpoint from before corpora were fingerprinted: nothing to compare)."""
    if not isinstance(saved, dict):
        return
    changed = [path for path, sha in current.items() if path in saved and saved[path] != sha]
    if changed:
        raise CremaError(
            f"{out}: cannot resume: the corpus {changed[0]} has changed since this run trained on it "
            f"(its fingerprint, a {FINGERPRINT_WHAT}, differs), so the rest of the run would see other "
            "data than its first steps; start a new run (another --out, or --overwrite), or pass "
            "--allow-corpus-change to continue on the new corpus anyway")


class Trainer:
    """One pretraining run in this process: model, optimiser, data stream and state.
    ``pretrain`` is the usual entry point; tests use the trainer to look inside."""

    def __init__(self, cfg: RunConfig, info: dist_utils.DistInfo, device: torch.device,
                 resume: bool, progress: bool, stop_at: int | None, data: PretrainData | None,
                 allow_corpus_change: bool = False, hooks: Sequence[Hook] = ()):
        self.info, self.device, self.progress = info, device, progress
        self.hooks = tuple(hooks)
        self.out = Path(cfg.train.out)
        self.corpora_sha = corpora_fingerprints(cfg.train.corpora)
        self.allow_corpus_change = allow_corpus_change
        data = data or open_pretrain_data(cfg.train.corpora, cfg.model.window, cfg.train.seed,
                                          cfg.objective.view_crop)
        self.cfg = cfg = dataclasses.replace(cfg, preprocess=data.preprocess)
        self.data = data
        self.stop_at = cfg.train.steps if stop_at is None else min(stop_at, cfg.train.steps)
        t = cfg.train
        self.amp = _resolve_amp(device, t.amp)  # once per run; a bad setting fails before any work
        self.effective_batch = t.batch_size * t.accum_steps * info.world_size
        self.base_lr = scaled_lr(t.blr, self.effective_batch)

        # Same seed on every rank for the initial weights; then per-rank streams for masks.
        seed_everything(t.seed)
        if resume:
            self._check_resumable()
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
        # Each item is a whole batch, read in one pass by one worker (crema.data.dataset).
        loader = batch_loader(data.dataset, self.batches, t.num_workers, pin_memory=device.type == "cuda")
        self.loader = iter(loader)
        # Creating the loader iterator draws from the RNG; restore after it so a resumed run's
        # streams are exactly those of the uninterrupted run.
        if saved_rng is not None:
            set_rng_state(saved_rng)
        self.logger = RunLogger(self.out, info.is_main, t.tensorboard)

    # ------------------------------------------------------------------ state

    def _start_fresh(self) -> None:
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / LOG_FILE).unlink(missing_ok=True)
            atomic_write_text(self.out / CONFIG_FILE, json.dumps(self._config(0), indent=2) + "\n")
        dist_utils.barrier()

    def _config(self, step: int) -> dict[str, Any]:
        """The checkpoint's ``config.json``: the run config and the corpora's fingerprints."""
        return {**checkpoint_config(self.cfg, step), CORPORA_KEY: self.corpora_sha}

    def _check_resumable(self) -> None:
        """Before the model is built: the settings may continue the saved run, its corpora are
        the ones it trained on (unless allowed to differ), and its weights fit the model."""
        saved_config = load_config(self.out)
        check_resumable(run_config_from_checkpoint(saved_config), self.cfg)
        if self.allow_corpus_change:
            if saved_config.get(CORPORA_KEY) not in (None, self.corpora_sha) and self.info.is_main:
                warnings.warn(f"{self.out}: resuming on corpora that changed since the last checkpoint "
                              "(allowed by allow_corpus_change); the next checkpoint records the new ones")
        else:
            check_same_corpora(saved_config.get(CORPORA_KEY), self.corpora_sha, self.out)
        check_weights_fit({"model": to_dict(self.cfg.model)}, self.out / MODEL_FILE)  # an edited config.json

    def _load_resume_state(self) -> dict[str, Any] | None:
        state_dict, _ = load_checkpoint(self.out)
        load_state_into(self.model, state_dict, self.out)
        state = load_training_state(self.out)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.batches_done = int(state["step"]), int(state["batches_done"])
        if self.info.is_main:
            truncate_log(self.out / LOG_FILE, self.step)
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
                              "optimizer": self.optimizer.state_dict(), "rng": rngs,
                              RUN_ID_KEY: dist_utils.job_id()}  # a torchrun restart resumes its own
            save_checkpoint(self.out, self.model, self._config(self.step), training_state)
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
                with precision.autocast(self.device, self.amp):
                    out = self.forward(x, lead_mask=lead_mask, patient_ids=patients, con_scale=con_scale)
                (out["loss"] / t.accum_steps).backward()
            for key in ("loss", "loss_rec", "loss_con", "acc"):
                sums[key] = sums.get(key, 0.0) + out[key].detach().float() / t.accum_steps
        batch = {"signal": x, "lead_mask": lead_mask, "patient": patients}
        self._call_hooks("gradients", self.step, sums, batch)
        if t.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self._call_hooks("step", self.step - 1, sums, batch)
        return sums

    def _call_hooks(self, phase: str, step: int, losses: dict[str, Tensor], batch: dict[str, Tensor]) -> None:
        """Each hook, in order, with step ``step``'s :class:`StepInfo`."""
        if self.hooks:
            info = StepInfo(phase, step, dict(losses), self.model, self.optimizer, batch)
            for hook in self.hooks:
                hook(info)

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

