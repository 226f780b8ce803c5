"""Linear probing on real features: splits, label fractions, the feature cache, probe fits."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from crema.errors import CremaError
from crema.eval import metrics, probe, splits
from crema.eval.features import encoder_features, file_sha256
from crema.model.inference import crop_starts
from crema.model.checkpoint import MODEL_FILE, load_encoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TASK = "ptbxl-superdiagnostic"


def test_task_split_follows_the_folds(tiny_ptbxl_corpus):
    split = splits.task_split(tiny_ptbxl_corpus, TASK)
    index = tiny_ptbxl_corpus.index
    assert split.classes == tiny_ptbxl_corpus.classes[TASK]
    for part, expected in (("train", "train"), ("val", "val"), ("test", "test")):
        assert set(index["split"].iloc[split.rows[part]]) == {expected}
        assert split.y[part].shape == (len(split.rows[part]), len(split.classes))
        assert split.y[part].any(axis=1).all()          # unlabelled records are left out
    assert set(index["fold"].iloc[split.rows["test"]]) == {10}
    with pytest.raises(CremaError, match="not in this corpus"):
        splits.task_split(tiny_ptbxl_corpus, "cinc-scored")


def test_leave_one_source_out_split(tiny_cinc_corpus):
    split = splits.task_split(tiny_cinc_corpus, "cinc-scored", holdout_source="georgia")
    sources = tiny_cinc_corpus.index["source"].to_numpy()
    assert set(sources[split.rows["test"]]) == {"georgia"}
    assert "georgia" not in set(sources[split.rows["train"]]) | set(sources[split.rows["val"]])
    assert all(k.startswith("georgia/") for k in split.keys["test"])
    with pytest.raises(CremaError, match="not in this corpus"):
        splits.task_split(tiny_cinc_corpus, "cinc-scored", holdout_source="nowhere")


def test_fraction_subset_keeps_every_class_and_is_seeded():
    rng = np.random.default_rng(0)
    y = (rng.random((500, 6)) < np.array([0.5, 0.2, 0.05, 0.02, 0.01, 0.004])).astype(float)
    for fraction in (0.01, 0.1):
        rows = splits.fraction_subset(y, fraction, seed=1)
        assert len(rows) >= math.ceil(fraction * len(y))
        assert (y[rows].sum(0) >= np.minimum(1, y.sum(0))).all()   # >= 1 positive where there is one
        assert np.array_equal(rows, splits.fraction_subset(y, fraction, seed=1))
        assert not np.array_equal(rows, splits.fraction_subset(y, fraction, seed=2))
    big = splits.fraction_subset(y, 0.1, seed=0)
    share = y[big].sum(0) / y.sum(0)
    assert np.all(share[:2] > 0.05) and np.all(share[:2] < 0.2)     # common classes near their 10% share
    assert np.array_equal(splits.fraction_subset(y, 1.0, seed=0), np.arange(500))
    with pytest.raises(ValueError):
        splits.fraction_subset(y, 0.0, seed=0)


def test_fraction_subset_keeps_the_windows_of_a_record_together():
    y = np.zeros((40, 1))
    y[::4] = 1
    groups = np.repeat(np.arange(10), 4)              # 10 records of 4 windows each
    rows = splits.fraction_subset(y, 0.3, seed=0, groups=groups)
    picked = np.unique(groups[rows])
    assert len(rows) == 4 * len(picked) and len(picked) == 3


def test_record_mean_averages_the_windows_of_each_record():
    keys = np.array(["b", "a", "b", "c", "a", "b"])
    scores = np.array([[0.0], [1.0], [3.0], [5.0], [3.0], [6.0]])
    means, first = splits.record_mean(scores, keys)
    assert keys[first].tolist() == ["b", "a", "c"]               # order of first appearance
    assert means[:, 0].tolist() == [3.0, 2.0, 5.0]


def test_crop_starts_cover_the_window():
    assert crop_starts(2500, 1000) == [0, 750, 1500]
    assert crop_starts(1000, 1000) == [0] and crop_starts(1000, None) == [0]
    with pytest.raises(CremaError):
        crop_starts(500, 1000)


def test_features_are_cached(tiny_pretrain_checkpoint, tiny_ptbxl_corpus, tmp_path):
    encoder, _ = load_encoder(tiny_pretrain_checkpoint)
    rows = tiny_ptbxl_corpus.rows(split="test")
    sha = file_sha256(tiny_pretrain_checkpoint / MODEL_FILE)
    first = encoder_features(encoder, tiny_ptbxl_corpus, rows, encoder.cfg.window, tmp_path, sha, progress=False)
    assert first.shape == (len(rows), encoder.cfg.dim) and first.dtype == np.float32
    files = list(tmp_path.glob("*.npy"))
    assert len(files) == 1
    # a cached file is what the second call returns (overwrite it to prove it is read)
    np.save(files[0], first + 1)
    again = encoder_features(encoder, tiny_ptbxl_corpus, rows, encoder.cfg.window, tmp_path, sha, progress=False)
    assert np.array_equal(again, first + 1)
    other = encoder_features(encoder, tiny_ptbxl_corpus, rows[:3], encoder.cfg.window, tmp_path, sha, progress=False)
    assert np.allclose(other, first[:3], atol=1e-5) and len(list(tmp_path.glob("*.npy"))) == 2


@pytest.fixture(scope="module")
def real_features(tiny_pretrain_checkpoint, tiny_ptbxl_corpus, tmp_path_factory):
    encoder, _ = load_encoder(tiny_pretrain_checkpoint)
    split = splits.task_split(tiny_ptbxl_corpus, TASK)
    return probe.probe_features(encoder, tiny_ptbxl_corpus, split, encoder.cfg.window,
                                tmp_path_factory.mktemp("cache"), progress=False)


def test_logistic_probe_on_real_features(real_features):
    split, x = real_features.split, real_features.x
    fitted, info = probe.fit_logistic_probe(x["train"], split.y["train"], x["val"], split.y["val"], seed=0)
    # the chosen C is the grid value with the best validation macro AUROC
    scores = {c: v for c, v in info["val_auroc"].items() if v is not None}
    assert info["C"] == max(scores, key=scores.get)
    p = fitted.predict_proba(x["test"])
    assert p.shape == split.y["test"].shape and np.all((p >= 0) & (p <= 1))
    # our metric agrees with scikit-learn on these real probe outputs
    result = metrics.auroc(split.y["test"], p, split.classes)
    for j, name in enumerate(split.classes):
        if name in result.per_class:
            assert result.per_class[name] == pytest.approx(roc_auc_score(split.y["test"][:, j], p[:, j]))
        else:
            assert split.y["test"][:, j].sum() in (0, len(p))


def test_choosing_c_by_cross_validation_over_the_training_records(real_features):
    split, x = real_features.split, real_features.x
    keys = split.keys["train"]
    fitted, info = probe.fit_logistic_probe(x["train"], split.y["train"], x["val"], split.y["val"], seed=0,
                                            select_c="cv", groups=keys)
    assert info["selected_by"] == "cv" and fitted.C == info["C"]
    # the chosen C is the best mean over the folds of the training records, which are exactly these
    folds = probe.group_folds(keys, probe.CV_FOLDS)
    expected = probe.cross_validate_c(x["train"], split.y["train"], folds, seed=0)
    assert info["cv_auroc"] == {c: v if np.isfinite(v) else None for c, v in expected.items()}
    scored = {c: v for c, v in info["cv_auroc"].items() if v is not None}
    assert info["C"] == max(scored, key=scored.get)
    assert set(info["val_auroc"]) == {float(c) for c in probe.DEFAULT_CS}   # still reported for every C
    # the validation rows never decide: other validation labels, the same choice
    _, shuffled = probe.fit_logistic_probe(x["train"], split.y["train"], x["val"], split.y["val"][::-1], seed=0,
                                           select_c="cv", groups=keys)
    assert shuffled["C"] == info["C"]


def test_group_folds_keep_a_record_together_whatever_the_order():
    keys = np.array(["a/1", "a/1", "b/2", "c/3", "a/1", "d/4"])
    folds = probe.group_folds(keys, 5)
    assert len(set(folds[keys == "a/1"])) == 1 and set(folds) <= set(range(5))
    order = np.array([5, 3, 2, 1, 0, 4])
    assert np.array_equal(probe.group_folds(keys[order], 5), folds[order])


def test_cross_validation_falls_back_to_validation_when_no_fold_can_score(real_features):
    split, x = real_features.split, real_features.x
    one_record = np.full(len(x["train"]), "all/one")  # one group: a single fold, nothing to hold out
    _, info = probe.fit_logistic_probe(x["train"], split.y["train"], x["val"], split.y["val"], seed=0,
                                       select_c="cv", groups=one_record)
    _, by_val = probe.fit_logistic_probe(x["train"], split.y["train"], x["val"], split.y["val"], seed=0)
    assert info["selected_by"] == "val" and info["C"] == by_val["C"]
    with pytest.raises(CremaError, match="for the logistic probe"):
        probe.fit_probe("ridge", x["train"], split.y["train"][:, :1], x["val"], split.y["val"][:, :1], select_c="cv")


def test_probe_experiment_results(real_features):
    results = probe.probe_experiment(real_features, [0.2, 1.0], [0, 1], method="pretrained", data_sha256="x" * 64,
                                     config={"note": "test"}, progress=False)
    # fraction 1 with the deterministic logistic probe runs once, not once per seed
    assert [(r["fraction"], r["seed"]) for r in results] == [(0.2, 0), (0.2, 1), (1.0, 0)]
    n_train = len(real_features.split.rows["train"])
    assert results[2]["n_train"] == n_train and results[0]["n_train"] < n_train
    for r in results:
        assert r["protocol"] == "probe" and r["experiment"] == "label_fraction"
        assert len(r["bootstrap_auroc"]) == 1000 and r["data_sha256"] == "x" * 64
        assert set(r["auroc"]["per_class"]) | set(r["auroc"]["skipped"]) == set(real_features.split.classes)


def test_torch_linear_probe_runs(real_features):
    split, x = real_features.split, real_features.x
    fitted, info = probe.fit_torch_probe(x["train"], split.y["train"], x["val"], split.y["val"], epochs=30)
    assert 0 <= info["best_epoch"] < 30
    p = fitted.predict_proba(x["test"])
    assert p.shape == split.y["test"].shape and np.all((p >= 0) & (p <= 1))
    # the probe returned is the one of the best epoch: it scores the validation AUROC reported
    assert metrics.auroc(split.y["val"], fitted.predict_proba(x["val"])).macro == pytest.approx(info["val_auroc"])
    # and it learnt something from its training set (0.64 measured; chance is 0.5)
    assert metrics.auroc(split.y["train"], fitted.predict_proba(x["train"])).macro > 0.55


def test_random_kernel_features_are_seeded_and_informative(real_ecgs):
    """The training-free baseline: fixed by its seed, 2 features per kernel, and PPV in [0, 1]."""
    import torch

    from crema.eval.rocket import RandomKernelFeatures

    x = torch.from_numpy(real_ecgs[:6])
    a, b = RandomKernelFeatures(100, seed=1), RandomKernelFeatures(100, seed=1)
    fa = a(x)
    assert fa.shape == (6, 200) and torch.equal(fa, b(x))
    assert not torch.equal(fa, RandomKernelFeatures(100, seed=2)(x))
    n_ppv = 100
    ppv = fa[:, :n_ppv]
    assert ppv.min() >= 0 and ppv.max() <= 1
    # different ECGs get different features (the kernels see the signal, not only its shape)
    assert (fa[0] - fa[1]).abs().max() > 0.05
