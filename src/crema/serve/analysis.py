"""What the viewer shows for one uploaded ECG, computed without any web code.

:class:`Viewer` holds the model (a classifier or a pretrained checkpoint), the pretrained model
that draws the masked reconstruction (a pretrained MODEL itself, or the checkpoint a classifier
was fine-tuned from, or ``--pretrained``) and the record embeddings of a reference set.
:meth:`Viewer.analyze` turns uploaded files into one JSON-ready dict: the input contract, the
12-lead paper plot, the predictions with their thresholds, the reconstruction and the nearest
reference ECGs. Every step reuses the library (readers, ``CremaModel``, ``viz``); a file that
cannot be used gives the message the CLI prints for it.
"""
from __future__ import annotations

import base64
import io
import json
import os
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from ..data.corpus import Corpus, LABEL_PREFIX, is_corpus, parse_corpus_spec
from ..errors import CremaError
from ..use.api import CremaModel, MissingLeadsWarning, load, mean_by_record, stack_prepared
from ..use.contract import contract_report
from ..use.inputs import collect_inputs
from ..viz.paper import plot_ecg_paper
from ..viz.reconstruction import masked_mse, plot_reconstruction

N_NEIGHBOURS = 5
MAX_UPLOAD_FILES = 8        # a WFDB record is two or three files; more is not one ECG


class UploadError(CremaError):
    """An upload the viewer cannot show; the message is shown to the user as it is."""


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


class Viewer:
    """A loaded model (and optional reconstruction model and reference set) for the viewer."""

    def __init__(self, model: CremaModel, recon: CremaModel | None = None, reference: Reference | None = None):
        self.model, self.recon, self.reference = model, recon, reference
        # pyplot (used by the reconstruction figure) and one model are shared by request threads
        self._lock = threading.Lock()

    @classmethod
    def from_paths(cls, checkpoint: str | os.PathLike, pretrained: str | os.PathLike | None = None,
                   reference: str | None = None, device: str | None = None,
                   progress: bool = False) -> "Viewer":
        """Load ``checkpoint``; the reconstruction model is ``pretrained``, else ``checkpoint``
        itself when it is a pretrained one, else the checkpoint a classifier was fine-tuned from
        when that folder still exists; ``reference`` as :func:`load_reference` takes it."""
        model = load(checkpoint, device=device)
        recon = None
        if pretrained is not None:
            recon = load(pretrained, device=device)
            if recon.kind != "pretrain":
                raise CremaError(f"{pretrained}: --pretrained needs a pretrained checkpoint (with a decoder)")
        elif model.kind == "pretrain":
            recon = model
        elif Path(str(model.config.get("init", ""))).is_dir():
            candidate = load(model.config["init"], device=device)
            recon = candidate if candidate.kind == "pretrain" else None
        ref = load_reference(model, reference, progress) if reference else None
        return cls(model, recon, ref)

    def info(self) -> dict:
        """What the page says about the model before any upload."""
        m = self.model
        return {"model": repr(m), "source": str(m.source), "kind": m.kind,
                "classes": m.classes or [], "thresholds": [] if m.thresholds is None else
                [round(float(t), 4) for t in m.thresholds],
                "reconstruction": self.recon is not None,
                "reference": None if self.reference is None else
                {"where": self.reference.where, "records": int(len(self.reference.table))},
                "preprocess": {"fs": m.preprocess.fs, "window_s": m.preprocess.window_s,
                               "band": m.preprocess.band}}

    # ------------------------------------------------------------------ one upload

    def analyze(self, files: Sequence[tuple[str, bytes]], fs: float | None = None,
                leads: Sequence[str] | None = None) -> dict:
        """Everything the page shows for the one record in ``files`` (``(name, content)`` pairs).

        Raises:
            UploadError: no record, several records, or a record that cannot be read or used;
                the message names the uploaded file and the problem.
        """
        with tempfile.TemporaryDirectory(prefix="crema-serve-") as tmp, self._lock:
            folder = Path(tmp)
            try:
                rec, name = self._read_upload(folder, files, fs, leads)
                return self._analyze_record(rec, name)
            except CremaError as exc:
                # the message names the file by its temporary path; the user knows it by its name
                raise UploadError(str(exc).replace(f"{folder}{os.sep}", "")) from None

    def _read_upload(self, folder: Path, files, fs, leads):
        if not files:
            raise UploadError("no file uploaded")
        if len(files) > MAX_UPLOAD_FILES:
            raise UploadError(f"{len(files)} files uploaded; drop one ECG (a WFDB record is its .hea with "
                              "its .dat or .mat)")
        for name, content in files:
            safe = Path(name).name
            if not safe or safe.startswith("."):
                raise UploadError(f"{name!r} is not a usable file name")
            (folder / safe).write_bytes(content)
        items = collect_inputs(folder, fs, leads)
        if not items:
            raise UploadError(f"no ECG record in {', '.join(Path(n).name for n, _ in files)} (a WFDB record "
                              "needs its .hea and its .dat or .mat, dropped together)")
        if len(items) > 1:
            raise UploadError(f"the upload holds {len(items)} records; the viewer shows one ECG at a time")
        return items[0].load(), Path(items[0].source).name

    def _analyze_record(self, rec, name: str) -> dict:
        model = self.model
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MissingLeadsWarning)  # the contract shows missing leads
            prepared = model.prepare(rec, name)
        signals, lead_mask, index = stack_prepared([prepared], model.preprocess.window)
        result = {"file": name, "record_id": rec.record_id, "fs": rec.fs, "duration_s": round(rec.duration_s, 2),
                  "leads_in_file": list(rec.leads), "windows": int(len(signals)),
                  "contract": contract_report(rec, model.preprocess)}
        labels: list[str] = []
        if model.kind == "classifier":
            table = model.record_table(model.classify_windows(signals, lead_mask), index).iloc[0]
            result["predictions"] = [
                {"class": c, "probability": round(float(table[c]), 4), "threshold": round(float(t), 4),
                 "positive": bool(table[c] >= t)} for c, t in zip(model.classes, model.thresholds)]
            labels = [f"{p['class']} {p['probability']:.2f}" for p in result["predictions"] if p["positive"]]
        if model.model_config is not None:
            embedding, _ = mean_by_record(model.encode_windows(signals, lead_mask), index)
            result["neighbours"] = self.neighbours(embedding[0])
        result["plot_png"] = _png_data_url(_paper_png(rec, labels))
        result["reconstruction_png"] = self._reconstruction(rec, name) if self.recon is not None else None
        return result

    def neighbours(self, embedding: np.ndarray, k: int = N_NEIGHBOURS) -> list[dict]:
        """The ``k`` reference records most similar to ``embedding`` (cosine similarity of
        deviations from the reference mean, see :class:`Reference`)."""
        if self.reference is None:
            return []
        ref = self.reference
        centred = embedding - ref.mean
        similarity = ref.embeddings @ (centred / max(float(np.linalg.norm(centred)), 1e-12))
        order = np.argsort(-similarity)[:k]
        return [{"record_id": str(ref.table["record_id"].iloc[i]), "source": str(ref.table["source"].iloc[i]),
                 "labels": str(ref.table["labels"].iloc[i]), "similarity": round(float(similarity[i]), 4)}
                for i in order]

    def _reconstruction(self, rec, name: str) -> str:
        recon = self.recon
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", MissingLeadsWarning)
            pred, mask, windows = recon.reconstruct([rec], seed=0)
            lead_mask = recon.prepare(rec, name).lead_mask
        error = masked_mse(windows[0], pred[0], mask[0], lead_mask)
        ratio = float(mask[0].mean())
        title = (f"{name}: first window, {ratio:.0%} of patches masked (seed 0); "
                 f"MSE on masked samples {error:.3f} (z-scored units)")
        with tempfile.TemporaryDirectory(prefix="crema-recon-") as tmp:
            out = plot_reconstruction(windows[0], pred[0], mask[0], Path(tmp) / "recon.png",
                                      fs=recon.preprocess.fs, lead_mask=lead_mask, title=title)
            return _png_data_url(out.read_bytes())


# ----------------------------------------------------------------------------- reference set

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
    return Reference(str(spec), (centred / norms).astype(np.float32), table.reset_index(drop=True),
                     mean.astype(np.float32))


def _embed_output(model: CremaModel, npy: Path) -> tuple[np.ndarray, pd.DataFrame]:
    run = npy.with_name(npy.stem + ".run.json")
    made_with = json.loads(run.read_text()).get("fingerprint", {}) if run.is_file() else {}
    if made_with.get("config_sha256") != model.config_sha256:
        raise CremaError(f"{npy}: these embeddings were not made with {model.source} (see {run.name}); "
                         "embed the reference with this model")
    embeddings = np.load(npy)
    index = pd.read_csv(npy.with_name(npy.stem + ".index.csv"), dtype={"record_id": str, "source": str})
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
    column = LABEL_PREFIX + tasks[0]
    first = corpus.index.drop_duplicates(["source", "record_id"])
    by_source = {f"{corpus.path}[{s}/{r}]": str(v) for s, r, v in
                 zip(first["source"], first["record_id"], first[column])}
    return [by_source.get(s, "") or "none" for s in table["source"]]


# ----------------------------------------------------------------------------- images

def _paper_png(rec, labels: Sequence[str]) -> bytes:
    fig = plot_ecg_paper(rec, labels=labels, dpi=100)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi, facecolor=fig.get_facecolor())
    return buffer.getvalue()


def _png_data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


__all__ = ["Viewer", "Reference", "UploadError", "load_reference"]
