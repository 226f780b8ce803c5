"""crema.sklearn.CremaEmbedder in scikit-learn pipelines, on real PTB-XL records (the 100 Hz
sample shipped in the package) with the tiny checkpoint the test suite pretrains."""
from __future__ import annotations

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
from crema.sklearn import CremaEmbedder

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
                                     "batch_size": 8, "device": "cpu"}
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
