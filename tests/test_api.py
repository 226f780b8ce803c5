"""The Python API (crema.load -> CremaModel) on real ECGs with the tiny test checkpoints."""
from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

import crema
from crema.config import STANDARD_LEADS
from crema.config_io import to_dict
from crema.data.preprocess import preprocess_recording
from crema.data.readers import read_record
from crema.data.recording import Recording
from crema.errors import CheckpointError, CremaError, PreprocessError, ReadError
from crema.model.inference import crop_starts
from crema.use.api import MissingLeadsWarning
from crema.use.results import INDEX_COLUMNS

# small models on the shared test machine run much faster on one torch thread
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pre(tiny_pretrain_checkpoint):
    # fp32: these tests compare with encoders run by hand (bf16 parity: tests/test_precision.py)
    return crema.load(tiny_pretrain_checkpoint, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def classifier_dir(tiny_classifier_checkpoint):
    """The eval area's classifier fine-tuned on ptbxl-superdiagnostic from the tiny pretrain."""
    return tiny_classifier_checkpoint


@pytest.fixture(scope="module")
def cls(classifier_dir):
    return crema.load(classifier_dir, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def ptbxl_hea(ptbxl_headers):
    """PTB-XL record 1: 500 Hz from the shared data, else 100 Hz from the shipped sample."""
    return ptbxl_headers[0]


@pytest.fixture(scope="module")
def long_hea(data_root):
    """CinC PTB S0001: 1000 Hz, 38.4 s -> 3 windows of 10 s."""
    return data_root / "cinc" / "ptb" / "S0001.hea"


def test_load_describes_the_checkpoint(pre, tiny_pretrain_checkpoint):
    assert pre.kind == "pretrain" and pre.arch == "sit"
    assert pre.window == pre.model_config.window == 1000 and pre.preprocess.window == 2500
    assert pre.dim == 32 and pre.classes is None
    assert "pretrain sit" in repr(pre)
    assert crema.load(tiny_pretrain_checkpoint / "model.safetensors").kind == "pretrain"
    auto = crema.load(tiny_pretrain_checkpoint, device="auto")  # the CLI's --device default
    assert next(auto.encoder.parameters()).device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(CheckpointError, match="no such model folder"):
        crema.load(tiny_pretrain_checkpoint / "absent")


def test_prepare_is_exactly_the_saved_preprocessing(pre, long_hea):
    rec = read_record(long_hea)
    windows = preprocess_recording(rec, pre.preprocess)
    prepared = pre.prepare(rec, str(long_hea))
    assert np.array_equal(prepared.signals, windows.signals)
    assert np.array_equal(prepared.lead_mask, windows.lead_mask)
    assert np.allclose(prepared.start_s, [0.0, 10.0, 20.0])


def test_embed_shapes_index_and_crop_average(pre, long_hea, ptbxl_hea):
    result = pre.embed_records([ptbxl_hea, long_hea])
    assert result.embeddings.shape == (4, 32) and result.embeddings.dtype == np.float32
    assert list(result.index.columns) == list(INDEX_COLUMNS)
    assert result.index["record_id"].tolist() == [ptbxl_hea.stem, "S0001", "S0001", "S0001"]
    assert result.index["window"].tolist() == [0, 0, 1, 2]
    assert result.index["start_s"].tolist() == [0.0, 0.0, 10.0, 20.0]
    assert np.isfinite(result.embeddings).all() and not result.errors
    # 2500-sample windows, 1000-sample model: outputs of crops at 0, 750, 1500 are averaged
    starts = crop_starts(2500, 1000)
    assert starts == [0, 750, 1500]
    x = torch.from_numpy(pre.prepare(read_record(ptbxl_hea)).signals)
    with torch.inference_mode():
        expected = sum(pre.encoder(x[..., s:s + 1000], lead_mask=torch.ones(1, 12, dtype=torch.bool))
                       for s in starts) / 3
    assert np.allclose(result.embeddings[0], expected.numpy()[0], atol=1e-5)


def test_array_and_file_give_identical_embeddings(pre, ptbxl_hea):
    rec = read_record(ptbxl_hea)
    from_file = pre.embed(ptbxl_hea)
    from_array = pre.embed(rec.signal, fs=rec.fs, leads=rec.leads)
    from_recording = pre.embed(rec)
    assert np.array_equal(from_file, from_array) and np.array_equal(from_file, from_recording)
    stacked = pre.embed(np.stack([rec.signal, rec.signal[:, ::-1]]), fs=rec.fs, leads=rec.leads, batch_size=1)
    assert stacked.shape == (2, 32) and np.array_equal(stacked[0], from_file[0])
    assert not np.allclose(stacked[0], stacked[1])


def test_reconstruct_keeps_visible_patches(pre, ptbxl_hea):
    pred, mask, windows = pre.reconstruct(ptbxl_hea, seed=3)
    assert pred.shape == windows.shape == (1, 12, 1000) and mask.shape == (1, 12, 20)
    assert (mask.sum(-1) == 15).all()  # 75 % of each lead's 20 patches
    visible = np.repeat(~mask, 50, axis=-1)
    assert np.array_equal(pred[visible], windows[visible])
    assert not np.allclose(pred[~visible], windows[~visible])
    again, mask_again, _ = pre.reconstruct(ptbxl_hea, seed=3)
    assert np.array_equal(mask, mask_again) and np.array_equal(pred, again)
    # the returned windows are the centre 1000 samples of the preprocessed 10 s
    full = pre.prepare(read_record(ptbxl_hea)).signals
    assert np.array_equal(windows, full[..., 750:1750])


def test_predict_probabilities_per_class(cls, pre, ptbxl_hea, long_hea):
    probs = cls.predict([ptbxl_hea, long_hea])
    assert list(probs.columns) == cls.classes and list(probs.index) == [ptbxl_hea.stem, "S0001"]
    assert ((probs.to_numpy() >= 0) & (probs.to_numpy() <= 1)).all()
    result = cls.predict_records(long_hea)
    assert result.window_probs.shape == (3, len(cls.classes))
    # a record's probability is the mean over its windows
    assert np.allclose(result.records[cls.classes].to_numpy()[0], result.window_probs.mean(0), atol=1e-6)
    row = result.records.iloc[0]
    expected = [c for c, t in zip(cls.classes, cls.thresholds) if row[c] >= t]
    assert row["labels"] == "|".join(expected) and row["n_windows"] == 3
    with pytest.raises(CremaError, match="needs a fine-tuned classifier"):
        pre.predict(ptbxl_hea)
    with pytest.raises(CremaError, match="reconstruct needs a pretrained checkpoint"):
        cls.reconstruct(ptbxl_hea)


def test_predict_matches_the_evaluation_pipeline(cls, classifier_dir, tiny_ptbxl_corpus, ptbxl_root):
    """The API on raw PTB-XL files gives the probabilities the fine-tuning code computes on the
    prepared corpus (same preprocessing, same crop averaging; the corpus stores float16)."""
    from crema.eval.features import predict_proba
    from crema.train.finetune import load_classifier

    network, config = load_classifier(classifier_dir)
    rows = np.arange(4)
    expected = predict_proba(network, tiny_ptbxl_corpus, rows, config["crop"], 4, torch.device("cpu"))
    files = [ptbxl_root / "records100" / "00000" / f"{rid}_lr.hea"
             for rid in tiny_ptbxl_corpus.index["record_id"].iloc[rows]]
    got = cls.predict_records(files).window_probs
    assert got.shape == expected.shape == (4, 5)
    assert np.abs(got - expected).max() < 1e-4


def test_resnet_classifier_predicts_but_cannot_embed(tmp_path, ptbxl_hea, pre):
    from crema.config import ResNet1dConfig
    from crema.model.resnet1d import ResNet1d
    from crema.train.checkpoint import save_checkpoint

    torch.manual_seed(0)
    resnet_cfg = ResNet1dConfig(stem_width=8, widths=(8, 16), depths=(1, 1))
    save_checkpoint(tmp_path, ResNet1d.from_config(resnet_cfg, 2), {
        "kind": "classifier", "arch": "resnet1d", "model": to_dict(resnet_cfg),
        "preprocess": to_dict(pre.preprocess), "classes": ["A", "B"], "thresholds": [0.5, 0.5]})
    model = crema.load(tmp_path)
    assert model.crop is None and model.window == 2500
    probs = model.predict(ptbxl_hea)
    assert probs.shape == (1, 2) and ((probs.to_numpy() > 0) & (probs.to_numpy() < 1)).all()
    with pytest.raises(CremaError, match="no SiT encoder"):
        model.embed(ptbxl_hea)


def test_save_pretrained_round_trip(pre, cls, tmp_path, ptbxl_hea):
    for model, name in ((pre, "pre"), (cls, "cls")):
        out = model.save_pretrained(tmp_path / name)
        assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors", "preprocess.json"]
        again = crema.load(out, precision=model.precision)
        assert np.array_equal(again.embed(ptbxl_hea), model.embed(ptbxl_hea))
        assert again.preprocess == model.preprocess and again.classes == model.classes
    with pytest.raises(CremaError, match="onto its own folder"):
        pre.save_pretrained(pre.source)


# ----------------------------------------------------------------------------- bad input

def test_raw_array_needs_a_plausible_rate(pre, ptbxl_hea):
    rec = read_record(ptbxl_hea)
    signal, fs = rec.signal, rec.fs
    with pytest.raises(CremaError, match="needs its sampling rate"):
        pre.embed(signal)
    for bad in (0, -500, 5e5, float("nan")):
        with pytest.raises(CremaError, match="not a plausible ECG rate"):
            pre.embed(signal, fs=bad)
    # leads last is recognised by the axis whose size is the lead count
    assert np.array_equal(pre.embed(signal.T, fs=fs), pre.embed(signal, fs=fs))
    with pytest.raises(CremaError, match=r"matches neither \(12, T\) nor \(T, 12\)"):
        pre.embed(signal[:8], fs=fs)
    with pytest.raises(CremaError, match="cannot use input of type dict"):
        pre.embed({"signal": signal})


def test_short_nan_and_unreadable_inputs_fail_clearly(pre, ptbxl_hea, tmp_path):
    rec = read_record(ptbxl_hea)
    signal, fs = rec.signal, rec.fs
    with pytest.raises(PreprocessError, match="shorter than the minimum"):
        pre.embed(signal[:, :int(fs)], fs=fs)  # 1 s
    bad = signal.copy()
    bad[2, 10] = np.nan
    with pytest.raises(PreprocessError, match="NaN"):
        pre.embed(bad, fs=fs)
    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"not dicom at all")
    with pytest.raises(ReadError, match="broken.dcm"):
        pre.embed(broken)


def test_missing_leads_warn_and_use_the_lead_mask(pre, ptbxl_hea):
    rec = read_record(ptbxl_hea)
    limb = Recording(rec.signal[:2], rec.fs, ("I", "II"), "limb")
    with pytest.warns(MissingLeadsWarning, match="V1, V2, V3, V4, V5, V6 are missing"):
        result = pre.embed_records(limb)
    assert result.index["leads_present"].tolist() == [6]  # I, II and the four derived limb leads
    with pytest.warns(MissingLeadsWarning):
        x = torch.from_numpy(pre.prepare(limb).signals)
    assert (x[:, 6:] == 0).all()
    starts = crop_starts(2500, 1000)

    def embed_with(mask):
        with torch.inference_mode():
            return (sum(pre.encoder(x[..., s:s + 1000], lead_mask=mask) for s in starts) / 3).numpy()

    assert np.allclose(result.embeddings, embed_with(torch.tensor([[True] * 6 + [False] * 6])), atol=1e-6)
    # the mask matters: treating the zero leads as present gives another embedding
    assert not np.allclose(result.embeddings, embed_with(torch.ones(1, 12, dtype=torch.bool)), atol=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pre.embed(rec)  # all 12 leads: no warning


def test_batch_skips_a_bad_file_and_lists_it(pre, ptbxl_hea, tmp_path):
    broken = tmp_path / "broken.xml"
    broken.write_text("<RestingECG>")
    result = pre.embed_records([ptbxl_hea, broken], on_error="skip")
    assert result.embeddings.shape == (1, 32)
    assert [(f.record_id, f.source) for f in result.errors] == [("broken", str(broken))]
    assert "not well-formed XML" in result.errors[0].reason
    with pytest.raises(ReadError, match="not well-formed XML"):
        pre.embed_records([ptbxl_hea, broken])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_matches_cpu(tiny_pretrain_checkpoint, long_hea):
    cpu = crema.load(tiny_pretrain_checkpoint, device="cpu").embed(long_hea)
    gpu = crema.load(tiny_pretrain_checkpoint, device="cuda").embed(long_hea)
    assert np.allclose(cpu, gpu, atol=1e-4)


def test_standard_lead_order_is_the_default_for_arrays(pre, ptbxl_hea):
    rec = read_record(ptbxl_hea)
    assert [name.upper() for name in rec.leads] == [name.upper() for name in STANDARD_LEADS]
    assert np.array_equal(pre.embed(rec.signal, fs=rec.fs), pre.embed(ptbxl_hea))


def test_by_record_gives_one_row_per_record_of_every_input_kind(pre, ptbxl_headers, tiny_ptbxl_corpus, tmp_path):
    """Every documented input -> one row per record, in input order: arrays (N, 12, T) and
    (N, T, 12), lists of arrays (of different lengths), of Recordings (repeated or empty ids), of
    paths (one given twice), a stack file and a corpus spec."""
    headers = ptbxl_headers[:3]
    records = [read_record(h) for h in headers]
    fs = records[0].fs
    alone = np.concatenate([pre.embed_records(r).by_record().embeddings for r in records])
    assert alone.shape == (3, 32) and not np.allclose(alone[0], alone[1], atol=1e-3)
    signals = np.stack([r.signal for r in records])

    def by_record(inputs, **kwargs):
        return pre.embed_records(inputs, **kwargs).by_record()

    cases = {"stack array": (signals, {"fs": fs}), "leads last": (signals.transpose(0, 2, 1), {"fs": fs}),
             "list of arrays": (list(signals), {"fs": fs}), "recordings": (records, {}),
             "paths": ([str(h) for h in headers], {}), "stack file": (tmp_path / "stack.npy", {"fs": fs})}
    np.save(tmp_path / "stack.npy", signals)
    for name, (inputs, kwargs) in cases.items():
        result = by_record(inputs, **kwargs)
        assert len(result.embeddings) == 3 and np.allclose(result.embeddings, alone, atol=1e-5), name
        assert result.index["n_windows"].tolist() == [1, 1, 1], name
    same = by_record([replace(r, record_id="same") for r in records])
    assert same.index["record_id"].tolist() == ["same"] * 3 and np.allclose(same.embeddings, alone, atol=1e-5)
    assert same.index["source"].tolist() == ["<recording>[0]", "<recording>[1]", "<recording>[2]"]
    empty = by_record([replace(r, record_id="") for r in records])
    assert empty.index["record_id"].tolist() == ["recording0", "recording1", "recording2"]
    arrays = by_record(list(signals), fs=fs)
    assert arrays.index["record_id"].tolist() == ["array0", "array1", "array2"]
    twice = by_record([headers[0], headers[1], headers[0]])
    assert np.allclose(twice.embeddings, alone[[0, 1, 0]], atol=1e-5)

    # different lengths: 6 s, 10 s and 20 s (two windows), mixed with a Recording
    n = signals.shape[-1]
    mixed = [signals[0][:, :int(0.6 * n)], signals[1], np.concatenate([signals[2], signals[0]], axis=1), records[1]]
    result = by_record(mixed, fs=fs)
    assert result.index["n_windows"].tolist() == [1, 1, 2, 1]
    expected = np.concatenate([by_record(m, fs=fs).embeddings for m in mixed])
    assert np.allclose(result.embeddings, expected, atol=1e-5)
    assert np.allclose(result.embeddings[3], alone[1], atol=1e-5)

    # a corpus spec: one row per (source, record_id) of the split, in index order
    val = tiny_ptbxl_corpus.index[tiny_ptbxl_corpus.index["split"] == "val"]
    corpus_rows = by_record(f"{tiny_ptbxl_corpus.path}:val")
    assert corpus_rows.index["record_id"].astype(str).tolist() == val["record_id"].astype(str).unique().tolist()
    assert len(corpus_rows.embeddings) == val.groupby(["source", "record_id"]).ngroups > 1
