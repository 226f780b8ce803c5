"""``crema demo``: the end-to-end main job on the real PTB-XL sample shipped in the package.

It runs, in order, exactly the commands a user would run (so the demo exercises them):

1. ``crema prepare``   the embedded PTB-XL sample (records 1-500, 100 Hz) into a corpus;
2. ``crema pretrain``  a ``tiny`` CREMA on the training folds (1-8), a few minutes on a CPU;
3. ``crema plot-reconstruction``  one validation record, masked patches shaded;
4. ``crema probe``     linear probes of PTB-XL superdiagnostic on the test fold (10), for the
   pretrained encoder and a randomly initialised one, and prints the table.

Every step writes into ``--out`` and is skipped when its output is already there, so a second
``make demo`` only re-prints the results.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .paths import sample_root

TASK = "ptbxl-superdiagnostic"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="end-to-end demo on the embedded real PTB-XL sample",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--steps", type=int, default=300, help="pretraining steps (default 300)")
    p.add_argument("--batch-size", type=int, default=32, help="ECGs per step (default 32)")
    p.add_argument("--seed", type=int, default=0, help="seed of every step (default 0)")
    p.set_defaults(func=run_demo)


def _step(title: str, argv: list[str]) -> None:
    from .cli import main

    print(f"\n==> {title}\n    crema {' '.join(argv)}", flush=True)
    t0 = time.perf_counter()
    code = main(argv)
    if code != 0:
        raise SystemExit(f"demo step failed ({title}): exit code {code}")
    print(f"    done in {time.perf_counter() - t0:.1f} s", flush=True)


def run_demo(args: argparse.Namespace) -> int:
    out = Path(args.out)
    corpus, run = out / "corpus", out / "pretrain"
    seed = str(args.seed)
    _step("prepare the embedded PTB-XL sample",
          ["prepare", str(sample_root()), "--out", str(corpus), "--workers", "2"])
    _step("pretrain a tiny CREMA on the training folds",
          ["pretrain", "--corpus", f"{corpus}:train", "--out", str(run), "--size", "tiny",
           "--steps", str(args.steps), "--batch-size", str(args.batch_size),
           "--warmup-steps", str(max(1, args.steps // 10)), "--blr", "1e-3",
           "--ckpt-every", str(args.steps), "--seed", seed]
          + (["--resume"] if (run / "training_state.pt").exists() else []))
    _step("plot a reconstruction of a validation record",
          ["plot-reconstruction", str(run), "--corpus", str(corpus), "--row", "0",
           "--out", str(out / "reconstruction.png"), "--seed", seed])
    _step(f"linear probe on {TASK}: pretrained vs random init",
          ["probe", "--checkpoint", str(run), "--corpus", str(corpus), "--task", TASK,
           "--seeds", seed, "--out", str(out / "probe"), "--compare-random-init"])
    print(f"\nOutputs in {out}/: corpus/, pretrain/ (checkpoint, log.jsonl), reconstruction.png, "
          f"probe/ (results.json)")
    return 0
