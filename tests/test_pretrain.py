"""The pretraining engine on a real corpus: checkpoints, exact resume, determinism, schedule."""
from __future__ import annotations

import dataclasses
import json
import shutil

import pytest
import torch
from fixtures_model import tiny_run_config

from crema.config import ObjectiveConfig
from crema.config_io import save_json, to_dict
from crema.errors import CheckpointError, CremaError
from crema.model.crema import CREMA
from crema.model.checkpoint import load_checkpoint, load_encoder, load_pretrained
from crema.train.checkpoint import load_training_state, save_checkpoint
from crema.train.pretrain import pretrain
from crema.train.schedule import lr_at, param_groups


def _log(run) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


# ----------------------------------------------------------------------------- checkpoints

def test_checkpoint_round_trip_bit_for_bit(tiny_model_config, tmp_path, real_ecgs):
    torch.manual_seed(0)
    model = CREMA(tiny_model_config, ObjectiveConfig())
    config = {"kind": "pretrain", "model": to_dict(tiny_model_config), "step": 7}
    state = {"step": 7, "optimizer": {"lr": 0.1}, "rng": [torch.get_rng_state()]}
    save_checkpoint(tmp_path / "ck", model, config, state)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        ".checkpoints", "config.json", "model.safetensors", "training_state.pt"]  # no temp files left
    store = sorted(p.name for p in (tmp_path / "ck" / ".checkpoints").iterdir())
    assert len(store) == 2 and store[0] == "current" and store[1].startswith("step-7-")  # one snapshot
    weights, cfg = load_checkpoint(tmp_path / "ck")
    assert cfg == config
    assert weights.keys() == model.state_dict().keys()
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    back = load_training_state(tmp_path / "ck")
    assert back["step"] == 7 and torch.equal(back["rng"][0], state["rng"][0])
    encoder, _ = load_encoder(tmp_path / "ck")
    x = torch.from_numpy(real_ecgs[:2, :, :1000].copy())
    assert torch.equal(encoder(x), model.encoder.eval()(x))


def test_checkpoint_errors_name_the_problem(tiny_model_config, tmp_path):
    model = CREMA(tiny_model_config, ObjectiveConfig())
    with pytest.raises(CheckpointError, match="no config.json"):
        load_encoder(tmp_path)
    save_checkpoint(tmp_path / "ck", model, {"kind": "pretrain", "model": to_dict(tiny_model_config)})
    (tmp_path / "ck" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        load_encoder(tmp_path / "ck")
    bigger = dataclasses.replace(tiny_model_config, depth=3)
    save_checkpoint(tmp_path / "ck", model, {"kind": "pretrain", "model": to_dict(bigger)})
    with pytest.raises(CheckpointError, match=r"depth is 3 but the weights hold 2 encoder.blocks"):
        load_encoder(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="cannot resume, no training_state.pt"):
        load_training_state(tmp_path / "ck")


# ----------------------------------------------------------------------------- the engine

def test_resume_continues_exactly_and_seed_fixes_the_run(tiny_model_config, unlabeled_corpus, tmp_path):
    cfg = tiny_run_config(tiny_model_config, unlabeled_corpus.path, tmp_path / "full", steps=6)
    pretrain(cfg, progress=False)
    full = _log(tmp_path / "full")
    assert [r["step"] for r in full] == [1, 2, 3, 4, 5, 6]
    assert all(r["loss"] > 0 and r["ecgs_per_s"] > 0 for r in full)

    part_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, out=str(tmp_path / "part")))
    first = pretrain(part_cfg, progress=False, stop_at=3)
    assert first.step == 3 and load_training_state(tmp_path / "part")["step"] == 3
    # same seed, same run: the first three steps agree bit for bit
    assert [r["loss"] for r in _log(tmp_path / "part")] == [r["loss"] for r in full[:3]]
    second = pretrain(part_cfg, resume=True, progress=False)
    assert second.step == 6
    resumed = _log(tmp_path / "part")
    assert [r["step"] for r in resumed] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(resumed, full):
        for key in ("loss", "loss_rec", "loss_con", "acc", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-7), (a["step"], key)
    w_full, _ = load_checkpoint(tmp_path / "full")
    w_part, _ = load_checkpoint(tmp_path / "part")
    assert all(torch.allclose(w_full[k], w_part[k], rtol=0, atol=1e-6) for k in w_full)

    # another seed is another run
    other = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, out=str(tmp_path / "seed1"), seed=1))
    pretrain(other, progress=False, stop_at=1)
    assert _log(tmp_path / "seed1")[0]["loss"] != full[0]["loss"]


def test_resume_refuses_changed_settings(tiny_model_config, unlabeled_corpus, tmp_path):
    cfg = tiny_run_config(tiny_model_config, unlabeled_corpus.path, tmp_path / "run", steps=2)
    pretrain(cfg, progress=False, stop_at=1)
    changed = dataclasses.replace(cfg, objective=dataclasses.replace(cfg.objective, tau=0.5))
    with pytest.raises(CremaError, match="objective"):
        pretrain(changed, resume=True, progress=False)


def test_corpora_with_different_preprocessing_are_refused(tiny_model_config, unlabeled_corpus, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    for f in unlabeled_corpus.path.iterdir():
        (other / f.name).symlink_to(f)
    (other / "preprocess.json").unlink()
    save_json(other / "preprocess.json", dataclasses.replace(unlabeled_corpus.preprocess, notch_hz=50.0))
    cfg = tiny_run_config(tiny_model_config, unlabeled_corpus.path, tmp_path / "run")
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, corpora=(str(unlabeled_corpus.path), str(other))))
    with pytest.raises(CremaError, match="different preprocessing"):
        pretrain(cfg, progress=False)


def test_checkpoint_carries_the_corpus_preprocessing(tiny_pretrain_checkpoint, tiny_ptbxl_corpus):
    model, cfg = load_pretrained(tiny_pretrain_checkpoint)
    assert to_dict(cfg.preprocess) == to_dict(tiny_ptbxl_corpus.preprocess)
    config = json.loads((tiny_pretrain_checkpoint / "config.json").read_text())
    assert config["kind"] == "pretrain" and config["step"] == 4
    assert len(_log(tiny_pretrain_checkpoint)) == 4


# ----------------------------------------------------------------------------- schedule

def test_warmup_then_cosine_to_min_lr():
    lrs = [lr_at(s, 1.0, 0.1, warmup_steps=4, total_steps=20) for s in range(21)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == 1.0 and lrs[20] == pytest.approx(0.1)
    assert lrs[12] == pytest.approx(0.55)                              # half way down the cosine
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))


def test_no_weight_decay_on_norms_biases_and_embeddings(tiny_model_config):
    model = CREMA(tiny_model_config, ObjectiveConfig())
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    assert {"encoder.lead_embed", "decoder.mask_token", "decoder.lead_embed",
            "encoder.norm.weight", "encoder.blocks.0.attn.qkv.bias"} <= no_decay_names
    assert all(p.ndim >= 2 for p in decay["params"]) and no_decay["weight_decay"] == 0.0
    assert "encoder.blocks.0.attn.qkv.weight" in {names[id(p)] for p in decay["params"]}


def test_truncated_run_folder_copies_cleanly(tiny_pretrain_checkpoint, tmp_path):
    """A checkpoint folder is self-contained: copied elsewhere it still loads."""
    copy = tmp_path / "copy"
    shutil.copytree(tiny_pretrain_checkpoint, copy)
    encoder, config = load_encoder(copy)
    original, original_config = load_encoder(tiny_pretrain_checkpoint)
    assert config == original_config and config["kind"] == "pretrain" and not encoder.training
    copied, weights = encoder.state_dict(), original.state_dict()
    assert copied.keys() == weights.keys() and all(torch.equal(copied[k], weights[k]) for k in weights)
