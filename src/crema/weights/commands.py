"""``crema models``: list the pretrained models shipped in the package, or print one's card."""
from __future__ import annotations

import argparse
from typing import Any

from ..errors import CremaError
from . import CARD_FILE, model_dir, resolve, shipped_models


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("models", help="list the pretrained models shipped with crema (offline)",
                              description="List the shipped models, or print one model's card. Every "
                                          "command that takes a checkpoint folder also takes these names.")
    p.add_argument("name", nargs="?", help="print this model's card (MODEL_CARD.md)")
    p.set_defaults(func=run_models)


def run_models(args: argparse.Namespace) -> int:
    models = shipped_models()
    if args.name:
        if args.name not in models:
            raise CremaError(f"no shipped model {args.name!r}; shipped: {', '.join(sorted(models)) or 'none'}")
        folder = resolve(args.name)  # checks the weights' SHA-256
        print((folder / CARD_FILE).read_text())
        return 0
    if not models:
        print("no models are shipped with this install")
        return 0
    for name, entry in sorted(models.items()):
        print(f"{name}\n    {entry['summary']}\n    folder: {model_dir(name)}\n    card:   crema models {name}")
    return 0
