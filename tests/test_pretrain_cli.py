"""``crema pretrain`` and ``crema plot-reconstruction`` end to end, and stopping on a signal."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from crema.cli import main
from crema.model.checkpoint import load_encoder, load_pretrained
from crema.train.checkpoint import load_training_state

TINY_FLAGS = ["--size", "tiny", "--window", "500", "--patch-size", "50", "--batch-size", "4",
              "--warmup-steps", "1", "--log-every", "1", "--device", "cpu", "--no-progress"]


def test_cli_pretrain_writes_a_loadable_checkpoint_and_log(unlabeled_corpus, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["pretrain", "--corpus", f"{unlabeled_corpus.path}:train,val", "--out", str(run),
                 "--steps", "2", "--mask-ratio", "0.5", "--lambda-con", "0.5", *TINY_FLAGS])
    assert code == 0
    assert "finished step 2/2" in capsys.readouterr().out
    config = json.loads((run / "config.json").read_text())
    assert config["kind"] == "pretrain" and config["step"] == 2
    assert config["model"]["dim"] == 192 and config["model"]["window"] == 500
    assert config["objective"]["mask_ratio"] == 0.5 and config["objective"]["lambda_con"] == 0.5
    assert config["preprocess"] == json.loads((unlabeled_corpus.path / "preprocess.json").read_text())
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert {"loss", "loss_rec", "loss_con", "lr", "ecgs_per_s", "elapsed_s"} <= set(log[0])
    encoder, _ = load_encoder(run)
    x = torch.from_numpy(unlabeled_corpus.signals[:3, :, :500].astype("float32"))
    assert encoder(x).shape == (3, 192)

    # --resume extends the same run; a changed model setting is refused with a clear message
    assert main(["pretrain", "--out", str(run), "--resume", "--steps", "3", "--no-progress"]) == 0
    assert load_training_state(run)["step"] == 3
    assert main(["pretrain", "--out", str(run), "--resume", "--size", "small", "--no-progress"]) == 1
    assert "cannot resume" in capsys.readouterr().err

    # a fresh run never silently replaces a finished one
    weights = (run / "model.safetensors").read_bytes()
    fresh = ["pretrain", "--corpus", f"{unlabeled_corpus.path}:train,val", "--out", str(run),
             "--steps", "1", *TINY_FLAGS]
    assert main(fresh) == 1
    assert "already holds a checkpoint" in capsys.readouterr().err
    assert (run / "model.safetensors").read_bytes() == weights
    assert main(fresh + ["--overwrite"]) == 0
    assert load_training_state(run)["step"] == 1


def test_cli_resume_of_a_run_never_started_says_so(unlabeled_corpus, tmp_path, capsys):
    """--resume on a folder with no run (absent, or empty) is one clear line, and nothing is written."""
    for out in (tmp_path / "absent", tmp_path / "empty"):
        if out.name == "empty":
            out.mkdir()
        assert main(["pretrain", "--corpus", str(unlabeled_corpus.path), "--out", str(out), "--resume",
                     "--steps", "1", *TINY_FLAGS]) == 1
        err = capsys.readouterr().err
        assert f"{out} holds no run to resume" in err and "leave out --resume" in err and "Traceback" not in err
    assert not (tmp_path / "absent").exists() and not any((tmp_path / "empty").iterdir())


def test_cli_reports_bad_input(tmp_path, capsys):
    assert main(["pretrain", "--corpus", str(tmp_path / "nope"), "--out", str(tmp_path / "r"),
                 *TINY_FLAGS]) == 1
    assert "not a prepared corpus" in capsys.readouterr().err


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_writes_a_checkpoint_before_exit(unlabeled_corpus, tmp_path, signum):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "crema.cli", "pretrain", "--corpus", str(unlabeled_corpus.path),
           "--out", str(run), "--steps", "100000", "--ckpt-every", "100000", *TINY_FLAGS]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 120
        while not ((run / "log.jsonl").is_file() and (run / "log.jsonl").read_text().strip()):
            assert proc.poll() is None, proc.communicate()[1]
            assert time.time() < deadline, "no training step within 120 s"
            time.sleep(0.2)
        os.kill(proc.pid, signum)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signum, err
    assert "stopped by signal" in out
    step = load_training_state(run)["step"]
    assert 1 <= step < 100000
    assert json.loads((run / "config.json").read_text())["step"] == step
    load_pretrained(run)


def test_plot_reconstruction_writes_a_png(tiny_pretrain_checkpoint, ptbxl_root, tiny_ptbxl_corpus, tmp_path):
    record = ptbxl_root / "records100" / "00000" / "00001_lr.hea"
    out = tmp_path / "figs" / "rec.png"
    assert main(["plot-reconstruction", str(tiny_pretrain_checkpoint), str(record),
                 "--out", str(out), "--seed", "3"]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert [p.name for p in out.parent.iterdir()] == ["rec.png"]          # no temp file left
    from_corpus = tmp_path / "row.png"
    assert main(["plot-reconstruction", str(tiny_pretrain_checkpoint), "--corpus",
                 str(tiny_ptbxl_corpus.path), "--row", "5", "--out", str(from_corpus)]) == 0
    assert from_corpus.stat().st_size > 20_000
    assert main(["plot-reconstruction", str(tiny_pretrain_checkpoint), "--out", str(out)]) == 1


def test_plot_reconstruction_names_a_bad_file(tiny_pretrain_checkpoint, tmp_path, capsys):
    bad = tmp_path / "broken.npy"
    bad.write_bytes(b"not an array")
    assert main(["plot-reconstruction", str(tiny_pretrain_checkpoint), str(bad), "--fs", "250",
                 "--out", str(tmp_path / "x.png")]) == 1
    assert "broken.npy" in capsys.readouterr().err


def test_cli_pretrain_from_a_recipe_file_and_steps_zero(unlabeled_corpus, tmp_path, capsys):
    """--config reads a RunConfig JSON (flags override its fields); --steps 0 writes the
    initialised model, which embeds like any checkpoint and equals a seeded fresh encoder."""
    from crema.config import ModelConfig, ObjectiveConfig, PretrainConfig, RunConfig
    from crema.config_io import save_json, to_dict
    from crema.model.sit import SiTEncoder

    model = ModelConfig.from_size("tiny", window=500, dim=32, depth=1, heads=2, stem_channels=4,
                                  decoder_dim=16, decoder_depth=1, decoder_heads=2)
    recipe = RunConfig(model=model, objective=ObjectiveConfig(view_crop="disjoint", con_loss="vicreg"),
                       train=PretrainConfig(corpora=(f"{unlabeled_corpus.path}:train,val",),
                                            out=str(tmp_path / "from_recipe"), steps=2, batch_size=4,
                                            warmup_steps=1, device="cpu", seed=3))
    save_json(tmp_path / "recipe.json", recipe)
    assert main(["pretrain", "--config", str(tmp_path / "recipe.json"), "--steps", "0", "--no-progress"]) == 0
    run = tmp_path / "from_recipe"
    config = json.loads((run / "config.json").read_text())
    assert config["step"] == 0 and config["train"]["steps"] == 0            # the flag overrode the file
    assert config["objective"] == to_dict(recipe.objective)                 # the rest came from the file
    encoder, _ = load_encoder(run)
    torch.manual_seed(3)
    fresh = SiTEncoder(model)
    for (name, a), (_, b) in zip(encoder.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(a, b), name

    # a recipe with a typo names the file and the field
    bad = to_dict(recipe)
    bad["objective"]["lamda_con"] = 0.1
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert main(["pretrain", "--config", str(tmp_path / "bad.json"), "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "bad.json" in err and "lamda_con" in err
