"""experiments/ as consumers of the installed package: they import only public names that exist,
the release tool writes only its --out folder, the model screen's command line and output, and the
design search's final stage written as an evaluation suite is the search's recipe."""
from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ROOT / "experiments"
SCRIPTS = sorted([*EXPERIMENTS.rglob("*.py"), *(ROOT / "results").rglob("*.py")])


@pytest.fixture(scope="module")
def lab():
    spec = importlib.util.spec_from_file_location("crema_experiments_lab", EXPERIMENTS / "lab.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"crema_experiments_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_experiment_edits_the_module_path():
    for script in SCRIPTS:
        assert "sys.path" not in script.read_text(), script.relative_to(ROOT)


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _has(module, name: str) -> bool:
    """``from module import name`` works: an attribute, or a submodule of a package."""
    return hasattr(module, name) or (hasattr(module, "__path__")
                                     and importlib.util.find_spec(f"{module.__name__}.{name}") is not None)


def crema_import_problems(source: str) -> list[str]:
    """Private names of ``crema`` a script reaches (imported, in a module path, or as an attribute
    of an imported crema name), and imported names the package does not have."""
    problems, bound = [], set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "crema":
                    bound.add(alias.asname or "crema")
                    problems += [f"import {alias.name}" for part in alias.name.split(".") if _private(part)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "crema":
            problems += [f"from {node.module}" for part in node.module.split(".") if _private(part)]
            module = importlib.import_module(node.module)
            for alias in node.names:
                bound.add(alias.asname or alias.name)
                if _private(alias.name):
                    problems.append(f"from {node.module} import {alias.name}")
                elif not _has(module, alias.name):
                    problems.append(f"from {node.module} import {alias.name}: no such name")
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and _private(node.attr):
            root = node.value
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(root, ast.Name) and root.id in bound:
                problems.append(f"{ast.unparse(node)}")
    return problems


def test_the_private_name_check_catches_each_form():
    source = ("import crema.eval.probe as p\nfrom crema.eval.probe import _gone, fit_logistic\n"
              "from crema.eval import probe\nfrom crema.eval.probe import no_such_name\n"
              "probe._fit(1)\np.TaskSplit._secret\ncrema_like._fine\nprobe.__name__\n")
    assert sorted(crema_import_problems(source)) == [
        "from crema.eval.probe import _gone", "from crema.eval.probe import no_such_name: no such name",
        "p.TaskSplit._secret", "probe._fit"]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_scripts_use_only_public_names_of_the_package(script):
    assert crema_import_problems(script.read_text()) == []


def test_model_screen_command_and_output(tiny_pretrain_checkpoint, tiny_ptbxl_corpus, ptbxl_root, tmp_path):
    """experiments/model_screen.py on the tiny corpus: its options, one entry per encoder and
    read-out in its output format, the validation-fold protocol's figures, resumable."""
    from crema.eval.probe import DEFAULT_CS
    from crema.eval.selection import validation_probe

    screen = _load("model_screen")
    out = tmp_path / "screen.json"
    argv = ["--corpus", str(tiny_ptbxl_corpus.path), "--records", str(ptbxl_root), "--checkpoint",
            str(tiny_pretrain_checkpoint), "--out", str(out), "--n-bootstrap", "50"]
    assert screen.main(argv) == 0
    results = json.loads(out.read_text())
    assert sorted(results) == [f"{tiny_pretrain_checkpoint} | {r}" for r in ("leads", "mean")]
    paths, folds, y, _ = screen.labelled_records(tiny_ptbxl_corpus.path, ptbxl_root)
    assert 10 not in folds and len(paths) == len(set(paths)) == len(y)
    for key, row in results.items():
        assert set(row) == {"checkpoint", "readout", "dim", "c", "cv_1_8", "val", "val_ci95", "val_10pct",
                            "val_scores", "seconds", "val_minus_reference"}
        assert row["c"] in DEFAULT_CS and len(row["val_scores"]) == (folds == 9).sum()
        assert row["val_ci95"][0] <= row["val_ci95"][1] and 0 <= row["val_10pct"] <= 1
        assert row["val_minus_reference"] == [0.0, 0.0, 0.0]   # the reference against itself
    import crema

    mean = crema.load(tiny_pretrain_checkpoint).embed_records(paths, features="mean", workers=1).by_record().embeddings
    expected = validation_probe(mean, y, folds, n_bootstrap=50, max_iter=screen.MAX_ITER)
    row = results[f"{tiny_pretrain_checkpoint} | mean"]
    assert (row["c"], row["cv_1_8"], row["val"]) == (expected.C, expected.cv_auroc, expected.val_auroc)
    before = out.read_text()
    assert screen.main(argv) == 0 and out.read_text() == before   # finished entries are kept, not redone


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
                           "--card-template", str(ROOT / "docs" / "MODEL_CARD.template.md"), "--out", str(out),
                           "--features", "leads", "--benchmark", str(ROOT / "results" / "bench" / "embed-throughput-w128.json")],
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
    bench = json.loads((ROOT / "results" / "bench" / "embed-throughput-w128.json").read_text())
    assert f"the model alone {bench['rows']['model']['records_per_s']:.1f} records/s" in card  # --benchmark
    signal = np.random.default_rng(0).normal(size=(12, 2500)).astype(np.float32)
    model = crema.load(out / "tiny-test", device="cpu")
    emb = model.embed(signal, fs=250)
    assert emb.ndim == 2 and emb.shape[0] == 1 and np.isfinite(emb).all()
    assert model.features == "leads" and emb.shape[1] == model.feature_dim("leads")  # --features is its default
    # the card states the width the model's default embedding really has, and the other kind's
    assert f"{emb.shape[1]} values" in card and f"(`embedding.features` `{model.features}`" in card
    other = "mean" if model.features == "leads" else "leads"
    assert f"{model.feature_dim(other)} " in card.split("--features " + other)[1][:60]


def test_design_search_screen_is_the_validation_fold_protocol(lab, monkeypatch, tiny_pretrain_checkpoint,
                                                               tiny_ptbxl_corpus, one_torch_thread, tmp_path):
    """The search's screen probes pooled and per-lead features of one pass with validation_probe
    (100% and 10% of the labels) and never reads fold 10 (NaN there)."""
    from crema.eval.features import apply_model
    from crema.eval.splits import task_split
    from crema.eval.selection import validation_probe
    from crema.model.checkpoint import load_encoder

    monkeypatch.setitem(sys.modules, "lab", lab)   # the script's `import lab`, as from its folder
    search = _load("design_search")
    corpus = tiny_ptbxl_corpus
    (tmp_path / "ptbxl").symlink_to(corpus.path)
    encoder, config = load_encoder(tiny_pretrain_checkpoint)
    features = apply_model(search._feature_module(encoder), corpus, np.arange(len(corpus)),
                           crop=config["model"]["window"], batch_size=32, device="cpu", progress=False)
    features[corpus.index["fold"].to_numpy() == 10] = np.nan
    d = config["model"]["dim"]
    scores = search.screen_scores(features, tmp_path, {"pooled": slice(0, d), "leads": slice(d, None)})
    split = task_split(corpus, "ptbxl-superdiagnostic")
    rows = np.concatenate([split.rows["train"], split.rows["val"]])
    y = np.concatenate([split.y["train"], split.y["val"]])
    expected = validation_probe(features[rows, :d], y, corpus.index["fold"].to_numpy()[rows], n_bootstrap=0)
    pooled = scores["pooled"]
    assert (pooled["val_f1.0"], pooled["C_f1.0"], pooled["cv_f1.0"]) == (expected.val_auroc, expected.C, expected.cv_auroc)
    assert set(scores) == {"pooled", "leads"}
    assert all(0 <= s[k] <= 1 for s in scores.values() for k in ("val_f1.0", "val_f0.1", "cv_f1.0"))


def test_design_search_pack_round_trip_keeps_train_rows_and_blanks_the_rest(lab, monkeypatch, tiny_ptbxl_corpus,
                                                                            tmp_path):
    """``pack --scale S --train-only NAME`` then ``unpack``: every corpus under the folder comes
    back with its metadata, train windows within half a quantisation step, windows of other
    splits zeros (what travels to a GPU machine serves pretraining on NAME:train only)."""
    import shutil

    import pandas as pd

    monkeypatch.setitem(sys.modules, "lab", lab)
    search = _load("design_search")
    corpora = tmp_path / "corpora"
    for name in ("ptbxl", "other"):
        shutil.copytree(tiny_ptbxl_corpus.path, corpora / name)
    search.pack(corpora, tmp_path / "archive", scale=32.0, train_only=("ptbxl",))
    search.unpack(tmp_path / "archive", tmp_path / "back")
    split = pd.read_csv(corpora / "ptbxl" / "index.csv", usecols=["split"])["split"].to_numpy()
    assert (split == "train").any() and (split != "train").any()
    original = np.load(corpora / "ptbxl" / "signals.npy").astype(np.float32)
    for name in ("ptbxl", "other"):
        back = np.load(tmp_path / "back" / name / "signals.npy")
        assert back.dtype == np.float16 and back.shape == original.shape
        kept = np.ones(len(split), bool) if name == "other" else split == "train"
        assert np.abs(back[kept].astype(np.float32) - original[kept]).max() <= 1 / 64 + 2e-3  # float16 rounding
        assert not back[~kept].any()
        for meta in search.CORPUS_META:
            assert (tmp_path / "back" / name / meta).read_bytes() == (corpora / name / meta).read_bytes()
