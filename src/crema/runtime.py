"""Where this process runs: its device, its CPU threads and its place in a data-parallel job.

Every layer may import this module (the contrastive loss gathers embeddings across ranks, the
inference API picks a device, the suite pins CPU threads), so it imports nothing from CREMA.

Data-parallel jobs run under ``python``, ``torchrun`` and SLURM with the same script:
:func:`detect` reads the environment that the launcher sets (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``MASTER_ADDR``/``MASTER_PORT`` from torchrun;
``SLURM_PROCID``/``SLURM_NTASKS``/``SLURM_LOCALID`` from ``srun``), and a plain ``python``
run is a world of one with no process group at all.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator, Mapping

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when there is more than one process (a process group is needed)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, shows progress and writes checkpoints."""
        return self.rank == 0


def detect(environ: Mapping[str, str] | None = None) -> DistInfo:
    """Read rank and world size from the launcher's environment variables.

    torchrun's ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` win; else SLURM's ``SLURM_PROCID``/
    ``SLURM_NTASKS``/``SLURM_LOCALID`` (one task per GPU under ``srun``); else a single process.
    """
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistInfo(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        return DistInfo(int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]),
                        int(env.get("SLURM_LOCALID", 0)))
    return DistInfo()


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None = CUDA when available, else CPU; anything else as ``torch.device`` reads it."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_device(preference: str, info: DistInfo) -> torch.device:
    """:func:`resolve_device`, then a bare ``cuda`` becomes this process's GPU (its local rank),
    made the current CUDA device."""
    device = resolve_device(preference)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", info.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch CPU threads (None = leave as is), restoring the setting afterwards.

    Small models on a shared machine run far faster on one thread (threads wait on each other
    for cores that other jobs hold; ``benchmarks/inference_throughput.py --threads``).
    """
    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def setup(device_preference: str = "auto") -> tuple[DistInfo, torch.device]:
    """Detect the job layout, pick the device and, for more than one process, join the
    process group (NCCL on CUDA, gloo on CPU)."""
    info = detect()
    device = pick_device(device_preference, info)
    if info.enabled and not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        backend = "nccl" if device.type == "cuda" else "gloo"
        timeout = timedelta(minutes=30)
        store = _attempt_store(info.world_size, timeout)
        if store is None:
            dist.init_process_group(backend=backend, init_method="env://", rank=info.rank,
                                    world_size=info.world_size, timeout=timeout)
        else:
            dist.init_process_group(backend=backend, store=store, rank=info.rank,
                                    world_size=info.world_size, timeout=timeout)
    return info, device


def restart_count(environ: Mapping[str, str] | None = None) -> int:
    """How many times torchrun has restarted this worker group (``TORCHELASTIC_RESTART_COUNT``;
    0 on the first attempt and outside torchrun). Counted by each node's agent: nodes whose own
    workers did not fail may count fewer restarts."""
    env = os.environ if environ is None else environ
    try:
        return max(0, int(env.get("TORCHELASTIC_RESTART_COUNT", "0")))
    except ValueError:
        return 0


def job_id(environ: Mapping[str, str] | None = None) -> str | None:
    """torchrun's run id (``TORCHELASTIC_RUN_ID``: ``--rdzv-id``, a fresh random one under
    ``--standalone``, ``none`` when not given), the same in every worker of the job and across its
    restarts; None outside torchrun."""
    env = os.environ if environ is None else environ
    return env.get("TORCHELASTIC_RUN_ID") or None


def _attempt_store(world_size: int, timeout: timedelta) -> dist.Store | None:
    """The store this attempt's process group meets in, or None for ``env://``'s own.

    torchrun's c10d and static rendezvous let the workers share the agent's TCPStore
    (``TORCHELASTIC_USE_AGENT_STORE=True``) and keep that store across restarts, so a restarted
    group would read the keys of the attempt before it (the addresses of dead workers: gloo
    fails with 'Connection refused'). Each attempt's keys get their own prefix, as torch itself
    did before it shared the store. The restart count is per node; a multi-node job whose nodes
    may count differently should disable the sharing (``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``
    for torchrun), which also makes this return None.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
                          is_master=False, timeout=timeout)
    return dist.PrefixStore(f"crema/attempt_{restart_count()}", store)


def cleanup() -> None:
    """Leave the process group if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def barrier() -> None:
    if is_initialized():
        dist.barrier()


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward returns to each rank the summed gradient of its
    own slice (every rank's loss may depend on every rank's embeddings)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        ctx.rank, ctx.rows = dist.get_rank(), x.shape[0]
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        # all_reduce + slice rather than reduce_scatter: gloo has no reduce_scatter.
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows:(ctx.rank + 1) * ctx.rows]


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x (n, ...)`` from every rank in rank order: ``(world * n, ...)``.

    Gradients flow back to the tensor each rank contributed. All ranks must pass the same
    ``n`` (the sampler drops incomplete batches). Without a process group this is ``x``.
    """
    if not is_initialized() or dist.get_world_size() == 1:
        return x
    return _GatherWithGrad.apply(x)


def gather_no_grad(x: Tensor) -> Tensor:
    """Like :func:`gather_with_grad` for tensors that need no gradient (ids, labels)."""
    if not is_initialized() or dist.get_world_size() == 1:
        return x
    parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts, dim=0)


def all_reduce_mean(x: Tensor) -> Tensor:
    """The mean of ``x`` over ranks (a copy; ``x`` itself is left alone)."""
    if not is_initialized():
        return x
    x = x.detach().clone()
    dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x / dist.get_world_size()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` is True on any rank (e.g. a stop signal reached one process)."""
    if not is_initialized():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj`` as a list in rank order (``[obj]`` for a single process)."""
    if not is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
