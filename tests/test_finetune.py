"""Fine-tuning: layer-wise lr decay groups, the saved classifier, early stopping, baselines."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from crema.config import ModelConfig
from crema.errors import CremaError
from crema.model.heads import Classifier
from crema.config import FinetuneConfig, ResNet1dConfig
from crema.model.resnet1d import ResNet1d
from crema.model.sit import SiTEncoder
from crema.model.checkpoint import load_config, load_encoder
from crema.eval.finetune import finetune
from crema.train.finetune import layer_decay_groups, layer_id, load_classifier, training_loader

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TASK = "ptbxl-superdiagnostic"


def _scales_by_name(groups):
    return {name: (g["lr_scale"], g["weight_decay"]) for g in groups for name in g["names"]}


# The parameters of the tiny SiT classifier (depth 2) that weight decay applies to, written out
# rather than derived, so that a change in the rule shows up here: matrices and conv kernels.
# Norms, biases, the lead embedding and the CLS token are not decayed.
DECAYED = {"encoder.patch_embed.stem.0.weight", "encoder.patch_embed.stem.2.weight",
           "encoder.patch_embed.proj.weight", "head.weight",
           *(f"encoder.blocks.{i}.{layer}.weight" for i in (0, 1)
             for layer in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"))}


def test_layer_decay_groups_for_sit(tiny_model_config):
    cfg = ModelConfig(**{**tiny_model_config.__dict__, "pool": "cls"})
    model = Classifier(SiTEncoder(cfg), n_classes=5)
    depth, decay = cfg.depth, 0.5
    groups = layer_decay_groups(model, weight_decay=0.05, layer_decay=decay)
    by_name = _scales_by_name(groups)
    names = [n for n, _ in model.named_parameters()]
    assert sorted(by_name) == sorted(names)                     # every parameter exactly once
    assert sum(len(g["params"]) for g in groups) == len(names)
    for name in names:
        scale, wd = by_name[name]
        if name.startswith(("encoder.patch_embed", "encoder.lead_embed", "encoder.cls_token")):
            assert scale == decay ** (depth + 1), name
        elif name.startswith("encoder.blocks."):
            i = int(name.split(".")[2])
            assert scale == decay ** (depth - i), name
        else:
            assert name.startswith(("encoder.norm", "head")), name
            assert scale == 1.0
        assert wd == (0.05 if name in DECAYED else 0.0), name
    assert DECAYED < set(names) and {"encoder.cls_token", "encoder.lead_embed", "encoder.norm.weight"} <= set(names)
    assert layer_id("encoder.blocks.1.attn.qkv.weight", depth) == 2 and layer_id("head.weight", depth) == depth + 1


def test_finetune_optimizer_groups_by_name(tiny_ptbxl_corpus, tiny_pretrain_checkpoint, tmp_path, monkeypatch):
    """The AdamW that finetune() builds and steps: weight decay on exactly the DECAYED parameters,
    and after training each group's learning rate scaled by 0.5 per layer below the head."""
    built = []

    class RecordingAdamW(torch.optim.AdamW):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
    finetune(FinetuneConfig(corpus=str(tiny_ptbxl_corpus.path), task=TASK, out=str(tmp_path / "ft"),
                            checkpoint=str(tiny_pretrain_checkpoint), epochs=1, batch_size=16, lr=1e-3,
                            weight_decay=0.05, layer_decay=0.5, device="cpu", n_bootstrap=10), progress=False)
    (optimizer,) = built
    decay = {name: g["weight_decay"] for g in optimizer.param_groups for name in g["names"]}
    assert {n for n, wd in decay.items() if wd == 0.05} == DECAYED
    assert {wd for n, wd in decay.items() if n not in DECAYED} == {0.0}
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(decay)
    lr = {name: g["lr"] for g in optimizer.param_groups for name in g["names"]}
    head = lr["head.weight"]
    assert head > 0 and lr["encoder.norm.weight"] == head
    assert lr["encoder.blocks.1.attn.qkv.weight"] == pytest.approx(head * 0.5)
    assert lr["encoder.blocks.0.mlp.fc1.bias"] == pytest.approx(head * 0.25)
    assert lr["encoder.patch_embed.proj.weight"] == lr["encoder.lead_embed"] == pytest.approx(head * 0.125)


def test_layer_decay_groups_for_resnet():
    model = ResNet1d(n_classes=3, widths=(8, 16, 16), depths=(1, 1, 1), stem_width=8)
    by_name = _scales_by_name(layer_decay_groups(model, 0.05, 0.5))
    assert all(by_name[n][0] == 0.5 ** 4 for n in by_name if n.startswith("stem"))
    assert all(by_name[n][0] == 0.5 ** 2 for n in by_name if n.startswith("stages.1."))
    assert by_name["head.weight"][0] == 1.0


def test_heads_ignore_absent_leads(tiny_model_config, real_ecgs):
    x = torch.from_numpy(np.ascontiguousarray(real_ecgs[:4, :, :1000]))
    mask = torch.ones(4, 12, dtype=torch.bool)
    mask[:, 7] = False
    changed = x.clone()
    changed[:, 7] = 5.0
    torch.manual_seed(0)
    for model in (ResNet1d(n_classes=5, widths=(8, 16), depths=(1, 1), stem_width=8),
                  Classifier(SiTEncoder(tiny_model_config), 5)):
        model.eval()
        with torch.no_grad():
            out = model(x, lead_mask=mask)
            assert out.shape == (4, 5)
            assert torch.allclose(out, model(changed, lead_mask=mask), atol=1e-5)
            assert not torch.allclose(out, model(changed), atol=1e-3)


def test_classifier_checkpoint(tiny_classifier_checkpoint, tiny_pretrain_checkpoint, tiny_ptbxl_corpus):
    config = load_config(tiny_classifier_checkpoint)
    classes = tiny_ptbxl_corpus.classes[TASK]
    assert config["kind"] == "classifier" and config["arch"] == "sit" and config["task"] == TASK
    assert config["classes"] == classes and len(config["thresholds"]) == len(classes)
    assert all(0.0 <= t <= 1.0 for t in config["thresholds"])
    assert config["preprocess"]["fs"] == tiny_ptbxl_corpus.preprocess.fs
    # the best epoch is the one with the highest validation AUROC (the first, on ties)
    log = [json.loads(line) for line in (tiny_classifier_checkpoint / "finetune_log.jsonl").read_text().splitlines()]
    val = [e["val_auroc"] for e in log]
    assert config["best_epoch"] == int(np.argmax(val)) and config["val_auroc"] == pytest.approx(max(val))
    # the checkpoint loads both as a classifier and as an encoder, with the same weights
    model, _ = load_classifier(tiny_classifier_checkpoint)
    encoder, enc_config = load_encoder(tiny_classifier_checkpoint)
    assert enc_config["kind"] == "classifier"
    for name, tensor in encoder.state_dict().items():
        assert torch.equal(tensor, model.encoder.state_dict()[name])
    # fine-tuning moved the encoder away from the pretrained weights
    pretrained = load_file(str(tiny_pretrain_checkpoint / "model.safetensors"))
    assert any(not torch.equal(pretrained[f"encoder.{k}"], v) for k, v in encoder.state_dict().items())
    results = json.loads((tiny_classifier_checkpoint / "results.json").read_text())
    (result,) = results["results"]
    assert result["protocol"] == "finetune" and result["method"] == "finetune_sit"
    assert result["n_test"] == len(tiny_ptbxl_corpus.rows(split="test"))
    assert set(result["f1"]["thresholds"]) == set(classes)


def test_resnet_baseline_with_early_stopping(tiny_ptbxl_corpus, tmp_path):
    cfg = FinetuneConfig(corpus=str(tiny_ptbxl_corpus.path), task=TASK, out=str(tmp_path / "rn"), arch="resnet1d",
                         resnet=ResNet1dConfig(widths=(8, 16), depths=(1, 1), stem_width=8), epochs=8,
                         batch_size=16, lr=3e-3, patience=1, fraction=0.5, seed=1, device="cpu", n_bootstrap=200)
    summary = finetune(cfg, progress=False)
    history = summary["history"]
    best = summary["best_epoch"]
    # it stopped after `patience` epochs without a better validation AUROC, or ran out of epochs
    assert len(history) == min(cfg.epochs, best + 1 + cfg.patience)
    assert summary["layer_decay"] == 1.0                  # from scratch: no layer-wise decay
    assert summary["n_train"] < len(tiny_ptbxl_corpus.rows(split="train"))
    model, config = load_classifier(tmp_path / "rn")
    assert isinstance(model, ResNet1d) and config["arch"] == "resnet1d"
    with pytest.raises(CremaError, match="no SiT encoder"):
        load_encoder(tmp_path / "rn")


def test_finetune_refuses_bad_settings(tiny_ptbxl_corpus, tiny_pretrain_checkpoint, tmp_path):
    with pytest.raises(CremaError, match="no pretrained checkpoint"):
        finetune(FinetuneConfig(corpus=str(tiny_ptbxl_corpus.path), task=TASK, out=str(tmp_path / "a"),
                                arch="resnet1d", checkpoint=str(tiny_pretrain_checkpoint)), progress=False)
    with pytest.raises(CremaError, match="no labels for task|not in this corpus"):
        finetune(FinetuneConfig(corpus=str(tiny_ptbxl_corpus.path), task="cinc-scored", out=str(tmp_path / "b")),
                 progress=False)


def test_probe_as_linear_map_equals_the_probe(real_ecgs):
    """The probe folded into one linear map (what --probe-init copies into the head) gives the
    probe's own probabilities, constant classes included."""
    from crema.eval.probe import fit_logistic_probe

    rng = np.random.default_rng(0)
    x = real_ecgs[:32, :, :400].reshape(32, -1)[:, ::50].astype(np.float64)      # (32, 96) real features
    y = np.stack([(x[:, 0] > np.median(x[:, 0])), rng.random(32) > 0.5, np.zeros(32)], 1).astype(np.float32)
    probe, _ = fit_logistic_probe(x[:24], y[:24], x[24:], y[24:], Cs=(0.1,))
    weight, bias = probe.as_linear()
    linear = 1 / (1 + np.exp(-(x @ weight.T + bias)))
    assert np.allclose(linear[:, :2], probe.predict_proba(x)[:, :2], atol=1e-6)
    assert np.all(linear[:, 2] < 1e-8)  # the constant (never positive) class


def test_probe_init_starts_from_the_probe_and_never_ends_below_it(tiny_ptbxl_corpus, tiny_pretrain_checkpoint,
                                                                  tmp_path):
    cfg = FinetuneConfig(corpus=str(tiny_ptbxl_corpus.path), task="ptbxl-superdiagnostic", out=str(tmp_path / "ft"),
                         checkpoint=str(tiny_pretrain_checkpoint), epochs=2, batch_size=16, patience=2,
                         probe_init=True, n_bootstrap=10, device="cpu")
    summary = finetune(cfg, progress=False)
    history = summary["history"]
    assert history[0]["epoch"] == -1 and history[0]["head"] == "probe"
    assert summary["epochs_run"] == len(history) - 1
    # the probe's validation AUROC is the floor of what early stopping keeps
    best = max(h["val_auroc"] for h in history)
    kept = next(h for h in history if h["epoch"] == summary["best_epoch"])
    assert kept["val_auroc"] == pytest.approx(best) and best >= history[0]["val_auroc"]
    # the saved classifier's head is a fitted probe, not the small random init (std 0.02)
    model, _ = load_classifier(tmp_path / "ft")
    assert model.head.weight.abs().max() > 0.1
    with pytest.raises(CremaError, match="probe-init"):
        finetune(FinetuneConfig(corpus=str(tiny_ptbxl_corpus.path), out=str(tmp_path / "r"), arch="resnet1d",
                                probe_init=True, epochs=1, device="cpu"), progress=False)


def test_training_batches_are_read_whole_and_drawn_per_epoch(tiny_ptbxl_corpus):
    """The fine-tuning stream is the batched one: every training row once per epoch, in batches
    of the configured size, another order and other crops each epoch, the same for any workers."""
    rows = tiny_ptbxl_corpus.rows("train")[:40]
    y = np.eye(5, dtype=np.float32)[np.arange(len(rows)) % 5]
    cfg = FinetuneConfig(batch_size=16, seed=3)
    loader = training_loader(tiny_ptbxl_corpus, rows, y, cfg, crop=1000)

    def epoch(ld, n):
        ld.set_epoch(n)
        return list(ld)

    first, again, second = epoch(loader, 0), epoch(loader, 0), epoch(loader, 1)
    assert [len(b["label"]) for b in first] == [16, 16, 8]
    assert first[0]["signal"].shape == (16, 12, 1000) and first[0]["signal"].dtype == torch.float32
    assert sorted(torch.cat([b["row"] for b in first]).tolist()) == sorted(rows.tolist())
    for a, b in zip(first, again):
        assert torch.equal(a["signal"], b["signal"]) and torch.equal(a["label"], b["label"])
    assert torch.cat([b["row"] for b in first]).tolist() != torch.cat([b["row"] for b in second]).tolist()
    with_worker = training_loader(tiny_ptbxl_corpus, rows, y, FinetuneConfig(batch_size=16, seed=3, num_workers=1),
                                  crop=1000)
    for a, b in zip(first, epoch(with_worker, 0)):
        assert torch.equal(a["signal"], b["signal"]) and torch.equal(a["lead_mask"], b["lead_mask"])
    odd = training_loader(tiny_ptbxl_corpus, rows[:33], y[:33], cfg, crop=1000)  # a last batch of one is dropped
    assert [len(b["label"]) for b in epoch(odd, 0)] == [16, 16]
