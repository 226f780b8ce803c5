"""Results combined over seeds: one :class:`Summary` per method, setting and metric, the report's
tables, and the paired-difference tables (:mod:`crema.eval.paired`).

A classification task is summarised by its macro AUROC, a regression task by its MAE and its
Pearson's r (:data:`crema.eval.metrics.TASK_METRICS`). The mean is taken over seeds (and
pretraining seeds); the interval is the 95% percentile interval of the seed-averaged bootstrap
replicates (the test records are resampled identically for every seed, so replicate ``r`` of each
seed is averaged).
"""
from __future__ import annotations

import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np

from . import metrics
from .metrics import METRICS, metric_replicates, metric_value, result_metrics
from .paired import MEAN_OF_SOURCES, REFERENCES, PairedDifference, paired_differences

GROUP_FIELDS = ("task", "experiment", "protocol", "method", "fraction", "holdout_source", "corruption", "severity")

@dataclass
class Summary:
    """One metric of one method at one setting, combined over seeds; ``key`` holds the
    :data:`GROUP_FIELDS` and ``metric`` (``auroc``, ``mae`` or ``pearson``)."""

    key: dict[str, Any]
    mean: float
    low: float
    high: float
    sd: float
    seeds: list[int]              # distinct seeds (label subset, probe or fine-tuning)
    pretrain_seeds: list[int]     # distinct pretraining seeds (empty: none recorded or not pretrained)
    f1_mean: float
    per_class: dict[str, float]
    skipped: list[str]
    n_test: int

    @property
    def metric(self) -> str:
        return self.key.get("metric", "auroc")

    def to_dict(self) -> dict:
        clean = lambda v: None if v is None or not np.isfinite(v) else round(float(v), 6)  # noqa: E731
        m = self.metric
        out = {**self.key, f"{m}_mean": clean(self.mean), f"{m}_ci95": [clean(self.low), clean(self.high)],
               f"{m}_sd_over_seeds": clean(self.sd), "seeds": self.seeds, "pretrain_seeds": self.pretrain_seeds}
        if m == "auroc":
            out.update({"f1_mean": clean(self.f1_mean),
                        "per_class_auroc": {k: clean(v) for k, v in self.per_class.items()}, "skipped": self.skipped})
        return {**out, "n_test": self.n_test}


def _nan(v) -> float:
    return float("nan") if v is None else float(v)


def _combined_interval(group: list[dict], metric: str) -> tuple[float, float]:
    reps = [metric_replicates(r, metric) for r in group]
    if reps and all(len(x) == len(reps[0]) and len(x) > 0 for x in reps):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a replicate with no defined class in any seed
            return metrics.percentile_interval(np.nanmean(np.stack(reps), axis=0))
    if len(group) == 1:
        ci = (group[0].get(metric) or {}).get("ci95") or [None, None]
        return _nan(ci[0]), _nan(ci[1])
    return float("nan"), float("nan")


def _summary(key: dict, group: list[dict], metric: str) -> Summary:
    """One metric of a group of results that differ only in their seeds."""
    values = np.array([metric_value(r, metric) for r in group])
    finite = values[np.isfinite(values)]
    per_class, skipped, f1s = {}, [], np.array([np.nan])
    if metric == "auroc":
        f1s = np.array([_nan((r.get("f1") or {}).get("macro")) for r in group])
        classes = sorted({c for r in group for c in r["auroc"]["per_class"]})
        per_class = {c: float(np.mean([r["auroc"]["per_class"][c] for r in group if c in r["auroc"]["per_class"]]))
                     for c in classes}
        skipped = sorted({f"{c} ({why})" for r in group for c, why in r["auroc"]["skipped"].items()})
    low, high = _combined_interval(group, metric)
    return Summary(
        key={**key, "metric": metric},
        mean=float(finite.mean()) if finite.size else float("nan"),
        low=low, high=high,
        sd=float(finite.std(ddof=1)) if finite.size > 1 else float("nan"),
        seeds=sorted({int(r["seed"]) for r in group}),
        pretrain_seeds=sorted({int(r["pretrain_seed"]) for r in group if r.get("pretrain_seed") is not None}),
        f1_mean=float(np.nanmean(f1s)) if np.isfinite(f1s).any() else float("nan"),
        per_class=per_class, skipped=skipped, n_test=int(group[0]["n_test"]))


def summarise(results: Iterable[dict]) -> list[Summary]:
    """Group results by method and setting (:data:`GROUP_FIELDS`) and combine their seeds: one
    :class:`Summary` per group and metric of its task type."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        groups[tuple(r.get(f) for f in GROUP_FIELDS)].append(r)
    return [_summary(dict(zip(GROUP_FIELDS, key)), group, metric)
            for key, group in groups.items() for metric in result_metrics(group[0])]


EXPERIMENT_ORDER = {"label_fraction": 0, "leave_source_out": 1, "corruption": 2}
METHOD_ORDER = ("crema", "mae", "contrastive", "random_sit", "random_kernels", "supervised_sit", "supervised_resnet1d")


def method_rank(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def setting_label(key: dict) -> str:
    if key["experiment"] == "label_fraction":
        return f"{100 * key['fraction']:g}% labels"
    if key["experiment"] == "leave_source_out":
        return f"held out: {key['holdout_source']}"
    if key["experiment"] == "corruption":
        return f"{key['corruption']}, severity {key['severity']}"
    return key["experiment"]


def fmt_value(v: float, digits: int = 3) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def summary_order(s: Summary) -> tuple:
    k = s.key
    return (k["task"], metric_rank(s.metric), EXPERIMENT_ORDER.get(k["experiment"], 9), k["holdout_source"] or "",
            k["corruption"] or "", k["severity"] or 0, k["fraction"] or 0, k["protocol"], method_rank(k["method"]))


def metric_rank(metric: str) -> int:
    return list(METRICS).index(metric) if metric in METRICS else len(METRICS)


def metric_label(metric: str) -> str:
    """``macro AUROC``, ``MAE (lower is better)``, ``Pearson r``: how tables name a metric."""
    m = METRICS[metric]
    return m.label if m.higher_is_better else f"{m.label} (lower is better)"


def summary_table(summaries: Sequence[Summary]) -> tuple[list[str], list[list[str]]]:
    """Every method at every setting and metric, one row each (the report's appendix and
    ``summary.json``); macro F1 and skipped classes belong to the AUROC rows."""
    header = ["task", "setting", "protocol", "method", "metric", "mean", "95% CI", "sd (seeds)", "n seeds",
              "pretraining seeds", "macro F1", "n test", "classes skipped"]
    rows = []
    for s in sorted(summaries, key=summary_order):
        rows.append([s.key["task"], setting_label(s.key), s.key["protocol"], s.key["method"],
                     METRICS[s.metric].label, fmt_value(s.mean),
                     f"[{fmt_value(s.low)}, {fmt_value(s.high)}]", fmt_value(s.sd), str(len(s.seeds)),
                     ", ".join(map(str, s.pretrain_seeds)) or "-", fmt_value(s.f1_mean), str(s.n_test),
                     ", ".join(s.skipped) or "-"])
    return header, rows


def pivot_table(summaries: Sequence[Summary], task: str, experiment: str, column: str,
                with_interval: bool = True, metric: str = "auroc") -> tuple[list[str], list[list[str]]] | None:
    """Methods as rows, one setting per column (``fraction``, ``holdout_source`` or ``severity``);
    cells are ``mean [low, high]`` of ``metric``. Corruption tables get one row per corruption."""
    rows_in = [s for s in summaries if s.key["task"] == task and s.key["experiment"] == experiment
               and s.metric == metric]
    if not rows_in:
        return None
    columns = sorted({s.key[column] for s in rows_in}, key=lambda v: (v is None, v))
    row_keys = sorted({(s.key["protocol"], s.key["method"], s.key["corruption"] or "") for s in rows_in},
                      key=lambda r: (r[2], r[0] != "probe", method_rank(r[1])))
    cell = {(s.key["protocol"], s.key["method"], s.key["corruption"] or "", s.key[column]): s for s in rows_in}
    label = {"fraction": lambda v: f"{100 * v:g}% labels", "holdout_source": str,
             "severity": lambda v: f"severity {v}"}[column]
    by_corruption = experiment == "corruption"
    header = (["corruption"] if by_corruption else []) + ["protocol", "method"] + [label(c) for c in columns]
    rows = []
    for protocol, method, corruption in row_keys:
        cells = []
        for c in columns:
            s = cell.get((protocol, method, corruption, c))
            if s is None:
                cells.append("")
            elif with_interval:
                cells.append(f"{fmt_value(s.mean)} [{fmt_value(s.low)}, {fmt_value(s.high)}]")
            else:
                cells.append(fmt_value(s.mean))
        rows.append(([corruption] if by_corruption else []) + [protocol, method] + cells)
    return header, rows


def report_tables(summaries: Sequence[Summary]) -> list[tuple[str, list[str], list[list[str]]]]:
    """``(title, header, rows)`` of the compact tables, per task, metric and experiment."""
    tables = []
    for task in sorted({s.key["task"] for s in summaries}):
        for metric in sorted({s.metric for s in summaries if s.key["task"] == task}, key=metric_rank):
            label = metric_label(metric)
            for experiment, column, title, interval in (
                    ("label_fraction", "fraction", f"{label} by label fraction", True),
                    ("leave_source_out", "holdout_source", f"{label} on each held-out source", True),
                    ("corruption", "severity", f"{label} by corruption severity (0 = clean)", False)):
                table = pivot_table(summaries, task, experiment, column, interval, metric)
                if table is not None:
                    tables.append((f"{task}: {title}", *table))
    return tables


def _paired_order(d: PairedDifference) -> tuple:
    k = d.setting
    references = REFERENCES.get(k["protocol"], ())
    return (metric_rank(d.metric), EXPERIMENT_ORDER.get(k["experiment"], 9), k["protocol"] != "probe",
            references.index(d.reference) if d.reference in references else len(references),
            k["holdout_source"] == MEAN_OF_SOURCES, k["holdout_source"] or "", k["fraction"] or 0,
            method_rank(d.method))


def paired_tables(results: Iterable[dict], references: Sequence[str] = ()
                  ) -> list[tuple[str, list[str], list[list[str]]]]:
    """``(title, header, rows)`` per task and metric: each method minus MAE, minus an encoder that
    learned nothing, minus the other baselines and minus ``references``, paired on seeds and test
    records (see :mod:`crema.eval.paired`); "ahead on" counts the pretraining seeds where the
    method is better (a lower MAE, a higher AUROC or r)."""
    differences = paired_differences(results, references)
    header = ["setting", "protocol", "method", "minus", "difference [95% CI]", "per pretraining seed", "ahead on"]
    tables = []
    for task in sorted({d.setting["task"] for d in differences}):
        for metric in sorted({d.metric for d in differences if d.setting["task"] == task}, key=metric_rank):
            chosen = sorted((d for d in differences if d.setting["task"] == task and d.metric == metric),
                            key=_paired_order)
            rows = [[setting_label(d.setting), d.setting["protocol"], d.method, d.reference,
                     f"{fmt_value(d.difference)} [{fmt_value(d.low)}, {fmt_value(d.high)}]",
                     ", ".join(fmt_value(v) if k is None else f"{k}: {fmt_value(v)}"
                               for k, v in d.per_pretrain_seed.items()),
                     d.wins] for d in chosen]
            tables.append((f"{task}: paired differences in {metric_label(metric)}", header, rows))
    return tables


def with_paired(tables: list[tuple], paired: list[tuple]) -> list[tuple]:
    """The compact tables with each task's paired differences after that task's last table."""
    out = []
    for i, table in enumerate(tables):
        out.append(table)
        task = table[0].split(":")[0]
        if i + 1 == len(tables) or tables[i + 1][0].split(":")[0] != task:
            out += [p for p in paired if p[0].split(":")[0] == task]
    return out
