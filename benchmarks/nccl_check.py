"""DDP over a real process group, even with one process: under ``torchrun --nproc_per_node 1``
``crema pretrain`` runs without one (crema.runtime joins a group only for 2+ processes), so this
joins NCCL (gloo on a CPU) itself, all-reduces a tensor and takes a few bf16 steps of a
DistributedDataParallel-wrapped ``tiny`` CREMA (``benchmarks/gpu_session.sh`` runs it):

    torchrun --standalone --nproc_per_node 1 benchmarks/nccl_check.py --steps 5
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
import torch.distributed as dist


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--window", type=int, default=2500)
    args = p.parse_args(argv)

    from crema.config import ModelConfig, ObjectiveConfig
    from crema.model.crema import CREMA

    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    ones = torch.ones(4, device=device)
    dist.all_reduce(ones)
    assert ones.sum().item() == 4 * world, ones
    torch.manual_seed(0)
    model = CREMA(ModelConfig.from_size("tiny", window=args.window), ObjectiveConfig()).to(device).train()
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if cuda else None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(args.batch, 12, args.window, device=device)
    losses, start = [], time.perf_counter()
    for _ in range(args.steps):
        with torch.autocast(device.type, torch.bfloat16):
            loss = ddp(x)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 4))
    seconds = time.perf_counter() - start
    if rank == 0:
        print(f"backend {dist.get_backend()} world {world} all_reduce ok; DDP bf16 steps {args.steps} "
              f"losses {losses} in {seconds:.2f} s", flush=True)
    dist.destroy_process_group()
    ok = all(torch.isfinite(torch.tensor(losses)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
