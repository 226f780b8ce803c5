"""No wrong number is written as if it were right, and no path through the CLI prints a traceback.

Each test builds a hostile input from real records (the PTB-XL sample shipped in the package, the
shared test corpora and checkpoints of the session fixtures) and checks the exact outcome: one
clear line naming the command, the file and the problem; the good records still processed; a
non-zero exit status; nothing non-finite, nothing half-written. Sections follow the audit:
A wrong numbers (non-finite weights and outputs, the shipped model's config hash, output locks,
a resume onto a changed corpus), B tracebacks (the CLI's last resort and each specific cause),
C lossy clinical-format writes, D the documented ONNX snippet, E small CLI defects.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file, save_file

import crema
import crema.weights as weights
from crema.cli import main
from crema.config import ModelConfig, PretrainConfig, RunConfig
from crema.data import formats
from crema.data.readers import read_record
from crema.errors import CheckpointError, CremaError, ReadError
from crema.locking import output_lock
from crema.paths import sample_root
from crema.model.checkpoint import CONFIG_FILE, MODEL_FILE, load_config, load_network, write_checkpoint_files
from crema.train.pretrain import CORPORA_KEY, pretrain
from crema.use.batch import refuse_non_finite

SAMPLE_RECORDS = sample_root() / "records100" / "00000"
SRC = Path(crema.__file__).resolve().parents[1]  # so that subprocesses run this tree's code
TINY_MODEL = dict(size="tiny", patch_size=50, dim=32, depth=1, heads=2, stem_channels=8, drop_path=0.0,
                  decoder_dim=32, decoder_depth=1, decoder_heads=2, projector_hidden=32, projector_dim=16)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ============================================================================ helpers

def _run(capsys, *argv) -> tuple[int, str, str]:
    """``crema ARGV`` in this process: (exit status, stdout, stderr); never a traceback."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def _one_error(err: str, command: str) -> str:
    """The last stderr line, checked to be ``crema COMMAND: error: ...``; returns the message."""
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"crema {command}: error: "), err
    return last.removeprefix(f"crema {command}: error: ")


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1",
                PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])))


def _records(n: int = 2) -> list[Path]:
    return [SAMPLE_RECORDS / f"{i:05d}_lr.hea" for i in range(1, n + 1)]


def _plain_copy(checkpoint: Path, dest: Path, edit_state=None, edit_config=None) -> Path:
    """``checkpoint`` rewritten as plain files in ``dest``, its weights and config edited."""
    state = load_file(str(checkpoint / MODEL_FILE))
    config = load_config(checkpoint)
    if edit_state:
        edit_state(state)
    if edit_config:
        edit_config(config)
    write_checkpoint_files(dest, state, config)
    return dest


def _copy_corpus(corpus_dir: Path, dest: Path) -> Path:
    shutil.copytree(corpus_dir, dest)
    return dest


# ============================================================================ A1. non-finite weights and outputs

def _poison(name: str, value: float):
    def edit(state):
        state[name] = state[name].clone()
        state[name].view(-1)[0] = value
    return edit


@pytest.mark.parametrize("command", ["predict", "embed"])
def test_a_nan_weight_is_refused_at_load_naming_the_file_and_tensor(tiny_classifier_checkpoint, tmp_path,
                                                                     capsys, command):
    """A classifier with one NaN weight wrote empty probabilities and no labels with exit 0."""
    bad = _plain_copy(tiny_classifier_checkpoint, tmp_path / "bad", _poison("head.weight", float("nan")))
    out = tmp_path / ("out" if command == "embed" else "out.csv")
    code, _, err = _run(capsys, command, bad, *_records(), "--out", out, "--no-progress")
    assert code == 1
    assert _one_error(err, command) == (f"{bad / MODEL_FILE}: tensor head.weight holds 1 NaN or infinite "
                                        "value(s); these weights cannot give meaningful outputs (a diverged "
                                        "training run, or a damaged file)")
    assert not list(tmp_path.glob("out*"))


def test_integer_typed_weights_are_refused_at_load(tiny_pretrain_checkpoint, tmp_path):
    def to_int(state):
        state["encoder.norm.weight"] = state["encoder.norm.weight"].round().to(torch.int64)
    bad = _plain_copy(tiny_pretrain_checkpoint, tmp_path / "bad", to_int)
    for load in (load_network, lambda path: crema.load(path, device="cpu")):
        with pytest.raises(CheckpointError) as error:
            load(bad)
        assert str(error.value) == (f"{bad / MODEL_FILE}: weights do not match the model (integer-typed where "
                                    "the model holds float weights keys ['encoder.norm.weight'])")


def test_records_whose_outputs_are_not_finite_are_skipped_and_listed(tiny_pretrain_checkpoint, tmp_path, capsys):
    """Weights that are finite but overflow on real ECGs make NaN embeddings. Two records embedded
    by sound weights, then the run resumed with weights of the same size and config that overflow
    (the resume fingerprint cannot tell them apart): the third record is listed, not written."""
    def overflow(state):
        state["encoder.patch_embed.proj.weight"] = state["encoder.patch_embed.proj.weight"] * 1e38
    model = _plain_copy(tiny_pretrain_checkpoint, tmp_path / "model")
    out = tmp_path / "emb"
    assert _run(capsys, "embed", model, *_records(2), "--out", out, "--no-progress")[0] == 0
    _plain_copy(tiny_pretrain_checkpoint, model, overflow)
    code, _, err = _run(capsys, "embed", model, *_records(3), "--out", out, "--no-progress")
    assert code == 1
    assert "crema embed: 0 records processed, 2 already done, 1 failed" in err
    errors = pd.read_csv(tmp_path / "emb.errors.csv")
    assert list(errors["record_id"]) == ["00003_lr"]
    assert list(errors["reason"]) == ["cannot write embeddings: the model's output contains NaN or infinite values"]
    emb = np.load(tmp_path / "emb.npy")
    assert emb.shape == (2, 32) and np.isfinite(emb).all()
    # a fresh output whose every record fails is not written at all (an empty table reads as a result)
    code, _, err = _run(capsys, "embed", model, *_records(2), "--out", tmp_path / "new",
                        "--no-progress")
    assert code == 1 and _one_error(err, "embed") == (
        f"0 records processed, 2 failed (each named above with its reason); nothing written to {tmp_path / 'new'}")
    assert (f"skipped {_records(1)[0]}: cannot write embeddings: the model's output contains NaN or infinite "
            "values") in err
    assert not list(tmp_path.glob("new*"))


def test_refuse_non_finite_drops_only_the_records_with_non_finite_rows(tiny_pretrain_checkpoint):
    model = crema.load(tiny_pretrain_checkpoint, device="cpu")
    result = model.embed_records([str(p) for p in _records(3)])
    values, index = result.embeddings.copy(), result.index
    values[index["source"] == str(_records(3)[1])] = np.inf
    kept, kept_index, failures = refuse_non_finite(values, index, "embeddings")
    assert [f["record_id"] for f in failures] == ["00002_lr"]
    assert list(kept_index["record_id"]) == ["00001_lr", "00003_lr"] and np.isfinite(kept).all()
    np.testing.assert_array_equal(kept, result.embeddings[[0, 2]])


# ============================================================================ A2. the shipped model's config is hashed too

@pytest.fixture
def shipped_copy(tmp_path, monkeypatch):
    """The shipped models and their registry copied into a temporary package folder."""
    folder = tmp_path / "weights"
    shutil.copytree(weights.WEIGHTS_DIR, folder, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    monkeypatch.setattr(weights, "WEIGHTS_DIR", folder)
    monkeypatch.setattr(weights, "REGISTRY", folder / "models.json")
    weights._verified.cache_clear()
    yield folder
    weights._verified.cache_clear()


def test_every_shipped_model_records_the_hash_of_its_config():
    for name, entry in weights.shipped_models().items():
        assert entry["config_sha256"] == weights.file_hashes(weights.model_dir(name))["config_sha256"]
    from crema.weights.__main__ import main as weights_main  # python -m crema.weights: checks every hash
    assert weights_main([]) == 0


def test_an_edited_shipped_config_is_refused_until_its_hash_is_updated(shipped_copy):
    name = "crema-mini-ecg12"
    config_path = shipped_copy / name / CONFIG_FILE
    config = json.loads(config_path.read_text())
    config["preprocess"]["band"] = [0.5, 100.0]  # silently other inputs for every user
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    with pytest.raises(CheckpointError, match=rf"shipped model {name}: .*config\.json has SHA-256 .* expected "):
        crema.load(name, device="cpu")
    from crema.weights.__main__ import main as weights_main
    assert weights_main([name]) == 1                        # the check says which hash differs
    assert weights_main(["--update", name]) == 0            # a deliberate change: record the new hash
    assert weights_main([]) == 0
    assert crema.load(name, device="cpu").preprocess.band == (0.5, 100.0)


# ============================================================================ A3. output locks

@pytest.mark.parametrize("command", ["embed", "predict"])
def test_a_second_batch_run_into_the_same_out_is_refused(tiny_classifier_checkpoint, tmp_path, capsys, command):
    out = tmp_path / ("res" if command == "embed" else "res.csv")
    with output_lock(tmp_path / ("res.npy" if command == "embed" else "res.csv"), f"crema {command}"):
        code, _, err = _run(capsys, command, tiny_classifier_checkpoint, *_records(), "--out", out, "--no-progress")
    assert code == 1
    assert re.fullmatch(rf"{re.escape(str(tmp_path / 'res'))}\.(npy|csv): another crema {command} is writing it right "
                        rf"now \(process {os.getpid()}\); wait for it to finish or choose another output",
                        _one_error(err, command))
    assert not list(tmp_path.glob("res*"))
    code, _, _ = _run(capsys, command, tiny_classifier_checkpoint, *_records(), "--out", out, "--no-progress")
    assert code == 0                                        # once the first run is over


def test_a_second_pretrain_or_finetune_on_one_folder_is_refused(tiny_ptbxl_corpus, tiny_pretrain_checkpoint,
                                                                tmp_path, capsys):
    run = tmp_path / "run"
    with output_lock(run, "crema pretrain"):
        code, _, err = _run(capsys, "pretrain", "--corpus", tiny_ptbxl_corpus.path, "--out", run, "--steps", "1",
                            "--size", "mini", "--batch-size", "4", "--device", "cpu", "--no-progress")
    assert code == 1 and "another crema pretrain is writing it right now" in _one_error(err, "pretrain")
    assert not run.exists()                                 # no log, no config written by the second run
    out = tmp_path / "ft"
    with output_lock(out, "crema finetune"):
        code, _, err = _run(capsys, "finetune", "--checkpoint", tiny_pretrain_checkpoint, "--corpus",
                            tiny_ptbxl_corpus.path, "--task", "ptbxl-superdiagnostic", "--out", out,
                            "--epochs", "1", "--device", "cpu", "--no-progress")
    assert code == 1 and "another crema finetune is writing it right now" in _one_error(err, "finetune")
    assert not out.exists()


# ============================================================================ A4. resume onto a changed corpus

def _tiny_run(corpus: Path, out: Path, steps: int) -> RunConfig:
    train = PretrainConfig(corpora=(str(corpus),), out=str(out), steps=steps, batch_size=4, warmup_steps=1,
                           ckpt_every=1, log_every=1, device="cpu", seed=0)
    return RunConfig(model=ModelConfig(window=500, **TINY_MODEL), train=train)


def test_resume_refuses_a_rebuilt_corpus_unless_allowed(tiny_ptbxl_corpus, tmp_path, capsys):
    corpus = _copy_corpus(tiny_ptbxl_corpus.path, tmp_path / "corpus")
    run = tmp_path / "run"
    pretrain(_tiny_run(corpus, run, steps=3), progress=False, stop_at=1)
    recorded = load_config(run)[CORPORA_KEY]
    assert list(recorded) == [str(corpus)] and len(recorded[str(corpus)]) == 64
    signals = np.load(corpus / "signals.npy")               # the corpus rebuilt with other windows
    np.save(corpus / "signals.npy", np.ascontiguousarray(signals[::-1]))
    code, _, err = _run(capsys, "pretrain", "--out", run, "--resume", "--no-progress")
    assert code == 1
    assert _one_error(err, "pretrain").startswith(
        f"{run}: cannot resume: the corpus {corpus} has changed since this run trained on it (its fingerprint")
    assert load_config(run)["step"] == 1                    # the checkpoint is untouched
    with pytest.warns(UserWarning, match="resuming on corpora that changed since the last checkpoint"):
        code, out, _ = _run(capsys, "pretrain", "--out", run, "--resume", "--allow-corpus-change", "--no-progress")
    assert code == 0 and "finished step 3/3" in out
    assert load_config(run)[CORPORA_KEY][str(corpus)] != recorded[str(corpus)]


# ============================================================================ B. one line, never a traceback

def test_an_unexpected_exception_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    import crema.use.commands

    def broken(*args, **kwargs):
        raise ValueError("a bug deep inside")
    monkeypatch.setattr(crema.use.commands, "read_embed_output", broken)
    bad = tmp_path / "emb.npy"
    code, _, err = _run(capsys, "embed-map", bad, "--out", tmp_path / "map.png")
    assert code == 1
    message = _one_error(err, "embed-map")
    assert message == "ValueError: a bug deep inside (unexpected; run again with --debug for the traceback)"
    assert len(err.strip().splitlines()) == 1
    for argv, env in (([ "embed-map", bad, "--out", tmp_path / "map.png", "--debug"], "0"),
                      (["embed-map", bad, "--out", tmp_path / "map.png"], "1")):
        monkeypatch.setenv("CREMA_DEBUG", env)
        assert main([str(a) for a in argv]) == 1
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and err.strip().splitlines()[-1] == f"crema embed-map: error: {message}"


def _muse_with_exponent(rec, path: Path, exponent: str) -> Path:
    formats.write_muse_xml(rec, path)
    text = path.read_text()
    path.write_text(re.sub(r"<SampleExponent>[^<]*</SampleExponent>", f"<SampleExponent>{exponent}</SampleExponent>",
                           text))
    return path


def test_muse_sample_exponent_400_is_skipped_and_the_batch_goes_on(tmp_path, capsys):
    rec = read_record(_records(1)[0])
    folder = tmp_path / "in"
    folder.mkdir()
    _muse_with_exponent(rec, folder / "a_bad.xml", "400")
    formats.write_muse_xml(rec, folder / "b_good.xml")
    shutil.copy(SAMPLE_RECORDS / "00002_lr.hea", folder / "00002_lr.hea")
    shutil.copy(SAMPLE_RECORDS / "00002_lr.dat", folder / "00002_lr.dat")
    with pytest.raises(ReadError, match=r"a_bad\.xml: GE MUSE XML: SampleExponent 400 is out of range"):
        read_record(folder / "a_bad.xml")
    code, out, err = _run(capsys, "convert", folder, "--to", "wfdb", "--out", tmp_path / "out")
    assert code == 1
    assert "crema convert: error: " + str(folder / "a_bad.xml") + ": GE MUSE XML: SampleExponent 400" in err
    assert sorted(p.name for p in (tmp_path / "out").glob("*.hea")) == ["00002_lr.hea", "b_good.hea"]
    assert out.count("\n") == 2


def _in_subprocess(code: str, limit: int) -> subprocess.CompletedProcess:
    """Run ``code`` with files limited to ``limit`` bytes: a full disk (writes stop part-way)."""
    setup = f"import resource; resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
    return subprocess.run([sys.executable, "-c", setup + code], env=_env(), capture_output=True, text=True,
                          timeout=120)


def test_a_full_disk_during_a_checkpoint_save_or_export_says_no_space_left(tiny_pretrain_checkpoint, tmp_path):
    """One process (torch imports once): ``crema export`` stops inside safetensors' write of the
    weights; then a checkpoint save whose weights fit stops inside torch.save of its state."""
    limit = (tiny_pretrain_checkpoint / MODEL_FILE).stat().st_size // 2
    export, run = tmp_path / "out" / "export", tmp_path / "run"
    export.parent.mkdir()
    proc = _in_subprocess(
        "import torch\nfrom crema.cli import main\nfrom crema.errors import WriteError\n"
        "from crema.train.checkpoint import save_checkpoint\n"
        f"print('exit', main(['export', {str(tiny_pretrain_checkpoint)!r}, '--out', {str(export)!r}]))\n"
        "try:\n"
        f"    save_checkpoint({str(run)!r}, torch.nn.Linear(4, 4), {{'kind': 'pretrain', 'model': {{}}}},\n"
        f"                    {{'step': 1, 'big': torch.zeros({limit})}})\n"
        "except WriteError as exc:\n    print(exc)\n", limit)
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"crema export: error: no space left on device: {export} (File too large)"
    assert proc.stdout.strip().splitlines() == [
        "exit 1", f"no space left on device: {run} (No space left on device (the write stopped short))"]
    assert list(export.parent.iterdir()) == []              # no half-written folder, no temporary
    assert not (run / MODEL_FILE).exists()                  # no checkpoint was made current


@pytest.fixture
def ptbxl_tables(tmp_path) -> Path:
    """The sample's PTB-XL tables (no records: the database is read before any record)."""
    root = tmp_path / "ptbxl"
    root.mkdir()
    for name in ("ptbxl_database.csv", "scp_statements.csv"):
        shutil.copy(sample_root() / name, root / name)
    return root


@pytest.mark.parametrize("damage, problem", [
    (lambda t: t.replace("{'NORM': 100.0, 'LVOLT': 0.0, 'SR': 0.0}", "{'NORM': 100.0, 'LVOLT'", 1),
     "column scp_codes of ecg_id 1 is not a dict of statement codes"),
    (lambda t: t.replace("strat_fold", "fold_strat", 1), "no column strat_fold"),
    (lambda t: re.sub(r",3,(records100/00000/00001_lr)", r",ten,\1", t, count=1),
     "column strat_fold holds 'ten' in data row 1 (expected a fold 1-10)"),
    (lambda t: t[:t.rindex('"')] + t[t.rindex('"') + 1:], "not a readable CSV table"),  # open till the end
], ids=["unclosed-scp-codes", "no-strat-fold", "fold-ten", "unclosed-quote"])
def test_a_damaged_ptbxl_database_is_one_line_naming_file_and_column(ptbxl_tables, tmp_path, capsys, damage, problem):
    database = ptbxl_tables / "ptbxl_database.csv"
    text = database.read_text()
    damaged = damage(text)
    assert damaged != text
    database.write_text(damaged)
    code, _, err = _run(capsys, "prepare", ptbxl_tables, "--out", tmp_path / "corpus", "--quiet")
    assert code == 1
    message = _one_error(err, "prepare")
    assert message.startswith(f"{database}: ") and problem in message, message


def test_a_diverging_finetune_stops_and_writes_no_classifier(tiny_pretrain_checkpoint, tiny_ptbxl_corpus,
                                                             tmp_path, capsys):
    out = tmp_path / "ft"
    code, _, err = _run(capsys, "finetune", "--checkpoint", tiny_pretrain_checkpoint, "--corpus",
                        tiny_ptbxl_corpus.path, "--task", "ptbxl-superdiagnostic", "--out", out, "--epochs", "2",
                        "--lr", "1e30", "--warmup-epochs", "0", "--batch-size", "16", "--device", "cpu",
                        "--n-bootstrap", "10", "--no-progress")
    assert code == 1
    assert _one_error(err, "finetune") == (
        f"{out}: training diverged in epoch 0 (the loss or the weights became NaN or infinite); stopped without "
        "writing a classifier; try a lower --lr, or --amp fp32")
    assert not (out / MODEL_FILE).exists() and not (out / "results.json").exists()


@pytest.mark.parametrize("argv, flag, problem", [
    (["plot", "REC", "--out", "x.png", "--dpi", "0"], "--dpi", "must be in [10, 1200], got 0"),
    (["embed", "crema-mini-ecg12", "REC", "--out", "x", "--batch-size", "0"], "--batch-size",
     "must be at least 1, got 0"),
    (["pretrain", "--corpus", "c", "--out", "r", "--mask-ratio", "1.0"], "--mask-ratio", "must be in [0, 1), got 1.0"),
    (["pretrain", "--corpus", "c", "--out", "r", "--steps", "-5"], "--steps", "must not be negative, got -5"),
    (["pretrain", "--corpus", "c", "--out", "r", "--device", "cuda"], "--device",
     "cuda: no CUDA GPU is available here; use cpu or auto"),
    (["export-onnx", "crema-mini-ecg12", "--out", "x.onnx", "--opset", "1"], "--opset", "must be at least 14, got 1"),
    (["finetune", "--checkpoint", "crema-mini-ecg12", "--corpus", "c", "--task", "t", "--out", "o",
      "--batch-size", "0"], "--batch-size", "must be at least 1, got 0"),
], ids=["dpi", "batch-size", "mask-ratio", "steps", "device", "opset", "finetune-batch-size"])
def test_out_of_range_flags_are_one_argparse_line(tmp_path, capsys, argv, flag, problem):
    if flag == "--device" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    argv = [str(_records(1)[0]) if a == "REC" else a for a in argv]
    os.chdir(tmp_path)
    try:
        code = main(argv)
    except SystemExit as exc:                               # argparse's own: usage, then the error
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == f"crema {argv[0]}: error: argument {flag}: {problem}"
    assert list(tmp_path.iterdir()) == []


def _embed(capsys, checkpoint, out, *inputs) -> tuple[int, str]:
    code, _, err = _run(capsys, "embed", checkpoint, *inputs, "--out", out, "--no-progress")
    return code, err


@pytest.mark.parametrize("damage", ["truncated-npy", "garbage-index", "garbage-run-json"])
def test_resuming_embed_onto_damaged_outputs_is_a_clear_error(tiny_pretrain_checkpoint, tmp_path, capsys, damage):
    out = tmp_path / "emb"
    assert _embed(capsys, tiny_pretrain_checkpoint, out, *_records(2))[0] == 0
    target = {"truncated-npy": tmp_path / "emb.npy", "garbage-index": tmp_path / "emb.index.csv",
              "garbage-run-json": tmp_path / "emb.run.json"}[damage]
    if damage == "truncated-npy":
        target.write_bytes(target.read_bytes()[:100])
    else:
        target.write_bytes(b'\x00\xff"unclosed\n{[')
    code, err = _embed(capsys, tiny_pretrain_checkpoint, out, *_records(3))
    assert code == 1
    message = _one_error(err, "embed")
    assert message.startswith(f"{target}: the existing output is damaged and cannot be resumed (")
    assert message.endswith("pass --overwrite to start again, or choose another --out")
    code, err = _embed(capsys, tiny_pretrain_checkpoint, out, *_records(3), "--overwrite")
    assert code == 0 and np.load(tmp_path / "emb.npy").shape == (3, 32)


def test_resuming_predict_onto_a_garbage_csv_is_a_clear_error(tiny_classifier_checkpoint, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    args = ["predict", tiny_classifier_checkpoint, *_records(2), "--out", out, "--no-progress"]
    assert _run(capsys, *args)[0] == 0
    out.write_bytes(b'record_id,"unclosed\n\x00\xff')
    code, _, err = _run(capsys, *args)
    assert code == 1 and _one_error(err, "predict").startswith(f"{out}: the existing output is damaged")


def test_a_damaged_corpus_is_one_clear_error(tiny_pretrain_checkpoint, tiny_ptbxl_corpus, tmp_path, capsys):
    corpus = _copy_corpus(tiny_ptbxl_corpus.path, tmp_path / "corpus")
    (corpus / "classes.json").write_text("{'not': json")
    code, err = _embed(capsys, tiny_pretrain_checkpoint, tmp_path / "a", corpus)
    assert code == 1 and _one_error(err, "embed").startswith("0 records processed, 1 failed")
    assert f"skipped {corpus}: {corpus / 'classes.json'}: not valid JSON" in err
    shutil.copy(tiny_ptbxl_corpus.path / "classes.json", corpus / "classes.json")
    signals = corpus / "signals.npy"
    signals.write_bytes(signals.read_bytes()[:len(signals.read_bytes()) // 2])
    with pytest.raises(CremaError, match=re.escape(f"{signals}: damaged (")):
        crema.data.corpus.Corpus(corpus).signals
    code, err = _embed(capsys, tiny_pretrain_checkpoint, tmp_path / "b", corpus)
    assert code == 1 and _one_error(err, "embed").startswith("0 records processed, 1 failed")
    assert f"skipped {corpus}: {signals}" in err
    assert not list(tmp_path.glob("b.*"))


def test_a_nan_window_of_a_corpus_is_refused_not_embedded(tiny_pretrain_checkpoint, tiny_ptbxl_corpus, tmp_path,
                                                          capsys):
    corpus = _copy_corpus(tiny_ptbxl_corpus.path, tmp_path / "corpus")
    signals = np.load(corpus / "signals.npy")
    signals[1, 0, 100] = np.nan                             # one stored sample of the second record damaged
    np.save(corpus / "signals.npy", signals)
    code, err = _embed(capsys, tiny_pretrain_checkpoint, tmp_path / "emb", corpus)
    assert code == 1
    index = pd.read_csv(corpus / "index.csv", dtype=str)
    errors = pd.read_csv(tmp_path / "emb.errors.csv", dtype=str)
    assert list(errors["record_id"]) == [index["record_id"][1]]
    assert "NaN or infinite values" in errors["reason"][0] and "window" in errors["reason"][0]
    emb = np.load(tmp_path / "emb.npy")
    assert emb.shape == (len(index) - 1, 32) and np.isfinite(emb).all()


def test_absurd_model_dimensions_are_refused_before_anything_is_built(tiny_pretrain_checkpoint, tmp_path, capsys):
    def wide(config):
        config["model"]["dim"] = 10 ** 6
        config["model"]["heads"] = 1
    absurd = _plain_copy(tiny_pretrain_checkpoint, tmp_path / "wide", edit_config=wide)
    code, err = _embed(capsys, absurd, tmp_path / "emb", _records(1)[0])
    assert code == 1
    assert _one_error(err, "embed") == (
        f"{absurd / MODEL_FILE}: the config's model does not fit these weights: dim 1000000 is no dimension of "
        "the encoder's weights (they have [8, 12, 32, 96, 128, 200])")

    def deep(config):
        config["model"]["depth"] = 10 ** 5
    absurd = _plain_copy(tiny_pretrain_checkpoint, tmp_path / "deep", edit_config=deep)
    with pytest.raises(CheckpointError, match="depth is 100000 but the weights hold 2 encoder.blocks"):
        load_network(absurd)


# ============================================================================ C. clinical formats never flatten an ECG

@pytest.mark.parametrize("fmt, suffix", [("dicom", ".dcm"), ("aecg", ".xml"), ("muse", ".xml"), ("edf", ".edf")])
def test_a_1e6_mv_offset_is_refused_not_quantised_away(tmp_path, capsys, fmt, suffix):
    rec = read_record(_records(1)[0])
    np.save(tmp_path / "offset.npy", rec.signal + 1e6)
    np.save(tmp_path / "ecg.npy", rec.signal)
    code, out, err = _run(capsys, "convert", tmp_path / "offset.npy", tmp_path / "ecg.npy", "--fs", "100",
                          "--to", fmt, "--out", tmp_path / "out")
    assert code == 1
    name = {"dicom": "DICOM", "aecg": "HL7 aECG", "muse": "GE MUSE XML", "edf": "EDF"}[fmt]
    assert (f"crema convert: error: {tmp_path / 'out' / ('offset' + suffix)}: cannot write {name}: values up to "
            f"1e+06 mV would need an amplitude step of ") in err
    assert "check the signal's unit and baseline offset" in err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["ecg" + suffix]
    back = read_record(tmp_path / "out" / ("ecg" + suffix))
    assert np.abs(back.signal[:2] - rec.signal[:2]).max() < 0.01   # the good record round-trips


# ============================================================================ D. the documented ONNX snippet

def test_the_usage_onnx_snippet_runs_on_a_model_whose_graph_is_shorter_than_a_window(
        tiny_classifier_checkpoint, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from crema.use.onnx_export import export_onnx

    model = crema.load(tiny_classifier_checkpoint, device="cpu", precision="fp32")
    assert model.window < model.preprocess.window           # 1000-sample graph, 2500-sample windows
    export_onnx(model, tmp_path / "model.onnx")
    usage = (Path(__file__).resolve().parents[1] / "docs" / "USAGE.md").read_text()
    snippet = next(block for block in re.findall(r"```python\n(.*?)```", usage, re.S) if "InferenceSession" in block)
    record = _records(1)[0]
    code = (snippet.replace('"models/crema-ptbxl.onnx"', repr(str(tmp_path / "model.onnx")))
            .replace('"models/crema-ptbxl"', repr(str(tiny_classifier_checkpoint))).replace('"a.xml"', repr(str(record))))
    namespace: dict = {}
    exec(compile(code, "USAGE.md", "exec"), namespace)
    prepared = model.prepare(read_record(record))
    expected = model.classify_windows(prepared.signals, np.repeat(prepared.lead_mask[None], len(prepared.signals), 0))
    assert namespace["probs"].shape == expected.shape == (1, len(model.classes))
    np.testing.assert_allclose(namespace["probs"], expected, atol=1e-4)


# ============================================================================ E. small CLI defects

def test_finetune_with_probe_init_prints_the_best_epochs_validation_auroc(tiny_pretrain_checkpoint, tiny_ptbxl_corpus,
                                                                          tmp_path, capsys):
    out = tmp_path / "ft"
    code, printed, _ = _run(capsys, "finetune", "--checkpoint", tiny_pretrain_checkpoint, "--corpus",
                            tiny_ptbxl_corpus.path, "--task", "ptbxl-superdiagnostic", "--out", out, "--epochs", "1",
                            "--probe-init", "--batch-size", "16", "--device", "cpu", "--n-bootstrap", "10",
                            "--no-progress")
    assert code == 0
    summary = json.loads((out / "finetune_summary.json").read_text())
    assert [h["epoch"] for h in summary["history"]] == [-1, 0]
    best = next(h for h in summary["history"] if h["epoch"] == summary["best_epoch"])
    shown = re.search(r"validation macro AUROC ([0-9.]+)\)", printed).group(1)
    assert shown == f"{best['val_auroc']:.3f}"


@pytest.mark.parametrize("command, wanted, unwanted", [
    ("probe", "95% bootstrap", "%%"),
    ("demo", "1. crema prepare", "``"),
    ("pretrain", "normalise each target patch by its own mean and std (on by default; this flag turns it off)",
     "turn off:"),
    ("embed", "shipped model", None),
    ("predict", "shipped model", None),
    ("export-onnx", "shipped model", None),
    ("plot-reconstruction", "shipped model", None),
])
def test_help_texts_read_right(capsys, command, wanted, unwanted):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())        # argparse wraps lines
    assert wanted in text
    assert unwanted is None or unwanted not in text


def test_a_stack_without_fs_is_one_error_and_writes_no_output(tiny_pretrain_checkpoint, tmp_path, capsys):
    stack = tmp_path / "stack.npy"
    np.save(stack, np.stack([read_record(p).signal for p in _records(3)]))
    code, err = _embed(capsys, tiny_pretrain_checkpoint, tmp_path / "emb", stack)
    assert code == 1
    assert err.strip().splitlines() == [
        f"skipped {stack}: sampling rate unknown: pass fs (crema embed/predict --fs HZ, crema prepare --input-fs HZ)",
        f"crema embed: error: 0 records processed, 1 failed (each named above with its reason); nothing written "
        f"to {tmp_path / 'emb'}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stack.npy"]      # no (0, D) output
    code, err = _embed(capsys, tiny_pretrain_checkpoint, tmp_path / "emb", stack, "--fs", "100")
    assert code == 0 and np.load(tmp_path / "emb.npy").shape == (3, 32)


@pytest.mark.parametrize("damage, problem", [
    ("text-npy", "not a NumPy array file"),
    ("pickled-npy", "not a NumPy array file"),
    ("nan-npy", "holds values that are not finite numbers"),
    ("short-index", "3 rows for the 2 of emb.index.csv"),
    ("no-source", "no source column"),
])
def test_embed_map_and_the_viewer_reference_refuse_a_damaged_embed_output(tiny_pretrain_checkpoint, tmp_path,
                                                                          capsys, damage, problem):
    from crema import load
    from crema.serve.reference import load_reference

    out = tmp_path / "emb"
    assert _embed(capsys, tiny_pretrain_checkpoint, out, *_records(3))[0] == 0
    npy, index = tmp_path / "emb.npy", tmp_path / "emb.index.csv"
    if damage == "text-npy":
        npy.write_text("not an array\n")
    elif damage == "pickled-npy":
        np.save(npy, np.array([{"x": 1}] * 3, dtype=object), allow_pickle=True)
    elif damage == "nan-npy":
        values = np.load(npy)
        values[1, 0] = np.nan
        np.save(npy, values)
    elif damage == "short-index":
        index.write_text("\n".join(index.read_text().splitlines()[:3]) + "\n")
    else:
        index.write_text("record_id,where\na,b\nc,d\ne,f\n")
    target = index if damage in ("no-source",) else npy
    code, _, err = _run(capsys, "embed-map", npy, "--out", tmp_path / "map.png")
    assert code == 1 and not (tmp_path / "map.png").exists()
    message = _one_error(err, "embed-map")
    assert message.startswith(f"{target}: ") and problem in message
    with pytest.raises(CremaError, match=problem):
        load_reference(load(tiny_pretrain_checkpoint, device="cpu"), str(npy))
