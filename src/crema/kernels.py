"""How CREMA's kernels use this machine: the one place for settings that change speed and memory,
never results (except the attention kernel choice, which changes outputs by rounding only).

:class:`KernelPolicy` holds every such setting with the reason for its default and the benchmark
that measures it (the figures are in ``docs/BENCHMARKS.md``, never in code). The model reads the
policy in force, :func:`current`, on each call:

* :class:`crema.model.sit.SiTEncoder` runs inference (no autograd) in parts of
  ``inference_batch`` ECGs, and its conv stem over chunks of ``stem_chunk`` patches;
* :func:`crema.model.inference.infer` runs with ``inference_threads`` torch threads, and
  :func:`crema.model.inference.crop_average` the crops of a small call as one batch
  (``merge_crops_up_to``);
* :mod:`crema.model.blocks` picks explicit attention (bf16 on a CPU) for heads of at least
  ``explicit_attention_min_head_dim`` channels, and runs it without autograd in batch chunks whose
  scores fit in ``attention_scores_bytes``;
* the ``crema`` command (:mod:`crema.cli`) re-executes itself once with glibc's
  ``malloc_tunables`` (:func:`allocator_environment`).

Each setting is overridden by an environment variable (:data:`ENV`, read on first use; after
changing one inside a running process call :func:`reload`) or, for a block of code in this
process, by :func:`override`::

    with crema.kernels.override(inference_batch=0, stem_chunk=0):   # one pass, as before chunking
        model.embed(files)

Only the ``crema`` command reads the allocator settings, and only at start-up (glibc reads its
tunables when a process starts).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
from dataclasses import dataclass
from typing import Iterator, Mapping

from .errors import ConfigError


@dataclass(frozen=True)
class KernelPolicy:
    """Speed and memory settings of the kernels (see the module docstring for who reads them)."""

    # ECGs per encoder pass without autograd (0 = the whole batch in one pass). A batch of 64 ECGs
    # has activations of 50-120 MB, above glibc's largest mmap threshold: its default allocator gives
    # them back to the OS after each op and page-faults them in again. Parts of 8 stay below it and
    # in the caches; each ECG is computed on its own, so outputs do not change.
    # Measured by benchmarks/mfu.py (`embed b64` rows: variant `fp32` against `baseline`, faults/call).
    inference_batch: int = 8
    # Patches per pass of the conv stem (0 = all at once). The stem's feature maps for ~40k patches
    # (a batch of 64) are tens of MB that fall out of the caches between the conv and GELU passes;
    # each patch is its own sample, so chunks change no output. Measured by benchmarks/mfu.py (the
    # same rows; its `baseline` variant runs the stem whole).
    stem_chunk: int = 600
    # Explicit attention without autograd runs over batch chunks whose fp32 scores fit in this many
    # bytes: larger score tensors are mmapped by glibc and page-faulted in again on every call.
    # Measured by benchmarks/mfu.py (`bf16` rows of `tiny`, whose heads take the explicit path).
    attention_scores_bytes: int = 8 << 20
    # In bf16 on a CPU, inference attention runs as explicit matmuls for heads of at least this many
    # channels; below it the softmax dominates and the fused kernel is faster (training always runs
    # explicit: the fused kernel's bf16 backward is slow). The one setting here that changes outputs,
    # to bf16 rounding. Measured by benchmarks/mfu.py (rows `bf16 sdpa` and `bf16 explicit`).
    explicit_attention_min_head_dim: int = 32
    # A window longer than the model's input is covered by several crops. When a call's crops
    # number at most this many in all (crops x ECGs), they go through the model as one batch: one
    # pass of Python and kernel-launch overheads instead of one per crop, which dominate small
    # models at batch 1; larger calls run crop by crop, so memory per pass stays that of the batch
    # (0 = always crop by crop). Outputs do not change (each ECG is computed on its own).
    # Measured by benchmarks/inference_throughput.py --small-model (rows `encode 1 window`, `embed`).
    merge_crops_up_to: int = 4
    # torch CPU threads while crop-averaged inference runs (0 = torch's own setting, one per core).
    # A small model's ops are too small to share among threads, which then mostly wait for each
    # other, and for cores that other jobs hold: on a busy machine 1 is several times faster. Left
    # at torch's setting by default, which suits an idle machine and large batches. (Embeddings of
    # the shipped model are bit-identical on 1 and 2 threads here; a math library may in principle
    # split a reduction by thread count, as with torch's own setting.) Measured by
    # benchmarks/inference_throughput.py --small-model --small-threads 1 2 (rows per thread count).
    inference_threads: int = 0
    # glibc tunables the `crema` command re-executes itself with ("" = none): freed blocks stay in
    # the heap instead of going back to the OS, so batches do not page-fault their activations in
    # again. Measured by benchmarks/mfu.py (columns `allocator gain` and `faults/call (without)`).
    malloc_tunables: str = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=68719476736"

    def problems(self) -> list[str]:
        """What is wrong with the settings (an empty list when nothing is)."""
        found = [f"{name} must be a whole number >= 0, got {getattr(self, name)!r}"
                 for name in INT_FIELDS if not _is_count(getattr(self, name))]
        if self.attention_scores_bytes == 0:
            found.append("attention_scores_bytes must be positive")
        if not isinstance(self.malloc_tunables, str):
            found.append(f"malloc_tunables must be text, got {self.malloc_tunables!r}")
        return found


INT_FIELDS = ("inference_batch", "stem_chunk", "attention_scores_bytes", "explicit_attention_min_head_dim",
              "merge_crops_up_to", "inference_threads")
# The environment variable of each setting.
ENV: dict[str, str] = {
    "inference_batch": "CREMA_INFERENCE_BATCH",
    "stem_chunk": "CREMA_STEM_CHUNK",
    "attention_scores_bytes": "CREMA_ATTENTION_SCORES_BYTES",
    "explicit_attention_min_head_dim": "CREMA_EXPLICIT_ATTENTION_MIN_HEAD_DIM",
    "merge_crops_up_to": "CREMA_MERGE_CROPS_UP_TO",
    "inference_threads": "CREMA_INFERENCE_THREADS",
    "malloc_tunables": "CREMA_MALLOC_TUNABLES",
}
# Set to 1 to run the `crema` command with glibc's default allocator settings (no re-execution).
NO_REEXEC_ENV = "CREMA_NO_REEXEC"
# Set in the re-executed process, so that it never re-executes again.
REEXEC_MARK = "CREMA_REEXECED"
# The default tunables (what KernelPolicy().malloc_tunables holds).
MALLOC_TUNABLES = KernelPolicy.malloc_tunables

_lock = threading.Lock()
_overrides: list[KernelPolicy] = []                     # innermost last
_from_env: KernelPolicy | None = None                 # the environment's, read on first use


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def checked(policy: KernelPolicy, where: str = "kernel policy") -> KernelPolicy:
    """``policy``, or a :class:`~crema.errors.ConfigError` naming ``where`` and its problems."""
    problems = policy.problems()
    if problems:
        raise ConfigError(f"{where}: {'; '.join(problems)}")
    return policy


def from_environment(environ: Mapping[str, str] | None = None) -> KernelPolicy:
    """The defaults with each setting whose variable of :data:`ENV` is set (and not empty) replaced.

    Raises:
        ConfigError: a variable that is not a whole number >= 0 (for the number settings).
    """
    env = os.environ if environ is None else environ
    changes: dict[str, object] = {}
    for name, var in ENV.items():
        raw = env.get(var)
        if raw is None or (not raw.strip() and name != "malloc_tunables"):
            continue
        if name == "malloc_tunables":
            changes[name] = raw.strip()
            continue
        try:
            changes[name] = int(raw.strip())
        except ValueError:
            raise ConfigError(f"{var}={raw!r} is not a whole number") from None
    where = ", ".join(ENV[name] for name in changes) or "kernel policy"
    return checked(dataclasses.replace(KernelPolicy(), **changes), where)


def current() -> KernelPolicy:
    """The policy in force: the innermost :func:`override`, else :func:`from_environment`, read
    once, on first use (the model asks several times per call; :func:`reload` reads it again)."""
    if _overrides:
        return _overrides[-1]
    return _from_env if _from_env is not None else reload()


def reload() -> KernelPolicy:
    """Read the environment variables again (after changing them in this process); the policy."""
    global _from_env
    _from_env = from_environment()
    return _from_env


@contextlib.contextmanager
def override(policy: KernelPolicy | None = None, **changes) -> Iterator[KernelPolicy]:
    """Run the block with ``policy`` (default: the current one) with ``changes`` applied, in this
    whole process (the settings are the machine's, like torch's thread count); restored on leaving.

    Raises:
        ConfigError: a setting out of its range. TypeError: an unknown setting.
    """
    chosen = checked(dataclasses.replace(policy or current(), **changes))
    with _lock:
        _overrides.append(chosen)
    try:
        yield chosen
    finally:
        with _lock:
            _overrides.remove(chosen)


def allocator_environment(environ: Mapping[str, str], system: str, libc: str) -> dict[str, str] | None:
    """The environment to re-execute the ``crema`` command with so that glibc keeps freed memory
    (:attr:`KernelPolicy.malloc_tunables` of ``environ``), or None when the process should run as it
    is: not Linux/glibc, opted out (:data:`NO_REEXEC_ENV`), already re-executed, no tunables, or the
    user's own ``GLIBC_TUNABLES`` already setting an mmap threshold."""
    if not system.startswith("linux") or libc != "glibc":
        return None
    if environ.get(NO_REEXEC_ENV, "") not in ("", "0") or REEXEC_MARK in environ:
        return None
    tunables = from_environment(environ).malloc_tunables
    current_tunables = environ.get("GLIBC_TUNABLES", "")
    if not tunables or "glibc.malloc.mmap_threshold" in current_tunables:
        return None  # nothing to set, or the user chose their own allocator settings
    combined = f"{current_tunables}:{tunables}" if current_tunables else tunables
    return {**environ, "GLIBC_TUNABLES": combined, REEXEC_MARK: "1"}


__all__ = ["KernelPolicy", "ENV", "NO_REEXEC_ENV", "MALLOC_TUNABLES", "current", "override", "reload",
           "from_environment", "checked", "allocator_environment"]
