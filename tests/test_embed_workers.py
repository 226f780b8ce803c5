"""Records read and preprocessed by parallel threads (crema embed / predict --workers, the API's
workers=): outputs byte-identical to one worker, in input order, a broken record skipped and listed;
and the two pieces of crema.use.pipeline, the ordered pool and the window batches."""
from __future__ import annotations

import os
import shutil
import threading
import time

import numpy as np
import pandas as pd
import pytest

import crema
from crema.cli import main
from crema.errors import ReadError
from crema.use.pipeline import Pool, WindowBatches

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_GOOD = 12


@pytest.fixture(scope="module")
def folder(ptbxl_headers, tmp_path_factory):
    """12 PTB-XL records (WFDB) and, sorted among them, a header that is not one."""
    folder = tmp_path_factory.mktemp("workers")
    for header in ptbxl_headers[:N_GOOD]:
        for path in (header, header.with_suffix(".dat")):
            shutil.copy(path, folder)
    (folder / f"{ptbxl_headers[5].stem}_x.hea").write_text("this is not a WFDB header\n")
    return folder


def _outputs(out) -> dict:
    return {suffix: (out.parent / f"{out.name}{suffix}").read_bytes()
            for suffix in (".npy", ".index.csv", ".errors.csv")}


def test_embed_with_workers_is_byte_identical_in_order_and_lists_the_broken_record(
        tiny_pretrain_checkpoint, folder, ptbxl_headers, tmp_path, capsys):
    runs = {}
    for workers in (1, 3):
        out = tmp_path / f"w{workers}"
        code = main(["embed", str(tiny_pretrain_checkpoint), str(folder), "--out", str(out), "--per-window",
                     "--chunk", "4", "--no-progress", "--workers", str(workers)])
        err = capsys.readouterr().err
        assert code == 1 and f"{N_GOOD} records processed, 0 already done, 1 failed" in err
        runs[workers] = _outputs(out)
    assert runs[1] == runs[3]
    index = pd.read_csv(tmp_path / "w3.index.csv", dtype={"record_id": str})
    assert index["record_id"].tolist() == [h.stem for h in ptbxl_headers[:N_GOOD]]  # input (sorted) order
    errors = pd.read_csv(tmp_path / "w3.errors.csv")
    assert errors["source"].tolist() == [str(folder / f"{ptbxl_headers[5].stem}_x.hea")]
    assert len(np.load(tmp_path / "w3.npy")) == N_GOOD


def test_predict_with_workers_is_byte_identical(tiny_classifier_checkpoint, folder, tmp_path, capsys):
    for workers in (1, 2):
        assert main(["predict", str(tiny_classifier_checkpoint), str(folder),
                     "--out", str(tmp_path / f"p{workers}.csv"), "--no-progress", "--workers", str(workers)]) == 1
    capsys.readouterr()
    assert (tmp_path / "p1.csv").read_bytes() == (tmp_path / "p2.csv").read_bytes()
    assert len(pd.read_csv(tmp_path / "p2.csv")) == N_GOOD


def test_api_workers_give_the_same_embeddings_and_errors(tiny_pretrain_checkpoint, folder, ptbxl_headers):
    model = crema.load(tiny_pretrain_checkpoint, device="cpu")
    inputs = [*ptbxl_headers[:3], folder / f"{ptbxl_headers[5].stem}_x.hea", *ptbxl_headers[3:6]]
    one = model.embed_records(inputs, on_error="skip", workers=1, batch_size=4)
    four = model.embed_records(inputs, on_error="skip", workers=4, batch_size=4)
    assert np.array_equal(one.embeddings, four.embeddings) and one.index.equals(four.index)
    assert [f.record_id for f in four.errors] == [f"{ptbxl_headers[5].stem}_x"]
    assert four.index["record_id"].tolist() == [h.stem for h in ptbxl_headers[:6]]
    with pytest.raises(ReadError, match="_x.hea"):
        model.embed_records(inputs, workers=4)


def test_window_batches_fill_every_batch_and_hand_records_back_in_order():
    calls = []

    def apply(signals, lead_mask):  # each window's output: its first sample, and whether lead 0 is on
        calls.append(len(signals))
        return np.stack([signals[:, 0, 0], lead_mask[:, 0]], axis=1)

    def windows(first, n):
        return np.arange(first, first + n, dtype=np.float32)[:, None, None] * np.ones((1, 12, 5), np.float32)

    on, off = np.ones(12, bool), np.r_[False, np.ones(11, bool)]
    batches = WindowBatches(apply, batch_size=4)
    done = batches.add("a", windows(0, 3), on, extra=0)
    done += batches.add("b", windows(3, 1), off, extra=1)                       # batch 1: a a a b
    done += batches.add("c", windows(4, 2), on, extra=2, first=True, last=False)
    done += batches.add("c", windows(6, 3), on, extra=3, first=False, last=False)  # batch 2: c c c c
    done += batches.fail("failed-c", drop_open=True)  # c fails part-way: its windows are dropped
    done += batches.add("d", windows(9, 2), on, extra=4)
    done += batches.fail("e")
    done += batches.add("f", windows(11, 3), on, extra=5)                         # batch 3: d d f f
    done += batches.finish()                                                      # batch 4: f
    assert calls == [4, 4, 4, 1]
    assert [(d.meta, d.failed) for d in done] == [("a", False), ("b", False), ("failed-c", True), ("d", False),
                                                  ("e", True), ("f", False)]
    by_meta = {d.meta: d for d in done}
    assert by_meta["a"].outputs[:, 0].tolist() == [0, 1, 2] and by_meta["b"].outputs.tolist() == [[3, 0]]
    assert by_meta["d"].outputs[:, 0].tolist() == [9, 10] and by_meta["f"].outputs[:, 0].tolist() == [11, 12, 13]
    assert by_meta["f"].extras == [5] and by_meta["failed-c"].outputs is None


def test_pool_keeps_order_bounds_what_runs_ahead_and_raises_at_the_item():
    lock, state = threading.Lock(), {"started": 0, "consumed": 0, "most_ahead": 0}

    def work(i):
        with lock:
            state["started"] += 1
            state["most_ahead"] = max(state["most_ahead"], state["started"] - state["consumed"])
        time.sleep(0.001 * ((i * 7) % 5))  # finish out of order
        if i == 17:
            raise ValueError("item 17")
        return i * i

    with Pool(3) as pool:
        got = []
        with pytest.raises(ValueError, match="item 17"):
            for value in pool.map(work, range(40), ahead=5):
                got.append(value)
                with lock:
                    state["consumed"] += 1
    assert got == [i * i for i in range(17)] and state["most_ahead"] <= 5
    with pytest.raises(ValueError, match="workers must be at least 1"):
        Pool(0)


def test_reading_threads_take_turns_to_silence_stdout():
    """EDF reading silences file descriptor 1 around pyedflib. Two threads: the second arrives while
    the first is inside, and the first leaves before the second; without taking turns the second
    would save the first's /dev/null as the stdout to restore, and leave it there."""
    from crema.data.formats.edf import _c_stdout_silenced

    before, saved = os.fstat(1), os.dup(1)
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()

    def first():
        with _c_stdout_silenced():
            first_in.set()
            second_in.wait(0.3)  # taking turns, the second cannot be inside: give up waiting
        first_out.set()

    def second():
        first_in.wait()
        with _c_stdout_silenced():
            second_in.set()
            first_out.wait(0.3)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        after = os.fstat(1)
        assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
