"""CREMA embeddings as a scikit-learn transformer, for users' own pipelines.

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from crema.sklearn import CremaEmbedder

    pipe = make_pipeline(CremaEmbedder("crema-mini-ecg12", fs=500, cache=True),
                         LogisticRegression(max_iter=1000))
    cross_val_score(pipe, X, y, cv=5, scoring="roc_auc")

``X`` is a stack of records in mV, ``(N, C, T)`` or ``(N, T, C)`` (the lead axis is the one whose
size is the lead count; ``fs`` and, for other than the standard 12 leads in order, ``leads`` say
what it holds), or a sequence of N records: file paths (any format CREMA reads; each must hold one
record), :class:`~crema.data.recording.Recording` objects or ``(C, T)`` arrays of any length; or
one path holding N records: a stack file (``.npy``/``.npz``/HDF5), a prepared corpus
(``DIR[:split]``, its records in index order) or a folder (its records in sorted order).
``transform`` returns float32 ``(N, F)``: one row per record, in the order of ``X`` (the same
record twice gives two rows), the mean of the embeddings of its 10 s windows (exactly
:meth:`crema.use.results.EmbedResult.by_record`), after the preprocessing saved with the checkpoint.
``F`` is D for ``features="mean"`` and 12 x D for ``"leads"``; the default is the model's own.
A record that cannot be used raises a :class:`~crema.errors.CremaError` naming it (a pipeline
cannot drop a sample and keep ``y`` aligned).

``model`` is a checkpoint or exported model folder, a shipped model's name, or a model already
loaded with :func:`crema.load`. The embedder learns nothing: ``fit`` only loads the model.

Cross-validation embeds each training record once per fold. With ``cache=True`` a record's
embedding is kept in this process, keyed by the SHA-256 of its content (signal, rate, leads) and
of the model (weights, config, precision, device), so every fold after the first finds the
records it has seen (clones of the embedder share the cache); ``cache="folder"`` also keeps them
there as ``.npy`` files, for worker processes (``n_jobs``) and later sessions.
"""
from __future__ import annotations

import hashlib
import os
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from .atomic import atomic_path
from .data.recording import Recording
from .errors import CremaError
from .eval.features import module_sha256
from .model.inference import DEFAULT_BATCH
from .use.api import CremaModel, load
from .use.inputs import InputItem, collect_each, collect_inputs

# Record embeddings kept in this process by ``cache=True``: key -> (F,) float32, oldest dropped
# first beyond MEMORY_BYTES (1 GiB holds ~4 million 64-d or ~350,000 768-d embeddings).
MEMORY_BYTES = 1 << 30
_memory: OrderedDict[str, np.ndarray] = OrderedDict()
_memory_bytes = 0
_model_keys: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class CremaEmbedder(TransformerMixin, BaseEstimator):
    """Record embeddings ``(N, F)`` of a CREMA checkpoint (see the module docstring).

    Args:
        model: checkpoint / exported model folder, shipped model name, or a loaded :class:`CremaModel`.
        fs: sampling rate (Hz) of array inputs; files carry their own.
        leads: names of the C rows of array inputs (default the standard 12 in order).
        batch_size: windows per forward pass.
        device: ``"cpu"``, ``"cuda"``, ``"auto"``... for a model loaded from a folder.
        features: the embedding kind, ``mean`` (D) or ``leads`` (12 x D, each lead's mean token
            normed); default the model's own (``config.json``'s ``embedding.features``, else ``mean``).
        cache: ``False``; ``True`` to reuse the embeddings of records seen before in this process
            (cross-validation embeds each record once instead of once per fold); or a folder that
            also keeps them on disk.

    Attributes (after ``fit``):
        model_: the loaded :class:`CremaModel`; features_: the kind used; n_features_out_: its width F.
    """

    def __init__(self, model: str | os.PathLike | CremaModel, fs: float | None = None,
                 leads: Sequence[str] | None = None, batch_size: int = DEFAULT_BATCH, device: str = "cpu",
                 features: str | None = None, cache: bool | str | os.PathLike = False):
        self.model = model
        self.fs = fs
        self.leads = leads
        self.batch_size = batch_size
        self.device = device
        self.features = features
        self.cache = cache

    def fit(self, X: Any = None, y: Any = None) -> "CremaEmbedder":
        """Load the model (nothing is learnt from ``X``); returns ``self``."""
        if isinstance(self.model, CremaModel):
            self.model_ = self.model
        elif isinstance(self.model, (str, os.PathLike)):
            self.model_ = load(self.model, device=self.device)
        else:
            raise CremaError(f"CremaEmbedder(model=...) takes a checkpoint folder or a model loaded with "
                             f"crema.load, not {type(self.model).__name__}")
        self.features_ = self.features or self.model_.features
        self.n_features_out_ = self.model_.feature_dim(self.features_)  # raises for a model with no SiT encoder
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Embeddings of the N records of ``X``: float32 ``(N, F)``, rows in the order of ``X``."""
        if not hasattr(self, "model_"):
            self.fit()
        items = self._items(X)
        if self.cache is False or self.cache is None:
            return self._embed(items)
        return self._cached_embed(items)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """``e0 ... e{F-1}``, the column names ``crema embed`` gives the embeddings in Parquet."""
        dim = self.n_features_out_ if hasattr(self, "n_features_out_") else self.fit().n_features_out_
        return np.asarray([f"e{i}" for i in range(dim)], dtype=object)

    def _embed(self, items: list[InputItem]) -> np.ndarray:
        """``(len(items), F)`` float32: one row per item (each item is one record)."""
        if not items:
            return np.zeros((0, self.n_features_out_), dtype=np.float32)
        embeddings = self.model_.embed_records(items, batch_size=self.batch_size,
                                               features=self.features_).by_record().embeddings
        if len(embeddings) != len(items):  # one record per item is what keeps rows aligned with y
            raise CremaError(f"{len(items)} records gave {len(embeddings)} embeddings")
        return embeddings

    def _cached_embed(self, items: list[InputItem]) -> np.ndarray:
        """:meth:`_embed` through the cache: each record is loaded and hashed, and only records
        not seen before (with this model) go through the model."""
        folder = None if self.cache is True else Path(self.cache)
        model_key = f"{_model_key(self.model_)}|{self.features_}"
        rows: list[np.ndarray | None] = []
        keys, todo = [], []
        for item in items:
            record = item.load()
            key = hashlib.sha256(f"{model_key}|{record_sha256(record)}".encode()).hexdigest()
            keys.append(key)
            rows.append(_cache_get(key, folder))
            if rows[-1] is None:  # the loaded record is handed on, not read a second time
                todo.append(InputItem(item.source, item.record_id, lambda r=record: r, item.preprocess))
        missing = [i for i, row in enumerate(rows) if row is None]
        for i, row in zip(missing, self._embed(todo)):
            rows[i] = row
            _cache_put(keys[i], row, folder)
        if not rows:
            return np.zeros((0, self.n_features_out_), dtype=np.float32)
        return np.stack(rows).astype(np.float32, copy=False)

    def _items(self, X: Any) -> list[InputItem]:
        """One input item per record of ``X``, or a CremaError saying why ``X`` is not N records."""
        if hasattr(X, "to_numpy") and getattr(X, "ndim", 0) == 1:  # a pandas Series of paths
            X = X.tolist()
        if isinstance(X, np.ndarray) or hasattr(X, "detach"):
            if X.ndim != 3:
                raise CremaError(f"X has shape {tuple(X.shape)}; expected a stack of records (N, C, T) or "
                                 "(N, T, C), or a list of records (file paths, Recordings, (C, T) arrays)")
            return [item for group in collect_each(X, self.fs, self.leads) for item in group]
        if isinstance(X, (str, os.PathLike)):  # a stack file, corpus (DIR[:split]) or folder: its records
            return collect_inputs(X, self.fs, self.leads, preprocess=self.model_.preprocess)
        if not isinstance(X, Sequence):
            raise CremaError(f"X must be a stack (N, C, T), a sequence of records or a stack file / corpus, "
                             f"not {type(X).__name__}")
        groups = collect_each(list(X), self.fs, self.leads)
        if len(groups) != len(X):  # nested lists of numbers: one array (N, C, T) written as lists
            return self._items(np.asarray(X))
        for i, (record, found) in enumerate(zip(X, groups)):
            if len(found) != 1:
                what = record if isinstance(record, (str, os.PathLike)) else type(record).__name__
                raise CremaError(f"X[{i}] ({what}) holds {len(found)} records; each element of X must be "
                                 "one record")
        return [group[0] for group in groups]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.requires_fit = False              # stateless: transform loads the model if fit did not
        tags.input_tags.two_d_array = False    # a stack is 3-D; a list of paths is not a table
        tags.input_tags.three_d_array = True
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = []  # always float32 embeddings
        return tags

    def _more_tags(self) -> dict:  # scikit-learn < 1.6
        return {"stateless": True, "requires_fit": False, "X_types": ["3darray", "string"],
                "preserves_dtype": []}


def record_sha256(record: Any) -> str:
    """SHA-256 of what a record's embedding depends on: a Recording's signal, rate and lead
    names, or a corpus record's stored windows and lead mask."""
    digest = hashlib.sha256()
    if isinstance(record, Recording):
        parts = [np.ascontiguousarray(record.signal), repr((float(record.fs), tuple(record.leads))).encode()]
    else:  # crema.data.preprocess.Windows
        parts = [np.ascontiguousarray(record.signals), np.ascontiguousarray(record.lead_mask),
                 np.ascontiguousarray(record.starts)]
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(f"{part.dtype.str}{part.shape}".encode())
            part = part.tobytes()
        digest.update(part)
    return digest.hexdigest()


def clear_cache() -> None:
    """Forget the record embeddings kept in this process by ``cache=True`` (folders are kept)."""
    global _memory_bytes
    _memory.clear()
    _memory_bytes = 0


def _model_key(model: CremaModel) -> str:
    """SHA-256 of what makes a model's embeddings: its weights, config, precision and device;
    computed once per loaded model."""
    if model not in _model_keys:
        what = f"{module_sha256(model.network)}|{model.config_sha256}|{model.precision}|{model.device.type}"
        _model_keys[model] = hashlib.sha256(what.encode()).hexdigest()
    return _model_keys[model]


def _cache_get(key: str, folder: Path | None) -> np.ndarray | None:
    """A cached record embedding, from this process or else from ``folder`` (one found in this
    process is also written to ``folder`` when it is not there yet)."""
    path = None if folder is None else folder / f"{key}.npy"
    if key in _memory:
        _memory.move_to_end(key)
        if path is not None and not path.is_file():
            _save(path, _memory[key])
        return _memory[key]
    if path is None or not path.is_file():
        return None
    try:
        row = np.load(path)
    except (OSError, ValueError):  # a damaged file is recomputed and rewritten
        return None
    _cache_put(key, row, None)
    return row


def _cache_put(key: str, row: np.ndarray, folder: Path | None) -> None:
    """Keep a record embedding in this process (dropping the oldest beyond :data:`MEMORY_BYTES`)
    and, when given, in ``folder``."""
    global _memory_bytes
    row = np.array(row, dtype=np.float32)
    if key not in _memory:
        _memory_bytes += row.nbytes
    _memory[key] = row
    while _memory_bytes > MEMORY_BYTES and _memory:
        _memory_bytes -= _memory.popitem(last=False)[1].nbytes
    if folder is not None:
        _save(folder / f"{key}.npy", row)


def _save(path: Path, row: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, row)


__all__ = ["CremaEmbedder", "clear_cache", "record_sha256"]
