"""``crema plot-reconstruction``: what a pretrained model makes of a masked ECG.

The windows are masked and decoded by :func:`crema.model.inference.reconstruct_windows` (through
:func:`crema.viz.reconstruction.first_window_reconstruction`), the function behind
:meth:`crema.use.api.CremaModel.reconstruct`, so the figure shows exactly what the Python API
returns for the same record and seed (the first window, centre-cropped to the model's input).

Only the standard library and ``errors`` are imported at the top: the CLI imports every commands
module to build its parser, and torch would add seconds to every command's start.
"""
from __future__ import annotations

import argparse
from typing import Any

from ..errors import CremaError
from ..flags import number_in


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "plot-reconstruction", help="draw a pretrained model's reconstruction of a masked ECG",
        description="Preprocess a record with the checkpoint's own preprocessing, mask its first window "
                    "(the middle of it when the window is longer than the model's input), and draw the "
                    "12 leads with the masked patches and their reconstruction.")
    p.add_argument("checkpoint", help="pretraining checkpoint folder, or a shipped model's name (see crema models)")
    p.add_argument("record", nargs="?", help="an ECG file (any format crema reads); or use --corpus/--row")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the random mask (default 0)")
    p.add_argument("--corpus", help="a prepared corpus folder to take the window from (with --row)")
    p.add_argument("--row", type=number_in(int, 0), help="row of --corpus")
    p.add_argument("--fs", type=number_in(float, 0, low_open=True),
                   help="sampling rate for files that do not carry one (.npy/.csv)")
    p.set_defaults(func=run_plot_reconstruction)


def run_plot_reconstruction(args: argparse.Namespace) -> int:
    from ..model.checkpoint import load_pretrained
    from .paper import no_mathtext
    from .reconstruction import (first_window_reconstruction, masked_mse, plot_reconstruction, windows_from_corpus,
                                 windows_from_record)

    if (args.record is None) == (args.corpus is None):
        raise CremaError("give either a RECORD file or --corpus DIR --row i")
    model, cfg = load_pretrained(args.checkpoint)
    if args.corpus is not None:
        signals, lead_mask, name = windows_from_corpus(args.corpus, args.row, cfg.preprocess)
    else:
        signals, lead_mask, name = windows_from_record(args.record, args.fs, cfg.preprocess)
    signal, pred, mask = first_window_reconstruction(model, signals, lead_mask, args.seed)
    err = masked_mse(signal, pred, mask, lead_mask[0])
    title = (f"{no_mathtext(name)}: CREMA reconstruction, "
             f"{cfg.objective.mask_ratio:.0%} of patches masked per lead "
             f"(seed {args.seed}); MSE on masked samples {err:.3f} (z-scored units)"
             + ("; masked patches de-normalised with the true patch mean/std" if cfg.objective.norm_target else ""))
    out = plot_reconstruction(signal, pred, mask, args.out, fs=cfg.preprocess.fs,
                              lead_mask=lead_mask[0], leads=cfg.model.leads, title=title)
    print(f"crema plot-reconstruction: wrote {out}")
    return 0
