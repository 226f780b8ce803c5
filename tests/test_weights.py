"""Shipped pretrained models: loadable by name offline, hash-checked, listed with their card."""
from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
import torch

import crema
from crema import weights
from crema.cli import main
from crema.errors import CheckpointError
from crema.paths import sample_root
from crema.model.checkpoint import load_encoder

NAMES = sorted(weights.shipped_models())
RECORD = sample_root() / "records100" / "00000" / "00001_lr.hea"


def test_at_least_one_model_is_shipped_with_its_card():
    assert NAMES, "no shipped model"
    for name in NAMES:
        folder = weights.resolve(name)
        assert (folder / "MODEL_CARD.md").read_text().startswith(f"# Model card: {name}")
        digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
        assert digest == weights.shipped_models()[name]["sha256"]
        assert (folder / "model.safetensors").stat().st_size < 10 * 2**20  # the size limit


@pytest.mark.parametrize("name", NAMES)
def test_load_by_name_equals_load_by_path(name):
    by_name = crema.load(name, device="cpu")
    by_path = crema.load(weights.model_dir(name), device="cpu")
    a, b = by_name.embed([RECORD]), by_path.embed([RECORD])
    assert a.shape == (1, by_name.feature_dim()) and np.isfinite(a).all()  # the model's default embedding
    assert np.array_equal(a, b)
    # the pretrained encoder is not a random one: its embedding differs from a fresh init's
    encoder, _ = load_encoder(name)
    torch.manual_seed(0)
    fresh = type(encoder)(encoder.cfg)
    assert any(not torch.equal(p, q) for p, q in zip(encoder.state_dict().values(), fresh.state_dict().values()))


@pytest.mark.parametrize("name", NAMES)
def test_cli_takes_the_name(name, tmp_path, capsys):
    assert main(["models"]) == 0
    assert name in capsys.readouterr().out
    assert main(["models", name]) == 0
    assert "Research use only" in capsys.readouterr().out
    assert main(["embed", name, str(RECORD), "--out", str(tmp_path / "emb"), "--no-progress"]) == 0
    assert np.array_equal(np.load(tmp_path / "emb.npy"), crema.load(name, device="cpu").embed([RECORD]))
    assert main(["models", "no-such-model"]) == 1
    assert "no shipped model" in capsys.readouterr().err


def test_damaged_weights_are_refused(tmp_path, monkeypatch):
    name = NAMES[0]
    copy = tmp_path / "weights"
    shutil.copytree(weights.WEIGHTS_DIR, copy, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    data = bytearray((copy / name / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in the last tensor
    (copy / name / "model.safetensors").write_bytes(bytes(data))
    monkeypatch.setattr(weights, "WEIGHTS_DIR", copy)
    monkeypatch.setattr(weights, "REGISTRY", copy / "models.json")
    weights._verified.cache_clear()
    try:
        with pytest.raises(CheckpointError, match="SHA-256"):
            crema.load(name, device="cpu")
        json.loads((copy / "models.json").read_text())  # the registry itself is untouched
    finally:
        weights._verified.cache_clear()


def test_an_existing_path_wins_over_a_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / NAMES[0]).mkdir()
    assert weights.resolve(NAMES[0]) == tmp_path.joinpath(NAMES[0]).relative_to(tmp_path)


def test_python_dash_m_crema_is_the_cli():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "crema", "models"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert all(name in proc.stdout for name in NAMES)
