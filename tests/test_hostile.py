"""Hostile and careless input: what CREMA survives (issue 11).

Each test breaks a copy of a real record (the PTB-XL sample shipped in the package, so that
these run without ``../shared/data``) the way a careless or hostile user would, and checks the
exact outcome: one clear error naming the file and the problem, the good files still
processed, a non-zero exit status when anything failed, nothing half-written, and never a
Python traceback. Read top to bottom, this is the list in docs/DATA.md ("Bad input CREMA
survives").
"""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import crema
from crema.cli import main
from crema.config import STANDARD_LEADS, ModelConfig, ObjectiveConfig, PreprocessConfig, PretrainConfig, RunConfig
from crema.config_io import to_dict
from crema.data import formats
from crema.data.corpus import Corpus
from crema.data.prepare import prepare_corpus
from crema.data.readers import find_records, read_record
from crema.errors import CheckpointError, CremaError, ReadError
from crema.paths import sample_root
from crema.model.checkpoint import STORE
from crema.train.checkpoint import load_training_state, save_checkpoint
from crema.train.pretrain import pretrain

SAMPLE_RECORDS = sample_root() / "records100" / "00000"
SRC = Path(crema.__file__).resolve().parents[1]  # so that subprocesses run this tree's code
TINY_MODEL = dict(size="tiny", patch_size=50, dim=32, depth=1, heads=2, stem_channels=8, drop_path=0.0,
                  decoder_dim=32, decoder_depth=1, decoder_heads=2, projector_hidden=32, projector_dim=16)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ============================================================================ helpers

def _run(capsys, *argv) -> tuple[int, str, str]:
    """``crema ARGV`` in this process: (exit status, stdout, stderr)."""
    code = main([os.fsdecode(a) if isinstance(a, bytes) else str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1",
                PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])))


def _copy_record(folder: Path, stem: str = "00001_lr", name: str | None = None) -> Path:
    """Copy sample record ``stem`` (WFDB .hea + .dat) into ``folder``; returns the header."""
    folder.mkdir(parents=True, exist_ok=True)
    for suffix in (".hea", ".dat"):
        shutil.copy(SAMPLE_RECORDS / f"{stem}{suffix}", folder / f"{name or stem}{suffix}")
    if name:  # the header names its record and signal file
        header = folder / f"{name}.hea"
        header.write_text(header.read_text().replace(stem, name))
    return folder / f"{name or stem}.hea"


def _signal(stem: str = "00001_lr") -> np.ndarray:
    """Real 12-lead signal (12, 1000) in mV at 100 Hz."""
    return read_record(SAMPLE_RECORDS / f"{stem}.hea").signal


def _edit_header(header: Path, edit) -> Path:
    lines = header.read_text().splitlines()
    header.write_text("\n".join(edit(lines)) + "\n")
    return header


def _no_temporaries(folder: Path) -> bool:
    """No hidden temporary (``.x.partial``, ``.x.lock``, ``.x.tmp``) left in ``folder``."""
    return not [p for p in folder.iterdir() if p.name.startswith(".") and p.name != STORE]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised pretraining checkpoint (embeds a 10 s record as one window)."""
    from crema.model.crema import CREMA

    torch.manual_seed(0)
    cfg = ModelConfig(window=2500, **TINY_MODEL)
    out = tmp_path_factory.mktemp("ckpt") / "pretrain"
    save_checkpoint(out, CREMA(cfg, ObjectiveConfig()), {
        "kind": "pretrain", "model": to_dict(cfg), "preprocess": to_dict(PreprocessConfig())})
    return out


@pytest.fixture(scope="module")
def tiny_classifier(tmp_path_factory) -> Path:
    """A randomly initialised two-class SiT classifier checkpoint."""
    from crema.model.heads import Classifier
    from crema.model.sit import SiTEncoder

    torch.manual_seed(0)
    cfg = ModelConfig(window=2500, **TINY_MODEL)
    out = tmp_path_factory.mktemp("ckpt") / "classifier"
    save_checkpoint(out, Classifier(SiTEncoder(cfg), 2), {
        "kind": "classifier", "arch": "sit", "model": to_dict(cfg), "preprocess": to_dict(PreprocessConfig()),
        "classes": ["A", "B"], "thresholds": [0.5, 0.5]})
    return out


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A finished 2-step pretraining run (checkpoint every step) on 8 sample records."""
    base = tmp_path_factory.mktemp("run")
    prepare_corpus(sample_root(), base / "corpus", workers=1, limit=8, progress=False)
    cfg = _run_config(base / "corpus", base / "run", steps=2)
    pretrain(cfg, progress=False)
    return base / "run"


def _run_config(corpus: Path, out: Path, steps: int) -> RunConfig:
    train = PretrainConfig(corpora=(str(corpus),), out=str(out), steps=steps, batch_size=4,
                           warmup_steps=1, ckpt_every=1, log_every=1, device="cpu", seed=0)
    return RunConfig(model=ModelConfig(window=500, **TINY_MODEL), train=train)


def _copy_run(run: Path, dest: Path) -> Path:
    shutil.copytree(run, dest, symlinks=True)  # keep the checkpoint's links as links
    return dest


def _log_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]


# ============================================================================ 1. non-UTF-8 file names

BAD_NAME = b"ecg_\xff\xfe.npy"


@pytest.fixture
def folder_with_bad_name(tmp_path) -> Path:
    """Record 1 as WFDB, record 2 as .npy, and record 2 again under a name that is not UTF-8."""
    folder = tmp_path / "in"
    _copy_record(folder)
    np.save(folder / "good.npy", _signal("00002_lr"))
    shutil.copy(folder / "good.npy", os.fsdecode(os.fsencode(folder) + b"/" + BAD_NAME))
    return folder


def test_non_utf8_file_name_is_listed_and_the_others_embedded(tiny_checkpoint, folder_with_bad_name,
                                                              tmp_path, capsys):
    out = tmp_path / "emb"
    for extra in ([], [], ["--overwrite"]):  # a re-run and an --overwrite run behave the same
        code, _, err = _run(capsys, "embed", tiny_checkpoint, folder_with_bad_name, "--fs", "100",
                            "--out", out, "--no-progress", *extra)
        assert code == 1 and "1 failed" in err
        assert "ecg_\\xff\\xfe.npy: file name is not valid UTF-8" in err
        index = pd.read_csv(tmp_path / "emb.index.csv", dtype=str)
        assert sorted(index["record_id"]) == ["00001_lr", "good"]          # the good files, once
        assert np.load(tmp_path / "emb.npy").shape == (2, 32)
        assert (tmp_path / "emb.run.json").is_file()                        # nothing half-written
        errors = pd.read_csv(tmp_path / "emb.errors.csv")
        assert errors["record_id"].tolist() == ["ecg_\\xff\\xfe"]


def test_non_utf8_file_name_in_predict_and_prepare(tiny_classifier, folder_with_bad_name, tmp_path, capsys):
    code, _, err = _run(capsys, "predict", tiny_classifier, folder_with_bad_name, "--fs", "100",
                        "--out", tmp_path / "p.csv", "--no-progress")
    assert code == 1 and "file name is not valid UTF-8" in err
    assert sorted(pd.read_csv(tmp_path / "p.csv", dtype=str)["record_id"]) == ["00001_lr", "good"]
    code, out, err = _run(capsys, "prepare", folder_with_bad_name, "--out", tmp_path / "c",
                          "--input-fs", "100", "--quiet")
    assert code == 1 and "1 of 3 records could not be prepared" in err
    assert "ecg_\\xff\\xfe.npy: file name is not valid UTF-8" in out
    assert Corpus(tmp_path / "c").index["record_id"].tolist() == ["00001_lr", "good"]


def test_header_naming_a_non_utf8_signal_file_says_so(tmp_path):
    header = _copy_record(tmp_path, name="rec")
    os.rename(tmp_path / "rec.dat", os.fsencode(tmp_path) + b"/rec\xff.dat")
    raw = header.read_bytes().replace(b"rec.dat", b"rec\xff.dat")
    header.write_bytes(raw)
    with pytest.raises(ReadError, match=r"rec\.hea: the header names 'rec\\xff\.dat', which is not valid UTF-8"):
        read_record(header)


# ============================================================================ 2. header sampling rates

@pytest.mark.parametrize("rate", ["nan", "inf", "-500", "1e9", "5"])
def test_implausible_header_sampling_rate_is_refused(tmp_path, rate):
    header = _edit_header(_copy_record(tmp_path), lambda lines: [
        lines[0].replace(" 100 ", f" {rate} ", 1), *lines[1:]])
    with pytest.raises(ReadError, match=rf"00001_lr\.hea: header's sampling rate '{rate}' Hz is not a "
                                        "plausible ECG rate"):
        read_record(header)


def test_prepare_skips_records_with_bad_rates_and_keeps_the_good_one(tmp_path, capsys):
    for rate in ("nan", "1e9"):
        _edit_header(_copy_record(tmp_path / "in", name=f"rate_{rate}"), lambda lines, r=rate: [
            lines[0].replace(" 100 ", f" {r} ", 1), *lines[1:]])
    _copy_record(tmp_path / "in")
    code, out, _ = _run(capsys, "prepare", tmp_path / "in", "--out", tmp_path / "c", "--quiet")
    assert code == 1 and "1 of 3 records read, 2 skipped" in out
    assert "rate_1e9.hea: header's sampling rate '1e9' Hz is not a plausible ECG rate" in out
    corpus = Corpus(tmp_path / "c")
    assert corpus.index["record_id"].tolist() == ["00001_lr"] and len(corpus) == 1  # not 500 windows


# ============================================================================ 3. flat leads

def test_flat_lead_counts_as_missing(tiny_checkpoint, tmp_path, capsys):
    signal = _signal()
    signal[STANDARD_LEADS.index("V3")] = 0.37          # a disconnected electrode
    np.save(tmp_path / "flat_v3.npy", signal)
    code, _, err = _run(capsys, "embed", tiny_checkpoint, tmp_path / "flat_v3.npy", "--fs", "100",
                        "--out", tmp_path / "e", "--no-progress")
    assert code == 0 and "leads V3 are missing or flat" in err
    assert pd.read_csv(tmp_path / "e.index.csv")["leads_present"].tolist() == [11]
    prepare_corpus(tmp_path / "flat_v3.npy", tmp_path / "c", workers=1, input_fs=100, progress=False)
    mask = Corpus(tmp_path / "c").lead_mask[0]
    assert mask.tolist() == [name != "V3" for name in STANDARD_LEADS]


def test_all_flat_record_is_rejected(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    np.save(tmp_path / "in" / "blank.npy", np.zeros_like(_signal()))
    np.save(tmp_path / "in" / "real.npy", _signal())
    code, out, _ = _run(capsys, "prepare", tmp_path / "in", "--out", tmp_path / "c", "--input-fs", "100",
                        "--quiet")
    assert code == 1 and "blank.npy: record blank: every lead is flat (constant signal)" in out
    assert Corpus(tmp_path / "c").index["record_id"].tolist() == ["real"]


# ============================================================================ 4. checkpoints killed mid-save

KILL_DURING_SAVE = """
import os, sys
from crema.model.checkpoint import load_checkpoint
from crema.train import checkpoint as c
run, stage = sys.argv[1], sys.argv[2]
state, config = load_checkpoint(run)
training = c.load_training_state(run)
config["step"] = training["step"] = training["step"] + 1
die = lambda *args, **kwargs: os._exit(9)            # as SIGKILL: no cleanup of any kind
if stage == "while-writing":
    c.torch.save = die                               # the weights are written, the state never
elif stage == "before-switch":
    c._make_current = die
else:
    switch = c._make_current
    c._make_current = lambda *args: (switch(*args), die())
c.save_checkpoint(run, state, config, training)
"""


@pytest.mark.parametrize("stage, resumes_at", [("while-writing", 2), ("before-switch", 2), ("after-switch", 3)])
def test_checkpoint_killed_during_save_resumes(tiny_run, tmp_path, stage, resumes_at):
    run = _copy_run(tiny_run, tmp_path / "run")
    proc = subprocess.run([sys.executable, "-c", KILL_DURING_SAVE, str(run), stage], env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 9, proc.stderr
    # the previous checkpoint, or the complete new one: never a mix
    assert load_training_state(run)["step"] == resumes_at
    assert json.loads((run / "config.json").read_text())["step"] == resumes_at
    result = pretrain(_run_config(tiny_run.parent / "corpus", run, steps=resumes_at + 1), resume=True,
                      progress=False)
    assert result.step == resumes_at + 1 and load_training_state(run)["step"] == resumes_at + 1
    store = sorted(p.name for p in (run / STORE).iterdir())
    assert len(store) == 2 and store[0] == "current"          # the kill's leftovers are gone


def test_checkpoint_folder_of_plain_files_is_adopted(tiny_run, tmp_path):
    legacy = tmp_path / "legacy"  # the layout of CREMA before issue 11: three plain files
    legacy.mkdir()
    for name in ("config.json", "model.safetensors", "training_state.pt", "log.jsonl"):
        shutil.copy(tiny_run / name, legacy / name)
    assert crema.load(legacy, device="cpu").kind == "pretrain"
    pretrain(_run_config(tiny_run.parent / "corpus", legacy, steps=3), resume=True, progress=False)
    assert all((legacy / n).is_symlink() for n in ("config.json", "model.safetensors", "training_state.pt"))
    assert load_training_state(legacy)["step"] == 3 and _log_steps(legacy) == [1, 2, 3]


# ============================================================================ 5. two prepare runs at once

def test_second_prepare_into_the_same_out_is_refused(tmp_path, capsys):
    out = tmp_path / "c"
    first = subprocess.Popen([sys.executable, "-m", "crema.cli", "prepare", str(sample_root()), "--out", str(out),
                              "--limit", "40", "--workers", "1", "--quiet"], env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        lock = tmp_path / ".c.lock"  # written with the holder's pid once the lock is held
        _wait_for(lambda: lock.exists() and lock.read_text().strip() == str(first.pid), first)
        first.send_signal(signal.SIGSTOP)  # hold it mid-run, whatever the machine's speed
        code, _, err = _run(capsys, "prepare", sample_root(), "--out", out, "--limit", "5", "--workers", "1",
                            "--quiet")
        assert code == 1 and f"{out.resolve()}: another crema prepare is writing it right now (process {first.pid})" in err
        first.send_signal(signal.SIGCONT)
        assert first.wait(timeout=120) == 0, first.stderr.read()
    finally:
        first.kill()
    assert len(Corpus(out)) == 40 and _no_temporaries(tmp_path)   # the first run's corpus, whole


# ============================================================================ 6. prepare --input-fs

@pytest.mark.parametrize("rate", ["5", "nan"])
def test_prepare_refuses_an_implausible_input_rate(tmp_path, capsys, rate):
    np.save(tmp_path / "rec.npy", _signal())
    code, _, err = _run(capsys, "prepare", tmp_path / "rec.npy", "--out", tmp_path / "c", "--input-fs", rate)
    assert code == 1 and f"sampling rate --input-fs={float(rate)} Hz is not a plausible ECG rate" in err
    assert not (tmp_path / "c").exists()


# ============================================================================ 7. duplicate lead names

def test_lead_named_twice_in_a_header_is_refused(tmp_path):
    header = _edit_header(_copy_record(tmp_path), lambda lines: [
        line.replace(" III", " II") if line.endswith(" III") else line for line in lines])
    with pytest.raises(ReadError, match=r"00001_lr\.hea: lead II appears more than once"):
        read_record(header)


def test_lead_named_twice_in_a_csv_or_in_leads_is_refused(tiny_checkpoint, tmp_path, capsys):
    names = list(STANDARD_LEADS)
    names[2] = "II"
    pd.DataFrame(_signal().T, columns=names).to_csv(tmp_path / "rec.csv", index=False)
    with pytest.raises(ReadError, match=r"rec\.csv: lead II appears more than once"):
        read_record(tmp_path / "rec.csv", fs=100)
    np.save(tmp_path / "rec.npy", _signal())
    code, _, err = _run(capsys, "embed", tiny_checkpoint, tmp_path / "rec.npy", "--fs", "100",
                        "--leads", "I,I," + ",".join(STANDARD_LEADS[2:]), "--out", tmp_path / "e")
    assert code == 1 and "--leads names I more than once" in err and not (tmp_path / "e.npy").exists()


# ============================================================================ 8. signals and pool workers

def _children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (Linux /proc)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_for(condition, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def _sigint_as_by_default() -> None:
    """Run in the child before exec: SIGINT back to its default, so that Python installs its
    Ctrl-C handler. A shell's background job (``make test &``) starts with SIGINT ignored, and a
    Python started then leaves it ignored, so the Ctrl-C case would test nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_prepare(out: Path) -> tuple[subprocess.Popen, list[int]]:
    """``crema prepare`` of the whole sample with 2 workers, in its own process group; returns it
    and its worker pids once the pool is working (its first chunk is written)."""
    # The wfdb reader (about 3x slower than the fast path) and an early signal keep the whole
    # sample from finishing before the signal lands, even on a quiet machine.
    proc = subprocess.Popen([sys.executable, "-m", "crema.cli", "prepare", str(sample_root()), "--out", str(out),
                             "--workers", "2", "--quiet"], env={**_env(), "CREMA_WFDB_READER": "wfdb"},
                            start_new_session=True, preexec_fn=_sigint_as_by_default,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(lambda: len(list(out.parent.glob(f".{out.name}.partial/chunks/*.npy"))) >= 1, proc)
    return proc, _children(proc.pid)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("how, status, message", [
    ("ctrl-c", 130, "crema prepare: interrupted"),           # SIGINT to the whole process group
    ("sigterm", 143, "crema prepare: terminated (SIGTERM)"),  # SIGTERM to the parent only
    ("sigkill", -9, None)])
def test_prepare_stopped_by_a_signal_leaves_no_workers_and_no_traceback(tmp_path, how, status, message):
    proc, workers, err = _stop_prepare(tmp_path, how)
    assert proc.returncode == status and len(workers) == 2
    assert not (tmp_path / "c").exists()
    # the progress, to resume (and after SIGKILL the lock file, whose lock the kernel released)
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if message else [".c.lock"]) + [".c.partial"]
    if message:
        assert err.strip().splitlines() == [message]           # one line, no traceback


def _stop_prepare(tmp_path: Path, how: str) -> tuple[subprocess.Popen, list[int], str]:
    """Start a prepare, stop it with ``how`` once it is working; the process, its workers, stderr."""
    proc, workers = _start_prepare(tmp_path / "c")
    try:
        os.killpg(proc.pid, signal.SIGSTOP)  # freeze parent and workers mid-run, whatever the machine's speed
        try:
            if how == "ctrl-c":
                os.killpg(proc.pid, signal.SIGINT)
            else:
                proc.send_signal(signal.SIGTERM if how == "sigterm" else signal.SIGKILL)
        finally:
            os.killpg(proc.pid, signal.SIGCONT)  # the pending signal lands as they resume
        _, err = proc.communicate(timeout=60)
        deadline = time.time() + 10
        while any(_running(w) for w in workers) and time.time() < deadline:
            time.sleep(0.1)
        assert not any(_running(w) for w in workers)           # no orphans, even after SIGKILL
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc, workers, err
    # a run with other settings starts afresh and leaves only its corpus
    prepare_corpus(sample_root(), tmp_path / "c", workers=1, limit=2, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


# ============================================================================ 9. globs through link loops

def test_glob_through_a_link_loop_lists_each_file_once(tiny_checkpoint, tmp_path, capsys):
    folder = tmp_path / "d"
    (folder / "sub").mkdir(parents=True)
    np.save(folder / "a.npy", _signal("00001_lr"))
    np.save(folder / "sub" / "b.npy", _signal("00002_lr"))
    (folder / "loop").symlink_to(".")                          # dir/loop -> dir
    (folder / "also_a.npy").symlink_to("a.npy")                # the same file under two names
    for spec in (f"{folder}/**/*.npy", f"{folder}/**", str(folder)):
        assert {p.resolve() for p in find_records(spec)} == {folder / "a.npy", folder / "sub" / "b.npy"}
        assert len(find_records(spec)) == 2
    code, _, _ = _run(capsys, "embed", tiny_checkpoint, f"{folder}/**/*.npy", "--fs", "100",
                      "--out", tmp_path / "e", "--no-progress")
    assert code == 0 and len(pd.read_csv(tmp_path / "e.index.csv")) == 2


# ============================================================================ 10. config.json checked

@pytest.mark.parametrize("edit, problem", [
    (lambda c: c["preprocess"].update(fs="fast"), 'preprocess.fs: expected a finite number, got a string ("fast")'),
    (lambda c: c["preprocess"].update(fs=-250), "preprocess.fs: must be positive, got -250"),
    (lambda c: c["preprocess"].update(speed=2), "preprocess: unknown config keys ['speed']"),
    (lambda c: c.update(thresholds=["high", "low"]), "thresholds: expected probabilities between 0 and 1, got 'high'"),
    (lambda c: c.update(thresholds=[float("nan"), 0.5]), "thresholds: expected probabilities between 0 and 1, got nan"),
    (lambda c: c.update(model={**c["model"], "dim": "wide"}), 'model.dim: expected an integer, got a string ("wide")'),
    ("list", "expected a JSON object of settings, got a list"),
])
def test_bad_config_json_is_one_clear_error(tiny_classifier, tmp_path, capsys, edit, problem):
    folder = _copy_run(tiny_classifier, tmp_path / "cls")
    config = json.loads((folder / "config.json").read_text())
    if edit == "list":
        config = [config]
    else:
        edit(config)
    (folder / "config.json").write_text(json.dumps(config))    # NaN is written as JSON's NaN
    with pytest.raises(CheckpointError) as caught:
        crema.load(folder, device="cpu")
    assert str(caught.value) == f"{folder / 'config.json'}: {problem}"
    np.save(tmp_path / "rec.npy", _signal())
    code, _, err = _run(capsys, "predict", folder, tmp_path / "rec.npy", "--fs", "100", "--out", tmp_path / "p.csv")
    assert code == 1 and err.strip() == f"crema predict: error: {folder / 'config.json'}: {problem}"


# ============================================================================ 11. truncated log line

def test_truncated_last_log_line_does_not_block_resume(tiny_run, tmp_path):
    run = _copy_run(tiny_run, tmp_path / "run")
    with (run / "log.jsonl").open("a") as fh:
        fh.write('{"step": 3, "loss": 0.12')                      # killed in the middle of a write
    pretrain(_run_config(tiny_run.parent / "corpus", run, steps=3), resume=True, progress=False)
    assert _log_steps(run) == [1, 2, 3]
    (run / "log.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(CremaError, match=r"log\.jsonl: line 2 is not JSON"):
        pretrain(_run_config(tiny_run.parent / "corpus", run, steps=4), resume=True, progress=False)


# ============================================================================ 12. full disk, unwritable --out

def test_unwritable_out_is_one_clear_error(tiny_checkpoint, tmp_path, capsys):
    np.save(tmp_path / "rec.npy", _signal())
    (tmp_path / "file").write_text("a file where a folder should be")
    blocked = f"a file is in the way ({tmp_path / 'file'} is not a folder)"
    code, _, err = _run(capsys, "embed", tiny_checkpoint, tmp_path / "rec.npy", "--fs", "100",
                        "--out", tmp_path / "file" / "e")
    assert code == 1 and err.strip() == f"crema embed: error: cannot write {tmp_path / 'file' / 'e.npy'}: {blocked}"
    code, _, err = _run(capsys, "prepare", tmp_path / "rec.npy", "--input-fs", "100", "--out", tmp_path / "file" / "c")
    assert code == 1 and err.strip() == f"crema prepare: error: cannot write {tmp_path / 'file' / 'c'}: {blocked}"


def _limit_file_size(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.parametrize("command, limit", [("prepare", 200_000), ("embed", 100)])
def test_full_disk_is_one_clear_error_and_leaves_nothing(tiny_checkpoint, tmp_path, command, limit):
    """The device is full (simulated with a file-size limit: writes stop part-way, as numpy's
    "960000 requested and 440256 written")."""
    out = tmp_path / "out" / "x"
    out.parent.mkdir()
    args = {"prepare": ["prepare", str(sample_root()), "--limit", "20", "--workers", "1", "--quiet"],
            "embed": ["embed", str(tiny_checkpoint), str(SAMPLE_RECORDS / "00001_lr.hea"), "--no-progress"]}[command]
    proc = subprocess.run([sys.executable, "-m", "crema.cli", *args, "--out", str(out)], env=_env(),
                          preexec_fn=_limit_file_size(limit), capture_output=True, text=True, timeout=120)
    expected = out if command == "prepare" else out.parent / "x.npy"
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(
        f"crema {command}: error: no space left on device: {expected} (")
    assert "Traceback" not in proc.stderr
    assert list(out.parent.iterdir()) == []                   # nothing half-written, no temporaries


# ============================================================================ also: arrays, XML, CSV, EDF, messages

@pytest.mark.parametrize("dtype, what", [(bool, "booleans"), (np.complex64, "complex numbers")])
def test_bool_and_complex_arrays_are_refused(tiny_checkpoint, tmp_path, dtype, what):
    np.save(tmp_path / "rec.npy", _signal().astype(dtype))
    with pytest.raises(ReadError, match=rf"rec\.npy: the array holds {what}; an ECG is real numbers"):
        read_record(tmp_path / "rec.npy", fs=100)
    with pytest.raises(CremaError, match=f"the array holds {what}"):
        crema.load(tiny_checkpoint, device="cpu").embed(_signal().astype(dtype), fs=100)


BOMB = '<!DOCTYPE RestingECG [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
EXTERNAL = '<!DOCTYPE RestingECG [<!ENTITY x SYSTEM "file:///etc/passwd">]>'


@pytest.mark.parametrize("doctype", [BOMB, EXTERNAL], ids=["entity-expansion", "external-entity"])
def test_xml_entities_are_refused(tmp_path, doctype):
    rec = read_record(SAMPLE_RECORDS / "00001_lr.hea")
    formats.write_muse_xml(rec, tmp_path / "ecg.xml")
    text = (tmp_path / "ecg.xml").read_text()
    declaration_end = text.index("?>") + 2
    (tmp_path / "ecg.xml").write_text(text[:declaration_end] + doctype + text[declaration_end:])
    with pytest.raises(ReadError, match="ecg.xml: XML with entity declarations or external references is refused"):
        read_record(tmp_path / "ecg.xml")


def test_csv_with_a_utf8_byte_order_mark_is_read(tmp_path):
    signal = _signal()
    pd.DataFrame(signal.T, columns=STANDARD_LEADS).to_csv(tmp_path / "excel.csv", index=False,
                                                          encoding="utf-8-sig")  # Excel's "CSV UTF-8"
    rec = read_record(tmp_path / "excel.csv", fs=100)
    assert rec.leads == STANDARD_LEADS and np.allclose(rec.signal, signal, atol=1e-6)


def test_broken_edf_prints_nothing_to_stdout(tmp_path, capfd):
    formats.write_edf(read_record(SAMPLE_RECORDS / "00001_lr.hea"), tmp_path / "ecg.edf")
    data = (tmp_path / "ecg.edf").read_bytes()
    (tmp_path / "ecg.edf").write_bytes(data[: len(data) // 2])   # cut off in the middle
    with pytest.raises(ReadError, match=r"ecg\.edf: not a readable EDF/EDF\+ file \(the file is not EDF"):
        read_record(tmp_path / "ecg.edf")
    assert capfd.readouterr().out == ""                        # pyedflib's C code says nothing


def test_prepare_names_each_bad_file_once(tmp_path, capsys):
    _copy_record(tmp_path / "in")
    (tmp_path / "in" / "broken.edf").write_bytes(b"this is not an EDF file" * 20)
    code, out, _ = _run(capsys, "prepare", tmp_path / "in", "--out", tmp_path / "c", "--quiet")
    bad = str(tmp_path / "in" / "broken.edf")
    assert code == 1 and out.count(bad) == 1
    assert f"skipped {bad}: not a readable EDF/EDF+ file (the file is not EDF(+)" in out
    [skipped] = Corpus(tmp_path / "c").report["skipped"]
    assert skipped["record"] == bad and skipped["reason"].startswith("not a readable EDF/EDF+ file (the")


def test_prepare_force_never_deletes_the_users_files(tmp_path, capsys):
    out = tmp_path / "c"
    argv = ["prepare", sample_root(), "--out", out, "--limit", "2", "--workers", "1", "--quiet"]
    assert _run(capsys, *argv)[0] == 0
    (out / "notes.txt").write_text("my notes")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, _, err = _run(capsys, *argv, "--force")
    assert code == 1 and f"{out}: holds files that are not part of a corpus (notes.txt)" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
