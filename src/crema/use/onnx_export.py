"""ONNX export of a CREMA encoder or fine-tuned classifier, and a parity check with onnxruntime.

The exported graph takes *preprocessed* windows (the checkpoint's ``PreprocessConfig``, which is
stored in the ONNX metadata under ``crema_config``):

- input ``signal``: float32 ``(batch, 12, window)``, batch dynamic, window fixed;
- input ``lead_mask``: bool ``(batch, 12)``, True = lead present (left out with
  ``lead_mask=False``: all leads present);
- outputs: ``embedding (batch, D)`` for a pretrain checkpoint; ``logits (batch, K)`` and
  ``probabilities (batch, K)`` for a classifier (class names in the metadata); ``value (batch, 1)``
  for a regression head: the predicted value in the target's units (the head's output times the
  target's std plus its mean, as ``CremaModel.classify_windows`` gives it), no sigmoid.

The TorchScript exporter (``dynamo=False``) is tried first because it handles this model in a
fraction of a second; the ``torch.export`` exporter is the fallback.
"""
from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import CremaError, install_hint
from .api import CremaModel
from ..atomic import atomic_path

OPSET = 17


class EncoderGraph(nn.Module):
    """``(signal (B, 12, T), lead_mask (B, 12)) -> embedding (B, D)``."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, signal: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        return self.encoder(signal, lead_mask=lead_mask)


class ClassifierGraph(nn.Module):
    """``(signal (B, 12, T), lead_mask (B, 12)) -> (logits (B, K), probabilities (B, K))``."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, signal: Tensor, lead_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        logits = self.classifier(signal, lead_mask=lead_mask)
        return logits, torch.sigmoid(logits)


class RegressionGraph(nn.Module):
    """``(signal (B, 12, T), lead_mask (B, 12)) -> value (B, 1)``: a regression head's output
    scaled back to the target's units (``output * std + mean``, in fp32)."""

    def __init__(self, regressor: nn.Module, std: float, mean: float):
        super().__init__()
        self.regressor, self.std, self.mean = regressor, float(std), float(mean)

    def forward(self, signal: Tensor, lead_mask: Tensor | None = None) -> Tensor:
        return self.regressor(signal, lead_mask=lead_mask).float() * self.std + self.mean


def export_graph(model: CremaModel) -> tuple[nn.Module, list[str]]:
    """The module to export and its output names: the full classifier for a classifier
    checkpoint (a regression head with its target scaling), else the encoder."""
    if model.kind == "classifier" and model.target_scale is not None:
        std, mean = model.target_scale
        return RegressionGraph(model.network, std, mean).cpu().eval(), ["value"]
    if model.kind == "classifier":
        return ClassifierGraph(model.network).cpu().eval(), ["logits", "probabilities"]
    return EncoderGraph(model.encoder).cpu().eval(), ["embedding"]


def export_onnx(model: CremaModel, out: str | os.PathLike, lead_mask: bool = True,
                opset: int = OPSET) -> Path:
    """Write ``model`` as an ONNX file with a dynamic batch axis (atomically).

    Args:
        model: a loaded :class:`CremaModel` (moved to the CPU for the export).
        out: the ``.onnx`` file.
        lead_mask: give the graph a ``lead_mask`` input; ``False`` fixes all leads present.
        opset: ONNX opset version.

    Returns:
        The written path.
    """
    onnx = _optional("onnx")

    graph, output_names = export_graph(model)
    input_names = ["signal", "lead_mask"] if lead_mask else ["signal"]
    example = (torch.zeros(2, 12, model.window), torch.ones(2, 12, dtype=torch.bool))[:len(input_names)]
    out = Path(out)
    with atomic_path(out) as tmp:
        _torch_export(graph, example, str(tmp), input_names, output_names, opset)
        proto = onnx.load(tmp)
        onnx.checker.check_model(proto)
        onnx.helper.set_model_props(proto, _metadata(model, lead_mask))
        onnx.save(proto, tmp)
    model.network.to(model.device)
    return out


def _torch_export(graph: nn.Module, example: tuple, path: str, input_names: list[str],
                  output_names: list[str], opset: int) -> None:
    """TorchScript exporter first, ``torch.export`` as the fallback."""
    dynamic_axes = {name: {0: "batch"} for name in input_names + output_names}
    with warnings.catch_warnings():
        # The tracer warns about the encoder's shape checks, which are constant for a fixed
        # window, and about the TorchScript exporter being the legacy path.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(graph, example, path, input_names=input_names, output_names=output_names,
                              dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False)
            return
        except Exception as legacy_error:  # noqa: BLE001 - any failure moves on to the fallback
            first = legacy_error
        try:
            batch = torch.export.Dim("batch", min=1)
            shapes = {name: {0: batch} for name in input_names}
            torch.onnx.export(graph, example, path, input_names=input_names, output_names=output_names,
                              dynamic_shapes=shapes, opset_version=max(opset, 18), dynamo=True,
                              external_data=False)
        except Exception as exc:
            raise CremaError(f"ONNX export failed: TorchScript exporter: {first}; "
                             f"torch.export exporter: {exc}") from exc


def _optional(module: str):
    """``module`` of the ``onnx`` extra (onnx, onnxruntime: only export and its parity check
    need them), or a CremaError saying how to install it."""
    try:
        return __import__(module)
    except ImportError:
        raise CremaError(f"ONNX export needs the onnx extra ({module} is missing): "
                         f"{install_hint('onnx')}") from None


def _metadata(model: CremaModel, lead_mask: bool) -> dict[str, str]:
    return {
        "crema_config": json.dumps(model.config),
        "crema_kind": model.kind,
        "crema_task_type": model.task_type or "",
        "crema_inputs": "signal (batch, 12, %d) float32 z-scored windows%s" % (
            model.window, ", lead_mask (batch, 12) bool" if lead_mask else ""),
        "crema_leads": ",".join(model.model_config.leads) if model.model_config else "",
        "crema_classes": json.dumps(model.classes) if model.classes else "",
    }


def onnx_session(path: str | os.PathLike):
    """An onnxruntime CPU session for ``path``."""
    ort = _optional("onnxruntime")

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session, signals: np.ndarray, lead_mask: np.ndarray | None = None) -> list[np.ndarray]:
    """Run an exported graph on ``signals (B, 12, T)`` (+ ``lead_mask (B, 12)`` when it takes one)."""
    feeds = {"signal": np.ascontiguousarray(signals, dtype=np.float32)}
    if "lead_mask" in {i.name for i in session.get_inputs()}:
        mask = np.ones(signals.shape[:2], dtype=bool) if lead_mask is None else lead_mask
        feeds["lead_mask"] = np.ascontiguousarray(mask, dtype=bool)
    return session.run(None, feeds)


def check_parity(model: CremaModel, path: str | os.PathLike, signals: np.ndarray,
                 lead_mask: np.ndarray | None = None, batch_sizes: tuple[int, ...] = (1, 3)) -> dict[int, float]:
    """Max absolute difference between PyTorch and onnxruntime outputs at each batch size.

    Args:
        signals: float32 ``(n, 12, window)`` preprocessed windows (``n >= max(batch_sizes)``);
            rows are reused cyclically when there are fewer.
        lead_mask: bool ``(n, 12)``; default all present.

    Returns:
        ``{batch_size: max |torch - onnx|}`` over every output.
    """
    session = onnx_session(path)
    graph, _ = export_graph(model)
    takes_mask = "lead_mask" in {i.name for i in session.get_inputs()}
    if lead_mask is None:
        lead_mask = np.ones(signals.shape[:2], dtype=bool)
    result = {}
    for batch in batch_sizes:
        rows = np.arange(batch) % len(signals)
        x, m = signals[rows], lead_mask[rows] if takes_mask else np.ones((batch, 12), dtype=bool)
        with torch.inference_mode():
            reference = graph(torch.from_numpy(np.ascontiguousarray(x)),
                              torch.from_numpy(np.ascontiguousarray(m)) if takes_mask else None)
        reference = reference if isinstance(reference, tuple) else (reference,)
        outputs = run_onnx(session, x, m if takes_mask else None)
        result[batch] = max(float(np.abs(r.numpy() - o).max()) for r, o in zip(reference, outputs))
    model.network.to(model.device)
    return result
