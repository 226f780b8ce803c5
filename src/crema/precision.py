"""Which number format the model computes in: bf16 where the hardware multiplies it fast, else fp32.

One setting, ``auto`` / ``bf16`` / ``fp32`` (``off`` is accepted as ``fp32``, the old spelling of
the pretraining flag), resolved per device:

- ``auto``: bf16 on a CUDA GPU that supports it, and on a CPU whose instruction set has bf16
  matrix multiplies (Linux ``/proc/cpuinfo`` flag ``avx512_bf16`` or ``amx_bf16``); fp32
  everywhere else. The environment variable ``CREMA_PRECISION`` (``bf16`` or ``fp32``) replaces
  what ``auto`` means, for every command and API call at once.
- ``bf16`` / ``fp32``: forced. bf16 on a CPU without the instructions runs (emulated) but slowly.

bf16 runs under :func:`torch.autocast`, so weights stay fp32 (checkpoints, optimiser state and
ONNX exports are unchanged) and only matrix multiplies and convolutions take bf16 inputs; losses
and softmaxes that need the range stay fp32 (see :mod:`crema.model.contrastive` and
:class:`crema.model.blocks.Attention`).
"""
from __future__ import annotations

import contextlib
import functools
import os
import sys
from typing import Callable

import torch

ENV_VAR = "CREMA_PRECISION"
SETTINGS = ("auto", "bf16", "fp32", "off")
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags the Linux kernel reports (empty elsewhere or when unreadable)."""
    if not sys.platform.startswith("linux"):
        return frozenset()
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bf16() -> bool:
    """True when this CPU multiplies bf16 matrices natively (AVX512-BF16 or AMX-BF16)."""
    return any(flag in cpu_flags() for flag in _CPU_BF16_FLAGS)


def device_has_bf16(device: torch.device | str) -> bool:
    """True when ``device`` computes bf16 matrix multiplies faster than fp32."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return cpu_has_bf16()
    return False


def check_setting(setting: str) -> str:
    """Return ``setting`` if it is one of :data:`SETTINGS`, else raise ValueError naming them."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown precision {setting!r}; choose auto, bf16 or fp32")
    return setting


def resolve(setting: str, device: torch.device | str) -> str:
    """``"bf16"`` or ``"fp32"``: what ``setting`` (auto/bf16/fp32/off) means on ``device``."""
    check_setting(setting)
    if setting == "auto":
        forced = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
        if forced not in SETTINGS:
            raise ValueError(f"{ENV_VAR}={forced!r}: choose auto, bf16 or fp32")
        setting = forced
    if setting == "auto":
        return "bf16" if device_has_bf16(device) else "fp32"
    return "bf16" if setting == "bf16" else "fp32"


def autocast(device: torch.device | str, setting: str) -> contextlib.AbstractContextManager:
    """A context that runs the model in the resolved precision: bf16 autocast, or nothing."""
    device = torch.device(device)
    if resolve(setting, device) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def autocast_method(method: Callable) -> Callable:
    """Decorate a method of an object with ``device`` and ``precision`` attributes so that it runs
    under :func:`autocast` for them (inference helpers of :class:`crema.use.api.CremaModel`)."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with autocast(self.device, self.precision):
            return method(self, *args, **kwargs)

    return wrapper
