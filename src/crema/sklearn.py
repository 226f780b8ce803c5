"""CREMA embeddings as a scikit-learn transformer, for users' own pipelines.

    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from crema.sklearn import CremaEmbedder

    pipe = make_pipeline(CremaEmbedder("runs/pretrain/tiny", fs=500), LogisticRegression(max_iter=1000))
    cross_val_score(pipe, X, y, cv=5, scoring="roc_auc")

``X`` is a stack of records in mV, ``(N, C, T)`` or ``(N, T, C)`` (the lead axis is the one whose
size is the lead count; ``fs`` and, for other than the standard 12 leads in order, ``leads`` say
what it holds), or a sequence of N records: file paths (any format CREMA reads; each must hold one
record), :class:`~crema.data.recording.Recording` objects or ``(C, T)`` arrays of any length.
``transform`` returns float32 ``(N, D)``: one row per record, the mean of the embeddings of its
10 s windows (exactly :meth:`crema.use.api.EmbedResult.by_record`), after the preprocessing saved
with the checkpoint. A record that cannot be used raises a :class:`~crema.errors.CremaError`
naming it (a pipeline cannot drop a sample and keep ``y`` aligned).

``model`` is a checkpoint or exported model folder, or a model already loaded with
:func:`crema.load`. The embedder learns nothing: ``fit`` only loads the model.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin

from .errors import CremaError
from .model.inference import DEFAULT_BATCH
from .use.api import CremaModel, load
from .use.inputs import InputItem, collect_inputs


class CremaEmbedder(TransformerMixin, BaseEstimator):
    """Record embeddings ``(N, D)`` of a CREMA checkpoint (see the module docstring).

    Args:
        model: checkpoint / exported model folder, or a loaded :class:`CremaModel`.
        fs: sampling rate (Hz) of array inputs; files carry their own.
        leads: names of the C rows of array inputs (default the standard 12 in order).
        batch_size: windows per forward pass.
        device: ``"cpu"``, ``"cuda"``, ``"auto"``... for a model loaded from a folder.

    Attributes (after ``fit``):
        model_: the loaded :class:`CremaModel`; n_features_out_: D.
    """

    def __init__(self, model: str | os.PathLike | CremaModel, fs: float | None = None,
                 leads: Sequence[str] | None = None, batch_size: int = DEFAULT_BATCH, device: str = "cpu"):
        self.model = model
        self.fs = fs
        self.leads = leads
        self.batch_size = batch_size
        self.device = device

    def fit(self, X: Any = None, y: Any = None) -> "CremaEmbedder":
        """Load the model (nothing is learnt from ``X``); returns ``self``."""
        if isinstance(self.model, CremaModel):
            self.model_ = self.model
        elif isinstance(self.model, (str, os.PathLike)):
            self.model_ = load(self.model, device=self.device)
        else:
            raise CremaError(f"CremaEmbedder(model=...) takes a checkpoint folder or a model loaded with "
                             f"crema.load, not {type(self.model).__name__}")
        self.n_features_out_ = self.model_.dim  # raises for a model with no SiT encoder to embed with
        return self

    def transform(self, X: Any) -> np.ndarray:
        """Embeddings of the N records of ``X``: float32 ``(N, D)``, rows in the order of ``X``."""
        model = self.model_ if hasattr(self, "model_") else self.fit().model_
        items = self._items(X)
        result = model.embed_records(items, batch_size=self.batch_size).by_record()
        return result.embeddings

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        """``e0 ... e{D-1}``, the column names ``crema embed`` gives the embeddings in Parquet."""
        dim = self.n_features_out_ if hasattr(self, "n_features_out_") else self.fit().n_features_out_
        return np.asarray([f"e{i}" for i in range(dim)], dtype=object)

    def _items(self, X: Any) -> list[InputItem]:
        """One input item per record of ``X``, or a CremaError saying why ``X`` is not N records."""
        if hasattr(X, "to_numpy") and getattr(X, "ndim", 0) == 1:  # a pandas Series of paths
            X = X.tolist()
        if isinstance(X, np.ndarray) or hasattr(X, "detach"):
            if X.ndim != 3:
                raise CremaError(f"X has shape {tuple(X.shape)}; expected a stack of records (N, C, T) or "
                                 "(N, T, C), or a list of records (file paths, Recordings, (C, T) arrays)")
            return collect_inputs(X, self.fs, self.leads)
        if isinstance(X, (str, os.PathLike)) or not isinstance(X, Sequence):
            raise CremaError(f"X must be a stack (N, C, T) or a sequence of records, not {type(X).__name__}")
        items = []
        for i, record in enumerate(X):
            found = collect_inputs(record, self.fs, self.leads)
            if len(found) != 1:
                what = record if isinstance(record, (str, os.PathLike)) else type(record).__name__
                raise CremaError(f"X[{i}] ({what}) holds {len(found)} records; each element of X must be "
                                 "one record")
            items.extend(found)
        return items

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


__all__ = ["CremaEmbedder"]
