"""Linear probing of frozen features: a logistic-regression probe (default) or a torch linear head
for classification tasks, ridge regression for a regression task; and the probe experiment over
label fractions and seeds.

Features come from :mod:`crema.eval.features`; the rows and label-fraction subsets from
:mod:`crema.eval.splits`; metrics from :mod:`crema.eval.metrics`.
"""
from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from ..config import SELECT_C
from ..errors import CremaError
from . import metrics
from .features import encoder_features, rows_sha256
from .results import ResultRecord
from .splits import TaskSplit, fraction_subset

DEFAULT_CS: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0)  # inverse L2 strengths tried on validation
CV_FOLDS = 5               # folds of the training records for select_c="cv" (fit_logistic_probe)
# ridge penalties tried on validation (features standardised, so they scale with the training rows)
DEFAULT_ALPHAS: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0, 100000.0)
DETERMINISTIC_PROBES = ("logistic", "ridge")  # the same rows give the same fit


# ----------------------------------------------------------------------------- probes

@dataclass
class LogisticProbe:
    """Standardised features -> one L2 logistic regression per class (one-vs-rest).

    A class that is constant in the training rows cannot be fitted; it predicts its training
    frequency (0 or 1) and is listed in ``constant``.
    """

    scaler: StandardScaler
    models: list[LogisticRegression | None]
    constant: dict[int, float] = field(default_factory=dict)
    C: float = 1.0

    def as_linear(self) -> tuple[np.ndarray, np.ndarray]:
        """The probe as one linear map on raw features: ``(weight (K, D), bias (K,))`` with
        ``sigmoid(x @ weight.T + bias)`` equal to :meth:`predict_proba` (the scaler folded in;
        a constant class gets zero weights and a bias of +-20, a probability of 0 or 1)."""
        mean = self.scaler.mean_
        scale = np.where(self.scaler.scale_ > 0, self.scaler.scale_, 1.0)
        weight = np.zeros((len(self.models), len(mean)))
        bias = np.zeros(len(self.models))
        for k, model in enumerate(self.models):
            if model is None:
                bias[k] = 20.0 if self.constant[k] >= 0.5 else -20.0
                continue
            weight[k] = model.coef_[0] / scale
            bias[k] = model.intercept_[0] - float(weight[k] @ mean)
        return weight, bias

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """``(n, D)`` features -> ``(n, K)`` probabilities."""
        z = self.scaler.transform(np.asarray(x, dtype=np.float64))
        out = np.empty((len(z), len(self.models)))
        for k, model in enumerate(self.models):
            out[:, k] = self.constant[k] if model is None else model.predict_proba(z)[:, 1]
        return out


def fit_logistic(x_train: np.ndarray, y_train: np.ndarray, C: float, seed: int = 0,
                 max_iter: int = 1000) -> LogisticProbe:
    """The logistic probe at one ``C``: features standardised on ``x_train``, then one L2 logistic
    regression per class (one-vs-rest). Every logistic probe of the library is fitted here
    (:func:`fit_logistic_probe`, :func:`crema.eval.selection.validation_probe`).

    Args:
        x_train: ``(n, D)`` features; y_train: ``(n, K)`` labels (> 0.5 is positive).
        C: inverse L2 strength; seed: the regressions' ``random_state``.
    """
    x = np.asarray(x_train, dtype=np.float64)
    y = (np.asarray(y_train) > 0.5).astype(int)
    scaler = StandardScaler().fit(x)
    z = scaler.transform(x)
    models: list[LogisticRegression | None] = []
    constant: dict[int, float] = {}
    for k in range(y.shape[1]):
        col = y[:, k]
        if col.min() == col.max():
            models.append(None)
            constant[k] = float(col[0]) if len(col) else 0.0
            continue
        model = LogisticRegression(C=C, max_iter=max_iter, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # the C grid includes weak penalties
            model.fit(z, col)
        models.append(model)
    return LogisticProbe(scaler=scaler, models=models, constant=constant, C=C)


def fit_logistic_probe(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                       Cs: Sequence[float] = DEFAULT_CS, seed: int = 0, max_iter: int = 1000, select_c: str = "val",
                       groups: np.ndarray | None = None) -> tuple[LogisticProbe, dict]:
    """Fit a one-vs-rest logistic probe at the ``C`` of the grid that ranks best.

    Args:
        x_train: ``(n, D)`` features; y_train: ``(n, K)`` 0/1 labels.
        x_val, y_val: the validation fold (``select_c="val"``: also used to pick ``C``; later
            thresholds).
        Cs: grid of inverse regularisation strengths.
        select_c: ``"val"``: macro AUROC on the validation rows (the default protocol);
            ``"cv"``: mean macro AUROC over :data:`CV_FOLDS` folds of the training rows
            (:func:`cross_validate_c`), for a validation set too small to rank ``C`` (a few
            dozen records: many features then overfit at a weak penalty that ranked first by a
            record or two). Falls back to ``"val"`` when no fold has both outcomes of a class.
        groups: ``(n,)`` record keys of the training rows (``"cv"``: a record's windows stay in
            one fold); default one group per row.

    Returns:
        the probe and ``{"C": chosen, "selected_by": "val" | "cv", "val_auroc": {C: macro AUROC}}``
        (with ``"cv_auroc": {C: mean}`` for ``"cv"``).
    """
    if select_c not in SELECT_C:
        raise CremaError(f"unknown C selection {select_c!r}; choose from {', '.join(SELECT_C)}")
    # one BLAS thread: these fits are small, and threaded OpenBLAS on a busy machine spins
    # (15 fits of 51 x 32 features: 3.09 s with 2 threads, 0.10 s with 1, on 2 shared cores)
    with threadpool_limits(1, user_api="blas"):
        fits = {float(C): fit_logistic(x_train, y_train, C, seed, max_iter) for C in Cs}
        cv = _cv_scores(x_train, y_train, groups, Cs, seed, max_iter) if select_c == "cv" else None
    scores = {}
    for C, probe in fits.items():
        score = metrics.auroc(y_val, probe.predict_proba(x_val)).macro
        scores[C] = None if not np.isfinite(score) else float(score)
    if cv is not None:
        chosen = best_c(cv)
        cv_scores = {C: float(v) if np.isfinite(v) else None for C, v in cv.items()}  # never NaN in a result
        return fits[chosen], {"C": chosen, "selected_by": "cv", "cv_auroc": cv_scores, "val_auroc": scores}
    ranked = {C: -np.inf if v is None else v for C, v in scores.items()}
    chosen = max(ranked, key=ranked.get)  # the first of the grid on ties, as before
    return fits[chosen], {"C": chosen, "selected_by": "val", "val_auroc": scores}


def _cv_scores(x: np.ndarray, y: np.ndarray, groups: np.ndarray | None, Cs: Sequence[float], seed: int,
               max_iter: int) -> dict[float, float] | None:
    """:func:`cross_validate_c` over :func:`group_folds` of the training rows; None when no C
    gets a defined score (too few labelled records for the folds)."""
    folds = group_folds(np.arange(len(x)) if groups is None else groups, CV_FOLDS)
    if len(np.unique(folds)) < 2:
        return None
    cv = cross_validate_c(x, y, folds, Cs, seed, max_iter)
    return cv if any(np.isfinite(v) for v in cv.values()) else None


def group_folds(groups: np.ndarray, k: int) -> np.ndarray:
    """``(n,)`` fold ``0..k-1`` of each row from its group key (CRC-32 of its text): the same
    key always gets the same fold, whatever the order or the other rows."""
    keys = np.asarray(groups).astype(str)
    codes = {key: zlib.crc32(key.encode()) % k for key in np.unique(keys)}
    return np.array([codes[key] for key in keys], dtype=np.int64)


def cross_validate_c(x: np.ndarray, y: np.ndarray, folds: np.ndarray, Cs: Sequence[float] = DEFAULT_CS,
                     seed: int = 0, max_iter: int = 1000) -> dict[float, float]:
    """Leave-one-fold-out over the folds present: ``{C: mean macro AUROC of the held-out folds}``.

    Args:
        x: ``(n, D)`` training features; y: ``(n, K)`` 0/1 labels; folds: ``(n,)`` their folds
            (at least two distinct).

    A held-out fold whose macro AUROC is undefined (no class with both outcomes) is left out of
    the mean; NaN when that holds for every fold.
    """
    held_out = np.unique(folds)
    if len(held_out) < 2:
        raise CremaError(f"cross-validation needs at least two training folds, got {held_out.tolist()}")
    cv = {}
    for C in Cs:
        values = []
        for fold in held_out:
            fit_rows, held = folds != fold, folds == fold
            probe = fit_logistic(x[fit_rows], y[fit_rows], C, seed, max_iter)
            values.append(metrics.auroc(y[held], probe.predict_proba(x[held])).macro)
        finite = [v for v in values if np.isfinite(v)]
        cv[float(C)] = float(np.mean(finite)) if finite else float("nan")
    return cv


def best_c(cv: dict[float, float]) -> float:
    """The C with the highest cross-validated AUROC (the first of the grid on ties; NaN never wins)."""
    scored = {c: v for c, v in cv.items() if np.isfinite(v)}
    if not scored:
        raise CremaError("no C has a defined cross-validated AUROC (too few labels in the training folds)")
    return max(scored, key=scored.get)


class TorchLinearProbe:
    """A linear head trained with BCE in torch on standardised features (full batch, AdamW),
    keeping the epoch with the best validation macro AUROC."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, linear: torch.nn.Linear):
        self.mean, self.std, self.linear = mean, std, linear

    @torch.inference_mode()
    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        z = torch.as_tensor((np.asarray(x, dtype=np.float32) - self.mean) / self.std)
        return torch.sigmoid(self.linear(z)).numpy().astype(np.float64)


def fit_torch_probe(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                    epochs: int = 200, lr: float = 1e-2, weight_decay: float = 1e-3,
                    seed: int = 0) -> tuple[TorchLinearProbe, dict]:
    """Fit a torch linear head; returns the probe at its best validation epoch and a summary."""
    torch.manual_seed(seed)
    x_train = np.asarray(x_train, dtype=np.float32)
    mean = x_train.mean(0)
    std = np.where(x_train.std(0) > 1e-6, x_train.std(0), 1.0).astype(np.float32)
    z = torch.as_tensor((x_train - mean) / std)
    y = torch.as_tensor(np.asarray(y_train, dtype=np.float32))
    linear = torch.nn.Linear(z.shape[1], y.shape[1])
    optimiser = torch.optim.AdamW(linear.parameters(), lr=lr, weight_decay=weight_decay)
    probe = TorchLinearProbe(mean, std, linear)
    best_state, best_score, best_epoch = None, -np.inf, -1
    for epoch in range(epochs):
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(linear(z), y)
        loss.backward()
        optimiser.step()
        score = metrics.auroc(y_val, probe.predict_proba(x_val)).macro
        if best_state is None or (np.isfinite(score) and score > best_score):
            best_state = {k: v.clone() for k, v in linear.state_dict().items()}
            best_score, best_epoch = score, epoch
    linear.load_state_dict(best_state)
    return probe, {"best_epoch": best_epoch, "val_auroc": None if not np.isfinite(best_score) else float(best_score)}


@dataclass
class RidgeProbe:
    """Standardised features -> ridge regression of one target (the probe of a regression task)."""

    scaler: StandardScaler
    model: Ridge
    alpha: float = 1.0

    def predict(self, x: np.ndarray) -> np.ndarray:
        """``(n, D)`` features -> ``(n, 1)`` predicted values."""
        z = self.scaler.transform(np.asarray(x, dtype=np.float64))
        return self.model.predict(z).reshape(-1, 1)

    def as_linear(self) -> tuple[np.ndarray, np.ndarray]:
        """The probe as one linear map on raw features: ``(weight (1, D), bias (1,))`` with
        ``x @ weight.T + bias`` equal to :meth:`predict` (the scaler folded in)."""
        scale = np.where(self.scaler.scale_ > 0, self.scaler.scale_, 1.0)
        weight = np.asarray(self.model.coef_, dtype=np.float64).reshape(1, -1) / scale
        bias = np.asarray(self.model.intercept_, dtype=np.float64).reshape(1) - weight @ self.scaler.mean_
        return weight, bias


def fit_ridge_probe(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                    alphas: Sequence[float] = DEFAULT_ALPHAS, seed: int = 0) -> tuple[RidgeProbe, dict]:
    """Fit a ridge probe of one target, choosing ``alpha`` by the mean absolute error on validation
    (the regression task's headline metric).

    Args:
        x_train: ``(n, D)`` features; y_train: ``(n, 1)`` values.
        x_val, y_val: the validation fold, used only to pick ``alpha``.

    Returns:
        the probe with the best ``alpha`` and ``{"alpha": best, "val_mae": {alpha: MAE}}``.
    """
    scaler = StandardScaler().fit(np.asarray(x_train, dtype=np.float64))
    z_train = scaler.transform(np.asarray(x_train, dtype=np.float64))
    target = np.asarray(y_train, dtype=np.float64).reshape(-1)
    best, best_mae, scores = None, np.inf, {}
    with threadpool_limits(1, user_api="blas"):  # small fits: one thread, as for the logistic probe
        for alpha in alphas:
            probe = RidgeProbe(scaler, Ridge(alpha=float(alpha)).fit(z_train, target), float(alpha))
            error = metrics.mae(y_val, probe.predict(x_val))
            scores[float(alpha)] = float(error)
            if best is None or error < best_mae:
                best, best_mae = probe, error
    return best, {"alpha": best.alpha, "val_mae": scores}


def probe_kind(kind: str, task_type: str) -> str:
    """The probe a task gets: ridge regression for a regression task (only the default
    ``logistic`` may be asked for there), else ``kind``."""
    if task_type != "regression":
        return kind
    if kind not in ("logistic", "ridge"):
        raise CremaError(f"a regression task is probed with ridge regression; --head {kind} is for classification")
    return "ridge"


def check_select_c(select_c: str, kind: str, task: str, task_type: str) -> None:
    """Refuse, before any work, a C selection the probe of ``task`` cannot do: ``cv`` is for the
    logistic probe of a classification task (a regression task's ridge probe and the torch head
    pick on validation)."""
    if select_c not in SELECT_C:
        raise CremaError(f"unknown C selection {select_c!r}; choose from {', '.join(SELECT_C)}")
    if select_c != "val" and probe_kind(kind, task_type) != "logistic":
        why = f"task {task!r} is a regression task" if task_type == "regression" else f"--head {kind} is not"
        raise CremaError(f"--select-c {select_c} is for the logistic probe of a classification task; {why}")


def fit_probe(kind: str, x_train, y_train, x_val, y_val, seed: int = 0, **kwargs):
    """``kind`` ``"logistic"`` (default protocol), ``"linear"`` (torch head) or ``"ridge"``
    (a regression target; ``Cs`` is then ignored)."""
    if kind == "logistic":
        return fit_logistic_probe(x_train, y_train, x_val, y_val, seed=seed, **kwargs)
    if kwargs.pop("select_c", "val") != "val":
        raise CremaError(f"choosing C by cross-validation (select_c cv) is for the logistic probe, not {kind!r}")
    kwargs.pop("groups", None)
    if kind == "ridge":
        kwargs.pop("Cs", None)
        return fit_ridge_probe(x_train, y_train, x_val, y_val, seed=seed, **kwargs)
    if kind == "linear":
        return fit_torch_probe(x_train, y_train, x_val, y_val, seed=seed, **kwargs)
    raise ValueError(f"unknown probe kind {kind!r}; choose 'logistic', 'linear' or 'ridge'")


# ----------------------------------------------------------------------------- the experiment

@dataclass
class ProbeFeatures:
    """Frozen features of the three parts of a :class:`TaskSplit` (``(n, D)`` float32 each)."""

    split: TaskSplit
    x: dict[str, np.ndarray]


def probe_features(encoder, corpus, split: TaskSplit, crop: int | None, cache_dir=None, weights_sha: str | None = None,
                   corpus_sha: str | None = None, batch_size: int = 64, device="cpu",
                   progress: bool = True) -> ProbeFeatures:
    """Features of the train, val and test rows of ``split``.

    They are computed (and cached, see :mod:`crema.eval.features`) once for every row of the
    corpus, so every task and every held-out source probed on that corpus reuses one cache file.
    """
    every_row = np.arange(len(corpus), dtype=np.int64)
    feats = encoder_features(encoder, corpus, every_row, crop, cache_dir, weights_sha, corpus_sha,
                             batch_size=batch_size, device=device, progress=progress)
    x = {part: feats[rows] for part, rows in split.rows.items()}
    return ProbeFeatures(split, x)


def evaluate_probe(probe, feats: ProbeFeatures, x_test: np.ndarray | None = None, thresholds: np.ndarray | None = None,
                   n_bootstrap: int = 1000) -> dict:
    """Record-level test metrics of a fitted probe; thresholds default to those picked on
    validation. ``x_test`` replaces the test features (e.g. features of corrupted inputs).
    A regression probe is scored with MAE and Pearson's r (:func:`metrics.evaluate_regression`)."""
    split = feats.split
    x = feats.x["test"] if x_test is None else x_test
    if split.regression:
        y_test, p_test = split.record_level(probe.predict(x), "test")
        return metrics.evaluate_regression(y_test, p_test, split.classes[0], n_bootstrap, seed=0, keep_replicates=True)
    if thresholds is None:
        thresholds = metrics.pick_thresholds(*split.record_level(probe.predict_proba(feats.x["val"]), "val"))
    y_test, p_test = split.record_level(probe.predict_proba(x), "test")
    return metrics.evaluate(y_test, p_test, split.classes, thresholds, n_bootstrap, seed=0, keep_replicates=True,
                            task_type=split.task_type)


def fit_probe_on_fraction(feats: ProbeFeatures, fraction: float, seed: int, kind: str = "logistic",
                          **probe_kwargs) -> tuple[object, dict]:
    """Fit a probe on a seeded label fraction of the training rows; returns ``(probe, info)``
    with ``n_train`` (windows), the selected rows' sha256 and the probe's own summary. A regression
    task is fitted with ridge regression (:func:`probe_kind`)."""
    split = feats.split
    kind = probe_kind(kind, split.task_type)
    keep = fraction_subset(split.strata("train"), fraction, seed, groups=split.keys["train"])
    if probe_kwargs.get("select_c", "val") == "cv":
        probe_kwargs = {**probe_kwargs, "groups": split.keys["train"][keep]}  # a record's windows in one fold
    probe, fit_info = fit_probe(kind, feats.x["train"][keep], split.y["train"][keep], feats.x["val"],
                                split.y["val"], seed=seed, **probe_kwargs)
    return probe, {"n_train": int(len(keep)), "train_rows_sha256": rows_sha256(split.rows["train"][keep]),
                   "probe": fit_info}


def seeds_for(fraction: float, seeds: Sequence[int], kind: str) -> list[int]:
    """The logistic and ridge probes are deterministic, so at fraction 1 (no subset to draw) every
    seed would repeat the same fit: run only the first seed there."""
    return list(seeds[:1]) if (fraction >= 1 and kind in DETERMINISTIC_PROBES) else list(seeds)


def probe_experiment(feats: ProbeFeatures, fractions: Sequence[float], seeds: Sequence[int], *, method: str,
                     data_sha256: str, config: dict, kind: str = "logistic", n_bootstrap: int = 1000,
                     step_prefix: str = "probe", progress: bool = True, **probe_kwargs) -> list[dict]:
    """Probe every label fraction with every seed; returns ``results.json`` entries.
    ``probe_kwargs`` go to the probe's fit function (e.g. ``Cs`` for the logistic probe)."""
    split = feats.split
    kind = probe_kind(kind, split.task_type)
    jobs = [(f, s) for f in fractions for s in seeds_for(f, seeds, kind)]
    results = []
    for fraction, seed in tqdm(jobs, desc=f"probe {method}", disable=not progress, leave=False):
        probe, info = fit_probe_on_fraction(feats, fraction, seed, kind, **probe_kwargs)
        evaluation = evaluate_probe(probe, feats, n_bootstrap=n_bootstrap)
        results.append(ResultRecord.from_evaluation(
            step=f"{step_prefix}/f{fraction:g}/s{seed}", method=method, protocol="probe", task=split.task,
            experiment="leave_source_out" if split.holdout_source else "label_fraction", seed=seed,
            evaluation=evaluation, config={**config, "probe": kind, "fraction": fraction},
            data_sha256=data_sha256, train_rows_sha256=info["train_rows_sha256"],
            test_rows_sha256=rows_sha256(split.rows["test"]), n_train=info["n_train"],
            n_val=int(len(split.rows["val"])), fraction=fraction, holdout_source=split.holdout_source,
            extra={"probe_fit": info["probe"]}).to_dict())
    return results
