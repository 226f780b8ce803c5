"""``python -m crema.weights [--update] [NAME ...]``: check (or, with ``--update``, record) the
SHA-256 of every shipped model's ``model.safetensors`` and ``config.json`` in ``models.json``.

Run it with ``--update`` after a deliberate change to a shipped model's files (a new field in its
``config.json``, retrained weights), then commit ``models.json`` with them.
"""
from __future__ import annotations

import argparse
import sys

from ..errors import CheckpointError
from . import REGISTRY, file_hashes, model_dir, shipped_models, update_registry


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crema.weights", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="shipped models (default: all)")
    parser.add_argument("--update", action="store_true", help=f"write the current hashes into {REGISTRY.name}")
    args = parser.parse_args(argv)
    models = shipped_models()
    unknown = [name for name in args.names if name not in models]
    if unknown:
        print(f"python -m crema.weights: error: no shipped model {unknown[0]!r}; shipped: {', '.join(sorted(models))}",
              file=sys.stderr)
        return 2
    if args.update:
        try:
            changed = update_registry(args.names or None)
        except (CheckpointError, OSError) as exc:
            print(f"python -m crema.weights: error: {exc}", file=sys.stderr)
            return 1
        for name, keys in changed.items():
            for key, (old, new) in keys.items():
                print(f"{name}: {key} {(old or 'none')[:16]}... -> {new}")
        print(f"{REGISTRY}: {'updated' if changed else 'already up to date'}")
        return 0
    stale = 0
    for name in args.names or sorted(models):
        for key, digest in file_hashes(model_dir(name)).items():
            ok = models[name].get(key) == digest
            stale += not ok
            print(f"{name}: {key} {'ok' if ok else f'differs (file {digest[:16]}..., recorded {str(models[name].get(key))[:16]}...)'}")
    if stale:
        print("run `python -m crema.weights --update` if the change was deliberate", file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
