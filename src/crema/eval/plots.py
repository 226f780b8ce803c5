"""The report's figures (PNG): a metric vs label fraction, per-class AUROC, leave one source out and
AUROC vs corruption severity, from :class:`crema.eval.summary.Summary` rows; one colour per
method in every figure of a report. A regression task gets the fraction and source figures once
per metric (MAE, Pearson r)."""
from __future__ import annotations

import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..atomic import atomic_path
from .summary import Summary, metric_label, method_rank

PROTOCOL_STYLE = {"probe": "-", "finetune": "--"}


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def colours_for(methods: Iterable[str]) -> dict[str, Any]:
    """One colour per method, the same in every plot of a report."""
    plt = _pyplot()
    palette = plt.get_cmap("tab10").colors
    ordered = sorted(set(methods), key=method_rank)
    return {m: palette[i % len(palette)] for i, m in enumerate(ordered)}


def _legend_outside(fig, ax) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False)


def _rows(summaries: Sequence[Summary], task: str, experiment: str, metric: str) -> list[Summary]:
    return [s for s in summaries if s.key["task"] == task and s.key["experiment"] == experiment and s.metric == metric]


def plot_fractions(summaries: Sequence[Summary], task: str, path: Path, colours: dict,
                   metric: str = "auroc") -> Path | None:
    """``metric`` vs label fraction: a panel per protocol, a line per method, 95% band."""
    rows = _rows(summaries, task, "label_fraction", metric)
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
        methods = sorted(series, key=method_rank)
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
    axes[0, 0].set_ylabel(f"{metric_label(metric)} (test)")
    handles = {}
    for ax in axes[0]:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(list(handles.values()), list(handles), loc="center left", bbox_to_anchor=(1.0, 0.5),
               fontsize=8, frameon=False)
    fig.suptitle(f"{task}: {metric_label(metric)} vs label fraction (mean over seeds, 95% bootstrap interval)",
                 fontsize=10, y=1.02)
    return _save(fig, path)


def _percent_formatter(minor: bool = False):
    from matplotlib.ticker import FuncFormatter
    return FuncFormatter(lambda v, _: "" if minor else f"{v:g}%")


def plot_corruptions(summaries: Sequence[Summary], task: str, path: Path, colours: dict) -> Path | None:
    """Macro AUROC vs severity, one panel per corruption; colour = method, dashes = fine-tuned."""
    rows = _rows(summaries, task, "corruption", "auroc")
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
        for (method, protocol) in sorted(series, key=lambda k: (k[1] != "probe", method_rank(k[0]))):
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


def _grouped_bars(ax, groups: list[str], series: list[tuple[str, str, dict]], colours: dict,
                  unit_range: bool = True) -> None:
    """Bars per group; one bar per (method, protocol), fine-tuned bars hatched; ``unit_range``: an
    axis from 0 to 1 with chance (0.5) dotted, for AUROC."""
    width = 0.8 / max(1, len(series))
    for i, (method, protocol, values) in enumerate(series):
        x = np.arange(len(groups)) + (i - (len(series) - 1) / 2) * width
        ax.bar(x, [values.get(g, np.nan) for g in groups], width, color=colours[method],
               hatch="//" if protocol == "finetune" else None, edgecolor="white", linewidth=0.5,
               label=f"{method} ({protocol})")
    ax.set_xticks(np.arange(len(groups)))
    rotate = len(groups) > 8
    ax.set_xticklabels(groups, rotation=60 if rotate else 0, ha="right" if rotate else "center", fontsize=8)
    if unit_range:
        ax.set_ylim(0, 1)
        ax.axhline(0.5, color="grey", lw=0.8, ls=":")


def plot_per_class(summaries: Sequence[Summary], task: str, path: Path, colours: dict) -> Path | None:
    """Per-class AUROC at the largest label fraction (mean over seeds); hatched = fine-tuned."""
    rows = _rows(summaries, task, "label_fraction", "auroc")
    if not rows:
        return None
    top = max(s.key["fraction"] for s in rows)
    rows = sorted((s for s in rows if s.key["fraction"] == top),
                  key=lambda s: (s.key["protocol"] != "probe", method_rank(s.key["method"])))
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


def plot_sources(summaries: Sequence[Summary], task: str, path: Path, colours: dict,
                 metric: str = "auroc") -> Path | None:
    """``metric`` on each held-out source (leave one source out); hatched = fine-tuned."""
    rows = _rows(summaries, task, "leave_source_out", metric)
    if not rows:
        return None
    plt = _pyplot()
    sources = sorted({s.key["holdout_source"] for s in rows})
    keys = sorted({(s.key["method"], s.key["protocol"]) for s in rows}, key=lambda k: (k[1] != "probe", method_rank(k[0])))
    series = [(m, p, {s.key["holdout_source"]: s.mean for s in rows if (s.key["method"], s.key["protocol"]) == (m, p)})
              for m, p in keys]
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(sources) + 3), 4))
    _grouped_bars(ax, sources, series, colours, unit_range=metric == "auroc")
    n_test = {s.key["holdout_source"]: s.n_test for s in rows}
    ax.set_xticklabels([f"{src}\n({n_test[src]} records)" for src in sources], fontsize=8)
    ax.set_ylabel(f"{metric_label(metric)} on the held-out source")
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
