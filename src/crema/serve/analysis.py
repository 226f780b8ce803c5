"""What the viewer shows for one uploaded ECG, computed without any web code.

:class:`Viewer` holds the model (a classifier or a pretrained checkpoint), the pretrained model
that draws the masked reconstruction (a pretrained MODEL itself, or the checkpoint a classifier
was fine-tuned from, or ``--pretrained``) and the record embeddings of a reference set
(:mod:`crema.serve.reference`). :meth:`Viewer.analyze` turns uploaded files
(:mod:`crema.serve.uploads`: data, never paths) into one JSON-ready dict: the input contract, the
12-lead paper plot, the predictions with their thresholds (a regression head's predicted value),
the reconstruction and the nearest reference ECGs. Every step reuses the library (readers,
``CremaModel``, ``viz``); a file that cannot be used gives the message the CLI prints for it.
Nothing the viewer sends back names a folder of the server: messages name files as they were
uploaded, the model and the reference set go by their folder's name.
"""
from __future__ import annotations

import base64
import io
import os
import tempfile
import threading
import warnings
from pathlib import Path
from typing import BinaryIO, Sequence

import numpy as np
import pandas as pd

from .. import limits
from ..errors import CremaError
from ..use.api import CremaModel, MissingLeadsWarning, load
from ..use.results import mean_by_record, stack_prepared
from ..use.contract import contract_report
from ..viz.paper import no_mathtext, plot_ecg_paper
from ..viz.reconstruction import masked_mse, plot_reconstruction
from ..weights import resolve as resolve_model
from .reference import Reference, load_reference
from .uploads import read_upload, scrubbed, upload_error

N_NEIGHBOURS = 5


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
                rec, source = read_upload(folder, files, fs, leads, names)
                return self._analyze_record(rec, scrubbed(Path(source).name, folder, names))
            except (CremaError, ValueError, MemoryError) as exc:
                raise upload_error(exc, folder, names) from None

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


def _paper_png(rec, labels: Sequence[str]) -> bytes:
    fig = plot_ecg_paper(rec, labels=labels, dpi=100)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi, facecolor=fig.get_facecolor())
    return buffer.getvalue()


def _png_data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


__all__ = ["Viewer", "fine_tuned_from", "predictions"]
