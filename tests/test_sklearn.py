"""crema.sklearn.CremaEmbedder in scikit-learn pipelines, on real PTB-XL records (the 100 Hz
sample shipped in the package) with the tiny checkpoint the test suite pretrains."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import estimator_checks

import crema
from crema.data import ptbxl
from crema.data.readers import read_record
from crema.errors import CremaError
from crema.paths import sample_root
from crema import sklearn as crema_sklearn
from crema.sklearn import CremaEmbedder
from crema.use.api import CremaModel

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_RECORDS = 64


@pytest.fixture(scope="module")
def norm_task():
    """The first 64 records of the shipped sample with both classes of 'NORM' (superdiagnostic)
    well represented: .hea paths, their signals leads-last (64, 1000, 12) at 100 Hz, and y."""
    root = sample_root()
    index = ptbxl.load_ptbxl_index(root, rate=100).head(N_RECORDS)
    paths = [str(p) for p in index["path"]]
    y = np.array(["NORM" in labels for labels in index["labels:ptbxl-superdiagnostic"]], dtype=int)
    assert 15 < y.sum() < N_RECORDS - 15
    signals = np.stack([read_record(p).signal.T for p in paths])
    return paths, signals, y


def test_pipeline_cross_validates_on_real_records(tiny_pretrain_checkpoint, norm_task):
    paths, signals, y = norm_task
    embedder = CremaEmbedder(tiny_pretrain_checkpoint, fs=100)
    pipe = make_pipeline(embedder, StandardScaler(), LogisticRegression(max_iter=2000))
    scores = cross_val_score(pipe, signals, y, cv=StratifiedKFold(4, shuffle=True, random_state=0),
                             scoring="roc_auc")
    assert scores.shape == (4,) and np.isfinite(scores).all()
    assert scores.mean() > 0.6, scores      # NORM is separable from these features (0.67 measured)

    # the features are the record embeddings of the same records read from their WFDB files
    model = crema.load(tiny_pretrain_checkpoint, device="cpu")
    features = embedder.fit_transform(signals)
    assert features.shape == (N_RECORDS, model.dim) and features.dtype == np.float32
    assert np.array_equal(features, model.embed(paths))
    # the same from a list of paths, and from a model already loaded
    assert np.array_equal(CremaEmbedder(model).fit_transform(paths[:5]), features[:5])
    assert list(embedder.get_feature_names_out()[:2]) == ["e0", "e1"]


def test_params_clone_and_sklearn_checks(tiny_pretrain_checkpoint, norm_task):
    _, signals, _ = norm_task
    embedder = CremaEmbedder(tiny_pretrain_checkpoint, fs=100, batch_size=8)
    assert embedder.get_params() == {"model": tiny_pretrain_checkpoint, "fs": 100, "leads": None,
                                     "batch_size": 8, "device": "cpu", "features": None, "cache": False}
    assert embedder.set_params(fs=500, batch_size=4) is embedder and embedder.fs == 500
    embedder.set_params(fs=100)
    twin = clone(embedder)
    assert twin is not embedder and twin.get_params() == embedder.get_params()
    assert not hasattr(twin, "model_")                   # clone gives an unfitted copy
    pipe = clone(make_pipeline(embedder, LogisticRegression()))
    assert pipe.get_params()["cremaembedder__fs"] == 100
    pipe.set_params(cremaembedder__batch_size=16)
    assert pipe.steps[0][1].batch_size == 16
    # a loaded model as the parameter is cloned too (deep copy), and embeds the same
    loaded = CremaEmbedder(crema.load(tiny_pretrain_checkpoint, device="cpu"), fs=100)
    assert np.array_equal(clone(loaded).transform(signals[:3]), loaded.transform(signals[:3]))

    # scikit-learn's own checks that apply to an estimator whose inputs are ECG stacks, not tables
    name = type(embedder).__name__
    for check in ("check_parameters_default_constructible", "check_get_params_invariance",
                  "check_set_params", "check_no_attributes_set_in_init", "check_estimator_cloneable",
                  "check_estimator_repr", "check_do_not_raise_errors_in_init_or_set_params",
                  "check_mixin_order", "check_valid_tag_types", "check_estimator_tags_renamed"):
        getattr(estimator_checks, check)(name, embedder)


def test_bad_inputs_are_named(tiny_pretrain_checkpoint, norm_task, tmp_path):
    paths, signals, _ = norm_task
    embedder = CremaEmbedder(tiny_pretrain_checkpoint, fs=100)
    with pytest.raises(CremaError, match=r"X has shape \(64, 1000\); expected a stack"):
        embedder.fit_transform(signals[:, :, 0])
    with pytest.raises(CremaError, match=r"X\[1\] .* holds 0 records"):
        embedder.transform([paths[0], str(tmp_path)])
    bad = signals[:2].copy()
    bad[1, 5, 0] = np.nan
    with pytest.raises(CremaError, match="record array1: the signal contains NaN"):
        embedder.transform(bad)
    with pytest.raises(CremaError, match="takes a checkpoint folder or a model"):
        CremaEmbedder(42).fit()


def test_every_kind_of_record_list_gives_one_row_per_record(tiny_pretrain_checkpoint, norm_task, tmp_path):
    """A stack, a list of arrays (of different lengths), of Recordings (with repeated or empty
    ids), of paths (one given twice): one row per record, in input order, each the embedding
    of that record on its own."""
    paths, signals, _ = norm_task
    embedder = CremaEmbedder(tiny_pretrain_checkpoint, fs=100).fit()
    reference = embedder.transform(signals[:4])                         # (4, 1000, 12) leads last
    assert reference.shape == (4, embedder.n_features_out_)
    assert len(np.unique(reference.round(5), axis=0)) == 4              # four different records
    records = [read_record(p) for p in paths[:4]]
    arrays = [r.signal for r in records]                                # (12, 1000) each

    def same(rows, expected):
        assert rows.shape == expected.shape and np.allclose(rows, expected, atol=1e-5)

    same(embedder.transform(np.stack(arrays)), reference)                # (N, 12, T)
    same(embedder.transform(arrays), reference)
    same(embedder.transform(records), reference)
    same(embedder.transform([replace(r, record_id="same") for r in records]), reference)
    same(embedder.transform([replace(r, record_id="") for r in records]), reference)
    same(embedder.transform(paths[:4]), reference)
    same(embedder.transform([paths[0], paths[1], paths[0]]), reference[[0, 1, 0]])
    np.save(tmp_path / "stack.npy", np.stack(arrays))
    same(embedder.transform(str(tmp_path / "stack.npy")), reference)     # a stack file: its rows

    # records of different lengths: 6 s, 10 s and 20 s (two windows) each give their own row
    mixed = [arrays[0][:, :600], arrays[1], np.concatenate([arrays[2], arrays[3]], axis=1)]
    alone = np.concatenate([embedder.transform([a]) for a in mixed])
    same(embedder.transform(mixed), alone)
    assert not np.allclose(alone[0], reference[0], atol=1e-3)          # the 6 s record is not the 10 s one


def test_cache_embeds_each_record_once_in_cross_validation(tiny_pretrain_checkpoint, norm_task, tmp_path,
                                                           monkeypatch):
    paths, signals, y = norm_task
    windows = []
    encode = CremaModel.encode_windows

    def counting(self, signals, *args, **kwargs):
        windows.append(len(signals))
        return encode(self, signals, *args, **kwargs)

    monkeypatch.setattr(CremaModel, "encode_windows", counting)
    crema_sklearn.clear_cache()
    x, y = signals[:40], y[:40]
    cv = StratifiedKFold(5, shuffle=True, random_state=0)

    def cv_scores(embedder):
        windows.clear()
        pipe = make_pipeline(embedder, StandardScaler(), LogisticRegression(max_iter=2000))
        return cross_val_score(pipe, x, y, cv=cv, scoring="roc_auc"), sum(windows)

    plain, plain_windows = cv_scores(CremaEmbedder(tiny_pretrain_checkpoint, fs=100))
    cached, cached_windows = cv_scores(CremaEmbedder(tiny_pretrain_checkpoint, fs=100, cache=True))
    assert plain_windows == 5 * 40 and cached_windows == 40           # every record embedded once
    assert np.allclose(plain, cached, atol=1e-6)
    again, again_windows = cv_scores(CremaEmbedder(tiny_pretrain_checkpoint, fs=100, cache=True))
    assert again_windows == 0 and np.allclose(again, cached)

    # a folder keeps them across processes: with this process's cache emptied nothing is embedded
    folder = tmp_path / "embeddings"
    first = CremaEmbedder(tiny_pretrain_checkpoint, fs=100, cache=folder).transform(x[:6])
    assert len(list(folder.glob("*.npy"))) == 6
    crema_sklearn.clear_cache()
    windows.clear()
    assert np.array_equal(CremaEmbedder(tiny_pretrain_checkpoint, fs=100, cache=folder).transform(x[:6]), first)
    assert sum(windows) == 0
    # another record content (one sample changed) or another model is another key
    changed = x[:1].copy()
    changed[0, 500, 3] += 0.5
    CremaEmbedder(tiny_pretrain_checkpoint, fs=100, cache=folder).transform(changed)
    assert sum(windows) == 1
