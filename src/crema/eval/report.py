"""Evaluation reports: ``results.json`` -> summary tables, PNG plots, ``report.md`` and a
self-contained ``report.html`` (inline CSS, PNGs embedded as base64).

``results.json`` (written by ``crema probe``, ``crema finetune`` and ``crema evaluate``; its
records and how it is read and written are :mod:`crema.eval.results`) holds one result per
trained-and-tested model and setting. The documents are built here from the seed-combined tables of
:mod:`crema.eval.summary`, the paired differences of :mod:`crema.eval.paired` (after each task's
tables) and the figures of :mod:`crema.eval.plots`.
"""
from __future__ import annotations

import base64
import html
import os
from pathlib import Path
from typing import Sequence

from ..atomic import atomic_write_text
from ..config_io import save_json
from ..errors import CremaError
from .headline import headline
from .paired import paired_differences
from .plots import colours_for, plot_corruptions, plot_fractions, plot_per_class, plot_sources
from .results import load_results
from .summary import (metric_label, metric_rank, paired_tables, report_tables, summarise, summary_order,
                      summary_table, with_paired)


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


def _task_plots(summaries: list, task: str, folder: Path, colours: dict) -> list[tuple[str, Path]]:
    """The figures of one task: per metric (AUROC; a regression task's MAE and Pearson r) the
    label-fraction and held-out-source plots, and per-class AUROC and corruption curves."""
    safe = task.replace("/", "_")
    plots = []
    for metric in sorted({s.metric for s in summaries if s.key["task"] == task}, key=metric_rank):
        # AUROC figures keep the names and titles they had before there were other metrics
        suffix, label = ("", "AUROC") if metric == "auroc" else (f"_{metric}", metric_label(metric))
        figures = [(f"{label} vs label fraction", plot_fractions, "fractions")]
        if metric == "auroc":
            figures.append(("Per-class AUROC", plot_per_class, "per_class"))
        figures.append(("Leave one source out" + ("" if metric == "auroc" else f" ({label})"), plot_sources,
                        "sources"))
        for title, fn, name in figures:
            extra = {} if fn is plot_per_class else {"metric": metric}
            path = fn(summaries, task, folder / f"{name}_{safe}{suffix}.png", colours, **extra)
            if path is not None:
                plots.append((f"{task}: {title}", path))
    path = plot_corruptions(summaries, task, folder / f"corruptions_{safe}.png", colours)
    return plots + ([(f"{task}: AUROC vs corruption severity", path)] if path is not None else [])


def report_headline(data: dict) -> str | None:
    """The one-sentence verdict of a run that evaluated given encoders on one task (``crema
    evaluate`` without a suite file, :func:`crema.eval.headline.headline`), else None."""
    encoders = list(((data.get("suite") or {}).get("encoders") or {}))
    return headline(data["results"], encoders) if encoders else None


def build_report(run_dir: str | os.PathLike, references: Sequence[str] = ()) -> dict[str, Path]:
    """Write ``report.md``, ``report.html``, ``summary.json``, ``paired.json`` and ``plots/*.png``
    into ``run_dir`` from its ``results.json``; returns the paths written. ``references``: method
    names every method is also paired against (beside MAE and the baselines)."""
    run_dir = Path(run_dir)
    data = load_results(run_dir)
    results = data["results"]
    if not results:
        raise CremaError(f"{run_dir}/results.json holds no results yet")
    summaries = summarise(results)
    colours = colours_for(s.key["method"] for s in summaries)
    tasks = sorted({r["task"] for r in results})
    plots: list[tuple[str, Path]] = []
    for task in tasks:
        plots += _task_plots(summaries, task, run_dir / "plots", colours)

    save_json(run_dir / "summary.json", [s.to_dict() for s in sorted(summaries, key=summary_order)])
    methods = {r["method"] for r in results}
    unknown = sorted(set(references) - methods)
    if unknown:
        raise CremaError(f"{run_dir}: no results of {', '.join(unknown)} to pair against "
                         f"(methods: {', '.join(sorted(methods))})")
    save_json(run_dir / "paired.json", [d.to_dict() for d in paired_differences(results, references)])
    tables = with_paired(report_tables(summaries), paired_tables(results, references))
    header, rows = summary_table(summaries)
    regression = any(r.get("task_type") == "regression" for r in results)
    intro = (f"{len(results)} results ({len({r['method'] for r in results})} methods; tasks: {', '.join(tasks)}). "
             "Macro AUROC on the test records is the mean over seeds and pretraining seeds; [low, high] is "
             "the 95% percentile interval of the seed-averaged bootstrap replicates (test records resampled, "
             "1000 or more times). Paired differences subtract a reference's result on the same seeds, "
             "pretraining seed and test records; their interval is that of the paired replicate "
             "differences, and 'ahead on' counts the pretraining seeds where the method is ahead. "
             "Classes with no positive or no negative in a test set are left out and named. "
             "Fine-tuned F1 uses per-class thresholds picked on the validation fold."
             + (" A regression task is scored per record by the mean absolute error (MAE, in the target's "
                "units; lower is better, so a negative difference favours the method) and Pearson's r "
                "between predicted and true values, with the same bootstrap." if regression else ""))
    notes = _notes(data)
    data_header = ["corpus", "path", "sha256", "what was hashed"]
    verdict = report_headline(data)

    md = [f"# CREMA evaluation report: {run_dir.name}", ""] + ([verdict, ""] if verdict else []) + [intro, ""]
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
            + (f"<p class='headline'><strong>{html.escape(verdict)}</strong></p>" if verdict else "")
            + f"<p>{html.escape(intro)}</p>{sections}<h2>Plots</h2>{figures}{notes_html}"
            f"<h2>Data</h2>{_html_table(data_header, _data_rows(data.get('data', {})))}"
            f"<details><summary>All results ({len(rows)} rows)</summary>{_html_table(header, rows)}</details>"
            "</body></html>\n")
    atomic_write_text(run_dir / "report.html", page)
    return {"markdown": run_dir / "report.md", "html": run_dir / "report.html",
            "summary": run_dir / "summary.json", "paired": run_dir / "paired.json",
            **{f"plot:{p.stem}": p for _, p in plots}}


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain aligned table for the terminal."""
    widths = [max([len(str(h))] + [len(str(r[i])) for r in rows]) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line("-" * w for w in widths), *(line(r) for r in rows)])


def results_text(results: Sequence[dict]) -> str:
    """The compact tables of some results as terminal text (seeds combined), with the paired
    differences."""
    tables = with_paired(report_tables(summarise(results)), paired_tables(results))
    return "\n\n".join(f"{title}\n{text_table(h, r)}" for title, h, r in tables)
