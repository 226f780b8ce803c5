"""A fine-tuned regression model (one output, a value in the target's units, no thresholds)
through everything that uses a fine-tuned model: crema predict per record and per window,
crema plot --checkpoint, the viewer (its analysis, /api/info and the page's script), ONNX
export, crema export. Each must show or return the predicted value, never a probability."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import crema
from crema.cli import main
from crema.data.readers import read_record

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TARGET_MEAN, TARGET_STD = 60.0, 15.0   # years: the age regression a fine-tune would record
STATIC = Path(crema.__file__).parent / "serve" / "static"


@pytest.fixture(scope="module")
def regression_model(tiny_classifier_checkpoint, tmp_path_factory) -> Path:
    """The test classifier as a regression head of age, in the layout ``crema finetune`` writes
    for a regression task: one output (the classifier's first output unit), ``task_type``
    regression, ``classes ["age"]``, ``thresholds`` null, ``target_mean``/``target_std`` and
    ``val_mae``; its ``init`` still names the tiny pretrained checkpoint (the viewer's
    reconstruction model)."""
    from safetensors.torch import load_file, save_file

    folder = tmp_path_factory.mktemp("regression") / "age"
    folder.mkdir()
    state = load_file(str(tiny_classifier_checkpoint / "model.safetensors"))
    state["head.weight"] = state["head.weight"][:1].clone()
    state["head.bias"] = state["head.bias"][:1].clone()
    save_file(state, str(folder / "model.safetensors"))
    config = json.loads((tiny_classifier_checkpoint / "config.json").read_text())
    config = {key: value for key, value in config.items() if key != "val_auroc"}
    config.update(task="age", task_type="regression", classes=["age"], thresholds=None,
                  target_mean=TARGET_MEAN, target_std=TARGET_STD, val_mae=11.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def model(regression_model):
    return crema.load(regression_model, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def record_files(ptbxl_headers) -> list[Path]:
    header = ptbxl_headers[0]
    return [header, header.with_suffix(".dat")]


def _head_output(model, signals: np.ndarray, lead_mask: np.ndarray) -> np.ndarray:
    """The network's raw output on windows of the model's input length ``(n, 12, window)``."""
    import torch

    with torch.inference_mode():
        return model.network(torch.from_numpy(signals), lead_mask=torch.from_numpy(lead_mask)).numpy()


def test_the_model_is_a_regression_head(model):
    assert model.task_type == "regression" and model.thresholds is None and model.classes == ["age"]
    assert model.target_scale == (TARGET_STD, TARGET_MEAN)
    assert "regression of age" in repr(model) and "classes" not in repr(model)


def test_predict_writes_values_per_record_and_per_window(regression_model, model, record_files, ptbxl_headers,
                                                         tmp_path, capsys):
    inputs = [str(p) for p in ptbxl_headers[:3]]
    per_record, per_window = tmp_path / "pred.csv", tmp_path / "windows.csv"
    for out, extra in ((per_record, []), (per_window, ["--per-window"])):
        assert main(["predict", str(regression_model), *inputs, "--out", str(out), "--device", "cpu",
                     "--no-progress", *extra]) == 0
    capsys.readouterr()
    table, windows = pd.read_csv(per_record), pd.read_csv(per_window)
    assert list(table.columns) == ["record_id", "source", "n_windows", "age"]
    assert list(windows.columns) == ["record_id", "source", "window", "start_s", "leads_present", "age"]
    run = json.loads(per_record.with_name("pred.run.json").read_text())
    assert run["task_type"] == "regression" and run["thresholds"] is None
    # the values are the head's output in years (x std + mean), not a sigmoid
    expected = model.predict(inputs)["age"].to_numpy()
    assert table["age"].to_numpy() == pytest.approx(expected, abs=2e-3)
    assert not table["age"].between(0, 1).any()
    prepared = model.prepare(read_record(ptbxl_headers[0]))
    raw = _head_output(model, np.ascontiguousarray(prepared.signals[:, :, :model.window]),
                       np.repeat(prepared.lead_mask[None], len(prepared.signals), 0))
    assert raw.shape == (1, 1)
    one = model.classify_windows(np.ascontiguousarray(prepared.signals[:, :, :model.window]),
                                 np.repeat(prepared.lead_mask[None], len(prepared.signals), 0))
    assert one[0, 0] == pytest.approx(raw[0, 0] * TARGET_STD + TARGET_MEAN, abs=1e-3)


def test_plot_puts_the_value_in_the_title(regression_model, model, record_files, tmp_path, capsys):
    from crema.use.commands import predicted_labels

    rec = read_record(record_files[0])
    value = float(model.predict([rec])["age"].iloc[0])
    assert predicted_labels(str(regression_model), rec, str(record_files[0]), "cpu") == [f"age {value:.4g}"]
    assert main(["plot", str(record_files[0]), "--checkpoint", str(regression_model), "--device", "cpu",
                 "--out", str(tmp_path / "p.png")]) == 0
    assert "wrote" in capsys.readouterr().out and (tmp_path / "p.png").stat().st_size > 10_000


def test_viewer_shows_the_predicted_value(regression_model, model, record_files):
    from crema.serve.analysis import Viewer

    viewer = Viewer.from_paths(regression_model, device="cpu")
    info = viewer.info()
    assert info["task_type"] == "regression" and info["classes"] == ["age"] and info["thresholds"] == []
    assert "regression of age" in info["model"] and info["reconstruction"] is True
    result = viewer.analyze([(p.name, p.read_bytes()) for p in record_files])
    expected = float(crema.load(regression_model, device="cpu").predict(record_files[0])["age"].iloc[0])
    assert [set(p) for p in result["predictions"]] == [{"class", "value"}]
    assert result["predictions"][0]["class"] == "age"
    assert result["predictions"][0]["value"] == pytest.approx(expected, abs=1e-3)
    assert result["reconstruction_png"].startswith("data:image/png;base64,")
    json.dumps(result)  # what the app sends


# The page's script in Node with the few DOM calls it makes, so that what renderPredictions draws
# for each kind of model is checked without a browser.
FAKE_DOM = r"""
class El {
  constructor(tag) { this.tag = tag; this.children = []; this.textContent = ""; this.style = {};
                     this.classList = { add() {}, remove() {} }; this.hidden = false; }
  addEventListener() {}
  appendChild(c) { this.children.push(c); return c; }
  append(...cs) { this.children.push(...cs); }
  replaceChildren() { this.children = []; }
  createTHead() { return this.appendChild(new El("thead")); }
  createTBody() { return this.appendChild(new El("tbody")); }
  insertRow() { return this.appendChild(new El("tr")); }
  insertCell() { return this.appendChild(new El("td")); }
}
const elements = {};
global.document = { getElementById: (id) => (elements[id] = elements[id] || new El(id)),
                    createElement: (tag) => new El(tag) };
global.fetch = () => new Promise(() => {});
const text = (el) => el.children.length ? el.children.map(text) : el.textContent;
const vm = require("vm");
vm.runInThisContext(require("fs").readFileSync(process.argv[2], "utf8"));
const shown = {};
for (const [kind, predictions] of Object.entries(JSON.parse(process.argv[3]))) {
  renderPredictions(predictions);
  shown[kind] = { table: text(elements["predictions"]), note: elements["predictions-note"].textContent };
}
console.log(JSON.stringify(shown));
"""


def test_the_page_script_shows_a_value_without_a_threshold(tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    script = tmp_path / "run.js"
    script.write_text(FAKE_DOM)
    cases = {"regression": [{"class": "age", "value": 63.456}],
             "classes": [{"class": "NORM", "probability": 0.8, "threshold": 0.5, "positive": True}]}
    done = subprocess.run([node, str(script), str(STATIC / "viewer.js"), json.dumps(cases)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["regression"]["table"] == [[["target", "predicted value"]], [["age", "63.46"]]]
    assert "regression" in shown["regression"]["note"] and "threshold" not in shown["regression"]["note"]
    head, body = shown["classes"]["table"]
    assert head == [["class", "probability", "", "threshold"]] and body[0][:2] == ["NORM", "0.80"]
    assert "at or above threshold: NORM" in shown["classes"]["note"]


def test_onnx_exports_the_value(model, record_files, tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from crema.use.onnx_export import check_parity, export_onnx, onnx_session, run_onnx

    path = export_onnx(model, tmp_path / "age.onnx")
    proto = onnx.load(path)
    assert [o.name for o in proto.graph.output] == ["value"]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["crema_task_type"] == "regression" and json.loads(meta["crema_classes"]) == ["age"]
    prepared = model.prepare(read_record(record_files[0]))
    signals = np.ascontiguousarray(prepared.signals[:, :, :model.window])
    mask = np.repeat(prepared.lead_mask[None], len(signals), 0)
    (value,) = run_onnx(onnx_session(path), signals, mask)
    assert value.shape == (1, 1)
    assert value[0, 0] == pytest.approx(model.classify_windows(signals, mask)[0, 0], abs=1e-3)
    assert value[0, 0] == pytest.approx(_head_output(model, signals, mask)[0, 0] * TARGET_STD + TARGET_MEAN,
                                        abs=1e-3)
    assert max(check_parity(model, path, np.repeat(signals, 3, 0), np.repeat(mask, 3, 0)).values()) < 1e-3


def test_export_keeps_the_regression_head(regression_model, model, record_files, tmp_path, capsys):
    out = tmp_path / "exported"
    assert main(["export", str(regression_model), "--out", str(out)]) == 0
    capsys.readouterr()
    again = crema.load(out, device="cpu", precision="fp32")
    assert again.task_type == "regression" and again.thresholds is None
    assert again.target_scale == model.target_scale
    assert again.predict(record_files[0])["age"].iloc[0] == pytest.approx(
        model.predict(record_files[0])["age"].iloc[0], abs=1e-5)
