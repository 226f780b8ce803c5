"""CREMA: Contrastive Regularized Masked Autoencoder foundation models for 12-lead ECGs."""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def load(path, device=None, precision="auto"):
    """Load a CREMA model folder (``config.json`` + ``model.safetensors``) for inference.

    See :func:`crema.use.api.load`.
    """
    from .use.api import load as _load

    return _load(path, device=device, precision=precision)
