"""Test-time corruptions at graded severities, and AUROC-versus-severity evaluation.

Corruptions act on preprocessed windows (z-scored units, at the corpus rate), after the model's
training, to measure how a probe or a fine-tuned classifier holds up under noise and missing
leads it never saw labelled. Severity 0 is the clean input; 1-5 grow. Each record gets its own
random stream, seeded by ``(seed, corruption, corpus row)``, which is the same at every severity:
additive corruptions are then one fixed disturbance scaled up, so a higher severity always moves
the signal further. Results do not depend on the batch size.

Gaussian noise, baseline wander, mains hum, amplitude scaling and missing leads are the
functions of :mod:`crema.data.augment` (shared with training augmentation); electrode-motion
bursts are defined here.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, Sequence

import numpy as np

from ..data import augment
from ..model.inference import DEFAULT_BATCH
from ..errors import CremaError
from ..runtime import resolve_device
from . import metrics
from .features import encoder_features, predict_proba

N_SEVERITIES = 5
MOTION_BURSTS = 3                 # bursts per record
MOTION_DURATION_S = (0.3, 1.2)    # each burst lasts this long


def electrode_motion(x: np.ndarray, rng: np.random.Generator, severity: float, fs: float = 250.0) -> np.ndarray:
    """Electrode-motion-like bursts: a few short, large, slow excursions (as when an electrode
    moves on the skin), shared by all leads with a random gain per lead.

    Each burst is a smoothed random walk under a Hann window, peak amplitude ``severity``
    (z-scored units), lasting 0.3-1.2 s at a random time. ``x``: ``(12, T)``; returns float32.
    """
    x = np.asarray(x, dtype=np.float32)
    if severity <= 0:
        return x.copy()
    t = x.shape[-1]
    artefact = np.zeros(t)
    for _ in range(MOTION_BURSTS):
        length = int(min(t, max(4, rng.uniform(*MOTION_DURATION_S) * fs)))
        start = int(rng.integers(0, t - length + 1))
        walk = np.cumsum(rng.normal(size=length))
        walk -= walk.mean()
        burst = np.hanning(length) * walk
        artefact[start:start + length] += burst / max(np.abs(burst).max(), 1e-12)
    gains = rng.uniform(-1.0, 1.0, size=x.shape[:-1] + (1,))
    return (x + severity * gains * artefact).astype(np.float32)


@dataclass(frozen=True)
class Corruption:
    """A named corruption: its parameter at severities 1-5 and how to apply it to one ECG."""

    name: str
    levels: tuple[float, ...]     # the parameter at severity 1..5
    unit: str                     # what the parameter means
    apply: Callable[[np.ndarray, np.ndarray, np.random.Generator, float, float], tuple[np.ndarray, np.ndarray]]


def _additive(fn) -> Callable:
    return lambda x, mask, rng, level, fs: (fn(x, rng, level), mask)


def _additive_fs(fn) -> Callable:
    return lambda x, mask, rng, level, fs: (fn(x, rng, level, fs=fs), mask)


CORRUPTIONS: dict[str, Corruption] = {c.name: c for c in (
    Corruption("gaussian_noise", (0.05, 0.1, 0.2, 0.4, 0.8), "noise std (z units)",
               _additive(augment.gaussian_noise)),
    Corruption("baseline_wander", (0.25, 0.5, 1.0, 2.0, 4.0), "amplitude of each of 2 drift sines, up to (z units)",
               _additive_fs(augment.baseline_wander)),
    Corruption("powerline_50hz", (0.05, 0.1, 0.2, 0.4, 0.8), "50 Hz amplitude (z units)",
               lambda x, mask, rng, level, fs: (augment.powerline_hum(x, rng, level, fs=fs, hz=50.0), mask)),
    Corruption("powerline_60hz", (0.05, 0.1, 0.2, 0.4, 0.8), "60 Hz amplitude (z units)",
               lambda x, mask, rng, level, fs: (augment.powerline_hum(x, rng, level, fs=fs, hz=60.0), mask)),
    Corruption("electrode_motion", (0.5, 1.0, 2.0, 4.0, 8.0), "burst peak (z units)",
               _additive_fs(electrode_motion)),
    Corruption("missing_leads", (1, 3, 6, 9, 11), "leads removed",
               lambda x, mask, rng, level, fs: augment.missing_leads(x, mask, rng, int(level))),
    Corruption("amplitude_scale", (0.1, 0.2, 0.4, 0.6, 0.8), "scale drawn from 1 +- this, per lead",
               _additive(augment.amplitude_scale)),
)}
DEFAULT_CORRUPTIONS: tuple[str, ...] = ("gaussian_noise", "baseline_wander", "powerline_50hz", "electrode_motion",
                                        "missing_leads", "amplitude_scale")


def get_corruption(name: str) -> Corruption:
    if name not in CORRUPTIONS:
        raise CremaError(f"unknown corruption {name!r}; choose from {', '.join(CORRUPTIONS)}")
    return CORRUPTIONS[name]


def record_rng(seed: int, name: str, row: int) -> np.random.Generator:
    """The random stream of one record under one corruption (independent of severity)."""
    return np.random.default_rng([int(seed), list(CORRUPTIONS).index(name), int(row)])


def corrupt(x: np.ndarray, lead_mask: np.ndarray, name: str, severity: int, fs: float, seed: int = 0,
            rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt ECGs ``(B, 12, T)`` (lead masks ``(B, 12)``) at ``severity`` 0-5.

    Args:
        rows: an id per ECG (its corpus row) that, with ``seed``, fixes its random stream;
            default ``0..B-1``.

    Returns:
        new ``(B, 12, T)`` float32 and ``(B, 12)`` bool; severity 0 returns unchanged copies.
        Absent leads stay zeros.
    """
    corruption = get_corruption(name)
    if not 0 <= severity <= len(corruption.levels):
        raise ValueError(f"severity must be 0..{len(corruption.levels)}, got {severity}")
    x = np.asarray(x, dtype=np.float32)
    mask = np.asarray(lead_mask, dtype=bool)
    if severity == 0:
        return x.copy(), mask.copy()
    rows = np.arange(len(x)) if rows is None else np.asarray(rows)
    level = corruption.levels[severity - 1]
    out_x, out_mask = np.empty_like(x), np.empty_like(mask)
    for i in range(len(x)):
        xi, mi = corruption.apply(x[i], mask[i], record_rng(seed, name, rows[i]), level, fs)
        xi = np.array(xi, dtype=np.float32)
        xi[~mi] = 0.0
        out_x[i], out_mask[i] = xi, mi
    return out_x, out_mask


def corruption_transform(name: str, severity: int, fs: float, seed: int = 0):
    """A batch transform for :func:`crema.eval.features.apply_model`."""
    get_corruption(name)

    def transform(signals: np.ndarray, lead_mask: np.ndarray, rows: np.ndarray):
        return corrupt(signals, lead_mask, name, severity, fs, seed, rows)

    return transform


def transform_key(name: str, severity: int, seed: int) -> str:
    """The feature-cache key part of a corruption (levels included, so changing them re-runs)."""
    return f"{name}:{severity}:{seed}:{get_corruption(name).levels}"


# ----------------------------------------------------------------------------- AUROC vs severity

@dataclass(frozen=True)
class SeverityGrid:
    """What a severity curve measures: which corruptions at which severities, and how each point
    is scored."""

    corruptions: tuple[str, ...] = DEFAULT_CORRUPTIONS
    severities: tuple[int, ...] = tuple(range(N_SEVERITIES + 1))  # 0 = clean
    seed: int = 0                 # with the corpus row, seeds each record's corruption stream
    n_bootstrap: int = 1000       # bootstrap resamples of the test records per point


@dataclass(frozen=True)
class Inference:
    """How test inputs go through a model. The cache fields apply to frozen-encoder features,
    which are stored under ``cache_dir`` keyed by the weights, the corpus and the corruption."""

    crop: int | None = None       # input length; None = the model's window
    batch_size: int = DEFAULT_BATCH
    device: Any = "cpu"
    progress: bool = False
    cache_dir: Any = None         # None = no feature cache
    weights_sha: str | None = None
    corpus_sha: str | None = None


def severity_curve(predict: Callable[[Callable | None, str], np.ndarray], y_and_keys: Callable[[np.ndarray], tuple],
                   grid: SeverityGrid, fs: float, classes: Sequence[str], thresholds: np.ndarray) -> list[dict]:
    """Metrics at every (corruption, severity) of ``grid``.

    Args:
        predict: ``(transform or None, cache key) -> (n, K)`` window probabilities of the test rows.
        y_and_keys: window probabilities -> record-level ``(y (R, K), probs (R, K))``.
        thresholds: F1 thresholds picked on clean validation data.

    Returns:
        dicts ``{"corruption", "severity", "level", "evaluation"}``; severity 0 (clean) is
        computed once and reported under every corruption.
    """
    def scored(transform, key):
        y, p = y_and_keys(predict(transform, key))
        return metrics.evaluate(y, p, classes, thresholds, grid.n_bootstrap, seed=0, keep_replicates=True)

    clean = None
    out = []
    for name in grid.corruptions:
        corruption = get_corruption(name)
        for severity in grid.severities:
            if severity == 0:
                clean = clean or scored(None, "")
                evaluation = clean
            else:
                evaluation = scored(corruption_transform(name, severity, fs, grid.seed),
                                    transform_key(name, severity, grid.seed))
            level = 0.0 if severity == 0 else corruption.levels[severity - 1]
            out.append({"corruption": name, "severity": int(severity), "level": level, "evaluation": evaluation})
    return out


def require_classification(split) -> None:
    """Severity curves score AUROC; refuse a regression task with one clear message (a suite
    records the step as skipped)."""
    if split.task_type == "regression":
        raise CremaError(f"task {split.task!r} is a regression task; corruption curves are measured for "
                         "classification tasks only")


def probe_severity_curve(encoder, probe, feats, corpus, grid: SeverityGrid, run: Inference) -> list[dict]:
    """AUROC vs severity for a linear probe: test features are recomputed on corrupted inputs."""
    split = feats.split
    require_classification(split)
    thresholds = metrics.pick_thresholds(*split.record_level(probe.predict_proba(feats.x["val"]), "val"))

    def predict(transform, key):
        if transform is None:
            x = feats.x["test"]
        else:
            x = encoder_features(encoder, corpus, split.rows["test"], run.crop, run.cache_dir, run.weights_sha,
                                 run.corpus_sha, transform=transform, transform_key=key, batch_size=run.batch_size,
                                 device=run.device, progress=run.progress)
        return probe.predict_proba(x)

    return severity_curve(predict, partial(split.record_level, part="test"), grid, float(corpus.preprocess.fs),
                          split.classes, thresholds)


def classifier_severity_curve(model, split, corpus, thresholds: np.ndarray, grid: SeverityGrid,
                              run: Inference) -> list[dict]:
    """AUROC vs severity for a fine-tuned classifier (``thresholds`` from its checkpoint)."""
    require_classification(split)
    device = resolve_device(run.device)

    def predict(transform, key):
        return predict_proba(model, corpus, split.rows["test"], run.crop, run.batch_size, device, transform)

    return severity_curve(predict, partial(split.record_level, part="test"), grid, float(corpus.preprocess.fs),
                          split.classes, np.asarray(thresholds))
