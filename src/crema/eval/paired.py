"""Paired differences between methods: each method minus a reference on the same test records,
the same seeds and the same pretraining seeds, with a paired-bootstrap interval, for every metric of
the task (macro AUROC; a regression task's MAE and Pearson's r).

Two methods' macro AUROCs at one setting vary together (the same test records are hard for both),
so their separate 95% intervals overlap even when one is better on every resample. The paired
difference removes that shared part: the results of the two methods are matched on
``(pretrain_seed, seed)`` (a reference that no pretraining seed touches, such as a SiT trained from
scratch, matches on ``seed`` alone), and bootstrap replicate ``r`` of every result resampled the
same records (``results.json`` keeps the replicates, drawn with the same resampling seed), so the
interval is that of the mean replicate difference (:func:`crema.eval.metrics.paired_difference`).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from . import metrics
from .metrics import METRICS, metric_replicates, metric_value, result_metrics

# the references each method is compared with, per protocol: plain MAE (does the method's own idea
# help?), an encoder that learned nothing (does pretraining help at all?), for probes the
# training-free random-kernel features (is pretraining worth its cost?) and, for fine-tunes, the
# 1-D ResNet trained from scratch (would a plain supervised network do as well?)
REFERENCES: dict[str, tuple[str, ...]] = {"probe": ("mae", "random_sit", "random_kernels"),
                                          "finetune": ("mae", "supervised_sit", "supervised_resnet1d")}
NOT_COMPARED = ("random_sit", "random_kernels", "supervised_sit", "supervised_resnet1d")  # baselines
PAIRED_EXPERIMENTS = ("label_fraction", "leave_source_out")
SETTING_FIELDS = ("task", "experiment", "protocol", "fraction", "holdout_source")
MEAN_OF_SOURCES = "mean of sources"  # the holdout_source of the leave-one-source-out summary row


@dataclass(frozen=True)
class PairedDifference:
    """``metric`` of ``method`` minus that of ``reference`` at one setting, over matched result pairs."""

    setting: dict                 # task, experiment, protocol, fraction, holdout_source
    method: str
    reference: str
    difference: float             # mean over pairs of (method - reference)
    low: float                    # 95% paired-bootstrap interval
    high: float
    per_pretrain_seed: dict       # pretraining seed (None: not recorded) -> mean difference over seeds
    n_pairs: int
    metric: str = "auroc"         # a key of crema.eval.metrics.METRICS

    @property
    def wins(self) -> str:
        """Pretraining seeds on which the method is ahead (a higher AUROC or r, a lower MAE), as ``"k/n"``."""
        sign = 1 if METRICS[self.metric].higher_is_better else -1
        values = list(self.per_pretrain_seed.values())
        return f"{sum(sign * v > 0 for v in values)}/{len(values)}"

    def to_dict(self) -> dict:
        clean = lambda v: None if not np.isfinite(v) else round(float(v), 6)  # noqa: E731
        return {**self.setting, "metric": self.metric, "method": self.method, "minus": self.reference,
                "difference": clean(self.difference), "ci95": [clean(self.low), clean(self.high)],
                "per_pretrain_seed": {str(k): clean(v) for k, v in self.per_pretrain_seed.items()},
                "wins": self.wins, "n_pairs": self.n_pairs}


def _key(result: dict) -> tuple:
    return result.get("pretrain_seed"), int(result["seed"])


def _comparable(a: dict, b: dict, metric: str) -> bool:
    """Same test records, resampled the same way (else the replicates do not pair up)."""
    same_rows = a.get("test_rows_sha256") == b.get("test_rows_sha256")
    same_boot = (a.get("bootstrap") == b.get("bootstrap")
                 and len(metric_replicates(a, metric)) == len(metric_replicates(b, metric)) > 0)
    return same_rows and same_boot


def pairs(method: dict[tuple, dict], reference: dict[tuple, dict], metric: str = "auroc") -> list[tuple[dict, dict]]:
    """Results of a method and of its reference matched on ``(pretrain_seed, seed)``, or on the
    seed alone when the reference has no pretraining seed."""
    matched = []
    for key, a in sorted(method.items(), key=lambda kv: (kv[0][0] is None, kv[0])):
        b = reference.get(key) or reference.get((None, key[1]))
        if b is not None and _comparable(a, b, metric):
            matched.append((a, b))
    return matched


def mean_over_sources(per_source: Sequence[Sequence[tuple[dict, dict]]],
                      metric: str = "auroc") -> list[tuple[dict, dict]]:
    """Matched pairs of every held-out source, averaged over the sources: one pair per
    ``(pretrain_seed, seed)`` matched in every source, whose macro AUROC and bootstrap replicates
    are the means over the sources. Each source's records were resampled on their own, so
    replicate ``r`` of the mean is a resample stratified by source (one undefined in any source,
    NaN, is left out of the interval)."""
    by_key = [{_key(a): (a, b) for a, b in matched} for matched in per_source]
    common = set.intersection(*(set(keyed) for keyed in by_key)) if by_key else set()

    value_key = "macro" if metric == "auroc" else "value"

    def mean(results: list[dict]) -> dict:
        return {"pretrain_seed": results[0].get("pretrain_seed"), "seed": results[0]["seed"],
                "task_type": results[0].get("task_type"),
                metric: {value_key: float(np.mean([metric_value(r, metric) for r in results]))},
                f"bootstrap_{metric}": list(np.mean([metric_replicates(r, metric) for r in results], axis=0))}

    out = []
    for key in sorted(common, key=lambda k: (k[0] is None, k)):
        matched = [keyed[key] for keyed in by_key]
        if len({len(metric_replicates(r, metric)) for pair in matched for r in pair}) == 1:  # replicates line up
            out.append((mean([a for a, _ in matched]), mean([b for _, b in matched])))
    return out


def difference(setting: dict, method: str, reference: str, matched: Sequence[tuple[dict, dict]],
               metric: str = "auroc") -> PairedDifference:
    """The paired difference in ``metric`` over ``matched`` result pairs (at least one)."""
    a_values = np.array([metric_value(a, metric) for a, _ in matched])
    b_values = np.array([metric_value(b, metric) for _, b in matched])
    point, low, high = metrics.paired_difference(
        float(np.mean(a_values)), float(np.mean(b_values)),
        np.mean([metric_replicates(a, metric) for a, _ in matched], axis=0),
        np.mean([metric_replicates(b, metric) for _, b in matched], axis=0))
    by_seed: dict = defaultdict(list)
    for (a, _), va, vb in zip(matched, a_values, b_values):
        by_seed[a.get("pretrain_seed")].append(va - vb)
    return PairedDifference(setting, method, reference, point, low, high,
                            {k: float(np.mean(v)) for k, v in by_seed.items()}, len(matched), metric)


def _matched_pairs(methods: dict[str, dict[tuple, dict]], extra: Sequence[str] = ()
                   ) -> list[tuple[str, str, str, list]]:
    """``(metric, method, reference, matched pairs)`` of one setting's results by method, for
    each metric of the task, each method and each of its protocol's references (and ``extra``)
    it pairs with."""
    any_result = next(r for by_key in methods.values() for r in by_key.values())
    protocol = any_result["protocol"]
    out = []
    for metric in result_metrics(any_result):
        for reference in (*REFERENCES.get(protocol, ()), *extra):
            for method in sorted(methods):
                if method in NOT_COMPARED or method == reference or reference not in methods:
                    continue
                matched = pairs(methods[method], methods[reference], metric)
                if matched:
                    out.append((metric, method, reference, matched))
    return out


def paired_differences(results: Iterable[dict], references: Sequence[str] = ()) -> list[PairedDifference]:
    """Every method minus each of its :data:`REFERENCES` (and of ``references``: further method
    names, e.g. a given encoder to compare a new one with) at every label fraction and held-out
    source where both have comparable results, and over the mean of the held-out sources
    (:data:`MEAN_OF_SOURCES`, when every source pairs up), in each metric of the task
    (:func:`crema.eval.metrics.result_metrics`); baselines are references, not compared."""
    by_setting: dict[tuple, dict[str, dict[tuple, dict]]] = defaultdict(lambda: defaultdict(dict))
    for r in results:
        if r.get("experiment") in PAIRED_EXPERIMENTS:
            by_setting[tuple(r.get(f) for f in SETTING_FIELDS)][r["method"]][_key(r)] = r
    out = []
    by_sources: dict[tuple, list] = defaultdict(list)  # (task, protocol, method, reference, metric) -> per source
    n_sources: dict[tuple, int] = defaultdict(int)      # (task, protocol) -> held-out sources
    for setting_key, methods in by_setting.items():
        setting = dict(zip(SETTING_FIELDS, setting_key))
        held_out = setting["experiment"] == "leave_source_out"
        n_sources[setting["task"], setting["protocol"]] += held_out
        for metric, method, reference, matched in _matched_pairs(methods, tuple(references)):
            out.append(difference(setting, method, reference, matched, metric))
            if held_out:
                by_sources[setting["task"], setting["protocol"], method, reference, metric].append(matched)
    for (task, protocol, method, reference, metric), per_source in by_sources.items():
        matched = mean_over_sources(per_source, metric) if len(per_source) == n_sources[task, protocol] > 1 else []
        if matched:
            setting = {"task": task, "experiment": "leave_source_out", "protocol": protocol, "fraction": None,
                       "holdout_source": MEAN_OF_SOURCES}
            out.append(difference(setting, method, reference, matched, metric))
    return out
