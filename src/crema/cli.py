"""The ``crema`` command. Each area registers its own subcommands in a ``commands`` module."""
from __future__ import annotations

import argparse
import importlib
import sys

from . import __version__
from .errors import CremaError

# Modules that define ``register(subparsers)``; each subcommand sets ``func(args) -> int``.
COMMAND_MODULES = (
    "crema.data.commands",      # prepare, info
    "crema.train.commands",     # pretrain, plot-reconstruction
    "crema.eval.commands",      # finetune, probe, evaluate, report
    "crema.use.commands",       # embed, predict, plot, embed-map, export-onnx, export
    "crema.serve.commands",     # serve
    "crema.demo",               # demo
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crema", description="Self-supervised foundation models for 12-lead ECGs.")
    parser.add_argument("--version", action="version", version=f"crema {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:  # a real missing dependency inside the module
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CremaError as exc:
        print(f"crema {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `crema info DIR | head` closed our stdout early: not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
