"""bf16 on CPU and the speed-only code paths: each must compute what the fp32 / plain path does.

- the chunked conv stem gives bit-identical tokens (weight gradients differ only in summation order);
- explicit attention (bf16 training on CPU) equals the fused kernel in fp32;
- precision settings resolve per device, ``CREMA_PRECISION`` replaces ``auto``;
- bf16 embeddings of real ECGs (the shipped sample, the shipped model) match fp32 (cosine >= 0.9999);
- a short seeded pretraining run in bf16 follows the fp32 loss curve;
- the ``crema`` command re-executes itself once with glibc's allocator tunables.

bf16 is forced in the parity tests, so they run (emulated, slower) on CPUs without bf16 too.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from fixtures_model import tiny_run_config

import crema
from crema import cli, kernels, precision
from crema.config import ModelConfig
from crema.data.readers import read_record
from crema.model.blocks import Attention, explicit_attention, use_explicit_attention
from crema.model.sit import PatchEmbed, SiTEncoder
from crema.paths import sample_root
from crema.train.pretrain import pretrain

SHIPPED = "crema-mini-ecg12"


# ----------------------------------------------------------------------------- stem chunking

@pytest.mark.parametrize("chunk", [100, 600])
def test_chunked_stem_is_bit_identical(chunk):
    torch.manual_seed(0)
    stem = PatchEmbed(patch_size=50, channels=8, dim=32)
    patches = torch.randn(1234, 50, requires_grad=True)  # not a multiple of any chunk
    with kernels.override(stem_chunk=0):
        whole = stem(patches)
    whole.square().sum().backward()
    grads = [p.grad.clone() for p in stem.parameters()], patches.grad.clone()
    stem.zero_grad()
    patches.grad = None
    with kernels.override(stem_chunk=chunk):
        parts = stem(patches)
    parts.square().sum().backward()
    assert torch.equal(whole, parts)
    assert torch.equal(grads[1], patches.grad)
    # Weight gradients are sums over patches, added chunk by chunk: the same up to rounding.
    assert all(torch.allclose(a, p.grad, rtol=1e-4, atol=1e-6) for a, p in zip(grads[0], stem.parameters()))


# ----------------------------------------------------------------------------- attention

def test_explicit_attention_equals_the_fused_kernel_with_a_mask():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 40, 16) for _ in range(3))
    valid = torch.rand(2, 40) > 0.3
    mask = valid[:, None, None, :]
    assert torch.allclose(explicit_attention(q, k, v, mask), F.scaled_dot_product_attention(q, k, v, mask),
                          atol=1e-5)
    assert torch.allclose(explicit_attention(q, k, v), F.scaled_dot_product_attention(q, k, v), atol=1e-5)


def test_explicit_attention_in_bf16_on_cpu_for_training_and_wide_heads():
    narrow, wide = torch.randn(2, 4, 8), torch.randn(2, 4, 64)
    assert not use_explicit_attention(wide)                                # fp32
    assert not use_explicit_attention(narrow.bfloat16())                   # bf16 inference, d_h 8
    assert use_explicit_attention(wide.bfloat16())                         # bf16 inference, d_h 64
    assert use_explicit_attention(narrow.bfloat16().requires_grad_())      # bf16 training


def test_explicit_attention_in_batch_chunks_is_the_same():
    from crema.model import blocks

    torch.manual_seed(0)
    q, k, v = (torch.randn(7, 3, 20, 16) for _ in range(3))
    mask = (torch.rand(7, 20) > 0.3)[:, None, None, :]
    with torch.inference_mode():
        whole = explicit_attention(q, k, v, mask)
        with kernels.override(attention_scores_bytes=2 * 3 * 20 * 20 * 4):  # 2 rows a chunk
            assert torch.equal(explicit_attention(q, k, v, mask), whole)
            assert torch.equal(explicit_attention(q, k, v), blocks._attend(q, k, v, None, 0.0))


def test_attention_module_in_bf16_training_is_close_to_fp32():
    torch.manual_seed(0)
    attn = Attention(32, 2)
    x = torch.randn(2, 30, 32, requires_grad=True)
    ref = attn(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = attn(x)
    assert low.dtype == torch.bfloat16
    assert F.cosine_similarity(ref.flatten(), low.float().flatten(), dim=0) > 0.999
    low.float().sum().backward()  # the explicit path has a backward
    assert x.grad is not None and torch.isfinite(x.grad).all()


# ----------------------------------------------------------------------------- precision settings

def test_settings_resolve_per_device(monkeypatch):
    monkeypatch.delenv(precision.ENV_VAR, raising=False)
    assert precision.resolve("fp32", "cpu") == precision.resolve("off", "cpu") == "fp32"
    assert precision.resolve("bf16", "cpu") == "bf16"
    assert precision.resolve("auto", "cpu") == ("bf16" if precision.cpu_has_bf16() else "fp32")
    monkeypatch.setenv(precision.ENV_VAR, "fp32")
    assert precision.resolve("auto", "cpu") == "fp32"
    assert precision.resolve("bf16", "cpu") == "bf16"  # an explicit setting wins over the variable
    monkeypatch.setenv(precision.ENV_VAR, "bf16")
    assert precision.resolve("auto", "cpu") == "bf16"
    with pytest.raises(ValueError, match="choose auto, bf16 or fp32"):
        precision.resolve("fp16", "cpu")
    monkeypatch.setenv(precision.ENV_VAR, "half")
    with pytest.raises(ValueError, match="CREMA_PRECISION"):
        precision.resolve("auto", "cpu")


def test_cpu_flags_detection_matches_proc_cpuinfo():
    flags = precision.cpu_flags()
    assert isinstance(flags, frozenset)
    if flags:  # Linux: the flags line of the first CPU
        assert precision.cpu_has_bf16() == bool({"avx512_bf16", "amx_bf16"} & flags)


def test_autocast_context_follows_the_setting():
    x = torch.randn(4, 8)
    w = torch.randn(8, 8)
    with precision.autocast("cpu", "bf16"):
        assert (x @ w).dtype == torch.bfloat16
    with precision.autocast("cpu", "fp32"):
        assert (x @ w).dtype == torch.float32


# ----------------------------------------------------------------------------- parity on real ECGs

def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_bf16_embeddings_match_fp32_on_the_shipped_sample(one_torch_thread):
    records = sorted((sample_root() / "records100" / "00000").glob("*.hea"))[:24]
    fp32 = crema.load(SHIPPED, device="cpu", precision="fp32")
    bf16 = crema.load(SHIPPED, device="cpu", precision="bf16")
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    a, b = fp32.embed(records), bf16.embed(records)
    assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
    assert _cosines(a, b).min() >= 0.9999


def test_bf16_tiny_encoder_matches_fp32_on_real_ecgs(one_torch_thread):
    """The wider ``tiny`` preset (random init) on ten-second sample ECGs, batch and single."""
    model = crema.load(SHIPPED, device="cpu", precision="fp32")
    records = sorted((sample_root() / "records100" / "00000").glob("*.hea"))[:8]
    prepared = [model.prepare(read_record(path)) for path in records]
    x = torch.from_numpy(np.concatenate([p.signals for p in prepared]))[..., :2500]
    torch.manual_seed(0)
    encoder = SiTEncoder(ModelConfig.from_size("tiny", window=2500)).eval()
    with torch.inference_mode():
        ref = encoder(x)
        with precision.autocast("cpu", "bf16"):
            low = encoder(x).float()
    assert _cosines(ref.numpy(), low.numpy()).min() >= 0.9999


def test_bf16_pretraining_follows_the_fp32_loss_curve(tiny_model_config, tiny_ptbxl_corpus, tmp_path,
                                                      one_torch_thread):
    logs = {}
    for amp in ("fp32", "bf16"):
        cfg = tiny_run_config(tiny_model_config, tiny_ptbxl_corpus.path, tmp_path / amp, steps=8, amp=amp)
        pretrain(cfg, progress=False)
        logs[amp] = [json.loads(line) for line in (tmp_path / amp / "log.jsonl").read_text().splitlines()]
    for key in ("loss", "loss_rec", "loss_con"):
        ref = np.array([r[key] for r in logs["fp32"]])
        low = np.array([r[key] for r in logs["bf16"]])
        assert len(ref) == len(low) == 8
        assert np.abs(low - ref).max() <= 0.02 * np.abs(ref).max() + 1e-3, (key, ref, low)


# ----------------------------------------------------------------------------- allocator settings

def test_allocator_environment_rules():
    env = {"PATH": "/bin"}
    new = kernels.allocator_environment(env, "linux", "glibc")
    assert new["GLIBC_TUNABLES"] == kernels.MALLOC_TUNABLES and new["PATH"] == "/bin"
    assert kernels.allocator_environment(new, "linux", "glibc") is None               # never twice
    assert kernels.allocator_environment(env, "darwin", "") is None                   # glibc only
    assert kernels.allocator_environment(env, "linux", "") is None                    # musl
    assert kernels.allocator_environment({**env, kernels.NO_REEXEC_ENV: "1"}, "linux", "glibc") is None
    other = kernels.allocator_environment({"GLIBC_TUNABLES": "glibc.pthread.rseq=0"}, "linux", "glibc")
    assert other["GLIBC_TUNABLES"] == "glibc.pthread.rseq=0:" + kernels.MALLOC_TUNABLES
    own = {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1000"}
    assert kernels.allocator_environment(own, "linux", "glibc") is None               # the user's choice
    mine = kernels.allocator_environment({"CREMA_MALLOC_TUNABLES": "glibc.malloc.arena_max=2"}, "linux", "glibc")
    assert mine["GLIBC_TUNABLES"] == "glibc.malloc.arena_max=2"                       # the policy's setting
    assert kernels.allocator_environment({"CREMA_MALLOC_TUNABLES": ""}, "linux", "glibc") is None


@pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                    reason="the allocator settings are glibc's")
@pytest.mark.parametrize("opt_out", [False, True])
def test_the_command_re_executes_once_with_the_allocator_settings(opt_out):
    code = ("import os; from crema import cli; cli.reexec_with_allocator_settings(); "
            "print(os.environ.get('GLIBC_TUNABLES'), os.getpid())")
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "CREMA_REEXECED")}
    env["CREMA_NO_REEXEC"] = "1" if opt_out else ""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split("\n")
    assert len([line for line in lines if line]) == 1  # the code ran once: exec replaced the process
    assert lines[0].split()[0] == ("None" if opt_out else kernels.MALLOC_TUNABLES)


# ----------------------------------------------------------------------------- the MFU benchmark's FLOPs

def _mfu_module():
    import importlib

    return importlib.import_module("mfu")  # benchmarks/ is on pytest's pythonpath


@pytest.mark.parametrize("workload", ["embed", "mae_step", "crema_step"])
def test_mfu_analytic_flops_equal_the_flop_counter(workload, one_torch_thread):
    """The benchmark's FLOP formulas against torch's FlopCounterMode (plus the CPU attention
    ops), in fp32 (fused attention) and bf16 training (explicit attention matmuls)."""
    mfu = _mfu_module()
    cfg = ModelConfig.from_size("mini", window=500)
    analytic = mfu.analytic_flops(cfg, workload, 0.75)
    if workload == "embed":
        _, run = mfu.embed_runs(cfg, 2)
    else:
        _, run = mfu.step_runs(cfg, workload.split("_")[0], 2)
    assert mfu.counted_flops(run, 2) == pytest.approx(analytic, rel=0.01)
    if workload != "embed":
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert mfu.counted_flops(run, 2) == pytest.approx(analytic, rel=0.01)


def test_onnx_export_runs_the_stem_whole(tiny_pretrain_checkpoint, tmp_path, one_torch_thread):
    """A chunk loop traced at the example's batch would break the dynamic batch axis."""
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from crema.use.onnx_export import check_parity, export_onnx

    model = crema.load(tiny_pretrain_checkpoint, device="cpu")
    with kernels.override(stem_chunk=7):  # far below the example's 2 x 12 x 20 patches
        path = export_onnx(model, tmp_path / "encoder.onnx")
    signals = np.random.default_rng(0).standard_normal((3, 12, model.window)).astype(np.float32)
    diffs = check_parity(model, path, signals, np.ones((3, 12), dtype=bool), batch_sizes=(1, 3))
    assert max(diffs.values()) < 1e-4


def test_inference_in_parts_of_the_batch_is_the_same(one_torch_thread):
    torch.manual_seed(0)
    encoder = SiTEncoder(ModelConfig.from_size("mini", window=500)).eval()
    x = torch.randn(11, 12, 500)
    lead_mask = torch.rand(11, 12) > 0.2
    with torch.no_grad():
        with kernels.override(inference_batch=0):
            whole = encoder(x, lead_mask=lead_mask)
        with kernels.override(inference_batch=4):
            parts = encoder(x, lead_mask=lead_mask)
    assert torch.allclose(whole, parts, atol=1e-5, rtol=1e-5)
    grad_mode = encoder(x[:5])  # with autograd: one pass (nothing to gain, gradients to keep)
    assert grad_mode.requires_grad
