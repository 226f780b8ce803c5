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
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..config import atomic_write_text, save_json
from ..errors import CremaError
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
        "bootstrap_auroc": [None if v is None else round(v, 6) for v in boot.get("auroc", [])],
        "data_sha256": data_sha256, "train_rows_sha256": train_rows_sha256, "test_rows_sha256": test_rows_sha256,
        "config": config,
    }
    if extra:
        result.update(extra)
    return result


def write_results(path: str | os.PathLike, results: Sequence[dict], data: dict, meta: dict | None = None) -> None:
    """Write ``results.json`` atomically."""
    save_json(path, {"kind": RESULTS_KIND, "version": RESULTS_VERSION, **(meta or {}),
                     "data": data, "results": list(results)})


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
        with np.errstate(invalid="ignore"):
            return metrics.percentile_interval(np.nanmean(stacked, axis=0) if len(group) > 1 else stacked[0])
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


def _setting(key: dict) -> str:
    if key["experiment"] == "label_fraction":
        return f"{100 * key['fraction']:g}% labels"
    if key["experiment"] == "leave_source_out":
        return f"held out: {key['holdout_source']}"
    if key["experiment"] == "corruption":
        return f"{key['corruption']} s{key['severity']}"
    return key["experiment"]


def _fmt(v: float, digits: int = 3) -> str:
    return "-" if not np.isfinite(v) else f"{v:.{digits}f}"


def summary_table(summaries: Sequence[Summary]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the main table, sorted by task, experiment, setting, protocol, method."""
    header = ["task", "setting", "protocol", "method", "macro AUROC", "95% CI", "sd (seeds)", "n seeds",
              "macro F1", "n test", "classes skipped"]

    def order(s: Summary):
        k = s.key
        return (k["task"], k["experiment"], k["holdout_source"] or "", k["corruption"] or "", k["severity"] or 0,
                k["fraction"] or 0, k["protocol"], k["method"])

    rows = []
    for s in sorted(summaries, key=order):
        rows.append([s.key["task"], _setting(s.key), s.key["protocol"], s.key["method"], _fmt(s.mean),
                     f"[{_fmt(s.low)}, {_fmt(s.high)}]", _fmt(s.sd), str(len(s.seeds)), _fmt(s.f1_mean),
                     str(s.n_test), ", ".join(s.skipped) or "-"])
    return header, rows


# ----------------------------------------------------------------------------- plots

def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _series_label(key: dict) -> str:
    return f"{key['method']} ({key['protocol']})"


def plot_fractions(summaries: Sequence[Summary], task: str, path: Path) -> Path | None:
    """Macro AUROC vs label fraction, one line per method and protocol, 95% band."""
    rows = [s for s in summaries if s.key["task"] == task and s.key["experiment"] == "label_fraction"]
    if not rows:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    series: dict[str, list[Summary]] = defaultdict(list)
    for s in rows:
        series[_series_label(s.key)].append(s)
    for label, items in sorted(series.items()):
        items.sort(key=lambda s: s.key["fraction"])
        x = [100 * s.key["fraction"] for s in items]
        style = "--" if items[0].key["protocol"] == "finetune" else "-"
        line, = ax.plot(x, [s.mean for s in items], style, marker="o", label=label)
        ax.fill_between(x, [s.low for s in items], [s.high for s in items], color=line.get_color(), alpha=0.12)
    ax.set_xscale("log")
    ax.set_xlabel("labelled training records (%)")
    ax.set_ylabel("macro AUROC (test)")
    ax.set_title(f"{task}: AUROC vs label fraction (mean over seeds, 95% bootstrap band)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def plot_corruptions(summaries: Sequence[Summary], task: str, path: Path) -> Path | None:
    """Macro AUROC vs severity, one panel per corruption, one line per method and protocol."""
    rows = [s for s in summaries if s.key["task"] == task and s.key["experiment"] == "corruption"]
    if not rows:
        return None
    plt = _pyplot()
    names = sorted({s.key["corruption"] for s in rows})
    cols = min(3, len(names))
    nrows = -(-len(names) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False, sharey=True)
    for ax, name in zip(axes.flat, names):
        series: dict[str, list[Summary]] = defaultdict(list)
        for s in rows:
            if s.key["corruption"] == name:
                series[_series_label(s.key)].append(s)
        for label, items in sorted(series.items()):
            items.sort(key=lambda s: s.key["severity"])
            style = "--" if items[0].key["protocol"] == "finetune" else "-"
            ax.plot([s.key["severity"] for s in items], [s.mean for s in items], style, marker="o", label=label)
        ax.set_title(name)
        ax.set_xlabel("severity")
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("macro AUROC")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(f"{task}: AUROC vs corruption severity")
    return _save(fig, path)


def plot_per_class(summaries: Sequence[Summary], task: str, path: Path) -> Path | None:
    """Per-class AUROC bars at the largest label fraction, one bar per method and protocol."""
    rows = [s for s in summaries if s.key["task"] == task and s.key["experiment"] == "label_fraction"]
    if not rows:
        return None
    top = max(s.key["fraction"] for s in rows)
    rows = sorted((s for s in rows if s.key["fraction"] == top), key=lambda s: _series_label(s.key))
    classes = sorted({c for s in rows for c in s.per_class})
    if not classes:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(classes) * max(1, len(rows)) / 3 + 3), 4.5))
    width = 0.8 / len(rows)
    for i, s in enumerate(rows):
        x = np.arange(len(classes)) + (i - (len(rows) - 1) / 2) * width
        ax.bar(x, [s.per_class.get(c, np.nan) for c in classes], width, label=_series_label(s.key))
    ax.set_xticks(np.arange(len(classes)))
    ax.set_xticklabels(classes, rotation=45 if len(classes) > 8 else 0, ha="right" if len(classes) > 8 else "center")
    ax.set_ylim(0, 1)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_ylabel("AUROC (test)")
    ax.set_title(f"{task}: per-class AUROC at {100 * top:g}% labels")
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    return _save(fig, path)


def plot_sources(summaries: Sequence[Summary], task: str, path: Path) -> Path | None:
    """Macro AUROC on each held-out source (leave-one-source-out), bars per method and protocol."""
    rows = [s for s in summaries if s.key["task"] == task and s.key["experiment"] == "leave_source_out"]
    if not rows:
        return None
    plt = _pyplot()
    sources = sorted({s.key["holdout_source"] for s in rows})
    labels = sorted({_series_label(s.key) for s in rows})
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(sources) + 3), 4.5))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        by_source = {s.key["holdout_source"]: s for s in rows if _series_label(s.key) == label}
        x = np.arange(len(sources)) + (i - (len(labels) - 1) / 2) * width
        means = [by_source[src].mean if src in by_source else np.nan for src in sources]
        ax.bar(x, means, width, label=label)
    ax.set_xticks(np.arange(len(sources)))
    ax.set_xticklabels(sources)
    ax.set_ylim(0, 1)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_ylabel("macro AUROC on held-out source")
    ax.set_title(f"{task}: leave one source out")
    ax.legend(fontsize=7, ncol=2, loc="lower right")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=110)
    _pyplot().close(fig)
    os.replace(tmp, path)
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
code{background:#f4f4f4;padding:1px 4px}h2{border-bottom:1px solid #ddd;padding-bottom:0.2em}"""


def _data_rows(data: dict) -> list[list[str]]:
    return [[str(name), str(info.get("sha256", "")), str(info.get("hash_of", ""))] for name, info in data.items()]


def build_report(run_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``report.md``, ``report.html``, ``summary.json`` and ``plots/*.png`` into ``run_dir``
    from its ``results.json``; returns the paths written."""
    run_dir = Path(run_dir)
    data = load_results(run_dir)
    results = data["results"]
    if not results:
        raise CremaError(f"{run_dir}/results.json holds no results yet")
    summaries = summarise(results)
    tasks = sorted({r["task"] for r in results})
    plots: list[tuple[str, Path]] = []
    for task in tasks:
        safe = task.replace("/", "_")
        for title, fn, name in (("AUROC vs label fraction", plot_fractions, "fractions"),
                                ("Per-class AUROC", plot_per_class, "per_class"),
                                ("Leave one source out", plot_sources, "sources"),
                                ("AUROC vs corruption severity", plot_corruptions, "corruptions")):
            path = fn(summaries, task, run_dir / "plots" / f"{name}_{safe}.png")
            if path is not None:
                plots.append((f"{task}: {title}", path))

    header, rows = summary_table(summaries)
    save_json(run_dir / "summary.json", [s.to_dict() for s in summaries])
    intro = (f"{len(results)} results ({len({r['method'] for r in results})} methods, tasks: {', '.join(tasks)}). "
             "Macro AUROC is the mean over seeds; the 95% interval is the percentile interval of "
             "seed-averaged bootstrap replicates over test records; classes with no positive or no "
             "negative in a test set are skipped and named.")
    data_header = ["corpus", "sha256", "what was hashed"]
    md = [f"# CREMA evaluation report: {run_dir.name}", "", intro, "", "## Results", "",
          _md_table(header, rows), "", "## Data", "", _md_table(data_header, _data_rows(data.get("data", {}))), ""]
    md += ["## Plots", ""] + [f"![{title}](plots/{p.name})" for title, p in plots]
    atomic_write_text(run_dir / "report.md", "\n".join(md) + "\n")

    figures = "".join(
        f"<h3>{html.escape(title)}</h3><img alt='{html.escape(title)}' src='data:image/png;base64,"
        f"{base64.b64encode(p.read_bytes()).decode()}'>" for title, p in plots)
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>CREMA report {html.escape(run_dir.name)}</title>"
            f"<style>{_CSS}</style></head><body><h1>CREMA evaluation report: {html.escape(run_dir.name)}</h1>"
            f"<p>{html.escape(intro)}</p><h2>Results</h2>{_html_table(header, rows)}"
            f"<h2>Plots</h2>{figures}<h2>Data</h2>{_html_table(data_header, _data_rows(data.get('data', {})))}"
            "</body></html>\n")
    atomic_write_text(run_dir / "report.html", page)
    return {"markdown": run_dir / "report.md", "html": run_dir / "report.html",
            "summary": run_dir / "summary.json", **{f"plot:{p.stem}": p for _, p in plots}}


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned table for the terminal."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line("-" * w for w in widths), *(line(r) for r in rows)])


def results_text(results: Sequence[dict]) -> str:
    """The summary table of some results as terminal text (seed-combined)."""
    header, rows = summary_table(summarise(results))
    return text_table(header, rows)
