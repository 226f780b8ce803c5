"""The result record and ``results.json``: one trained-and-tested model at one setting, with its
seed, config and data hashes, and the file that holds a run's records.

``results.json`` (written by ``crema probe``, ``crema finetune`` and ``crema evaluate``) is
``{"kind": "crema-eval-results", "version": 1, ...meta, "data": {corpus: {sha256, hash_of}},
"results": [record, ...]}``, each record a :meth:`ResultRecord.to_dict`. The report
(:mod:`crema.eval.report`), summaries and paired differences read the records as those dicts.

A record read with :meth:`ResultRecord.from_dict` writes back the same keys in the same order
(records written before ``task_type`` existed have none, and keep none), so that rewriting a
``results.json`` (a suite resumed) changes no byte of the results already in it.
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..atomic import atomic_write_text
from ..errors import CremaError
from .metrics import TASK_METRICS

RESULTS_KIND = "crema-eval-results"
RESULTS_VERSION = 1

# the keys every record has always had (task_type aside: records written before it lack it)
REQUIRED_KEYS = ("step", "method", "protocol", "task", "experiment", "seed", "n_test", "auroc", "f1",
                 "data_sha256", "config")


@dataclass
class ResultRecord:
    """One entry of ``results.json``.

    Attributes:
        step: what produced it (a suite step id, ``probe/f0.1/s0``, a fine-tune's output folder).
        method: the name results are filed under (``crema``, ``random_sit``, ``supervised_resnet1d``...).
        protocol: ``probe`` or ``finetune``.
        experiment: ``label_fraction``, ``leave_source_out`` or ``corruption``.
        task_type: ``multilabel``, ``multiclass`` or ``regression``; None for a record written
            before task types existed (read as multilabel, written back without the key).
        auroc, f1: :func:`crema.eval.metrics.evaluate`'s entries (None for a regression task).
        mae, pearson: a regression task's entries (:func:`crema.eval.metrics.evaluate_regression`),
            else None.
        bootstrap: how the intervals were resampled (``n_resamples``, ``seed``, ``method``).
        bootstrap_auroc, bootstrap_mae, bootstrap_pearson: the bootstrap replicates of the task's
            metrics (AUROC to 4 decimals, a regression metric to 6 significant digits), which
            seed-combined intervals and paired differences are computed from.
        data_sha256: corpus fingerprint (:func:`crema.eval.features.corpus_fingerprint`).
        train_rows_sha256, test_rows_sha256: hashes of the corpus rows trained and tested on.
        extra: every other key (``probe_fit``, ``pretrain_seed``...), written after the fields.
    """

    step: str
    method: str
    protocol: str
    task: str
    experiment: str
    seed: int
    n_test: int
    auroc: dict | None
    f1: dict | None
    data_sha256: str
    config: dict
    task_type: str | None = "multilabel"
    fraction: float | None = None
    holdout_source: str | None = None
    corruption: str | None = None
    severity: int | None = None
    n_train: int | None = None
    n_val: int | None = None
    bootstrap: dict = field(default_factory=dict)
    train_rows_sha256: str | None = None
    test_rows_sha256: str | None = None
    mae: dict | None = None
    pearson: dict | None = None
    bootstrap_auroc: list | None = None
    bootstrap_mae: list | None = None
    bootstrap_pearson: list | None = None
    extra: dict = field(default_factory=dict)
    # the keys of the dict this record was read from, in order (None: made here, canonical order)
    key_order: tuple[str, ...] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_evaluation(cls, *, step: str, method: str, protocol: str, task: str, experiment: str, seed: int,
                        evaluation: dict, config: dict, data_sha256: str, extra: dict | None = None,
                        **fields: Any) -> "ResultRecord":
        """The record of one evaluation.

        Args:
            evaluation: :func:`crema.eval.metrics.evaluate` or
                :func:`~crema.eval.metrics.evaluate_regression` output (with ``keep_replicates=True``
                to allow seed-combined intervals and paired differences).
            fields: the optional attributes (``fraction``, ``n_train``, ``holdout_source``...).
            extra: further keys; one that names an attribute sets it.
        """
        task_type = evaluation.get("task_type", "multilabel")
        boot = evaluation.get("bootstrap", {})
        values: dict[str, Any] = {
            "step": step, "method": method, "protocol": protocol, "task": task, "task_type": task_type,
            "experiment": experiment, "seed": int(seed), "n_test": evaluation["n"], "auroc": evaluation["auroc"],
            "f1": evaluation["f1"], "bootstrap": {k: v for k, v in boot.items() if k in ("n_resamples", "seed", "method")},
            "data_sha256": data_sha256, "config": config, **fields}
        for metric in TASK_METRICS[task_type]:
            if metric != "auroc":
                values[metric] = evaluation[metric]
            values[f"bootstrap_{metric}"] = [_compact(v, metric) for v in boot.get(metric, [])]
        known = {f.name for f in dataclasses.fields(cls)} - {"extra", "key_order"}
        rest = {}
        for key, value in (extra or {}).items():
            (values if key in known else rest)[key] = value
        return cls(**values, extra=rest)

    @classmethod
    def from_dict(cls, data: dict, where: str = "result") -> "ResultRecord":
        """A record from a ``results.json`` entry; unknown keys go to ``extra``, and the keys' order
        is kept for :meth:`to_dict`. Raises CremaError naming ``where`` and a missing key."""
        if not isinstance(data, dict):
            raise CremaError(f"{where}: a result must be a JSON object, got {type(data).__name__}")
        missing = [key for key in REQUIRED_KEYS if key not in data]
        if missing:
            raise CremaError(f"{where}: not a result record (missing {', '.join(missing)})")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra", "key_order"}
        values = {key: value for key, value in data.items() if key in names}
        values.setdefault("task_type", None)  # absent in records written before task types
        extra = {key: value for key, value in data.items() if key not in names}
        return cls(**values, extra=extra, key_order=tuple(data))

    def metrics(self) -> tuple[str, ...]:
        """The metrics this record carries, by its task type (multilabel when it has none)."""
        return TASK_METRICS[self.task_type or "multilabel"]

    def to_dict(self) -> dict:
        """The ``results.json`` entry: a record read by :meth:`from_dict` gives back the dict it was
        read from, key for key and in order; a new record has the fields in the order below, the
        task's metrics and their replicates after ``config``, then ``extra``."""
        canonical = self._canonical()
        if self.key_order is None:
            return canonical
        values = {**self._fields(), **self.extra}
        out = {key: values[key] for key in self.key_order if key in values}
        # keys set since reading (a new extra key, a field no longer at its absent default)
        for key, value in canonical.items():
            if key not in out and (key in self.extra or value != _absent_default(key)):
                out[key] = value
        return out

    def _fields(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("extra", "key_order")}

    def _canonical(self) -> dict:
        fields = self._fields()
        out = {key: fields[key] for key in _BASE_ORDER if key != "task_type" or self.task_type is not None}
        for metric in self.metrics():
            if metric != "auroc":
                out[metric] = fields[metric]
            out[f"bootstrap_{metric}"] = fields[f"bootstrap_{metric}"]
        out.update(self.extra)
        return out


# the order of a new record's keys (what make_result wrote): the metrics follow config
_BASE_ORDER = ("step", "method", "protocol", "task", "task_type", "experiment", "fraction", "holdout_source",
               "corruption", "severity", "seed", "n_train", "n_val", "n_test", "auroc", "f1", "bootstrap",
               "data_sha256", "train_rows_sha256", "test_rows_sha256", "config")


def _absent_default(key: str) -> Any:
    """The value :meth:`ResultRecord.from_dict` gives a field its dict lacks."""
    if key == "task_type":
        return None
    found = {f.name: f for f in dataclasses.fields(ResultRecord)}.get(key)
    if found is None:
        return None
    return found.default_factory() if found.default_factory is not dataclasses.MISSING else found.default


def _compact(value: float | None, metric: str) -> float | None:
    """A bootstrap replicate as kept in ``results.json``: AUROC to 4 decimals, a regression metric
    (in the target's own units) to 6 significant digits."""
    if value is None:
        return None
    return round(value, 4) if metric == "auroc" else float(f"{value:.6g}")


def write_results(path: str | os.PathLike, results: Sequence[ResultRecord | dict], data: dict,
                  meta: dict | None = None) -> None:
    """Write ``results.json`` atomically, compact (it carries bootstrap replicates; the readable
    view is ``report.md``). ``results``: records, or ``results.json`` entries as they are."""
    entries = [r.to_dict() if isinstance(r, ResultRecord) else r for r in results]
    document = {"kind": RESULTS_KIND, "version": RESULTS_VERSION, **(meta or {}), "data": data, "results": entries}
    atomic_write_text(path, json.dumps(document, separators=(",", ":")) + "\n")


def load_results(path: str | os.PathLike) -> dict:
    """Read and check a ``results.json``, or a gzip-compressed ``results.json.gz`` (how a large
    committed run is kept small); a folder holding either is accepted. Returns the document, its
    ``results`` as dicts (:func:`load_records` for records)."""
    path = Path(path)
    if path.is_dir():
        packed = path / "results.json.gz"
        path = packed if packed.is_file() and not (path / "results.json").exists() else path / "results.json"
    if not path.exists():
        raise CremaError(f"{path}: no results.json (run `crema evaluate`, `crema probe` or `crema finetune` first)")
    try:
        text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
        data = json.loads(text)
    except (json.JSONDecodeError, gzip.BadGzipFile, EOFError, UnicodeDecodeError) as exc:
        raise CremaError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("kind") != RESULTS_KIND or not isinstance(data.get("results"), list):
        kind = data.get("kind") if isinstance(data, dict) else None
        raise CremaError(f"{path}: not a CREMA results file (kind {kind!r})")
    return data


def load_records(path: str | os.PathLike) -> list[ResultRecord]:
    """The records of a ``results.json`` (or ``.json.gz``, or a folder holding either)."""
    data = load_results(path)
    return [ResultRecord.from_dict(entry, f"{path}: result {i}") for i, entry in enumerate(data["results"])]
