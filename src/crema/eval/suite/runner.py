"""Running a suite: every pending step in order, each saved the moment it ends, and
``results.json`` kept current, so that an interrupted suite resumes where it stopped."""
from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ...atomic import atomic_write_text
from ...config_io import load_json, save_json, to_dict
from ...errors import ConfigError, CremaError
from ...interrupts import raise_if_stopped
from ...runtime import torch_threads
from ..results import write_results
from .config import SuiteConfig, load_suite_config, suite_from_dict, with_run_settings
from .plan import Step, plan_steps
from .work import run_step
from .workspace import Workspace

RESULTS_EVERY_S = 30.0  # rewrite results.json at most this often while a suite runs (and at the end)
# may change between a run and its resumption: where the data live, the machine, and the prose
NOT_IDENTITY = ("corpora", "device", "threads", "description")


def step_file(out: Path, step: Step) -> Path:
    return out / "steps" / f"{step.id.replace(':', '_')}.json"


def identity(cfg: SuiteConfig) -> dict:
    """What must not change between a run and its resumption: everything but where the corpora
    live (their contents are fingerprinted), the device, the threads and the description."""
    return {k: v for k, v in to_dict(cfg).items() if k not in NOT_IDENTITY}


def _saved_identity(path: Path) -> dict | None:
    """The identity of the config a run started with (``OUT/suite.json``, in this format or the
    untyped one written before); None when it no longer reads as a suite config."""
    try:
        return identity(suite_from_dict(load_json(path)))
    except ConfigError:
        return None


class Suite:
    """A suite run in ``out``: the config's :func:`~crema.eval.suite.plan.plan_steps`, step by step."""

    def __init__(self, cfg: SuiteConfig, out: str | os.PathLike, progress: bool = True):
        self.ws = Workspace(cfg, out, progress)
        self.cfg, self.out, self.progress = cfg, Path(out), progress

    def steps(self) -> list[Step]:
        steps = plan_steps(self.cfg, self.ws.loso_sources())
        ids = [s.id for s in steps]
        if len(set(ids)) != len(ids):
            raise CremaError("suite config: two steps have the same id (a task listed twice?)")
        return steps

    def collect(self, steps: list[Step]) -> tuple[list[dict], list[dict]]:
        """The results of the finished steps, and every step's status."""
        results, status = [], []
        for step in steps:
            path = step_file(self.out, step)
            if path.is_file():
                record = load_json(path)
                results += record.get("results", [])
                status.append({"step": step.id, "status": record["status"], "seconds": record.get("seconds"),
                               **({"reason": record["reason"]} if "reason" in record else {})})
            else:
                status.append({"step": step.id, "status": "pending"})
        return results, status

    def write_results(self, steps: list[Step]) -> Path:
        results, status = self.collect(steps)
        write_results(self.out / "results.json", results, self.ws.data_section(),
                      {"suite": to_dict(self.cfg), "steps": status, "pretraining_overlap": self.ws.overlap_note()})
        return self.out / "results.json"

    def claim_folder(self, resume: bool) -> None:
        """Refuse to mix two suites in one folder, then record this one's config."""
        steps_dir = self.out / "steps"
        if steps_dir.is_dir() and any(steps_dir.iterdir()) and not resume:
            raise CremaError(f"{self.out} already holds suite results; pass --resume to continue it "
                             "or choose another --out")
        saved = self.out / "suite.json"
        if resume and saved.is_file() and _saved_identity(saved) != identity(self.cfg):
            raise CremaError(f"{self.out}: the suite config differs from the one this run started with "
                             f"({saved}); resume with the same config or choose another --out")
        save_json(saved, self.cfg)

    def run(self, resume: bool = False) -> dict:
        """Run every pending step; returns ``{"ran", "skipped", "already_done", "steps", "seconds"}``."""
        self.ws.check_corpora()
        self.claim_folder(resume)
        steps = self.steps()
        counts = {"ran": 0, "skipped": 0, "already_done": 0}
        started = last_write = time.perf_counter()
        bar = tqdm(steps, desc=f"suite {self.cfg.name}", unit="step", disable=not self.progress)
        try:
            for step in bar:
                if step_file(self.out, step).is_file():
                    counts["already_done"] += 1
                    continue
                bar.set_postfix_str(step.id)
                counts[self.run_step(step)] += 1
                raise_if_stopped()  # a Ctrl-C or SIGTERM whose exception C code swallowed stops here
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
            record, outcome = {"status": "done", **run_step(self.ws, step)}, "ran"
        except CremaError as exc:  # the data cannot support this step: record why, go on
            record = {"status": "skipped", "reason": str(exc), "results": [],
                      "traceback": traceback.format_exc(limit=3)}
            outcome = "skipped"
        record.update(step=step.id, kind=step.kind, seconds=round(time.perf_counter() - t0, 3))
        # compact: the results inside carry 1000 bootstrap replicates each
        atomic_write_text(step_file(self.out, step), json.dumps(record, separators=(",", ":")) + "\n")
        return outcome


def run_suite(config_path: str | os.PathLike, out: str | os.PathLike, resume: bool = False,
              corpus_overrides: dict[str, str] | None = None, progress: bool = True,
              device: str | None = None, threads: int | None = None) -> dict:
    """Load a suite config and run it into ``out`` (see :class:`Suite`)."""
    cfg = with_run_settings(load_suite_config(config_path, corpus_overrides), device, threads)
    with torch_threads(cfg.threads):
        return Suite(cfg, out, progress).run(resume=resume)
