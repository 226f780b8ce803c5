"""torchrun restarts: a restarted pretraining continues from its own last checkpoint.

``torchrun --max-restarts N`` starts the whole worker group again, with the same command line,
when a worker dies (a process killed, out of memory, a node lost). Every checkpoint records the
torchrun job it was written by (``training_state.pt``'s ``torchrun_run_id``, torchrun's
``TORCHELASTIC_RUN_ID``), so a worker that finds a checkpoint of its own job in the run folder
is a restarted one and continues it, as ``--resume`` would; a restart that finds none (the
first attempt died before its first checkpoint) starts the run again. A new torchrun job over a
folder that another job wrote is not a restart: it is refused without ``--resume`` as before.

The run id is the same in every worker of a job, on every node, and across its restarts, so
all workers decide alike (the run folder must be on storage that every node sees, as resuming
needs anyway). The restart count (``TORCHELASTIC_RESTART_COUNT``) is not: each node's agent
counts its own failures. It is used only where torchrun gives no run id (``none``: static
rendezvous without ``--rdzv-id``), where a count > 0 is needed as well.

A multi-node job survives its restarts only with ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` set for
torchrun (each attempt's processes then meet in a store of their own; in the store torchrun
otherwise shares across restarts, :func:`crema.runtime.setup` can keep attempts apart only by
the per-node restart count, and a node whose agent did not count the failure waits forever) and
an ``--rdzv-id``: :func:`restart_warnings` says so at the start of such a job.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import torch

from ..model.checkpoint import STATE_FILE
from ..runtime import job_id, restart_count

RUN_ID_KEY = "torchrun_run_id"   # training_state.pt: the torchrun job that wrote the checkpoint
NO_RUN_ID = "none"               # torchrun's run id when --rdzv-id is not given


def checkpoint_job(out: str | os.PathLike) -> tuple[str | None, int | None]:
    """``(run id, step)`` of the checkpoint in the run folder ``out``: the torchrun job that
    wrote it (None: written outside torchrun, or before checkpoints recorded it) and its step;
    ``(None, None)`` when there is no readable checkpoint."""
    path = Path(out) / STATE_FILE
    if not path.is_file():
        return None, None
    try:
        # mmap: only the two small fields are read, not the optimiser state.
        state: Any = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - unreadable: not a checkpoint this job can continue
        return None, None
    if not isinstance(state, dict):
        return None, None
    run_id, step = state.get(RUN_ID_KEY), state.get("step")
    return (run_id if isinstance(run_id, str) else None), (step if isinstance(step, int) else None)


def restart_warnings(environ: Mapping[str, str] | None = None) -> list[str]:
    """What stops a torchrun job of several nodes with ``--max-restarts`` from resuming after a
    restart (empty for one node, no restarts, or outside torchrun); for rank 0 to print at the
    start, before any restart is needed."""
    env = os.environ if environ is None else environ
    try:
        nodes, restarts = int(env.get("GROUP_WORLD_SIZE", "1")), int(env.get("TORCHELASTIC_MAX_RESTARTS", "0"))
    except ValueError:
        return []
    if nodes <= 1 or restarts <= 0:
        return []
    found = []
    if env.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        found.append("set TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 for torchrun on every node: with the "
                     "store torchrun shares across restarts, a restart of a multi-node job can hang")
    if job_id(env) == NO_RUN_ID:
        found.append("give torchrun an --rdzv-id (e.g. the scheduler's job id): without one, a "
                     "restart cannot tell this job's checkpoints on every node")
    return found


def resume_after_restart(out: str | os.PathLike, resume: bool,
                         environ: Mapping[str, str] | None = None) -> tuple[bool, str | None]:
    """``(resume, notice)`` for this process of a run writing ``out``.

    ``resume`` as given, except under torchrun: True when ``out`` holds a checkpoint written by
    this same torchrun job (a restart); the notice (None when there is nothing to say) tells
    rank 0 what a restart does.
    """
    job, count = job_id(environ), restart_count(environ)
    if resume or job is None:
        return resume, None
    saved_job, step = checkpoint_job(out)
    own = saved_job == job and step is not None and (job != NO_RUN_ID or count > 0)
    if own:
        return True, f"torchrun restart: resuming {out} from this job's checkpoint at step {step}"
    if count > 0:
        return False, f"torchrun restart {count}: no checkpoint of this job in {out} yet, starting from step 0"
    return False, None
