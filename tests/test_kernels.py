"""The kernel policy (crema.kernels): defaults, environment variables, the override block, and
that the model reads it on each call (the speed paths themselves are checked in test_precision)."""
from __future__ import annotations

import pytest
import torch

from crema import kernels
from crema.config import ModelConfig
from crema.errors import ConfigError
from crema.model.sit import PatchEmbed, SiTEncoder


def test_environment_variables_replace_the_defaults():
    assert kernels.from_environment({}) == kernels.KernelPolicy()
    policy = kernels.from_environment({"CREMA_INFERENCE_BATCH": "0", "CREMA_STEM_CHUNK": " 128 ",
                                       "CREMA_MALLOC_TUNABLES": "", "CREMA_ATTENTION_SCORES_BYTES": ""})
    assert (policy.inference_batch, policy.stem_chunk, policy.malloc_tunables) == (0, 128, "")
    assert policy.attention_scores_bytes == kernels.KernelPolicy().attention_scores_bytes  # empty = default
    with pytest.raises(ConfigError, match="CREMA_STEM_CHUNK='many' is not a whole number"):
        kernels.from_environment({"CREMA_STEM_CHUNK": "many"})
    with pytest.raises(ConfigError, match="CREMA_INFERENCE_BATCH: inference_batch must be a whole number >= 0"):
        kernels.from_environment({"CREMA_INFERENCE_BATCH": "-1"})


def test_current_follows_the_environment_and_override_blocks(monkeypatch):
    monkeypatch.setenv("CREMA_STEM_CHUNK", "300")
    assert kernels.reload().stem_chunk == 300 == kernels.current().stem_chunk
    with kernels.override(stem_chunk=0, inference_batch=2) as inner:
        assert kernels.current() is inner and (inner.stem_chunk, inner.inference_batch) == (0, 2)
        with kernels.override(inference_batch=3):
            assert (kernels.current().stem_chunk, kernels.current().inference_batch) == (0, 3)
        assert kernels.current() is inner
    monkeypatch.delenv("CREMA_STEM_CHUNK")
    assert kernels.current().stem_chunk == 300  # read once, until reload
    assert kernels.reload() == kernels.KernelPolicy() == kernels.current()
    with pytest.raises(ConfigError, match="attention_scores_bytes must be positive"):
        with kernels.override(attention_scores_bytes=0):
            pass
    with pytest.raises(TypeError):
        with kernels.override(no_such_setting=1):
            pass
    assert kernels.current() == kernels.KernelPolicy()


def test_the_encoder_reads_the_policy_on_each_call(monkeypatch):
    torch.manual_seed(0)
    encoder = SiTEncoder(ModelConfig.from_size("mini", window=500)).eval()
    x = torch.randn(5, 12, 500)
    stem_calls, passes = [], []
    embed_chunk, forward_tokens = PatchEmbed.embed_chunk, SiTEncoder.forward_tokens
    monkeypatch.setattr(PatchEmbed, "embed_chunk", lambda self, p: stem_calls.append(len(p)) or embed_chunk(self, p))
    monkeypatch.setattr(SiTEncoder, "forward_tokens",
                        lambda self, x, **kw: passes.append(len(x)) or forward_tokens(self, x, **kw))
    with torch.no_grad():
        with kernels.override(inference_batch=2, stem_chunk=50):
            parts = encoder(x)
        assert passes == [2, 2, 1] and stem_calls[:3] == [50, 50, 50] and sum(stem_calls) == 5 * 12 * 10
        passes.clear()
        stem_calls.clear()
        with kernels.override(inference_batch=0, stem_chunk=0):
            whole = encoder(x)
    assert passes == [5] and stem_calls == [5 * 12 * 10]
    assert torch.equal(parts, whole)  # the policy changes how, never what


def test_crops_merged_or_not_give_the_same_windows(monkeypatch):
    """A small call's crops run as one batch (merge_crops_up_to), a larger one crop by crop: the
    same outputs; inference runs with inference_threads threads and restores torch's setting."""
    from crema.model.inference import infer

    torch.manual_seed(0)
    encoder = SiTEncoder(ModelConfig.from_size("mini", window=500)).eval()
    signals = torch.randn(3, 12, 1200).numpy()                 # 3 crops of 500 per window
    lead_mask = (torch.rand(3, 12) > 0.3).numpy()
    calls, threads = [], []

    def fn(x, mask):
        calls.append(len(x))
        threads.append(torch.get_num_threads())
        return encoder.embedding(x, mask, "leads")

    before = torch.get_num_threads()
    with kernels.override(merge_crops_up_to=6, inference_threads=1):
        merged = infer(fn, signals, lead_mask, crop=500, batch_size=2)
    assert calls == [6, 3] and set(threads) == {1} and torch.get_num_threads() == before
    calls.clear()
    with kernels.override(merge_crops_up_to=0):
        apart = infer(fn, signals, lead_mask, crop=500, batch_size=2)
    assert calls == [2, 2, 2, 1, 1, 1] and threads[-1] == before
    assert (merged == apart).all()


def test_a_single_record_is_read_in_the_calling_thread():
    import threading

    from crema.use.pipeline import Pool

    with Pool(2) as pool:
        assert list(pool.map(lambda i: threading.current_thread().name, [0], ahead=3)) == [threading.current_thread().name]
        names = list(pool.map(lambda i: threading.current_thread().name, [0, 1], ahead=3))
    assert all(name.startswith("crema-read") for name in names)
