"""``crema demo``: the end-to-end main job on the real PTB-XL sample shipped in the package.

It runs, in order, exactly the commands a user would run (so the demo exercises them). By
default it starts from the pretrained model shipped in the package (``crema models``):

1. ``crema prepare``   the embedded PTB-XL sample (records 1-500, 100 Hz) into a corpus;
2. ``crema embed``     a few sample records with the shipped model (``OUT/embeddings.npy``);
3. ``crema plot``      one record as a 12-lead paper printout;
4. ``crema plot-reconstruction``  one validation record, masked patches shaded;
5. ``crema probe``     linear probes of PTB-XL superdiagnostic (10% and 100% of the training
   labels, test fold 10) for the shipped encoder and a randomly initialised one of the same
   architecture and read-out (``--random-init --like``); one table.

``--pretrain`` replaces the shipped model by a small CREMA pretrained here on the sample's
training folds (a few minutes on a CPU) and probes that instead.

Every step writes into ``--out`` and is skipped when its output is already there, so a second
``make demo`` only re-prints the results.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from .cli import main
from .flags import number_in
from .paths import sample_root

TASK = "ptbxl-superdiagnostic"
WINDOW = 1250  # 5 s crops of the 10 s windows: twice the steps in the same CPU time
SHIPPED = "crema-w128-ecg12"  # the best shipped encoder (crema models; crema-mini-ecg12 is the small one)


# What `crema demo --help` prints: the module docstring's steps as plain text (no reST markup).
DESCRIPTION = f"""\
The end-to-end main job on the real PTB-XL sample shipped in the package. It runs, in order,
exactly the commands a user would run, by default with the pretrained model shipped in the
package ({SHIPPED}, see crema models):

  1. crema prepare              the embedded PTB-XL sample (records 1-500, 100 Hz) into a corpus
  2. crema embed                a few sample records with the model (OUT/embeddings.npy)
  3. crema plot                 one record as a 12-lead paper printout
  4. crema plot-reconstruction  one validation record, masked patches shaded
  5. crema probe                linear probes of PTB-XL superdiagnostic (10% and 100% of the
                                training labels, test fold 10) for the model and a randomly
                                initialised encoder of the same size; one table

--pretrain replaces the shipped model by a small CREMA pretrained here on the sample's training
folds (a few minutes on a CPU). Every step writes into --out and is skipped when its output is
already there, so a second run only prints the results again."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="end-to-end demo on the embedded real PTB-XL sample",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--pretrain", action="store_true",
                   help=f"pretrain a model on the sample instead of starting from the shipped {SHIPPED}")
    p.add_argument("--steps", type=number_in(int, 1), default=150, help="pretraining steps with --pretrain (default 150)")
    p.add_argument("--batch-size", type=number_in(int, 1), default=32, help="ECGs per step (default 32)")
    p.add_argument("--seed", type=int, default=0, help="seed of every step (default 0)")
    p.add_argument("--records", type=number_in(int, 1), default=None,
                   help="use only the first N sample records (default all 500; for quick checks)")
    p.set_defaults(func=run_demo)


def _step(title: str, argv: list[str]) -> None:
    print(f"\n==> {title}\n    crema {' '.join(argv)}", flush=True)
    t0 = time.perf_counter()
    code = main(argv)
    if code != 0:
        raise SystemExit(f"demo step failed ({title}): exit code {code}")
    print(f"    done in {time.perf_counter() - t0:.1f} s", flush=True)


def run_demo(args: argparse.Namespace) -> int:
    # Imported here, not at the top: the CLI imports this module to build its parser, and these
    # bring in torch and pandas, seconds on every command's start.
    from .eval.report import results_text
    from .eval.results import load_results

    out = Path(args.out)
    corpus = out / "corpus"
    seed = str(args.seed)
    _step("prepare the embedded PTB-XL sample",
          ["prepare", str(sample_root()), "--out", str(corpus), "--workers", "2", "--quiet"]
          + (["--limit", str(args.records)] if args.records else []))
    model = str(out / "pretrain") if args.pretrain else SHIPPED
    if args.pretrain:
        _pretrain(args, corpus, Path(model), seed)
    records = sorted((sample_root() / "records100" / "00000").glob("*.hea"))[:8]
    if not (out / "embeddings.npy").exists():
        _step(f"embed {len(records)} sample records with {model}",
              ["embed", model, *map(str, records), "--out", str(out / "embeddings"), "--no-progress"])
    if not (out / "ecg.png").exists():
        _step("plot one record as a 12-lead printout", ["plot", str(records[0]), "--out", str(out / "ecg.png")])
    _step("plot a reconstruction of a validation record",
          ["plot-reconstruction", model, "--corpus", str(corpus), "--row", str(_a_validation_row(corpus)),
           "--out", str(out / "reconstruction.png"), "--seed", seed])
    probes = {"crema": ["--checkpoint", model],
              "random_init": ["--random-init", "--like", model, "--init-seed", seed]}
    for name, which in probes.items():
        _step(f"linear probe on {TASK}: {name} encoder",
              ["probe", *which, "--name", name, "--corpus", str(corpus), "--task", TASK,
               "--fractions", "0.1", "1", "--seeds", seed, "--no-progress", "--out", str(out / f"probe-{name}")])
    results = [r for name in probes for r in load_results(out / f"probe-{name}")["results"]]
    print(f"\n{TASK}, test fold 10, linear probe (seed {seed}); crema = {model}:\n")
    print(results_text(results))
    print(f"\nOutputs in {out}/: corpus/, embeddings.npy (+ .index.csv), ecg.png, reconstruction.png, "
          f"probe-crema/ and probe-random_init/ (results.json; `crema report DIR` renders them)"
          + (", pretrain/ (checkpoint, log.jsonl)" if args.pretrain else ""))
    return 0


def _pretrain(args: argparse.Namespace, corpus: Path, run: Path, seed: str) -> None:
    """``--pretrain``: a mini CREMA on the sample's training folds (5 s views of disjoint halves)."""
    _step("pretrain a mini CREMA on the training folds",
          ["pretrain", "--corpus", f"{corpus}:train", "--out", str(run), "--size", "mini",
           "--window", str(WINDOW), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
           "--warmup-steps", str(max(1, args.steps // 10)), "--blr", "5e-3",
           "--ckpt-every", str(args.steps), "--seed", seed]
          + (["--resume"] if (run / "training_state.pt").exists() else []))


def _a_validation_row(corpus_dir: Path) -> int:
    from .data.corpus import Corpus

    return int(Corpus(corpus_dir).rows(split="val")[0])
