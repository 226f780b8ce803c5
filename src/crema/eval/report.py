"""Evaluation reports: ``results.json`` -> summary tables, PNG plots, ``report.md`` and a
self-contained ``report.html`` (inline CSS, PNGs embedded as base64).

``results.json`` (written by ``crema probe``, ``crema finetune`` and ``crema evaluate``) holds
``{"kind": "crema-eval-results", "version": 1, "data": {corpus: {sha256, hash_of}}, "results": [...]}``
where every result is one trained-and-tested model at one setting with its seed, config and data
hashes (see :func:`make_result`). Seeds are combined here: the table shows the mean macro AUROC
over seeds and a 95% percentile interval of the seed-averaged bootstrap replicates (the test
records are resampled identically for every seed, so replicate ``r`` of each seed is averaged).
"""
from __future__ import annotations

import base64
import html
import json
import os
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..config import atomic_write_text, save_json
from ..errors import CremaError
from ..atomic import atomic_path
from . import metrics

RESULTS_KIND = "crema-eval-results"
RESULTS_VERSION = 1
GROUP_FIELDS = ("task", "experiment", "protocol", "method", "fraction", "holdout_source", "corruption", "severity")


# ----------------------------------------------------------------------------- results.json

def make_result(*, step: str, method: str, protocol: str, task: str, experiment: str, seed: int,
                evaluation: dict, config: dict, data_sha256: str, train_rows_sha256: str | None = None,
                test_rows_sha256: str | None = None, n_train: int | None = None, n_val: int | None = None,
                fraction: float | None = None, holdout_source: str | None = None,
                corruption: str | None = None, severity: int | None = None, extra: dict | None = None) -> dict:
    """One entry of ``results.json``.

    Args:
        evaluation: :func:`crema.eval.metrics.evaluate` output (with ``keep_replicates=True`` to
            allow seed-combined intervals).
        experiment: ``label_fraction``, ``leave_source_out`` or ``corruption``.
        data_sha256: corpus fingerprint (:func:`crema.eval.features.corpus_fingerprint`).
    """
    boot = evaluation.get("bootstrap", {})
    result = {
        "step": step, "method": method, "protocol": protocol, "task": task, "experiment": experiment,
        "fraction": fraction, "holdout_source": holdout_source, "corruption": corruption, "severity": severity,
        "seed": int(seed), "n_train": n_train, "n_val": n_val, "n_test": evaluation["n"],
        "auroc": evaluation["auroc"], "f1": evaluation["f1"],
        "bootstrap": {k: v for k, v in boot.items() if k in ("n_resamples", "seed", "method")},
        "bootstrap_auroc": [None if v is None else round(v, 4) for v in boot.get("auroc", [])],
        "data_sha256": data_sha256, "train_rows_sha256": train_rows_sha256, "test_rows_sha256": test_rows_sha256,
        "config": config,
    }
    if extra:
        result.update(extra)
    return result


def write_results(path: str | os.PathLike, results: Sequence[dict], data: dict, meta: dict | None = None) -> None:
    """Write ``results.json`` atomically, compact (it carries bootstrap replicates; the
    readable view is ``report.md``)."""
    document = {"kind": RESULTS_KIND, "version": RESULTS_VERSION, **(meta or {}), "data": data,
                "results": list(results)}
    atomic_write_text(path, json.dumps(document, separators=(",", ":")) + "\n")


def load_results(path: str | os.PathLike) -> dict:
    """Read and check a ``results.json`` (a folder holding one is accepted)."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.exists():
        raise CremaError(f"{path}: no results.json (run `crema evaluate`, `crema probe` or `crema finetune` first)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CremaError(f"{path}: not valid JSON ({exc})") from exc
    if data.get("kind") != RESULTS_KIND or not isinstance(data.get("results"), list):
        raise CremaError(f"{path}: not a CREMA results file (kind {data.get('kind')!r})")
    return data


# ----------------------------------------------------------------------------- summaries

@dataclass
class Summary:
    """Macro AUROC of one method at one setting, combined over seeds."""

    key: dict[str, Any]
    mean: float
    low: float
    high: float
    sd: float
    seeds: list[int]
    f1_mean: float
    per_class: dict[str, float]
    skipped: list[str]
    n_test: int

    def to_dict(self) -> dict:
        clean = lambda v: None if v is None or not np.isfinite(v) else round(float(v), 6)  # noqa: E731
        return {**self.key, "auroc_mean": clean(self.mean), "auroc_ci95": [clean(self.low), clean(self.high)],
                "auroc_sd_over_seeds": clean(self.sd), "seeds": self.seeds, "f1_mean": clean(self.f1_mean),
                "per_class_auroc": {k: clean(v) for k, v in self.per_class.items()}, "skipped": self.skipped,
                "n_test": self.n_test}


def _nan(v) -> float:
    return float("nan") if v is None else float(v)


def _combined_interval(group: list[dict]) -> tuple[float, float]:
    reps = [r.get("bootstrap_auroc") or [] for r in group]
    if reps and all(len(x) == len(reps[0]) and len(x) > 0 for x in reps):
        stacked = np.array([[_nan(v) for v in x] for x in reps])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a replicate with no defined class in any seed
            return metrics.percentile_interval(np.nanmean(stacked, axis=0))
    if len(group) == 1:
        ci = group[0]["auroc"].get("ci95") or [None, None]
        return _nan(ci[0]), _nan(ci[1])
    return float("nan"), float("nan")


def summarise(results: Iterable[dict]) -> list[Summary]:
    """Group results by method and setting (:data:`GROUP_FIELDS`) and combine their seeds."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in results:
        groups[tuple(r.get(f) for f in GROUP_FIELDS)].append(r)
    out = []
    for key, group in groups.items():
        values = np.array([_nan(r["auroc"]["macro"]) for r in group])
        finite = values[np.isfinite(values)]
        f1s = np.array([_nan((r.get("f1") or {}).get("macro")) for r in group])
        classes = sorted({c for r in group for c in r["auroc"]["per_class"]})
        per_class = {c: float(np.mean([r["auroc"]["per_class"][c] for r in group if c in r["auroc"]["per_class"]]))
                     for c in classes}
        skipped = sorted({f"{c} ({why})" for r in group for c, why in r["auroc"]["skipped"].items()})
        low, high = _combined_interval(group)
        out.append(Summary(
            key=dict(zip(GROUP_FIELDS, key)),
            mean=float(finite.mean()) if finite.size else float("nan"),
            low=low, high=high,
            sd=float(finite.std(ddof=1)) if finite.size > 1 else float("nan"),
            seeds=sorted(int(r["seed"]) for r in group),
            f1_mean=float(np.nanmean(f1s)) if np.isfinite(f1s).any() else float("nan"),
            per_class=per_class, skipped=skipped, n_test=int(group[0]["n_test"])))
    return out


EXPERIMENT_ORDER = {"label_fraction": 0, "leave_source_out": 1, "corruption": 2}
METHOD_ORDER = ("crema", "mae", "contrastive", "random_sit", "supervised_sit", "supervised_resnet1d")


def _method_rank(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def _setting(key: dict) -> str:
    if key["experiment"] == "label_fraction":
        return f"{100 * key['fraction']:g}% labels"
    if key["experiment"] == "leave_source_out":
        return f"held out: {key['holdout_source']}"
    if key["experiment"] == "corruption":
        return f"{key['corruption']}, severity {key['severity']}"
    return key["experiment"]


def _fmt(v: float, digits: int = 3) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def _order(s: Summary) -> tuple:
    k = s.key
    return (k["task"], EXPERIMENT_ORDER.get(k["experiment"], 9), k["holdout_source"] or "", k["corruption"] or "",
            k["severity"] or 0, k["fraction"] or 0, k["protocol"], _method_rank(k["method"]))


def summary_table(summaries: Sequence[Summary]) -> tuple[list[str], list[list[str]]]:
    """Every method at every setting, one row each (the report's appendix and ``summary.json``)."""
    header = ["task", "setting", "protocol", "method", "macro AUROC", "95% CI", "sd (seeds)", "n seeds",
              "macro F1", "n test", "classes skipped"]
    rows = []
    for s in sorted(summaries, key=_order):
        rows.append([s.key["task"], _setting(s.key), s.key["protocol"], s.key["method"], _fmt(s.mean),
                     f"[{_fmt(s.low)}, {_fmt(s.high)}]", _fmt(s.sd), str(len(s.seeds)), _fmt(s.f1_mean),
                     str(s.n_test), ", ".join(s.skipped) or "-"])
    return header, rows


def pivot_table(summaries: Sequence[Summary], task: str, experiment: str, column: str,
                with_interval: bool = True) -> tuple[list[str], list[list[str]]] | None:
    """Methods as rows, one setting per column (``fraction``, ``holdout_source`` or ``severity``);
    cells are ``mean [low, high]`` macro AUROC. Corruption tables get one row per corruption."""
    rows_in = [s for s in summaries if s.key["task"] == task and s.key["experiment"] == experiment]
    if not rows_in:
        return None
    columns = sorted({s.key[column] for s in rows_in}, key=lambda v: (v is None, v))
    row_keys = sorted({(s.key["protocol"], s.key["method"], s.key["corruption"] or "") for s in rows_in},
                      key=lambda r: (r[2], r[0] != "probe", _method_rank(r[1])))
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
                cells.append(f"{_fmt(s.mean)} [{_fmt(s.low)}, {_fmt(s.high)}]")
            else:
                cells.append(_fmt(s.mean))
        rows.append(([corruption] if by_corruption else []) + [protocol, method] + cells)
    return header, rows


def report_tables(summaries: Sequence[Summary]) -> list[tuple[str, list[str], list[list[str]]]]:
    """``(title, header, rows)`` of the compact tables, per task and experiment."""
    tables = []
    for task in sorted({s.key["task"] for s in summaries}):
        for experiment, column, title, interval in (
                ("label_fraction", "fraction", "macro AUROC by label fraction", True),
                ("leave_source_out", "holdout_source", "macro AUROC on each held-out source", True),
                ("corruption", "severity", "macro AUROC by corruption severity (0 = clean)", False)):
            table = pivot_table(summaries, task, experiment, column, interval)
            if table is not None:
                tables.append((f"{task}: {title}", *table))
    return tables


# ----------------------------------------------------------------------------- plots

PROTOCOL_STYLE = {"probe": "-", "finetune": "--"}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _colours(methods: Iterable[str]) -> dict[str, Any]:
    """One colour per method, the same in every plot of a report."""
    plt = _pyplot()
    palette = plt.get_cmap("tab10").colors
    ordered = sorted(set(methods), key=_method_rank)
    return {m: palette[i % len(palette)] for i, m in enumerate(ordered)}


def _legend_outside(fig, ax) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)


def plot_fractions(summaries: Sequence[Summary], task: str, path: Path, colours: dict) -> Path | None:
    """Macro AUROC vs label fraction: a panel per protocol, a line per method, 95% band."""
    rows = [s for s in summaries if s.key["task"] == task and s.key["experiment"] == "label_fraction"]
    if not rows:
        return None
    plt = _pyplot()
    protocols = [p for p in ("probe", "finetune") if any(s.key["protocol"] == p for s in rows)]
    fig, axes = plt.subplots(1, len(protocols), figsize=(5.2 * len(protocols), 4), squeeze=False,
                             sharey=True, sharex=True)
    fractions = sorted({100 * s.key["fraction"] for s in rows})
    for ax, protocol in zip(axes[0], protocols):
        series: dict[str, list[Summary]] = defaultdict(list)
        for s in rows:
            if s.key["protocol"] == protocol:
                series[s.key["method"]].append(s)
        methods = sorted(series, key=_method_rank)
        for i, method in enumerate(methods):
            items = sorted(series[method], key=lambda s: s.key["fraction"])
            # spread the methods a little along x so that their interval bars do not overlap
            shift = 1 + 0.04 * (i - (len(methods) - 1) / 2)
            x = [100 * s.key["fraction"] * shift for s in items]
            mean = np.array([s.mean for s in items])
            err = np.array([[m - s.low for m, s in zip(mean, items)], [s.high - m for m, s in zip(mean, items)]])
            ax.errorbar(x, mean, yerr=np.where(np.isfinite(err), err, 0), fmt=PROTOCOL_STYLE.get(protocol, "-"),
                        marker="o", ms=4, capsize=3, lw=1.3, elinewidth=0.8, color=colours[method], label=method)
        ax.set_xscale("log")
        ax.set_xticks(fractions)
        ax.get_xaxis().set_major_formatter(_percent_formatter())
        ax.get_xaxis().set_minor_formatter(_percent_formatter(minor=True))
        ax.set_xlim(min(fractions) / 1.5, max(fractions) * 1.5)
        ax.set_xlabel("labelled training records")
        ax.set_title("linear probe" if protocol == "probe" else "fine-tuned / supervised", fontsize=10)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("macro AUROC (test)")
    handles = {}
    for ax in axes[0]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.0, 0.5),
               fontsize=8, frameon=False)
    fig.suptitle(f"{task}: AUROC vs label fraction (mean over seeds, 95% bootstrap interval)", fontsize=10, y=1.02)
    return _save(fig, path)


def _percent_formatter(minor: bool = False):
    from matplotlib.ticker import FuncFormatter
    return FuncFormatter(lambda v, _: "" if minor else f"{v:g}%")


def plot_corruptions(summaries: Sequence[Summary], task: str, path: Path, colours: dict) -> Path | None:
    """Macro AUROC vs severity, one panel per corruption; colour = method, dashes = fine-tuned."""
    rows = [s for s in summaries if s.key["task"] == task and s.key["experiment"] == "corruption"]
    if not rows:
        return None
    plt = _pyplot()
    names = sorted({s.key["corruption"] for s in rows})
    cols = min(3, len(names))
    nrows = -(-len(names) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3.2 * nrows), squeeze=False, sharey=True)
    for ax, name in zip(axes.flat, names):
        series: dict[tuple[str, str], list[Summary]] = defaultdict(list)
        for s in rows:
            if s.key["corruption"] == name:
                series[(s.key["method"], s.key["protocol"])].append(s)
        for (method, protocol) in sorted(series, key=lambda k: (k[1] != "probe", _method_rank(k[0]))):
            items = sorted(series[(method, protocol)], key=lambda s: s.key["severity"])
            ax.plot([s.key["severity"] for s in items], [s.mean for s in items], PROTOCOL_STYLE.get(protocol, "-"),
                    marker="o", ms=3, color=colours[method], label=f"{method} ({protocol})")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("severity")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("macro AUROC")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    _legend_outside(fig, axes.flat[0])
    fig.suptitle(f"{task}: AUROC vs test-time corruption (solid = linear probe, dashed = fine-tuned)",
                 fontsize=10, y=1.02)
    return _save(fig, path)


def _grouped_bars(ax, groups: list[str], series: list[tuple[str, str, dict]], colours: dict) -> None:
    """Bars per group; one bar per (method, protocol), fine-tuned bars hatched."""
    width = 0.8 / max(1, len(series))
    for i, (method, protocol, values) in enumerate(series):
        x = np.arange(len(groups)) + (i - (len(series) - 1) / 2) * width
        ax.bar(x, [values.get(g, np.nan) for g in groups], width, color=colours[method],
               hatch="//" if protocol == "finetune" else None, edgecolor="white", linewidth=0.5,
               label=f"{method} ({protocol})")
    ax.set_xticks(np.arange(len(groups)))
    rotate = len(groups) > 8
    ax.set_xticklabels(groups, rotation=60 if rotate else 0, ha="right" if rotate else "center", fontsize=8)
    ax.set_ylim(0, 1)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")


def plot_per_class(summaries: Sequence[Summary], task: str, path: Path, colours: dict) -> Path | None:
    """Per-class AUROC at the largest label fraction (mean over seeds); hatched = fine-tuned."""
    rows = [s for s in summaries if s.key["task"] == task and s.key["experiment"] == "label_fraction"]
    if not rows:
        return None
    top = max(s.key["fraction"] for s in rows)
    rows = sorted((s for s in rows if s.key["fraction"] == top),
                  key=lambda s: (s.key["protocol"] != "probe", _method_rank(s.key["method"])))
    classes = sorted({c for s in rows for c in s.per_class})
    if not classes:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(min(18, max(6, 0.18 * len(classes) * len(rows) + 2)), 4))
    _grouped_bars(ax, classes, [(s.key["method"], s.key["protocol"], s.per_class) for s in rows], colours)
    ax.set_ylabel("AUROC (test)")
    skipped = sorted({c.split(" ")[0] for s in rows for c in s.skipped})
    note = f"; not evaluable on the test set: {', '.join(skipped)}" if skipped else ""
    ax.set_title(f"{task}: per-class AUROC at {100 * top:g}% labels{note}", fontsize=10)
    _legend_outside(fig, ax)
    return _save(fig, path)


def plot_sources(summaries: Sequence[Summary], task: str, path: Path, colours: dict) -> Path | None:
    """Macro AUROC on each held-out source (leave one source out); hatched = fine-tuned."""
    rows = [s for s in summaries if s.key["task"] == task and s.key["experiment"] == "leave_source_out"]
    if not rows:
        return None
    plt = _pyplot()
    sources = sorted({s.key["holdout_source"] for s in rows})
    keys = sorted({(s.key["method"], s.key["protocol"]) for s in rows}, key=lambda k: (k[1] != "probe", _method_rank(k[0])))
    series = [(m, p, {s.key["holdout_source"]: s.mean for s in rows if (s.key["method"], s.key["protocol"]) == (m, p)})
              for m, p in keys]
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(sources) + 3), 4))
    _grouped_bars(ax, sources, series, colours)
    n_test = {s.key["holdout_source"]: s.n_test for s in rows}
    ax.set_xticklabels([f"{src}\n({n_test[src]} records)" for src in sources], fontsize=8)
    ax.set_ylabel("macro AUROC on the held-out source")
    ax.set_title(f"{task}: leave one source out", fontsize=10)
    _legend_outside(fig, ax)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tight_layout's notes about the outside legend
        fig.tight_layout()
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, bbox_inches="tight")
    finally:
        _pyplot().close(fig)
    return path


# ----------------------------------------------------------------------------- documents

def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
table{border-collapse:collapse;margin:1em 0;font-size:0.85em}th,td{border:1px solid #ccc;padding:3px 7px;text-align:left}
th{background:#f0f0f0}tr:nth-child(even){background:#fafafa}img{max-width:100%;border:1px solid #eee;margin:0.5em 0}
code{background:#f4f4f4;padding:1px 4px}h2{border-bottom:1px solid #ddd;padding-bottom:0.2em}
details{margin:1em 0}summary{cursor:pointer;font-weight:600}"""


def _data_rows(data: dict) -> list[list[str]]:
    return [[str(name), str(info.get("path", name)), str(info.get("sha256", "")), str(info.get("hash_of", ""))]
            for name, info in data.items()]


def _notes(data: dict) -> list[str]:
    notes = []
    for step in data.get("steps", []):
        if step.get("status") == "skipped":
            notes.append(f"step {step['step']} skipped: {step.get('reason', '')}")
        elif step.get("status") == "pending":
            notes.append(f"step {step['step']} has not run yet")
    for where, info in (data.get("pretraining_overlap") or {}).items():
        both = info.get("also_in_pretraining")
        if both:
            count = both if isinstance(both, int) else len(both)
            notes.append(f"{where}: {count} record(s) were also in the (unlabelled) pretraining data"
                         + (f" ({', '.join(both[:10])}{' ...' if len(both) > 10 else ''})" if isinstance(both, list) else ""))
    return notes


def build_report(run_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``report.md``, ``report.html``, ``summary.json`` and ``plots/*.png`` into ``run_dir``
    from its ``results.json``; returns the paths written."""
    run_dir = Path(run_dir)
    data = load_results(run_dir)
    results = data["results"]
    if not results:
        raise CremaError(f"{run_dir}/results.json holds no results yet")
    summaries = summarise(results)
    colours = _colours(s.key["method"] for s in summaries)
    tasks = sorted({r["task"] for r in results})
    plots: list[tuple[str, Path]] = []
    for task in tasks:
        safe = task.replace("/", "_")
        for title, fn, name in (("AUROC vs label fraction", plot_fractions, "fractions"),
                                ("Per-class AUROC", plot_per_class, "per_class"),
                                ("Leave one source out", plot_sources, "sources"),
                                ("AUROC vs corruption severity", plot_corruptions, "corruptions")):
            path = fn(summaries, task, run_dir / "plots" / f"{name}_{safe}.png", colours)
            if path is not None:
                plots.append((f"{task}: {title}", path))

    save_json(run_dir / "summary.json", [s.to_dict() for s in sorted(summaries, key=_order)])
    tables = report_tables(summaries)
    header, rows = summary_table(summaries)
    intro = (f"{len(results)} results ({len({r['method'] for r in results})} methods; tasks: {', '.join(tasks)}). "
             "Macro AUROC on the test records is the mean over seeds; [low, high] is the 95% percentile "
             "interval of the seed-averaged bootstrap replicates (test records resampled, 1000 or more "
             "times). Classes with no positive or no negative in a test set are left out and named. "
             "Fine-tuned F1 uses per-class thresholds picked on the validation fold.")
    notes = _notes(data)
    data_header = ["corpus", "path", "sha256", "what was hashed"]

    md = [f"# CREMA evaluation report: {run_dir.name}", "", intro, ""]
    for title, h, r in tables:
        md += [f"## {title}", "", _md_table(h, r), ""]
    md += ["## Plots", ""] + [f"![{title}](plots/{p.name})" for title, p in plots] + [""]
    if notes:
        md += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    md += ["## Data", "", _md_table(data_header, _data_rows(data.get("data", {}))), "",
           "## All results", "", _md_table(header, rows), ""]
    atomic_write_text(run_dir / "report.md", "\n".join(md))

    figures = "".join(
        f"<h3>{html.escape(title)}</h3><img alt='{html.escape(title)}' src='data:image/png;base64,"
        f"{base64.b64encode(p.read_bytes()).decode()}'>" for title, p in plots)
    sections = "".join(f"<h2>{html.escape(t)}</h2>{_html_table(h, r)}" for t, h, r in tables)
    notes_html = ("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>") if notes else ""
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>CREMA report {html.escape(run_dir.name)}</title>"
            f"<style>{_CSS}</style></head><body><h1>CREMA evaluation report: {html.escape(run_dir.name)}</h1>"
            f"<p>{html.escape(intro)}</p>{sections}<h2>Plots</h2>{figures}{notes_html}"
            f"<h2>Data</h2>{_html_table(data_header, _data_rows(data.get('data', {})))}"
            f"<details><summary>All results ({len(rows)} rows)</summary>{_html_table(header, rows)}</details>"
            "</body></html>\n")
    atomic_write_text(run_dir / "report.html", page)
    return {"markdown": run_dir / "report.md", "html": run_dir / "report.html",
            "summary": run_dir / "summary.json", **{f"plot:{p.stem}": p for _, p in plots}}


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned table for the terminal."""
    widths = [max([len(str(h))] + [len(str(r[i])) for r in rows]) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line("-" * w for w in widths), *(line(r) for r in rows)])


def results_text(results: Sequence[dict]) -> str:
    """The compact tables of some results as terminal text (seeds combined)."""
    return "\n\n".join(f"{title}\n{text_table(h, r)}" for title, h, r in report_tables(summarise(results)))
