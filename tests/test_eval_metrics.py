"""Metrics against scikit-learn on hand-built cases with known answers, and bootstrap behaviour."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from crema.eval import metrics


def test_auroc_known_values():
    y = np.array([0, 0, 1, 1])
    # the scikit-learn documentation example: one of the four positive/negative pairs is misordered
    assert metrics.auroc(y, np.array([0.1, 0.4, 0.35, 0.8])).macro == pytest.approx(0.75)
    assert metrics.auroc(y, np.array([0.1, 0.2, 0.3, 0.4])).macro == 1.0      # perfect ranking
    assert metrics.auroc(y, np.array([0.4, 0.3, 0.2, 0.1])).macro == 0.0      # reversed
    assert metrics.auroc(y, np.array([0.5, 0.5, 0.5, 0.5])).macro == 0.5      # all tied


def test_auroc_per_class_matches_sklearn_and_names_skipped_classes():
    rng = np.random.default_rng(0)
    y = (rng.random((200, 4)) < 0.3).astype(float)
    scores = np.round(rng.random((200, 4)) + 0.4 * y, 1)   # rounded: many ties
    y[:, 2] = 0                                            # no positive
    y[:, 3] = 1                                            # no negative
    result = metrics.auroc(y, scores, ["A", "B", "C", "D"])
    for j, name in enumerate("AB"):
        assert result.per_class[name] == pytest.approx(roc_auc_score(y[:, j], scores[:, j]), abs=1e-12)
    assert result.skipped == {"C": "no positive", "D": "no negative"}
    assert result.macro == pytest.approx(np.mean([result.per_class["A"], result.per_class["B"]]))
    assert json.loads(json.dumps(result.to_dict()))["skipped"] == result.skipped


def test_auroc_with_no_evaluable_class_is_nan_not_half():
    result = metrics.auroc(np.zeros((5, 2)), np.random.default_rng(0).random((5, 2)), ["x", "y"])
    assert np.isnan(result.macro) and result.per_class == {}
    assert result.to_dict()["macro"] is None


def test_rank_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(1)
    y = rng.random((300, 3)) < 0.2
    s = np.round(rng.normal(size=(300, 3)) + y, 1)
    fast = metrics._rank_auroc(y[None], s[None])[0]
    assert fast == pytest.approx([roc_auc_score(y[:, j], s[:, j]) for j in range(3)], abs=1e-12)


def test_bootstrap_leaves_out_a_class_missing_from_a_resample():
    # class 0 ranks perfectly (AUROC 1); class 1 has one positive, ranked last (AUROC 0).
    n = 30
    y = np.zeros((n, 2))
    y[n // 2:, 0] = 1
    y[0, 1] = 1
    s = np.zeros((n, 2))
    s[:, 0] = np.arange(n)
    s[:, 1] = np.arange(n) + 1.0
    s[0, 1] = 0.0
    reps = metrics.bootstrap_auroc(y, s, n_resamples=2000, seed=3)
    assert set(np.round(reps, 12)) == {0.5, 1.0}            # both present, or class 1 left out
    share_without = np.mean(reps == 1.0)                      # P(record 0 not drawn) = (1 - 1/n)^n
    assert share_without == pytest.approx((1 - 1 / n) ** n, abs=0.04)


def test_bootstrap_is_seeded_and_interval_brackets_the_estimate():
    rng = np.random.default_rng(2)
    y = (rng.random((400, 3)) < 0.3).astype(int)
    s = rng.random((400, 3)) + 0.5 * y
    a = metrics.bootstrap_auroc(y, s, 1000, seed=7)
    assert np.array_equal(a, metrics.bootstrap_auroc(y, s, 1000, seed=7))
    assert not np.array_equal(a, metrics.bootstrap_auroc(y, s, 1000, seed=8))
    low, high = metrics.percentile_interval(a)
    point = metrics.auroc(y, s).macro
    assert low < point < high
    # four times the records: the interval is about half as wide
    y4, s4 = np.tile(y, (4, 1)), np.tile(s, (4, 1))
    low4, high4 = metrics.percentile_interval(metrics.bootstrap_auroc(y4, s4, 1000, seed=7))
    assert 0.35 < (high4 - low4) / (high - low) < 0.7


def test_thresholds_maximise_validation_f1():
    rng = np.random.default_rng(4)
    y = (rng.random((150, 3)) < 0.3).astype(int)
    s = np.clip(rng.random((150, 3)) * 0.7 + 0.3 * y, 0, 1)
    th = metrics.pick_thresholds(y, s)
    for j in range(3):
        best = max(f1_score(y[:, j], s[:, j] >= t) for t in np.unique(s[:, j]))
        assert f1_score(y[:, j], s[:, j] >= th[j]) == pytest.approx(best)
    assert metrics.pick_thresholds(np.zeros((5, 1)), rng.random((5, 1)))[0] == metrics.DEFAULT_THRESHOLD


def test_f1_matches_sklearn_and_skips_classes_without_positive():
    rng = np.random.default_rng(5)
    y = (rng.random((100, 3)) < 0.4).astype(int)
    y[:, 2] = 0
    s = rng.random((100, 3))
    th = np.array([0.3, 0.6, 0.5])
    result = metrics.f1(y, s, th, ["a", "b", "c"])
    for j, name in enumerate("ab"):
        assert result.per_class[name] == pytest.approx(f1_score(y[:, j], s[:, j] >= th[j]))
    assert result.skipped == {"c": "no positive"}
    reps = metrics.bootstrap_f1(y, s, th, 500, seed=0)
    assert np.all((reps >= 0) & (reps <= 1))
    low, high = metrics.percentile_interval(reps)
    assert low <= result.macro <= high


def test_evaluate_is_json_ready():
    rng = np.random.default_rng(6)
    y = (rng.random((60, 2)) < 0.5).astype(int)
    s = rng.random((60, 2))
    out = metrics.evaluate(y, s, ["p", "q"], metrics.pick_thresholds(y, s), n_resamples=1000, keep_replicates=True)
    text = json.dumps(out)
    back = json.loads(text)
    assert back["n"] == 60 and len(back["bootstrap"]["auroc"]) == 1000
    assert back["auroc"]["ci95"][0] <= back["auroc"]["macro"] <= back["auroc"]["ci95"][1]
    assert set(back["f1"]["thresholds"]) == {"p", "q"}


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="must both be"):
        metrics.auroc(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        metrics.auroc(np.array([0, 1]), np.array([0.1, np.nan]))
