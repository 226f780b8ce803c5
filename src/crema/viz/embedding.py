"""A 2-D map of ECG embeddings (PCA or t-SNE), coloured by a label, a source or a number."""
from __future__ import annotations

from typing import Literal, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

Method = Literal["pca", "tsne"]
MAX_CATEGORIES = 10      # more categories than this: the rarest are drawn grey as "other"
OTHER = "other"
MISSING = "(none)"
SMALL_PROJECTION = 5000  # points; fewer are projected on one thread (see project_2d)


def project_2d(embeddings: np.ndarray, method: Method = "pca", seed: int = 0) -> np.ndarray:
    """Project ``(n, D)`` embeddings to ``(n, 2)`` with PCA or t-SNE (scikit-learn).

    Embeddings are standardised per feature first, so that no single wide feature dominates.
    """
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 3:
        raise ValueError(f"need embeddings of shape (n >= 3, D), got {x.shape}")
    if method not in ("pca", "tsne"):
        raise ValueError(f"unknown projection {method!r}; choose 'pca' or 'tsne'")
    # t-SNE runs 1000 gradient steps, each an OpenMP/BLAS parallel region. Below a few thousand
    # points a step is too small to split: the threads spin at every fork and join, and beside
    # torch's own threads on a busy machine a 40-point map took many times longer. One thread there.
    with threadpool_limits(limits=1 if x.shape[0] < SMALL_PROJECTION else None):
        x = StandardScaler().fit_transform(x)
        if method == "pca":
            return PCA(n_components=2, random_state=seed).fit_transform(x)
        perplexity = float(min(30.0, max(2.0, (x.shape[0] - 1) / 3)))
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed,
                    n_jobs=1 if x.shape[0] < SMALL_PROJECTION else None)
        return tsne.fit_transform(x)


def plot_embedding_map(embeddings: np.ndarray, color_by: Sequence | None = None,
                       method: Method = "pca", title: str | None = None,
                       color_name: str = "", seed: int = 0) -> Figure:
    """Scatter the 2-D projection of ``(n, D)`` embeddings.

    Args:
        embeddings: ``(n, D)`` float.
        color_by: ``n`` values: numbers give a colour scale; anything else is a category (the
            ``MAX_CATEGORIES`` most frequent get their own colour, the rest are "other").
        method: ``pca`` or ``tsne``.
        title: figure title; color_name: legend / colour-bar title.

    Returns:
        A matplotlib ``Figure`` (save it with :func:`crema.viz.paper.save_figure`).
    """
    xy = project_2d(embeddings, method, seed)
    fig = Figure(figsize=(7.0, 6.0), dpi=120)
    ax = fig.add_subplot(1, 1, 1)
    if color_by is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=12, alpha=0.8, color="#1f77b4", linewidths=0)
    else:
        values = pd.Series(list(color_by))
        if len(values) != len(xy):
            raise ValueError(f"{len(values)} colour values for {len(xy)} embeddings")
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().all() and values.nunique() > MAX_CATEGORIES:
            _scatter_numeric(fig, ax, xy, numeric.to_numpy(), color_name)
        else:
            _scatter_categories(ax, xy, values, color_name)
    axis = {"pca": "PC", "tsne": "t-SNE "}[method]
    ax.set_xlabel(f"{axis}1")
    ax.set_ylabel(f"{axis}2")
    ax.set_title(title or f"Embedding map ({ {'pca': 'PCA', 'tsne': 't-SNE'}[method]}, n = {len(xy)})")
    ax.grid(alpha=0.2)
    fig.tight_layout()
    return fig


def category_labels(values: pd.Series, max_categories: int = MAX_CATEGORIES) -> pd.Series:
    """Values as category names: empty -> ``(none)``, rare ones beyond ``max_categories`` -> ``other``."""
    names = values.fillna("").astype(str).replace("", MISSING)
    common = names.value_counts().index[:max_categories]
    return names.where(names.isin(common), OTHER)


def _scatter_categories(ax, xy: np.ndarray, values: pd.Series, color_name: str) -> None:
    names = category_labels(values)
    counts = names.value_counts()
    palette = [f"C{i}" for i in range(10)]
    for i, name in enumerate(counts.index):
        rows = (names == name).to_numpy()
        color = "#bbbbbb" if name in (OTHER, MISSING) else palette[i % len(palette)]
        ax.scatter(xy[rows, 0], xy[rows, 1], s=12, alpha=0.8, color=color, linewidths=0,
                   label=f"{name} ({counts[name]})")
    ax.legend(title=color_name or None, fontsize=8, title_fontsize=9, markerscale=1.5,
              loc="best", frameon=True)


def _scatter_numeric(fig: Figure, ax, xy: np.ndarray, values: np.ndarray, color_name: str) -> None:
    points = ax.scatter(xy[:, 0], xy[:, 1], c=values, s=12, alpha=0.85, cmap="viridis", linewidths=0)
    fig.colorbar(points, ax=ax, label=color_name)
