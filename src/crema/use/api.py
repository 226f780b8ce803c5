"""The Python API: load a CREMA model folder and embed, reconstruct or classify users' ECGs.

    import crema
    model = crema.load("runs/finetune/best")          # config.json + model.safetensors
    probs = model.predict("my_ecgs/")                 # DataFrame: one row per record, one column per class

Every input goes through exactly the preprocessing saved in the checkpoint's ``config.json``
(:func:`crema.data.preprocess.preprocess_recording` with its ``PreprocessConfig``). When those
windows are longer than the model's input (a model trained on shorter crops), each window is
covered by evenly spaced crops of the model's length and their outputs are averaged, exactly as
:mod:`crema.eval.features` does when it evaluates a model (so the classifier's thresholds,
picked that way, still apply). Inference runs batched, in ``torch.inference_mode``, on the CPU
or a GPU. Missing leads are zeros with a lead mask and raise a :class:`MissingLeadsWarning`.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import __version__, precision as precision_
from ..config import EMBEDDING_FEATURES, STANDARD_LEADS, ModelConfig, PreprocessConfig, embedding_features
from ..config_io import from_dict, save_json
from ..data.preprocess import preprocess_recording
from ..data.recording import Recording
from ..data.spans import RecordingSpans, SpanReader, is_long
from ..data.stream import StreamedRecord
from ..atomic import replace_directory
from ..errors import CheckpointError, CremaError, PreprocessError, ReadError, WriteError
from ..model import checkpoint as ckpt
from ..model.inference import DEFAULT_BATCH, infer, reconstruct_windows
from ..runtime import resolve_device
from ..weights import resolve as resolve_model
from .inputs import InputItem, check_same_windows, collect_inputs
from .pipeline import Pool, WindowBatches
from .results import (INDEX_COLUMNS, EmbedResult, Failure, PredictResult, Prepared, RecordOutput, mean_by_record,
                      stack_outputs, stack_prepared)


class MissingLeadsWarning(UserWarning):
    """A record lacks some of the 12 leads; the model runs with the lead mask."""


def load(path: str | os.PathLike, device: str | torch.device | None = None,
         precision: str = "auto") -> "CremaModel":
    """Load a CREMA model folder (``config.json`` + ``model.safetensors``) for inference.

    Args:
        path: a shipped model's name (``crema models``), a checkpoint folder written by
            pretraining or fine-tuning, or one exported with
            :meth:`CremaModel.save_pretrained` / ``crema export`` (or its ``model.safetensors``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default CUDA when available.
        precision: ``"auto"`` (bf16 where the device multiplies it fast: a recent GPU, or a CPU
            with AVX512-BF16/AMX; else fp32), ``"bf16"`` or ``"fp32"``; see :mod:`crema.precision`.
            Weights stay fp32 either way; bf16 embeddings match fp32 to cosine >= 0.9999.

    Raises:
        CheckpointError: the folder is missing files or does not match the code.
    """
    folder = resolve_model(path)
    if folder.is_file() and folder.name == ckpt.MODEL_FILE:
        folder = folder.parent
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such model folder")
    network, config = ckpt.load_network(folder)
    return CremaModel(network, config, folder, resolve_device(device), precision)


class CremaModel:
    """A loaded CREMA checkpoint: embed, reconstruct and (for classifiers) predict.

    Attributes:
        kind: ``pretrain`` or ``classifier``; arch: ``sit`` or ``resnet1d``.
        preprocess: the :class:`PreprocessConfig` every input goes through.
        model_config: the :class:`ModelConfig` (SiT checkpoints), else ``None``.
        features: the embedding kind used when none is asked for (``mean`` or ``leads``, see
            :meth:`crema.model.sit.SiTEncoder.read_out`): the checkpoint's ``embedding.features``,
            ``mean`` when it has none.
        classes: class names (classifiers), in output order; thresholds: ``(K,)`` float.
        window: samples per model input (a SiT's window; longer preprocessed windows are
            covered by averaged crops, see :attr:`crop`).
        device: where inference runs.
        precision: ``"bf16"`` or ``"fp32"``, what the ``precision`` setting resolved to on ``device``.
    """

    def __init__(self, network: nn.Module, config: dict[str, Any], source: Path,
                 device: torch.device, precision: str = "auto"):
        self.config = config
        self.source = source
        self.kind: str = config["kind"]
        self.arch: str = config.get("arch", "sit")
        self.preprocess = from_dict(PreprocessConfig, config.get("preprocess", {}))
        self.model_config = from_dict(ModelConfig, config["model"]) if self.arch == "sit" else None
        self.features: str = embedding_features(config, source / "config.json")
        self.classes: list[str] | None = list(config["classes"]) if self.kind == "classifier" else None
        # multilabel | multiclass | regression; a regression head's output is scaled back to the
        # target with the training values' mean and standard deviation
        self.task_type: str | None = config.get("task_type", "multilabel") if self.kind == "classifier" else None
        self.target_scale = ((float(config["target_std"]), float(config["target_mean"]))
                             if self.task_type == "regression" else None)
        self.thresholds = self._thresholds(config)
        self.device = device
        self.precision = precision_.resolve(precision, device)
        self.network = network.to(device).eval()

    def __repr__(self) -> str:
        what = f"{self.kind} {self.arch}"
        if self.model_config is not None:
            what += f" {self.model_config.size} (D={self.model_config.dim})"
        if self.task_type == "regression":
            what += f", regression of {self.classes[0]}"
        elif self.classes:
            what += f", {len(self.classes)} class{'es' if len(self.classes) > 1 else ''}"
        return (f"CremaModel({what}, window {self.window} at {self.preprocess.fs:g} Hz, {self.device}, "
                f"{self.precision})")

    # ------------------------------------------------------------------ properties

    @property
    def window(self) -> int:
        """Samples per model input window (the SiT's window; the preprocessing's for a ResNet)."""
        return self.model_config.window if self.model_config is not None else self.preprocess.window

    @property
    def crop(self) -> int | None:
        """Model input length that windows are cropped to (outputs of the crops averaged): the
        classifier's saved ``crop``, else the SiT window; ``None`` (whole window) for a ResNet."""
        if self.arch != "sit":
            return self.config.get("crop")
        return int(self.config.get("crop") or self.model_config.window)

    @property
    def encoder(self) -> nn.Module:
        """The SiT encoder (``(B, 12, T) -> (B, D)``); a ResNet classifier has none."""
        encoder = getattr(self.network, "encoder", None)
        if encoder is None:
            raise CremaError(f"{self.source}: a {self.arch} classifier has no SiT encoder to embed with")
        return encoder

    @property
    def config_sha256(self) -> str:
        """First 16 hex digits of the SHA-256 of the checkpoint's config: outputs made with the
        same value came from the same model and preprocessing."""
        return hashlib.sha256(json.dumps(self.config, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def dim(self) -> int:
        """Width D of the encoder, and of ``mean`` embeddings (:meth:`feature_dim` for others)."""
        if self.model_config is None:
            raise CremaError(f"{self.source}: a {self.arch} classifier has no SiT encoder")
        return self.model_config.dim

    def _thresholds(self, config: dict[str, Any]) -> np.ndarray | None:
        if self.kind != "classifier" or self.task_type == "regression":
            return None
        raw = config.get("thresholds")
        if isinstance(raw, dict):
            raw = [raw.get(name, 0.5) for name in config["classes"]]
        values = np.full(len(config["classes"]), 0.5) if raw is None else np.asarray(raw, dtype=np.float64)
        if values.shape != (len(config["classes"]),):
            raise CheckpointError(f"{self.source}: {values.size} thresholds for {len(config['classes'])} classes")
        return values

    # ------------------------------------------------------------------ preprocessing

    def prepare(self, rec, source: str = "<recording>") -> Prepared:
        """Preprocess one :class:`Recording` exactly as the checkpoint says. Warns
        (:class:`MissingLeadsWarning`) when leads are missing.

        Raises:
            PreprocessError: the record cannot become model input (too short, NaN, no lead...).
        """
        return self._as_prepared(preprocess_recording(rec, self.preprocess), rec.record_id, source)

    def prepare_item(self, item: InputItem) -> Prepared:
        """Load one input item and make it model input: a recording is preprocessed; the stored
        windows of a corpus record are used as they are, once their preprocessing is checked to be
        the model's (so both give the same windows, up to the corpus's float16 storage)."""
        loaded = item.load()
        if item.preprocess is None:
            return self.prepare(loaded, item.source)
        check_same_windows(item.source, item.preprocess, self.preprocess)
        return self._as_prepared(loaded, item.record_id, item.source)

    def _as_prepared(self, windows, record_id: str, source: str, warn: bool = True) -> Prepared:
        """Check preprocessed :class:`~crema.data.preprocess.Windows` against the model and (with
        ``warn``) warn about missing leads."""
        length = self.input_crop(windows.signals.shape[-1]) or windows.signals.shape[-1]
        if self.model_config is not None and length % self.model_config.patch_size:
            raise PreprocessError(
                f"record {record_id}: model inputs of {length} samples are not a multiple "
                f"of the patch size {self.model_config.patch_size}")
        if warn:
            _warn_missing(windows.lead_mask, source, stacklevel=5)
        return Prepared(record_id, source, np.ascontiguousarray(windows.signals, dtype=np.float32),
                        windows.lead_mask.copy(), (windows.starts / self.preprocess.fs).astype(np.float64))

    def iter_prepared(self, inputs: Any, fs: float | None = None, leads: Sequence[str] | None = None,
                      on_error: str = "raise", progress: bool = False, *, dataset: str | None = None,
                      ids: str | os.PathLike | None = None) -> Iterator[Prepared | Failure]:
        """Load and prepare every record of ``inputs`` (see :mod:`crema.use.inputs`), one at a time.

        With ``on_error="skip"`` a record that cannot be read or preprocessed is yielded as a
        :class:`Failure` and the rest go on; with ``"raise"`` the first such error is raised.
        ``dataset`` and ``ids`` name the signal and id arrays of ``.npz``/HDF5 stacks.
        """
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        items = inputs if _is_item_list(inputs) else collect_inputs(
            inputs, fs, leads, dataset=dataset, ids=ids, preprocess=self.preprocess)
        for item in tqdm(items, desc="records", unit="rec", disable=not progress):
            try:
                yield self.prepare_item(item)
            except Exception as exc:  # noqa: BLE001 - in a batch, any broken file is listed, not fatal
                if on_error == "raise":
                    raise
                reason = str(exc) if isinstance(exc, CremaError) else f"{type(exc).__name__}: {exc}"
                yield Failure(item.record_id, item.source, reason)

    def iter_outputs(self, inputs: Any, apply: Callable[[np.ndarray, np.ndarray], np.ndarray],
                     fs: float | None = None, leads: Sequence[str] | None = None, batch_size: int = DEFAULT_BATCH,
                     on_error: str = "raise", progress: bool = False, workers: int | None = None, *,
                     dataset: str | None = None, ids: str | os.PathLike | None = None,
                     warn_missing: bool = True) -> Iterator[RecordOutput | Failure]:
        """``apply`` (windows ``(n, 12, T)``, lead masks ``(n, 12)`` -> ``(n, ...)``, such as
        :meth:`encode_windows`) on every window of every record of ``inputs``: one
        :class:`RecordOutput` (or, with ``on_error="skip"``, :class:`Failure`) per record, in input
        order.

        ``workers`` threads (default ``min(4, CPUs)``) read and preprocess records ahead of the
        model, a long record (:func:`crema.data.spans.is_long`) a chunk at a time in flat memory
        (:mod:`crema.data.stream`); ``apply`` gets exactly ``batch_size`` windows at a time
        (fewer for the last call), taken from consecutive records (:mod:`crema.use.pipeline`), so
        outputs do not depend on ``workers``. Missing leads warn (:class:`MissingLeadsWarning`) in
        the caller's thread, unless ``warn_missing`` is False (the caller tells them itself, from
        each output's ``lead_mask``: :func:`missing_leads`).
        """
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        items = inputs if _is_item_list(inputs) else collect_inputs(
            inputs, fs, leads, dataset=dataset, ids=ids, preprocess=self.preprocess)
        batches = WindowBatches(apply, batch_size)
        with Pool(workers) as pool, tqdm(total=len(items), desc="records", unit="rec",
                                         disable=not progress) as bar:
            open_record = False  # a long record's pieces are being handed in
            for piece in self._pieces(items, pool, on_error, batch_size + 2 * pool.workers, warn_missing):
                if isinstance(piece, Failure):
                    done = batches.fail(piece, drop_open=open_record)
                    open_record = False
                else:
                    prepared, first, last = piece
                    done = batches.add(prepared, prepared.signals, prepared.lead_mask, prepared.start_s,
                                       first, last)
                    open_record = not last
                for record in done:
                    bar.update(1)
                    yield _record_output(record)
            for record in batches.finish():
                bar.update(1)
                yield _record_output(record)

    def _pieces(self, items: list[InputItem], pool: Pool, on_error: str, ahead: int,
                warn: bool) -> Iterator[tuple[Prepared, bool, bool] | Failure]:
        """``(prepared windows, first, last)`` for each record (a long record in several pieces),
        or a :class:`Failure` (after a long record's first pieces when it fails part-way)."""
        for item, opened in zip(items, pool.map(self._open_item, items, ahead)):
            if isinstance(opened, Exception):
                yield _failure(item, opened, on_error)
            elif isinstance(opened, Prepared):
                if warn:
                    _warn_missing(opened.lead_mask, item.source)
                yield opened, True, True
            else:
                try:
                    chunks = range(opened.n_chunks)
                    mask = opened.normalise(list(pool.map(opened.stats, chunks, pool.workers + 1)))
                    if warn:
                        _warn_missing(mask, item.source)
                    for k, windows in enumerate(pool.map(opened.windows, chunks, pool.workers + 1)):
                        piece = self._as_prepared(windows, opened.record_id, item.source, warn=False)
                        yield piece, k == 0, k == opened.n_chunks - 1
                except Exception as exc:  # noqa: BLE001 - as any broken record: listed, not fatal
                    yield _failure(item, exc, on_error)

    def _open_item(self, item: InputItem) -> Prepared | StreamedRecord | Exception:
        """In a reading thread: a record's windows, a long record ready to be streamed, or what
        went wrong (raised in the caller's thread, in order)."""
        try:
            opened = item.open()
            if item.preprocess is not None:  # a corpus record's stored windows
                check_same_windows(item.source, item.preprocess, self.preprocess)
                if not np.isfinite(opened.signals).all():  # a damaged corpus: no NaN result is written
                    raise ReadError(item.source, "its stored windows hold NaN or infinite values")
                return self._as_prepared(opened, item.record_id, item.source, warn=False)
            if isinstance(opened, Recording) and is_long(opened.signal.shape[-1], len(opened.leads), opened.fs):
                opened = RecordingSpans(opened, item.source)
            if isinstance(opened, SpanReader):
                return StreamedRecord(opened, self.preprocess)
            windows = preprocess_recording(opened, self.preprocess)
            return self._as_prepared(windows, opened.record_id, item.source, warn=False)
        except Exception as exc:  # noqa: BLE001 - any broken file is that record's failure
            return exc

    # ------------------------------------------------------------------ inference

    def input_crop(self, length: int) -> int | None:
        """The crop that windows of ``length`` samples are covered with (outputs averaged):
        :attr:`crop` when shorter than the window, else None (the whole window is the input)."""
        return self.crop if self.crop is not None and self.crop < length else None

    @torch.inference_mode()
    @precision_.autocast_method
    def run(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], signals: np.ndarray,
            lead_mask: np.ndarray, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
        """Apply ``fn(x (b, 12, crop), lead_mask (b, 12)) -> (b, ...)`` in batches to windows
        ``(n, 12, T)``, averaging over the crops that cover each window
        (:func:`crema.model.inference.infer`); returns numpy ``(n, ...)``."""
        return infer(fn, signals, lead_mask, self.input_crop(signals.shape[-1]), batch_size, self.device)

    def feature_dim(self, features: str | None = None) -> int:
        """Width F of the ``features`` embeddings (default :attr:`features`): D for ``mean``,
        12 x D for ``leads``."""
        kind = features or self.features
        if kind not in EMBEDDING_FEATURES:
            raise CremaError(f"unknown embedding features {kind!r}: choose from {', '.join(EMBEDDING_FEATURES)}")
        return self.encoder.feature_dim(kind)

    def encode_windows(self, signals: np.ndarray, lead_mask: np.ndarray, batch_size: int = DEFAULT_BATCH,
                       features: str | None = None) -> np.ndarray:
        """Embeddings of preprocessed windows: ``(n, 12, T)``, ``(n, 12)`` -> ``(n, F)`` float32
        (``features``: ``mean`` or ``leads``, default :attr:`features`)."""
        encoder, kind = self.encoder, features or self.features
        width = self.feature_dim(kind)  # an unknown kind fails before any work
        out = self.run(lambda x, m: encoder.embedding(x, m, kind), signals, lead_mask, batch_size)
        return out.reshape(len(signals), width).astype(np.float32)

    def classify_windows(self, signals: np.ndarray, lead_mask: np.ndarray, batch_size: int = DEFAULT_BATCH) -> np.ndarray:
        """Sigmoid probabilities of preprocessed windows: ``(n, 12, T)`` -> ``(n, K)`` float32 (one
        column per class; a multi-class head too, one-vs-rest). A regression head gives the
        predicted values ``(n, 1)``: its output times the target's std plus its mean."""
        self.require_classifier("predict")
        if self.target_scale is not None:
            std, mean = self.target_scale
            # scaled in fp32: under bf16 autocast a value such as an age would keep only ~3 digits
            out = self.run(lambda x, m: self.network(x, lead_mask=m).float() * std + mean, signals, lead_mask,
                           batch_size)
        else:
            out = self.run(lambda x, m: torch.sigmoid(self.network(x, lead_mask=m)), signals, lead_mask, batch_size)
        return out.reshape(len(signals), len(self.classes)).astype(np.float32)

    def require_classifier(self, what: str) -> None:
        """Raise a :class:`CremaError` saying ``what`` needs a classifier, unless this is one."""
        if self.kind != "classifier":
            raise CremaError(f"{self.source}: {what} needs a fine-tuned classifier checkpoint; this is a "
                             f"{self.kind} checkpoint (use embed, or fine-tune it with crema finetune)")

    # ------------------------------------------------------------------ user-facing

    def embed_records(self, inputs: Any, fs: float | None = None, leads: Sequence[str] | None = None,
                      batch_size: int = DEFAULT_BATCH, on_error: str = "raise", progress: bool = False, *,
                      dataset: str | None = None, ids: str | os.PathLike | None = None,
                      features: str | None = None, workers: int | None = None) -> EmbedResult:
        """Embeddings of every window of every record, with an index saying which is which.

        Args:
            inputs: array ``(12, T)`` / ``(B, 12, T)`` (or leads last; needs ``fs``), Recording(s),
                file paths, folders or globs, stack files, corpus folders (see :mod:`crema.use.inputs`).
            fs, leads: sampling rate and row names for raw arrays and stacks.
            batch_size: windows per forward pass.
            on_error: ``"raise"`` or ``"skip"`` (bad records listed in ``errors``).
            progress: show a tqdm bar over records.
            dataset, ids: the signal and id arrays of ``.npz``/HDF5 stacks (default: CODE-15% names).
            features: ``mean`` (D) or ``leads`` (12 x D); default the model's :attr:`features`.
            workers: threads reading and preprocessing records ahead of the model (default
                ``min(4, CPUs)``; see :meth:`iter_outputs`).

        Returns:
            :class:`EmbedResult` with ``embeddings (n_windows, F)`` float32 (``.by_record()`` for
            one row per record).
        """
        width = self.feature_dim(features)  # an unknown kind fails before any record is read
        outputs, failures = _split(self.iter_outputs(
            inputs, lambda x, m: self.encode_windows(x, m, batch_size, features), fs, leads, batch_size,
            on_error, progress, workers, dataset=dataset, ids=ids))
        embeddings, index = stack_outputs(outputs, (width,))
        return EmbedResult(embeddings, index, failures)

    def embed(self, inputs: Any, fs: float | None = None, leads: Sequence[str] | None = None,
              batch_size: int = DEFAULT_BATCH, *, dataset: str | None = None,
              ids: str | os.PathLike | None = None, features: str | None = None) -> np.ndarray:
        """Embeddings ``(n_windows, F)`` float32 of ``inputs`` (rows in input order; a record
        longer than one window gives several rows, see :meth:`embed_records` for the index)."""
        return self.embed_records(inputs, fs, leads, batch_size, dataset=dataset, ids=ids,
                                  features=features).embeddings

    def reconstruct(self, inputs: Any, fs: float | None = None, leads: Sequence[str] | None = None,
                    seed: int | None = 0, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mask and reconstruct every window with the pretrained decoder.

        Returns:
            ``pred (n, 12, T)`` float32 (visible patches are the input, masked ones predicted),
            ``mask (n, 12, N)`` bool (True = masked), ``windows (n, 12, T)`` float32 (the model
            input: the preprocessed windows, centre-cropped to the model's window when longer).
        """
        if self.kind != "pretrain" or getattr(self.network, "decoder", None) is None:
            raise CremaError(f"{self.source}: reconstruct needs a pretrained checkpoint with a decoder "
                             f"(this is a {self.kind} {self.arch} checkpoint)")
        prepared, _ = _split(self.iter_prepared(inputs, fs, leads))
        signals, lead_mask, _ = stack_prepared(prepared, self.preprocess.window)
        return reconstruct_windows(self.network, signals, lead_mask, seed, batch_size)

    def predict_records(self, inputs: Any, fs: float | None = None, leads: Sequence[str] | None = None,
                        batch_size: int = DEFAULT_BATCH, on_error: str = "raise", progress: bool = False, *,
                        dataset: str | None = None, ids: str | os.PathLike | None = None,
                        workers: int | None = None) -> PredictResult:
        """Class probabilities per window and per record (mean over windows) with thresholded labels
        (arguments as :meth:`embed_records`)."""
        self.require_classifier("predict")
        outputs, failures = _split(self.iter_outputs(
            inputs, lambda x, m: self.classify_windows(x, m, batch_size), fs, leads, batch_size, on_error,
            progress, workers, dataset=dataset, ids=ids))
        probs, index = stack_outputs(outputs, (len(self.classes),))
        return PredictResult(probs, index, self.record_table(probs, index), failures)

    def predict(self, inputs: Any, fs: float | None = None, leads: Sequence[str] | None = None,
                batch_size: int = DEFAULT_BATCH, *, dataset: str | None = None,
                ids: str | os.PathLike | None = None) -> pd.DataFrame:
        """Probabilities per record: a DataFrame indexed by ``record_id`` with one column per class
        (the classifier's class names), averaged over the record's windows; a regression head gives
        one column, named after its target, of predicted values."""
        records = self.predict_records(inputs, fs, leads, batch_size, dataset=dataset, ids=ids).records
        return records.set_index("record_id")[list(self.classes)]

    def record_table(self, window_probs: np.ndarray, index: pd.DataFrame) -> pd.DataFrame:
        """Per-record mean probabilities and thresholded ``labels`` from per-window ones."""
        probs, records = mean_by_record(window_probs, index)
        table = records[["record_id", "source", "n_windows"]].copy()
        table[list(self.classes)] = probs
        return self.with_labels(table)

    def window_table(self, window_probs: np.ndarray, index: pd.DataFrame) -> pd.DataFrame:
        """Per-window probabilities and thresholded ``labels``: the index columns, then the classes."""
        table = index[list(INDEX_COLUMNS)].reset_index(drop=True)
        table[list(self.classes)] = window_probs
        return self.with_labels(table)

    def with_labels(self, table: pd.DataFrame) -> pd.DataFrame:
        """``table`` with a ``labels`` column: the classes at or above their thresholds, ``|``-joined
        (a regression head's table is returned as it is: a value has no label)."""
        if self.thresholds is None:
            return table
        positive = table[list(self.classes)].to_numpy() >= self.thresholds[None, :]
        table["labels"] = ["|".join(c for c, on in zip(self.classes, row) if on) for row in positive]
        return table

    # ------------------------------------------------------------------ export

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write a self-contained model folder (``config.json`` + ``model.safetensors`` +
        ``preprocess.json``) that :func:`load` reads back without the training run or network.

        Training-only files (``training_state.pt``) are not copied.
        """
        directory = Path(directory)
        if directory.resolve() == self.source.resolve():
            raise CremaError(f"{directory}: refusing to export a model onto its own folder")
        if directory.exists() and not _is_model_folder(directory):
            raise CremaError(f"{directory}: exists and is not a model folder; refusing to replace it")
        config = dict(self.config)
        config["exported"] = {"from": str(self.source), "crema_version": __version__}
        # Written whole in a temporary sibling, then renamed into place: a shippable folder of
        # plain files that is either the old export or the new one, never a mix.
        tmp = directory.parent / f".{directory.name}.export-{uuid.uuid4().hex[:8]}"
        try:
            ckpt.write_checkpoint_files(tmp, self.network, config)
            save_json(tmp / "preprocess.json", self.preprocess)
            replace_directory(tmp, directory)
        except WriteError:
            raise
        except OSError as exc:
            raise WriteError(directory, exc) from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return directory


def _is_model_folder(directory: Path) -> bool:
    """True for a folder holding nothing but a CREMA model (an earlier export), or nothing."""
    allowed = set(ckpt.CHECKPOINT_FILES) | {ckpt.STORE, "preprocess.json"}
    return directory.is_dir() and all(p.name in allowed for p in directory.iterdir())


def _is_item_list(inputs: Any) -> bool:
    return isinstance(inputs, list) and bool(inputs) and all(isinstance(i, InputItem) for i in inputs)


def _split(results: Iterable[Prepared | Failure]) -> tuple[list[Prepared], list[Failure]]:
    prepared, failures = [], []
    for result in results:
        (failures if isinstance(result, Failure) else prepared).append(result)
    return prepared, failures


def missing_leads(lead_mask: np.ndarray, source: str) -> str | None:
    """What to tell about a record some of whose 12 leads are absent or flat (None when none is)."""
    if lead_mask.all():
        return None
    missing = [name for name, ok in zip(STANDARD_LEADS, lead_mask) if not ok]
    return f"{source}: leads {', '.join(missing)} are missing or flat; running with the lead mask"


def _warn_missing(lead_mask: np.ndarray, source: str, stacklevel: int = 3) -> None:
    """A :class:`MissingLeadsWarning` when some of the 12 leads are absent or flat."""
    message = missing_leads(lead_mask, source)
    if message:
        warnings.warn(message, MissingLeadsWarning, stacklevel=stacklevel)


def _failure(item: InputItem, exc: Exception, on_error: str) -> Failure:
    """The :class:`Failure` of ``item``; raises ``exc`` itself when ``on_error`` is ``"raise"``."""
    if on_error == "raise":
        raise exc
    reason = str(exc) if isinstance(exc, CremaError) else f"{type(exc).__name__}: {exc}"
    return Failure(item.record_id, item.source, reason)


def _record_output(done) -> RecordOutput | Failure:
    """A :class:`~crema.use.pipeline.Done` record as the API hands it back."""
    if done.failed:
        return done.meta
    first = done.meta
    values = done.outputs if done.outputs is not None else np.zeros((0,), dtype=np.float32)
    return RecordOutput(first.record_id, first.source, values, first.lead_mask, np.concatenate(done.extras))
