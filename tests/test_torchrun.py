"""``crema pretrain`` under real ``torchrun`` jobs on this machine (gloo, CPU, one thread each).

- Two nodes of one process (two torchrun agents meeting at a c10d rendezvous on 127.0.0.1) end
  with the same weights as one node of two processes: bit for bit, since every rank computes the
  same thing whichever node it sits on, and gloo's sums do not depend on where the ranks run.
- A worker SIGKILLed after a checkpoint, under ``--max-restarts 1``: torchrun restarts the group,
  the new workers find this job's checkpoint (``crema.train.restart``) and resume it, and the run
  ends with the uninterrupted run's weights, bit for bit (a resume replays data order, masks and
  RNG exactly).

The three jobs (reference, two nodes, killed) take about 20-35 s each on 2 busy cores, nearly all
of it starting Python and torch. Every process has a timeout and is killed in a ``finally``.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from crema.config_io import to_dict
from crema.runtime import job_id, restart_count
from crema.train.checkpoint import load_training_state
from crema.train.restart import RUN_ID_KEY, checkpoint_job, restart_warnings, resume_after_restart
from fixtures_model import tiny_run_config

STEPS, CKPT_EVERY = 12, 3
TORCHRUN = Path(sys.executable).with_name("torchrun")
JOB_TIMEOUT = 240   # seconds for one torchrun job (agents, workers, a restart); about 30 s normally


def free_port() -> int:
    """A TCP port nobody listens on right now (the kernel's pick for port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (torchrun's workers are its direct children)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue  # gone meanwhile
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # field 4, after "(comm)"
                found.append(int(entry))
    return found


def worker_rank(pid: int) -> int | None:
    """The ``RANK`` torchrun gave the worker ``pid`` (from its environment), None if unknown."""
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [int(item[5:]) for item in env if item.startswith(b"RANK=")]
    return ranks[0] if ranks else None


class Agents:
    """torchrun agents started by one test; whatever is still running at the end is killed
    (the agents, and their workers, which torchrun starts in sessions of their own)."""

    def __init__(self, folder: Path, **env: str):
        self.folder, self.procs = folder, []
        self.env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **env)

    def start(self, launcher: list[str], recipe: Path, out: Path) -> subprocess.Popen:
        log = open(self.folder / f"agent{len(self.procs)}.log", "w")
        cmd = [str(TORCHRUN), *launcher, "-m", "crema", "pretrain", "--config", str(recipe),
               "--out", str(out), "--no-progress"]
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                start_new_session=True)
        log.close()
        proc.log_path = self.folder / f"agent{len(self.procs)}.log"
        self.procs.append(proc)
        return proc

    def wait(self, deadline: float) -> list[int]:
        return [p.wait(timeout=max(1.0, deadline - time.monotonic())) for p in self.procs]

    def output(self) -> str:
        return "\n".join(p.log_path.read_text(errors="replace") for p in self.procs)

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                for pid in children(proc.pid):
                    _kill_group(pid)
                _kill_group(proc.pid)
                proc.wait(timeout=30)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_job(folder: Path, recipe: Path, out: Path, *launchers: list[str], **env: str) -> str:
    """Run one torchrun agent per launcher to the end (``env``: extra environment variables);
    returns their output."""
    agents = Agents(folder, **env)
    try:
        for launcher in launchers:
            agents.start(launcher, recipe, out)
        codes = agents.wait(time.monotonic() + JOB_TIMEOUT)
        assert codes == [0] * len(launchers), agents.output()[-4000:]
        return agents.output()
    finally:
        agents.kill_all()


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "model.safetensors"))


def logged_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]


def assert_same_weights(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert got.keys() == expected.keys()
    differ = [k for k in expected if not torch.equal(got[k], expected[k])]
    assert not differ, f"{len(differ)} tensors differ, e.g. {differ[0]}"


@pytest.fixture(scope="module")
def recipe(unlabeled_corpus, tiny_model_config, tmp_path_factory) -> Path:
    """The run's settings as a ``--config`` file: the test-sized model, 12 steps of batch 4 per
    process, a checkpoint every 3 steps."""
    cfg = tiny_run_config(tiny_model_config, unlabeled_corpus.path, "unused", steps=STEPS,
                          batch_size=4, ckpt_every=CKPT_EVERY, log_every=1)
    path = tmp_path_factory.mktemp("torchrun") / "recipe.json"
    path.write_text(json.dumps(to_dict(cfg)))
    return path


@pytest.fixture(scope="module")
def reference(recipe, tmp_path_factory) -> dict[str, torch.Tensor]:
    """Final weights of one node with two processes, uninterrupted."""
    folder = tmp_path_factory.mktemp("torchrun_reference")
    run = folder / "run"
    run_job(folder, recipe, run, ["--standalone", "--nproc-per-node", "2"])
    assert load_training_state(run)["world_size"] == 2
    assert logged_steps(run) == list(range(1, STEPS + 1))
    weights = final_weights(run)
    return weights


def test_two_nodes_of_one_process_train_like_one_node_of_two(reference, recipe, tmp_path):
    port, run = free_port(), tmp_path / "run"
    node = ["--nnodes", "2", "--nproc-per-node", "1", "--max-restarts", "1", "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "two-nodes"]
    # as docs/SCALE.md launches several nodes: each attempt in a store of its own
    output = run_job(tmp_path, recipe, run, [*node, "--node-rank", "0"], [*node, "--node-rank", "1"],
                     TORCH_DISABLE_SHARE_RDZV_TCP_STORE="1")
    assert "crema pretrain: warning" not in output   # the documented launch can resume on restarts
    assert "crema pretrain: torchrun restart" not in output             # nothing failed
    state = load_training_state(run)
    assert state["world_size"] == 2 and state["step"] == STEPS
    assert state[RUN_ID_KEY] == "two-nodes"
    assert logged_steps(run) == list(range(1, STEPS + 1))
    assert_same_weights(final_weights(run), reference)


def test_a_killed_worker_is_restarted_and_resumes_its_checkpoint(reference, recipe, tmp_path):
    run = tmp_path / "run"
    agents = Agents(tmp_path)
    try:
        agent = agents.start(["--standalone", "--nproc-per-node", "2", "--max-restarts", "1"], recipe, run)
        deadline = time.monotonic() + JOB_TIMEOUT
        victim = None
        while victim is None:
            assert agent.poll() is None and time.monotonic() < deadline, agents.output()[-4000:]
            if _checkpoint_step(run) >= CKPT_EVERY:
                victim = next((pid for pid in children(agent.pid) if worker_rank(pid) == 0), None)
            time.sleep(0.02)
        killed_at = _checkpoint_step(run)
        assert killed_at < STEPS, "the run ended before a worker could be killed"
        os.kill(victim, signal.SIGKILL)   # rank 0: the process that holds the lock and writes

        assert agents.wait(deadline) == [0], agents.output()[-4000:]
        output = agents.output()
    finally:
        agents.kill_all()
    resumed = re.search(r"torchrun restart: resuming .* checkpoint at step (\d+)", output)
    assert resumed, output[-4000:]
    assert int(resumed.group(1)) % CKPT_EVERY == 0 and CKPT_EVERY <= int(resumed.group(1)) < STEPS
    state = load_training_state(run)
    assert state["world_size"] == 2 and state["step"] == STEPS
    assert logged_steps(run) == list(range(1, STEPS + 1))   # lines after the checkpoint dropped
    assert_same_weights(final_weights(run), reference)


def _checkpoint_step(run: Path) -> int:
    """The step of the run's current checkpoint (0 before the first)."""
    try:
        return int(json.loads((run / "config.json").read_text())["step"])
    except (OSError, ValueError, KeyError):
        return 0  # not written yet, or being replaced


# ----------------------------------------------------------------------------- the decision alone

def _state(folder: Path, run_id: str | None, step: int = 6) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"step": step, RUN_ID_KEY: run_id, "optimizer": {}}, folder / "training_state.pt")
    return folder


def _torchrun_env(run_id: str, restarts: int) -> dict[str, str]:
    return {"TORCHELASTIC_RUN_ID": run_id, "TORCHELASTIC_RESTART_COUNT": str(restarts)}


def test_restart_resumes_only_a_checkpoint_of_the_same_job(tmp_path):
    run = _state(tmp_path / "run", "job-a")
    assert checkpoint_job(run) == ("job-a", 6)
    resume, notice = resume_after_restart(run, False, _torchrun_env("job-a", 1))
    assert resume and "at step 6" in notice
    # the run id, not the per-node count, decides: a node whose agent counted no failure agrees
    assert resume_after_restart(run, False, _torchrun_env("job-a", 0))[0]
    # another job's checkpoint is not this run's: refused as before unless --resume/--overwrite
    assert resume_after_restart(run, False, _torchrun_env("job-b", 0)) == (False, None)
    resume, notice = resume_after_restart(run, False, _torchrun_env("job-b", 2))
    assert not resume and "starting from step 0" in notice
    # outside torchrun, and with --resume, nothing changes
    assert resume_after_restart(run, False, {}) == (False, None)
    assert resume_after_restart(run, True, _torchrun_env("job-b", 1)) == (True, None)


def test_restart_without_a_run_id_needs_a_restart_count(tmp_path):
    run = _state(tmp_path / "run", "none")   # torchrun without --rdzv-id (static rendezvous)
    assert resume_after_restart(run, False, _torchrun_env("none", 0)) == (False, None)
    assert resume_after_restart(run, False, _torchrun_env("none", 1))[0]
    # checkpoints written outside torchrun, or before run ids were recorded, are never its own
    plain = _state(tmp_path / "plain", None)
    assert not resume_after_restart(plain, False, _torchrun_env("none", 1))[0]
    assert checkpoint_job(tmp_path / "empty") == (None, None)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "training_state.pt").write_bytes(b"not a torch file")
    assert checkpoint_job(tmp_path / "bad") == (None, None)


def test_launcher_variables_are_read_safely():
    assert restart_count({}) == 0 and restart_count({"TORCHELASTIC_RESTART_COUNT": "3"}) == 3
    assert restart_count({"TORCHELASTIC_RESTART_COUNT": "x"}) == 0
    assert job_id({}) is None and job_id({"TORCHELASTIC_RUN_ID": "abc"}) == "abc"


def test_a_multi_node_job_that_could_not_resume_is_warned_at_its_start():
    shared = {"GROUP_WORLD_SIZE": "2", "TORCHELASTIC_MAX_RESTARTS": "3", "TORCHELASTIC_USE_AGENT_STORE": "True",
              "TORCHELASTIC_RUN_ID": "none"}
    found = restart_warnings(shared)
    assert len(found) == 2
    assert "TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1" in found[0] and "--rdzv-id" in found[1]
    fixed = dict(shared, TORCHELASTIC_USE_AGENT_STORE="False", TORCHELASTIC_RUN_ID="job-7")
    assert restart_warnings(fixed) == []
    # one node, or no restarts asked for: nothing to warn about
    assert restart_warnings(dict(shared, GROUP_WORLD_SIZE="1")) == []
    assert restart_warnings(dict(shared, TORCHELASTIC_MAX_RESTARTS="0")) == []
    assert restart_warnings({}) == []
