"""The reference set the viewer finds the nearest ECGs in: record embeddings from an output of
``crema embed`` made with the viewer's model, or embedded when the viewer starts, named without the
server's folders."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..data.corpus import LABEL_PREFIX, Corpus, is_corpus, parse_corpus_spec
from ..errors import CremaError
from ..use.api import CremaModel
from ..use.results import mean_by_record, read_embed_output


@dataclass
class Reference:
    """Record embeddings of a reference set, centred on their ``mean`` ``(D,)`` and L2-normalised
    ``(n, D)``, and one row per record: ``record_id``, ``source``, ``labels`` (text, may be empty).

    Centring first (cosine similarity of the deviations from the reference's mean ECG) keeps the
    component that every ECG shares from making every pair look alike."""

    where: str
    embeddings: np.ndarray
    table: pd.DataFrame
    mean: np.ndarray


def load_reference(model: CremaModel, spec: str, progress: bool = False) -> Reference:
    """Record embeddings to search, from an output of ``crema embed`` made with this model
    (``OUT.npy`` beside ``OUT.index.csv`` and ``OUT.run.json``), or embedded now from anything
    ``crema embed`` reads (a corpus ``DIR[:split]``, a folder, a stack); a corpus's first label
    task (superdiagnostic when it has one) labels its records."""
    path = Path(spec)
    if path.suffix == ".npy" and path.with_name(path.stem + ".index.csv").is_file():
        embeddings, table = _embed_output(model, path)
    else:
        result = model.embed_records(spec, on_error="skip", progress=progress).by_record()
        if not len(result.embeddings):
            raise CremaError(f"{spec}: no reference record could be embedded")
        embeddings, table = result.embeddings, result.index[["record_id", "source"]].copy()
        table["labels"] = _corpus_labels(spec, table)
    mean = embeddings.mean(axis=0)
    centred = embeddings - mean
    norms = np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
    table["source"] = [shown_source(s) for s in table["source"]]
    return Reference(shown_source(spec), (centred / norms).astype(np.float32), table.reset_index(drop=True),
                     mean.astype(np.float32))


def shown_source(text: str) -> str:
    """A reference's spec or a record's source without the server's folders: ``DIR:split`` ->
    ``NAME:split``, ``/data/corpus[ptbxl/00001]`` -> ``corpus[ptbxl/00001]``, a file -> its name."""
    text = str(text)
    inner = re.fullmatch(r"(.*)\[([^\[\]]*)\]", text)
    if inner:
        return f"{Path(inner.group(1)).name}[{inner.group(2)}]"
    folder, splits = parse_corpus_spec(text)
    return (Path(folder).name or str(folder)) + (":" + ",".join(splits) if splits else "")


def _embed_output(model: CremaModel, npy: Path) -> tuple[np.ndarray, pd.DataFrame]:
    run = npy.with_name(npy.stem + ".run.json")
    made_with = json.loads(run.read_text()).get("fingerprint", {}) if run.is_file() else {}
    if made_with.get("config_sha256") != model.config_sha256 or made_with.get("features", "mean") != model.features:
        raise CremaError(f"{npy}: these embeddings were not made with {model.source} (see {run.name}); "
                         "embed the reference with this model")
    embeddings, index = read_embed_output(npy)
    if "window" in index.columns:  # a --per-window output: average each record's windows
        embeddings, index = mean_by_record(embeddings, index)
    table = index[["record_id", "source"]].copy()
    table["labels"] = ""
    return embeddings, table


def _corpus_labels(spec: str, table: pd.DataFrame) -> list[str]:
    corpus_dir, _ = parse_corpus_spec(spec)
    if not is_corpus(corpus_dir):
        return [""] * len(table)
    corpus = Corpus(corpus_dir)
    tasks = [t for t in corpus.tasks if "superdiagnostic" in t] or corpus.tasks
    if not tasks:
        return [""] * len(table)
    labels = corpus.columns.column(LABEL_PREFIX + tasks[0])
    names, groups = corpus.record_groups(np.arange(len(corpus)))  # the columns: no DataFrame of every window
    by_source = {f"{corpus.path}[{s}/{r}]": str(labels[rows[0]]) for (s, r), rows in zip(names, groups)}
    return [by_source.get(s, "") or "none" for s in table["source"]]
