"""benchmarks/mfu.py's GPU path (``--device cuda``), run on the CPU: the timing helper waits on
the device hook, the variants (torch.compile injected), the JSON saved as it goes, the table and
its markers in docs/BENCHMARKS.md; and the CPU table there is the committed JSON's. The FLOP
formulas are checked in tests/test_precision.py."""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mfu():
    return importlib.import_module("mfu")  # benchmarks/ is on pytest's pythonpath


def test_synced_seconds_waits_on_the_device_before_and_after(mfu):
    events = []
    seconds = mfu.synced_seconds(lambda: events.append("run"), lambda: events.append("sync"))
    assert events == ["sync", "run", "sync"] and seconds >= 0


def test_device_defaults(mfu):
    args = mfu.parse(["--device", "cuda"])
    assert args.out == "runs/bench/mfu-cuda.json" and args.variants == ["fp32", "bf16", "bf16+compile"]
    assert mfu.parse([]).out == "runs/bench/mfu.json"


def test_device_benchmark_on_the_cpu(mfu, tmp_path, one_torch_thread):
    out = tmp_path / "mfu-cuda.json"
    args = mfu.parse(["--device", "cuda", "--sizes", "tiny", "--window", "250", "--batch", "2",
                      "--step-batch", "2", "--repeats", "1", "--latency-runs", "1", "--gemm-n", "32",
                      "--gemm-repeats", "1", "--workloads", "embed", "mae_step", "--out", str(out)])
    compiled, saves = [], []

    def fake_compile(module):
        compiled.append(type(module).__name__)
        return module

    def save(partial):
        saves.append(len(partial["sizes"]))
        mfu.save_json(out, partial)

    result = mfu.run_device(args, mfu.DeviceHooks("cpu"), compile_fn=fake_compile, save=save)
    assert compiled == ["SiTEncoder", "CREMA"]
    assert saves[0] == 0 and saves[-1] == 1 and json.loads(out.read_text())["rows"] == result["rows"]
    rows = {(r["workload"], r["variant"]): r for r in result["rows"]}
    assert set(rows) == {(w, v) for w in ("embed", "mae_step") for v in ("fp32", "bf16", "bf16+compile")}
    assert all(r["ecg_per_s"] > 0 and r["mfu_bf16"] > 0 for r in rows.values())
    assert rows["embed", "bf16+compile"]["compile_s"] is not None and rows["embed", "bf16"]["compile_s"] is None
    assert rows["embed", "fp32"]["speedup_vs_fp32"] == 1.0
    assert result["sizes"]["tiny"]["mae_step"]["flops_per_ecg_counted"] == pytest.approx(
        result["sizes"]["tiny"]["mae_step"]["flops_per_ecg"], rel=0.01)

    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(f"before\n{mfu.GPU_DOC_START}\n{mfu.GPU_NOT_MEASURED}\n{mfu.GPU_DOC_END}\nafter\n")
    assert mfu.main(["--render", str(out), "--doc", str(doc)]) == 0
    text = doc.read_text()
    assert mfu.GPU_NOT_MEASURED not in text and "| tiny | MAE step b2 | bf16+compile |" in text
    assert text.startswith("before\n") and text.endswith(f"{mfu.GPU_DOC_END}\nafter\n")


def test_budget_skips_workloads(mfu, one_torch_thread):
    args = mfu.parse(["--device", "cuda", "--sizes", "tiny", "--window", "250", "--gemm-repeats", "0",
                      "--budget-s", "1e-9"])
    result = mfu.run_device(args, mfu.DeviceHooks("cpu"))
    assert result["sizes"]["tiny"]["skipped"] == list(mfu.WORKLOADS) and "rows" not in result


def test_benchmarks_page_has_the_gpu_markers(mfu):
    text = (ROOT / "docs" / "BENCHMARKS.md").read_text()
    assert text.index(mfu.GPU_DOC_START) < text.index(mfu.GPU_DOC_END)


def test_benchmarks_page_shows_the_committed_cpu_run(mfu, tmp_path):
    """The CPU table of docs/BENCHMARKS.md is what ``--render results/bench/mfu-cpu.json`` writes."""
    result = json.loads((ROOT / "results" / "bench" / "mfu-cpu.json").read_text())
    text = (ROOT / "docs" / "BENCHMARKS.md").read_text()
    block = text[text.index(mfu.DOC_START) + len(mfu.DOC_START):text.index(mfu.DOC_END)]
    assert block == "\n" + mfu.markdown(result)
    doc = tmp_path / "page.md"
    doc.write_text(f"{mfu.DOC_START}\nstale\n{mfu.DOC_END}\n")
    mfu.write_doc(doc, mfu.markdown(result), (mfu.DOC_START, mfu.DOC_END))
    assert "stale" not in doc.read_text() and "| tiny | embed b64 | bf16 |" in doc.read_text()
    with pytest.raises(SystemExit, match="no <!-- mfu-table:start -->"):
        mfu.write_doc(tmp_path / "page.md", "x", ("<!-- mfu-table:start -->", "<!-- absent -->"))
