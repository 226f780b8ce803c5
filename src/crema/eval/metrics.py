"""Test metrics with seeded percentile-bootstrap 95% intervals: for classification tasks
(multi-label, and multi-class scored one-vs-rest) per-class and macro AUROC and macro F1 with
thresholds picked on validation; for regression tasks the mean absolute error and Pearson's r.

Conventions: ``y_true`` is ``(n, K)`` with 0/1 entries, ``scores`` is ``(n, K)`` (probabilities for
F1 thresholds; any monotone score works for AUROC). A class with no positive or no negative among
the evaluated records has no AUROC: it is skipped and named in ``skipped`` with the reason, never
silently averaged in as 0.5. A regression target is ``(n, 1)`` (or ``(n,)``) with its predictions.

:data:`METRICS` names what each kind of task is scored with (:data:`TASK_METRICS`) and how a
``results.json`` entry holds it (:func:`metric_value`, :func:`metric_replicates`); the summaries,
paired differences and plots read results through them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import precision_recall_curve, roc_auc_score

DEFAULT_THRESHOLD = 0.5  # for a class with no positive in validation (scores are probabilities)


@dataclass(frozen=True)
class Metric:
    """A reported test metric: its key in ``results.json``, its label, and which way is better."""

    name: str
    label: str
    higher_is_better: bool


METRICS: dict[str, Metric] = {"auroc": Metric("auroc", "macro AUROC", True),
                              "mae": Metric("mae", "MAE", False),
                              "pearson": Metric("pearson", "Pearson r", True)}
# the metrics of each task type (crema.data.corpus.TASK_TYPES), the first being the one a headline is about
TASK_METRICS: dict[str, tuple[str, ...]] = {"multilabel": ("auroc",), "multiclass": ("auroc",),
                                            "regression": ("mae", "pearson")}


def result_metrics(result: dict) -> tuple[str, ...]:
    """The metrics a ``results.json`` entry carries (by its ``task_type``; multilabel when absent,
    as in results written before there were other task types)."""
    return TASK_METRICS[result.get("task_type") or "multilabel"]


def metric_value(result: dict, metric: str) -> float:
    """The point estimate of ``metric`` in a ``results.json`` entry (NaN when undefined)."""
    entry = result.get(metric) or {}
    value = entry.get("macro" if metric == "auroc" else "value")
    return float("nan") if value is None else float(value)


def metric_replicates(result: dict, metric: str) -> np.ndarray:
    """The bootstrap replicates of ``metric`` kept in a ``results.json`` entry (``(R,)``, NaN for
    undefined ones; empty when none were kept)."""
    return np.array([np.nan if v is None else float(v) for v in result.get(f"bootstrap_{metric}") or []])


@dataclass
class ClassMetric:
    """A metric computed per class and averaged over the classes where it is defined.

    Attributes:
        macro: mean over evaluated classes; NaN when no class could be evaluated.
        per_class: ``{class: value}`` for evaluated classes.
        skipped: ``{class: reason}`` for classes left out (e.g. ``"no positive"``).
    """

    macro: float
    per_class: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"macro": _json_float(self.macro), "per_class": {k: _json_float(v) for k, v in self.per_class.items()},
                "skipped": dict(self.skipped)}


def _json_float(value: float) -> float | None:
    return None if value is None or not np.isfinite(value) else float(value)


def _check(y_true: np.ndarray, scores: np.ndarray, classes: Sequence[str] | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    y_true = np.asarray(y_true)
    scores = np.asarray(scores, dtype=np.float64)
    if y_true.ndim == 1:
        y_true, scores = y_true[:, None], scores.reshape(-1, 1)
    if y_true.shape != scores.shape or y_true.ndim != 2:
        raise ValueError(f"y_true {y_true.shape} and scores {scores.shape} must both be (n, K)")
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinite values")
    k = y_true.shape[1]
    names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(k)]
    if len(names) != k:
        raise ValueError(f"{len(names)} class names for {k} columns")
    return (y_true > 0.5), scores, names


def _skip_reason(positives: int, n: int) -> str | None:
    if positives == 0:
        return "no positive"
    if positives == n:
        return "no negative"
    return None


def auroc(y_true: np.ndarray, scores: np.ndarray, classes: Sequence[str] | None = None) -> ClassMetric:
    """Per-class AUROC (scikit-learn ``roc_auc_score`` per column) and their mean.

    Args:
        y_true: ``(n, K)`` 0/1 labels.
        scores: ``(n, K)`` scores, higher = more likely positive.
        classes: K class names (default ``"0".."K-1"``).
    """
    y, s, names = _check(y_true, scores, classes)
    per_class, skipped = {}, {}
    for j, name in enumerate(names):
        reason = _skip_reason(int(y[:, j].sum()), len(y))
        if reason:
            skipped[name] = reason
        else:
            per_class[name] = float(roc_auc_score(y[:, j], s[:, j]))
    macro = float(np.mean(list(per_class.values()))) if per_class else float("nan")
    return ClassMetric(macro, per_class, skipped)


def pick_thresholds(y_val: np.ndarray, scores_val: np.ndarray) -> np.ndarray:
    """Per-class decision thresholds that maximise F1 on validation predictions.

    A record is called positive when ``score >= threshold``. Classes without a positive in
    validation get :data:`DEFAULT_THRESHOLD`.

    Args:
        y_val: ``(n, K)`` 0/1 labels.
        scores_val: ``(n, K)`` probabilities.

    Returns:
        ``(K,)`` float64 thresholds.
    """
    y, s, _ = _check(y_val, scores_val, None)
    thresholds = np.full(y.shape[1], DEFAULT_THRESHOLD)
    for j in range(y.shape[1]):
        if not y[:, j].any():
            continue
        precision, recall, cuts = precision_recall_curve(y[:, j], s[:, j])
        # the last precision/recall pair has no threshold (recall 0 by convention)
        p, r = precision[:-1], recall[:-1]
        f1 = np.divide(2 * p * r, p + r, out=np.zeros_like(p), where=(p + r) > 0)
        thresholds[j] = cuts[int(np.argmax(f1))]
    return thresholds


def f1(y_true: np.ndarray, scores: np.ndarray, thresholds: np.ndarray,
       classes: Sequence[str] | None = None) -> ClassMetric:
    """Per-class F1 of ``scores >= thresholds`` and their mean over classes with a positive.

    Classes with no positive among the evaluated records are skipped and named (their F1 is
    0 or undefined whatever the model does).
    """
    y, s, names = _check(y_true, scores, classes)
    pred = s >= np.asarray(thresholds, dtype=np.float64)[None, :]
    tp = (pred & y).sum(0)
    fp = (pred & ~y).sum(0)
    fn = (~pred & y).sum(0)
    per_class, skipped = {}, {}
    for j, name in enumerate(names):
        if not y[:, j].any():
            skipped[name] = "no positive"
        else:
            per_class[name] = float(2 * tp[j] / (2 * tp[j] + fp[j] + fn[j]))
    macro = float(np.mean(list(per_class.values()))) if per_class else float("nan")
    return ClassMetric(macro, per_class, skipped)


# ----------------------------------------------------------------------------- bootstrap

def _rank_auroc(y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """AUROC of every column by the Mann-Whitney rank formula, with average ranks for ties.

    Args:
        y: ``(R, n, K)`` bool; s: ``(R, n, K)`` scores.

    Returns:
        ``(R, K)``; NaN where a column has no positive or no negative.
    """
    ranks = rankdata(s, axis=1)
    n_pos = y.sum(1)
    n_neg = y.shape[1] - n_pos
    rank_sum = np.where(y, ranks, 0.0).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return np.where((n_pos > 0) & (n_neg > 0), value, np.nan)


def _resample_indices(n: int, n_resamples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))


def bootstrap_auroc(y_true: np.ndarray, scores: np.ndarray, n_resamples: int = 1000, seed: int = 0,
                    chunk: int = 10_000_000) -> np.ndarray:
    """Macro AUROC of ``n_resamples`` bootstrap resamples of the records.

    In a resample where a class has no positive (or no negative), that class is left out of that
    resample's mean; a resample where no class is defined gives NaN.

    Returns:
        ``(n_resamples,)`` float64 replicates (same seed and n = same resamples).
    """
    y, s, _ = _check(y_true, scores, None)
    idx = _resample_indices(len(y), n_resamples, seed)
    per_chunk = max(1, chunk // max(1, y.size))  # bound memory: R * n * K floats per pass
    out = []
    for start in range(0, n_resamples, per_chunk):
        rows = idx[start:start + per_chunk]
        out.append(_nanmean_rows(_rank_auroc(y[rows], s[rows])))
    return np.concatenate(out)


def bootstrap_f1(y_true: np.ndarray, scores: np.ndarray, thresholds: np.ndarray,
                 n_resamples: int = 1000, seed: int = 0, chunk: int = 10_000_000) -> np.ndarray:
    """Macro F1 (fixed thresholds) of ``n_resamples`` bootstrap resamples; classes without a
    positive in a resample are left out of that resample. Same resamples as
    :func:`bootstrap_auroc` for the same ``seed``. Returns ``(n_resamples,)``."""
    y, s, _ = _check(y_true, scores, None)
    pred = s >= np.asarray(thresholds, dtype=np.float64)[None, :]
    idx = _resample_indices(len(y), n_resamples, seed)
    per_chunk = max(1, chunk // max(1, y.size))
    out = []
    for start in range(0, n_resamples, per_chunk):
        rows = idx[start:start + per_chunk]
        yr, pr = y[rows], pred[rows]                      # (R', n, K)
        tp = (pr & yr).sum(1)
        fp = (pr & ~yr).sum(1)
        fn = (~pr & yr).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            per_class = np.where(tp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        out.append(_nanmean_rows(per_class))
    return np.concatenate(out)


def _nanmean_rows(values: np.ndarray) -> np.ndarray:
    counts = np.isfinite(values).sum(1)
    total = np.where(np.isfinite(values), values, 0.0).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, total / np.maximum(counts, 1), np.nan)


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The percentile interval of bootstrap replicates (NaN replicates ignored)."""
    finite = np.asarray(replicates, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return float("nan"), float("nan")
    alpha = (1 - level) / 2
    low, high = np.quantile(finite, [alpha, 1 - alpha])
    return float(low), float(high)


def paired_difference(a: float, b: float, replicates_a: np.ndarray, replicates_b: np.ndarray,
                      level: float = 0.95) -> tuple[float, float, float]:
    """``a - b`` and its percentile interval, for two estimates on the same test records whose
    bootstrap replicates were drawn on the same resamples (replicate ``r`` of both saw the same
    records, as :func:`bootstrap_auroc` ensures for the same ``n_resamples`` and ``seed``).

    Pairing the replicates removes the variation both share (which records are hard), so the
    interval is far narrower than one built from the two separate intervals.

    Returns:
        ``(difference, low, high)``; NaN replicates are ignored.
    """
    diffs = np.asarray(replicates_a, dtype=np.float64) - np.asarray(replicates_b, dtype=np.float64)
    low, high = percentile_interval(diffs, level)
    return float(a - b), low, high


def paired_bootstrap_auroc(y_true: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray,
                           n_resamples: int = 1000, seed: int = 0) -> tuple[float, float, float]:
    """Macro AUROC of ``scores_a`` minus that of ``scores_b`` (both ``(n, K)`` on the same
    records) with a 95% paired-bootstrap interval: ``(difference, low, high)``."""
    return paired_difference(auroc(y_true, scores_a).macro, auroc(y_true, scores_b).macro,
                             bootstrap_auroc(y_true, scores_a, n_resamples, seed),
                             bootstrap_auroc(y_true, scores_b, n_resamples, seed))


# ----------------------------------------------------------------------------- one call

def evaluate(y_test: np.ndarray, scores_test: np.ndarray, classes: Sequence[str],
             thresholds: np.ndarray | None = None, n_resamples: int = 1000, seed: int = 0,
             keep_replicates: bool = False, task_type: str = "multilabel") -> dict:
    """Everything the reports need for one set of test predictions of a classification task, as a
    JSON-ready dict (a multi-class task is scored like a multi-label one, one-vs-rest).

    Args:
        y_test: ``(n, K)`` 0/1 labels; scores_test: ``(n, K)`` probabilities.
        classes: K class names.
        thresholds: ``(K,)`` picked on validation with :func:`pick_thresholds`; without them no F1.
        n_resamples: bootstrap resamples of the test records (>= 1000 for reported intervals).
        seed: bootstrap seed.
        keep_replicates: also return the bootstrap replicates (to combine seeds later).
        task_type: ``multilabel`` or ``multiclass``, recorded in the result.

    Returns:
        ``{"task_type", "n", "auroc": {macro, per_class, skipped, ci}, "f1": {...} | None,
        "bootstrap": {...}}``.
    """
    au = auroc(y_test, scores_test, classes)
    boot_au = bootstrap_auroc(y_test, scores_test, n_resamples, seed)
    result = {"task_type": task_type, "n": int(len(y_test)),
              "auroc": {**au.to_dict(), "ci95": list(percentile_interval(boot_au))},
              "f1": None,
              "bootstrap": {"n_resamples": int(n_resamples), "seed": int(seed), "method": "percentile"}}
    if thresholds is not None:
        f = f1(y_test, scores_test, thresholds, classes)
        boot_f1 = bootstrap_f1(y_test, scores_test, thresholds, n_resamples, seed)
        result["f1"] = {**f.to_dict(), "ci95": list(percentile_interval(boot_f1)),
                        "thresholds": {c: float(t) for c, t in zip(classes, thresholds)}}
        if keep_replicates:
            result["bootstrap"]["f1"] = [_json_float(v) for v in boot_f1]
    if keep_replicates:
        result["bootstrap"]["auroc"] = [_json_float(v) for v in boot_au]
    result["auroc"]["ci95"] = [_json_float(v) for v in result["auroc"]["ci95"]]
    if result["f1"] is not None:
        result["f1"]["ci95"] = [_json_float(v) for v in result["f1"]["ci95"]]
    return result


# ----------------------------------------------------------------------------- regression

def _regression_arrays(y_true: np.ndarray, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(predicted, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"targets {np.shape(y_true)} and predictions {np.shape(predicted)} must hold one value each")
    if not (np.all(np.isfinite(y)) and np.all(np.isfinite(p))):
        raise ValueError("regression targets or predictions contain NaN or infinite values")
    return y, p


def _pearson_rows(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Pearson's r of each row of ``y, p (R, n)``; NaN where either side is constant."""
    yc = y - y.mean(axis=1, keepdims=True)
    pc = p - p.mean(axis=1, keepdims=True)
    denominator = np.sqrt((yc ** 2).sum(1) * (pc ** 2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (yc * pc).sum(1) / denominator, np.nan)


def mae(y_true: np.ndarray, predicted: np.ndarray) -> float:
    """Mean absolute error of predictions of one target, ``(n,)`` or ``(n, 1)`` each."""
    y, p = _regression_arrays(y_true, predicted)
    return float(np.mean(np.abs(y - p))) if len(y) else float("nan")


def pearson(y_true: np.ndarray, predicted: np.ndarray) -> float:
    """Pearson's correlation of predictions with the target; NaN when either is constant."""
    y, p = _regression_arrays(y_true, predicted)
    return float(_pearson_rows(y[None], p[None])[0]) if len(y) > 1 else float("nan")


def bootstrap_regression(y_true: np.ndarray, predicted: np.ndarray, n_resamples: int = 1000, seed: int = 0,
                         chunk: int = 10_000_000) -> dict[str, np.ndarray]:
    """MAE and Pearson's r of ``n_resamples`` bootstrap resamples of the records (the same
    resamples as :func:`bootstrap_auroc` for the same ``seed`` and n), so replicates of two
    models on the same records pair up. Returns ``{"mae": (R,), "pearson": (R,)}``."""
    y, p = _regression_arrays(y_true, predicted)
    idx = _resample_indices(len(y), n_resamples, seed)
    per_chunk = max(1, chunk // max(1, y.size))
    maes, rs = [], []
    for start in range(0, n_resamples, per_chunk):
        rows = idx[start:start + per_chunk]
        yr, pr = y[rows], p[rows]                          # (R', n)
        maes.append(np.abs(yr - pr).mean(axis=1))
        rs.append(_pearson_rows(yr, pr))
    return {"mae": np.concatenate(maes), "pearson": np.concatenate(rs)}


def evaluate_regression(y_test: np.ndarray, predicted: np.ndarray, target: str, n_resamples: int = 1000,
                        seed: int = 0, keep_replicates: bool = False) -> dict:
    """The regression counterpart of :func:`evaluate`, as a JSON-ready dict.

    Args:
        y_test: ``(n, 1)`` or ``(n,)`` true values; predicted: the same shape.
        target: the target's name.

    Returns:
        ``{"task_type": "regression", "n", "target", "mae": {value, ci95}, "pearson": {value, ci95},
        "auroc": None, "f1": None, "bootstrap": {n_resamples, seed, method[, mae, pearson]}}``.
    """
    replicates = bootstrap_regression(y_test, predicted, n_resamples, seed)
    result = {"task_type": "regression", "n": int(np.size(y_test)), "target": str(target), "auroc": None, "f1": None,
              "bootstrap": {"n_resamples": int(n_resamples), "seed": int(seed), "method": "percentile"}}
    for name, point in (("mae", mae(y_test, predicted)), ("pearson", pearson(y_test, predicted))):
        result[name] = {"value": _json_float(point),
                        "ci95": [_json_float(v) for v in percentile_interval(replicates[name])]}
        if keep_replicates:
            result["bootstrap"][name] = [_json_float(v) for v in replicates[name]]
    return result
