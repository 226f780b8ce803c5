"""Model selection on the validation fold (crema.eval.selection) on real features: the tiny
pretrained encoder's embeddings of the tiny PTB-XL corpus (folds 1-10)."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from crema.errors import CremaError
from crema.eval import metrics, probe, splits
from crema.eval.selection import best_c, validation_probe
from crema.model.checkpoint import load_encoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TASK = "ptbxl-superdiagnostic"


@pytest.fixture(autouse=True)
def one_blas_thread():
    """The by-hand fits too: small fits with threaded BLAS on the busy test machine spin."""
    with threadpool_limits(1, user_api="blas"):
        yield


@pytest.fixture(scope="module")
def labelled(tiny_pretrain_checkpoint, tiny_ptbxl_corpus, tmp_path_factory):
    """``(x (n, D), y (n, K), folds (n,))`` of every labelled row, test fold included."""
    encoder, _ = load_encoder(tiny_pretrain_checkpoint)
    split = splits.task_split(tiny_ptbxl_corpus, TASK)
    feats = probe.probe_features(encoder, tiny_ptbxl_corpus, split, encoder.cfg.window,
                                 tmp_path_factory.mktemp("cache"), progress=False)
    parts = ("train", "val", "test")
    folds = tiny_ptbxl_corpus.index["fold"].to_numpy()
    return (np.concatenate([feats.x[p] for p in parts]), np.concatenate([split.y[p] for p in parts]),
            np.concatenate([folds[split.rows[p]] for p in parts]))


def _macro_auroc_by_hand(y: np.ndarray, scores: np.ndarray) -> float:
    defined = [roc_auc_score(y[:, k], scores[:, k]) for k in range(y.shape[1]) if 0 < y[:, k].sum() < len(y)]
    return float(np.mean(defined)) if defined else float("nan")


def _cv_by_hand(x: np.ndarray, y: np.ndarray, folds: np.ndarray, C: float) -> float:
    """Leave-one-fold-out with scikit-learn directly: the figure the protocol promises."""
    values = []
    for fold in np.unique(folds):
        fit, held = folds != fold, folds == fold
        scaler = StandardScaler().fit(x[fit])
        scores = np.zeros((held.sum(), y.shape[1]))
        for k in range(y.shape[1]):
            if 0 < y[fit, k].sum() < fit.sum():
                model = LogisticRegression(C=C, max_iter=1000, random_state=0).fit(scaler.transform(x[fit]), y[fit, k])
                scores[:, k] = model.predict_proba(scaler.transform(x[held]))[:, 1]
        values.append(_macro_auroc_by_hand(y[held], scores))
    return float(np.nanmean(values))


def test_c_is_the_argmax_of_leave_one_fold_out_over_the_training_folds(labelled):
    x, y, folds = labelled
    result = validation_probe(x, y, folds, n_bootstrap=200)
    assert set(result.cv) == set(probe.DEFAULT_CS)
    finite = {c: v for c, v in result.cv.items() if np.isfinite(v)}
    assert result.C == max(finite, key=finite.get) and result.cv_auroc == result.cv[result.C]
    train = folds <= 8
    for C in (result.C, 0.001):   # the CV value is leave-one-fold-out over folds 1-8 only
        assert result.cv[C] == pytest.approx(_cv_by_hand(x[train], y[train], folds[train], C), abs=1e-6)
    # refitted on folds 1-8 at that C, scored on fold 9
    assert np.array_equal(result.val_rows, np.flatnonzero(folds == 9)) and result.n_train == train.sum()
    refit = probe.fit_logistic(x[train], y[train], result.C)
    assert np.allclose(result.val_scores, refit.predict_proba(x[folds == 9]))
    assert result.val_auroc == pytest.approx(_macro_auroc_by_hand(y[folds == 9], result.val_scores))
    low, high = result.val_ci95
    assert low <= high and 0 <= low and high <= 1


def test_the_test_fold_is_never_read(labelled):
    x, y, folds = labelled
    poisoned_x, poisoned_y = x.copy(), y.copy()
    poisoned_x[folds == 10], poisoned_y[folds == 10] = np.nan, np.nan  # any read would fail or differ
    seen = validation_probe(poisoned_x, poisoned_y, folds, n_bootstrap=100)
    without = validation_probe(x[folds != 10], y[folds != 10], folds[folds != 10], n_bootstrap=100)
    assert seen.C == without.C and seen.cv == without.cv and seen.val_ci95 == without.val_ci95
    assert np.array_equal(seen.val_scores, without.val_scores)
    with pytest.raises(ValueError):   # the poison is live: read as training rows, the fit refuses NaN
        validation_probe(poisoned_x, poisoned_y, folds, train_folds=range(1, 11), n_bootstrap=0)


def test_results_are_deterministic(labelled):
    x, y, folds = labelled
    a, b = (validation_probe(x, y, folds, fraction=0.5, seed=3, n_bootstrap=100) for _ in range(2))
    assert (a.C, a.cv, a.val_auroc, a.val_ci95, a.n_train) == (b.C, b.cv, b.val_auroc, b.val_ci95, b.n_train)
    assert np.array_equal(a.val_scores, b.val_scores)


def test_label_fractions_and_a_given_c(labelled):
    x, y, folds = labelled
    train = np.flatnonzero(folds <= 8)
    half = validation_probe(x, y, folds, fraction=0.5, seed=1, n_bootstrap=0)
    keep = train[splits.fraction_subset(y[train], 0.5, 1)]
    assert half.n_train == len(keep) < len(train) and half.val_ci95 is None
    assert half.cv[half.C] == pytest.approx(_cv_by_hand(x[keep], y[keep], folds[keep], half.C), abs=1e-6)
    given = validation_probe(x, y, folds, C=0.1, fraction=0.5, seed=1, n_bootstrap=0)
    assert given.C == 0.1 and given.cv == {} and given.cv_auroc is None
    refit = probe.fit_logistic(x[keep], y[keep], 0.1)
    assert np.allclose(given.val_scores, refit.predict_proba(x[folds == 9]))


def test_best_c_and_what_is_refused(labelled):
    x, y, folds = labelled
    assert best_c({0.1: 0.7, 1.0: float("nan"), 10.0: 0.7, 0.01: 0.6}) == 0.1   # first on ties, NaN never wins
    with pytest.raises(CremaError, match="defined"):
        best_c({1.0: float("nan")})
    with pytest.raises(CremaError, match="two training folds"):
        validation_probe(x, y, folds, train_folds=(1,))
    with pytest.raises(CremaError, match="validation fold 11"):
        validation_probe(x, y, folds, val_fold=11)


def test_fit_logistic_is_the_probe_of_crema_probe(labelled):
    """One fitting code path: crema probe's chosen probe is fit_logistic at its C."""
    x, y, folds = labelled
    train, val = folds <= 8, folds == 9
    chosen, info = probe.fit_logistic_probe(x[train], y[train], x[val], y[val])
    again = probe.fit_logistic(x[train], y[train], info["C"])
    assert np.array_equal(chosen.predict_proba(x[val]), again.predict_proba(x[val]))
    assert metrics.auroc(y[val], again.predict_proba(x[val])).macro == pytest.approx(info["val_auroc"][info["C"]])
