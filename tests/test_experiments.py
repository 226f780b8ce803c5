"""experiments/ as consumers of the installed package: the release tool writes only its --out
folder, and the design search's final stage written as an evaluation suite is the search's recipe."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"


@pytest.fixture(scope="module")
def lab():
    spec = importlib.util.spec_from_file_location("crema_experiments_lab", EXPERIMENTS / "lab.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_experiment_edits_the_module_path():
    for script in sorted(EXPERIMENTS.glob("*.py")):
        assert "sys.path" not in script.read_text(), script.name


@pytest.mark.parametrize("method", ["crema_disjoint", "mae"])
def test_the_search_final_stage_as_a_suite_is_the_search_recipe(lab, method, tmp_path):
    from crema.eval.suite import load_suite_config, plan_steps
    from crema.eval.suite.plan import Encoder, Pretrain, Probe

    suite = load_suite_config(EXPERIMENTS / "search-final.json")
    search = lab.run_config(method, 1, Path("runs/corpora"), tmp_path, "cpu")
    assert suite.methods[method] == search.objective and suite.pretrain.model == search.model
    fields = ("steps", "batch_size", "blr", "min_lr", "warmup_steps", "weight_decay", "betas", "grad_clip")
    assert [getattr(suite.pretrain.train, f) for f in fields] == [getattr(search.train, f) for f in fields]
    steps = plan_steps(suite, ["georgia", "ningbo"])
    assert Pretrain(Encoder(method, 2)) in steps
    probed = {s.encoder.method for s in steps if isinstance(s, Probe)}
    assert probed == {"crema_disjoint", "mae", "random_sit", "random_kernels"}


def test_ship_model_writes_only_its_release_folder(tiny_pretrain_checkpoint, tmp_path):
    import crema
    from crema.weights import WEIGHTS_DIR, shipped_models

    before = sorted((p.relative_to(WEIGHTS_DIR), p.stat().st_mtime_ns) for p in WEIGHTS_DIR.rglob("*"))
    out = tmp_path / "release"
    done = subprocess.run([sys.executable, str(EXPERIMENTS / "ship_model.py"), str(tiny_pretrain_checkpoint),
                           "--name", "tiny-test", "--summary", "a test model",
                           "--card-template", str(ROOT / "docs" / "MODEL_CARD.template.md"), "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted((p.relative_to(WEIGHTS_DIR), p.stat().st_mtime_ns) for p in WEIGHTS_DIR.rglob("*")) == before
    registry = json.loads((out / "models.json").read_text())
    weights = out / "tiny-test" / "model.safetensors"
    assert registry["tiny-test"] == {"sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
                                     "config_sha256": hashlib.sha256((out / "tiny-test" / "config.json")
                                                                     .read_bytes()).hexdigest(),
                                     "summary": "a test model"}
    assert set(shipped_models()) < set(registry)
    card = (out / "tiny-test" / "MODEL_CARD.md").read_text()
    assert card.startswith("# Model card: tiny-test") and "{" not in card.split("Config:")[0]
    signal = np.random.default_rng(0).normal(size=(12, 2500)).astype(np.float32)
    model = crema.load(out / "tiny-test", device="cpu")
    emb = model.embed(signal, fs=250)
    assert emb.ndim == 2 and emb.shape[0] == 1 and np.isfinite(emb).all()
    # the card states the width the model's default embedding really has, and the other kind's
    assert f"{emb.shape[1]} values" in card and f"(`embedding.features` `{model.features}`" in card
    other = "mean" if model.features == "leads" else "leads"
    assert f"{model.feature_dim(other)} " in card.split("--features " + other)[1][:60]
