"""What the viewer shows for one uploaded ECG, computed without any web code.

:class:`Viewer` holds the model (a classifier or a pretrained checkpoint), the pretrained model
that draws the masked reconstruction (a pretrained MODEL itself, or the checkpoint a classifier
was fine-tuned from, or ``--pretrained``) and the record embeddings of a reference set.
:meth:`Viewer.analyze` turns uploaded files into one JSON-ready dict: the input contract, the
12-lead paper plot, the predictions with their thresholds (a regression head's predicted value),
the reconstruction and the nearest
reference ECGs. Every step reuses the library (readers, ``CremaModel``, ``viz``); a file that
cannot be used gives the message the CLI prints for it.

Uploads are data, never paths: each file is written under a sanitised name (:func:`upload_name`)
to a private temporary folder, at most ``limits.UPLOAD_BYTES`` in all, and read by the library's
readers, which read a record only from beside the file named (a WFDB header naming a signal file
by a path is refused, as are HDF5 data stored in other files) and check declared and decompressed
sizes against :mod:`crema.limits` before they allocate. Nothing the viewer
sends back names a folder of the server: messages name files as they were uploaded, the model and
the reference set go by their folder's name.
"""
from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import tempfile
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np
import pandas as pd

from .. import limits
from ..data.corpus import Corpus, LABEL_PREFIX, is_corpus, parse_corpus_spec
from ..data.stacks import RecordStack, is_stack
from ..errors import CremaError, printable
from ..use.api import CremaModel, MissingLeadsWarning, load, mean_by_record, stack_prepared
from ..use.contract import contract_report
from ..use.inputs import check_fs, collect_inputs
from ..viz.paper import no_mathtext, plot_ecg_paper
from ..viz.reconstruction import masked_mse, plot_reconstruction
from ..weights import resolve as resolve_model

N_NEIGHBOURS = 5
MAX_UPLOAD_FILES = 8        # a WFDB record is two or three files; more is not one ECG
MAX_NAME_BYTES = 200        # of an upload's name on disk (file systems allow 255)
MAX_SHOWN_NAME = 120        # characters of a name shown back to the user
MAX_MESSAGE = 500           # characters of an error message
COPY_CHUNK = 2**20          # bytes copied at a time from an upload to its file
UNSAFE_NAME_CHARS = re.compile(r"[/\\*?\[\]]")   # folder separators and glob characters

log = logging.getLogger(__name__)


class UploadError(CremaError):
    """An upload the viewer cannot show; the message (one line) is shown to the user as it is;
    ``status`` is the HTTP status the viewer answers it with."""

    status = 400


class UploadTooLarge(UploadError, limits.LimitError):
    """An upload over a limit of :mod:`crema.limits` (or over the memory the server has)."""

    status = 413


class UploadUnusable(UploadError):
    """An upload that failed in a way no reader describes (a ``ValueError`` from a library)."""

    status = 422


@dataclass(frozen=True)
class UploadName:
    """An uploaded file's name: ``disk``, the name its bytes are written under (no folder parts,
    control or glob characters, not hidden, at most MAX_NAME_BYTES of UTF-8), and ``shown``,
    the name as the user gave it, printable and shortened, for messages and the page."""

    disk: str
    shown: str


def upload_name(raw: str) -> UploadName:
    """The :class:`UploadName` of a file uploaded as ``raw`` (the part after its last ``/``: a
    browser sends the name alone, another client may send a path; a ``\\`` is a character of the
    name, as on the server's file system, and becomes ``_`` on disk)."""
    base = raw.rpartition("/")[2]
    shown = "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in printable(base))
    if len(shown) > MAX_SHOWN_NAME:
        shown = shown[:MAX_SHOWN_NAME - 23] + "..." + shown[-20:]
    disk = "".join("_" if UNSAFE_NAME_CHARS.match(ch) or not ch.isprintable() else ch for ch in base)
    if disk.startswith("."):        # hidden files are skipped by the record finder
        disk = "_" + disk
    stem, dot, suffix = disk.rpartition(".")
    if not (dot and stem and suffix) or len(suffix) > 10:
        stem, suffix = disk, ""
    suffix = "." + suffix if suffix else ""
    while stem and len((stem + suffix).encode("utf-8")) > MAX_NAME_BYTES:
        stem = stem[:-1]
    return UploadName(disk=(stem or "unnamed") + suffix, shown=shown or "(no name)")


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
        else:
            recon = fine_tuned_from(model, device)
        ref = load_reference(model, reference, progress) if reference else None
        return cls(model, recon, ref)

    def info(self) -> dict:
        """What the page says about the model before any upload; the model and reference set
        by name only (no folder of the server), and the upload limit in bytes."""
        m = self.model
        return {"model": repr(m), "source": Path(m.source).name, "kind": m.kind,
                "task_type": m.task_type, "classes": m.classes or [],
                "thresholds": [] if m.thresholds is None else
                [round(float(t), 4) for t in m.thresholds],
                "reconstruction": self.recon is not None,
                "reference": None if self.reference is None else
                {"where": self.reference.where, "records": int(len(self.reference.table))},
                "preprocess": {"fs": m.preprocess.fs, "window_s": m.preprocess.window_s,
                               "band": m.preprocess.band},
                "upload_limit_bytes": limits.UPLOAD_BYTES.value()}

    # ------------------------------------------------------------------ one upload

    def analyze(self, files: Sequence[tuple[str, bytes | BinaryIO]], fs: float | None = None,
                leads: Sequence[str] | None = None) -> dict:
        """Everything the page shows for the one record in ``files`` (``(name, content)`` pairs,
        the content as bytes or a binary file to read).

        Raises:
            UploadError: no record, several records, or a record that cannot be read or used
                (``UploadTooLarge``: over a limit; ``UploadUnusable``: an unexpected ValueError);
                one line naming the uploaded file as the user named it, and the problem.
        """
        with tempfile.TemporaryDirectory(prefix="crema-serve-") as tmp, self._lock:
            folder = Path(tmp)
            names: dict[str, str] = {}   # disk name -> shown name, filled as files are written
            try:
                rec, source = self._read_upload(folder, files, fs, leads, names)
                return self._analyze_record(rec, _scrubbed(Path(source).name, folder, names))
            except (CremaError, ValueError, MemoryError) as exc:
                raise _upload_error(exc, folder, names) from None

    def _read_upload(self, folder: Path, files, fs, leads, names: dict[str, str]):
        if not files:
            raise UploadError("no file uploaded")
        if len(files) > MAX_UPLOAD_FILES:
            raise UploadError(f"{len(files)} files uploaded; drop one ECG (a WFDB record is its .hea with "
                              "its .dat or .mat)")
        written = 0
        for raw, content in files:
            name = upload_name(raw)
            if name.disk in names:
                raise UploadError(f"two uploaded files are both named {name.shown}")
            names[name.disk] = name.shown
            written += _write_upload(content, folder / name.disk, written)
        if is_corpus(folder):
            raise UploadError("the upload is a prepared corpus; the viewer shows one ECG file")
        _check_one_record_per_stack(folder, names, fs, leads)
        items = collect_inputs(folder, fs, leads)
        if not items:
            raise UploadError(f"no ECG record in {', '.join(names.values())} (a WFDB record "
                              "needs its .hea and its .dat or .mat, dropped together)")
        if len(items) > 1:
            raise UploadError(f"the upload holds {len(items)} records; the viewer shows one ECG at a time")
        return items[0].load(), items[0].source

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
            result["predictions"], labels = predictions(model, signals, lead_mask, index)
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
        title = (f"{no_mathtext(name)}: first window, {ratio:.0%} of patches masked (seed 0); "
                 f"MSE on masked samples {error:.3f} (z-scored units)")
        with tempfile.TemporaryDirectory(prefix="crema-recon-") as tmp:
            out = plot_reconstruction(windows[0], pred[0], mask[0], Path(tmp) / "recon.png",
                                      fs=recon.preprocess.fs, lead_mask=lead_mask, title=title)
            return _png_data_url(out.read_bytes())


# ----------------------------------------------------------------------------- predictions

def predictions(model: CremaModel, signals: np.ndarray, lead_mask: np.ndarray,
                index: pd.DataFrame) -> tuple[list[dict], list[str]]:
    """A classifier's outputs for one record's windows ``(W, 12, T)`` (mean over the windows),
    as the page shows them, and the labels the plot's title carries.

    Returns:
        For class probabilities: one ``{"class", "probability", "threshold", "positive"}`` per
        class, and the classes at or above their threshold with their probability. For a
        regression head (no thresholds): one ``{"class": target, "value"}``, the predicted
        value in the target's units, and ``"<target> <value>"`` as the one label.
    """
    table = model.record_table(model.classify_windows(signals, lead_mask), index).iloc[0]
    if model.thresholds is None:
        shown = [{"class": c, "value": round(float(table[c]), 4)} for c in model.classes]
        return shown, [f"{p['class']} {p['value']:.4g}" for p in shown]
    shown = [{"class": c, "probability": round(float(table[c]), 4), "threshold": round(float(t), 4),
              "positive": bool(table[c] >= t)} for c, t in zip(model.classes, model.thresholds)]
    return shown, [f"{p['class']} {p['probability']:.2f}" for p in shown if p["positive"]]


# ----------------------------------------------------------------------------- uploads

def _write_upload(content: bytes | BinaryIO, target: Path, before: int) -> int:
    """Copy ``content`` to ``target`` a chunk at a time; its size in bytes.

    Raises:
        LimitError: ``before`` (bytes already written) plus this file exceed ``limits.UPLOAD_BYTES``.
    """
    source = io.BytesIO(content) if isinstance(content, (bytes, bytearray, memoryview)) else content
    written = 0
    with open(target, "xb") as out:
        while chunk := source.read(COPY_CHUNK):
            written += len(chunk)
            limits.UPLOAD_BYTES.check(before + written, "the upload")
            out.write(chunk)
    return written


def _check_one_record_per_stack(folder: Path, names: dict[str, str], fs, leads) -> None:
    """Refuse a stack of several records from its declared shape, before one item per row is
    listed (a 1 kB ``.npy`` may declare millions of rows)."""
    for disk, shown in names.items():
        if not is_stack(folder / disk):
            continue
        stack = RecordStack(folder / disk, fs=None if fs is None else check_fs(fs), leads=leads)
        try:
            if len(stack) != 1:
                raise UploadError(f"{shown} holds {len(stack)} records; the viewer shows one ECG at a time")
        finally:
            stack.close()


def _scrubbed(text: str, folder: Path, names: dict[str, str]) -> str:
    """``text`` with the private folder left out and each file named as it was uploaded."""
    text = text.replace(f"{folder}{os.sep}", "").replace(str(folder), "the upload")
    for disk, shown in names.items():
        if disk != shown:
            text = text.replace(disk, shown)
    return text


def _upload_error(exc: BaseException, folder: Path, names: dict[str, str]) -> UploadError:
    """The :class:`UploadError` (one line, no server path) for what reading or analysing raised."""
    uploaded = ", ".join(names.values()) or "the upload"
    if isinstance(exc, MemoryError):
        return UploadTooLarge(f"{uploaded}: too large to analyse in the memory this server has")
    lines = [line for line in _scrubbed(str(exc), folder, names).splitlines() if line.strip()]
    text = (lines[0] if lines else type(exc).__name__)[:MAX_MESSAGE]
    if isinstance(exc, limits.LimitError):
        return UploadTooLarge(text)
    if isinstance(exc, CremaError):
        return type(exc)(text) if isinstance(exc, UploadError) else UploadError(text)
    # a ValueError no reader turned into a message: say so in one line, keep the details here
    log.warning("crema serve: %s raised %s", uploaded, type(exc).__name__, exc_info=exc)
    return UploadUnusable(f"{uploaded}: cannot be analysed ({text})")


def fine_tuned_from(model: CremaModel, device: str | None = None) -> CremaModel | None:
    """The pretrained model a classifier was fine-tuned from (its ``init``: a checkpoint folder or
    a shipped model's name), when that still resolves to a pretrained checkpoint; else None."""
    init = str(model.config.get("init") or "")
    if not init:
        return None
    folder = resolve_model(init)
    if not folder.is_dir():
        return None
    candidate = load(folder, device=device)
    return candidate if candidate.kind == "pretrain" else None


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


__all__ = ["Viewer", "Reference", "UploadError", "UploadTooLarge", "UploadUnusable", "UploadName", "upload_name",
           "fine_tuned_from", "load_reference", "predictions", "shown_source"]
