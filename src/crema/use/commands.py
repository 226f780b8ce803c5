"""CLI subcommands for using a model: ``embed``, ``predict``, ``plot``, ``embed-map``, ``export``,
``export-onnx``.

Batch commands (``embed``, ``predict``) take files, folders and globs in any format CREMA reads,
stacks (``.npy``/``.npz`` ``(N, C, T)`` or ``(N, T, C)``, HDF5 in the CODE-15% layout) and prepared
corpus folders (``DIR`` or ``DIR:split``); they write one row per record (its windows averaged) or,
with ``--per-window``, one row per 10 s window. They show a progress bar, skip a bad record (listed
on stderr and in ``OUT.errors.csv`` with its reason) and go on with the rest, and write their
outputs atomically every ``--chunk`` records (less often once the output is large). A re-run with
the same ``--out`` skips the records already in the output (the output's ``.run.json`` sidecar
records which checkpoint and options made it). Exit status 0 when every record succeeded, 1 when
any failed (the outputs then hold the records that did not). That machinery is
:mod:`crema.use.batch`; each command here loads its model, supplies the model work on a chunk and
writes its own output files.

torch and the model code are imported inside the run functions: the CLI imports every commands
module to build its parser, and ``crema --help`` or a typo stays fast.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..atomic import atomic_path, atomic_write_text, make_parent
from ..config import EMBEDDING_FEATURES
from ..errors import CremaError, ReadError, install_hint
from ..flags import UsageError, device_flag, number_in
from ..locking import output_lock
from .batch import (BatchOutputs, add_batch_options, add_input_options, checkpoint_fingerprint, lead_list,
                    refuse_non_finite, run_batch)
from .inputs import collect_inputs
from .results import INDEX_COLUMNS, RECORD_COLUMNS, mean_by_record, read_embed_output, stack_outputs

METHOD_NAMES = {"pca": "PCA", "tsne": "t-SNE"}
CHECKPOINT_HELP = "checkpoint folder, exported model folder, or the name of a shipped model (see crema models)"


def register(subparsers: Any) -> None:
    _register_embed(subparsers)
    _register_predict(subparsers)
    _register_plot(subparsers)
    _register_embed_map(subparsers)
    _register_export(subparsers)
    _register_export_onnx(subparsers)


# ============================================================================ embed

def _register_embed(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "embed", help="embeddings of ECG records (one row per record, or per window)",
        description="Embed every record with a CREMA checkpoint: each 10 s window is embedded and a "
                    "record's row is the mean of its windows' embeddings. Writes OUT.npy (float32, "
                    "n_records x F: F = D for --features mean, 12 x D for leads) and OUT.index.csv "
                    "(record_id, source, n_windows, leads_present); with "
                    "--per-window one row per window (index: record_id, source, window, start_s, "
                    "leads_present). OUT.parquet writes one table (needs pyarrow).")
    p.add_argument("checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("inputs", nargs="+",
                   help="ECG files, folders or globs (any supported format), .npy/.npz/HDF5 stacks, "
                        "prepared corpus folders (DIR or DIR:split,split)")
    p.add_argument("--out", required=True, help="output path (OUT.npy + OUT.index.csv, or OUT.parquet)")
    p.add_argument("--features", choices=EMBEDDING_FEATURES,
                   help="mean: the pooled embedding (D values); leads: each lead's mean token, normed (12 x D; "
                        "a missing lead's block is zeros); default: the model's own (mean unless its config "
                        "says otherwise)")
    add_batch_options(p)
    p.set_defaults(func=run_embed)


# --out names that promise a format crema embed does not write
OTHER_FORMAT_SUFFIXES = frozenset({".npz", ".csv", ".tsv", ".txt", ".json", ".h5", ".hdf5", ".pt", ".pth", ".pkl",
                                   ".pickle", ".feather", ".xlsx", ".mat"})


def run_embed(args: argparse.Namespace) -> int:
    """``crema embed``: OUT.npy + OUT.index.csv, then (for ``--out X.parquet``) the one table."""
    from .api import load

    suffix = Path(args.out).suffix.lower()
    if suffix in OTHER_FORMAT_SUFFIXES:  # `--out emb.npz` would write emb.npz.npy: say what is written instead
        raise UsageError(f"argument --out: crema embed writes OUT.npy + OUT.index.csv (--out OUT or OUT.npy), "
                         f"or one table with --out OUT.parquet; not a {suffix} file")
    parquet = Path(args.out) if suffix == ".parquet" else None
    if parquet is not None:
        _require_pyarrow()  # before the model is loaded: fail fast
    model = load(args.checkpoint, device=args.device)
    outputs = BatchOutputs(parquet.with_suffix("") if parquet is not None else args.out, ".npy")
    with output_lock(outputs.path(".npy"), "crema embed"):  # a second run into the same --out would lose records
        status = _embed_to_npy(args, model, outputs)
        if parquet is not None:
            _write_parquet(outputs, parquet)
    return status


def _embed_to_npy(args: argparse.Namespace, model, outputs: BatchOutputs) -> int:
    """The batch job writing ``OUT.npy`` (float32 ``(rows, F)``) and ``OUT.index.csv``, extending
    an existing output of the same checkpoint and options; returns the exit status."""
    npy, index_csv = outputs.path(".npy"), outputs.path(".index.csv")
    make_parent(npy)
    features = args.features or model.features
    width = model.feature_dim(features)
    fingerprint = checkpoint_fingerprint(model, args)
    if features != "mean":  # outputs written before the choice existed are mean ones, and resume as such
        fingerprint["features"] = features
    embeddings, index = np.zeros((0, width), dtype=np.float32), pd.DataFrame()
    if outputs.check_resumable(fingerprint, args.overwrite, npy.exists() or index_csv.exists()):
        embeddings, index = _load_embeddings(outputs, npy, index_csv, width)
    parts = {"emb": [embeddings], "index": [index]}

    def process(records: list) -> tuple[int, list[dict]]:
        emb, chunk_index = stack_outputs(records, (width,))
        emb, chunk_index, more = refuse_non_finite(emb, chunk_index, "embeddings")
        if not args.per_window:  # a chunk holds whole records, so each is averaged here
            emb, chunk_index = mean_by_record(emb, chunk_index)
        parts["emb"].append(emb)
        parts["index"].append(chunk_index)
        return len(records) - len(more), more

    def flush(failures: list[dict]) -> None:
        emb = np.concatenate(parts["emb"])
        frame = pd.concat([f for f in parts["index"] if len(f)], ignore_index=True) if any(
            len(f) for f in parts["index"]) else pd.DataFrame(
            columns=list(INDEX_COLUMNS if args.per_window else RECORD_COLUMNS))
        parts["emb"], parts["index"] = [emb], [frame]
        _atomic_save_npy(npy, emb)  # the index is written second: it is what marks rows as done
        atomic_write_text(index_csv, frame.to_csv(index=False))
        outputs.write_errors(failures)
        outputs.write_run(fingerprint, {"windows": int(len(emb)), "records": int(frame["source"].nunique()),
                                        "failed": len(failures), "dim": width, "features": features})

    done = set(index["source"].astype(str)) if len(index) else set()
    status = run_batch(args, model, outputs, done, process, flush,
                       apply=lambda x, m: model.encode_windows(x, m, args.batch_size, features))
    print(f"crema embed: wrote {npy} {tuple(parts['emb'][0].shape)} and {index_csv}")
    return status


def _atomic_save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)


def _load_embeddings(outputs: BatchOutputs, npy: Path, index_csv: Path, dim: int) -> tuple[np.ndarray, pd.DataFrame]:
    """An existing output to extend (:func:`~crema.use.results.read_embed_output`); one that cannot
    be read back, or was made with another width, is one clear error that says how to start again."""
    if not (npy.is_file() and index_csv.is_file()):
        raise CremaError(f"{npy.with_suffix('')}: only one of {npy.name} and {index_csv.name} exists; "
                         "pass --overwrite")
    try:
        embeddings, index = read_embed_output(npy, index_csv, resuming=True)
    except ReadError as exc:
        raise outputs.damaged(Path(exc.path), ValueError(exc.problem)) from None
    if embeddings.shape[1] != dim:
        raise CremaError(f"{npy}: shape {embeddings.shape} does not fit {index_csv.name} "
                         f"({len(index)} rows, D={dim}); pass --overwrite")
    return embeddings, index


def _require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise CremaError(f"--out *.parquet needs pyarrow, the parquet extra ({install_hint('parquet')}); "
                         "or use --out X for X.npy + X.index.csv") from None


def _write_parquet(outputs: BatchOutputs, parquet: Path) -> None:
    """One table from the written ``OUT.npy`` + ``OUT.index.csv``: the index columns, then
    ``e0..e{D-1}``."""
    emb = np.load(outputs.path(".npy"))
    index = pd.read_csv(outputs.path(".index.csv"), dtype={"record_id": str, "source": str})
    table = pd.concat([index, pd.DataFrame(emb, columns=[f"e{i}" for i in range(emb.shape[1])])], axis=1)
    with atomic_path(parquet) as tmp:
        table.to_parquet(tmp, index=False)
    print(f"crema embed: wrote {parquet}")


# ============================================================================ predict

def _register_predict(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "predict", help="class probabilities and labels (a regression model: a value) of ECG records",
        description="One row per record: record_id, source, n_windows, the probability of each class "
                    "(mean over the record's windows) and labels (classes at or above the checkpoint's "
                    "thresholds, |-joined). A model fine-tuned on a regression task writes one column "
                    "named after its target (the mean predicted value) instead of probabilities and "
                    "labels. With --per-window one row per window (record_id, source, window, start_s, "
                    "leads_present, then the same columns).")
    p.add_argument("checkpoint", help="classifier " + CHECKPOINT_HELP)
    p.add_argument("inputs", nargs="+",
                   help="ECG files, folders or globs (any supported format), .npy/.npz/HDF5 stacks, "
                        "prepared corpus folders (DIR or DIR:split,split)")
    p.add_argument("--out", required=True, help="CSV to write")
    add_batch_options(p)
    p.set_defaults(func=run_predict)


def run_predict(args: argparse.Namespace) -> int:
    from .api import load

    model = load(args.checkpoint, device=args.device)
    model.require_classifier("crema predict")
    out = Path(args.out)
    make_parent(out)
    outputs = BatchOutputs(out, ".csv")
    with output_lock(out, "crema predict"):  # a second run into the same --out would lose records
        return _predict_to_csv(args, model, out, outputs)


def _predict_to_csv(args: argparse.Namespace, model, out: Path, outputs: BatchOutputs) -> int:
    """The batch job writing ``OUT.csv``, extending an existing output of the same checkpoint and
    options; returns the exit status."""
    fingerprint = checkpoint_fingerprint(model, args)
    first = list(INDEX_COLUMNS) if args.per_window else ["record_id", "source", "n_windows"]
    labels = [] if model.thresholds is None else ["labels"]  # a regression head predicts a value, no label
    columns = [*first, *model.classes, *labels]
    table = pd.DataFrame(columns=columns)
    if outputs.check_resumable(fingerprint, args.overwrite, out.exists()):
        try:
            table = pd.read_csv(out, dtype={"record_id": str, "source": str, "labels": str}, keep_default_na=False)
        except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise outputs.damaged(out, exc) from None
        if list(table.columns) != columns:
            raise CremaError(f"{out}: columns {list(table.columns)} do not match this classifier; pass --overwrite")
    parts = [table]

    def process(records: list) -> tuple[int, list[dict]]:
        probs, index = stack_outputs(records, (len(model.classes),))
        probs, index, more = refuse_non_finite(probs, index, "predictions")
        parts.append((model.window_table if args.per_window else model.record_table)(probs, index))
        return len(records) - len(more), more

    def flush(failures: list[dict]) -> None:
        frame = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) else parts[0]
        parts[:] = [frame]
        atomic_write_text(out, frame.to_csv(index=False, float_format="%.6f"))
        outputs.write_errors(failures)
        outputs.write_run(fingerprint, {"records": int(len(frame)), "failed": len(failures),
                                        "task_type": model.task_type, "classes": list(model.classes),
                                        "thresholds": None if model.thresholds is None else
                                        [float(t) for t in model.thresholds]})

    status = run_batch(args, model, outputs, set(table["source"].astype(str)), process, flush,
                       apply=lambda x, m: model.classify_windows(x, m, args.batch_size))
    print(f"crema predict: wrote {out} ({len(parts[0])} {'windows' if args.per_window else 'records'})")
    return status


# ============================================================================ plot

def _register_plot(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "plot", help="draw one ECG as a 12-lead paper printout (with predicted labels)",
        description="Standard 3x4 layout of 2.5 s segments plus a lead II rhythm strip, 25 mm/s, "
                    "10 mm/mV, on a 1 mm / 5 mm grid. With a classifier --checkpoint the predicted "
                    "labels go in the title (a regression model: its predicted value).")
    p.add_argument("input", help="one ECG file (any supported format)")
    p.add_argument("--out", required=True, help="image to write (.png, .pdf or .svg)")
    p.add_argument("--checkpoint", help="classifier checkpoint: put its predicted labels in the title (a "
                                        "checkpoint or exported model folder, or a shipped model's name)")
    p.add_argument("--start", type=number_in(float, 0), default=0.0, help="second of the record where the page starts")
    p.add_argument("--no-filter", action="store_true", help="draw the raw signal (no 0.5 Hz display high-pass)")
    # above 1200 dpi a printout is hundreds of megapixels: memory, not detail
    p.add_argument("--dpi", type=number_in(int, 10, 1200), default=150, help="PNG resolution (default 150)")
    p.add_argument("--device", type=device_flag, help="device for the checkpoint (default: cuda when available)")
    add_input_options(p)
    p.set_defaults(func=run_plot)


def run_plot(args: argparse.Namespace) -> int:
    from ..viz.paper import plot_ecg_paper, save_figure

    items = collect_inputs(args.input, args.fs, lead_list(args.leads))
    if len(items) != 1:
        raise CremaError(f"{args.input}: crema plot draws one record; this input holds {len(items)}")
    rec = items[0].load()
    labels: list[str] = []
    if args.checkpoint:
        labels = predicted_labels(args.checkpoint, rec, items[0].source, args.device)
    fig = plot_ecg_paper(rec, labels=labels, start_s=args.start, dpi=args.dpi,
                         highpass_hz=None if args.no_filter else 0.5)
    out = save_figure(fig, args.out)
    print(f"crema plot: wrote {out}")
    return 0


def predicted_labels(checkpoint: str, rec, source: str, device: str | None) -> list[str]:
    """``["CLASS 0.91", ...]`` for the classes at or above their thresholds (``["no class above
    threshold"]`` when none is); a regression head's ``["TARGET 63.2"]``."""
    from .api import load

    model = load(checkpoint, device=device)
    model.require_classifier("crema plot --checkpoint")
    row = model.predict_records([rec]).records.iloc[0]
    if model.thresholds is None:
        return [f"{model.classes[0]} {row[model.classes[0]]:.4g}"]
    chosen = [c for c in str(row["labels"]).split("|") if c]
    if not chosen:
        best = max(model.classes, key=lambda c: row[c])
        return [f"no class above threshold (highest {best} {row[best]:.2f})"]
    return [f"{c} {row[c]:.2f}" for c in chosen]


# ============================================================================ embed-map

def _register_embed_map(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "embed-map", help="2-D map (PCA or t-SNE) of embeddings coloured by a column",
        description="Scatter embeddings written by crema embed. --color-by names a column of the index "
                    "(record_id, source, folder = the record's parent folder, leads_present, ...) or of a "
                    "--join table (e.g. the labels column of crema predict's CSV).")
    p.add_argument("embeddings", help="OUT.npy written by crema embed")
    p.add_argument("--index", help="its index CSV (default: OUT.index.csv beside it)")
    p.add_argument("--color-by", default="folder", help="column to colour by (default folder)")
    p.add_argument("--join", help="CSV with more columns per record (e.g. crema predict output)")
    p.add_argument("--on", default="record_id", help="column joining --join to the index (default record_id)")
    p.add_argument("--method", choices=["pca", "tsne"], default="pca", help="projection (default pca)")
    p.add_argument("--out", required=True, help="image to write")
    p.add_argument("--seed", type=int, default=0, help="seed of t-SNE")
    p.set_defaults(func=run_embed_map)


def run_embed_map(args: argparse.Namespace) -> int:
    from ..viz.embedding import plot_embedding_map
    from ..viz.paper import save_figure

    npy = Path(args.embeddings)
    emb, index = read_embed_output(npy, args.index)
    index["folder"] = [Path(s).parent.name for s in index["source"].astype(str)]
    if args.join:
        index = _join_columns(index, Path(args.join), args.on)
    if args.color_by not in index.columns:
        raise CremaError(f"no column {args.color_by!r} to colour by; columns: {', '.join(index.columns)}")
    title = f"{npy.name}: {METHOD_NAMES[args.method]} of {len(emb)} windows, coloured by {args.color_by}"
    fig = plot_embedding_map(emb, index[args.color_by].tolist(), args.method, title, args.color_by, args.seed)
    out = save_figure(fig, args.out)
    print(f"crema embed-map: wrote {out}")
    return 0


def _join_columns(index: pd.DataFrame, path: Path, on: str) -> pd.DataFrame:
    table = pd.read_csv(path, dtype={on: str}, keep_default_na=False)
    if on not in table.columns or on not in index.columns:
        raise CremaError(f"{path}: cannot join on {on!r} (columns: {', '.join(table.columns)})")
    extra = [c for c in table.columns if c not in index.columns or c == on]
    return index.merge(table[extra].drop_duplicates(on), on=on, how="left")


# ============================================================================ export

def _register_export(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "export", help="write a self-contained model folder (config.json + model.safetensors)",
        description="Copy a checkpoint's weights and config (with its preprocessing) into a folder that "
                    "crema.load reads without the training run; training-only state is left out.")
    p.add_argument("checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("--out", required=True, help="folder to write")
    p.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from .api import load

    model = load(args.checkpoint, device="cpu")
    out = model.save_pretrained(args.out)
    print(f"crema export: wrote {out} ({model!r})")
    return 0


def _register_export_onnx(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "export-onnx", help="export the encoder (or the whole classifier) to ONNX",
        description="Inputs: signal (batch, 12, window) float32 preprocessed windows and lead_mask "
                    "(batch, 12) bool; outputs embedding, or logits and probabilities for a classifier, or "
                    "value (batch, 1) for a regression model (the predicted value in the target's units). "
                    "The batch axis is dynamic. After export the graph is checked against PyTorch with "
                    "onnxruntime at batch sizes 1 and 3.")
    p.add_argument("checkpoint", help=CHECKPOINT_HELP)
    p.add_argument("--out", required=True, help=".onnx file to write")
    p.add_argument("--no-lead-mask", action="store_true", help="no lead_mask input (all leads present)")
    # 14: the first opset with the attention the encoder's graph uses
    p.add_argument("--opset", type=number_in(int, 14), default=17, help="ONNX opset, 14 or later (default 17)")
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime parity check")
    p.add_argument("--tolerance", type=number_in(float, 0, low_open=True), default=1e-4,
                   help="max abs difference allowed (default 1e-4)")
    p.set_defaults(func=run_export_onnx)


def run_export_onnx(args: argparse.Namespace) -> int:
    from .api import load
    from .onnx_export import check_parity, export_onnx

    model = load(args.checkpoint, device="cpu")
    out = export_onnx(model, args.out, lead_mask=not args.no_lead_mask, opset=args.opset)
    print(f"crema export-onnx: wrote {out}")
    if args.no_check:
        return 0
    # z-scored-like windows with one lead set missing in a row, to exercise the mask path
    rng = np.random.default_rng(0)
    signals = rng.standard_normal((3, 12, model.window)).astype(np.float32)
    lead_mask = np.ones((3, 12), dtype=bool)
    lead_mask[1, 6:] = False
    diffs = check_parity(model, out, signals, lead_mask)
    worst = max(diffs.values())
    print("parity with PyTorch (max abs difference): "
          + ", ".join(f"batch {b}: {d:.2e}" for b, d in diffs.items()))
    if worst > args.tolerance:
        raise CremaError(f"{out}: ONNX output differs from PyTorch by {worst:.2e} > {args.tolerance:g}")
    return 0
