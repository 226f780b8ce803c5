"""Model selection on the validation fold: which encoder, read-out or pretraining variant to keep,
decided without ever reading the test fold.

The protocol: the logistic probe's ``C`` is chosen by leave-one-fold-out over the training folds
(folds 1-8: fit on seven, macro AUROC on the eighth, mean over the eight), the probe is refitted
on the training folds at that ``C`` and scored on the validation fold 9 (macro AUROC with a
bootstrap interval over its rows). Optionally on a label fraction of the training rows
(:func:`crema.eval.splits.fraction_subset`). The fits are :func:`crema.eval.probe.fit_logistic`'s,
the probe of ``crema probe`` and the suite, which instead choose ``C`` on fold 9 and report the
test fold 10.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from threadpoolctl import threadpool_limits

from ..errors import CremaError
from . import metrics
from .probe import DEFAULT_CS, best_c, cross_validate_c, fit_logistic
from .splits import fraction_subset

TRAIN_FOLDS: tuple[int, ...] = tuple(range(1, 9))  # a corpus's `train` split
VAL_FOLD = 9                                        # its `val` split; fold 10 (`test`) is never read


@dataclass(frozen=True)
class ValidationScore:
    """One probe scored on the validation fold.

    Attributes:
        C: the inverse L2 strength used (chosen by cross-validation, or given).
        cv: ``{C: mean macro AUROC of the held-out training folds}`` for every C tried (NaN where
            no held-out fold had a defined AUROC); empty when ``C`` was given.
        cv_auroc: ``cv[C]``, or None when ``C`` was given.
        val_auroc: macro AUROC on the validation fold.
        val_ci95: 95% percentile bootstrap interval of ``val_auroc`` over the validation rows
            (None with ``n_bootstrap=0``).
        val_scores: ``(n_val, K)`` probabilities of the validation rows.
        val_rows: ``(n_val,)`` positions of those rows in the arrays given.
        n_train: training rows the final probe was fitted on.
        fraction, seed: the label fraction and the seed of its subset.
    """

    C: float
    cv: dict[float, float]
    cv_auroc: float | None
    val_auroc: float
    val_ci95: tuple[float, float] | None
    val_scores: np.ndarray = field(repr=False)
    val_rows: np.ndarray = field(repr=False)
    n_train: int
    fraction: float = 1.0
    seed: int = 0


def validation_probe(x: np.ndarray, y: np.ndarray, folds: np.ndarray, *, Cs: Sequence[float] = DEFAULT_CS,
                     C: float | None = None, fraction: float = 1.0, seed: int = 0,
                     groups: np.ndarray | None = None, train_folds: Sequence[int] = TRAIN_FOLDS,
                     val_fold: int = VAL_FOLD, n_bootstrap: int = 1000, max_iter: int = 1000,
                     threads: int = 1) -> ValidationScore:
    """Choose C by leave-one-fold-out over the training folds, refit on them, score the validation fold.

    Only the rows of ``train_folds`` and ``val_fold`` are read: rows of any other fold (the test
    fold) may be present, even as NaN, and never reach a fit or a score. Rows are scored as given
    (one row per record gives record-level figures; average windows first with
    :func:`crema.eval.splits.record_mean`).

    Args:
        x: ``(n, F)`` features (a memmap is read only at the rows used).
        y: ``(n, K)`` 0/1 labels (multi-label; a multi-class task one-hot).
        folds: ``(n,)`` fold of each row.
        Cs: the grid; C: use this C instead of cross-validating (e.g. the full-label C for a
            label fraction).
        fraction, seed: fit (and cross-validate) on :func:`~crema.eval.splits.fraction_subset`'s
            seeded subset of the training rows, every class kept; ``groups`` ``(n,)`` record keys
            keep a record's rows together.
        n_bootstrap: resamples of the validation interval (0: no interval).
        max_iter: the logistic regressions' iteration limit.
        threads: BLAS threads of the fits (default one, as :func:`~crema.eval.probe.fit_logistic_probe`:
            small fits on a busy machine run many times slower with threaded BLAS).

    Returns:
        a :class:`ValidationScore`. Deterministic: the same inputs give the same result.
    """
    folds = np.asarray(folds)
    y = np.asarray(y)
    train = np.flatnonzero(np.isin(folds, list(train_folds)))
    val = np.flatnonzero(folds == val_fold)
    if len(train) == 0 or len(val) == 0:
        raise CremaError(f"no rows in the training folds {list(train_folds)} or the validation fold {val_fold}")
    keep = fraction_subset(y[train], fraction, seed, groups=None if groups is None else np.asarray(groups)[train])
    train = train[keep]
    x_train = np.asarray(x[train], dtype=np.float64)
    with threadpool_limits(threads, user_api="blas"):
        cv = {} if C is not None else cross_validate_c(x_train, y[train], folds[train], Cs, seed, max_iter)
        C = best_c(cv) if C is None else float(C)
        probe = fit_logistic(x_train, y[train], C, seed, max_iter)
        scores = probe.predict_proba(np.asarray(x[val], dtype=np.float64))
    y_val = y[val]
    interval = None
    if n_bootstrap:
        interval = metrics.percentile_interval(metrics.bootstrap_auroc(y_val, scores, n_bootstrap, seed=0))
    return ValidationScore(C=C, cv=cv, cv_auroc=cv.get(C), val_auroc=float(metrics.auroc(y_val, scores).macro),
                           val_ci95=interval, val_scores=scores, val_rows=val, n_train=int(len(train)),
                           fraction=float(fraction), seed=int(seed))
