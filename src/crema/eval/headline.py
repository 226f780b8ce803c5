"""The one-sentence answer at the top of an own-task report: did the pretrained encoder beat the
training-free random-kernel baseline on this task?

The comparison is the cleanest one the run holds: the same linear probe on the encoder's frozen
features and on the random-kernel features, at the largest label fraction, on the same test
records and seeds, in the task's first metric (macro AUROC; MAE for a regression task), with the
paired-bootstrap interval of :mod:`crema.eval.paired`. The encoder *beat* the baseline when that
interval lies wholly on the better side of zero, *did worse than* it when it lies wholly on the
other side; otherwise it *did not clearly beat* it (ahead, within the noise) or *did not beat* it:
this test set does not tell the two apart.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .metrics import METRICS, TASK_METRICS
from .paired import PairedDifference, paired_differences
from .summary import Summary, summarise

BASELINE = "random_kernels"


def _verdict(d: PairedDifference) -> str:
    """``beat`` (the interval wholly on the better side of zero), ``did worse than`` (wholly on the
    other side), else ``did not clearly beat`` (ahead, but the interval includes zero) or ``did
    not beat``."""
    sign = 1 if METRICS[d.metric].higher_is_better else -1
    low, high = sorted((sign * d.low, sign * d.high))
    if np.isfinite(low) and low > 0:
        return "beat"
    if np.isfinite(high) and high < 0:
        return "did worse than"
    return "did not clearly beat" if sign * d.difference > 0 else "did not beat"


def _clause(d: PairedDifference, means: dict[str, float], baseline: str) -> str:
    metric = METRICS[d.metric]
    better = "" if metric.higher_is_better else ", lower is better"
    return (f"{d.method} {_verdict(d)} {baseline} ({metric.label} {means[d.method]:.3f} against "
            f"{means[BASELINE]:.3f}{better}; difference {d.difference:+.3f}, 95% CI {d.low:+.3f} to {d.high:+.3f})")


def headline(results: Sequence[dict], encoders: Sequence[str]) -> str | None:
    """One plain sentence saying whether each of ``encoders`` (method names) beat the random-kernel
    baseline with a linear probe at the largest label fraction; None when the results hold no
    such comparison for any of them (e.g. the baseline's step was skipped)."""
    if not results or not encoders:
        return None
    task = results[0]["task"]
    metric = TASK_METRICS[results[0].get("task_type") or "multilabel"][0]
    probes = [d for d in paired_differences(results)
              if d.setting["task"] == task and d.setting["experiment"] == "label_fraction"
              and d.setting["protocol"] == "probe" and d.reference == BASELINE and d.metric == metric]
    if not probes:
        return None
    fraction = max(d.setting["fraction"] for d in probes)
    chosen = {d.method: d for d in probes if d.setting["fraction"] == fraction}
    means = _means(summarise(results), task, metric, fraction)
    methods = [m for m in encoders if m in chosen and m in means]
    if not methods or BASELINE not in means:
        return None
    clauses = [_clause(chosen[m], means, "the training-free random-kernel baseline" if i == 0 else "it")
               for i, m in enumerate(methods)]
    who = "the pretrained encoder " if len(clauses) == 1 else ""
    body = " and ".join(clauses) if len(clauses) < 3 else "; ".join(clauses[:-1]) + "; and " + clauses[-1]
    return f"On {task}, with a linear probe on {100 * fraction:g}% of the training labels, {who}{body}."


def _means(summaries: list[Summary], task: str, metric: str, fraction: float) -> dict[str, float]:
    """Method -> mean ``metric`` of its linear probe at ``fraction`` (over seeds)."""
    return {s.key["method"]: s.mean for s in summaries
            if s.key["task"] == task and s.key["experiment"] == "label_fraction" and s.key["protocol"] == "probe"
            and s.key["fraction"] == fraction and s.metric == metric}
