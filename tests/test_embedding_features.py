"""Embedding kinds (``mean``, ``leads``): the one read-out in the encoder, the checkpoint's default
(``config.json``'s ``embedding.features``) and the overrides in the API, scikit-learn, ``crema
embed``, ``crema probe`` and the evaluation features; on real ECGs with the tiny test checkpoint."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import crema
from crema import kernels
from crema.cli import main
from crema.config import STANDARD_LEADS, ModelConfig, embedding_features
from crema.data.readers import read_record
from crema.data.recording import Recording
from crema.errors import CheckpointError, CremaError
from crema.eval.features import encoder_features
from crema.model.inference import Readout, feature_kind, readout
from crema.model.sit import SiTEncoder
from crema.sklearn import CremaEmbedder
from crema.model.checkpoint import load_encoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TASK = "ptbxl-superdiagnostic"


@pytest.fixture(scope="module")
def leads_checkpoint(tiny_pretrain_checkpoint, tmp_path_factory):
    """The tiny pretrained model exported with ``"embedding": {"features": "leads"}`` in its config."""
    folder = tmp_path_factory.mktemp("leads") / "model"
    crema.load(tiny_pretrain_checkpoint, device="cpu").save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert "embedding" not in config  # the tiny checkpoint was written without the field
    config["embedding"] = {"features": "leads"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def _encoder(cfg: ModelConfig) -> SiTEncoder:
    torch.manual_seed(0)
    return SiTEncoder(cfg).eval()


@torch.inference_mode()
def test_leads_are_the_normed_per_lead_means_of_the_tokens(tiny_model_config, real_ecgs):
    encoder = _encoder(tiny_model_config)
    x = torch.from_numpy(real_ecgs[:3, :, :1000].copy())
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[1, 4] = False
    x[1, 4] = 0.0                                   # a missing lead is zeros with the mask, as the API makes it
    tokens = encoder.forward_tokens(x, lead_mask=mask)
    per_lead = encoder.norm(tokens.reshape(3, 12, 20, 32).mean(dim=2))  # (B, C, D)

    leads = encoder.embedding(x, mask, "leads")
    assert leads.shape == (3, 12 * 32) == (3, encoder.feature_dim("leads"))
    blocks = leads.reshape(3, 12, 32)
    assert torch.equal(blocks[1, 4], torch.zeros(32))                  # the missing lead: zeros, not NaN
    present = mask[:, :, None].expand(3, 12, 32)
    assert torch.allclose(blocks[present], per_lead[present], atol=1e-6)
    assert torch.isfinite(leads).all()
    # mean is the pooled representation, unchanged
    mean = encoder.embedding(x, mask, "mean")
    assert mean.shape == (3, 32) == (3, encoder.feature_dim())
    assert torch.equal(mean, encoder(x, lead_mask=mask)) and torch.allclose(mean, encoder.pool(tokens, mask))
    # without a lead mask every block is filled; parts of inference_batch ECGs change nothing
    assert not torch.equal(encoder.embedding(x, None, "leads").reshape(3, 12, 32)[1, 4], torch.zeros(32))
    with kernels.override(inference_batch=2):
        assert torch.allclose(encoder.embedding(x, mask, "leads"), leads, atol=1e-6)
    with pytest.raises(ValueError, match="unknown embedding features 'max'"):
        encoder.embedding(x, mask, "max")


@torch.inference_mode()
def test_leads_leave_out_the_cls_token(tiny_model_config, real_ecgs):
    cfg = ModelConfig(**{**tiny_model_config.__dict__, "pool": "cls"})
    encoder = _encoder(cfg)
    x = torch.from_numpy(real_ecgs[:2, :, :1000].copy())
    tokens = encoder.forward_tokens(x)                                   # (B, 1 + C * N, D)
    expected = encoder.norm(tokens[:, 1:].reshape(2, 12, 20, 32).mean(dim=2)).flatten(1)
    assert torch.allclose(encoder.embedding(x, None, "leads"), expected, atol=1e-6)


def test_default_comes_from_the_config_and_is_overridable(tiny_pretrain_checkpoint, leads_checkpoint, ptbxl_headers):
    old = crema.load(tiny_pretrain_checkpoint, device="cpu", precision="fp32")
    new = crema.load(leads_checkpoint, device="cpu", precision="fp32")
    assert old.features == "mean" and new.features == "leads"           # absent field: mean
    assert embedding_features({}) == "mean" and embedding_features({"embedding": {"features": "leads"}}) == "leads"
    rec = read_record(ptbxl_headers[0])
    pooled = old.embed(rec)
    assert pooled.shape == (1, 32) and new.feature_dim() == 384 and old.feature_dim("leads") == 384
    leads = new.embed(rec)
    assert leads.shape == (1, 384) and np.array_equal(leads, old.embed(rec, features="leads"))
    assert np.array_equal(new.embed(rec, features="mean"), pooled)      # the override
    # the API's leads are the encoder's read-out of the crop-averaged windows
    windows = torch.from_numpy(new.prepare(rec).signals)
    with torch.inference_mode():
        by_hand = sum(new.encoder.embedding(windows[..., s:s + 1000], torch.ones(1, 12, dtype=torch.bool), "leads")
                      for s in (0, 750, 1500)) / 3
    assert np.allclose(leads, by_hand.numpy(), atol=1e-5)
    with pytest.raises(CremaError, match="unknown embedding features 'max'"):
        new.embed(rec, features="max")


def test_missing_leads_give_zero_blocks_through_the_api(leads_checkpoint, ptbxl_headers):
    model = crema.load(leads_checkpoint, device="cpu")
    rec = read_record(ptbxl_headers[0])
    limbs = Recording(signal=rec.signal[:6], fs=rec.fs, leads=tuple(STANDARD_LEADS[:6]), record_id="limbs")
    with pytest.warns(UserWarning, match="missing"):
        blocks = model.embed_records(limbs).by_record().embeddings.reshape(12, 32)
    assert np.array_equal(blocks[6:], np.zeros((6, 32))) and np.isfinite(blocks).all()
    assert (np.abs(blocks[:6]).sum(axis=1) > 0).all()


def test_bad_embedding_entry_is_named(leads_checkpoint, tmp_path):
    folder = tmp_path / "bad"
    crema.load(leads_checkpoint, device="cpu").save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["embedding"] = {"features": "max"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"config.json: embedding.features: expected one of"):
        crema.load(folder, device="cpu")


def test_sklearn_embedder_uses_the_model_default(leads_checkpoint, ptbxl_headers):
    paths = [str(h) for h in ptbxl_headers[:2]]
    default = CremaEmbedder(leads_checkpoint).fit()
    assert default.features is None and default.features_ == "leads" and default.n_features_out_ == 384
    rows = default.transform(paths)
    assert rows.shape == (2, 384) and len(default.get_feature_names_out()) == 384
    mean = CremaEmbedder(leads_checkpoint, features="mean")
    assert mean.fit_transform(paths).shape == (2, 32) and mean.get_params()["features"] == "mean"
    model = crema.load(leads_checkpoint, device="cpu")
    assert np.allclose(rows, model.embed_records(paths).by_record().embeddings, atol=1e-6)


def test_evaluation_features_read_out_the_chosen_kind(tiny_pretrain_checkpoint, tiny_ptbxl_corpus, tmp_path):
    encoder, _ = load_encoder(tiny_pretrain_checkpoint)
    assert readout(encoder, "mean") is encoder and feature_kind(encoder) == "mean"
    wrapped = readout(encoder, "leads")
    assert isinstance(wrapped, Readout) and feature_kind(wrapped) == "leads" and wrapped.cfg is encoder.cfg
    rows = np.arange(6)
    cache = tmp_path / "cache"
    mean = encoder_features(encoder, tiny_ptbxl_corpus, rows, 1000, cache, "w", progress=False)
    leads = encoder_features(wrapped, tiny_ptbxl_corpus, rows, 1000, cache, "w", progress=False)
    assert mean.shape == (6, 32) and leads.shape == (6, 384)
    assert len(list(cache.glob("*.npy"))) == 2                           # same weights hash, two cache files
    again = encoder_features(wrapped, tiny_ptbxl_corpus, rows, 1000, cache, "w", progress=False)
    assert np.array_equal(again, leads)
    x = torch.from_numpy(np.asarray(tiny_ptbxl_corpus.signals[rows], dtype=np.float32))
    mask = torch.from_numpy(np.asarray(tiny_ptbxl_corpus.lead_mask[rows]))
    with torch.inference_mode():
        by_hand = sum(encoder.embedding(x[..., s:s + 1000], mask, "leads") for s in (0, 750, 1500)) / 3
    assert np.allclose(leads, by_hand.numpy(), atol=1e-5)


def test_crema_embed_features_end_to_end(leads_checkpoint, tiny_pretrain_checkpoint, ptbxl_headers, tmp_path, capsys):
    records = [str(h) for h in ptbxl_headers[:2]]
    assert main(["embed", str(tiny_pretrain_checkpoint), *records, "--out", str(tmp_path / "flag"),
                 "--features", "leads", "--device", "cpu"]) == 0
    flag = np.load(tmp_path / "flag.npy")
    run = json.loads((tmp_path / "flag.run.json").read_text())
    assert flag.shape == (2, 384) and run["fingerprint"]["features"] == "leads"
    assert main(["embed", str(leads_checkpoint), *records, "--out", str(tmp_path / "default"), "--device", "cpu"]) == 0
    assert np.allclose(np.load(tmp_path / "default.npy"), flag, atol=1e-6)   # the model's default
    assert main(["embed", str(leads_checkpoint), *records, "--out", str(tmp_path / "mean"), "--features", "mean",
                 "--device", "cpu"]) == 0
    assert np.load(tmp_path / "mean.npy").shape == (2, 32)
    # an output of one kind is not extended with another
    assert main(["embed", str(tiny_pretrain_checkpoint), *records, "--out", str(tmp_path / "flag"),
                 "--device", "cpu"]) != 0
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse refuses an unknown kind
        main(["embed", str(leads_checkpoint), records[0], "--out", str(tmp_path / "x"), "--features", "max"])
    assert "invalid choice: 'max'" in capsys.readouterr().err


def test_crema_probe_reads_out_the_checkpoint_default(leads_checkpoint, tiny_ptbxl_corpus, tmp_path, capsys):
    def probe(*extra):
        out = tmp_path / f"probe{len(extra)}"
        assert main(["probe", "--checkpoint", str(leads_checkpoint), "--corpus", str(tiny_ptbxl_corpus.path),
                     "--task", TASK, "--fractions", "1", "--seeds", "0", "--n-bootstrap", "20", "--out", str(out),
                     "--cache", str(tmp_path / "cache"), "--no-progress", "--threads", "1", *extra]) == 0
        return json.loads((out / "results.json").read_text())["results"][0]["config"]["features"]

    assert probe() == "leads" and probe("--features", "mean") == "mean"
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 2


def test_shipped_model_embeds_per_lead_by_default(ptbxl_headers):
    model = crema.load("crema-mini-ecg12", device="cpu")
    assert model.features == "leads" and model.feature_dim() == 12 * model.dim == 768
    rec = read_record(ptbxl_headers[0])
    leads, mean = model.embed(rec), model.embed(rec, features="mean")
    assert leads.shape == (1, 768) and mean.shape == (1, 64) and np.isfinite(leads).all()
