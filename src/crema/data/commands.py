"""``crema prepare``, ``crema label`` and ``crema info``.

Only the standard library, ``config`` and ``errors`` are imported at the top: the CLI imports every
commands module to build its parser, so each command imports its torch/pandas/scipy machinery
inside its run function, and ``crema --help`` or a typo stays fast.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import PreprocessConfig
from ..errors import printable
from .rates import check_fs

TASK_TYPES = ("multilabel", "multiclass", "regression")  # = corpus.TASK_TYPES (pandas-free import)
KEY_HELP = "record_id, record, file, path, ecg_id or exam_id"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the data subcommands to the ``crema`` parser."""
    _register_prepare(subparsers)
    _register_label(subparsers)
    _register_info(subparsers)


def _register_prepare(subparsers: argparse._SubParsersAction) -> None:
    defaults = PreprocessConfig()
    p = subparsers.add_parser(
        "prepare", help="preprocess a data set once into a corpus folder",
        description="Read every record of SOURCE, preprocess it and write a corpus folder "
                    "(float16 memmap + index). SOURCE is a PTB-XL root, a CinC folder, any folder "
                    "or file of ECG records, or a .npy stack (N, 12, T) with --input-fs. "
                    "Bad records are skipped and listed in DIR/prepare_report.json; the exit "
                    "status is then 1 (the corpus holds the other records). An interrupted run "
                    "(Ctrl-C, SIGTERM, a kill) keeps its progress in the hidden folder .DIR.partial: "
                    "running the same command again resumes it.")
    p.add_argument("source", type=Path, metavar="SOURCE")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="corpus folder to create")
    p.add_argument("--fs", type=float, default=defaults.fs, help="target sampling rate, Hz (%(default)s)")
    p.add_argument("--band", type=float, nargs=2, default=defaults.band, metavar=("LO", "HI"),
                   help="band-pass edges in Hz (%(default)s)")
    p.add_argument("--no-band", action="store_true", help="no band-pass filter")
    p.add_argument("--filter-order", type=int, default=defaults.filter_order,
                   help="Butterworth order (%(default)s)")
    p.add_argument("--notch", type=float, default=defaults.notch_hz, metavar="HZ",
                   help="notch filter at 50 or 60 Hz (off)")
    p.add_argument("--no-zscore", action="store_true", help="keep millivolts, no per-lead z-score")
    p.add_argument("--window-s", type=float, default=defaults.window_s,
                   help="window length, seconds (%(default)s)")
    p.add_argument("--stride-s", type=float, default=defaults.stride_s,
                   help="hop between windows of long records, seconds (%(default)s)")
    p.add_argument("--short", choices=("pad", "reject"), default=defaults.short,
                   help="records shorter than a window: zero-pad or reject (%(default)s)")
    p.add_argument("--min-length-s", type=float, default=defaults.min_length_s,
                   help="always reject records shorter than this, seconds (%(default)s)")
    p.add_argument("--no-derive-limb-leads", action="store_true",
                   help="do not rebuild III, aVR, aVL, aVF from I and II when absent")
    p.add_argument("--workers", type=int, default=None,
                   help="worker processes (default min(4, CPUs); 1 = no pool)")
    p.add_argument("--input-fs", type=float, default=None, metavar="HZ",
                   help="sampling rate of .npy/.npz/.csv/.txt inputs (--fs is the corpus's rate)")
    p.add_argument("--units", default=None, metavar="UNIT",
                   help="voltage unit of .npy/.npz/.csv/.txt inputs and stacks: mV (default), uV, V")
    p.add_argument("--ptbxl-rate", type=int, choices=(100, 500), default=None,
                   help="PTB-XL records to use (default 500 when present, else 100)")
    p.add_argument("--cinc-year", type=int, choices=(2020, 2021), default=2021,
                   help="CinC challenge scored classes (%(default)s)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N records")
    p.add_argument("--force", action="store_true", help="rebuild even if DIR is up to date")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_label_options(p, required=False)
    p.set_defaults(func=run_prepare)


def _add_label_options(p: argparse.ArgumentParser, required: bool) -> None:
    p.add_argument("--labels", action="append", type=Path, metavar="FILE.csv", required=required,
                   help=f"your labels: a CSV with a key column ({KEY_HELP}) and label columns, one task "
                        "per file (repeat for several); optional patient_id, split, fold columns")
    p.add_argument("--task", metavar="NAME", help="task name of a single labels file (default: its file name)")
    p.add_argument("--task-type", choices=TASK_TYPES, default=None,
                   help="override the inferred task type")
    p.add_argument("--split-seed", type=int, default=0, metavar="N",
                   help="seed of the stratified patient-grouped 80/10/10 split made when the labels "
                        "file has no split or fold column (%(default)s)")


def _register_label(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "label", help="add your own labels to a prepared corpus (no signal is read)",
        description="Write the tasks of labels CSV files into the corpus DIR: label columns, split, "
                    "classes.json and tasks.json. Rows are matched to records by the index's record "
                    "ids and source paths, so the source itself is not needed.")
    p.add_argument("corpus", type=Path, metavar="DIR")
    _add_label_options(p, required=True)
    p.set_defaults(func=run_label)


def _register_info(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="summarise a prepared corpus",
                              description="Print records, windows, sources, splits, per-task "
                                          "class counts and preprocessing of a corpus folder.")
    p.add_argument("corpus", type=Path, metavar="DIR")
    p.add_argument("--skipped", action="store_true", help="also list skipped records and why")
    p.set_defaults(func=run_info)


def preprocess_config_from_args(args: argparse.Namespace) -> PreprocessConfig:
    """The ``PreprocessConfig`` that the prepare flags describe."""
    return PreprocessConfig(
        fs=args.fs, band=None if args.no_band else tuple(args.band), filter_order=args.filter_order,
        notch_hz=args.notch, zscore=not args.no_zscore, window_s=args.window_s,
        stride_s=args.stride_s, short=args.short, min_length_s=args.min_length_s,
        derive_limb_leads=not args.no_derive_limb_leads)


def run_prepare(args: argparse.Namespace) -> int:
    """Prepare the corpus; exit status 1 when any record of the source could not be prepared."""
    from .prepare import prepare_corpus

    from .units import check_unit

    if args.input_fs is not None:
        check_fs(args.input_fs, "--input-fs")
    report = prepare_corpus(args.source, args.out, cfg=preprocess_config_from_args(args),
                            workers=args.workers, input_fs=args.input_fs,
                            ptbxl_rate=args.ptbxl_rate, limit=args.limit, force=args.force,
                            cinc_year=args.cinc_year, progress=not args.quiet, labels=args.labels,
                            task=args.task, task_type=args.task_type, split_seed=args.split_seed,
                            units=check_unit(args.units))
    out = printable(str(args.out))
    if report.get("up_to_date"):
        done = "labels written, no signal read" if args.labels else "nothing to do (--force rebuilds it)"
        print(f"{out}: up to date ({report['windows']} windows from {report['records_read']} "
              f"records); {done}")
    else:
        print(f"{out}: {report['records_read']} of {report['records_total']} records read, "
              f"{report['records_skipped']} skipped, {report['windows']} windows "
              f"in {report['seconds']:.1f} s ({report['kind']} source)")
        if report.get("records_resumed"):
            print(f"  resumed: {report['records_resumed']} of the records were prepared by the "
                  "interrupted run before this one")
        for item in report["skipped"][:20]:
            print(printable(f"  skipped {item['record']}: {item['reason']}"))
        if len(report["skipped"]) > 20:
            print(f"  ... and {len(report['skipped']) - 20} more in {out}/prepare_report.json")
    _print_labels(report.get("labels_added", {}))
    if report["records_skipped"]:
        # the same status on a re-run that finds the corpus up to date: it still lacks them
        print(f"crema prepare: {report['records_skipped']} of {report['records_total']} records could "
              f"not be prepared (listed in {out}/prepare_report.json)", file=sys.stderr)
        return 1
    return 0


def run_label(args: argparse.Namespace) -> int:
    """Add the labels files' tasks to the corpus; no signal is read."""
    from .labels_csv import add_labels

    _print_labels(add_labels(args.corpus, args.labels, task=args.task, task_type=args.task_type,
                             split_seed=args.split_seed))
    return 0


def _print_labels(summaries: dict) -> None:
    from .labels_csv import summary_lines

    for line in summary_lines(summaries):
        print(printable(line))


def run_info(args: argparse.Namespace) -> int:
    from .corpus import Corpus

    corpus = Corpus(args.corpus)
    print(corpus.summary())
    if args.skipped:
        for item in corpus.report.get("skipped", []):
            print(printable(f"skipped     {item['record']}: {item['reason']}"))
    return 0
