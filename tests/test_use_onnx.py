"""ONNX export of the encoder and of a classifier: parity with PyTorch through onnxruntime on real
preprocessed ECG windows, at batch sizes 1 and 3 (dynamic batch axis)."""
from __future__ import annotations

import json

import numpy as np
import pytest

import crema
from crema.data.readers import read_record

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from crema.use.onnx_export import check_parity, export_onnx, onnx_session, run_onnx  # noqa: E402

# small models on the shared test machine run much faster on one torch thread
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def windows(tiny_pretrain_checkpoint, ptbxl_headers):
    """Three real preprocessed windows cropped to the model (1000 samples), from PTB-XL records
    1-3; lead mask with one row missing the chest leads."""
    model = crema.load(tiny_pretrain_checkpoint, device="cpu")
    prepared = np.concatenate([model.prepare(read_record(p)).signals for p in ptbxl_headers[:3]])
    signals = np.ascontiguousarray(prepared[:, :, 750:1750])
    mask = np.ones((3, 12), dtype=bool)
    mask[1, 6:] = False
    signals[1, 6:] = 0.0
    return signals, mask


def test_encoder_export_matches_pytorch(tiny_pretrain_checkpoint, windows, tmp_path):
    model = crema.load(tiny_pretrain_checkpoint, device="cpu")
    path = export_onnx(model, tmp_path / "encoder.onnx")
    proto = onnx.load(path)
    assert [i.name for i in proto.graph.input] == ["signal", "lead_mask"]
    assert [o.name for o in proto.graph.output] == ["embedding"]
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "batch"  # dynamic, not a fixed size
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["crema_config"])["preprocess"]["fs"] == 250.0
    signals, mask = windows
    diffs = check_parity(model, path, signals, mask, batch_sizes=(1, 3))
    assert set(diffs) == {1, 3} and max(diffs.values()) < 1e-4
    # the lead mask input changes the output (it is wired through, not constant-folded)
    session = onnx_session(path)
    with_mask = run_onnx(session, signals, mask)[0]
    all_present = run_onnx(session, signals)[0]
    assert with_mask.shape == (3, 32)
    assert np.abs(with_mask[1] - all_present[1]).max() > 1e-3
    assert np.allclose(with_mask[[0, 2]], all_present[[0, 2]], atol=1e-6)


def test_classifier_export_without_lead_mask(tiny_pretrain_checkpoint, windows, tmp_path):
    from crema.model.heads import Classifier
    from crema.model.checkpoint import load_encoder
    from crema.train.checkpoint import save_checkpoint

    encoder, config = load_encoder(tiny_pretrain_checkpoint)
    classes = ["NORM", "MI", "STTC"]
    classifier = Classifier(encoder, len(classes))
    save_checkpoint(tmp_path / "cls", classifier, {
        "kind": "classifier", "arch": "sit", "model": config["model"], "preprocess": config["preprocess"],
        "classes": classes, "thresholds": [0.5, 0.5, 0.5]})
    model = crema.load(tmp_path / "cls", device="cpu")
    path = export_onnx(model, tmp_path / "classifier.onnx", lead_mask=False)
    proto = onnx.load(path)
    assert [i.name for i in proto.graph.input] == ["signal"]
    assert [o.name for o in proto.graph.output] == ["logits", "probabilities"]
    signals, _ = windows
    diffs = check_parity(model, path, signals, batch_sizes=(1, 3))
    assert max(diffs.values()) < 1e-4
    logits, probs = run_onnx(onnx_session(path), signals[:2])
    assert logits.shape == probs.shape == (2, 3)
    assert np.allclose(probs, 1 / (1 + np.exp(-logits)), atol=1e-6)
